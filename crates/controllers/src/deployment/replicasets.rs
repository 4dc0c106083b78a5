//! The Deployment's ReplicaSets: finding and creating the new one, revisions, scaling one,
//! and cleaning up old ones past revisionHistoryLimit.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::info;

use super::util::*;
use super::{Sync, NAME};
use crate::util::{self as cu, Error};

impl Sync<'_> {
    /// The ReplicaSet whose template is the Deployment's (the oldest, if several).
    pub(crate) fn new_index(&self) -> Option<usize> {
        let t = &self.d.spec.as_ref()?.template;
        self.rss
            .iter()
            .enumerate()
            .filter(|(_, rs)| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|rt| same_template(rt, t))
            })
            .min_by_key(|(_, rs)| {
                (
                    rs.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    rs.metadata.name.clone(),
                )
            })
            .map(|(i, _)| i)
    }

    /// Every other ReplicaSet, oldest first.
    pub(crate) fn old_indices(&self, new: Option<usize>) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.rss.len()).filter(|i| Some(*i) != new).collect();
        v.sort_by_key(|i| {
            let m = &self.rss[*i].metadata;
            (
                m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
                m.name.clone(),
            )
        });
        v
    }

    /// Upstream's getAllReplicaSetsAndSyncRevision: the new ReplicaSet (created when `create`
    /// and missing) with its revision one past every old one, and the Deployment's revision
    /// annotation following it.
    pub(crate) async fn get_all(&mut self, create: bool) -> Result<Option<usize>, Error> {
        let new = self.new_index();
        let max_old = self
            .old_indices(new)
            .iter()
            .map(|i| revision(&self.rss[*i]))
            .max()
            .unwrap_or(0);
        let new_rev = max_old + 1;
        let idx = match new {
            Some(i) => {
                self.sync_new_annotations(i, new_rev).await?;
                Some(i)
            }
            None if create => Some(self.create_new(new_rev).await?),
            None => None,
        };
        if let Some(i) = idx {
            let rev = revision(&self.rss[i]).to_string();
            let cur = self
                .d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned();
            if cur.as_deref() != Some(rev.as_str()) {
                let body = json!({"metadata": {"annotations": {REVISION: rev}}});
                let d = self
                    .d_api
                    .patch(
                        cu::name(&self.d.metadata),
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await?;
                self.d.metadata = d.metadata;
            }
            let has_deadline = self
                .d
                .spec
                .as_ref()
                .and_then(|s| s.progress_deadline_seconds)
                .is_some();
            let st = self.d.status.get_or_insert_with(Default::default);
            if has_deadline && condition(st, "Progressing").is_none() {
                let name = cu::name(&self.rss[i].metadata).to_string();
                set_condition(
                    st,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{name}\""),
                    ),
                );
            }
        }
        Ok(idx)
    }

    /// Copies the Deployment's annotations and the revision onto the new ReplicaSet.
    async fn sync_new_annotations(&mut self, i: usize, new_rev: i64) -> Result<(), Error> {
        let rs = &self.rss[i];
        let mut patch = serde_json::Map::new();
        let have = rs.metadata.annotations.clone().unwrap_or_default();
        for (k, v) in copied_annotations(&self.d) {
            if have.get(&k) != Some(&v) {
                patch.insert(k, json!(v));
            }
        }
        let old_rev = revision(rs);
        if old_rev < new_rev {
            patch.insert(REVISION.into(), json!(new_rev.to_string()));
            if old_rev > 0 {
                let mut hist: Vec<String> = have
                    .get(REVISION_HISTORY)
                    .map(|h| h.split(',').map(String::from).collect())
                    .unwrap_or_default();
                hist.push(old_rev.to_string());
                patch.insert(REVISION_HISTORY.into(), json!(hist.join(",")));
            }
        }
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if patch.is_empty() && min_ready.unwrap_or(0) == rs_min_ready.unwrap_or(0) {
            return Ok(());
        }
        let body = json!({
            "metadata": {"annotations": patch, "resourceVersion": rs.metadata.resource_version},
            "spec": {"minReadySeconds": min_ready},
        });
        if old_rev < new_rev {
            info!(
                "{NAME}: Deployment {}: ReplicaSet {} is revision {new_rev}",
                self.key(),
                cu::name(&rs.metadata)
            );
        }
        let updated = self
            .rs_api
            .patch(
                cu::name(&rs.metadata),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await?;
        self.rss[i] = updated;
        Ok(())
    }

    /// Creates the ReplicaSet of the current template, sized by [`Self::new_rs_replicas`].
    async fn create_new(&mut self, new_rev: i64) -> Result<usize, Error> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = tm.labels.clone();
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut annotations = copied_annotations(&self.d);
        annotations.insert(REVISION.into(), new_rev.to_string());
        let want = replicas(&self.d);
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + max_surge(&self.d)).to_string());
        let name = format!("{}-{hash}", cu::name(&self.d.metadata));
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                labels,
                annotations: Some(annotations),
                owner_references: Some(vec![cu::controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(self.new_rs_replicas(None)?),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                info!(
                    "{NAME}: Deployment {}: created ReplicaSet {name} (revision {new_rev}, {} replicas)",
                    self.key(),
                    rs_replicas(&created)
                );
                if rs_replicas(&created) > 0 {
                    let msg = format!("Scaled up replica set {name} to {}", rs_replicas(&created));
                    crate::events::record(
                        &self.ctx.client,
                        NAME,
                        &self.d,
                        false,
                        "ScalingReplicaSet",
                        msg,
                    );
                }
                self.rss.push(created);
                let st = self.d.status.get_or_insert_with(Default::default);
                if spec.progress_deadline_seconds.is_some() {
                    set_condition(
                        st,
                        new_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            format!("Created new replica set \"{name}\""),
                        ),
                    );
                }
                Ok(self.rss.len() - 1)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours with the same template (a stale cache): use it; else a hash collision.
                let existing = self.rs_api.get(&name).await?;
                let ours = cu::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| same_template(t, &spec.template));
                if ours && same {
                    self.rss.push(existing);
                    return Ok(self.rss.len() - 1);
                }
                let mut st = self.d.status.clone().unwrap_or_default();
                st.collision_count = Some(collisions.unwrap_or(0) + 1);
                self.write_status(st).await?;
                Err(Error(anyhow::anyhow!(
                    "ReplicaSet {name} exists with another template: hash collision, retrying with collisionCount {}",
                    collisions.unwrap_or(0) + 1
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How many pods a ReplicaSet may be counted for: what it asks or what it still has.
    pub(crate) fn pods_of(&self, i: usize) -> i32 {
        rs_replicas(&self.rss[i]).max(rs_status(&self.rss[i]).0)
    }

    /// How many of its pods are available: reported, but never more than it keeps.
    pub(crate) fn available_of(&self, i: usize) -> i32 {
        rs_status(&self.rss[i]).2.min(rs_replicas(&self.rss[i]))
    }

    /// The new ReplicaSet's size for this step (upstream's NewRSNewReplicas).
    pub(crate) fn new_rs_replicas(&self, new: Option<usize>) -> Result<i32, Error> {
        let want = replicas(&self.d);
        if !is_rolling(&self.d) {
            return Ok(want);
        }
        let (surge, _) = fenceposts(&self.d)?;
        let current: i32 = (0..self.rss.len()).map(|i| self.pods_of(i)).sum();
        let new_size = new.map_or(0, |i| rs_replicas(&self.rss[i]));
        let max_total = want + surge;
        if current >= max_total {
            return Ok(new_size);
        }
        let up = (max_total - current).min(want - new_size);
        Ok(new_size + up.max(0))
    }

    /// Sets a ReplicaSet's size and its desired/max replica annotations; whether the size changed.
    pub(crate) async fn scale_rs(&mut self, i: usize, size: i32) -> Result<bool, Error> {
        let want = replicas(&self.d);
        let max = want + max_surge(&self.d);
        let rs = &self.rss[i];
        let from = rs_replicas(rs);
        let size_changes = from != size;
        let annotations_change = annotation_i32(rs, DESIRED_REPLICAS) != Some(want)
            || annotation_i32(rs, MAX_REPLICAS) != Some(max);
        if !size_changes && !annotations_change {
            return Ok(false);
        }
        let body = json!({
            "metadata": {
                "annotations": {DESIRED_REPLICAS: want.to_string(), MAX_REPLICAS: max.to_string()},
                "resourceVersion": rs.metadata.resource_version,
            },
            "spec": {"replicas": size},
        });
        let name = cu::name(&rs.metadata).to_string();
        let updated = self
            .rs_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        if size_changes {
            let msg = format!(
                "Scaled {} replica set {name} from {from} to {size}",
                if size > from { "up" } else { "down" }
            );
            crate::events::record(
                &self.ctx.client,
                NAME,
                &self.d,
                false,
                "ScalingReplicaSet",
                msg,
            );
            info!(
                "{NAME}: Deployment {}: scaled {} replica set {name} from {from} to {size}",
                self.key(),
                if size > from { "up" } else { "down" }
            );
        }
        self.rss[i] = updated;
        Ok(size_changes)
    }

    /// Deletes the oldest unused old ReplicaSets beyond revisionHistoryLimit.
    pub(crate) async fn cleanup(&mut self, new: Option<usize>) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = self
            .old_indices(new)
            .into_iter()
            .map(|i| &self.rss[i])
            .filter(|rs| {
                rs_replicas(rs) == 0
                    && rs_status(rs).0 == 0
                    && rs.metadata.deletion_timestamp.is_none()
                    && rs
                        .status
                        .as_ref()
                        .and_then(|s| s.observed_generation)
                        .unwrap_or(0)
                        >= rs.metadata.generation.unwrap_or(0)
            })
            .collect();
        let excess = cleanable.len() as i64 - limit.max(0) as i64;
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| {
            (
                revision(rs),
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            )
        });
        let doomed: Vec<String> = cleanable
            .iter()
            .take(excess as usize)
            .map(|rs| cu::name(&rs.metadata).to_string())
            .collect();
        for name in doomed {
            info!(
                "{NAME}: Deployment {}: deleting old ReplicaSet {name} (revisionHistoryLimit {limit})",
                self.key()
            );
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if cu::is_conflict_or_gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
            self.rss.retain(|rs| cu::name(&rs.metadata) != name);
        }
        Ok(())
    }
}
