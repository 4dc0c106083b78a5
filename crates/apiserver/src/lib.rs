//! kybern's Kubernetes API server: HTTP (axum) over the registry. Discovery, OpenAPI, health,
//! version and metrics endpoints, then every resource through one generic handler.
//!
//! Serving is HTTPS only (a self-signed certificate in `--cert-dir` unless one is given), with
//! authentication by client certificate, static bearer token or (when allowed) as anonymous. There
//! is no authorizer yet: every authenticated request is allowed.

// ApiError (a Status with details) is returned on cold paths only; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod authn;
pub mod discovery;
mod healthprobe;
pub mod metrics;
pub mod negotiate;
pub mod openapi;
pub mod params;
pub mod proto;
pub mod resources;
pub mod serving;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use apimachinery::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use registry::{Registry, RegistryOptions};
use serde_json::json;
use store::Kv;

use crate::negotiate::{error_response, json_response};
use crate::params::Query;

/// The Kubernetes version this server speaks.
pub const GIT_VERSION: &str = "v1.33.0-kybern";
pub const BUILD_HASH: &str = "kybern-0-1-0";

/// `kybern apiserver` flags, named as kube-apiserver's.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// etcd v3 endpoints to store in (comma separated), instead of an embedded store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// CA bundle to verify the etcd servers with.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for the etcd servers.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for the etcd servers.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// Run an embedded single-member store in this directory (when --etcd-servers is not given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to serve HTTPS on. There is no authorizer yet (every authenticated request,
    /// anonymous ones included unless --anonymous-auth=false, may do anything), so the default
    /// is loopback only.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Port to serve the API on with HTTPS.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Serving certificate (PEM, chain allowed). Without it (and --tls-private-key-file) a
    /// self-signed certificate for localhost/127.0.0.1 is generated into --cert-dir.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed serving certificate is kept (apiserver.crt, apiserver.key); ignored
    /// with --tls-cert-file.
    #[arg(long, default_value = "/var/run/kubernetes")]
    pub cert_dir: PathBuf,
    /// CA bundle: a client certificate it signs authenticates as its CN, in its O groups.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Static bearer tokens, one `token,user,uid,"group1,group2"` CSV line each.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Let requests without credentials in as system:anonymous (group system:unauthenticated).
    /// NOTE: there is no authorizer yet (RBAC comes later), so anonymous requests may do anything
    /// authenticated ones may; set --anonymous-auth=false outside a loopback sandbox.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub anonymous_auth: bool,
    /// EncryptionConfiguration (apiserver.config.k8s.io/v1) for encryption at rest; providers
    /// aesgcm and identity. Without it, secrets are still encrypted: with a random AES-256-GCM
    /// key generated once into <cert-dir>/encryption-config.yaml (keep that file, and give the
    /// same file to every API server on one store).
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    /// CIDR to allocate Service cluster IPs from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// How often to compact the store's history (0 turns it off), as kube-apiserver does.
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    pub etcd_compaction_interval: std::time::Duration,
    /// How long events are kept after their last update.
    #[arg(long, default_value = "1h", value_parser = parse_interval)]
    pub event_ttl: std::time::Duration,
    /// Port range to allocate NodePorts from.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    store::config::parse_duration(s)
}

/// What every request handler shares.
pub struct State {
    pub registry: Arc<Registry>,
    /// OpenAPI v3 documents by group-version path, built on first use.
    pub openapi: std::sync::Mutex<std::collections::HashMap<String, Option<Bytes>>>,
    pub metrics: metrics::Metrics,
    pub address: String,
}

impl ApiserverArgs {
    /// Parses kube-apiserver style flags (without a program name), e.g. for tests and embedding.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{Args, FromArgMatches};
        let cmd = Self::augment_args(clap::Command::new("apiserver").no_binary_name(true));
        Self::from_arg_matches(&cmd.try_get_matches_from(flags)?)
    }
}

/// Runs `kybern apiserver` until the process is stopped.
pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.bind_address, args.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve_on(args, listener).await
}

