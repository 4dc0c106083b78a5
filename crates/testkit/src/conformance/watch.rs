//! Watch: keys, ranges, history replay, prev_kv, filters.

use etcd_api::*;
use store::{Kv, WatchSpec};

use super::util::*;
use super::Ns;

pub(super) fn wspec(key: Vec<u8>, range_end: Vec<u8>) -> WatchSpec {
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
