//! RemoteKv: the Kv trait over a remote etcd v3 endpoint (raw tonic calls).
//!
//! Every call is one gRPC request on a shared HTTP/2 channel; etcd's errors come back unchanged as
//! `tonic::Status` (etcd's code and message), so the callers match on the same texts against kybern
//! and against a real etcd.

use async_trait::async_trait;
use etcd_api::watch_msgs::{RequestUnion, WatchCreateRequest, WatchRequest};
use etcd_api::*;
use futures::{stream, StreamExt};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tonic_prost::ProstCodec;

use crate::kv::{Kv, WatchSpec, WatchStream};

/// TLS material for `https://` endpoints, all PEM. Without `ca_pem` the server's certificate must
/// chain to a root the platform trusts; `cert_pem` and `key_pem` (both or neither) are the client
/// certificate for servers that ask for one (`--client-cert-auth`).
#[derive(Clone, Debug, Default)]
pub struct RemoteTls {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

/// The `Kv` trait over a remote etcd v3 cluster.
#[derive(Clone, Debug)]
pub struct RemoteKv {
    channel: Channel,
}

const KV_RANGE: &str = "/etcdserverpb.KV/Range";
const KV_PUT: &str = "/etcdserverpb.KV/Put";
const KV_DELETE: &str = "/etcdserverpb.KV/DeleteRange";
const KV_TXN: &str = "/etcdserverpb.KV/Txn";
const KV_COMPACT: &str = "/etcdserverpb.KV/Compact";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
const LEASE_TTL: &str = "/etcdserverpb.Lease/LeaseTimeToLive";

impl RemoteKv {
    /// The tonic endpoint for one URL (`http://host:port` or `https://host:port`), with `tls`
    /// applied when given.
    pub fn endpoint(
        url: &str,
        tls: Option<&RemoteTls>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let mut ep = Endpoint::from_shared(url.to_string())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            let mut cfg = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca_pem {
                cfg = cfg.ca_certificate(Certificate::from_pem(ca));
            }
            if let (Some(cert), Some(key)) = (&tls.cert_pem, &tls.key_pem) {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            ep = ep.tls_config(cfg)?;
        }
        Ok(ep)
    }

    /// Connects to the first reachable endpoint of `endpoints`, tried in the order given; the error
    /// is the last endpoint's. An empty list is an invalid-URI error.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<RemoteTls>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut last_err = None;
        for url in endpoints {
            match Self::endpoint(url, tls.as_ref()) {
                Ok(ep) => match ep.connect().await {
                    Ok(channel) => return Ok(Self { channel }),
                    Err(e) => last_err = Some(e),
                },
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e),
            // No endpoint at all: let tonic produce its own invalid-URI error.
            None => Endpoint::from_shared(String::new()).map(|ep| Self {
                channel: ep.connect_lazy(),
            }),
        }
    }

    /// A client over an existing channel (for example one built with `Channel::balance_list`).
    pub fn from_channel(channel: Channel) -> Self {
        Self { channel }
    }

    async fn grpc(&self) -> Result<Grpc<Channel>, Status> {
        let mut grpc = Grpc::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("etcd endpoint not ready: {e}")))?;
        Ok(grpc)
    }

    async fn unary<Q, R>(&self, path: &'static str, req: Q) -> Result<R, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc().await?;
        let resp = grpc
            .unary(
                Request::new(req),
                PathAndQuery::from_static(path),
                ProstCodec::<Q, R>::default(),
            )
            .await?;
        Ok(resp.into_inner())
    }
}

fn watch_create(spec: &WatchSpec) -> WatchRequest {
    let mut filters = Vec::new();
    if spec.no_put {
        filters.push(enums::watch_filter::NOPUT);
    }
    if spec.no_delete {
        filters.push(enums::watch_filter::NODELETE);
    }
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: spec.start_revision,
            progress_notify: spec.progress_notify,
            filters,
            prev_kv: spec.prev_kv,
            watch_id: 0,
            fragment: false,
        })),
    }
}

#[async_trait]
impl Kv for RemoteKv {
    async fn range(&self, req: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        self.unary(KV_RANGE, req).await
    }

    async fn put(&self, req: PbPutRequest) -> Result<PbPutResponse, Status> {
        self.unary(KV_PUT, req).await
    }

    async fn delete_range(&self, req: PbDeleteRequest) -> Result<PbDeleteResponse, Status> {
        self.unary(KV_DELETE, req).await
    }

    async fn txn(&self, req: PbTxnRequest) -> Result<PbTxnResponse, Status> {
        self.unary(KV_TXN, req).await
    }

    async fn compact(&self, req: PbCompactionRequest) -> Result<PbCompactionResponse, Status> {
        self.unary(KV_COMPACT, req).await
    }

    async fn watch(&self, spec: WatchSpec) -> Result<WatchStream, Status> {
        let mut grpc = self.grpc().await?;
        // The request side stays open for as long as the caller reads: etcd keeps a watch only
        // while its stream lives, and dropping the returned stream ends the call.
        let requests = stream::once(async move { watch_create(&spec) }).chain(stream::pending());
        let responses = grpc
            .streaming(
                Request::new(requests),
                PathAndQuery::from_static(WATCH),
                ProstCodec::<WatchRequest, PbWatchResponse>::default(),
            )
            .await?
            .into_inner();
        // etcd keeps the gRPC stream open after it cancels the watch (a stream may carry other
        // watches); ours carries one, so it ends right after the `canceled` response.
        let until_canceled = responses.scan(false, |done, item| {
            if *done {
                return futures::future::ready(None);
            }
            *done = match &item {
                Ok(resp) => resp.canceled,
                Err(_) => true,
            };
            futures::future::ready(Some(item))
        });
        Ok(Box::pin(until_canceled))
    }

    async fn lease_grant(&self, req: PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse, Status> {
        self.unary(LEASE_GRANT, req).await
    }

    async fn lease_revoke(
        &self,
        req: PbLeaseRevokeRequest,
    ) -> Result<PbLeaseRevokeResponse, Status> {
        self.unary(LEASE_REVOKE, req).await
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<PbLeaseKeepAliveResponse, Status> {
        let mut grpc = self.grpc().await?;
        let requests = stream::once(async move { PbLeaseKeepAliveRequest { id } });
        let mut responses = grpc
            .streaming(
                Request::new(requests),
                PathAndQuery::from_static(LEASE_KEEP_ALIVE),
                ProstCodec::<PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse>::default(),
            )
            .await?
            .into_inner();
        match responses.message().await? {
            Some(resp) => Ok(resp),
            None => Err(Status::unavailable(
                "etcd closed the keep-alive stream without an answer",
            )),
        }
    }

    async fn lease_time_to_live(
        &self,
        req: PbLeaseTimeToLiveRequest,
    ) -> Result<PbLeaseTimeToLiveResponse, Status> {
        self.unary(LEASE_TTL, req).await
    }
}
