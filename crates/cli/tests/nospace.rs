//! The NOSPACE alarm, seen through the real etcdctl, on kybern and on the real etcd 3.4 with the
//! same small quota: writes fail with `etcdserver: mvcc: database space exceeded` once the backend
//! passes the quota, `alarm list` shows NOSPACE, further puts are refused while reads still work;
//! after compacting to the current revision, defragmenting and `alarm disarm` a put works again.
//! Both members must give the same transcript of outcomes.

use std::path::PathBuf;
use std::time::Duration;

use testkit::procs::{Kind, Member, MemberOpts, Output};

const QUOTA: u64 = 16 * 1024 * 1024;
/// Values of 1 MiB (under the default --max-request-bytes of 1.5 MiB).
const VALUE_BYTES: usize = 1024 * 1024;
/// Bound on the puts it may take to fill the quota (history is kept: no compaction).
const MAX_FILL_PUTS: usize = 200;

fn ctl(m: &Member, args: &[&str]) -> Output {
    m.etcdctl(args, None, Duration::from_secs(20))
        .expect("run etcdctl")
}

/// One line of the transcript: the step, its exit code and its `Error:`/output lines without ids.
fn outcome(step: &str, o: &Output, member_id_hex: &str) -> String {
    let mut lines: Vec<String> = o
        .stdout
        .lines()
        .chain(o.stderr.lines().filter(|l| !l.starts_with('{')))
        .map(|l| l.replace(member_id_hex, "<MEMBER_ID>"))
        .collect();
    lines.retain(|l| !l.trim().is_empty());
    format!("{step}: exit {} {}", o.code, lines.join(" | "))
}

async fn nospace(kind: Kind) -> Vec<String> {
    let opts = MemberOpts::default().with_args(["--quota-backend-bytes", &QUOTA.to_string()]);
    let m = Member::start(kind.clone(), opts).await.unwrap();
    let label = kind.label();
    let mut c = m.client().await.unwrap();
    let member_id = c.status().await.unwrap().header().unwrap().member_id();
    let mid = format!("{member_id:x}");
    let mut transcript = Vec::new();

    // Fill: one key rewritten with 1 MiB values (every version stays until compaction).
    let value = "x".repeat(VALUE_BYTES);
    let mut fill_error = None;
    for i in 0..MAX_FILL_PUTS {
        match c.put(format!("big{}", i % 4), value.clone(), None).await {
            Ok(_) => {}
            Err(e) => {
                fill_error = Some(e.to_string());
                break;
            }
        }
    }
    let fill_error = fill_error.unwrap_or_else(|| {
        panic!(
            "{label}: {MAX_FILL_PUTS} puts of 1 MiB never hit the {QUOTA}-byte quota\n{}",
            m.log_tail(30)
        )
    });
    assert!(
        fill_error.contains("etcdserver: mvcc: database space exceeded"),
        "{label}: the put past the quota failed with {fill_error:?}"
    );
    transcript.push("fill: etcdserver: mvcc: database space exceeded".to_string());

    let alarms = ctl(&m, &["alarm", "list"]);
    assert_eq!(
        alarms.stdout.trim(),
        format!("memberID:{member_id} alarm:NOSPACE"),
        "{label}: alarm list after the quota: {alarms:?}"
    );
    transcript.push(outcome("alarm list", &alarms, &member_id.to_string()));

    let put = ctl(&m, &["put", "small", "v"]);
    assert_ne!(put.code, 0, "{label}: a put under NOSPACE must be refused");
    assert!(
        put.stderr
            .contains("Error: etcdserver: mvcc: database space exceeded"),
        "{label}: {put:?}"
    );
    transcript.push(outcome("put under alarm", &put, &mid));
    // A delete is a write too: refused as well (etcd refuses every write but compaction/defrag).
    let del = ctl(&m, &["del", "big0"]);
    transcript.push(outcome("del under alarm", &del, &mid));
    let txn = m
        .etcdctl(&["txn"], Some("\n\nput t 1\n\n"), Duration::from_secs(20))
        .unwrap();
    transcript.push(outcome("txn put under alarm", &txn, &mid));
    let lease = ctl(&m, &["lease", "grant", "60"]);
    transcript.push(format!(
        "lease grant under alarm: exit {} {}",
        lease.code,
        if lease.code == 0 {
            "granted".to_string()
        } else {
            lease.stderr.lines().last().unwrap_or("").to_string()
        }
    ));

    let get = ctl(&m, &["get", "big0", "--keys-only"]);
    assert_eq!(get.code, 0, "{label}: reads work under NOSPACE: {get:?}");
    transcript.push(outcome("get under alarm", &get, &mid));

    let st = ctl(&m, &["endpoint", "status", "-w", "json"]);
    let errors = st
        .stdout
        .split("\"errors\":")
        .nth(1)
        .map(|s| s.split(']').next().unwrap_or("").to_string() + "]")
        .unwrap_or_else(|| "<none>".into());
    transcript.push(format!(
        "endpoint status errors: {}",
        errors.replace(&member_id.to_string(), "<MEMBER_ID>")
    ));

    let rev = c
        .get("big0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let compact = ctl(&m, &["compaction", &rev.to_string()]);
    assert_eq!(
        compact.code, 0,
        "{label}: compaction under NOSPACE: {compact:?}"
    );
    transcript.push(outcome("compaction", &compact, &mid).replace(&rev.to_string(), "<REV>"));
    let defrag = ctl(&m, &["defrag"]);
    assert_eq!(defrag.code, 0, "{label}: defrag under NOSPACE: {defrag:?}");
    transcript.push(outcome("defrag", &defrag, &mid).replace(&m.endpoint(), "<EP>"));
    let alarms = ctl(&m, &["alarm", "list"]);
    transcript.push(outcome(
        "alarm list after defrag",
        &alarms,
        &member_id.to_string(),
    ));
    let disarm = ctl(&m, &["alarm", "disarm"]);
    assert_eq!(disarm.code, 0, "{label}: {disarm:?}");
    transcript.push(outcome("alarm disarm", &disarm, &member_id.to_string()));
    let alarms = ctl(&m, &["alarm", "list"]);
    assert_eq!(
        alarms.stdout.trim(),
        "",
        "{label}: alarms after disarm: {alarms:?}"
    );
    transcript.push(outcome("alarm list after disarm", &alarms, &mid));
    let put = ctl(&m, &["put", "small", "v"]);
    assert_eq!(
        put.code,
        0,
        "{label}: a put after disarm: {put:?}\n{}",
        m.log_tail(20)
    );
    transcript.push(outcome("put after disarm", &put, &mid));
    let get = ctl(&m, &["get", "small", "--print-value-only"]);
    transcript.push(outcome("get after disarm", &get, &mid));
    transcript
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_sequence_matches_etcd() {
    testkit::procs::require_etcd().unwrap();
    let kybern = Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")));
    let (etcd, kyb) = tokio::join!(nospace(Kind::Etcd), nospace(kybern));
    assert_eq!(
        etcd.join("\n"),
        kyb.join("\n"),
        "NOSPACE transcripts differ (left: etcd 3.4, right: kybern)"
    );
}