/// Serves the API on `listener` with the store given by the flags (`--etcd-servers` or
/// `--data-dir`).
pub async fn serve_on(
    args: ApiserverArgs,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    registry_options(&args)?;
    let kv = connect_store(&args).await?;
    serve_kv(kv, args, listener).await
}

/// Serves the API on `listener` over `kv`, every other setting from the flags (several API
/// servers in one process share one embedded store this way).
pub async fn serve_kv(
    kv: Arc<dyn Kv>,
    args: ApiserverArgs,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let mut opts = registry_options(&args)?;
    opts.encryption = encryption(&args)?;
    let ip = Registry::kubernetes_service_ip(&opts).map_err(|e| anyhow::anyhow!(e))?;
    let tls = serving::server_config(&serving::TlsFiles {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_private_key_file.clone(),
        cert_dir: args.cert_dir.clone(),
        client_ca_file: args.client_ca_file.clone(),
        alt_names: ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .map(String::from)
            .to_vec(),
        alt_ips: [ip.parse().ok(), Some(args.bind_address)]
            .into_iter()
            .flatten()
            .collect(),
    })?;
    let authn = authn::Authenticator::new(args.token_auth_file.as_deref(), args.anonymous_auth)?;
    tracing::info!(
        addr = %listener.local_addr()?,
        anonymous = args.anonymous_auth,
        "kybern apiserver serving HTTPS; no authorizer yet: every authenticated request is allowed"
    );
    if !args.etcd_compaction_interval.is_zero() {
        tokio::spawn(compactor(kv.clone(), args.etcd_compaction_interval));
    }
    let app = app(kv, &listener, opts)
        .await?
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(authn),
            authn::layer,
        ));
    serving::serve_tls(listener, tls, app).await
}

/// Every `every`, compacts the store up to the revision it had one period earlier, so watchers and
/// paged lists keep at least one period of history (upstream's --etcd-compaction-interval).
pub async fn compactor(kv: Arc<dyn Kv>, every: std::time::Duration) {
    let mut previous = 0i64;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let rev = match kv
            .range(etcd_api::PbRangeRequest {
                key: b"compact_rev_key".to_vec(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r.header.map(|h| h.revision).unwrap_or(0),
            Err(e) => {
                tracing::warn!("compaction: cannot read the revision: {}", e.message());
                continue;
            }
        };
        if previous > 0 {
            match kv
                .compact(etcd_api::PbCompactionRequest {
                    revision: previous,
                    physical: false,
                })
                .await
            {
                Ok(_) => tracing::info!(revision = previous, "compacted the store"),
                Err(e) if e.message().contains("compacted") => {}
                Err(e) => tracing::warn!(revision = previous, "compaction failed: {}", e.message()),
            }
        }
        previous = rev;
    }
}

fn registry_options(args: &ApiserverArgs) -> anyhow::Result<RegistryOptions> {
    let (lo, hi) = args
        .service_node_port_range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| a < b)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--service-node-port-range {:?}: want LOW-HIGH, e.g. 30000-32767",
                args.service_node_port_range
            )
        })?;
    let opts = RegistryOptions {
        service_cluster_ip_range: args.service_cluster_ip_range.clone(),
        service_node_port_range: (lo, hi),
        event_ttl: args.event_ttl,
        encryption: Default::default(),
    };
    Registry::kubernetes_service_ip(&opts)
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    Ok(opts)
}

