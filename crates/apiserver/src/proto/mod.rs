//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`, which kubectl 1.32+
//! sends for the objects its typed clients create) decoded to JSON. The message layouts come from
//! `schema.txt`, generated from upstream's `generated.proto` and Go struct tags by
//! `tools/gen_proto_schema.py`; zero values that upstream's JSON omits are left out.

use std::collections::HashMap;
use std::sync::OnceLock;

use apimachinery::ApiError;
use base64::Engine;
use serde_json::{json, Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Debug)]
struct Field {
    name: String,
    /// `o`, `z` (zero omitted), `r` (repeated), `m` (map).
    label: u8,
    ty: String,
    value_ty: String,
}

type Schema = HashMap<String, HashMap<u64, Field>>;

fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s: Schema = HashMap::new();
        let mut cur = String::new();
        for line in include_str!("schema.txt").lines() {
            let p: Vec<&str> = line.split(' ').collect();
            match p.as_slice() {
                ["M", name] => {
                    cur = name.to_string();
                    s.entry(cur.clone()).or_default();
                }
                ["F", num, name, label, ty, rest @ ..] => {
                    let f = Field {
                        name: name.to_string(),
                        label: label.as_bytes()[0],
                        ty: ty.to_string(),
                        value_ty: rest.first().unwrap_or(&"").to_string(),
                    };
                    if let Ok(n) = num.parse() {
                        s.entry(cur.clone()).or_default().insert(n, f);
                    }
                }
                _ => {}
            }
        }
        s
    })
}

fn bad(msg: &str) -> ApiError {
    ApiError::bad_request(format!("error decoding protobuf body: {msg}"))
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(|| bad("truncated varint"))?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self.i.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| bad("truncated field"))?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ApiError> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let w = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            2 => {
                let n = self.varint()? as usize;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4"))),
            _ => return Err(bad("unsupported wire type")),
        };
        Ok(Some((key >> 3, w)))
    }
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut r = Reader { b, i: 0 };
    let mut out = vec![];
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

fn time(b: &[u8], micro: bool) -> Result<Value, ApiError> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Varint(v)) => secs = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i64,
            _ => {}
        }
    }
    if secs == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = jiff::Timestamp::new(secs, nanos as i32).map_err(|_| bad("bad time"))?;
    Ok(json!(if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }))
}

fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let (h, rem) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let s = rem as f64 / 1e9;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

