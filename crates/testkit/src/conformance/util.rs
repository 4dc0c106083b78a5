//! Checks and request builders shared by the conformance tests.

use etcd_api::enums::{compare_target as ct, event_type};
use etcd_api::*;
use futures::StreamExt;
use std::fmt::Debug;

use store::{Kv, WatchSpec, WatchStream};
use tonic::Status;

use super::{Ns, WAIT};

pub(super) fn ok<T>(r: Result<T, Status>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(s) => panic!("{what}: unexpected error {:?} {:?}", s.code(), s.message()),
    }
}

pub(super) fn fails<T: Debug>(r: Result<T, Status>, want: Status, what: &str) {
    match r {
        Ok(v) => panic!(
            "{what}: expected error {:?} {:?}, got Ok({v:?})",
            want.code(),
            want.message()
        ),
        Err(s) => assert_eq!(
            (s.code(), s.message()),
            (want.code(), want.message()),
            "{what}: wrong error (left: got, right: want)"
        ),
    }
}

pub(super) fn rev_of(h: &Option<PbResponseHeader>, what: &str) -> i64 {
    let r = h
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: response has no header"))
        .revision;
    assert!(r > 0, "{what}: header revision {r} is not positive");
    r
}

pub(super) fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn keys(kvs: &[PbKeyValue], ns: &Ns) -> Vec<String> {
    kvs.iter()
        .map(|kv| s(&kv.key[ns.0.len().min(kv.key.len())..]))
        .collect()
}

/// Checks a key's fields: value, create_revision, mod_revision, version, lease.
pub(super) fn check_kv(
    kv: &PbKeyValue,
    value: &[u8],
    create: i64,
    modr: i64,
    version: i64,
    lease: i64,
    what: &str,
) {
    let got = (
        s(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
    );
    let want = (s(value), create, modr, version, lease);
    assert_eq!(
        got,
        want,
        "{what} {:?}: (value, create_revision, mod_revision, version, lease): left got, right want",
        s(&kv.key)
    );
}

pub(super) fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

pub(super) fn put_req(key: &[u8], value: &[u8]) -> PbPutRequest {
    PbPutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub(super) fn get_req(key: &[u8]) -> PbRangeRequest {
    PbRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

pub(super) fn prefix_req(ns: &Ns, p: &str) -> PbRangeRequest {
    let key = ns.k(p);
    PbRangeRequest {
        range_end: prefix_end(&key),
        key,
        ..Default::default()
    }
}

pub(super) async fn put(kv: &dyn Kv, key: &[u8], value: &[u8]) -> i64 {
    let what = format!("put {:?}", s(key));
    rev_of(&ok(kv.put(put_req(key, value)).await, &what).header, &what)
}

pub(super) async fn put_lease(kv: &dyn Kv, key: &[u8], value: &[u8], lease: i64) -> i64 {
    let what = format!("put {:?} with lease {lease:x}", s(key));
    let r = kv
        .put(PbPutRequest {
            lease,
            ..put_req(key, value)
        })
        .await;
    rev_of(&ok(r, &what).header, &what)
}

pub(super) async fn del(kv: &dyn Kv, key: &[u8]) -> i64 {
    let what = format!("delete {:?}", s(key));
    let r = ok(
        kv.delete_range(PbDeleteRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await,
        &what,
    );
    assert_eq!(r.deleted, 1, "{what}: deleted count");
    rev_of(&r.header, &what)
}

pub(super) async fn get_at(kv: &dyn Kv, key: &[u8], revision: i64) -> Option<PbKeyValue> {
    let what = format!("get {:?} at revision {revision}", s(key));
    let r = ok(
        kv.range(PbRangeRequest {
            revision,
            ..get_req(key)
        })
        .await,
        &what,
    );
    rev_of(&r.header, &what);
    assert!(
        r.kvs.len() <= 1 && r.count == r.kvs.len() as i64 && !r.more,
        "{what}: single-key range gave {r:?}"
    );
    r.kvs.into_iter().next()
}

pub(super) async fn get(kv: &dyn Kv, key: &[u8]) -> Option<PbKeyValue> {
    get_at(kv, key, 0).await
}

pub(super) async fn must_get(kv: &dyn Kv, key: &[u8], what: &str) -> PbKeyValue {
    get(kv, key)
        .await
        .unwrap_or_else(|| panic!("{what}: key {:?} is missing", s(key)))
}

pub(super) async fn range(kv: &dyn Kv, req: PbRangeRequest, what: &str) -> PbRangeResponse {
    let r = ok(kv.range(req).await, what);
    rev_of(&r.header, what);
    r
}

pub(super) async fn current_rev(kv: &dyn Kv, ns: &Ns) -> i64 {
    range(kv, get_req(&ns.k("\u{1}rev-probe")), "revision probe")
        .await
        .header
        .map(|h| h.revision)
        .unwrap_or(0)
}

pub(super) async fn grant(kv: &dyn Kv, ttl: i64) -> i64 {
    let r = ok(
        kv.lease_grant(PbLeaseGrantRequest { ttl, id: 0 }).await,
        "lease grant",
    );
    assert!(
        r.id != 0 && r.error.is_empty(),
        "lease grant answered {r:?}"
    );
    r.id
}

pub(super) fn op_put(key: &[u8], value: &[u8]) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(put_req(key, value))),
    }
}
pub(super) fn op_get(key: &[u8]) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(get_req(key))),
    }
}
pub(super) fn op_del(key: &[u8], range_end: &[u8]) -> PbTxnRequestOp {
    let d = PbDeleteRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv: false,
    };
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(d)),
    }
}
pub(super) fn op_txn(t: PbTxnRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestTxn(t)),
    }
}
pub(super) fn cmp(key: &[u8], result: i32, target: i32, u: PbTargetUnion) -> PbCompare {
    PbCompare {
        result,
        target,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(u),
    }
}
pub(super) fn cmp_value(key: &[u8], result: i32, v: &[u8]) -> PbCompare {
    cmp(key, result, ct::VALUE, PbTargetUnion::Value(v.to_vec()))
}
pub(super) fn txn(
    compare: Vec<PbCompare>,
    success: Vec<PbTxnRequestOp>,
    failure: Vec<PbTxnRequestOp>,
) -> PbTxnRequest {
    PbTxnRequest {
        compare,
        success,
        failure,
    }
}

