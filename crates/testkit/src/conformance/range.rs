//! Range options and delete_range.

use etcd_api::enums::sort_order as so;
use etcd_api::enums::sort_target as st;
use etcd_api::{errors, *};
use store::Kv;

use super::util::*;
use super::Ns;

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
