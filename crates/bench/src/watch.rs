//! `watch-latency`: `--streams` watch streams (spread over the connections) each carrying
//! `--watchers-per-stream` watches on one key; one client puts that key `--put-total` times at
//! `--put-rate` per second. The latency of an event is the time from the put's acknowledgement to
//! the event's arrival at a watcher (zero when the event arrives before the acknowledgement).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, WatchOptions, WatchStream};
use tokio::time::MissedTickBehavior;

use crate::load::{error_text, random_bytes, Progress};
use crate::report::{Recorder, Report};
use crate::WatchLatencyArgs;

/// How long the watchers may lag behind the last put before missing events count as errors.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long creating the watches may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens one stream with `n` watches on `key`; returns it once every watch is created, with
/// the watch ids in creation order.
async fn open_stream(
    client: &Client,
    key: &[u8],
    n: usize,
    prev_kv: bool,
) -> Result<(WatchStream, Vec<i64>)> {
    let opts = || prev_kv.then(|| WatchOptions::new().with_prev_key());
    let mut wc = client.watch_client();
    let mut ws = wc
        .watch(key.to_vec(), opts())
        .await
        .context("open a watch stream")?;
    for _ in 1..n {
        ws.watch(key.to_vec(), opts())
            .await
            .context("create a watch")?;
    }
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let resp = ws
            .message()
            .await
            .context("watch stream")?
            .ok_or_else(|| anyhow!("the watch stream ended before the watches were created"))?;
        if resp.canceled() {
            bail!("watch cancelled by the server: {}", resp.cancel_reason());
        }
        if resp.created() {
            ids.push(resp.watch_id());
        }
    }
    Ok((ws, ids))
}

/// Reads one stream until each of its watchers saw `want` events or `stop` fires; returns the
/// arrival times per watcher (in the order of `ids`) and any stream error.
async fn read_stream(
    mut ws: WatchStream,
    ids: Vec<i64>,
    want: usize,
    seen: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Vec<Instant>>, Option<String>) {
    let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut times: Vec<Vec<Instant>> = ids.iter().map(|_| Vec::with_capacity(want)).collect();
    let mut complete = 0;
    while complete < ids.len() {
        let msg = tokio::select! {
            m = ws.message() => m,
            _ = stop.changed() => return (times, None),
        };
        let now = Instant::now();
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return (times, Some("watch stream ended".into())),
            Err(e) => return (times, Some(error_text(&e))),
        };
        if resp.canceled() {
            return (
                times,
                Some(format!("watch cancelled: {}", resp.cancel_reason())),
            );
        }
        let Some(&w) = index.get(&resp.watch_id()) else {
            continue;
        };
        for _ in resp.events() {
            if times[w].len() < want {
                times[w].push(now);
                seen.fetch_add(1, Ordering::Relaxed);
                if times[w].len() == want {
                    complete += 1;
                }
            }
        }
    }
    (times, None)
}

pub async fn run(a: &WatchLatencyArgs, conns: &[Client], progress: bool) -> Result<Vec<Report>> {
    let key = random_bytes(a.key_size as usize);
    let val = random_bytes(a.val_size);
    let want = a.put_total as usize;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(a.streams as usize);
    for s in 0..a.streams as usize {
        let client = crate::conn::for_client(conns, s);
        let (ws, ids) = tokio::time::timeout(
            CREATE_TIMEOUT,
            open_stream(client, &key, a.watchers_per_stream as usize, a.prevkv),
        )
        .await
        .map_err(|_| anyhow!("creating the watches took longer than {CREATE_TIMEOUT:?}"))??;
        readers.push(tokio::spawn(read_stream(
            ws,
            ids,
            want,
            seen.clone(),
            stop_rx.clone(),
        )));
    }
    let watchers = a.streams * a.watchers_per_stream;

    let prog =
        progress.then(|| Progress::start("watch-latency", a.put_total * watchers, seen.clone()));
    let mut kv = conns[0].kv_client();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / a.put_rate as f64));
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut puts = Recorder::new();
    let mut acks = Vec::with_capacity(want);
    let started = Instant::now();
    for _ in 0..want {
        pace.tick().await;
        let st = Instant::now();
        if let Err(e) = kv.put(key.clone(), val.clone(), None).await {
            let _ = stop_tx.send(true);
            if let Some(p) = prog {
                p.finish().await;
            }
            bail!(
                "put failed during the watch latency benchmark: {}",
                error_text(&e)
            );
        }
        let end = Instant::now();
        puts.record(end - st);
        acks.push(end);
    }
    let put_elapsed = started.elapsed();

    // Let the watchers catch up, then stop whatever is still waiting.
    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let stopper = tokio::spawn(async move {
        tokio::time::sleep_until(drain_deadline).await;
        let _ = stop_tx.send(true);
    });
    let mut events = Recorder::new();
    for r in readers {
        let (times, err) = r.await.context("watch reader task")?;
        for per_watcher in &times {
            for (ev, ack) in per_watcher.iter().zip(&acks) {
                events.record(ev.saturating_duration_since(*ack));
            }
            let missing = want - per_watcher.len();
            for _ in 0..missing {
                events.error(match &err {
                    Some(e) => e.clone(),
                    None => format!("event not received within {DRAIN_TIMEOUT:?} of the last put"),
                });
            }
        }
    }
    stopper.abort();
    let watch_elapsed = started.elapsed();
    if let Some(p) = prog {
        p.finish().await;
    }
    Ok(vec![
        puts.report("watch-latency-put", put_elapsed),
        events.report("watch-latency-watch", watch_elapsed),
    ])
}
