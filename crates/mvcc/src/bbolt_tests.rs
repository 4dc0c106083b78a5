//! The reader on a real etcd 3.4 snapshot (see testdata/make-etcd-snapshot.sh for its content)
//! and on damaged copies of it.

use super::*;

/// `etcdctl snapshot save` output: the bbolt file and its SHA-256.
pub(crate) const SNAPSHOT: &[u8] = include_bytes!("../testdata/etcd-3.4-snapshot.db");

fn db() -> &'static [u8] {
    &SNAPSHOT[..SNAPSHOT.len() - 32]
}

fn names(bolt: &Bolt, b: Bucket) -> Vec<String> {
    let mut out = Vec::new();
    bolt.for_each(b, |k, _| -> Result<(), BoltError> {
        out.push(String::from_utf8_lossy(k).into_owned());
        Ok(())
    })
    .unwrap();
    out
}

fn entries<'a>(bolt: &Bolt<'a>, b: Bucket<'a>) -> Vec<(&'a [u8], Entry<'a>)> {
    let mut out = Vec::new();
    bolt.for_each(b, |k, e| -> Result<(), BoltError> {
        out.push((k, e));
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn reads_the_meta_and_the_top_level_buckets() {
    assert!(looks_like_bolt(SNAPSHOT));
    let bolt = Bolt::open(SNAPSHOT).unwrap();
    assert_eq!(bolt.meta().page_size, 4096);
    assert_eq!(bolt.size(), db().len());
    let top = names(&bolt, bolt.root());
    for b in [
        "alarm", "auth", "cluster", "key", "lease", "members", "meta",
    ] {
        assert!(top.contains(&b.to_string()), "{b} missing from {top:?}");
    }
    let mut sorted = top.clone();
    sorted.sort();
    assert_eq!(top, sorted, "buckets in key order");
    // a value where a bucket is asked for is an error, an absent bucket is None
    assert!(bolt.bucket(bolt.root(), b"nope").unwrap().is_none());
}

#[test]
fn the_key_bucket_spans_branch_and_leaf_pages_in_order() {
    let bolt = Bolt::open(db()).unwrap();
    let Some(Bucket::Paged(root)) = bolt.bucket(bolt.root(), b"key").unwrap() else {
        panic!("key bucket is not paged");
    };
    assert_eq!(bolt.page(root).unwrap().flags, BRANCH_PAGE);
    let keys = entries(&bolt, Bucket::Paged(root));
    // revisions 2..=130 but 123 and 124, dropped by the compaction at 125
    assert_eq!(keys.len(), 127);
    assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
    let first = keys[0].0;
    assert_eq!(&first[..8], &2u64.to_be_bytes());
    assert_eq!(first[8], b'_');
    // the deletion of k/119 at 128 is marked with a trailing 't'
    let tomb: Vec<_> = keys.iter().filter(|(k, _)| k.len() == 18).collect();
    assert_eq!(tomb.len(), 1);
    assert_eq!(&tomb[0].0[..8], &128u64.to_be_bytes());
    assert_eq!(tomb[0].0[17], b't');
}

#[test]
fn a_value_larger_than_a_page_is_read_from_overflow_pages() {
    let bolt = Bolt::open(db()).unwrap();
    let keys = bolt.bucket(bolt.root(), b"key").unwrap().unwrap();
    let big = entries(&bolt, keys)
        .into_iter()
        .find(|(k, _)| k[..8] == 122u64.to_be_bytes())
        .unwrap();
    let Entry::Value(v) = big.1 else {
        panic!("not a value")
    };
    assert!(v.len() > 10_000 && v.len() > 2 * 4096);
    let bs = v.windows(10_000).any(|w| w.iter().all(|&c| c == b'b'));
    assert!(bs, "the 10,000-byte value is whole");
}

#[test]
fn small_buckets_are_read_inline() {
    let bolt = Bolt::open(db()).unwrap();
    let lease = bolt.bucket(bolt.root(), b"lease").unwrap().unwrap();
    assert!(matches!(lease, Bucket::Inline(_)), "{lease:?}");
    let l = entries(&bolt, lease);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0, 0x1234i64.to_be_bytes());
    let meta = bolt.bucket(bolt.root(), b"meta").unwrap().unwrap();
    assert!(matches!(meta, Bucket::Inline(_)));
    let Some(Entry::Value(v)) = bolt.get(meta, b"finishedCompactRev").unwrap() else {
        panic!("no finishedCompactRev")
    };
    assert_eq!(&v[..8], &125u64.to_be_bytes());
    // an empty bucket is an inline page with no elements
    let removed = bolt
        .bucket(bolt.root(), b"members_removed")
        .unwrap()
        .unwrap();
    assert!(entries(&bolt, removed).is_empty());
}

#[test]
fn meta_zero_damaged_falls_back_to_meta_one() {
    let mut d = db().to_vec();
    d[PAGE_HEADER + 30] ^= 0xff; // inside meta 0's checksummed bytes
    let bolt = Bolt::open(&d).unwrap();
    assert_eq!(bolt.meta().txid + 1, Bolt::open(db()).unwrap().meta().txid);
    let good = Bolt::open(db()).unwrap();
    assert_eq!(names(&bolt, bolt.root()), names(&good, good.root()));
    // the magic of meta 0 gone too: still found through meta 1
    d[PAGE_HEADER] = 0;
    assert!(looks_like_bolt(&d));
    assert!(Bolt::open(&d).is_ok());
}

#[test]
fn refusals() {
    assert!(matches!(
        Bolt::open(b"this is not a snapshot"),
        Err(BoltError::NotBolt(_))
    ));
    assert!(matches!(Bolt::open(&[]), Err(BoltError::NotBolt(_))));
    // both metas damaged
    let mut d = db().to_vec();
    d[PAGE_HEADER + 30] ^= 0xff;
    d[4096 + PAGE_HEADER + 30] ^= 0xff;
    let e = Bolt::open(&d).err().unwrap();
    assert!(e.to_string().contains("no valid meta page"), "{e}");
    // truncated
    let e = Bolt::open(&db()[..db().len() - 4096]).err().unwrap();
    assert!(e.to_string().contains("truncated"), "{e}");
    // big-endian
    let mut d = db().to_vec();
    d[PAGE_HEADER..PAGE_HEADER + 4].copy_from_slice(&MAGIC.to_be_bytes());
    assert!(Bolt::open(&d)
        .err()
        .unwrap()
        .to_string()
        .contains("big-endian"));
}

#[test]
fn a_cycle_or_a_misplaced_page_is_an_error() {
    let bolt = Bolt::open(db()).unwrap();
    let Some(Bucket::Paged(root)) = bolt.bucket(bolt.root(), b"key").unwrap() else {
        panic!()
    };
    // the branch's first child is the branch itself
    let mut d = db().to_vec();
    let child = root as usize * 4096 + PAGE_HEADER + 8;
    d[child..child + 8].copy_from_slice(&root.to_le_bytes());
    let bolt = Bolt::open(&d).unwrap();
    let e = bolt
        .for_each(Bucket::Paged(root), |_, _| -> Result<(), BoltError> {
            Ok(())
        })
        .unwrap_err();
    assert!(e.to_string().contains("reachable twice"), "{e}");
    // a child beyond the high-water mark
    d[child..child + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let bolt = Bolt::open(&d).unwrap();
    let e = bolt
        .for_each(Bucket::Paged(root), |_, _| -> Result<(), BoltError> {
            Ok(())
        })
        .unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

/// Reads every bucket and value, nested buckets included; any error is fine, a panic is not.
fn read_all(d: &[u8]) -> Result<usize, BoltError> {
    let bolt = Bolt::open(d)?;
    let mut stack = vec![bolt.root()];
    let mut n = 0;
    let mut visited = 0;
    while let Some(b) = stack.pop() {
        visited += 1;
        bolt.for_each(b, |k, e| -> Result<(), BoltError> {
            n += k.len();
            match e {
                Entry::Bucket(b) => stack.push(b),
                Entry::Value(v) => n += v.len(),
            }
            Ok(())
        })?;
        if visited > 1_000 {
            return Err(BoltError::Damaged("too many buckets".into()));
        }
    }
    Ok(n)
}

#[test]
fn random_damage_never_panics() {
    assert!(read_all(db()).unwrap() > 10_000);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3000 {
        let mut d = db().to_vec();
        for _ in 0..1 + next() % 8 {
            let at = (next() as usize) % d.len();
            // the first rounds aim at page headers and element tables, where offsets live
            let at = if round % 2 == 0 {
                at - at % 4096 + (at % 64)
            } else {
                at
            };
            d[at] = next() as u8;
        }
        let _ = read_all(&d);
    }
}
