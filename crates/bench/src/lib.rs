//! `kybern bench`: an etcd v3 load generator with the flags and report of etcd's `benchmark`
//! tool. It speaks plain etcd v3 gRPC, so it measures kybern and etcd alike.
//!
//! `run` prints etcd's text summary, or with `--json` one JSON document on stdout:
//! `{"benchmark", "endpoints", "conns", "clients", "options", "reports": [Report...]}` where each
//! report has `requests`, `errors`, `total_secs`, `requests_per_sec`, `latency` (`fastest_ms`,
//! `slowest_ms`, `average_ms`, `stddev_ms`, `p10_ms` ... `p99_ms`, `p99_9_ms`), `histogram` and
//! `error_distribution`.

pub mod apiserver;
pub mod conn;
pub mod kube_http;
pub mod load;
pub mod report;
pub mod scheduler;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use etcd_client::{GetOptions, Txn, TxnOp};
use serde::Serialize;

use crate::load::{check_key_space, numbered_key, random_bytes, Generator, Op};
use crate::report::Report;

/// A refusal of the flags' values (exit code 2, like a clap parse error).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

/// The process exit code for an error of `run`: 2 for bad flag values, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
        2
    } else {
        1
    }
}

#[derive(Args, Debug)]
#[command(
    about = "Benchmark any etcd v3 endpoint (kybern or etcd) with etcd's benchmark flags.",
    long_about = "Benchmark any etcd v3 endpoint (kybern or etcd) with the flags and report of \
    etcd's `benchmark` tool.\n\n\
    --clients concurrent clients share --conns gRPC connections round-robin; each client sends \
    one request at a time. The report gives the total time, requests/sec and the latency \
    distribution (p10 .. p99.9, fastest, slowest, average, stddev); --json prints it as one JSON \
    document. A progress line goes to stderr. The exit code is 1 when any request failed.\n\n\
    Example: kybern bench --endpoints 127.0.0.1:2379 --conns 100 --clients 1000 put \
    --key-size 8 --val-size 256 --total 100000 --sequential-keys --key-space-size 100000"
)]
pub struct BenchArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub cmd: BenchCmd,
}

/// Flags of every benchmark (they may come before or after the subcommand).
#[derive(Args, Debug, Clone, Serialize)]
pub struct GlobalArgs {
    /// gRPC endpoints, comma-separated (host:port, http://host:port or https://host:port).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections (distinct clients of the etcd client library).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub conns: u32,
    /// Total number of concurrent benchmark clients (each one request at a time).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Print the results as one JSON document instead of etcd's text report.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub json: bool,
    /// Do not print the progress line on stderr.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub no_progress: bool,
    /// Dial timeout: how long each connection may take to answer its first request (e.g. 5s).
    #[arg(long, global = true, default_value = "5s", value_parser = conn::parse_duration)]
    #[serde(skip)]
    pub dial_timeout: Duration,
    /// Identify the client with this TLS certificate file (with --key).
    #[arg(long, global = true)]
    #[serde(skip)]
    pub cert: Option<PathBuf>,
    /// The TLS key file of --cert.
    #[arg(long = "key", id = "tls_key", value_name = "KEY_FILE", global = true)]
    #[serde(skip)]
    pub key: Option<PathBuf>,
    /// Verify the servers' TLS certificates with this CA bundle (implies TLS).
    #[arg(long, global = true)]
    #[serde(skip)]
    pub cacert: Option<PathBuf>,
    /// Authenticate as NAME:PASSWORD.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Benchmark put: --total puts of --val-size values to keys of --key-size bytes.
    #[command(
        long_about = "Benchmark put: --total puts of --val-size random bytes. Key number i \
        (random in 0..--key-space-size, or i mod --key-space-size with --sequential-keys) is \
        written as etcd's benchmark writes it: the signed varint of i in a zero-filled \
        --key-size buffer, after --prefix."
    )]
    Put(PutArgs),
    /// Benchmark range: --total reads of KEY, or of the range [KEY, END).
    Range(RangeArgs),
    /// Benchmark watch latency: time from a put's acknowledgement to the event at the watchers.
    #[command(name = "watch-latency")]
    WatchLatency(WatchLatencyArgs),
    /// Benchmark a mixed load of txn-put and txn-range (--rw-ratio reads per write).
    #[command(name = "txn-mixed")]
    TxnMixed(TxnMixedArgs),
    /// Benchmark a Kubernetes API server: create pods, LIST, WATCH fan-out, GET.
    #[command(
        long_about = "Benchmark a Kubernetes API server over HTTPS (HTTP/2): --pods creates from \
        --clients concurrent clients on --conns connections, --lists LISTs of the namespace whole \
        and in pages of --list-limit, --watchers watches from the LIST's resourceVersion that \
        each must see every one of --watch-writes further writes (delivery latency from each \
        write's response), then --gets single-pod GETs. Example: kybern bench apiserver \
        --server https://127.0.0.1:6443 --token T --insecure-skip-tls-verify --clients 100 \
        --pods 10000 --watchers 1000"
    )]
    Apiserver(apiserver::ApiserverArgs),
    /// Benchmark a scheduler: pods/s bound and pod startup latency on (hollow) nodes.
    #[command(
        long_about = "Benchmark a scheduler: create --pods pods (requests --cpu/--memory) from \
        --create-clients concurrent clients in a cluster that runs a scheduler and nodes (e.g. \
        `kybern hollow-nodes`), and watch them: scheduled pods per second (first create to last \
        binding seen), the latency from each create to its binding and to Running (pod startup), \
        and the RSS of the processes given with --pid NAME=PID. Example: kybern bench scheduler \
        --kubeconfig K --pods 10000 --create-clients 16 --pid scheduler=1234"
    )]
    Scheduler(scheduler::SchedulerArgs),
}

