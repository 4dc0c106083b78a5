//! The Kv conformance suite: etcd v3 semantics as a user of the `Kv` trait observes them. It runs
//! against every `Kv` implementation (the embedded member and a real etcd through `RemoteKv`); it was
//! validated against etcd 3.4, so where it and an implementation disagree, the implementation is wrong.
//!
//! Every test works under its own unique key prefix and checks only relative revisions, so the suite
//! runs on a shared server. Compaction affects the whole store: `compaction` runs last and compacts
//! only up to a revision of its own keys.
//!
//! ```ignore
//! testkit::conformance::run_all(&kv).await; // panics with every failing test's message
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_api::enums::sort_target as st;
use etcd_api::enums::{compare_result as cr, compare_target as ct, event_type, sort_order as so};
use etcd_api::{errors, *};
use futures::{FutureExt, StreamExt};
use store::{Kv, WatchSpec, WatchStream};
use tonic::Status;

/// How long any single wait (a watch response, a lease expiry) may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A test's key namespace: `/kybern-conformance/<unique>/<test>/`.
#[derive(Clone, Debug)]
pub struct Ns(pub Vec<u8>);

impl Ns {
    /// A fresh namespace for `test` (unique per process, call and time).
    pub fn new(test: &str) -> Ns {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Ns(format!("/kybern-conformance/{pid}-{nanos}-{seq}/{test}/").into_bytes())
    }
    /// The key `<ns><suffix>`.
    pub fn k(&self, suffix: &str) -> Vec<u8> {
        [self.0.as_slice(), suffix.as_bytes()].concat()
    }
}

type TestFn = for<'a> fn(&'a dyn Kv, &'a Ns) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        /// Every test, in the order `run_all` runs them (`compaction` last).
        pub const TESTS: &[(&str, TestFn)] = &[$((stringify!($name), |kv, ns| Box::pin($name(kv, ns)))),*];
    };
}

tests!(
    put_get,
    revisions_and_versions,
    put_prev_kv,
    ignore_value_and_lease,
    empty_key,
    range_basic,
    range_sort,
    range_filters_and_history,
    delete_range,
    txn_compare_value_version,
    txn_compare_revisions_lease_ranges,
    txn_ops_and_nesting,
    txn_errors,
    watch_basic,
    watch_ranges,
    watch_history_and_prev_kv,
    watch_filters,
    lease_basic,
    lease_errors,
    lease_expiry,
    compaction,
);

/// Runs every test (each in its own namespace), then panics listing the failed ones.
pub async fn run_all(kv: &dyn Kv) {
    run_matching(kv, |_| true).await
}

/// Runs the tests whose name `pick` accepts; panics listing the failed ones.
pub async fn run_matching(kv: &dyn Kv, pick: impl Fn(&str) -> bool) {
    let mut failed = Vec::new();
    for (name, test) in TESTS.iter().filter(|(n, _)| pick(n)) {
        let ns = Ns::new(name);
        let started = Instant::now();
        let res = AssertUnwindSafe(test(kv, &ns)).catch_unwind().await;
        let msg = match res {
            Ok(()) => None,
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        let verdict = if msg.is_some() { "FAILED" } else { "ok" };
        eprintln!("conformance {name}: {verdict} ({:?})", started.elapsed());
        if let Some(m) = msg {
            failed.push(format!("{name}: {m}"));
        }
    }
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}

// ---------- checks and builders ----------

fn ok<T>(r: Result<T, Status>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(s) => panic!("{what}: unexpected error {:?} {:?}", s.code(), s.message()),
    }
}