fn scalar(ty: &str, w: &Wire) -> Result<Value, ApiError> {
    Ok(match (ty, w) {
        ("string", Wire::Bytes(b)) => json!(utf8(b)?),
        ("bytes", Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ("bool", Wire::Varint(v)) => json!(*v != 0),
        ("int32", Wire::Varint(v)) => json!(*v as i64 as i32),
        ("int64", Wire::Varint(v)) => json!(*v as i64),
        ("uint32" | "uint64", Wire::Varint(v)) => json!(*v),
        ("double", Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        ("float", Wire::Fixed32(v)) => json!(f32::from_bits(*v) as f64),
        _ => return Err(bad(&format!("unexpected encoding for a {ty}"))),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// One field value of type `ty` (a scalar or a message).
fn value(ty: &str, w: &Wire) -> Result<Value, ApiError> {
    let Wire::Bytes(b) = w else {
        return scalar(ty, w);
    };
    match ty {
        "string" | "bytes" => scalar(ty, w),
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => time(b, false),
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => time(b, true),
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            let m = message("k8s.io.apimachinery.pkg.api.resource.Quantity", b)?;
            Ok(m.get("string").cloned().unwrap_or(json!("0")))
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            let m = message(ty, b)?;
            if m["type"].as_i64().unwrap_or(0) == 1 {
                Ok(m.get("strVal").cloned().unwrap_or(json!("")))
            } else {
                Ok(m.get("intVal").cloned().unwrap_or(json!(0)))
            }
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            let m = message(ty, b)?;
            Ok(json!(go_duration(m["duration"].as_i64().unwrap_or(0))))
        }
        "k8s.io.apimachinery.pkg.runtime.RawExtension"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = fields(b)?.into_iter().find_map(|(n, w)| match (n, w) {
                (1, Wire::Bytes(r)) => Some(r),
                _ => None,
            });
            match raw {
                Some(r) if !r.is_empty() => {
                    serde_json::from_slice(r).map_err(|_| bad("embedded object is not JSON"))
                }
                _ => Ok(Value::Null),
            }
        }
        _ => message(ty, b),
    }
}

/// Decodes one message of type `ty` to a JSON object.
fn message(ty: &str, b: &[u8]) -> Result<Value, ApiError> {
    let Some(layout) = schema().get(ty) else {
        return Err(bad(&format!("no protobuf layout for {ty}")));
    };
    let mut out = Map::new();
    for (n, w) in fields(b)? {
        let Some(f) = layout.get(&n) else { continue };
        match f.label {
            b'm' => {
                let Wire::Bytes(entry) = w else { continue };
                let (mut k, mut v) = (String::new(), Value::Null);
                for (en, ew) in fields(entry)? {
                    match en {
                        1 => k = value(&f.ty, &ew)?.as_str().unwrap_or_default().to_string(),
                        2 => v = value(&f.value_ty, &ew)?,
                        _ => {}
                    }
                }
                if v.is_null() {
                    v = match f.value_ty.as_str() {
                        "string" | "bytes" => json!(""),
                        _ => json!({}),
                    };
                }
                let m = out.entry(f.name.clone()).or_insert_with(|| json!({}));
                m[k] = v;
            }
            b'r' => {
                let arr = out.entry(f.name.clone()).or_insert_with(|| json!([]));
                let packed = matches!(w, Wire::Bytes(_))
                    && !matches!(f.ty.as_str(), "string" | "bytes")
                    && !f.ty.contains('.');
                if packed {
                    let Wire::Bytes(pb) = w else { unreachable!() };
                    let mut r = Reader { b: pb, i: 0 };
                    while r.i < pb.len() {
                        let v = r.varint()?;
                        arr.as_array_mut()
                            .expect("array")
                            .push(scalar(&f.ty, &Wire::Varint(v))?);
                    }
                } else {
                    let v = value(&f.ty, &w)?;
                    arr.as_array_mut().expect("array").push(v);
                }
            }
            label => {
                let v = value(&f.ty, &w)?;
                let scalar_ty = !f.ty.contains('.');
                if v.is_null() || (label == b'z' && scalar_ty && is_zero(&v)) {
                    continue;
                }
                out.insert(f.name.clone(), v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// The protobuf package of an apiVersion (`v1` is core, `apps/v1`, `networking.k8s.io/v1`, ...).
fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("k8s.io.api.core.{api_version}"),
        Some((g, v)) => {
            let short = g.split('.').next().unwrap_or(g);
            format!("k8s.io.api.{short}.{v}")
        }
    }
}

/// Decodes a `k8s\0`-prefixed protobuf body to the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err(bad("missing the k8s protobuf prefix"));
    };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    if let Wire::Bytes(s) = tw {
                        match tn {
                            1 => api_version = utf8(s)?,
                            2 => kind = utf8(s)?,
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut candidates = vec![format!("{}.{kind}", package(&api_version))];
    candidates.push(format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"));
    let ty = candidates
        .into_iter()
        .find(|t| schema().contains_key(t))
        .ok_or_else(|| bad(&format!("unsupported kind {kind:?} in {api_version:?}")))?;
    let mut obj = message(&ty, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u64, wt: u64) -> Vec<u8> {
        varint((n << 3) | wt)
    }
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = vec![];
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = tag(n, 2);
        out.extend(varint(b.len() as u64));
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let mut md = bytes(1, b"cfg");
        md.extend(bytes(2, b""));
        md.extend(bytes(8, &[])); // zero creationTimestamp
        let mut cm = bytes(1, &md);
        let mut entry = bytes(1, b"k");
        entry.extend(bytes(2, b"v"));
        cm.extend(bytes(2, &entry));
        let mut tm = bytes(1, b"v1");
        tm.extend(bytes(2, b"ConfigMap"));
        let mut unknown = bytes(1, &tm);
        unknown.extend(bytes(2, &cm));
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }
}
