//! Continue tokens for paged lists, in upstream's form: base64 of `{"v":"meta.k8s.io/v1","rv":N,
//! "start":"<key after the prefix>"}`. The token pins the snapshot revision of the first page.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::status::ApiError;

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

/// Encodes a token to continue listing at `start` (relative to the listed prefix) at revision `rv`.
pub fn encode(rv: i64, start: &str) -> String {
    let t = Token {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&t).expect("token"))
}

/// Decodes a token into (revision, start key relative to the prefix).
pub fn decode(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| bad())?;
    let t: Token = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" {
        return Err(ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    if t.rv <= 0 || t.start.contains("..") || t.start.starts_with('/') {
        return Err(bad());
    }
    Ok((t.rv, t.start))
}

/// The 410 answer for a token whose revision has been compacted away.
pub fn expired() -> ApiError {
    ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let t = super::encode(42, "default/b\u{0}");
        assert_eq!(
            super::decode(&t).unwrap(),
            (42, "default/b\u{0}".to_string())
        );
        assert!(super::decode("garbage!").is_err());
    }
}
