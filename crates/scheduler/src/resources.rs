//! Resource quantities and a pod's requests, computed as upstream's resource helpers do: the sum of
//! the app containers (and of restartable init containers, the sidecars), or the largest init
//! container step if that is more, plus the pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What the scheduler counts for a pod or a node: milli-CPU, bytes of memory, number of pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.pods = self.pods.saturating_add(o.pods);
    }
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.pods = self.pods.saturating_sub(o.pods);
    }
    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }
}

/// Upstream's defaults for a container without a request, used in scoring only (so that pods
/// without requests still spread): 100m CPU and 200 MiB.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Parses a Kubernetes quantity ("100m", "1.5", "2Gi", "1e3", "500M") into thousandths of its
/// unit, rounded up as upstream's `MilliValue` does. None when it is not a quantity.
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let (sign, rest) = match q.as_bytes()[0] {
        b'-' => (-1i128, &q[1..]),
        b'+' => (1, &q[1..]),
        _ => (1, q),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.len() + frac_part.len() > 30 {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa * 10^-frac * multiplier; computed as a ratio num/den, times 1000.
    let mut scale10: i32 = -(frac_part.len() as i32) + 3;
    let mut bin: u32 = 0;
    match suffix {
        "" => {}
        "n" => scale10 -= 9,
        "u" => scale10 -= 6,
        "m" => scale10 -= 3,
        "k" => scale10 += 3,
        "M" => scale10 += 6,
        "G" => scale10 += 9,
        "T" => scale10 += 12,
        "P" => scale10 += 15,
        "E" => scale10 += 18,
        "Ki" => bin = 10,
        "Mi" => bin = 20,
        "Gi" => bin = 30,
        "Ti" => bin = 40,
        "Pi" => bin = 50,
        "Ei" => bin = 60,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().ok()?;
            if !(-30..=30).contains(&e) {
                return None;
            }
            scale10 += e;
        }
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128.checked_shl(bin)?)?;
    if scale10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(scale10 as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-scale10) as u32)?;
        v = v / d + i128::from(v % d != 0); // round up
    }
    Some(sign * v)
}

/// Milli-CPU of a quantity (0 when unparsable, saturating at i64).
pub fn milli_cpu(q: &Quantity) -> i64 {
    clamp(parse_milli(&q.0).unwrap_or(0))
}

/// Whole units of a quantity, rounded up (bytes of memory, number of pods).
pub fn value(q: &Quantity) -> i64 {
    let m = parse_milli(&q.0).unwrap_or(0);
    clamp(if m >= 0 { (m + 999) / 1000 } else { m / 1000 })
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn from_list(list: Option<&BTreeMap<String, Quantity>>, non_zero: bool) -> Resources {
    let get = |k: &str| list.and_then(|l| l.get(k));
    let mut r = Resources {
        milli_cpu: get("cpu").map(milli_cpu).unwrap_or(0),
        memory: get("memory").map(value).unwrap_or(0),
        pods: 0,
    };
    if non_zero {
        if get("cpu").is_none() {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if get("memory").is_none() {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    from_list(
        c.resources.as_ref().and_then(|r| r.requests.as_ref()),
        non_zero,
    )
}

/// The pod's requests (pods = 1). With `non_zero`, a container without a cpu or memory request
/// counts upstream's defaults, as the scoring plugins do.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        let step = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            sidecars
        } else {
            let mut s = r;
            s.add(&sidecars);
            s
        };
        init_max.max(&step);
    }
    reqs.max(&init_max);
    if let Some(o) = spec.overhead.as_ref() {
        reqs.add(&from_list(Some(o), false));
    }
    reqs.pods = 1;
    reqs
}

/// A node's allocatable (its capacity when allocatable is absent).
pub fn node_allocatable(node: &k8s_openapi::api::core::v1::Node) -> Resources {
    let st = node.status.as_ref();
    let list = st
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| st.and_then(|s| s.capacity.as_ref()));
    let mut r = from_list(list, false);
    r.pods = list.and_then(|l| l.get("pods")).map(value).unwrap_or(0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2Gi"), Some(2 * 1024 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("500M"), Some(500_000_000_000));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("abc"), None);
        assert_eq!(parse_milli("1Zi"), None);
        assert_eq!(parse_milli(""), None);
        assert_eq!(value(&Quantity("1.5".into())), 2);
        assert_eq!(milli_cpu(&Quantity("0.25".into())), 250);
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn requests_as_upstream() {
        let p = pod(serde_json::json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}],
            "overhead": {"cpu": "10m"}}}));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 1 << 30);
        let nz = pod_requests(&p, true);
        assert_eq!(nz.memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
        // A sidecar adds to the app containers and to later init steps.
        let p = pod(serde_json::json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "120m"}}}]}}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 170);
    }
}
