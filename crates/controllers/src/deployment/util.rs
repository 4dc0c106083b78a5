//! Deployment arithmetic and bookkeeping, as upstream's deployment/util: surge and
//! unavailability fenceposts, template hashes, revision and replica annotations, conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::util::{scaled_value, time_now};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations of a Deployment never copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// (maxSurge, maxUnavailable) resolved against spec.replicas: surge rounds up, unavailability
/// down, and both zero becomes unavailability 1 (upstream's ResolveFenceposts).
pub fn fenceposts(d: &Deployment) -> anyhow::Result<(i32, i32)> {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let want = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), want, true, "25%")?;
    let unavailable = scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        want,
        false,
        "25%",
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).map(|f| f.0).unwrap_or(0)
}

/// How many pods may be unavailable during the update (0 for Recreate or no replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let want = replicas(d);
    if !is_rolling(d) || want == 0 {
        return 0;
    }
    fenceposts(d).map(|f| f.1.min(want)).unwrap_or(0)
}

/// The template without the pod-template-hash label (what "same template" compares).
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
    }
    serde_json::to_value(&t).unwrap_or_default()
}

pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The pod-template-hash of a template and collision count: FNV-1a (32 bit) over the template's
/// canonical JSON and the count, its decimal digits spelled in upstream's safe alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u32;
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(without_hash(t).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| SAFE[b as usize % SAFE.len()] as char)
        .collect()
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The Deployment's annotations a ReplicaSet carries.
pub fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
}

pub fn condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == t)
}

pub fn new_condition(t: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(time_now()),
        last_update_time: Some(time_now()),
    }
}

/// Sets a condition (upstream's SetDeploymentCondition): no change when status and reason are
/// the same; the transition time is kept when only the reason changes.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

pub fn remove_condition(s: &mut DeploymentStatus, t: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|x| x.type_ != t);
    }
}

/// Every replica updated, available and no old ones left (upstream's DeploymentComplete).
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether the new status shows progress over the old one (upstream's DeploymentProgressing).
pub fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Seconds until the progress deadline passes (negative: passed); None without a deadline or
/// when the rollout already completed or timed out.
pub fn deadline_in(d: &Deployment, s: &DeploymentStatus) -> Option<i64> {
    let deadline = d.spec.as_ref()?.progress_deadline_seconds?;
    let c = condition(s, "Progressing")?;
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") | Some("ProgressDeadlineExceeded") => return None,
        Some("DeploymentPaused") => return None,
        _ => {}
    }
    let from = c.last_update_time.as_ref()?.0.as_second();
    Some(from + deadline as i64 - crate::util::now().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn dep(replicas: i32, surge: IntOrString, unavail: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavail),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(fenceposts(&dep(10, s("25%"), s("25%"))).unwrap(), (3, 2));
        assert_eq!(fenceposts(&dep(1, s("25%"), s("25%"))).unwrap(), (1, 0));
        assert_eq!(
            fenceposts(&dep(3, IntOrString::Int(0), IntOrString::Int(0))).unwrap(),
            (0, 1)
        );
        assert_eq!(
            max_unavailable(&dep(2, IntOrString::Int(0), IntOrString::Int(5))),
            2
        );
    }

    #[test]
    fn hash_ignores_its_own_label_and_uses_the_safe_alphabet() {
        let mut t = PodTemplateSpec {
            metadata: Some(Default::default()),
            ..Default::default()
        };
        let h = template_hash(&t, None);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        t.metadata.as_mut().unwrap().labels =
            Some([(HASH_LABEL.to_string(), h.clone())].into_iter().collect());
        assert_eq!(template_hash(&t, None), h);
        assert_ne!(template_hash(&t, Some(1)), h);
    }
}
