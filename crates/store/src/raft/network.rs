//! Peer RPCs, client side: HTTP/2 POSTs to a member's first peer URL with postcard bodies,
//! cleartext with prior knowledge on http:// peer URLs and over TLS on https:// ones. Raft messages,
//! forwarded writes and read-index requests all travel here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{enc, MemberInfo, NodeId, TypeConfig};

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer could not be reached.
    #[error("peer {0} unreachable: {1}")]
    Unreachable(String, String),
    /// Sent, but no answer in time or the connection broke: the outcome is unknown.
    #[error("peer {0} did not answer: {1}")]
    Unknown(String, String),
    /// The peer answered with an error.
    #[error("peer {0} refused: {1}")]
    Refused(String, String),
}

#[derive(Clone)]
pub struct Peers {
    client: Client<PeerConnector, Full<Bytes>>,
    /// Sent with every request (`X-Etcd-Cluster-ID`, as etcd's peers do) so that a member of
    /// another cluster is refused; 0 while a joining member does not know it yet.
    cluster_id: u64,
}

/// The header carrying the sender's cluster id (etcd's name for it).
pub const CLUSTER_ID_HEADER: &str = "x-etcd-cluster-id";

impl Peers {
    /// These peers as members of cluster `id`.
    pub fn with_cluster(mut self, id: u64) -> Self {
        self.cluster_id = id;
        self
    }

    /// `tls` is what https:// peer URLs are dialed with (see `tls::peer_client_config`); without
    /// it only http:// peers can be reached.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_millis(500)));
        c.enforce_http(false);
        let connector = PeerConnector {
            http: c,
            tls: tls.map(tokio_rustls::TlsConnector::from),
        };
        Peers {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
            cluster_id: 0,
        }
    }
}

/// A connection to a peer: TCP, then TLS for https:// URLs.
#[derive(Clone)]
pub struct PeerConnector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let peer = format!(
            "{}:{}",
            uri.host().unwrap_or(""),
            uri.port_u16().unwrap_or(443)
        );
        let tls = self.tls.clone();
        let tcp = self.http.call(uri);
        Box::pin(async move {
            let tcp = tcp.await?;
            if !https {
                return Ok(PeerStream::Plain(tcp));
            }
            let tls = tls.ok_or("an https peer URL, but no peer TLS configured")?;
            let name = rustls::pki_types::ServerName::try_from(host)?;
            let s = tls
                .connect(name, tcp.into_inner())
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(PeerStream::Tls(Box::new(TokioIo::new(s)), peer))
        })
    }
}

pub enum PeerStream {
    Plain(TokioIo<tokio::net::TcpStream>),
    /// With the peer's host:port, to name it when TLS fails.
    Tls(
        Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
        String,
    ),
}

/// Logs a TLS failure on an established peer connection. Under TLS 1.3 the peer checks this
/// member's client certificate after the handshake has finished here, so its refusal (an alert)
/// arrives on the first read, and HTTP/2 would otherwise report only a closed channel.
fn log_tls_error<T>(peer: &str, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
    if let Poll::Ready(Err(e)) = &r {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            tracing::warn!(%peer, "TLS connection to peer failed: {tls}");
        }
    }
    r
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        match self {
            PeerStream::Plain(s) => s.connected(),
            PeerStream::Tls(s, _) => {
                let c = s.inner().get_ref().0.connected();
                if s.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s, peer) => log_tls_error(peer, Pin::new(s).poll_read(cx, buf)),
        }
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s, peer) => log_tls_error(peer, Pin::new(s).poll_write(cx, buf)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An error with its causes (a connect error's cause is what went wrong, such as a TLS failure).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl Peers {
    /// POSTs `req` to `<peer url><path>` and decodes the answer.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        node: &MemberInfo,
        path: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let base = node
            .peer_urls
            .first()
            .map(|u| u.trim_end_matches('/'))
            .unwrap_or("");
        let url = format!("{base}{path}");
        let mut request =
            http::Request::post(&url).header("content-type", "application/octet-stream");
        if self.cluster_id != 0 {
            request = request.header(CLUSTER_ID_HEADER, format!("{:x}", self.cluster_id));
        }
        let request = request
            .body(Full::new(Bytes::from(enc(req))))
            .map_err(|e| CallError::Unreachable(url.clone(), e.to_string()))?;
        let answer = async {
            let resp = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(url.clone(), with_causes(&e))
                } else {
                    CallError::Unknown(url.clone(), with_causes(&e))
                }
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Unknown(url.clone(), e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError::Refused(
                    url.clone(),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
            }
            postcard::from_bytes(&body).map_err(|e| CallError::Refused(url.clone(), e.to_string()))
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Unknown(
                url,
                format!("no answer within {timeout:?}"),
            )),
        }
    }
}

/// openraft's network: one client per target member.
pub struct Network {
    pub peers: Peers,
}

pub struct PeerClient {
    target: NodeId,
    node: MemberInfo,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl PeerClient {
    async fn rpc<Q: Serialize, A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<NodeId, MemberInfo, RaftError<NodeId, E>>> {
        let r: Result<A, RaftError<NodeId, E>> = self
            .peers
            .call(&self.node, path, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        r.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>>
    {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
