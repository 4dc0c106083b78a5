//! Put, get, revisions, prev_kv, ignore_value/ignore_lease, empty keys.

use etcd_api::enums::compare_result as cr;
use etcd_api::{errors, *};
use store::Kv;

use super::util::*;
use super::Ns;

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
