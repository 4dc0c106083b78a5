//! The secure port: `/healthz` (checks `ping` and `leaderElection`, as upstream), `/livez`,
//! `/readyz` and `/metrics`, over HTTPS with the given certificate or a self-signed one.
//! As upstream, the health endpoints need no credentials; unlike upstream, `/metrics` needs none
//! either (there is no delegated authorization yet).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, info, warn};

use crate::ControllerManagerArgs;

/// How far past its lease duration a leader may be late renewing before `/healthz` fails
/// (kube-controller-manager uses 20 s).
const LEADER_TOLERANCE: Duration = Duration::from_secs(20);

pub struct Server {
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    health: Option<Arc<leaderelect::Health>>,
}

impl Server {
    pub fn new(
        args: &ControllerManagerArgs,
        health: Option<Arc<leaderelect::Health>>,
    ) -> Result<Self> {
        let (chain, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(c), Some(k)) => (read_certs(c)?, read_key(k)?),
            (None, None) => self_signed()?,
            _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the serving certificate and key do not match")?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Server {
            addr: SocketAddr::new(args.bind_address, args.secure_port),
            tls: Arc::new(cfg),
            health,
        })
    }

    /// Binds the secure port (a taken port fails the start, as upstream).
    pub async fn bind(&self) -> Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot listen on --secure-port {}", self.addr))
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<()> {
        info!(
            "serving /healthz, /readyz, /livez and /metrics on https://{}",
            self.addr
        );
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/livez", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.health.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => s,
                        _ => {
                            debug!(%remote, "TLS handshake failed or timed out");
                            return;
                        }
                    };
                let svc = TowerToHyperService::new(app);
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(%remote, "connection: {e}");
                }
            });
        }
    }
}

type Health = State<Option<Arc<leaderelect::Health>>>;

/// Upstream's healthz: `ok`, or 500 listing the failed checks; `?verbose` lists every check.
async fn healthz(State(h): Health, RawQuery(q): RawQuery) -> impl IntoResponse {
    let mut checks = vec![("ping", Ok(()))];
    if let Some(h) = &h {
        checks.push(("leaderElection", h.check(LEADER_TOLERANCE)));
    }
    let failed = checks.iter().any(|(_, r)| r.is_err());
    let verbose = q.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p == "verbose=true"));
    if !failed && !verbose {
        return (StatusCode::OK, "ok".to_string());
    }
    let mut body = String::new();
    for (name, r) in &checks {
        match r {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                warn!("healthz check {name} failed: {e}");
                body.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
    }
    if failed {
        body.push_str("healthz check failed\n");
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    } else {
        body.push_str("healthz check passed\n");
        (StatusCode::OK, body)
    }
}

async fn readyz() -> &'static str {
    "ok"
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::encode(),
    )
}

/// A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1 (upstream generates one
/// for its public address when no certificate is given).
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("localhost@{}", jiff::Timestamp::now().as_second()),
    );
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("serializing the generated key: {e}"))?;
    Ok((vec![cert.der().clone()], der))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no valid PEM certificate", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .with_context(|| format!("{} holds no valid PEM key", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}