fn fails<T: Debug>(r: Result<T, Status>, want: Status, what: &str) {
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

fn rev_of(h: &Option<PbResponseHeader>, what: &str) -> i64 {
    let r = h
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: response has no header"))
        .revision;
    assert!(r > 0, "{what}: header revision {r} is not positive");
    r
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keys(kvs: &[PbKeyValue], ns: &Ns) -> Vec<String> {
    kvs.iter()
        .map(|kv| s(&kv.key[ns.0.len().min(kv.key.len())..]))
        .collect()
}

/// Checks a key's fields: value, create_revision, mod_revision, version, lease.
fn check_kv(
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

fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

fn put_req(key: &[u8], value: &[u8]) -> PbPutRequest {
    PbPutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn get_req(key: &[u8]) -> PbRangeRequest {
    PbRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn prefix_req(ns: &Ns, p: &str) -> PbRangeRequest {
    let key = ns.k(p);
    PbRangeRequest {
        range_end: prefix_end(&key),
        key,
        ..Default::default()
    }
}

async fn put(kv: &dyn Kv, key: &[u8], value: &[u8]) -> i64 {
    let what = format!("put {:?}", s(key));
    rev_of(&ok(kv.put(put_req(key, value)).await, &what).header, &what)
}

async fn put_lease(kv: &dyn Kv, key: &[u8], value: &[u8], lease: i64) -> i64 {
    let what = format!("put {:?} with lease {lease:x}", s(key));
    let r = kv
        .put(PbPutRequest {
            lease,
            ..put_req(key, value)
        })
        .await;
    rev_of(&ok(r, &what).header, &what)
}

async fn del(kv: &dyn Kv, key: &[u8]) -> i64 {
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

async fn get_at(kv: &dyn Kv, key: &[u8], revision: i64) -> Option<PbKeyValue> {
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

async fn get(kv: &dyn Kv, key: &[u8]) -> Option<PbKeyValue> {
    get_at(kv, key, 0).await
}

async fn must_get(kv: &dyn Kv, key: &[u8], what: &str) -> PbKeyValue {
    get(kv, key)
        .await
        .unwrap_or_else(|| panic!("{what}: key {:?} is missing", s(key)))
}

async fn range(kv: &dyn Kv, req: PbRangeRequest, what: &str) -> PbRangeResponse {
    let r = ok(kv.range(req).await, what);
    rev_of(&r.header, what);
    r
}

async fn current_rev(kv: &dyn Kv, ns: &Ns) -> i64 {
    range(kv, get_req(&ns.k("\u{1}rev-probe")), "revision probe")
        .await
        .header
        .map(|h| h.revision)
        .unwrap_or(0)
}

async fn grant(kv: &dyn Kv, ttl: i64) -> i64 {
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

fn op_put(key: &[u8], value: &[u8]) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(put_req(key, value))),
    }
}
fn op_get(key: &[u8]) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(get_req(key))),
    }
}
fn op_del(key: &[u8], range_end: &[u8]) -> PbTxnRequestOp {
    let d = PbDeleteRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv: false,
    };
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(d)),
    }
}
fn op_txn(t: PbTxnRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestTxn(t)),
    }
}
fn cmp(key: &[u8], result: i32, target: i32, u: PbTargetUnion) -> PbCompare {
    PbCompare {
        result,
        target,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(u),
    }
}
fn cmp_value(key: &[u8], result: i32, v: &[u8]) -> PbCompare {
    cmp(key, result, ct::VALUE, PbTargetUnion::Value(v.to_vec()))
}
fn txn(
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
async fn txn_is(kv: &dyn Kv, compare: Vec<PbCompare>, want: bool, what: &str) -> PbTxnResponse {
    let r = ok(kv.txn(txn(compare, vec![], vec![])).await, what);
    rev_of(&r.header, what);
    assert_eq!(r.succeeded, want, "{what}: txn succeeded");
    r
}

fn put_resp(r: &PbResponseOp, what: &str) -> PbPutResponse {
    match &r.response {
        Some(PbTxnOpResponse::ResponsePut(p)) => p.clone(),
        other => panic!("{what}: expected a put response, got {other:?}"),
    }
}
fn range_resp(r: &PbResponseOp, what: &str) -> PbRangeResponse {
    match &r.response {
        Some(PbTxnOpResponse::ResponseRange(p)) => p.clone(),
        other => panic!("{what}: expected a range response, got {other:?}"),
    }
}

async fn watch(kv: &dyn Kv, spec: WatchSpec, what: &str) -> (WatchStream, i64) {
    let mut w = ok(kv.watch(spec).await, what);
    let first = next(&mut w, what).await;
    assert!(
        first.created && !first.canceled && first.events.is_empty(),
        "{what}: first response must be `created` alone, got {first:?}"
    );
    rev_of(&first.header, what);
    (w, first.watch_id)
}

async fn next(w: &mut WatchStream, what: &str) -> PbWatchResponse {
    match tokio::time::timeout(WAIT, w.next()).await {
        Err(_) => panic!("{what}: no watch response within {WAIT:?}"),
        Ok(None) => panic!("{what}: watch stream ended"),
        Ok(Some(r)) => ok(r, what),
    }
}

/// Reads exactly `n` events (they may come batched), checking each response's watch id and header.
async fn events(w: &mut WatchStream, id: i64, n: usize, what: &str) -> Vec<PbEvent> {
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
fn ev(e: &PbEvent, ns: &Ns) -> (i32, String, String, i64) {
    let kv = e.kv.clone().unwrap_or_default();
    (
        e.r#type,
        keys(std::slice::from_ref(&kv), ns).remove(0),
        s(&kv.value),
        kv.mod_revision,
    )
}

const PUT: i32 = event_type::PUT;
const DELETE: i32 = event_type::DELETE;

// ---------- KV ----------

/// Put then get: the fields of a new key, an update, a missing key, empty and binary values.
pub async fn put_get(kv: &dyn Kv, ns: &Ns) {
    let a = ns.k("a");
    let r1 = put(kv, &a, b"v1").await;
    check_kv(
        &must_get(kv, &a, "after put").await,
        b"v1",
        r1,
        r1,
        1,
        0,
        "new key",
    );
    let r2 = put(kv, &a, b"v2").await;
    assert!(
        r2 > r1,
        "second put's revision {r2} must exceed the first's {r1}"
    );
    check_kv(
        &must_get(kv, &a, "after update").await,
        b"v2",
        r1,
        r2,
        2,
        0,
        "updated key",
    );
    let got = range(kv, get_req(&a), "get").await;
    assert!(
        got.count == 1 && !got.more && rev_of(&got.header, "get") >= r2,
        "get answered {got:?}"
    );
    let missing = range(kv, get_req(&ns.k("missing")), "get missing").await;
    assert!(
        missing.kvs.is_empty() && missing.count == 0 && !missing.more,
        "missing key answered {missing:?}"
    );
    let e = ns.k("empty");
    let re = put(kv, &e, b"").await;
    check_kv(
        &must_get(kv, &e, "empty value").await,
        b"",
        re,
        re,
        1,
        0,
        "empty value",
    );
    let bin = [ns.0.as_slice(), &[0xff, 0x00, 0x01]].concat();
    let value = [0u8, 1, 2, 0xff, 0xfe];
    let rb = put(kv, &bin, &value).await;
    let got = must_get(kv, &bin, "binary key").await;
    assert!(
        got.key == bin && got.value == value && got.mod_revision == rb,
        "binary key/value round trip: {got:?}"
    );
    let big = vec![b'x'; 512 * 1024];
    put(kv, &ns.k("big"), &big).await;
    assert!(
        must_get(kv, &ns.k("big"), "big value").await.value == big,
        "512 KiB value round trip"
    );
}

/// Revisions and versions through updates, delete and re-create; reads at past revisions; one
/// revision per txn.
pub async fn revisions_and_versions(kv: &dyn Kv, ns: &Ns) {
    let a = ns.k("a");
    let r1 = put(kv, &a, b"v1").await;
    let r2 = put(kv, &a, b"v2").await;
    let r3 = put(kv, &a, b"v3").await;
    let rd = del(kv, &a).await;
    assert!(get(kv, &a).await.is_none(), "deleted key still readable");
    let r4 = put(kv, &a, b"v4").await;
    assert!(
        r1 < r2 && r2 < r3 && r3 < rd && rd < r4,
        "revisions not increasing: {r1} {r2} {r3} {rd} {r4}"
    );
    check_kv(
        &must_get(kv, &a, "re-created").await,
        b"v4",
        r4,
        r4,
        1,
        0,
        "re-created key (version resets)",
    );
    for (rev, v, modr, ver) in [
        (r1, "v1", r1, 1),
        (r2, "v2", r2, 2),
        (r3, "v3", r3, 3),
        (rd - 1, "v3", r3, 3),
    ] {
        let got = get_at(kv, &a, rev)
            .await
            .unwrap_or_else(|| panic!("key missing at revision {rev}"));
        check_kv(
            &got,
            v.as_bytes(),
            r1,
            modr,
            ver,
            0,
            &format!("at revision {rev}"),
        );
    }
    assert!(
        get_at(kv, &a, rd).await.is_none(),
        "key visible at its delete revision {rd}"
    );
    if r1 > 1 {
        assert!(
            get_at(kv, &a, r1 - 1).await.is_none(),
            "key visible before its creation"
        );
    }
    let (b, c) = (ns.k("b"), ns.k("c"));
    let t = ok(
        kv.txn(txn(
            vec![],
            vec![op_put(&b, b"1"), op_put(&c, b"2")],
            vec![],
        ))
        .await,
        "txn of two puts",
    );
    let rt = rev_of(&t.header, "txn");
    assert!(rt > r4, "txn revision {rt} after {r4}");
    for k in [&b, &c] {
        check_kv(
            &must_get(kv, k, "txn put").await,
            &must_get(kv, k, "").await.value,
            rt,
            rt,
            1,
            0,
            "every put of one txn shares its revision",
        );
    }
    let h = range(kv, get_req(&a), "get").await;
    assert!(
        rev_of(&h.header, "get") >= rt,
        "range header revision is the store's current revision"
    );
}

/// `prev_kv` on put and delete.
pub async fn put_prev_kv(kv: &dyn Kv, ns: &Ns) {
    let a = ns.k("a");
    let pp = |v: &[u8]| PbPutRequest {
        prev_kv: true,
        ..put_req(&a, v)
    };
    let r = ok(kv.put(pp(b"v1")).await, "put new with prev_kv");
    assert!(
        r.prev_kv.is_none(),
        "new key has no prev_kv, got {:?}",
        r.prev_kv
    );
    let r1 = rev_of(&r.header, "put");
    let r = ok(kv.put(pp(b"v2")).await, "update with prev_kv");
    let prev = r
        .prev_kv
        .unwrap_or_else(|| panic!("update with prev_kv gave no prev_kv"));
    check_kv(&prev, b"v1", r1, r1, 1, 0, "prev_kv of update");
    let r = ok(kv.put(put_req(&a, b"v3")).await, "update without prev_kv");
    assert!(r.prev_kv.is_none(), "prev_kv returned without being asked");
    let d = ok(
        kv.delete_range(PbDeleteRequest {
            key: a.clone(),
            range_end: vec![],
            prev_kv: true,
        })
        .await,
        "delete with prev_kv",
    );
    assert_eq!(d.deleted, 1, "deleted");
    assert_eq!(d.prev_kvs.len(), 1, "delete prev_kvs: {:?}", d.prev_kvs);
    check_kv(
        &d.prev_kvs[0],
        b"v3",
        r1,
        rev_of(&r.header, "put"),
        3,
        0,
        "prev_kv of delete",
    );
    let r = ok(kv.put(pp(b"v4")).await, "put after delete with prev_kv");
    assert!(
        r.prev_kv.is_none(),
        "a deleted key has no prev_kv, got {:?}",
        r.prev_kv
    );
}

/// `ignore_value` and `ignore_lease`, their errors, and lease attachment through puts.
pub async fn ignore_value_and_lease(kv: &dyn Kv, ns: &Ns) {
    let a = ns.k("a");
    let iv = |v: &[u8], lease: i64, il: bool| PbPutRequest {
        ignore_value: true,
        ignore_lease: il,
        lease,
        ..put_req(&a, v)
    };
    fails(
        kv.put(iv(b"", 0, false)).await,
        errors::key_not_found(),
        "ignore_value on a missing key",
    );
    let il = PbPutRequest {
        ignore_lease: true,
        ..put_req(&a, b"x")
    };
    fails(
        kv.put(il.clone()).await,
        errors::key_not_found(),
        "ignore_lease on a missing key",
    );
    let l = grant(kv, 600).await;
    let r1 = put_lease(kv, &a, b"v1", l).await;
    fails(
        kv.put(iv(b"x", 0, false)).await,
        errors::value_provided(),
        "ignore_value with a value",
    );
    fails(
        kv.put(PbPutRequest {
            lease: l,
            ..il.clone()
        })
        .await,
        errors::lease_provided(),
        "ignore_lease with a lease",
    );
    let r2 = rev_of(&ok(kv.put(il).await, "ignore_lease").header, "put");
    check_kv(
        &must_get(kv, &a, "").await,
        b"x",
        r1,
        r2,
        2,
        l,
        "ignore_lease keeps the lease",
    );
    let r = ok(
        kv.put(PbPutRequest {
            prev_kv: true,
            ..iv(b"", l, false)
        })
        .await,
        "ignore_value",
    );
    check_kv(
        &r.prev_kv.unwrap_or_default(),
        b"x",
        r1,
        r2,
        2,
        l,
        "prev_kv of an ignore_value put",
    );
    let r3 = rev_of(&r.header, "put");
    check_kv(
        &must_get(kv, &a, "").await,
        b"x",
        r1,
        r3,
        3,
        l,
        "ignore_value keeps the value",
    );
    let r4 = rev_of(
        &ok(kv.put(iv(b"", 0, true)).await, "ignore_value+ignore_lease").header,
        "put",
    );
    check_kv(
        &must_get(kv, &a, "").await,
        b"x",
        r1,
        r4,
        4,
        l,
        "ignore_value+ignore_lease",
    );
    let r5 = rev_of(
        &ok(
            kv.put(iv(b"", 0, false)).await,
            "ignore_value without lease",
        )
        .header,
        "put",
    );
    check_kv(
        &must_get(kv, &a, "").await,
        b"x",
        r1,
        r5,
        5,
        0,
        "ignore_value alone detaches the lease",
    );
    let ttl = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest { id: l, keys: true })
            .await,
        "time_to_live",
    );
    assert!(
        ttl.keys.is_empty(),
        "detached key still listed on the lease: {:?}",
        ttl.keys
    );
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: l }).await,
        "revoke",
    );
    assert!(
        get(kv, &a).await.is_some(),
        "revoking a lease deleted a key no longer attached to it"
    );
}