/// The encryption at rest configuration: `--encryption-provider-config`, else the one generated
/// once into the cert dir (secrets encrypted with AES-GCM, plaintext ones still readable).
fn encryption(args: &ApiserverArgs) -> anyhow::Result<registry::encryption::Encryption> {
    let path = match &args.encryption_provider_config {
        Some(p) => p.clone(),
        None => {
            let p = args.cert_dir.join("encryption-config.yaml");
            if !p.exists() {
                std::fs::create_dir_all(&args.cert_dir)
                    .with_context(|| format!("--cert-dir {}", args.cert_dir.display()))?;
                let text = registry::encryption::Encryption::generate_default();
                serving::write_atomic(&p, text.as_bytes(), true)?;
                tracing::warn!(
                    file = %p.display(),
                    "generated an encryption key for secrets; keep this file (secrets cannot be read without it)"
                );
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--encryption-provider-config {}", path.display()))?;
    registry::encryption::Encryption::parse(&text)
        .map_err(|e| anyhow::anyhow!("--encryption-provider-config {}: {e}", path.display()))
}

/// The store the flags name: a remote etcd v3 cluster (`--etcd-servers`, with the
/// `--etcd-cafile/--etcd-certfile/--etcd-keyfile` TLS material for `https://` endpoints) or an
/// embedded single-member store in `--data-dir`.
pub async fn connect_store(args: &ApiserverArgs) -> anyhow::Result<Arc<dyn Kv>> {
    if !args.etcd_servers.is_empty() {
        let read = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("{flag} {}", p.display())))
                .transpose()
        };
        let tls = store::remote::RemoteTls {
            ca_pem: read("--etcd-cafile", &args.etcd_cafile)?,
            cert_pem: read("--etcd-certfile", &args.etcd_certfile)?,
            key_pem: read("--etcd-keyfile", &args.etcd_keyfile)?,
        };
        if tls.cert_pem.is_some() != tls.key_pem.is_some() {
            anyhow::bail!("--etcd-certfile and --etcd-keyfile go together");
        }
        let https = args.etcd_servers.iter().any(|u| u.starts_with("https://"));
        if !https && (tls.ca_pem.is_some() || tls.cert_pem.is_some()) {
            anyhow::bail!(
                "--etcd-cafile/--etcd-certfile/--etcd-keyfile need https:// --etcd-servers"
            );
        }
        let kv = store::remote::RemoteKv::connect(&args.etcd_servers, https.then_some(tls))
            .await
            .with_context(|| format!("cannot reach etcd at {}", args.etcd_servers.join(",")))?;
        tracing::info!(servers = %args.etcd_servers.join(","), "storing in etcd");
        return Ok(Arc::new(kv));
    }
    let Some(dir) = &args.data_dir else {
        anyhow::bail!("give --etcd-servers or --data-dir");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let m = store::Member::start(dir, store::Settings::default())
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    Ok(m)
}

/// The API's router over `kv` (namespaces and the `default/kubernetes` service made first).
async fn app(
    kv: Arc<dyn Kv>,
    listener: &tokio::net::TcpListener,
    opts: RegistryOptions,
) -> anyhow::Result<axum::Router> {
    let registry = Registry::with_options(kv, &opts).map_err(|e| anyhow::anyhow!(e))?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        registry
            .ensure_namespace(ns)
            .await
            .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
    }
    let port = listener.local_addr()?.port();
    ensure_kubernetes_service(&registry, &opts, port).await?;
    let address = listener.local_addr()?.to_string();
    let state = Arc::new(State {
        registry,
        openapi: Default::default(),
        metrics: metrics::Metrics::new(),
        address,
    });
    Ok(router(state))
}

/// The `default/kubernetes` Service on the first address of the service range, as upstream's
/// bootstrap controller keeps it.
async fn ensure_kubernetes_service(
    reg: &Registry,
    opts: &RegistryOptions,
    port: u16,
) -> anyhow::Result<()> {
    let ip = Registry::kubernetes_service_ip(opts).map_err(|e| anyhow::anyhow!(e))?;
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    let store = reg
        .lookup("", "v1", "services")
        .expect("services are served");
    match store
        .create("default", svc, &registry::WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 || e.code == 422 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating the kubernetes service: {e}")),
    }
}

pub fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { dispatch(state, method, uri, headers, body).await }
            },
        )
        // Bodies up to 4x the limit reach the handlers, which answer 413 with a Status.
        .layer(DefaultBodyLimit::max(negotiate::MAX_BODY * 4))
}

