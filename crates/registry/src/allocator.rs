//! Service ClusterIP and NodePort allocation. Each allocated IP is an `IPAddress` object at
//! `/registry/ipaddresses/<ip>` (as upstream's 1.33 allocator keeps them) and each NodePort a key
//! under `/registry/kybern/nodeports/`; both are taken by a create-if-absent transaction, so several
//! API servers on one store never hand out the same one.

use std::net::Ipv4Addr;
use std::sync::Arc;

use apimachinery::{meta, ApiError, FieldError};
use async_trait::async_trait;
use serde_json::{json, Value};

use crate::kvutil;

/// What a resource's store does around writes beyond its strategy (allocation, release).
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before the first write of a new object (not called for dry runs).
    async fn before_create(&self, obj: &mut Value) -> Result<(), ApiError>;
    /// After a create failed: give back what `before_create` took.
    async fn undo_create(&self, obj: &Value);
    /// After the object left the store.
    async fn after_delete(&self, obj: &Value);
}

#[derive(Clone, Debug)]
pub struct Ipv4Range {
    pub base: u32,
    pub size: u32,
}

impl Ipv4Range {
    pub fn parse(cidr: &str) -> Result<Self, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{cidr:?}: bad IPv4 address"))?;
        let bits: u32 = bits.parse().map_err(|_| format!("{cidr:?}: bad prefix"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{cidr:?}: prefix must be /8 to /30"));
        }
        let size = 1u32 << (32 - bits);
        Ok(Ipv4Range {
            base: u32::from(ip) & !(size - 1),
            size,
        })
    }

    /// The n-th usable address (1 = the first after the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size - 1
    }
}

pub struct ServiceAllocator {
    pub kv: Arc<dyn store::Kv>,
    pub ips: Ipv4Range,
    pub node_ports: (u16, u16),
}

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn ip_invalid(obj: &Value, ip: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        meta::name(obj),
        vec![FieldError::invalid(
            "spec.clusterIPs",
            &json!([ip]),
            &format!("failed to allocate IP {ip}: {why}"),
        )],
    )
}

impl ServiceAllocator {
    fn ip_key(ip: &str) -> String {
        format!("/registry/ipaddresses/{ip}")
    }

    fn port_key(p: i64) -> String {
        format!("/registry/kybern/nodeports/{p}")
    }

    async fn take_ip(&self, ip: &str, obj: &Value) -> Result<bool, ApiError> {
        let rec = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
            "metadata": {"name": ip, "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"},
                "creationTimestamp": meta::now_rfc3339(), "uid": meta::new_uid()},
            "spec": {"parentRef": {"group": "", "resource": "services",
                "namespace": meta::namespace(obj), "name": meta::name(obj)}},
        });
        let v = serde_json::to_vec(&rec).expect("json");
        Ok(kvutil::create(&*self.kv, Self::ip_key(ip).as_bytes(), v)
            .await?
            .is_some())
    }

    async fn take_port(&self, p: i64, obj: &Value) -> Result<bool, ApiError> {
        let v = format!("{}/{}", meta::namespace(obj), meta::name(obj)).into_bytes();
        Ok(kvutil::create(&*self.kv, Self::port_key(p).as_bytes(), v)
            .await?
            .is_some())
    }

    async fn release_key(&self, key: String) {
        if let Ok((Some(kv), _)) = kvutil::get(&*self.kv, key.as_bytes()).await {
            let _ = kvutil::delete(&*self.kv, key.as_bytes(), kv.mod_revision).await;
        }
    }

    async fn allocate_ip(&self, obj: &mut Value) -> Result<(), ApiError> {
        let want = obj["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        if want == "None" || obj["spec"]["type"] == "ExternalName" {
            return Ok(());
        }
        let ip = if want.is_empty() {
            let usable = self.ips.size - 2;
            let mut got = None;
            for _ in 0..64 {
                // Skip .1: it is the `kubernetes` service's.
                let n = 2 + rand_u32() % (usable - 1);
                let cand = self.ips.nth(n).to_string();
                if self.take_ip(&cand, obj).await? {
                    got = Some(cand);
                    break;
                }
            }
            got.ok_or_else(|| ip_invalid(obj, "", "range is full"))?
        } else {
            let parsed: Ipv4Addr = want
                .parse()
                .map_err(|_| ip_invalid(obj, &want, "not a valid IPv4 address"))?;
            if !self.ips.contains(parsed) {
                return Err(ip_invalid(
                    obj,
                    &want,
                    "the provided IP is not in the valid range. The range of valid IPs is the service cluster IP range",
                ));
            }
            if !self.take_ip(&want, obj).await? {
                return Err(ip_invalid(obj, &want, "provided IP is already allocated"));
            }
            want
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
        Ok(())
    }

    async fn allocate_ports(&self, obj: &mut Value) -> Result<(), ApiError> {
        let t = obj["spec"]["type"].as_str().unwrap_or("");
        if t != "NodePort" && t != "LoadBalancer" {
            return Ok(());
        }
        let (lo, hi) = (self.node_ports.0 as i64, self.node_ports.1 as i64);
        let n = obj["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..n {
            let given = obj["spec"]["ports"][i]["nodePort"].as_i64();
            let port = match given {
                Some(p) => {
                    if !(lo..=hi).contains(&p) || !self.take_port(p, obj).await? {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            meta::name(obj),
                            vec![FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(p),
                                "provided port is already allocated",
                            )],
                        ));
                    }
                    p
                }
                None => {
                    let mut got = None;
                    for _ in 0..64 {
                        let p = lo + (rand_u32() as i64 % (hi - lo + 1));
                        if self.take_port(p, obj).await? {
                            got = Some(p);
                            break;
                        }
                    }
                    got.ok_or_else(|| ApiError::internal("no NodePort left to allocate"))?
                }
            };
            obj["spec"]["ports"][i]["nodePort"] = json!(port);
        }
        Ok(())
    }
}

#[async_trait]
impl Hooks for ServiceAllocator {
    async fn before_create(&self, obj: &mut Value) -> Result<(), ApiError> {
        self.allocate_ip(obj).await?;
        if let Err(e) = self.allocate_ports(obj).await {
            self.undo_create(obj).await;
            return Err(e);
        }
        Ok(())
    }

    async fn undo_create(&self, obj: &Value) {
        self.after_delete(obj).await
    }

    async fn after_delete(&self, obj: &Value) {
        if let Some(ip) = obj["spec"]["clusterIP"].as_str() {
            if ip != "None" && !ip.is_empty() {
                self.release_key(Self::ip_key(ip)).await;
            }
        }
        for p in obj["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_i64() {
                self.release_key(Self::port_key(np)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = Ipv4Range::parse("10.96.0.0/12").unwrap();
        assert_eq!(r.nth(1).to_string(), "10.96.0.1");
        assert!(r.contains("10.100.3.4".parse().unwrap()));
        assert!(!r.contains("10.112.0.1".parse().unwrap()));
        assert!(Ipv4Range::parse("10.0.0.0").is_err());
    }
}
