//! Serving a member: gRPC and HTTP (`/health`, `/metrics`, `/version`) on every client URL, TLS
//! with optional client-certificate auth, readiness to systemd, clean shutdown on SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use etcd_api::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::auth::PeerCommonName;
use crate::authority::FixAuthority;
use crate::config::{ClusterState, StoreArgs};
use crate::grpc::Services;
use crate::member::{Member, Settings};
use crate::metrics;
use crate::raft::node::ClusterConfig;

/// Extra room gRPC accepts above --max-request-bytes, as etcd (requests between the two limits get
/// etcd's own "request is too large").
const GRPC_OVERHEAD: usize = 512 * 1024;

pub fn settings(args: &StoreArgs) -> anyhow::Result<Settings> {
    Ok(Settings {
        name: args.name.clone(),
        client_urls: args
            .advertised_client_urls()?
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect(),
        peer_urls: args
            .initial_advertise_peer_urls
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        quota: args.quota(),
        max_request_bytes: args.max_request_bytes,
        max_txn_ops: args.max_txn_ops,
        retention: args.retention()?,
        progress_interval: args.experimental_watch_progress_notify_interval,
        client_cert_auth: args.client_cert_auth,
        auth_token_ttl: std::time::Duration::from_secs(args.auth_token_ttl),
        bcrypt_cost: args.bcrypt_cost,
        ..Settings::default()
    })
}

pub fn router(member: Arc<Member>) -> axum::Router {
    let svc = Services {
        member: member.clone(),
    };
    let limit = member.settings.max_request_bytes as usize + GRPC_OVERHEAD;
    let routes =
        tonic::service::Routes::new(PbKvServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(
                PbWatchServer::new(crate::watch_svc::WatchService {
                    member: member.clone(),
                })
                .max_decoding_message_size(limit),
            )
            .add_service(PbLeaseServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(PbClusterServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(crate::auth_svc::AuthService {
                member: member.clone(),
                limit,
            })
            .add_service(PbMaintenanceServer::new(svc).max_decoding_message_size(limit));
    let http = axum::Router::new()
        .route("/health", get(health))
        .route("/readyz", get(health))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/version",
            get(|| async { axum::Json(serde_json_version()) }),
        )
        .route("/metrics", get(metrics::serve))
        .with_state(member);
    routes.into_axum_router().merge(http)
}

fn serde_json_version() -> std::collections::BTreeMap<&'static str, &'static str> {
    [
        ("etcdserver", ETCD_VERSION),
        ("etcdcluster", "3.5.0"),
        ("kybern", env!("CARGO_PKG_VERSION")),
    ]
    .into()
}

async fn health(State(m): State<Arc<Member>>) -> impl IntoResponse {
    let alarms = m.store.alarms();
    if alarms.is_empty() {
        (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        )
    } else {
        let names: Vec<&str> = alarms
            .iter()
            .map(|(_, a)| crate::grpc::alarm_name(*a))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"health":"false","reason":"ALARM {}"}}"#,
                names.join(",")
            ),
        )
    }
}