#[derive(Args, Debug, Serialize)]
pub struct PutArgs {
    /// Key size of put requests, in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put requests, in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of put requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum puts per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Maximum number of distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys (request i writes key i mod --key-space-size) instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Prefix of every key.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Consistency {
    /// Linearizable.
    #[value(name = "l")]
    #[serde(rename = "l")]
    Linearizable,
    /// Serializable.
    #[value(name = "s")]
    #[serde(rename = "s")]
    Serializable,
}

#[derive(Args, Debug, Serialize)]
pub struct RangeArgs {
    /// The key to read (with --prefix: the prefix; may then be omitted for all keys).
    pub key: Option<String>,
    /// Read the range [KEY, END) instead of one key.
    pub end: Option<String>,
    /// Total number of range requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum range requests per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Linearizable (l) or serializable (s) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of keys per response (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only return the count of keys.
    #[arg(long, conflicts_with = "keys_only")]
    pub count_only: bool,
    /// Only return the keys.
    #[arg(long)]
    pub keys_only: bool,
    /// Read every key with KEY as prefix.
    #[arg(long, conflicts_with = "end")]
    pub prefix: bool,
}

#[derive(Args, Debug, Serialize)]
pub struct WatchLatencyArgs {
    /// Total number of puts (each produces one event at every watcher).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub put_total: u64,
    /// Puts per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub put_rate: u64,
    /// Total watch streams (spread over the connections).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub streams: u64,
    /// Watchers on each stream.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub watchers_per_stream: u64,
    /// Key size of the watched key, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_size: u64,
    /// Value size of the puts, in bytes.
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Ask for the previous key-value in watch events.
    #[arg(long)]
    pub prevkv: bool,
}

#[derive(Args, Debug, Serialize)]
pub struct TxnMixedArgs {
    /// Key size of the txn-puts, in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of the txn-puts, in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum txns per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Maximum number of distinct keys (txn-put i writes key i mod this).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Range end of the txn-ranges (default: they read all keys, up to --limit).
    #[arg(long)]
    pub end_key: Option<String>,
    /// Maximum number of keys a txn-range returns.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Linearizable (l) or serializable (s) txn-ranges.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Reads per write: a txn is a range with probability RATIO/(1+RATIO).
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
}

#[derive(Serialize)]
struct Output<'a, O: Serialize> {
    benchmark: &'static str,
    endpoints: &'a [String],
    conns: usize,
    clients: usize,
    options: &'a O,
    reports: &'a [Report],
}

fn get_options(c: Consistency, limit: i64) -> GetOptions {
    let mut o = GetOptions::new();
    if c == Consistency::Serializable {
        o = o.with_serializable();
    }
    if limit > 0 {
        o = o.with_limit(limit);
    }
    o
}

