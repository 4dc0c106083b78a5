//! `kybern`: every kybern component as a subcommand of one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod member;

#[derive(Parser)]
#[command(
    name = "kybern",
    version,
    about = "A Kubernetes-compatible, highly available cluster in one binary.",
    long_about = "A Kubernetes-compatible, highly available cluster in one binary.\n\n\
    Every component is a subcommand: `store`, an etcd v3-compatible key-value store that real \
    etcdctl and etcd clients use unchanged; `apiserver`, the Kubernetes API server; \
    `controller-manager` and `scheduler`, the leader-elected controllers and scheduler; \
    `hollow-nodes`, fake nodes for tests and benchmarks; and `bench`, load generators."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an etcd v3-compatible store member (flags as etcd's), or manage its data.
    #[command(args_conflicts_with_subcommands = true)]
    Store {
        #[command(subcommand)]
        cmd: Option<StoreCmd>,
        #[command(flatten)]
        args: store::StoreArgs,
    },
    /// Run the Kubernetes API server (plain HTTP on loopback until TLS arrives).
    Apiserver(apiserver::ApiserverArgs),
    /// Run the controller-manager (flags as kube-controller-manager): the workload, service,
    /// namespace and node controllers, run by whichever replica holds the
    /// kube-system/kube-controller-manager Lease.
    ControllerManager(controllers::ControllerManagerArgs),
    Scheduler(scheduler::SchedulerArgs),
    /// Register fake nodes that run bound pods without containers (as KWOK), for tests and benchmarks.
    #[command(
        long_about = "Register fake nodes that run bound pods without containers, as KWOK \
    does: N Node objects with the given capacity, labels and taints, Ready, with their Leases in \
    kube-node-lease renewed and pods bound to them turned Running and Ready through the status \
    subresource; pods being deleted on them are removed at once. Runs until SIGINT/SIGTERM; the \
    nodes then stay registered and go NotReady once their leases expire."
    )]
    HollowNodes(testkit::hollow::HollowArgs),
    // About and long help come from `bench::BenchArgs`.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Snapshot operations.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// After a quorum is lost for good: make this stopped member, the most up-to-date survivor,
    /// a one-member cluster that keeps every write of its log. Start it again with its usual
    /// flags, then add new members with `etcdctl member add`.
    Recover {
        /// The data directory of the stopped member.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Cluster membership.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Remove a member from the cluster and, with --data-dir, delete its data once it has stopped.
    Remove(member::RemoveArgs),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Restore a snapshot saved with `etcdctl snapshot save` into a new data directory.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data directory to create (must be empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
        /// Name of the restored member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Restore even without a valid SHA-256 trailer (as etcdctl's flag), e.g. a backend db
        /// file copied out of an etcd data dir.
        #[arg(long)]
        skip_hash_check: bool,
        /// Restore one member of a new cluster (etcd's flags): NAME=PEER-URL pairs of every member.
        /// Restore the same snapshot for each member with its --name, then start them all with
        /// the same --initial-cluster and --initial-cluster-token.
        #[arg(long)]
        initial_cluster: Option<String>,
        /// The new cluster's token (with --initial-cluster).
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KYBERN_LOG")
                .unwrap_or_else(|_| "info,openraft=warn,kube_client::client::tls=error".into()),
        )
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kybern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Store { cmd: None, args } => {
                let args = args.resolve().map_err(|e| (2, e.to_string()))?;
                store::server::run(args).await.map_err(failure)
            }
            Cmd::Store {
                cmd:
                    Some(StoreCmd::Snapshot {
                        cmd:
                            SnapshotCmd::Restore {
                                file,
                                data_dir,
                                name,
                                skip_hash_check,
                                initial_cluster,
                                initial_cluster_token,
                            },
                    }),
                ..
            } => {
                // Check the cluster flags before anything is written.
                let identity = match &initial_cluster {
                    Some(ic) => Some(cluster_identity(ic, &initial_cluster_token, &name)?),
                    None => None,
                };
                let opts = store::RestoreOptions {
                    name,
                    skip_hash_check,
                };
                mvcc_restore(&file, &data_dir, &opts)?;
                if let Some((cluster_id, member_id)) = identity {
                    let mut st = mvcc::Store::open(&data_dir).map_err(|e| (1, e.to_string()))?;
                    st.set_identity(cluster_id, member_id).map_err(|e| (1, e.to_string()))?;
                    println!(
                        "member {member_id:x} of new cluster {cluster_id:x}: start it with the same \
                         --name, --initial-cluster and --initial-cluster-token"
                    );
                }
                Ok(())
            }
            Cmd::Store {
                cmd: Some(StoreCmd::Recover { data_dir }),
                ..
            } => {
                let r = store::raft::recover::recover(&data_dir)
                    .await
                    .map_err(|e| (2, format!("recover: {e:#}")))?;
                println!(
                    "member {:x} is now the only member of cluster {:x}, with every entry of its log \
                     (last index {}). Start it with its usual flags; then add members with \
                     `etcdctl member add` and start them with an empty --data-dir and \
                     --initial-cluster-state existing.",
                    r.member_id, r.cluster_id, r.last_index
                );
                Ok(())
            }
            Cmd::Store {
                cmd:
                    Some(StoreCmd::Member {
                        cmd: MemberCmd::Remove(a),
                    }),
                ..
            } => member::remove(a).await,
            Cmd::Apiserver(args) => apiserver::run(args).await.map_err(failure),
            Cmd::ControllerManager(args) => {
                controllers::check(&args).map_err(|e| (2, format!("controller-manager: {e:#}")))?;
                controllers::run(args)
                    .await
                    .map_err(|e| (1, format!("controller-manager: {e:#}")))
            }
            Cmd::Scheduler(args) => {
                scheduler::check(&args).map_err(|e| (2, format!("scheduler: {e:#}")))?;
                scheduler::run(args)
                    .await
                    .map_err(|e| (1, format!("scheduler: {e:#}")))
            }
            Cmd::HollowNodes(args) => testkit::hollow::run(args)
                .await
                .map_err(|e| (1, format!("hollow-nodes: {e:#}"))),
            Cmd::Bench(args) => bench::run(args)
                .await
                .map_err(|e| (bench::exit_code(&e), format!("bench: {e:#}"))),
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("kybern: {msg}");
            ExitCode::from(code)
        }
    }
}

