//! A linearizability checker for histories of key-value operations (Wing & Gong's search with
//! Lowe's memoization), over a model of independent registers: put, get and compare-and-set
//! (a txn comparing a key's value, then putting it). Linearizability is local, so each key's
//! history is checked on its own.
//!
//! Clients record every operation with when it was invoked and when it returned. An operation
//! whose outcome is unknown (a timeout, a dropped connection) never returned: it may take effect at
//! any point after its invocation, or never.

use std::collections::{BTreeMap, HashSet};

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A put of a value unique in the history.
    Put(String),
    /// A read and the value it returned (`None`: the key was absent).
    Get(Option<String>),
    /// A txn: if the key holds `expect`, put `new`; `succeeded` as answered (`None`: unknown).
    Cas {
        expect: Option<String>,
        new: String,
        succeeded: Option<bool>,
    },
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: Kind,
    /// Nanoseconds since the history started.
    pub invoke: u64,
    /// `None` when the outcome is unknown.
    pub ret: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "no linearization of the {} operations on key {:?}:",
            self.ops.len(),
            self.key
        )?;
        for o in &self.ops {
            let ret = o.ret.map_or("unknown".to_string(), |r| {
                format!("{:.3}ms", r as f64 / 1e6)
            });
            writeln!(
                f,
                "  client {} [{:.3}ms .. {ret}] {:?}",
                o.client,
                o.invoke as f64 / 1e6,
                o.kind
            )?;
        }
        Ok(())
    }
}

/// Checks every key's history; the first key without a linearization is the error.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for o in history {
        by_key.entry(&o.key).or_default().push(o.clone());
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            return Err(Violation {
                key: key.to_string(),
                ops,
            });
        }
    }
    Ok(())
}

/// One register's history (at most 128 operations).
fn linearizable(ops: &[Op]) -> bool {
    assert!(
        ops.len() <= 128,
        "the checker takes at most 128 operations per key"
    );
    let ret = |o: &Op| o.ret.unwrap_or(u64::MAX);
    let all: u128 = if ops.len() == 128 {
        u128::MAX
    } else {
        (1u128 << ops.len()) - 1
    };
    // Operations that must take effect: everything but unknown puts and CASes.
    let required: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ret.is_some())
        .fold(0, |m, (i, _)| m | (1 << i));
    let mut seen: HashSet<(u128, Option<String>)> = HashSet::new();
    // Depth-first search over (linearized set, register value).
    let mut stack: Vec<(u128, Option<String>)> = vec![(0, None)];
    while let Some((done, value)) = stack.pop() {
        if done & required == required {
            return true;
        }
        if !seen.insert((done, value.clone())) {
            continue;
        }
        let pending = all & !done;
        // The earliest return among pending operations bounds which may go next.
        let horizon = (0..ops.len())
            .filter(|i| pending & (1 << i) != 0)
            .map(|i| ret(&ops[i]))
            .min()
            .unwrap_or(u64::MAX);
        for (i, o) in ops.iter().enumerate() {
            if pending & (1 << i) == 0 || o.invoke > horizon {
                continue;
            }
            let next = done | (1 << i);
            match &o.kind {
                Kind::Put(v) => stack.push((next, Some(v.clone()))),
                Kind::Get(v) => {
                    if *v == value {
                        stack.push((next, value.clone()));
                    }
                }
                Kind::Cas {
                    expect,
                    new,
                    succeeded,
                } => {
                    let holds = *expect == value;
                    match succeeded {
                        Some(true) if holds => stack.push((next, Some(new.clone()))),
                        Some(false) if !holds => stack.push((next, value.clone())),
                        None if holds => stack.push((next, Some(new.clone()))),
                        None => stack.push((next, value.clone())),
                        _ => {}
                    }
                }
            }
            // An operation with an unknown outcome may also never take effect: skipping it is
            // covered because it is not required.
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, kind: Kind, invoke: u64, ret: Option<u64>) -> Op {
        Op {
            client,
            key: "k".into(),
            kind,
            invoke,
            ret,
        }
    }
    fn put(v: &str) -> Kind {
        Kind::Put(v.into())
    }
    fn get(v: Option<&str>) -> Kind {
        Kind::Get(v.map(Into::into))
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = vec![
            op(0, put("a"), 0, Some(10)),
            op(1, put("b"), 5, Some(15)),
            op(2, get(Some("a")), 12, Some(20)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            op(0, put("a"), 0, Some(10)),
            op(0, put("b"), 11, Some(20)),
            op(1, get(Some("a")), 21, Some(30)),
        ];
        let e = check(&h).unwrap_err();
        assert_eq!(e.key, "k");
        assert!(e.to_string().contains("no linearization"));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = vec![op(0, put("a"), 0, Some(10)), op(1, get(None), 20, Some(30))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_happen() {
        let happened = vec![
            op(0, put("a"), 0, None),
            op(1, get(Some("a")), 20, Some(30)),
        ];
        assert!(check(&happened).is_ok());
        let did_not = vec![op(0, put("a"), 0, None), op(1, get(None), 20, Some(30))];
        assert!(check(&did_not).is_ok());
        // But not before it was invoked.
        let too_early = vec![op(1, get(Some("a")), 0, Some(5)), op(0, put("a"), 10, None)];
        assert!(check(&too_early).is_err());
    }

    #[test]
    fn compare_and_set_follows_the_register() {
        let cas = |e: Option<&str>, n: &str, s| Kind::Cas {
            expect: e.map(Into::into),
            new: n.into(),
            succeeded: s,
        };
        let ok = vec![
            op(0, put("a"), 0, Some(10)),
            op(1, cas(Some("a"), "b", Some(true)), 11, Some(20)),
            op(2, cas(Some("a"), "c", Some(false)), 21, Some(30)),
            op(3, get(Some("b")), 31, Some(40)),
        ];
        assert!(check(&ok).is_ok());
        let bad = vec![
            op(0, put("a"), 0, Some(10)),
            op(1, cas(Some("z"), "b", Some(true)), 11, Some(20)),
        ];
        assert!(check(&bad).is_err());
    }
}
