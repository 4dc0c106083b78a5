//! Authentication, as upstream chains it: an x509 client certificate verified against
//! `--client-ca-file` (CN is the user name, each O a group), then a static bearer token from
//! `--token-auth-file`, then (with `--anonymous-auth`) the anonymous user. A bearer token that
//! matches nothing is a 401 even when anonymous requests are allowed, as upstream.
//!
//! There is no authorizer yet (RBAC comes later): every authenticated request is allowed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use apimachinery::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::negotiate::{error_response, json_response};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// What the connection's client certificate proves.
#[derive(Clone, Debug, Default)]
pub enum PeerCert {
    /// No certificate (or one without a CN, or no client CA configured).
    #[default]
    None,
    /// A certificate the client CA signs: its user.
    User(UserInfo),
    /// A certificate that does not verify: the request is refused (401), as upstream.
    Invalid(String),
}

pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const AUTHENTICATED: &str = "system:authenticated";

/// The user a (chain-verified) client certificate names: its subject's first CN, and its O's as
/// groups. None when it has no CN.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// Splits one CSV line (RFC 4180 quoting; spaces are kept, as Go's encoding/csv does).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("extraneous text after a quoted field".into());
                    }
                }
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            '"' if !quoted => return Err("bare \" in non-quoted-field".into()),
            c => {
                at_start = false;
                cur.push(c);
            }
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
}

/// Parses upstream's static token file: `token,user,uid[,"group1,group2"]` per line.
pub fn parse_token_file(text: &str, path: &str) -> anyhow::Result<HashMap<String, UserInfo>> {
    let mut tokens = HashMap::new();
    let mut record = 0;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let rec = csv_fields(line)
            .map_err(|e| anyhow::anyhow!("token file '{path}' line {}: {e}", i + 1))?;
        if rec.len() < 3 {
            anyhow::bail!(
                "token file '{path}' must have at least 3 columns (token, user name, user uid), found {}",
                rec.len()
            );
        }
        record += 1;
        if rec[0].is_empty() {
            tracing::warn!(
                "empty token has been found in token file '{path}', record number '{record}'"
            );
            continue;
        }
        let groups = match rec.get(3) {
            Some(g) if !g.is_empty() => g.split(',').map(String::from).collect(),
            _ => vec![],
        };
        let user = UserInfo {
            name: rec[1].clone(),
            uid: rec[2].clone(),
            groups,
        };
        if tokens.insert(rec[0].clone(), user).is_some() {
            tracing::warn!(
                "duplicate token has been found in token file '{path}', record number '{record}'"
            );
        }
    }
    Ok(tokens)
}

/// The chain of authenticators the flags turn on.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    anonymous: bool,
}

impl Authenticator {
    pub fn new(token_file: Option<&Path>, anonymous: bool) -> anyhow::Result<Self> {
        let tokens = match token_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("--token-auth-file {}", p.display()))?;
                parse_token_file(&text, &p.display().to_string())?
            }
            None => HashMap::new(),
        };
        Ok(Authenticator { tokens, anonymous })
    }

    /// The request's user, or the 401 upstream answers.
    pub fn authenticate(&self, peer: &PeerCert, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let with_authenticated = |mut u: UserInfo| {
            if !u.groups.iter().any(|g| g == AUTHENTICATED) {
                u.groups.push(AUTHENTICATED.into());
            }
            u
        };
        match peer {
            PeerCert::User(u) => return Ok(with_authenticated(u.clone())),
            PeerCert::Invalid(why) => {
                tracing::debug!("client certificate refused: {why}");
                return Err(ApiError::unauthorized());
            }
            PeerCert::None => {}
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim())
                    .filter(|t| !t.is_empty())
            });
        if let Some(token) = bearer {
            return match self.tokens.get(token) {
                Some(u) => Ok(with_authenticated(u.clone())),
                None => Err(ApiError::unauthorized()),
            };
        }
        if self.anonymous {
            return Ok(UserInfo {
                name: ANONYMOUS.into(),
                uid: String::new(),
                groups: vec![UNAUTHENTICATED.into()],
            });
        }
        Err(ApiError::unauthorized())
    }
}

/// The axum layer: authenticates every request, answers 401 with a Status, and serves
/// `selfsubjectreviews` (what `kubectl auth whoami` asks), which only needs the user.
pub async fn layer(State(a): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<PeerCert>()
        .cloned()
        .unwrap_or_default();
    let user = match a.authenticate(&peer, req.headers()) {
        Ok(u) => u,
        Err(e) => {
            drain(req).await;
            return error_response(&e);
        }
    };
    tracing::trace!(user = %user.name, path = %req.uri().path(), "authenticated");
    if req.method() == Method::POST {
        let p = req.uri().path().trim_end_matches('/');
        for v in ["v1", "v1beta1"] {
            if p == format!("/apis/authentication.k8s.io/{v}/selfsubjectreviews") {
                drain(req).await;
                return json_response(201, &self_subject_review(v, &user));
            }
        }
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// Reads (a bounded part of) a request body answered without looking at it, as Go's server
/// does, so that HTTP/2 clients still sending it do not see their stream reset.
async fn drain(req: Request) {
    let _ = axum::body::to_bytes(req.into_body(), 256 << 10).await;
}

fn self_subject_review(version: &str, u: &UserInfo) -> serde_json::Value {
    let mut info = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        info["uid"] = json!(u.uid);
    }
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": info},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_as_upstream() {
        let t = parse_token_file(
            "abc,alice,1001,\"dev,ops\"\ndef, bob ,1002\n\nghi,carol,1003,\n",
            "f",
        )
        .unwrap();
        assert_eq!(t["abc"].groups, ["dev", "ops"]);
        assert_eq!(t["abc"].uid, "1001");
        assert_eq!(t["def"].name, " bob ");
        assert!(parse_token_file("a,b\"c,d\n", "f").is_err());
        assert!(t["ghi"].groups.is_empty());
        let e = parse_token_file("abc,alice\n", "f")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "token file 'f' must have at least 3 columns (token, user name, user uid), found 2"
        );
    }

    #[test]
    fn chain_order_and_bad_tokens() {
        let mut a = Authenticator::default();
        a.tokens.insert(
            "good".into(),
            UserInfo {
                name: "t".into(),
                ..Default::default()
            },
        );
        let mut h = HeaderMap::new();
        let none = PeerCert::None;
        assert_eq!(a.authenticate(&none, &h).unwrap_err().code, 401);
        a.anonymous = true;
        assert_eq!(a.authenticate(&none, &h).unwrap().name, ANONYMOUS);
        let bad_cert = PeerCert::Invalid("unknown authority".into());
        assert_eq!(a.authenticate(&bad_cert, &h).unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, "Bearer bad".parse().unwrap());
        assert_eq!(a.authenticate(&none, &h).unwrap_err().code, 401);
        let cert = PeerCert::User(UserInfo {
            name: "c".into(),
            ..Default::default()
        });
        let u = a.authenticate(&cert, &h).unwrap();
        assert_eq!(
            (u.name.as_str(), u.groups.as_slice()),
            ("c", &[AUTHENTICATED.to_string()][..])
        );
        h.insert(header::AUTHORIZATION, "Bearer good".parse().unwrap());
        assert_eq!(a.authenticate(&none, &h).unwrap().name, "t");
    }
}
