//! Small helpers over the `Kv` trait: keys, range ends, the one-key reads and conditional writes the
//! generic store is built from, and the mapping of store errors to API errors.

use apimachinery::ApiError;
use etcd_api::enums::{compare_result, compare_target};
use etcd_api::*;
use store::Kv;

/// The end of the range of every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A store error as an API error: compaction is 410 Expired, everything else 500.
pub fn store_err(s: tonic::Status) -> ApiError {
    let m = s.message();
    if m.contains("compacted") {
        ApiError::expired(format!(
            "The resourceVersion for the provided list is too old. ({m})"
        ))
    } else if m.contains("future revision") {
        ApiError::timeout(format!(
            "Too large resource version: the requested revision is newer than the store ({m})"
        ))
    } else {
        ApiError::internal(format!("store: {m}"))
    }
}

pub fn header_rev(h: &Option<PbResponseHeader>) -> i64 {
    h.as_ref().map(|h| h.revision).unwrap_or(0)
}

/// One key: its value and mod revision, or None; with the store's current revision.
pub async fn get(kv: &dyn Kv, key: &[u8]) -> Result<(Option<PbKeyValue>, i64), ApiError> {
    let r = kv
        .range(PbRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .map_err(store_err)?;
    let rev = header_rev(&r.header);
    Ok((r.kvs.into_iter().next(), rev))
}

fn cmp(key: &[u8], target: i32, result: i32, union: PbTargetUnion) -> PbCompare {
    PbCompare {
        result,
        target,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(union),
    }
}

fn put_op(key: &[u8], value: Vec<u8>, lease: i64) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            key: key.to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn txn_put_rev(r: &PbTxnResponse) -> i64 {
    for op in &r.responses {
        if let Some(PbTxnOpResponse::ResponsePut(p)) = &op.response {
            return header_rev(&p.header).max(header_rev(&r.header));
        }
    }
    header_rev(&r.header)
}

/// Writes `value` only if `key` does not exist; Some(revision) when written.
pub async fn create(kv: &dyn Kv, key: &[u8], value: Vec<u8>) -> Result<Option<i64>, ApiError> {
    create_with_lease(kv, key, value, 0).await
}

/// `create`, the key attached to `lease` (0: none).
pub async fn create_with_lease(
    kv: &dyn Kv,
    key: &[u8],
    value: Vec<u8>,
    lease: i64,
) -> Result<Option<i64>, ApiError> {
    let r = kv
        .txn(PbTxnRequest {
            compare: vec![cmp(
                key,
                compare_target::CREATE,
                compare_result::EQUAL,
                PbTargetUnion::CreateRevision(0),
            )],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        })
        .await
        .map_err(store_err)?;
    Ok(r.succeeded.then(|| txn_put_rev(&r)))
}

/// Writes `value` only if `key` was last modified at `mod_rev`; Some(revision) when written.
pub async fn update(
    kv: &dyn Kv,
    key: &[u8],
    mod_rev: i64,
    value: Vec<u8>,
) -> Result<Option<i64>, ApiError> {
    update_with_lease(kv, key, mod_rev, value, 0).await
}

/// `update`, the key attached to `lease` (0: none).
pub async fn update_with_lease(
    kv: &dyn Kv,
    key: &[u8],
    mod_rev: i64,
    value: Vec<u8>,
    lease: i64,
) -> Result<Option<i64>, ApiError> {
    let r = kv
        .txn(PbTxnRequest {
            compare: vec![cmp(
                key,
                compare_target::MOD,
                compare_result::EQUAL,
                PbTargetUnion::ModRevision(mod_rev),
            )],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        })
        .await
        .map_err(store_err)?;
    Ok(r.succeeded.then(|| txn_put_rev(&r)))
}

/// Deletes `key` only if it was last modified at `mod_rev`; Some(revision) when deleted.
pub async fn delete(kv: &dyn Kv, key: &[u8], mod_rev: i64) -> Result<Option<i64>, ApiError> {
    let r = kv
        .txn(PbTxnRequest {
            compare: vec![cmp(
                key,
                compare_target::MOD,
                compare_result::EQUAL,
                PbTargetUnion::ModRevision(mod_rev),
            )],
            success: vec![PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await
        .map_err(store_err)?;
    Ok(r.succeeded.then(|| header_rev(&r.header)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_ends() {
        assert_eq!(
            super::prefix_end(b"/registry/pods/"),
            b"/registry/pods0".to_vec()
        );
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
    }
}

/// Leases for objects that expire (events): one lease is shared by the writes of a minute, as
/// upstream's lease manager does, so a busy cluster does not hold a lease per event.
#[derive(Default)]
pub struct LeaseCache {
    cur: parking_lot::Mutex<Option<(i64, std::time::Instant)>>,
}

const LEASE_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

impl LeaseCache {
    /// A lease that lives at least `ttl` seconds from now.
    pub async fn lease(&self, kv: &dyn Kv, ttl: i64) -> Result<i64, ApiError> {
        if let Some((id, at)) = *self.cur.lock() {
            if at.elapsed() < LEASE_REUSE {
                return Ok(id);
            }
        }
        let r = kv
            .lease_grant(PbLeaseGrantRequest {
                ttl: ttl + LEASE_REUSE.as_secs() as i64,
                id: 0,
            })
            .await
            .map_err(store_err)?;
        *self.cur.lock() = Some((r.id, std::time::Instant::now()));
        Ok(r.id)
    }
}
