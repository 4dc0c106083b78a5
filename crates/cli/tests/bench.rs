//! `kybern bench` against a kybern store started by the test: put, range, txn-mixed and
//! watch-latency runs whose JSON reports are checked for sane fields, the written keys read back
//! with etcd-client, etcd's text report, and refusals of bad flags (exit 2) or of an endpoint that
//! does not answer (exit 1).

use std::path::PathBuf;
use std::process::{Command, Output};

use etcd_client::GetOptions;
use serde_json::Value;
use testkit::procs::{free_port, Member, MemberOpts};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kybern"))
}

/// Runs `kybern bench ARGS` until it exits (killed after `secs`, which fails the test).
fn bench(args: &[&str], secs: u64) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("bench").args(args);
    testkit::procs::run_bounded(cmd, secs)
}

/// Runs a benchmark with `--json`, requires success, returns the document.
fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["--json", "--no-progress"];
    all.extend_from_slice(args);
    let out = bench(&all, 120);
    assert!(
        out.status.success(),
        "kybern bench {all:?} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of {all:?} is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Checks one report: `requests` successful requests, no error, ordered percentiles.
fn check_report(r: &Value, name: &str, requests: u64) {
    assert_eq!(r["name"], name, "{r:#}");
    assert_eq!(r["requests"], requests, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    let f = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r:#}"))
    };
    assert!(f("total_secs") > 0.0, "{r:#}");
    let rps = f("requests_per_sec");
    let expect = requests as f64 / f("total_secs");
    assert!((rps - expect).abs() <= expect * 1e-6, "{r:#}");
    let l = &r["latency"];
    let lf = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("latency.{k} missing in {r:#}"))
    };
    let order = [
        "fastest_ms",
        "p10_ms",
        "p25_ms",
        "p50_ms",
        "p75_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "p99_9_ms",
    ];
    for w in order.windows(2) {
        // Percentiles come from a histogram of 0.1% resolution; the extremes are exact.
        assert!(
            lf(w[0]) <= lf(w[1]) * 1.001 + 1e-9,
            "{} > {} in {l:#}",
            w[0],
            w[1]
        );
    }
    assert!(lf("p99_9_ms") <= lf("slowest_ms") * 1.001 + 1e-9, "{l:#}");
    assert!(lf("fastest_ms") <= lf("average_ms") && lf("average_ms") <= lf("slowest_ms"));
    assert!(lf("stddev_ms") >= 0.0);
    let hist: u64 = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(hist, requests, "histogram counts in {r:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn put_range_txn_and_watch_against_kybern() {
    let m = Member::start_kybern(&bin(), MemberOpts::default())
        .await
        .unwrap();
    let ep = m.endpoint();
    let mut c = m.client().await.unwrap();

    // put: 200 sequential keys under a prefix, over 2 connections and 8 clients.
    let doc = bench_json(&[
        "--endpoints",
        &ep,
        "--conns",
        "2",
        "--clients",
        "8",
        "put",
        "--total",
        "200",
        "--key-size",
        "8",
        "--val-size",
        "16",
        "--sequential-keys",
        "--key-space-size",
        "200",
        "--prefix",
        "bench/",
    ]);
    assert_eq!(doc["benchmark"], "put");
    assert_eq!(doc["conns"], 2);
    assert_eq!(doc["clients"], 8);
    assert_eq!(doc["endpoints"][0], ep.as_str());
    assert_eq!(doc["options"]["total"], 200);
    check_report(&doc["reports"][0], "put", 200);

    let got = c
        .get("bench/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 200, "the 200 keys of the put run");
    let mut want: Vec<Vec<u8>> = (0..200)
        .map(|i| bench::load::numbered_key(b"bench/", i, 8))
        .collect();
    want.sort();
    let keys: Vec<Vec<u8>> = got.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(keys, want);
    for kv in got.kvs() {
        assert_eq!(kv.value().len(), 16);
        assert_eq!(kv.version(), 1, "each key written once");
    }

    // range: one key, linearizable; the prefix, serializable.
    c.put("bench-key", "v", None).await.unwrap();
    let doc = bench_json(&[
        "--endpoints",
        &ep,
        "--clients",
        "4",
        "range",
        "bench-key",
        "--total",
        "100",
    ]);
    assert_eq!(doc["benchmark"], "range");
    assert_eq!(doc["options"]["consistency"], "l");
    check_report(&doc["reports"][0], "range", 100);
    let doc = bench_json(&[
        "--endpoints",
        &ep,
        "--conns",
        "3",
        "--clients",
        "3",
        "range",
        "bench/",
        "--prefix",
        "--consistency",
        "s",
        "--total",
        "60",
    ]);
    assert_eq!(doc["options"]["consistency"], "s");
    check_report(&doc["reports"][0], "range", 60);

    // txn-mixed: reads and writes add up to the total; the writes land on key-space keys.
    let before = c.get(
        "",
        Some(GetOptions::new().with_all_keys().with_count_only()),
    );
    let before = before.await.unwrap().count();
    let doc = bench_json(&[
        "--endpoints",
        &ep,
        "--clients",
        "4",
        "txn-mixed",
        "--total",
        "100",
        "--key-space-size",
        "10",
        "--rw-ratio",
        "1",
        "--limit",
        "5",
    ]);
    let reads = doc["reports"][0]["requests"].as_u64().unwrap();
    let writes = doc["reports"][1]["requests"].as_u64().unwrap();
    assert_eq!(reads + writes, 100, "{doc:#}");
    check_report(&doc["reports"][0], "txn-mixed-read", reads);
    check_report(&doc["reports"][1], "txn-mixed-write", writes);
    let after = c.get(
        "",
        Some(GetOptions::new().with_all_keys().with_count_only()),
    );
    let after = after.await.unwrap().count();
    assert!(
        after >= before && after <= before + 10,
        "{before} -> {after}"
    );
    if writes > 0 {
        // Write number i goes to key i mod 10: every key below "bench" is one of the ten.
        let all = c
            .get(vec![0u8], Some(GetOptions::new().with_range("bench")))
            .await
            .unwrap();
        let ten: Vec<Vec<u8>> = (0..10)
            .map(|i| bench::load::numbered_key(b"", i, 8))
            .collect();
        assert!(!all.kvs().is_empty());
        for kv in all.kvs() {
            assert!(
                ten.contains(&kv.key().to_vec()),
                "unexpected key {:?}",
                kv.key()
            );
        }
    }

    // watch-latency: every watcher sees every put.
    let doc = bench_json(&[
        "--endpoints",
        &ep,
        "--conns",
        "2",
        "watch-latency",
        "--put-total",
        "20",
        "--put-rate",
        "200",
        "--streams",
        "2",
        "--watchers-per-stream",
        "3",
    ]);
    assert_eq!(doc["benchmark"], "watch-latency");
    check_report(&doc["reports"][0], "watch-latency-put", 20);
    check_report(&doc["reports"][1], "watch-latency-watch", 20 * 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_report_like_etcd() {
    let m = Member::start_kybern(&bin(), MemberOpts::default())
        .await
        .unwrap();
    let out = bench(&["--endpoints", &m.endpoint(), "put", "--total", "30"], 60);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Summary",
        "Total:",
        "Slowest:",
        "Fastest:",
        "Average:",
        "Requests/sec:",
        "Response time histogram:",
        "Latency distribution:",
        "50% in ",
        "90% in ",
        "99% in ",
        "99.9% in ",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    // Default key space is one key: 30 puts make version 30.
    let mut c = m.client().await.unwrap();
    let got = c.get(vec![0u8; 8], None).await.unwrap();
    assert_eq!(got.kvs()[0].version(), 30);
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["put", "--total", "many"][..],
        &["put", "--no-such-flag"],
        &["range", "k", "--consistency", "x"],
        &["--conns", "0", "put"],
        &["--clients", "-1", "put"],
        &["range"],
        &["put", "--key-size", "1", "--key-space-size", "1000"],
        &["put", "--key-space-size", "0"],
        &["txn-mixed", "--rw-ratio", "-1"],
        &["watch-latency", "--put-rate", "0"],
        &["range", "a", "--count-only", "--keys-only"],
        &["--dial-timeout", "soon", "put"],
        &["nosuch"],
    ] {
        let out = bench(args, 30);
        assert_eq!(
            out.status.code(),
            Some(2),
            "kybern bench {args:?}: {out:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "no message for {args:?}");
    }
}

#[test]
fn unreachable_endpoint_fails_fast() {
    let ep = format!("127.0.0.1:{}", free_port());
    let out = bench(
        &[
            "--endpoints",
            &ep,
            "--dial-timeout",
            "1s",
            "put",
            "--total",
            "5",
        ],
        30,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ep), "{err}");
}

#[test]
fn help_names_every_benchmark_and_flag() {
    let out = bench(&["--help"], 20);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "put",
        "range",
        "watch-latency",
        "txn-mixed",
        "--endpoints",
        "--conns",
        "--clients",
        "--json",
    ] {
        assert!(help.contains(want), "{want} missing in:\n{help}");
    }
    let out = bench(&["put", "--help"], 20);
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--key-size",
        "--val-size",
        "--total",
        "--sequential-keys",
        "--key-space-size",
    ] {
        assert!(help.contains(want), "{want} missing in:\n{help}");
    }
}