/// An empty key is refused by every operation.
pub async fn empty_key(kv: &dyn Kv, ns: &Ns) {
    let e = errors::empty_key;
    fails(kv.put(put_req(b"", b"v")).await, e(), "put with empty key");
    fails(kv.range(get_req(b"")).await, e(), "range with empty key");
    fails(
        kv.range(PbRangeRequest {
            range_end: b"z".to_vec(),
            ..get_req(b"")
        })
        .await,
        e(),
        "range with empty key and a range_end",
    );
    fails(
        kv.delete_range(PbDeleteRequest::default()).await,
        e(),
        "delete with empty key",
    );
    fails(
        kv.txn(txn(vec![cmp_value(b"", cr::EQUAL, b"x")], vec![], vec![]))
            .await,
        e(),
        "txn compare on empty key",
    );
    fails(
        kv.txn(txn(vec![], vec![op_put(b"", b"v")], vec![])).await,
        e(),
        "txn put with empty key",
    );
    fails(
        kv.txn(txn(vec![], vec![], vec![op_get(b"")])).await,
        e(),
        "txn failure-branch range with empty key",
    );
    assert!(get(kv, &ns.k("x")).await.is_none());
}

async fn range_fixture(kv: &dyn Kv, ns: &Ns) -> [i64; 5] {
    // Created in the order c, a, d, b; then a is updated. Values sort b < d < a < c.
    let rc = put(kv, &ns.k("c"), b"4").await;
    let ra = put(kv, &ns.k("a"), b"3").await;
    let rd = put(kv, &ns.k("d"), b"2").await;
    let rb = put(kv, &ns.k("b"), b"1").await;
    let ra2 = put(kv, &ns.k("a"), b"3").await;
    [rc, ra, rd, rb, ra2]
}

/// Ranges: [key, range_end), prefix, from-key, empty and inverted ranges, limit/more/count,
/// keys_only, count_only.
pub async fn range_basic(kv: &dyn Kv, ns: &Ns) {
    range_fixture(kv, ns).await;
    let all = prefix_req(ns, "");
    let r = range(kv, all.clone(), "prefix").await;
    assert_eq!(
        (keys(&r.kvs, ns), r.count, r.more),
        (sv(&["a", "b", "c", "d"]), 4, false),
        "prefix range (keys, count, more)"
    );
    let ab = PbRangeRequest {
        key: ns.k("a"),
        range_end: ns.k("c"),
        ..Default::default()
    };
    let r = range(kv, ab, "[a, c)").await;
    assert_eq!(
        (keys(&r.kvs, ns), r.count),
        (sv(&["a", "b"]), 2),
        "[a, c) is half-open"
    );
    let from = PbRangeRequest {
        key: ns.k("b"),
        range_end: vec![0],
        limit: 3,
        ..Default::default()
    };
    let r = range(kv, from, "from-key").await;
    assert_eq!(
        keys(&r.kvs, ns),
        sv(&["b", "c", "d"]),
        "range_end \\0 means every key >= key"
    );
    for (key, end, what) in [
        ("c", "a", "range_end < key"),
        ("b", "b", "range_end == key"),
    ] {
        let req = PbRangeRequest {
            key: ns.k(key),
            range_end: ns.k(end),
            ..Default::default()
        };
        let r = range(kv, req, what).await;
        assert!(
            r.kvs.is_empty() && r.count == 0 && !r.more,
            "{what} is an empty range, got {r:?}"
        );
    }
    for (limit, want, more) in [
        (1, &["a"][..], true),
        (2, &["a", "b"], true),
        (4, &["a", "b", "c", "d"], false),
        (5, &["a", "b", "c", "d"], false),
    ] {
        let r = range(
            kv,
            PbRangeRequest {
                limit,
                ..all.clone()
            },
            "limit",
        )
        .await;
        assert_eq!(
            (keys(&r.kvs, ns), r.more, r.count),
            (sv(want), more, 4),
            "limit {limit}: (keys, more, count = all keys in range)"
        );
    }
    let r = range(
        kv,
        PbRangeRequest {
            count_only: true,
            ..all.clone()
        },
        "count_only",
    )
    .await;
    assert!(
        r.kvs.is_empty() && r.count == 4,
        "count_only gives count 4 and no kvs: {r:?}"
    );
    let r = range(
        kv,
        PbRangeRequest {
            keys_only: true,
            ..all.clone()
        },
        "keys_only",
    )
    .await;
    assert_eq!(
        keys(&r.kvs, ns),
        sv(&["a", "b", "c", "d"]),
        "keys_only keys"
    );
    assert!(
        r.kvs
            .iter()
            .all(|k| k.value.is_empty() && k.version > 0 && k.mod_revision > 0),
        "keys_only drops values only: {:?}",
        r.kvs
    );
    let r = range(
        kv,
        PbRangeRequest {
            serializable: true,
            ..all
        },
        "serializable",
    )
    .await;
    assert_eq!(
        keys(&r.kvs, ns),
        sv(&["a", "b", "c", "d"]),
        "serializable range"
    );
}

fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// sort_order x sort_target, with and without limit.
pub async fn range_sort(kv: &dyn Kv, ns: &Ns) {
    range_fixture(kv, ns).await;
    let cases: &[(i32, i32, i64, &[&str])] = &[
        (so::ASCEND, st::KEY, 0, &["a", "b", "c", "d"]),
        (so::DESCEND, st::KEY, 0, &["d", "c", "b", "a"]),
        (so::ASCEND, st::VALUE, 0, &["b", "d", "a", "c"]),
        (so::DESCEND, st::VALUE, 0, &["c", "a", "d", "b"]),
        (so::NONE, st::VALUE, 0, &["b", "d", "a", "c"]), // NONE with a non-key target sorts ascending
        (so::ASCEND, st::CREATE, 0, &["c", "a", "d", "b"]),
        (so::DESCEND, st::CREATE, 0, &["b", "d", "a", "c"]),
        (so::ASCEND, st::MOD, 0, &["c", "d", "b", "a"]),
        (so::NONE, st::MOD, 0, &["c", "d", "b", "a"]),
        (so::DESCEND, st::MOD, 2, &["a", "b"]),
        (so::DESCEND, st::KEY, 1, &["d"]),
    ];
    for &(order, target, limit, want) in cases {
        let req = PbRangeRequest {
            sort_order: order,
            sort_target: target,
            limit,
            ..prefix_req(ns, "")
        };
        let r = range(kv, req, "sorted range").await;
        let more = limit > 0 && limit < 4;
        assert_eq!(
            (keys(&r.kvs, ns), r.more, r.count),
            (sv(want), more, 4),
            "sort order {order} target {target} limit {limit}: (keys, more, count)"
        );
    }
    let by_version = |order| PbRangeRequest {
        sort_order: order,
        sort_target: st::VERSION,
        ..prefix_req(ns, "")
    };
    let r = range(kv, by_version(so::DESCEND), "by version").await;
    assert_eq!(
        keys(&r.kvs[..1], ns),
        sv(&["a"]),
        "version descending starts with the updated key"
    );
    let r = range(kv, by_version(so::ASCEND), "by version").await;
    assert_eq!(
        keys(&r.kvs[3..], ns),
        sv(&["a"]),
        "version ascending ends with the updated key"
    );
}

/// min/max mod/create revision filters; reads of history; future revisions.
pub async fn range_filters_and_history(kv: &dyn Kv, ns: &Ns) {
    let [rc, ra, rd, rb, ra2] = range_fixture(kv, ns).await;
    let f = |min_mod, max_mod, min_create, max_create| PbRangeRequest {
        min_mod_revision: min_mod,
        max_mod_revision: max_mod,
        min_create_revision: min_create,
        max_create_revision: max_create,
        ..prefix_req(ns, "")
    };
    let cases: &[(PbRangeRequest, &[&str], &str)] = &[
        (f(rd, 0, 0, 0), &["a", "b", "d"], "min_mod_revision"),
        (f(0, rd, 0, 0), &["c", "d"], "max_mod_revision"),
        (f(0, 0, rd, 0), &["b", "d"], "min_create_revision"),
        (f(0, 0, 0, ra), &["a", "c"], "max_create_revision"),
        (f(rd, rb, 0, 0), &["b", "d"], "min and max mod_revision"),
        (f(0, 0, ra, ra), &["a"], "min and max create_revision"),
    ];
    for (req, want, what) in cases {
        let r = range(kv, req.clone(), what).await;
        assert_eq!(keys(&r.kvs, ns), sv(want), "{what} filter");
    }
    let at = |revision| PbRangeRequest {
        revision,
        ..prefix_req(ns, "")
    };
    let r = range(kv, at(rd), "history").await;
    assert_eq!(
        (keys(&r.kvs, ns), r.count),
        (sv(&["a", "c", "d"]), 3),
        "prefix at revision {rd}"
    );
    assert!(
        r.kvs[0].version == 1 && r.kvs[0].mod_revision == ra,
        "a at revision {rd}: {:?}",
        r.kvs[0]
    );
    assert!(
        rev_of(&r.header, "history") >= ra2,
        "a read of history still reports the current revision in its header"
    );
    let r = range(kv, at(rc), "history").await;
    assert_eq!(keys(&r.kvs, ns), sv(&["c"]), "prefix at revision {rc}");
    let r = range(
        kv,
        PbRangeRequest {
            count_only: true,
            ..at(rb)
        },
        "history count",
    )
    .await;
    assert_eq!(r.count, 4, "count_only at revision {rb}");
    let cur = current_rev(kv, ns).await;
    fails(
        kv.range(at(cur + 1_000_000)).await,
        errors::future_rev(),
        "range at a future revision",
    );
    fails(
        kv.range(PbRangeRequest {
            revision: cur + 1_000_000,
            ..get_req(&ns.k("a"))
        })
        .await,
        errors::future_rev(),
        "get at a future revision",
    );
}

/// delete_range: single key, missing key, prefix with prev_kv, inverted range; the delete's revision.
pub async fn delete_range(kv: &dyn Kv, ns: &Ns) {
    for k in ["x/a", "x/b", "x/c", "y"] {
        put(kv, &ns.k(k), k.as_bytes()).await;
    }
    let d = |key: Vec<u8>, range_end: Vec<u8>, prev_kv| PbDeleteRequest {
        key,
        range_end,
        prev_kv,
    };
    let r = ok(
        kv.delete_range(d(ns.k("x/a"), vec![], false)).await,
        "delete one key",
    );
    assert!(
        r.deleted == 1 && r.prev_kvs.is_empty(),
        "delete one key without prev_kv: {r:?}"
    );
    let r = ok(
        kv.delete_range(d(ns.k("x/a"), vec![], true)).await,
        "delete a missing key",
    );
    assert!(
        r.deleted == 0 && r.prev_kvs.is_empty(),
        "deleting a missing key deletes nothing: {r:?}"
    );
    rev_of(&r.header, "delete missing");
    let r = ok(
        kv.delete_range(d(ns.k("x/c"), ns.k("x/a"), true)).await,
        "inverted delete",
    );
    assert_eq!(r.deleted, 0, "delete with range_end < key deletes nothing");
    let p = ns.k("x/");
    let r = ok(
        kv.delete_range(d(p.clone(), prefix_end(&p), true)).await,
        "delete prefix",
    );
    let rev = rev_of(&r.header, "delete prefix");
    assert_eq!(r.deleted, 2, "prefix delete count");
    let mut prev: Vec<_> = r
        .prev_kvs
        .iter()
        .map(|kv| (s(&kv.key), s(&kv.value)))
        .collect();
    prev.sort();
    let want: Vec<_> = ["x/b", "x/c"]
        .iter()
        .map(|k| (s(&ns.k(k)), k.to_string()))
        .collect();
    assert_eq!(prev, want, "prefix delete prev_kvs");
    assert!(
        get(kv, &ns.k("x/b")).await.is_none() && get(kv, &ns.k("x/c")).await.is_none(),
        "prefix delete left keys"
    );
    assert!(
        get(kv, &ns.k("y")).await.is_some(),
        "prefix delete removed a key outside the prefix"
    );
    assert!(
        get_at(kv, &ns.k("x/b"), rev).await.is_none(),
        "deleted at the delete's revision"
    );
    assert!(
        get_at(kv, &ns.k("x/b"), rev - 1).await.is_some(),
        "present just before the delete"
    );
    let r = range(
        kv,
        PbRangeRequest {
            revision: rev - 1,
            ..prefix_req(ns, "x/")
        },
        "before delete",
    )
    .await;
    assert_eq!(r.count, 2, "both keys went in one revision");
}

// ---------- Txn ----------

