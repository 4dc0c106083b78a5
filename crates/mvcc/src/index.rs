//! The in-memory key index (etcd's treeIndex): for every key, the revisions at which it changed, and
//! which of them were deletions. Values live in the backend, addressed by revision.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::rev::Rev;

#[derive(Clone, Debug, Default)]
pub struct KeyHistory {
    /// Ascending; `true` marks a tombstone (deletion).
    pub revs: Vec<(Rev, bool)>,
    /// Of the newest generation: 0 while the key is deleted.
    pub create_rev: i64,
    pub version: i64,
    pub lease: i64,
}

impl KeyHistory {
    /// The revision holding the key's value as of `at`, or None when absent then.
    pub fn at(&self, at: i64) -> Option<Rev> {
        let i = self.revs.partition_point(|(r, _)| r.main <= at);
        if i == 0 {
            return None;
        }
        let (r, tomb) = self.revs[i - 1];
        (!tomb).then_some(r)
    }

    pub fn live(&self) -> bool {
        self.create_rev != 0
    }
}

#[derive(Default)]
pub struct Index {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
}

/// The keys of `[key, end)` as etcd reads a range: empty `end` is the key alone, `[0]` is every key
/// from `key` on.
pub fn key_bounds<'a>(key: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(end))
    }
}

/// Whether `k` is in the range `[key, end)` (same conventions as `key_bounds`).
pub fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

impl Index {
    pub fn get(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys live at `at` in the range, with the revision of their value there, in key order.
    /// Stops after `limit` (0: no limit); the count is always complete.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        limit: usize,
    ) -> (Vec<(&[u8], Rev)>, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        if !end.is_empty() && end != [0] && end <= key {
            return (out, 0);
        }
        for (k, h) in self.keys.range::<[u8], _>(key_bounds(key, end)) {
            if let Some(r) = h.at(at) {
                count += 1;
                if limit == 0 || out.len() < limit {
                    out.push((k.as_slice(), r));
                }
            }
        }
        (out, count)
    }

    /// Live (newest generation) keys in the range, for deletes.
    pub fn live_keys(&self, key: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        if !end.is_empty() && end != [0] && end <= key {
            return Vec::new();
        }
        self.keys
            .range::<[u8], _>(key_bounds(key, end))
            .filter(|(_, h)| h.live())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records a put at `rev`; returns the new (create_rev, version) and the lease it replaced.
    pub fn put(&mut self, key: &[u8], rev: Rev, lease: i64) -> (i64, i64, i64) {
        let h = self.keys.entry(key.to_vec()).or_default();
        if !h.live() {
            h.create_rev = rev.main;
            h.version = 0;
            h.lease = 0;
        }
        h.version += 1;
        h.revs.push((rev, false));
        let old_lease = std::mem::replace(&mut h.lease, lease);
        (h.create_rev, h.version, old_lease)
    }

    /// Records a deletion; returns the lease the key was attached to.
    pub fn tombstone(&mut self, key: &[u8], rev: Rev) -> i64 {
        let Some(h) = self.keys.get_mut(key) else {
            return 0;
        };
        h.revs.push((rev, true));
        h.create_rev = 0;
        h.version = 0;
        std::mem::take(&mut h.lease)
    }

    /// Rebuilds one entry while loading the backend (revisions arrive in order).
    pub fn restore(
        &mut self,
        key: &[u8],
        rev: Rev,
        tomb: bool,
        create_rev: i64,
        version: i64,
        lease: i64,
    ) {
        let h = self.keys.entry(key.to_vec()).or_default();
        h.revs.push((rev, tomb));
        if tomb {
            h.create_rev = 0;
            h.version = 0;
            h.lease = 0;
        } else {
            h.create_rev = create_rev;
            h.version = version;
            h.lease = lease;
        }
    }

    /// Drops what a compaction at `at` makes unreachable: for each key every revision at or below
    /// `at` but the newest one, and that one too when it is a deletion. Returns the dropped revisions.
    pub fn compact(&mut self, at: i64) -> Vec<Rev> {
        let mut dropped = Vec::new();
        self.keys.retain(|_, h| {
            let n = h.revs.partition_point(|(r, _)| r.main <= at);
            if n == 0 {
                return true;
            }
            let keep_last = !h.revs[n - 1].1;
            let cut = if keep_last { n - 1 } else { n };
            dropped.extend(h.revs.drain(..cut).map(|(r, _)| r));
            !h.revs.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_compaction() {
        let mut ix = Index::default();
        ix.put(b"a", Rev::new(2, 0), 0);
        ix.put(b"a", Rev::new(3, 0), 0);
        ix.tombstone(b"a", Rev::new(4, 0));
        ix.put(b"b", Rev::new(4, 1), 0);
        assert_eq!(ix.get(b"a").unwrap().at(3), Some(Rev::new(3, 0)));
        assert_eq!(ix.get(b"a").unwrap().at(4), None);
        assert_eq!(ix.range(b"a", &[0], 4, 0).1, 1);
        assert_eq!(ix.range(b"a", &[0], 3, 0).1, 1);
        let (create, ver, _) = ix.put(b"a", Rev::new(5, 0), 0);
        assert_eq!((create, ver), (5, 1));
        let dropped = ix.compact(4);
        assert_eq!(
            dropped,
            vec![Rev::new(2, 0), Rev::new(3, 0), Rev::new(4, 0)]
        );
        assert_eq!(ix.get(b"a").unwrap().revs.len(), 1);
        assert_eq!(ix.get(b"b").unwrap().at(4), Some(Rev::new(4, 1)));
    }

    #[test]
    fn range_end_before_key_is_empty() {
        let mut ix = Index::default();
        ix.put(b"m", Rev::new(2, 0), 0);
        assert_eq!(ix.range(b"z", b"a", 2, 0).1, 0);
        assert!(ix.live_keys(b"z", b"a").is_empty());
    }
}
