//! Leases in memory (the lessor): granted TTL, deadline and attached keys. Grants and revocations
//! are persisted by the apply path; deadlines are not (as in etcd, a restart renews every lease to
//! its full TTL).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
pub struct Lease {
    pub ttl: i64,
    pub deadline: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Lessor {
    pub leases: HashMap<i64, Lease>,
}

impl Lessor {
    pub fn grant(&mut self, id: i64, ttl: i64) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + Duration::from_secs(ttl as u64),
                keys: BTreeSet::new(),
            },
        );
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Renews the lease to its full TTL; None when it does not exist.
    pub fn renew(&mut self, id: i64) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        l.deadline = Instant::now() + Duration::from_secs(l.ttl as u64);
        Some(l.ttl)
    }

    /// (remaining seconds, granted TTL, keys)
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let l = self.leases.get(&id)?;
        let left = l.deadline.saturating_duration_since(Instant::now());
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((secs, l.ttl, l.keys.iter().cloned().collect()))
    }

    /// Leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        self.leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn ids(&self) -> Vec<i64> {
        // By expiry, as etcd lists them.
        let mut v: Vec<(std::time::Instant, i64)> = self
            .leases
            .iter()
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }
}
