//! Durability under kill -9: several concurrent clients write a stream of puts, each remembering
//! the puts that were acknowledged; the member is killed with SIGKILL in the middle of the stream,
//! restarted on the same data dir, and every acknowledged put must be there with its value. Two
//! rounds on the same data dir. The same test runs against the real etcd 3.4 to check the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use testkit::procs::{Kind, Member, MemberOpts};

const CLIENTS: usize = 8;
/// Upper bound of puts per round, all clients together.
const MAX_PUTS: usize = 5000;
/// Kill after this many acknowledged puts, or after `KILL_AFTER`, whichever comes first.
const KILL_AT_ACKS: usize = 1500;
const KILL_AFTER: Duration = Duration::from_secs(3);

/// One round: write from `CLIENTS` clients, kill -9 mid-stream. Returns key -> acknowledged value.
async fn write_and_kill(m: &mut Member, round: usize) -> BTreeMap<String, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = m.client().await.expect("connect");
        let (stop, started, acked) = (stop.clone(), started.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) && started.fetch_add(1, Ordering::SeqCst) < MAX_PUTS
            {
                let key = format!("r{round}/c{c}/{n:05}");
                let value = format!("value-{round}-{c}-{n}");
                // A put that errors or hangs (the member died) is not acknowledged: stop here.
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.put(key.clone(), value.clone(), None),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                        mine.push((key, value));
                    }
                    _ => break,
                }
                n += 1;
            }
            mine
        }));
    }
    let deadline = Instant::now() + KILL_AFTER;
    while acked.load(Ordering::SeqCst) < KILL_AT_ACKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m.kill9();
    stop.store(true, Ordering::SeqCst);
    let mut all = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("client task") {
            all.insert(k, v);
        }
    }
    all
}

async fn durability(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = MemberOpts::default().with_data_dir(tmp.path().join("data"));
    let mut m = Member::start(kind.clone(), opts).await.unwrap();
    let mut expected = BTreeMap::new();
    for round in 0..2 {
        let acked = write_and_kill(&mut m, round).await;
        assert!(
            !acked.is_empty(),
            "{}: no put was acknowledged before the kill\n{}",
            kind.label(),
            m.log_tail(40)
        );
        eprintln!(
            "{}: round {round}: {} puts acknowledged before kill -9",
            kind.label(),
            acked.len()
        );
        expected.extend(acked);
        m.restart().await.unwrap();
        let mut c = m.client().await.unwrap();
        let r = c
            .get("r", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let found: BTreeMap<String, String> = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect();
        let lost: Vec<_> = expected
            .iter()
            .filter(|(k, v)| found.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}={v} (found {:?})", found.get(k)))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: round {round}: {} of {} acknowledged puts lost or wrong after kill -9, e.g. {:?}\n{}",
            kind.label(),
            lost.len(),
            expected.len(),
            &lost[..lost.len().min(10)],
            m.log_tail(40)
        );
        // Every put bumps the revision by one: at least as many revisions as acknowledged puts.
        let rev = r.header().unwrap().revision() as usize;
        assert!(
            rev > expected.len(),
            "{}: revision {rev} after {} acknowledged puts",
            kind.label(),
            expected.len()
        );
    }
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kybern_keeps_every_acknowledged_put_across_kill_9() {
    durability(Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_keeps_every_acknowledged_put_across_kill_9() {
    testkit::procs::require_etcd().unwrap();
    durability(Kind::Etcd).await;
}