/// (cluster id, member id) of member `name` of a new cluster, as the replicated store derives them.
fn cluster_identity(initial: &str, token: &str, name: &str) -> Result<(u64, u64), (u8, String)> {
    let members = store::raft::node::parse_initial_cluster(initial, token).map_err(|e| (2, e))?;
    let me = members
        .iter()
        .find(|(_, m)| m.name == name)
        .map(|(id, _)| *id)
        .ok_or_else(|| (2, format!("--name {name} is not in --initial-cluster")))?;
    let ids: Vec<u64> = members.keys().copied().collect();
    Ok((store::raft::cluster_id(&ids), me))
}

fn mvcc_restore(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    opts: &store::RestoreOptions,
) -> Result<(), (u8, String)> {
    let restored = store::restore_snapshot(file, data_dir, opts).map_err(|e| (2, e.to_string()))?;
    match restored {
        store::Restored::Kybern => println!(
            "restored kybern snapshot {} into {}",
            file.display(),
            data_dir.display()
        ),
        store::Restored::Etcd(i) => {
            println!(
                "restored etcd snapshot {} into {}: revision {}, compacted at {}, {} keys \
                 ({} stored revisions), {} leases",
                file.display(),
                data_dir.display(),
                i.revision,
                i.compact_revision,
                i.live_keys,
                i.revisions,
                i.leases
            );
            for n in &i.notes {
                println!("note: {n}");
            }
        }
    }
    Ok(())
}

/// Refusals of bad input (a data dir that is not ours, a damaged store) exit 2; other failures 1.
fn failure(e: anyhow::Error) -> (u8, String) {
    let msg = format!("{e:#}");
    let bad_input = e
        .chain()
        .any(|c| c.downcast_ref::<store::ConfigError>().is_some())
        || msg.contains("not a kybern store")
        || msg.contains("holds no kybern store");
    (if bad_input { 2 } else { 1 }, msg)
}