/// Compares on VALUE and VERSION, missing keys, both branches.
pub async fn txn_compare_value_version(kv: &dyn Kv, ns: &Ns) {
    let (k, miss) = (ns.k("k"), ns.k("missing"));
    put(kv, &k, b"v1").await;
    let t = txn(
        vec![cmp_value(&k, cr::EQUAL, b"v1")],
        vec![op_put(&k, b"v2")],
        vec![op_put(&k, b"bad")],
    );
    let r = ok(kv.txn(t.clone()).await, "txn value == v1");
    assert!(
        r.succeeded && r.responses.len() == 1,
        "value compare true: {r:?}"
    );
    let p = put_resp(&r.responses[0], "success branch");
    assert!(p.prev_kv.is_none(), "put in txn without prev_kv");
    assert_eq!(
        must_get(kv, &k, "").await.value,
        b"v2",
        "success branch applied"
    );
    let t2 = txn(
        t.compare.clone(),
        vec![op_put(&k, b"bad")],
        vec![op_get(&k)],
    );
    let r = ok(kv.txn(t2).await, "txn value == v1 (now false)");
    assert!(
        !r.succeeded && r.responses.len() == 1,
        "value compare false: {r:?}"
    );
    let g = range_resp(&r.responses[0], "failure branch");
    assert_eq!(
        g.kvs.iter().map(|kv| s(&kv.value)).collect::<Vec<_>>(),
        sv(&["v2"]),
        "failure-branch range"
    );
    let v = |res, val: &[u8]| cmp_value(&k, res, val);
    for (c, want, what) in [
        (v(cr::NOT_EQUAL, b"zzz"), true, "value != zzz"),
        (v(cr::GREATER, b"v1"), true, "value > v1"),
        (v(cr::LESS, b"v3"), true, "value < v3"),
        (v(cr::LESS, b"v2"), false, "value < v2"),
        (v(cr::GREATER, b"v2"), false, "value > v2"),
        (
            cmp_value(&miss, cr::NOT_EQUAL, b"x"),
            false,
            "value of a missing key != x (value compares on missing keys are false)",
        ),
        (
            cmp_value(&miss, cr::EQUAL, b""),
            false,
            "value of a missing key == \"\"",
        ),
    ] {
        txn_is(kv, vec![c], want, what).await;
    }
    let ver = |key: &[u8], res, n| cmp(key, res, ct::VERSION, PbTargetUnion::Version(n));
    for (c, want, what) in [
        (ver(&k, cr::EQUAL, 2), true, "version == 2"),
        (ver(&k, cr::GREATER, 1), true, "version > 1"),
        (ver(&k, cr::LESS, 2), false, "version < 2"),
        (ver(&k, cr::NOT_EQUAL, 2), false, "version != 2"),
        (
            ver(&miss, cr::EQUAL, 0),
            true,
            "version of a missing key == 0",
        ),
        (
            ver(&miss, cr::GREATER, 0),
            false,
            "version of a missing key > 0",
        ),
    ] {
        txn_is(kv, vec![c], want, what).await;
    }
    txn_is(
        kv,
        vec![ver(&k, cr::EQUAL, 2), v(cr::EQUAL, b"v2")],
        true,
        "two true compares",
    )
    .await;
    txn_is(
        kv,
        vec![ver(&k, cr::EQUAL, 2), v(cr::EQUAL, b"v1")],
        false,
        "true and false compares",
    )
    .await;
    let r = ok(kv.txn(PbTxnRequest::default()).await, "empty txn");
    assert!(
        r.succeeded && r.responses.is_empty(),
        "a txn without compares succeeds: {r:?}"
    );
}

/// Compares on CREATE, MOD and LEASE, and compares over ranges.
pub async fn txn_compare_revisions_lease_ranges(kv: &dyn Kv, ns: &Ns) {
    let (k, miss) = (ns.k("k"), ns.k("missing"));
    let rc = put(kv, &k, b"v1").await;
    let rm = put(kv, &k, b"v2").await;
    let c = |key: &[u8], res, t| cmp(key, res, ct::CREATE, PbTargetUnion::CreateRevision(t));
    let m = |key: &[u8], res, t| cmp(key, res, ct::MOD, PbTargetUnion::ModRevision(t));
    let l = |key: &[u8], res, t| cmp(key, res, ct::LEASE, PbTargetUnion::Lease(t));
    for (cmp, want, what) in [
        (c(&k, cr::EQUAL, rc), true, "create == its create revision"),
        (c(&k, cr::LESS, rm), true, "create < mod"),
        (c(&miss, cr::EQUAL, 0), true, "create of a missing key == 0"),
        (m(&k, cr::EQUAL, rm), true, "mod == its mod revision"),
        (m(&k, cr::GREATER, rc), true, "mod > create"),
        (m(&k, cr::EQUAL, rc), false, "mod == create"),
        (m(&miss, cr::EQUAL, 0), true, "mod of a missing key == 0"),
        (
            l(&k, cr::EQUAL, 0),
            true,
            "lease of a key without lease == 0",
        ),
        (l(&miss, cr::EQUAL, 0), true, "lease of a missing key == 0"),
    ] {
        txn_is(kv, vec![cmp], want, what).await;
    }
    let lease = grant(kv, 600).await;
    put_lease(kv, &k, b"v3", lease).await;
    txn_is(
        kv,
        vec![l(&k, cr::EQUAL, lease)],
        true,
        "lease == its lease",
    )
    .await;
    txn_is(
        kv,
        vec![l(&k, cr::EQUAL, 0)],
        false,
        "lease == 0 after attaching",
    )
    .await;
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: lease }).await,
        "revoke",
    );
    // Compares over ranges hold only if they hold for every key in the range.
    put(kv, &ns.k("p/a"), b"v1").await;
    put(kv, &ns.k("p/b"), b"v1").await;
    let p = ns.k("p/");
    let over = |mut cmp: PbCompare, end: Vec<u8>| {
        cmp.range_end = end;
        cmp
    };
    let pv = |res, val: &[u8]| over(cmp_value(&p, res, val), prefix_end(&p));
    let pver = |res, n| {
        over(
            cmp(&p, res, ct::VERSION, PbTargetUnion::Version(n)),
            prefix_end(&p),
        )
    };
    txn_is(
        kv,
        vec![pv(cr::EQUAL, b"v1")],
        true,
        "value == v1 over a prefix where all are v1",
    )
    .await;
    put(kv, &ns.k("p/b"), b"v2").await;
    txn_is(
        kv,
        vec![pv(cr::EQUAL, b"v1")],
        false,
        "value == v1 over a prefix where one is v2",
    )
    .await;
    txn_is(
        kv,
        vec![pver(cr::GREATER, 0)],
        true,
        "version > 0 over a prefix",
    )
    .await;
    txn_is(
        kv,
        vec![pver(cr::EQUAL, 1)],
        false,
        "version == 1 over a prefix with one updated key",
    )
    .await;
    let e = ns.k("e/");
    let ever = |res, n| {
        over(
            cmp(&e, res, ct::VERSION, PbTargetUnion::Version(n)),
            prefix_end(&e),
        )
    };
    txn_is(
        kv,
        vec![ever(cr::EQUAL, 0)],
        true,
        "version == 0 over an empty range",
    )
    .await;
    txn_is(
        kv,
        vec![over(cmp_value(&e, cr::NOT_EQUAL, b"x"), prefix_end(&e))],
        false,
        "value compare over an empty range",
    )
    .await;
    let from = over(
        cmp(
            &ns.k("p/b"),
            cr::GREATER,
            ct::CREATE,
            PbTargetUnion::CreateRevision(0),
        ),
        vec![0],
    );
    txn_is(kv, vec![from], true, "create > 0 over a from-key range").await;
}