/// Runs one benchmark and prints its report.
pub async fn run(mut args: BenchArgs) -> Result<()> {
    let g = &mut args.global;
    g.endpoints.retain(|e| !e.trim().is_empty());
    if g.endpoints.is_empty() {
        return Err(usage("--endpoints is empty".into()));
    }
    let clients = g.clients as usize;
    let progress = !g.no_progress;
    let g = &args.global;

    match &mut args.cmd {
        BenchCmd::Apiserver(a) => apiserver::run(a, g).await,
        BenchCmd::Scheduler(a) => scheduler::run(a, g.json, g.no_progress).await,
        BenchCmd::Put(a) => {
            check_key_space(a.key_size, a.key_space_size)?;
            let conns = conn::connect_all(g).await?;
            let val = random_bytes(a.val_size);
            let (prefix, ks, kss, seq) = (
                a.prefix.clone().into_bytes(),
                a.key_size,
                a.key_space_size,
                a.sequential_keys,
            );
            let gen: Arc<Generator> = Arc::new(move |i, rng| {
                let n = if seq {
                    i % kss
                } else {
                    rand::Rng::random_range(rng, 0..kss)
                };
                let key = numbered_key(&prefix, n, ks);
                (
                    Op::Put {
                        key,
                        val: val.clone(),
                    },
                    0,
                )
            });
            let names = ["put"];
            let load = load::Load {
                label: "put",
                conns: &conns,
                clients,
                total: a.total,
                rate: a.rate,
                names: &names,
                progress,
            };
            let r = load::run(load, gen).await;
            finish("put", g, clients, &*a, &r)
        }
        BenchCmd::Range(a) => {
            if a.key.is_none() && !a.prefix {
                return Err(usage(
                    "range needs KEY (or --prefix to read every key)".into(),
                ));
            }
            let conns = conn::connect_all(g).await?;
            let key = a.key.clone().unwrap_or_default().into_bytes();
            let mut opts = get_options(a.consistency, a.limit);
            if a.count_only {
                opts = opts.with_count_only();
            }
            if a.keys_only {
                opts = opts.with_keys_only();
            }
            let key = if a.prefix {
                if key.is_empty() {
                    opts = opts.with_all_keys();
                } else {
                    opts = opts.with_prefix();
                }
                key
            } else {
                if let Some(end) = &a.end {
                    opts = opts.with_range(end.clone());
                }
                key
            };
            if !g.json {
                println!(
                    "bench with {} range",
                    match a.consistency {
                        Consistency::Linearizable => "linearizable",
                        Consistency::Serializable => "serializable",
                    }
                );
            }
            let gen: Arc<Generator> = Arc::new(move |_, _| {
                (
                    Op::Get {
                        key: key.clone(),
                        opts: opts.clone(),
                    },
                    0,
                )
            });
            let names = ["range"];
            let load = load::Load {
                label: "range",
                conns: &conns,
                clients,
                total: a.total,
                rate: a.rate,
                names: &names,
                progress,
            };
            let r = load::run(load, gen).await;
            finish("range", g, clients, &*a, &r)
        }
        BenchCmd::WatchLatency(a) => {
            let conns = conn::connect_all(g).await?;
            let r = watch::run(a, &conns, progress).await?;
            finish("watch-latency", g, clients, &*a, &r)
        }
        BenchCmd::TxnMixed(a) => {
            check_key_space(a.key_size, a.key_space_size)?;
            if !a.rw_ratio.is_finite() || a.rw_ratio < 0.0 {
                return Err(usage(format!(
                    "--rw-ratio must be a non-negative number, got {}",
                    a.rw_ratio
                )));
            }
            let conns = conn::connect_all(g).await?;
            let val = random_bytes(a.val_size);
            let mut read = get_options(a.consistency, a.limit);
            read = match &a.end_key {
                Some(end) => read.with_range(end.clone()),
                None => read.with_all_keys(),
            };
            let p_read = a.rw_ratio / (1.0 + a.rw_ratio);
            let (ks, kss) = (a.key_size, a.key_space_size);
            if !g.json {
                println!(
                    "bench with {} range",
                    match a.consistency {
                        Consistency::Linearizable => "linearizable",
                        Consistency::Serializable => "serializable",
                    }
                );
            }
            let gen: Arc<Generator> = Arc::new(move |i, rng| {
                if rand::Rng::random_bool(rng, p_read) {
                    let t = Txn::new().and_then([TxnOp::get(vec![0u8], Some(read.clone()))]);
                    (Op::Txn(t), 0)
                } else {
                    let k = numbered_key(b"", i % kss, ks);
                    let t = Txn::new().and_then([TxnOp::put(k, val.clone(), None)]);
                    (Op::Txn(t), 1)
                }
            });
            let names = ["txn-mixed-read", "txn-mixed-write"];
            let load = load::Load {
                label: "txn-mixed",
                conns: &conns,
                clients,
                total: a.total,
                rate: a.rate,
                names: &names,
                progress,
            };
            let r = load::run(load, gen).await;
            finish("txn-mixed", g, clients, &*a, &r)
        }
    }
}

/// Prints the reports; fails (exit 1) when any request failed.
fn finish<O: Serialize>(
    name: &'static str,
    g: &GlobalArgs,
    clients: usize,
    options: &O,
    reports: &[Report],
) -> Result<()> {
    if g.json {
        let out = Output {
            benchmark: name,
            endpoints: &g.endpoints,
            conns: g.conns as usize,
            clients,
            options,
            reports,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in reports {
            print!("{}", r.to_text());
        }
    }
    let failed: u64 = reports.iter().map(|r| r.errors).sum();
    if failed > 0 {
        return Err(anyhow!(
            "{failed} requests failed (see the error distribution)"
        ));
    }
    Ok(())
}