fn text(code: u16, s: &str) -> Response {
    let mut r = Response::new(Body::from(s.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn health(state: &State, uri: &Uri, what: &str) -> Response {
    let q = Query::parse(uri.query());
    let etcd_ok = state
        .registry
        .kv
        .range(etcd_api::PbRangeRequest {
            key: b"/registry/health".to_vec(),
            ..Default::default()
        })
        .await
        .is_ok();
    let checks = [("ping", true), ("etcd", etcd_ok)];
    let ok = checks.iter().all(|(_, c)| *c);
    let code = if ok { 200 } else { 500 };
    if q.has("verbose") {
        let mut s = String::new();
        for (n, c) in checks {
            s.push_str(&format!(
                "[{}]{n} {}\n",
                if c { "+" } else { "-" },
                if c { "ok" } else { "failed" }
            ));
        }
        s.push_str(&format!(
            "{what} check {}\n",
            if ok { "passed" } else { "failed" }
        ));
        return text(code, &s);
    }
    text(code, if ok { "ok" } else { "not ok" })
}

fn openapi_doc(state: &State, group: &str, version: &str) -> Response {
    let key = format!("{group}/{version}");
    let doc = {
        let mut cache = state.openapi.lock().expect("openapi cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                openapi::group_version(&state.registry, group, version)
                    .map(|d| Bytes::from(serde_json::to_vec(&d).expect("json")))
            })
            .clone()
    };
    match doc {
        Some(d) => {
            let mut r = Response::new(Body::from(d));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        None => error_response(&ApiError::path_not_found()),
    }
}

fn aggregated(v: &serde_json::Value) -> Response {
    let mut r = json_response(200, v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CT),
    );
    r
}

async fn dispatch(
    state: Arc<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let reg = &state.registry;
    let started = std::time::Instant::now();
    let resp = match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": GIT_VERSION, "gitCommit": BUILD_HASH,
                "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "rust",
                "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
            }),
        ),
        (Method::GET, ["healthz"]) => health(&state, &uri, "healthz").await,
        (Method::GET, ["livez"]) => health(&state, &uri, "livez").await,
        (Method::GET, ["readyz"]) => health(&state, &uri, "readyz").await,
        (Method::GET, ["healthz" | "livez" | "readyz", _]) => text(200, "ok"),
        (Method::GET, ["metrics"]) => state.metrics.render(),
        (Method::GET, ["openapi", "v2"]) => {
            let mut r = Response::new(Body::from(openapi::v2_protobuf()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        (Method::GET, ["openapi", "v3"]) => json_response(200, &openapi::index(reg)),
        (Method::GET, ["openapi", "v3", "api", v]) => openapi_doc(&state, "", v),
        (Method::GET, ["openapi", "v3", "apis", g, v]) => openapi_doc(&state, g, v),
        (Method::GET, ["api"]) if negotiate::wants_aggregated(&headers) => {
            aggregated(&discovery::aggregated(reg, true))
        }
        (Method::GET, ["api"]) => json_response(200, &discovery::api_versions(&state.address)),
        (Method::GET, ["apis"]) if negotiate::wants_aggregated(&headers) => {
            aggregated(&discovery::aggregated(reg, false))
        }
        (Method::GET, ["apis"]) => json_response(200, &discovery::group_list(reg)),
        (Method::GET, ["api", v]) => match discovery::resource_list(reg, "", v) {
            Some(d) => json_response(200, &d),
            None => error_response(&ApiError::path_not_found()),
        },
        (Method::GET, ["apis", g]) => match discovery::group(reg, g) {
            Some(d) => json_response(200, &d),
            None => error_response(&ApiError::path_not_found()),
        },
        (Method::GET, ["apis", g, v]) => match discovery::resource_list(reg, g, v) {
            Some(d) => json_response(200, &d),
            None => error_response(&ApiError::path_not_found()),
        },
        (m, ["api", v, rest @ ..]) => resource(&state, m, "", v, rest, &uri, headers, body).await,
        (m, ["apis", g, v, rest @ ..]) => {
            resource(&state, m, g, v, rest, &uri, headers, body).await
        }
        _ => error_response(&ApiError::path_not_found()),
    };
    state.metrics.observe(
        method.as_str(),
        &segs,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    state: &Arc<State>,
    method: Method,
    group: &str,
    version: &str,
    rest: &[&str],
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = Query::parse(uri.query());
    match resources::handle(
        state.clone(),
        method,
        group,
        version,
        rest,
        q,
        headers,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}
