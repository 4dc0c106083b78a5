//! Request checks done before a write is accepted (etcd's v3rpc checks), and Txn compares.

use etcd_api::enums::{compare_result, compare_target, sort_order, sort_target};
use etcd_api::*;
use tonic::Status;

pub fn check_range(r: &PbRangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if !(sort_order::NONE..=sort_order::DESCEND).contains(&r.sort_order)
        || !(sort_target::KEY..=sort_target::VALUE).contains(&r.sort_target)
    {
        return Err(errors::invalid_sort_option());
    }
    Ok(())
}

pub fn check_put(r: &PbPutRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(errors::value_provided());
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(errors::lease_provided());
    }
    Ok(())
}

pub fn check_delete(r: &PbDeleteRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(())
}

pub fn check_txn(r: &PbTxnRequest, max_ops: usize) -> Result<(), Status> {
    if r.compare.len() > max_ops || r.success.len() > max_ops || r.failure.len() > max_ops {
        return Err(errors::too_many_ops());
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(errors::empty_key());
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(PbTxnOpRequest::RequestRange(x)) => check_range(x)?,
            Some(PbTxnOpRequest::RequestPut(x)) => check_put(x)?,
            Some(PbTxnOpRequest::RequestDeleteRange(x)) => check_delete(x)?,
            Some(PbTxnOpRequest::RequestTxn(x)) => check_txn(x, max_ops)?,
            None => return Err(errors::key_not_found()),
        }
    }
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// A deleted range `[key, end)`: `end` empty is the key alone, `None` is unbounded.
#[derive(Clone)]
struct Span {
    key: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    fn of(key: &[u8], end: &[u8]) -> Span {
        match end {
            [] => {
                let mut e = key.to_vec();
                e.push(0);
                Span {
                    key: key.to_vec(),
                    end: Some(e),
                }
            }
            [0] => Span {
                key: key.to_vec(),
                end: None,
            },
            _ => Span {
                key: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    fn contains(&self, k: &[u8]) -> bool {
        k >= self.key.as_slice() && self.end.as_deref().is_none_or(|e| k < e)
    }
}

/// etcd's duplicate-key rule: no key may be written twice in one branch (puts against puts and
/// deleted ranges, through nested txns; the two branches of a nested txn may share keys).
fn check_intervals(ops: &[PbTxnRequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Span>), Status> {
    let mut dels: Vec<Span> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => Some(Span::of(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: Vec<Vec<u8>> = Vec::new();
    let dup = || Err(errors::duplicate_key());
    for op in ops {
        let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return dup();
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || dels.iter().any(|d| d.contains(k)) {
                return dup();
            }
            if !puts.contains(k) {
                puts.push(k.clone());
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(PbTxnOpRequest::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.iter().any(|d| d.contains(&p.key)) {
            return dup();
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

/// One compare against one key's value (a missing key compares as the zero KeyValue).
pub fn compare_kv(c: &PbCompare, kv: &PbKeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match (c.target, &c.target_union) {
        (compare_target::VALUE, t) => {
            let v: &[u8] = match t {
                Some(PbTargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        (compare_target::CREATE, t) => kv.create_revision.cmp(&int_target(t)),
        (compare_target::MOD, t) => kv.mod_revision.cmp(&int_target(t)),
        (compare_target::VERSION, t) => kv.version.cmp(&int_target(t)),
        (compare_target::LEASE, t) => kv.lease.cmp(&int_target(t)),
        _ => Ordering::Equal,
    };
    match c.result {
        compare_result::EQUAL => ord == Ordering::Equal,
        compare_result::NOT_EQUAL => ord != Ordering::Equal,
        compare_result::GREATER => ord == Ordering::Greater,
        compare_result::LESS => ord == Ordering::Less,
        _ => true,
    }
}

fn int_target(t: &Option<PbTargetUnion>) -> i64 {
    match t {
        Some(PbTargetUnion::Version(v))
        | Some(PbTargetUnion::CreateRevision(v))
        | Some(PbTargetUnion::ModRevision(v))
        | Some(PbTargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

/// Whether a txn (including nested ones) writes anything.
pub fn txn_has_writes(r: &PbTxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .any(|op| match &op.request {
            Some(PbTxnOpRequest::RequestPut(_)) | Some(PbTxnOpRequest::RequestDeleteRange(_)) => {
                true
            }
            Some(PbTxnOpRequest::RequestTxn(t)) => txn_has_writes(t),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn duplicate_keys() {
        let t = |ops| PbTxnRequest {
            success: ops,
            ..Default::default()
        };
        assert!(check_txn(&t(vec![put("a"), put("a")]), 128).is_err());
        assert!(check_txn(&t(vec![put("b"), del("a", "c")]), 128).is_err());
        assert!(check_txn(&t(vec![del("a", "c"), del("b", "d")]), 128).is_ok());
        assert!(check_txn(&t(vec![put("a"), put("b")]), 128).is_ok());
        let nested = PbTxnRequest {
            success: vec![put("a")],
            failure: vec![put("a")],
            ..Default::default()
        };
        let op = PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(nested)),
        };
        assert!(check_txn(&t(vec![op.clone()]), 128).is_ok());
        assert!(check_txn(&t(vec![op, put("a")]), 128).is_err());
        assert!(check_txn(&t(vec![put("x"); 129]), 128).is_err());
    }
}
