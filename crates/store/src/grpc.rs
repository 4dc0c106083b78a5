//! The etcd v3 gRPC services as thin adapters over `Member`.

use std::sync::Arc;

use etcd_api::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Credentials;
use crate::kv::Kv;
use crate::member::Member;
use crate::raft::membership::Change;

type Answer<T> = Result<Response<T>, Status>;

#[derive(Clone)]
pub struct Services {
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl PbKvService for Services {
    async fn range(&self, r: Request<PbRangeRequest>) -> Answer<PbRangeResponse> {
        let c = Credentials::of(&r);
        self.member
            .range_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    type RangeStreamStream = ReceiverStream<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(&self, r: Request<PbRangeRequest>) -> Answer<Self::RangeStreamStream> {
        let c = Credentials::of(&r);
        let resp = self.member.range_as(r.into_inner(), Some(&c)).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(PbRangeStreamResponse {
                    range_response: Some(resp),
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn put(&self, r: Request<PbPutRequest>) -> Answer<PbPutResponse> {
        let c = Credentials::of(&r);
        self.member
            .put_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    async fn delete_range(&self, r: Request<PbDeleteRequest>) -> Answer<PbDeleteResponse> {
        let c = Credentials::of(&r);
        self.member
            .delete_range_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    async fn txn(&self, r: Request<PbTxnRequest>) -> Answer<PbTxnResponse> {
        let c = Credentials::of(&r);
        self.member
            .txn_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    async fn compact(&self, r: Request<PbCompactionRequest>) -> Answer<PbCompactionResponse> {
        let c = Credentials::of(&r);
        self.member
            .compact_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl PbLeaseService for Services {
    async fn lease_grant(&self, r: Request<PbLeaseGrantRequest>) -> Answer<PbLeaseGrantResponse> {
        let c = Credentials::of(&r);
        self.member
            .lease_grant_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    async fn lease_revoke(
        &self,
        r: Request<PbLeaseRevokeRequest>,
    ) -> Answer<PbLeaseRevokeResponse> {
        let c = Credentials::of(&r);
        self.member
            .lease_revoke_as(r.into_inner(), Some(&c))
            .await
            .map(Response::new)
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let mut input = r.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let m = self.member.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = input.next().await {
                let resp = Kv::lease_keep_alive(&*m, req.id).await;
                if tx.send(resp).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<PbLeaseTimeToLiveRequest>,
    ) -> Answer<PbLeaseTimeToLiveResponse> {
        Kv::lease_time_to_live(&*self.member, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_leases(
        &self,
        _: Request<PbLeaseLeasesRequest>,
    ) -> Answer<PbLeaseLeasesResponse> {
        let m = &self.member;
        let leases = m
            .store
            .lease_ids()
            .into_iter()
            .map(|id| PbLeaseStatus { id })
            .collect();
        Ok(Response::new(PbLeaseLeasesResponse {
            header: m.header(m.store.revision()),
            leases,
        }))
    }
}

impl Services {
    /// Membership changes, which etcd keeps to root users once auth is enabled.
    fn admin<T>(&self, r: &Request<T>) -> Result<(), Status> {
        self.member.authorize_admin(&Credentials::of(r)).map(|_| ())
    }

    /// Maintenance calls kept to root users; their refusals are the auth store's raw errors.
    fn maintenance_admin<T>(&self, r: &Request<T>) -> Result<(), Status> {
        self.admin(r).map_err(crate::auth::maintenance_error)
    }

    fn me(&self) -> PbMember {
        let s = &self.member.settings;
        PbMember {
            id: self.member.store.member_id,
            name: s.name.clone(),
            peer_ur_ls: s.peer_urls.clone(),
            client_ur_ls: s.client_urls.clone(),
            is_learner: false,
        }
    }
}

fn single_member_only() -> Status {
    Status::unimplemented(
        "kybern: membership changes need the replicated store; this member was started alone \
         (start members with an --initial-cluster of several members)",
    )
}

#[tonic::async_trait]
impl PbClusterService for Services {
    async fn member_add(&self, r: Request<PbMemberAddRequest>) -> Answer<PbMemberAddResponse> {
        self.admin(&r)?;
        let r = r.into_inner();
        let node = self.raft()?;
        for u in &r.peer_ur_ls {
            url::Url::parse(u).map_err(|e| {
                Status::invalid_argument(format!("etcdserver: invalid peer URL {u:?}: {e}"))
            })?;
        }
        let change = Change::Add {
            peer_urls: r.peer_ur_ls.clone(),
            learner: r.is_learner,
        };
        let id = node.change(change).await?;
        let members = self.members_after(|ms| ms.iter().any(|m| m.id == id)).await;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .unwrap_or(PbMember {
                id,
                peer_ur_ls: r.peer_ur_ls,
                is_learner: true,
                ..Default::default()
            });
        tracing::info!(member = %format!("{id:x}"), peer_urls = ?member.peer_ur_ls, learner = r.is_learner,
            "added a member as a learner; start it with --initial-cluster-state existing");
        Ok(Response::new(PbMemberAddResponse {
            header: self.member.header(0),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<PbMemberRemoveRequest>,
    ) -> Answer<PbMemberRemoveResponse> {
        self.admin(&r)?;
        let id = r.into_inner().id;
        self.raft()?.change(Change::Remove(id)).await?;
        tracing::info!(member = %format!("{id:x}"), "removed a member");
        let members = if id == self.member.store.member_id {
            // This member is not sent the change that removed it: answer with what it knows.
            self.members()
                .await
                .into_iter()
                .filter(|m| m.id != id)
                .collect()
        } else {
            self.members_after(|ms| ms.iter().all(|m| m.id != id)).await
        };
        Ok(Response::new(PbMemberRemoveResponse {
            header: self.member.header(0),
            members,
        }))
    }

    async fn member_update(
        &self,
        r: Request<PbMemberUpdateRequest>,
    ) -> Answer<PbMemberUpdateResponse> {
        self.admin(&r)?;
        let r = r.into_inner();
        let urls = r.peer_ur_ls.clone();
        self.raft()?
            .change(Change::Update {
                id: r.id,
                peer_urls: r.peer_ur_ls,
            })
            .await?;
        let members = self
            .members_after(|ms| ms.iter().any(|m| m.id == r.id && m.peer_ur_ls == urls))
            .await;
        Ok(Response::new(PbMemberUpdateResponse {
            header: self.member.header(0),
            members,
        }))
    }

    async fn member_promote(
        &self,
        r: Request<PbMemberPromoteRequest>,
    ) -> Answer<PbMemberPromoteResponse> {
        self.admin(&r)?;
        let id = r.into_inner().id;
        self.raft()?.change(Change::Promote(id)).await?;
        let members = self
            .members_after(|ms| ms.iter().any(|m| m.id == id && !m.is_learner))
            .await;
        Ok(Response::new(PbMemberPromoteResponse {
            header: self.member.header(0),
            members,
        }))
    }

    async fn member_list(&self, _: Request<PbMemberListRequest>) -> Answer<PbMemberListResponse> {
        Ok(Response::new(PbMemberListResponse {
            header: self.member.header(0), // etcd leaves the revision out of cluster answers
            members: self.members().await,
        }))
    }
}

impl Services {
    fn raft(&self) -> Result<&std::sync::Arc<crate::raft::node::RaftNode>, Status> {
        self.member.raft().ok_or_else(single_member_only)
    }

    async fn members(&self) -> Vec<PbMember> {
        let Some(node) = self.member.raft() else {
            return vec![self.me()];
        };
        let mut out = Vec::new();
        for (id, info, is_learner) in node.members() {
            let (name, client_urls) = node.info_of(id, &info).await;
            out.push(PbMember {
                id,
                name,
                peer_ur_ls: info.peer_urls,
                client_ur_ls: client_urls,
                is_learner,
            });
        }
        out
    }

    /// The member list once this member sees a change (a forwarded change reaches it a moment
    /// after the leader), or as it is after a short wait.
    async fn members_after(&self, seen: impl Fn(&[PbMember]) -> bool) -> Vec<PbMember> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let ms = self.members().await;
            if seen(&ms) || std::time::Instant::now() >= deadline {
                return ms;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl PbMaintenanceService for Services {
    async fn alarm(&self, r: Request<PbAlarmRequest>) -> Answer<PbAlarmResponse> {
        self.member.caller(&Credentials::of(&r))?;
        self.member.alarm(r.into_inner()).await.map(Response::new)
    }

    async fn status(&self, _: Request<PbStatusRequest>) -> Answer<PbStatusResponse> {
        let m = &self.member;
        let (db_size, in_use) = m.store.db_size();
        let rev = m.store.revision();
        let (index, applied) = m.raft_index();
        let leader = match m.raft() {
            Some(n) => n.leader().map_or(0, |(id, _)| id),
            None => m.store.member_id,
        };
        let errors = m
            .store
            .alarms()
            .iter()
            .map(|(id, a)| format!("memberID:{id} alarm:{} ", alarm_name(*a)))
            .collect();
        Ok(Response::new(PbStatusResponse {
            header: m.header(rev),
            version: ETCD_VERSION.into(),
            db_size,
            leader,
            raft_index: index,
            raft_term: m.term(),
            raft_applied_index: applied,
            errors,
            db_size_in_use: in_use,
            is_learner: false,
            db_size_quota: m.settings.quota.map_or(0, |q| q as i64),
            ..Default::default()
        }))
    }

    async fn defragment(&self, r: Request<PbDefragmentRequest>) -> Answer<PbDefragmentResponse> {
        self.maintenance_admin(&r)?;
        let m = self.member.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || m.store.defragment())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        tracing::info!(took = ?started.elapsed(), size = self.member.store.db_size().0, "defragmented the backend");
        Ok(Response::new(PbDefragmentResponse {
            header: self.member.header(self.member.store.revision()),
        }))
    }

    async fn hash(&self, r: Request<PbHashRequest>) -> Answer<PbHashResponse> {
        self.maintenance_admin(&r)?;
        let m = &self.member;
        let hash = m.store.hash()?;
        Ok(Response::new(PbHashResponse {
            header: m.header(m.store.revision()),
            hash,
        }))
    }

    async fn hash_kv(&self, r: Request<PbHashKvRequest>) -> Answer<PbHashKvResponse> {
        self.maintenance_admin(&r)?;
        let m = &self.member;
        let (hash, hash_revision, compact_revision) = m.store.hash_kv(r.into_inner().revision)?;
        Ok(Response::new(PbHashKvResponse {
            header: m.header(m.store.revision()),
            hash,
            // etcd answers -1 before any compaction.
            compact_revision: if compact_revision == 0 {
                -1
            } else {
                compact_revision
            },
            hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<PbSnapshotResponse, Status>>;

    async fn snapshot(&self, r: Request<PbSnapshotRequest>) -> Answer<Self::SnapshotStream> {
        self.maintenance_admin(&r)?;
        let m = self.member.clone();
        let dir = m
            .store
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let store = m.store.clone();
        let path = tokio::task::spawn_blocking(move || store.snapshot_to(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let res = async {
                let data = tokio::fs::read(&path).await?;
                let _ = tokio::fs::remove_file(&path).await;
                let total = data.len();
                let mut sent = 0;
                for chunk in data.chunks(32 * 1024) {
                    sent += chunk.len();
                    let resp = PbSnapshotResponse {
                        header: m.header(m.store.revision()),
                        remaining_bytes: (total - sent) as u64,
                        blob: chunk.to_vec(),
                        version: ETCD_VERSION.into(),
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
                tracing::info!(bytes = total, "sent snapshot");
                Ok::<_, std::io::Error>(())
            }
            .await;
            if let Err(e) = res {
                let _ = tx
                    .send(Err(Status::internal(format!("snapshot: {e}"))))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(&self, r: Request<PbMoveLeaderRequest>) -> Answer<PbMoveLeaderResponse> {
        let m = &self.member;
        if r.into_inner().target_id != m.store.member_id {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        Ok(Response::new(PbMoveLeaderResponse {
            header: m.header(m.store.revision()),
        }))
    }

    async fn downgrade(&self, _: Request<PbDowngradeRequest>) -> Answer<PbDowngradeResponse> {
        Err(Status::unimplemented("kybern: downgrade is not supported"))
    }
}

pub fn alarm_name(a: i32) -> &'static str {
    match a {
        enums::alarm_type::NOSPACE => "NOSPACE",
        enums::alarm_type::CORRUPT => "CORRUPT",
        _ => "NONE",
    }
}