/// Ops inside a txn: order, read-your-writes, one revision, nesting, deletes.
pub async fn txn_ops_and_nesting(kv: &dyn Kv, ns: &Ns) {
    let (a, b, c) = (ns.k("a"), ns.k("b"), ns.k("c"));
    put(kv, &c, b"old").await;
    let ops = vec![
        op_put(&a, b"1"),
        op_get(&a),
        op_put(&b, b"2"),
        op_del(&c, &[]),
        op_get(&c),
    ];
    let r = ok(kv.txn(txn(vec![], ops, vec![])).await, "txn with mixed ops");
    let rev = rev_of(&r.header, "txn");
    assert!(r.succeeded && r.responses.len() == 5, "mixed txn: {r:?}");
    let g = range_resp(&r.responses[1], "range after put in the same txn");
    assert_eq!(g.kvs.len(), 1, "a range sees the txn's earlier put");
    check_kv(
        &g.kvs[0],
        b"1",
        rev,
        rev,
        1,
        0,
        "read-your-writes inside a txn",
    );
    match &r.responses[3].response {
        Some(PbTxnOpResponse::ResponseDeleteRange(d)) => assert_eq!(d.deleted, 1, "delete in txn"),
        other => panic!("expected a delete response, got {other:?}"),
    }
    assert!(
        range_resp(&r.responses[4], "range after delete")
            .kvs
            .is_empty(),
        "a range sees the txn's earlier delete"
    );
    check_kv(
        &must_get(kv, &b, "").await,
        b"2",
        rev,
        rev,
        1,
        0,
        "every write of a txn has the txn's revision",
    );
    let inner = |want: &[u8]| {
        txn(
            vec![cmp_value(&a, cr::EQUAL, want)],
            vec![op_put(&ns.k("n1"), b"s")],
            vec![op_put(&ns.k("n2"), b"f")],
        )
    };
    let r = ok(
        kv.txn(txn(
            vec![],
            vec![op_txn(inner(b"1")), op_get(&ns.k("n1"))],
            vec![],
        ))
        .await,
        "nested txn",
    );
    match &r.responses[0].response {
        Some(PbTxnOpResponse::ResponseTxn(t)) => {
            assert!(t.succeeded && t.responses.len() == 1, "inner txn: {t:?}");
            put_resp(&t.responses[0], "inner success");
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert_eq!(
        range_resp(&r.responses[1], "after nested").kvs.len(),
        1,
        "outer txn sees the inner txn's put"
    );
    let r = ok(
        kv.txn(txn(vec![], vec![op_txn(inner(b"zzz"))], vec![]))
            .await,
        "nested txn, inner false",
    );
    match &r.responses[0].response {
        Some(PbTxnOpResponse::ResponseTxn(t)) => assert!(
            !t.succeeded && t.responses.len() == 1,
            "inner txn failure branch: {t:?}"
        ),
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert!(
        get(kv, &ns.k("n2")).await.is_some(),
        "inner failure branch applied"
    );
}

/// Txn errors: duplicate keys, too many ops, failing ops abort the whole txn.
pub async fn txn_errors(kv: &dyn Kv, ns: &Ns) {
    let (a, b) = (ns.k("a"), ns.k("b"));
    let dup = errors::duplicate_key;
    let run = |t| kv.txn(t);
    fails(
        run(txn(
            vec![],
            vec![op_put(&a, b"1"), op_put(&a, b"2")],
            vec![],
        ))
        .await,
        dup(),
        "two puts of one key",
    );
    fails(
        run(txn(vec![], vec![op_put(&a, b"1"), op_del(&a, &[])], vec![])).await,
        dup(),
        "put then delete of one key",
    );
    fails(
        run(txn(
            vec![],
            vec![op_del(&ns.k(""), &prefix_end(&ns.0)), op_put(&a, b"1")],
            vec![],
        ))
        .await,
        dup(),
        "delete of a range then put inside it",
    );
    fails(
        run(txn(
            vec![],
            vec![],
            vec![op_put(&a, b"1"), op_put(&a, b"2")],
        ))
        .await,
        dup(),
        "two puts of one key in the failure branch",
    );
    let nested = txn(vec![], vec![op_put(&a, b"2")], vec![]);
    fails(
        run(txn(vec![], vec![op_put(&a, b"1"), op_txn(nested)], vec![])).await,
        dup(),
        "put in a txn and in its nested txn",
    );
    let allowed = [
        (
            txn(vec![], vec![op_put(&a, b"1")], vec![op_put(&a, b"2")]),
            "one key in both branches",
        ),
        (
            txn(vec![], vec![op_del(&a, &[]), op_del(&a, &[])], vec![]),
            "two deletes of one key",
        ),
        (
            txn(
                vec![],
                vec![op_get(&a), op_put(&a, b"1"), op_get(&a)],
                vec![],
            ),
            "range and put of one key",
        ),
        (
            txn(
                vec![],
                vec![op_txn(txn(
                    vec![],
                    vec![op_put(&a, b"1")],
                    vec![op_put(&a, b"2")],
                ))],
                vec![],
            ),
            "nested branches putting one key",
        ),
    ];
    for (t, what) in allowed {
        ok(run(t).await, what);
    }
    let puts = |n: usize| {
        (0..n)
            .map(|i| op_put(&ns.k(&format!("m/{i:03}")), b"v"))
            .collect::<Vec<_>>()
    };
    fails(
        run(txn(vec![], puts(129), vec![])).await,
        errors::too_many_ops(),
        "129 ops",
    );
    fails(
        run(txn(vec![], vec![], puts(129))).await,
        errors::too_many_ops(),
        "129 failure ops",
    );
    let cmps = |n: usize| {
        (0..n)
            .map(|_| cmp_value(&a, cr::EQUAL, b"1"))
            .collect::<Vec<_>>()
    };
    fails(
        run(txn(cmps(129), vec![], vec![])).await,
        errors::too_many_ops(),
        "129 compares",
    );
    let r = ok(
        run(txn(vec![], puts(128), vec![])).await,
        "128 ops (the default limit)",
    );
    assert_eq!(r.responses.len(), 128, "128 responses");
    ok(
        run(txn(cmps(128), puts(128), puts(128))).await,
        "128 compares, 128 success and 128 failure ops (the limit is per part)",
    );
    // A failing op fails the whole txn: nothing of it applies.
    let dead = grant(kv, 600).await;
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: dead }).await,
        "revoke",
    );
    let bad = PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            lease: dead,
            ..put_req(&b, b"x")
        })),
    };
    put(kv, &a, b"before").await;
    fails(
        run(txn(vec![], vec![op_put(&a, b"after"), bad], vec![])).await,
        errors::lease_not_found(),
        "txn put with a revoked lease",
    );
    assert_eq!(
        must_get(kv, &a, "").await.value,
        b"before",
        "a failed txn applied an op"
    );
    let iv = PbPutRequest {
        ignore_value: true,
        ..put_req(&ns.k("nokey"), b"")
    };
    let bad = PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(iv)),
    };
    fails(
        run(txn(vec![], vec![op_put(&a, b"after"), bad], vec![])).await,
        errors::key_not_found(),
        "txn ignore_value put of a missing key",
    );
    assert_eq!(
        must_get(kv, &a, "").await.value,
        b"before",
        "a failed txn applied an op"
    );
    let cur = current_rev(kv, ns).await;
    let future = PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
            revision: cur + 1_000_000,
            ..get_req(&a)
        })),
    };
    fails(
        run(txn(vec![], vec![future], vec![])).await,
        errors::future_rev(),
        "txn range at a future revision",
    );
}

// ---------- Watch ----------

fn wspec(key: Vec<u8>, range_end: Vec<u8>) -> WatchSpec {
    WatchSpec {
        key,
        range_end,
        ..Default::default()
    }
}

/// A single-key watch: created first, then its key's puts and deletes in order, nothing else.
pub async fn watch_basic(kv: &dyn Kv, ns: &Ns) {
    let k = ns.k("k");
    let (mut w, id) = watch(kv, wspec(k.clone(), vec![]), "watch key").await;
    let r1 = put(kv, &k, b"v1").await;
    put(kv, &ns.k("other"), b"x").await;
    put(kv, &ns.k("k2"), b"x").await;
    let r2 = put(kv, &k, b"v2").await;
    let rd = del(kv, &k).await;
    let evs = events(&mut w, id, 3, "watch key").await;
    let got: Vec<_> = evs.iter().map(|e| ev(e, ns)).collect();
    let want = vec![
        (PUT, "k".into(), "v1".into(), r1),
        (PUT, "k".into(), "v2".into(), r2),
        (DELETE, "k".into(), "".into(), rd),
    ];
    assert_eq!(
        got, want,
        "events of a single-key watch (type, key, value, mod_revision)"
    );
    check_kv(
        evs[1].kv.as_ref().unwrap_or(&PbKeyValue::default()),
        b"v2",
        r1,
        r2,
        2,
        0,
        "put event kv",
    );
    let dkv = evs[2].kv.clone().unwrap_or_default();
    assert!(
        dkv.create_revision == 0 && dkv.version == 0 && dkv.lease == 0,
        "delete event kv carries only key and mod_revision: {dkv:?}"
    );
    assert!(
        evs.iter().all(|e| e.prev_kv.is_none()),
        "prev_kv sent without being asked"
    );
    // A second watcher on the same key sees the same events.
    let (mut w2, id2) = watch(kv, wspec(k.clone(), vec![]), "second watch").await;
    let r3 = put(kv, &k, b"v3").await;
    for (w, id) in [(&mut w, id), (&mut w2, id2)] {
        let got: Vec<_> = events(w, id, 1, "after re-create")
            .await
            .iter()
            .map(|e| ev(e, ns))
            .collect();
        assert_eq!(
            got,
            vec![(PUT, "k".into(), "v3".into(), r3)],
            "event after re-create"
        );
    }
}

