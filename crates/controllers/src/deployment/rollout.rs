//! The rollout strategies (RollingUpdate, Recreate) and proportional scaling.

use super::util::*;
use super::Sync;
use crate::util::{self as cu, Error};

impl Sync<'_> {
    /// One step of a rolling update: scale the new ReplicaSet up within maxSurge, else the old
    /// ones down within maxUnavailable, else clean up; then the status.
    pub(crate) async fn rollout_rolling(&mut self) -> Result<(), Error> {
        let new = self.get_all(true).await?;
        if let Some(n) = new {
            if self.reconcile_new(n).await? {
                return self.sync_status(Some(n), true).await;
            }
        }
        if self.reconcile_old(new).await? {
            return self.sync_status(new, true).await;
        }
        let st = self.calculate_status(new);
        let mut new = new;
        if complete(&self.d, &st) {
            self.cleanup(new).await?;
            new = self.new_index();
        }
        self.sync_status(new, true).await
    }

    /// Upstream's reconcileNewReplicaSet; whether it scaled.
    async fn reconcile_new(&mut self, n: usize) -> Result<bool, Error> {
        let want = replicas(&self.d);
        let cur = rs_replicas(&self.rss[n]);
        if cur == want {
            return Ok(false);
        }
        if cur > want {
            return self.scale_rs(n, want).await;
        }
        let size = self.new_rs_replicas(Some(n))?;
        self.scale_rs(n, size).await
    }

    /// Upstream's reconcileOldReplicaSets: scale old ReplicaSets down, unhealthy pods first,
    /// never below replicas - maxUnavailable available; whether it scaled.
    async fn reconcile_old(&mut self, new: Option<usize>) -> Result<bool, Error> {
        let old = self.old_indices(new);
        let old_pods: i32 = old.iter().map(|i| rs_replicas(&self.rss[*i])).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i32 = (0..self.rss.len()).map(|i| self.pods_of(i)).sum();
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = new.map_or(0, |i| rs_replicas(&self.rss[i]) - self.available_of(i));
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy replicas first: removing them costs no availability.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let r = rs_replicas(&self.rss[i]);
            let a = self.available_of(i);
            if r == 0 || r <= a {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(r - a);
            self.scale_rs(i, r - n).await?;
            cleaned += n;
        }
        // Then healthy ones, as far as availability allows.
        let available: i32 = (0..self.rss.len()).map(|i| self.available_of(i)).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &old {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(&self.rss[i]);
                if r == 0 {
                    continue;
                }
                let n = r.min(total - scaled);
                self.scale_rs(i, r - n).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Recreate: every old ReplicaSet to zero, wait until no old pod runs, then the new one up.
    pub(crate) async fn rollout_recreate(&mut self) -> Result<(), Error> {
        let new = self.get_all(false).await?;
        let mut scaled = false;
        for i in self.old_indices(new) {
            if rs_replicas(&self.rss[i]) > 0 {
                scaled |= self.scale_rs(i, 0).await?;
            }
        }
        if scaled || self.old_pods_running(new) {
            return self.sync_status(new, true).await;
        }
        let n = match new {
            Some(n) => n,
            None => match self.get_all(true).await? {
                Some(n) => n,
                None => return Ok(()),
            },
        };
        let want = replicas(&self.d);
        self.scale_rs(n, want).await?;
        let mut new = Some(n);
        if complete(&self.d, &self.calculate_status(new)) {
            self.cleanup(new).await?;
            new = self.new_index();
        }
        self.sync_status(new, true).await
    }

    /// Whether any pod of an old ReplicaSet is still there and not finished (terminating ones
    /// included), as upstream's oldPodsRunning.
    fn old_pods_running(&self, new: Option<usize>) -> bool {
        let old = self.old_indices(new);
        if old.iter().any(|i| rs_status(&self.rss[*i]).0 > 0) {
            return true;
        }
        let uids: Vec<&str> = old
            .iter()
            .map(|i| cu::uid(&self.rss[*i].metadata))
            .collect();
        self.ctx.pods.state().iter().any(|p| {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            phase != "Succeeded"
                && phase != "Failed"
                && cu::controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
        })
    }

    /// Upstream's scale: a single active ReplicaSet takes spec.replicas; a saturated new one
    /// retires the old; during a rolling update the difference is spread proportionally.
    pub(crate) async fn scale(&mut self, new: Option<usize>) -> Result<(), Error> {
        let want = replicas(&self.d);
        let old = self.old_indices(new);
        let mut active: Vec<usize> = old
            .iter()
            .copied()
            .chain(new)
            .filter(|i| rs_replicas(&self.rss[*i]) > 0)
            .collect();
        let target = match active.len() {
            0 => new.or(old.last().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(t) = target {
            self.scale_rs(t, want).await?;
            return Ok(());
        }
        if let Some(n) = new {
            let rs = &self.rss[n];
            let saturated = rs_replicas(rs) == want
                && annotation_i32(rs, DESIRED_REPLICAS) == Some(want)
                && rs_status(rs).2 == want;
            if saturated {
                for i in old {
                    if rs_replicas(&self.rss[i]) > 0 {
                        self.scale_rs(i, 0).await?;
                    }
                }
                return Ok(());
            }
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let total: i32 = active.iter().map(|i| rs_replicas(&self.rss[*i])).sum();
        let allowed = if want > 0 {
            want + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        // Larger first; newer first when growing, older first when shrinking.
        let created = |i: &usize| {
            self.rss[*i]
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        };
        if to_add > 0 {
            active.sort_by_key(|i| (-rs_replicas(&self.rss[*i]), -created(i)));
        } else {
            active.sort_by_key(|i| (-rs_replicas(&self.rss[*i]), created(i)));
        }
        let mut added = 0;
        let mut sizes = vec![];
        for &i in &active {
            let cur = rs_replicas(&self.rss[i]);
            let p = if to_add != 0 {
                self.proportion(i, to_add, added)
            } else {
                0
            };
            added += p;
            sizes.push(cur + p);
        }
        for (k, &i) in active.iter().enumerate() {
            let mut size = sizes[k];
            if k == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(i, size).await?;
        }
        Ok(())
    }

    /// Upstream's GetProportion: this ReplicaSet's share of `to_add`, bounded by what is left.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = &self.rss[i];
        let cur = rs_replicas(rs);
        let want = replicas(&self.d);
        let fraction = if want == 0 {
            -cur
        } else {
            let target = want + max_surge(&self.d);
            let annotated = annotation_i32(rs, MAX_REPLICAS)
                .or_else(|| self.d.status.as_ref().and_then(|s| s.replicas))
                .unwrap_or(0);
            if annotated == 0 {
                0
            } else {
                ((cur as f64 * target as f64) / annotated as f64).round() as i32 - cur
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }
}
