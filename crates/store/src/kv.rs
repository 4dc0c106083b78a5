//! The one storage interface of kybern, shaped like etcd v3 (range, put, delete, txn, compact, watch,
//! lease). The API server stores through it only. Two implementations: the in-process store member
//! (`crate::Member`) and a remote etcd v3 endpoint (`crate::remote::RemoteKv`). The conformance suite in
//! `testkit::conformance` runs against both; what passes on one must pass on the other.

use std::pin::Pin;

use async_trait::async_trait;
use etcd_api::*;
use futures::Stream;
use tonic::Status;

/// A watch's responses: the first is the `created` response, then events, progress notifications
/// and, at the end, a `canceled` response (for example after compaction).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<PbWatchResponse, Status>> + Send>>;

/// What to watch, as in etcd's `WatchCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// Empty: the key alone; `[0]`: every key from `key` on; otherwise the half-open range.
    pub range_end: Vec<u8>,
    /// 0: from the next revision; otherwise replay history from this revision on.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub progress_notify: bool,
}

#[async_trait]
pub trait Kv: Send + Sync + 'static {
    async fn range(&self, req: PbRangeRequest) -> Result<PbRangeResponse, Status>;
    async fn put(&self, req: PbPutRequest) -> Result<PbPutResponse, Status>;
    async fn delete_range(&self, req: PbDeleteRequest) -> Result<PbDeleteResponse, Status>;
    async fn txn(&self, req: PbTxnRequest) -> Result<PbTxnResponse, Status>;
    async fn compact(&self, req: PbCompactionRequest) -> Result<PbCompactionResponse, Status>;
    async fn watch(&self, spec: WatchSpec) -> Result<WatchStream, Status>;
    async fn lease_grant(&self, req: PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse, Status>;
    async fn lease_revoke(
        &self,
        req: PbLeaseRevokeRequest,
    ) -> Result<PbLeaseRevokeResponse, Status>;
    /// One keep-alive round trip; TTL 0 in the answer means the lease is gone.
    async fn lease_keep_alive(&self, id: i64) -> Result<PbLeaseKeepAliveResponse, Status>;
    async fn lease_time_to_live(
        &self,
        req: PbLeaseTimeToLiveRequest,
    ) -> Result<PbLeaseTimeToLiveResponse, Status>;
}