/// Prefix and [key, range_end) watches.
pub async fn watch_ranges(kv: &dyn Kv, ns: &Ns) {
    let p = ns.k("p/");
    let (mut wp, idp) = watch(kv, wspec(p.clone(), prefix_end(&p)), "prefix watch").await;
    let (mut wr, idr) = watch(kv, wspec(ns.k("p/b"), ns.k("p/d")), "range watch").await;
    let ra = put(kv, &ns.k("p/a"), b"1").await;
    put(kv, &ns.k("q"), b"outside").await;
    let rb = put(kv, &ns.k("p/b"), b"2").await;
    let rc = put(kv, &ns.k("p/c"), b"3").await;
    let rd = put(kv, &ns.k("p/d"), b"4").await;
    let rx = del(kv, &ns.k("p/a")).await;
    let rb2 = put(kv, &ns.k("p/b"), b"5").await;
    let got: Vec<_> = events(&mut wp, idp, 6, "prefix watch")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    let want = vec![
        (PUT, "p/a".to_string(), "1".to_string(), ra),
        (PUT, "p/b".into(), "2".into(), rb),
        (PUT, "p/c".into(), "3".into(), rc),
        (PUT, "p/d".into(), "4".into(), rd),
        (DELETE, "p/a".into(), "".into(), rx),
        (PUT, "p/b".into(), "5".into(), rb2),
    ];
    assert_eq!(got, want, "prefix watch events");
    let got: Vec<_> = events(&mut wr, idr, 3, "range watch")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![want[1].clone(), want[2].clone(), want[5].clone()],
        "[p/b, p/d) watch events"
    );
    // One txn writing several watched keys: its events share one revision, in op order.
    let t = txn(
        vec![],
        vec![op_put(&ns.k("p/z"), b"z"), op_put(&ns.k("p/y"), b"y")],
        vec![],
    );
    let rt = rev_of(&ok(kv.txn(t).await, "txn").header, "txn");
    let got: Vec<_> = events(&mut wp, idp, 2, "txn events")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (PUT, "p/z".into(), "z".into(), rt),
            (PUT, "p/y".into(), "y".into(), rt)
        ],
        "events of one txn"
    );
}

/// start_revision replays history; prev_kv on live and replayed events.
pub async fn watch_history_and_prev_kv(kv: &dyn Kv, ns: &Ns) {
    let k = ns.k("k");
    let r1 = put(kv, &k, b"v1").await;
    let r2 = put(kv, &k, b"v2").await;
    let rd = del(kv, &k).await;
    let r3 = put(kv, &k, b"v3").await;
    let spec = |start_revision, prev_kv| WatchSpec {
        start_revision,
        prev_kv,
        ..wspec(k.clone(), vec![])
    };
    let (mut w, id) = watch(kv, spec(r1, false), "watch from r1").await;
    let got: Vec<_> = events(&mut w, id, 4, "history")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    let key = || "k".to_string();
    let hist = vec![
        (PUT, key(), "v1".into(), r1),
        (PUT, key(), "v2".into(), r2),
        (DELETE, key(), "".into(), rd),
        (PUT, key(), "v3".into(), r3),
    ];
    assert_eq!(got, hist, "replayed history from start_revision");
    let r4 = put(kv, &k, b"v4").await;
    let got: Vec<_> = events(&mut w, id, 1, "live after history")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![(PUT, key(), "v4".into(), r4)],
        "live event after the replay"
    );
    let (mut w, id) = watch(kv, spec(r2, true), "watch from r2 with prev_kv").await;
    let evs = events(&mut w, id, 4, "history with prev_kv").await;
    let prev: Vec<_> = evs
        .iter()
        .map(|e| e.prev_kv.as_ref().map(|p| s(&p.value)))
        .collect();
    assert_eq!(
        prev,
        vec![
            Some("v1".into()),
            Some("v2".into()),
            None,
            Some("v3".into())
        ],
        "prev_kv of replayed events (put, delete, put after delete, put)"
    );
    let r5 = del(kv, &k).await;
    let evs = events(&mut w, id, 1, "live delete with prev_kv").await;
    assert_eq!(
        ev(&evs[0], ns),
        (DELETE, key(), "".into(), r5),
        "live delete"
    );
    let p = evs[0]
        .prev_kv
        .clone()
        .unwrap_or_else(|| panic!("live delete event without prev_kv"));
    check_kv(&p, b"v4", r3, r4, 2, 0, "prev_kv of a live delete");
    let (mut w, id) = watch(kv, spec(r5 + 1, false), "watch from the next revision").await;
    let r6 = put(kv, &k, b"v6").await;
    let got: Vec<_> = events(&mut w, id, 1, "from next revision")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![(PUT, key(), "v6".into(), r6)],
        "watch from current+1"
    );
}

/// NOPUT and NODELETE filters.
pub async fn watch_filters(kv: &dyn Kv, ns: &Ns) {
    let p = ns.k("");
    let spec = |no_put, no_delete| WatchSpec {
        no_put,
        no_delete,
        ..wspec(p.clone(), prefix_end(&p))
    };
    let (mut np, idp) = watch(kv, spec(true, false), "NOPUT watch").await;
    let (mut nd, idd) = watch(kv, spec(false, true), "NODELETE watch").await;
    let r1 = put(kv, &ns.k("a"), b"1").await;
    let rd = del(kv, &ns.k("a")).await;
    let r2 = put(kv, &ns.k("b"), b"2").await;
    let rd2 = del(kv, &ns.k("b")).await;
    let got: Vec<_> = events(&mut np, idp, 2, "NOPUT")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (DELETE, "a".into(), "".into(), rd),
            (DELETE, "b".into(), "".into(), rd2)
        ],
        "NOPUT watch sees deletes only"
    );
    let got: Vec<_> = events(&mut nd, idd, 2, "NODELETE")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (PUT, "a".into(), "1".into(), r1),
            (PUT, "b".into(), "2".into(), r2)
        ],
        "NODELETE watch sees puts only"
    );
}

// ---------- Leases ----------

/// Grant, attach keys, time_to_live with keys, keep-alive, revoke (deletes its keys in one revision).
pub async fn lease_basic(kv: &dyn Kv, ns: &Ns) {
    let g = ok(
        kv.lease_grant(PbLeaseGrantRequest { ttl: 60, id: 0 }).await,
        "grant",
    );
    assert!(
        g.id > 0 && g.ttl == 60 && g.error.is_empty(),
        "grant 60: {g:?}"
    );
    rev_of(&g.header, "grant");
    let id = g.id;
    let t = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest { id, keys: true })
            .await,
        "time_to_live",
    );
    assert!(
        t.id == id && t.granted_ttl == 60 && t.ttl > 0 && t.ttl <= 60 && t.keys.is_empty(),
        "time_to_live of a fresh lease: {t:?}"
    );
    let ra = put_lease(kv, &ns.k("a"), b"1", id).await;
    put_lease(kv, &ns.k("b"), b"2", id).await;
    put(kv, &ns.k("c"), b"3").await;
    check_kv(
        &must_get(kv, &ns.k("a"), "").await,
        b"1",
        ra,
        ra,
        1,
        id,
        "key with a lease",
    );
    let t = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest { id, keys: true })
            .await,
        "time_to_live",
    );
    let mut got: Vec<_> = t.keys.iter().map(|k| s(k)).collect();
    got.sort();
    assert_eq!(got, vec![s(&ns.k("a")), s(&ns.k("b"))], "time_to_live keys");
    let t = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest { id, keys: false })
            .await,
        "time_to_live",
    );
    assert!(t.keys.is_empty(), "keys listed without being asked: {t:?}");
    let k = ok(kv.lease_keep_alive(id).await, "keep_alive");
    assert!(k.id == id && k.ttl == 60, "keep_alive answer: {k:?}");
    rev_of(&k.header, "keep_alive");
    let p = ns.k("");
    let (mut w, wid) = watch(kv, wspec(p.clone(), prefix_end(&p)), "watch").await;
    let r = ok(kv.lease_revoke(PbLeaseRevokeRequest { id }).await, "revoke");
    let rr = rev_of(&r.header, "revoke");
    let evs = events(&mut w, wid, 2, "revoke deletes").await;
    let mut got: Vec<_> = evs.iter().map(|e| ev(e, ns)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (DELETE, "a".into(), "".into(), rr),
            (DELETE, "b".into(), "".into(), rr)
        ],
        "revoke deletes its keys in one revision"
    );
    assert!(
        get(kv, &ns.k("a")).await.is_none() && get(kv, &ns.k("b")).await.is_none(),
        "revoke left keys"
    );
    assert!(
        get(kv, &ns.k("c")).await.is_some(),
        "revoke deleted a key without the lease"
    );
}