/// Runs `kybern store` until SIGTERM or SIGINT.
pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    if args.enable_v2 {
        tracing::warn!(
            "--enable-v2 is accepted for compatibility, but kybern serves only the etcd v3 API"
        );
    }
    let data_dir = args.data_dir();
    let settings = settings(&args)?;
    let tls = crate::tls::server_config(&args)?;
    let member = if args.replicated() {
        let members = args.cluster().map_err(anyhow::Error::msg)?;
        let peer_tls = crate::tls::peer_client_config(&args)?;
        let peer_server_tls = crate::tls::peer_server_config(&args)?;
        let (me, cluster_id) = identity(&args, &data_dir, &members, &peer_tls).await?;
        let cluster = ClusterConfig {
            me,
            cluster_id,
            members,
            new_cluster: args.initial_cluster_state == ClusterState::New,
            token: args.initial_cluster_token.clone(),
            heartbeat: std::time::Duration::from_millis(args.heartbeat_interval),
            election: std::time::Duration::from_millis(args.election_timeout),
            snapshot_count: args.snapshot_count.max(1),
            catchup_entries: args.experimental_snapshot_catchup_entries,
            corrupt_check: args.experimental_corrupt_check_time,
            peer_tls: Some(peer_tls),
        };
        // Peers must reach this member before it can take part in an election.
        let m = Member::start_replicated(&data_dir, settings, &cluster)
            .await
            .context("cannot start store member")?;
        let node = m.raft().cloned().expect("a replicated member has raft");
        for url in args.peer_urls()? {
            let listener = TcpListener::bind(host_port(&url, 2380))
                .await
                .with_context(|| format!("cannot listen on peer URL {url}"))?;
            let tls = (url.scheme() == "https")
                .then(|| peer_server_tls.clone())
                .flatten();
            tracing::info!(%url, tls = tls.is_some(), client_cert_auth = tls.is_some() && args.peer_client_cert_auth, "serving peer traffic (raft)");
            tokio::spawn(accept_loop(
                listener,
                crate::raft::peer::router(node.clone()),
                tls,
            ));
        }
        m
    } else {
        Member::start(&data_dir, settings)
            .map_err(|e| anyhow::anyhow!("cannot start store member: {e}"))?
    };
    tracing::info!(
        name = %args.name, data_dir = %data_dir.display(), revision = member.store.revision(),
        member_id = %format!("{:x}", member.store.member_id), cluster_id = %format!("{:x}", member.store.cluster_id),
        new = member.store.created, "store member started"
    );
    let app = router(member.clone());
    let mut servers = Vec::new();
    for url in args.client_urls()? {
        let listener = TcpListener::bind(host_port(&url, 2379))
            .await
            .with_context(|| format!("cannot listen on {url}"))?;
        let tls = (url.scheme() == "https").then(|| tls.clone()).flatten();
        tracing::info!(%url, tls = tls.is_some(), "serving client traffic (gRPC and HTTP)");
        servers.push(tokio::spawn(accept_loop(listener, app.clone(), tls)));
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let removed = async {
        match member.raft() {
            Some(n) => {
                let mut r = n.removed.clone();
                let _ = r.wait_for(|gone| *gone).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("received shutdown signal; stopping the store member"),
        _ = removed => {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            // Let answers in flight (such as the member remove that removed it) go out.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            for s in servers {
                s.abort();
            }
            anyhow::bail!("the member has been permanently removed from the cluster");
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for s in servers {
        s.abort();
    }
    Ok(())
}

/// This member's id and its cluster's: derived from the flags for a new cluster (as etcd does),
/// kept in the data dir once it exists, and asked of the running members when a member added
/// with `etcdctl member add` joins with `--initial-cluster-state existing`.
async fn identity(
    args: &StoreArgs,
    data_dir: &std::path::Path,
    members: &std::collections::BTreeMap<u64, crate::raft::MemberInfo>,
    peer_tls: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<(u64, u64)> {
    if mvcc::backend::db_path(data_dir).exists()
        && args.initial_cluster_state == ClusterState::Existing
    {
        let s = mvcc::Store::open(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", data_dir.display()))?;
        return Ok((s.member_id, s.cluster_id));
    }
    let mine: Vec<String> = args
        .initial_advertise_peer_urls
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .collect();
    if args.initial_cluster_state == ClusterState::New {
        let me = members
            .iter()
            .find(|(_, m)| m.name == args.name)
            .map(|(id, _)| *id)
            .ok_or_else(|| anyhow::anyhow!("--name {} is not in --initial-cluster", args.name))?;
        let ids: Vec<u64> = members.keys().copied().collect();
        return Ok((me, crate::raft::cluster_id(&ids)));
    }
    let peers = crate::raft::network::Peers::new(Some(peer_tls.clone()));
    for (_, m) in members.iter().filter(|(_, m)| m.peer_urls != mine) {
        let answer = peers
            .call::<(), (u64, Vec<(u64, crate::raft::MemberInfo)>)>(
                m,
                "/raft/members",
                &(),
                std::time::Duration::from_secs(3),
            )
            .await;
        match answer {
            Ok((cluster_id, list)) => {
                let me = list
                    .iter()
                    .find(|(_, x)| x.peer_urls.iter().any(|u| mine.contains(u)))
                    .map(|(id, _)| *id)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "this member's peer URLs {mine:?} are not in the cluster; add it first with \
                             `etcdctl member add {} --peer-urls={}`",
                            args.name,
                            mine.join(",")
                        )
                    })?;
                tracing::info!(member = %format!("{me:x}"), cluster = %format!("{cluster_id:x}"), "joining the existing cluster");
                return Ok((me, cluster_id));
            }
            Err(e) => tracing::warn!("asking {m} for the cluster's members: {e}"),
        }
    }
    anyhow::bail!("--initial-cluster-state existing: no member of --initial-cluster answered; is the cluster running?")
}

fn host_port(url: &url::Url, default_port: u16) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("localhost"),
        url.port().unwrap_or(default_port)
    )
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(None)
                // Clients that give up on requests under load reset streams; h2's default of 20
                // pending resets would then drop whole connections.
                .max_pending_accept_reset_streams(Some(4096));
            let res = match acceptor {
                Some(a) => match a.accept(stream).await {
                    Ok(s) => {
                        // The verified client certificate's common name goes with every request
                        // (a user name for auth under --client-cert-auth).
                        let cn = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| common_name(c.first()?));
                        let app =
                            app.map_request(move |mut r: http::Request<hyper::body::Incoming>| {
                                if let Some(cn) = &cn {
                                    r.extensions_mut().insert(PeerCommonName(cn.clone()));
                                }
                                r
                            });
                        builder
                            .serve_connection_with_upgrades(
                                TokioIo::new(FixAuthority::new(s)),
                                TowerToHyperService::new(app),
                            )
                            .await
                    }
                    Err(e) => {
                        tracing::warn!(%peer, "rejected connection: TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(FixAuthority::new(stream)),
                            TowerToHyperService::new(app),
                        )
                        .await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}
