//! Leases, then compaction (last: it affects the whole store).

use std::time::Duration;

use etcd_api::{errors, *};
use store::{Kv, WatchSpec};

use super::util::*;
use super::watch::wspec;
use super::{Ns, WAIT};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