/// Errors and answers for unknown leases; explicit ids; TTL bounds.
pub async fn lease_errors(kv: &dyn Kv, ns: &Ns) {
    let dead = grant(kv, 60).await;
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: dead }).await,
        "revoke",
    );
    let nf = errors::lease_not_found;
    fails(
        kv.lease_revoke(PbLeaseRevokeRequest { id: dead }).await,
        nf(),
        "revoke a revoked lease",
    );
    fails(
        kv.put(PbPutRequest {
            lease: dead,
            ..put_req(&ns.k("a"), b"1")
        })
        .await,
        nf(),
        "put with a revoked lease",
    );
    assert!(
        get(kv, &ns.k("a")).await.is_none(),
        "put with a revoked lease wrote the key"
    );
    let t = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest {
            id: dead,
            keys: true,
        })
        .await,
        "time_to_live of a revoked lease",
    );
    assert!(
        t.id == dead && t.ttl == -1 && t.keys.is_empty(),
        "time_to_live of an unknown lease answers TTL -1: {t:?}"
    );
    let k = ok(
        kv.lease_keep_alive(dead).await,
        "keep_alive of a revoked lease",
    );
    assert!(
        k.id == dead && k.ttl == 0,
        "keep_alive of an unknown lease answers TTL 0: {k:?}"
    );
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1);
    let want = (nanos & 0x0fff_ffff_ffff_ffff) | 0x1000_0000_0000_0000;
    let g = ok(
        kv.lease_grant(PbLeaseGrantRequest { ttl: 60, id: want })
            .await,
        "grant with an id",
    );
    assert!(g.id == want && g.ttl == 60, "grant with id {want:x}: {g:?}");
    fails(
        kv.lease_grant(PbLeaseGrantRequest { ttl: 60, id: want })
            .await,
        errors::lease_exist(),
        "grant an existing id",
    );
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: want }).await,
        "revoke",
    );
    fails(
        kv.lease_grant(PbLeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await,
        errors::lease_ttl_too_large(),
        "grant TTL above 9e9 s",
    );
    let g = ok(
        kv.lease_grant(PbLeaseGrantRequest { ttl: 1, id: 0 }).await,
        "grant TTL 1",
    );
    assert!(
        g.ttl >= 1,
        "grant TTL 1 answers a TTL >= 1 (a server may raise it to its minimum): {g:?}"
    );
    ok(
        kv.lease_revoke(PbLeaseRevokeRequest { id: g.id }).await,
        "revoke",
    );
}

/// A short lease expires by itself and takes its keys (bounded wait).
pub async fn lease_expiry(kv: &dyn Kv, ns: &Ns) {
    let id = grant(kv, 2).await;
    let k = ns.k("ephemeral");
    put_lease(kv, &k, b"1", id).await;
    let (mut w, wid) = watch(kv, wspec(k.clone(), vec![]), "watch").await;
    let started = Instant::now();
    while get(kv, &k).await.is_some() {
        assert!(
            started.elapsed() < WAIT,
            "a 2 s lease's key still exists after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let evs = events(&mut w, wid, 1, "expiry delete").await;
    assert_eq!(evs[0].r#type, DELETE, "expiry makes a delete event");
    let t = ok(
        kv.lease_time_to_live(PbLeaseTimeToLiveRequest { id, keys: false })
            .await,
        "time_to_live after expiry",
    );
    assert_eq!(t.ttl, -1, "time_to_live of an expired lease");
    fails(
        kv.lease_revoke(PbLeaseRevokeRequest { id }).await,
        errors::lease_not_found(),
        "revoke an expired lease",
    );
}

// ---------- Compaction (last: it affects the whole store) ----------

/// Compaction: reads below the compacted revision fail, at it succeed; compact errors; a watch from
/// a compacted revision is canceled with compact_revision.
pub async fn compaction(kv: &dyn Kv, ns: &Ns) {
    let k = ns.k("k");
    let r1 = put(kv, &k, b"v1").await;
    let r2 = put(kv, &k, b"v2").await;
    let r3 = put(kv, &k, b"v3").await;
    let c = ok(
        kv.compact(PbCompactionRequest {
            revision: r2,
            physical: true,
        })
        .await,
        "compact",
    );
    rev_of(&c.header, "compact");
    let at = |revision| PbRangeRequest {
        revision,
        ..get_req(&k)
    };
    fails(
        kv.range(at(r1)).await,
        errors::compacted(),
        "read below the compacted revision",
    );
    fails(
        kv.range(PbRangeRequest {
            count_only: true,
            ..at(r1)
        })
        .await,
        errors::compacted(),
        "count_only below the compacted revision",
    );
    let op = PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(at(r1))),
    };
    fails(
        kv.txn(txn(vec![], vec![op], vec![])).await,
        errors::compacted(),
        "txn range below the compacted revision",
    );
    check_kv(
        &get_at(kv, &k, r2).await.unwrap_or_default(),
        b"v2",
        r1,
        r2,
        2,
        0,
        "read at the compacted revision",
    );
    check_kv(
        &get_at(kv, &k, r3).await.unwrap_or_default(),
        b"v3",
        r1,
        r3,
        3,
        0,
        "read after the compacted revision",
    );
    fails(
        kv.compact(PbCompactionRequest {
            revision: r2,
            physical: false,
        })
        .await,
        errors::compacted(),
        "compact at the compacted revision again",
    );
    fails(
        kv.compact(PbCompactionRequest {
            revision: r1,
            physical: false,
        })
        .await,
        errors::compacted(),
        "compact below the compacted revision",
    );
    let cur = current_rev(kv, ns).await;
    fails(
        kv.compact(PbCompactionRequest {
            revision: cur + 1_000_000,
            physical: false,
        })
        .await,
        errors::future_rev(),
        "compact at a future revision",
    );
    let mut w = ok(
        kv.watch(WatchSpec {
            start_revision: r1,
            ..wspec(k.clone(), vec![])
        })
        .await,
        "watch from a compacted revision",
    );
    let first = next(&mut w, "compacted watch").await;
    assert!(
        first.created && first.events.is_empty(),
        "compacted watch: first response is `created`: {first:?}"
    );
    let r = if first.canceled {
        first
    } else {
        next(&mut w, "compacted watch").await
    };
    assert!(
        r.canceled && r.compact_revision >= r2 && r.events.is_empty(),
        "a watch from a compacted revision is canceled with compact_revision: {r:?}"
    );
    let (mut w, id) = watch(
        kv,
        WatchSpec {
            start_revision: r2,
            ..wspec(k.clone(), vec![])
        },
        "watch from the compacted revision",
    )
    .await;
    let got: Vec<_> = events(&mut w, id, 2, "from compacted revision")
        .await
        .iter()
        .map(|e| ev(e, ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (PUT, "k".into(), "v2".into(), r2),
            (PUT, "k".into(), "v3".into(), r3)
        ],
        "a watch from the compacted revision replays from it"
    );
}
