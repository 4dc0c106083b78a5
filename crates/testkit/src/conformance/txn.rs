//! Txn: compares, ops, nesting, errors.

use etcd_api::enums::{compare_result as cr, compare_target as ct};
use etcd_api::{errors, *};
use store::Kv;

use super::util::*;
use super::Ns;

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