/// Runs a txn whose compares are expected to evaluate to `want`.
pub(super) async fn txn_is(
    kv: &dyn Kv,
    compare: Vec<PbCompare>,
    want: bool,
    what: &str,
) -> PbTxnResponse {
    let r = ok(kv.txn(txn(compare, vec![], vec![])).await, what);
    rev_of(&r.header, what);
    assert_eq!(r.succeeded, want, "{what}: txn succeeded");
    r
}

pub(super) fn put_resp(r: &PbResponseOp, what: &str) -> PbPutResponse {
    match &r.response {
        Some(PbTxnOpResponse::ResponsePut(p)) => p.clone(),
        other => panic!("{what}: expected a put response, got {other:?}"),
    }
}
pub(super) fn range_resp(r: &PbResponseOp, what: &str) -> PbRangeResponse {
    match &r.response {
        Some(PbTxnOpResponse::ResponseRange(p)) => p.clone(),
        other => panic!("{what}: expected a range response, got {other:?}"),
    }
}

pub(super) async fn watch(kv: &dyn Kv, spec: WatchSpec, what: &str) -> (WatchStream, i64) {
    let mut w = ok(kv.watch(spec).await, what);
    let first = next(&mut w, what).await;
    assert!(
        first.created && !first.canceled && first.events.is_empty(),
        "{what}: first response must be `created` alone, got {first:?}"
    );
    rev_of(&first.header, what);
    (w, first.watch_id)
}

pub(super) async fn next(w: &mut WatchStream, what: &str) -> PbWatchResponse {
    match tokio::time::timeout(WAIT, w.next()).await {
        Err(_) => panic!("{what}: no watch response within {WAIT:?}"),
        Ok(None) => panic!("{what}: watch stream ended"),
        Ok(Some(r)) => ok(r, what),
    }
}

/// Reads exactly `n` events (they may come batched), checking each response's watch id and header.
pub(super) async fn events(w: &mut WatchStream, id: i64, n: usize, what: &str) -> Vec<PbEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(w, what).await;
        assert!(
            !r.canceled && !r.created && r.watch_id == id,
            "{what}: unexpected watch response {r:?}"
        );
        let rev = rev_of(&r.header, what);
        assert!(
            r.events
                .iter()
                .all(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= rev)),
            "{what}: event newer than header revision in {r:?}"
        );
        out.extend(r.events);
    }
    assert_eq!(out.len(), n, "{what}: more events than expected: {out:?}");
    out
}

/// Event summary: (type, key suffix, value, mod_revision).
pub(super) fn ev(e: &PbEvent, ns: &Ns) -> (i32, String, String, i64) {
    let kv = e.kv.clone().unwrap_or_default();
    (
        e.r#type,
        keys(std::slice::from_ref(&kv), ns).remove(0),
        s(&kv.value),
        kv.mod_revision,
    )
}

pub(super) const PUT: i32 = event_type::PUT;
pub(super) const DELETE: i32 = event_type::DELETE;

pub(super) fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
