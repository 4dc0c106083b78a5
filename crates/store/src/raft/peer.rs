//! Peer RPCs, server side: the routes other members call on this member's peer URL. Raft's own
//! messages go to openraft; forwarded writes, read-index and lease keep-alives are answered only
//! by the leader (a member that is not the leader answers 421 and the caller looks again).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::membership::Change;
use super::node::RaftNode;
use super::{enc, Cmd, MemberInfo, NodeId, TypeConfig};

pub fn router(node: Arc<RaftNode>) -> axum::Router {
    axum::Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/forward", post(forward))
        .route("/raft/read_index", post(read_index))
        .route("/raft/keepalive", post(keepalive))
        .route("/raft/info", post(info))
        .route("/raft/member", post(member))
        .route("/raft/members", post(members))
        .route("/raft/hashkv", post(hashkv))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            same_cluster,
        ))
        .with_state(node)
}

/// Refuses a request from a member of another cluster (etcd answers 412 "cluster ID mismatch").
async fn same_cluster(
    State(n): State<Arc<RaftNode>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let theirs = req
        .headers()
        .get(super::network::CLUSTER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    match theirs {
        Some(id) if id != n.store.cluster_id => {
            tracing::warn!(
                remote_cluster = %format!("{id:x}"), local_cluster = %format!("{:x}", n.store.cluster_id),
                "refused a peer request from a member of another cluster (check --initial-cluster-token and the data dirs)"
            );
            (StatusCode::PRECONDITION_FAILED, "cluster ID mismatch").into_response()
        }
        _ => next.run(req).await,
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    postcard::from_bytes(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("undecodable peer request: {e}"),
        )
            .into_response()
    })
}

fn answer<T: Serialize>(v: &T) -> Response {
    enc(v).into_response()
}

fn not_leader() -> Response {
    (StatusCode::MISDIRECTED_REQUEST, "not the leader").into_response()
}

async fn append(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => answer(&n.raft.append_entries(req).await),
        Err(r) => r,
    }
}

async fn vote(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    match decode::<VoteRequest<NodeId>>(&body) {
        Ok(req) => answer(&n.raft.vote(req).await),
        Err(r) => r,
    }
}

async fn snapshot(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    match decode::<InstallSnapshotRequest<TypeConfig>>(&body) {
        Ok(req) => answer(&n.raft.install_snapshot(req).await),
        Err(r) => r,
    }
}

/// A write another member received: applied here if this member leads.
async fn forward(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    let cmd = match decode::<Cmd>(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match n.write_as_leader(cmd).await {
        Some(reply) => answer(&reply),
        None => not_leader(),
    }
}

/// The log index a linearizable read elsewhere must wait for (etcd's ReadIndex).
async fn read_index(State(n): State<Arc<RaftNode>>) -> Response {
    match n.raft.ensure_linearizable().await {
        Ok(id) => answer(&id.map(|l| l.index).unwrap_or(0)),
        Err(_) => not_leader(),
    }
}

/// A lease keep-alive another member received: the leader's lessor decides expiry.
async fn keepalive(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    let id = match decode::<i64>(&body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if !n.is_leader() {
        return not_leader();
    }
    answer(&n.store.lease_renew(id).unwrap_or(0))
}

/// This member's name and client URLs (etcd's published member attributes).
async fn info(State(n): State<Arc<RaftNode>>) -> Response {
    answer(&(n.name.clone(), n.client_urls.clone()))
}

/// A membership change another member received: made here if this member leads.
async fn member(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    let change = match decode::<Change>(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !n.is_leader() {
        return not_leader();
    }
    answer(&n.change_as_leader(change).await)
}

/// The cluster id and the members, for a member joining with `--initial-cluster-state existing`.
async fn members(State(n): State<Arc<RaftNode>>) -> Response {
    let list: Vec<(NodeId, MemberInfo)> =
        n.members().into_iter().map(|(id, m, _)| (id, m)).collect();
    answer(&(n.store.cluster_id, list))
}

/// The hash of this member's history up to a revision, for the leader's corruption check.
async fn hashkv(State(n): State<Arc<RaftNode>>, body: Bytes) -> Response {
    match decode::<i64>(&body) {
        Ok(rev) => answer(&super::corrupt::hash_at(&n, rev).await),
        Err(r) => r,
    }
}
