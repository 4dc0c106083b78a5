//! Peer RPCs, client side: HTTP/2 (cleartext, prior knowledge) POSTs to a member's first peer URL
//! with postcard bodies. Raft messages, forwarded writes and read-index requests all travel here.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Peers {
    fn default() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_millis(500)));
        Peers {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(c),
        }
    }
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
        let request = http::Request::post(&url)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(enc(req))))
            .map_err(|e| CallError::Unreachable(url.clone(), e.to_string()))?;
        let answer = async {
            let resp = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(url.clone(), e.to_string())
                } else {
                    CallError::Unknown(url.clone(), e.to_string())
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
