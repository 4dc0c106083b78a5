//! The Kv conformance suite: etcd v3 semantics as a user of the `Kv` trait observes them. It runs
//! against every `Kv` implementation (the embedded member and a real etcd through `RemoteKv`); it was
//! validated against etcd 3.4, so where it and an implementation disagree, the implementation is wrong.
//!
//! Every test works under its own unique key prefix and checks only relative revisions, so the suite
//! runs on a shared server. Compaction affects the whole store: `compaction` runs last and compacts
//! only up to a revision of its own keys.
//!
//! ```text
//! testkit::conformance::run_all(&kv).await; // panics with every failing test's message
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use store::Kv;

mod kv;
mod lease;
mod range;
mod txn;
mod util;
mod watch;

use kv::*;
use lease::*;
use range::*;
use txn::*;
use watch::*;

/// How long any single wait (a watch response, a lease expiry) may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A test's key namespace: `/kybern-conformance/<unique>/<test>/`.
#[derive(Clone, Debug)]
pub struct Ns(pub Vec<u8>);

impl Ns {
    /// A fresh namespace for `test` (unique per process, call and time).
    pub fn new(test: &str) -> Ns {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Ns(format!("/kybern-conformance/{pid}-{nanos}-{seq}/{test}/").into_bytes())
    }
    /// The key `<ns><suffix>`.
    pub fn k(&self, suffix: &str) -> Vec<u8> {
        [self.0.as_slice(), suffix.as_bytes()].concat()
    }
}

type TestFn = for<'a> fn(&'a dyn Kv, &'a Ns) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        /// Every test, in the order `run_all` runs them (`compaction` last).
        pub const TESTS: &[(&str, TestFn)] = &[$((stringify!($name), |kv, ns| Box::pin($name(kv, ns)))),*];
    };
}

tests!(
    put_get,
    revisions_and_versions,
    put_prev_kv,
    ignore_value_and_lease,
    empty_key,
    range_basic,
    range_sort,
    range_filters_and_history,
    delete_range,
    txn_compare_value_version,
    txn_compare_revisions_lease_ranges,
    txn_ops_and_nesting,
    txn_errors,
    watch_basic,
    watch_ranges,
    watch_history_and_prev_kv,
    watch_filters,
    lease_basic,
    lease_errors,
    lease_expiry,
    compaction,
);

/// Runs every test (each in its own namespace), then panics listing the failed ones.
pub async fn run_all(kv: &dyn Kv) {
    run_matching(kv, |_| true).await
}

/// Runs the tests whose name `pick` accepts; panics listing the failed ones.
pub async fn run_matching(kv: &dyn Kv, pick: impl Fn(&str) -> bool) {
    let mut failed = Vec::new();
    for (name, test) in TESTS.iter().filter(|(n, _)| pick(n)) {
        let ns = Ns::new(name);
        let started = Instant::now();
        let res = AssertUnwindSafe(test(kv, &ns)).catch_unwind().await;
        let msg = match res {
            Ok(()) => None,
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        let verdict = if msg.is_some() { "FAILED" } else { "ok" };
        eprintln!("conformance {name}: {verdict} ({:?})", started.elapsed());
        if let Some(m) = msg {
            failed.push(format!("{name}: {m}"));
        }
    }
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}
