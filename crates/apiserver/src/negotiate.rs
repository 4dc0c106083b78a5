//! Content negotiation: what the client accepts (JSON, YAML, a Table, aggregated discovery), how its
//! body is decoded (JSON or YAML, at most 3 MiB), and how answers and errors are written.

use apimachinery::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What the Accept header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Table,
}

fn media_types(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().replace(' ', ""))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Picks the response form; 406 when only unsupported media types are acceptable.
pub fn output(headers: &HeaderMap) -> Result<Output, ApiError> {
    let types = media_types(headers);
    if types.is_empty() {
        return Ok(Output::Json);
    }
    for t in &types {
        let mut parts = t.split(';');
        let base = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.collect();
        let has = |p: &str| params.contains(&p);
        match base {
            "application/json" | "application/*" | "*/*" => {
                if has("as=Table") {
                    if has("g=meta.k8s.io") && (has("v=v1") || has("v=v1beta1")) {
                        return Ok(Output::Table);
                    }
                    continue;
                }
                if params.iter().any(|p| p.starts_with("as=")) {
                    continue;
                }
                return Ok(Output::Json);
            }
            "application/yaml" => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml (asked for {})",
        types.join(",")
    )))
}

/// Whether the client asks for aggregated discovery (apidiscovery.k8s.io/v2).
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    media_types(headers).iter().any(|t| {
        t.starts_with("application/json")
            && t.contains("as=APIGroupDiscoveryList")
            && t.contains("g=apidiscovery.k8s.io")
            && t.contains("v=v2")
            && !t.contains("v=v2beta1")
    })
}

/// Decodes a request body (JSON, or YAML by Content-Type); 415 for other types.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/json"
        | ""
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding body: json: {e}"))),
        "application/yaml" | "application/apply-patch+yaml" => {
            let s = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("error decoding body: not UTF-8"))?;
            let v: Value = serde_saphyr::from_str(s)
                .map_err(|e| ApiError::bad_request(format!("error decoding body: yaml: {e}")))?;
            Ok(v)
        }
        crate::proto::CONTENT_TYPE => crate::proto::decode(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn json_response(code: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).expect("json")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The object in the asked-for form.
pub fn respond(code: u16, v: &Value, out: Output) -> Response {
    if out == Output::Yaml {
        if let Ok(s) = serde_saphyr::to_string(v) {
            let mut r = Response::new(Body::from(s));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            return r;
        }
    }
    json_response(code, v)
}

pub fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// Adds `Warning: 299 - "<text>"` headers, as upstream does for field validation warnings.
pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(accept: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        m
    }

    #[test]
    fn accept_forms() {
        assert_eq!(
            output(&h("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).unwrap(),
            Output::Table
        );
        assert_eq!(output(&h("application/json")).unwrap(), Output::Json);
        assert_eq!(
            output(&h("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Output::Json
        );
        assert!(output(&h("application/vnd.kubernetes.protobuf")).is_err());
        assert!(wants_aggregated(&h(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
    }
}
