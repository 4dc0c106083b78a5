//! The closed-loop load runner shared by `put`, `range` and `txn-mixed`: `--clients` tasks, each
//! on one of the `--conns` connections, take request numbers 0..total from a shared counter
//! (optionally paced by `--rate`), build the request, send it, wait for the answer and record
//! its latency. A progress line goes to stderr.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use etcd_client::{Client, GetOptions, KvClient, Txn};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::Mutex;
use tokio::time::{Interval, MissedTickBehavior};

use crate::report::{Recorder, Report};
use crate::usage;

/// One request.
pub enum Op {
    Put { key: Vec<u8>, val: Vec<u8> },
    Get { key: Vec<u8>, opts: GetOptions },
    Txn(Txn),
}

/// Builds request number `i`; returns it and the index of the report it counts in.
pub type Generator = dyn Fn(u64, &mut StdRng) -> (Op, usize) + Send + Sync;

/// Hands out request numbers 0..total, at most `rate` per second when `rate` > 0.
struct Dispatcher {
    next: AtomicU64,
    total: u64,
    pace: Option<Mutex<Interval>>,
}

impl Dispatcher {
    fn new(total: u64, rate: u64) -> Dispatcher {
        let pace = (rate > 0).then(|| {
            let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Mutex::new(iv)
        });
        Dispatcher {
            next: AtomicU64::new(0),
            total,
            pace,
        }
    }

    async fn next(&self) -> Option<u64> {
        if self.next.load(Ordering::Relaxed) >= self.total {
            return None;
        }
        if let Some(p) = &self.pace {
            p.lock().await.tick().await;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }
}

/// A gRPC error as one line without per-request metadata, so that equal errors count together.
pub fn error_text(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

async fn exec(kv: &mut KvClient, op: Op) -> Result<(), etcd_client::Error> {
    match op {
        Op::Put { key, val } => kv.put(key, val, None).await.map(drop),
        Op::Get { key, opts } => kv.get(key, Some(opts)).await.map(drop),
        Op::Txn(t) => kv.txn(t).await.map(drop),
    }
}

/// What `run` does: `total` requests over `clients` concurrent clients sharing `conns`, at most
/// `rate` per second (0: no limit), counted in one report per name in `names`.
pub struct Load<'a> {
    pub label: &'a str,
    pub conns: &'a [Client],
    pub clients: usize,
    pub total: u64,
    pub rate: u64,
    pub names: &'a [&'a str],
    pub progress: bool,
}

/// Runs the requests built by `gen`; returns one report per name.
pub async fn run(load: Load<'_>, gen: Arc<Generator>) -> Vec<Report> {
    let Load {
        label,
        conns,
        clients,
        total,
        rate,
        names,
        progress,
    } = load;
    let disp = Arc::new(Dispatcher::new(total, rate));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let prog = progress.then(|| Progress::start(label, total, done.clone()));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut kv = crate::conn::for_client(conns, c).kv_client();
        let disp = disp.clone();
        let done = done.clone();
        let gen = gen.clone();
        let n = names.len();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(rand::rng().next_u64());
            let mut recs = vec![Recorder::new(); n];
            while let Some(i) = disp.next().await {
                let (op, r) = gen(i, &mut rng);
                let st = Instant::now();
                match exec(&mut kv, op).await {
                    Ok(()) => recs[r].record(st.elapsed()),
                    Err(e) => recs[r].error(error_text(&e)),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            recs
        }));
    }
    let mut merged = vec![Recorder::new(); names.len()];
    for t in tasks {
        match t.await {
            Ok(recs) => {
                for (m, r) in merged.iter_mut().zip(&recs) {
                    m.merge(r);
                }
            }
            Err(e) => merged[0].error(format!("client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = prog {
        p.finish().await;
    }
    names
        .iter()
        .zip(&merged)
        .map(|(n, r)| r.report(n, elapsed))
        .collect()
}

/// The progress line on stderr: rewritten in place every second on a terminal, otherwise a line
/// every 5 seconds (so short runs stay quiet in logs).
pub struct Progress {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(label: &str, total: u64, done: Arc<AtomicU64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let label = label.to_string();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let every = if tty { 1 } else { 5 };
            let mut iv = tokio::time::interval(Duration::from_secs(every));
            iv.tick().await;
            let mut printed = false;
            loop {
                iv.tick().await;
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let d = done.load(Ordering::Relaxed);
                let secs = t0.elapsed().as_secs_f64();
                let pct = (d * 100).checked_div(total).unwrap_or(100);
                let line = format!(
                    "{label}: {d}/{total} ({pct}%) in {secs:.0}s, {:.0} req/s",
                    d as f64 / secs.max(1e-9)
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                printed = true;
            }
            if tty && printed {
                let _ = writeln!(std::io::stderr());
            }
        });
        Progress { stop, task }
    }

    pub async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        if let Err(e) = self.task.await {
            if !e.is_cancelled() {
                eprintln!("progress: {e}");
            }
        }
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Length of the varint encoding of `v`.
fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The key of number `i` as etcd's benchmark makes it: a zero-filled `key_size` buffer holding
/// the signed (zigzag) varint of `i` at its start, after `prefix`.
pub fn numbered_key(prefix: &[u8], i: u64, key_size: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + key_size);
    key.extend_from_slice(prefix);
    let mut buf = vec![0u8; key_size];
    let mut v = i << 1; // zigzag of a non-negative number
    let mut at = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if at < buf.len() {
            buf[at] = if v == 0 { byte } else { byte | 0x80 };
        }
        at += 1;
        if v == 0 {
            break;
        }
    }
    key.extend_from_slice(&buf);
    key
}

/// Refuses key sizes too small to hold every key number of the key space.
pub fn check_key_space(key_size: usize, key_space_size: u64) -> Result<()> {
    if key_space_size == 0 {
        return Err(usage(format!(
            "expected positive --key-space-size, got ({key_space_size})"
        )));
    }
    let need = varint_len((key_space_size - 1) << 1);
    if key_size < need {
        return Err(usage(format!(
            "--key-size {key_size} cannot hold {key_space_size} distinct keys (needs at least \
             {need} bytes)"
        )));
    }
    Ok(())
}

/// `n` random bytes (values are random, as etcd's benchmark makes them).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zigzag_varints_in_fixed_size() {
        assert_eq!(numbered_key(b"", 0, 8), vec![0; 8]);
        assert_eq!(numbered_key(b"", 1, 8), vec![2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(numbered_key(b"", 64, 8), vec![0x80, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(numbered_key(b"p/", 3, 2), vec![b'p', b'/', 6, 0]);
        let all: std::collections::HashSet<_> =
            (0..100_000).map(|i| numbered_key(b"", i, 8)).collect();
        assert_eq!(all.len(), 100_000);
    }

    #[test]
    fn key_space_must_fit() {
        assert!(check_key_space(8, 100_000).is_ok());
        assert!(check_key_space(1, 64).is_ok());
        assert!(check_key_space(1, 65).is_err());
        assert!(check_key_space(8, 0).is_err());
    }
}
