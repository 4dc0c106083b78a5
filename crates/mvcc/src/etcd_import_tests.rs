//! Import of a real etcd 3.4 snapshot (testdata/make-etcd-snapshot.sh says what it holds), then
//! the restored store read back through `Store`, as the server reads it.

use std::sync::Arc;

use etcd_api::{PbPutRequest, PbRangeRequest};

use super::*;
use crate::bbolt::tests::SNAPSHOT;
use crate::snapshot::{restore, RestoreOptions, Restored};
use crate::{Op, OpResult, Store};

fn db() -> &'static [u8] {
    &SNAPSHOT[..SNAPSHOT.len() - 32]
}

/// What the fixture holds, as etcd answers it.
fn expected() -> Imported {
    Imported {
        revision: 130,
        compact_revision: 125,
        revisions: 127,
        // k/000..k/118, big, hist, leased
        live_keys: 122,
        leases: 1,
        notes: vec![],
    }
}

fn get(s: &Store, key: &str, rev: i64) -> Result<Vec<PbKeyValue>, tonic::Status> {
    s.range(&PbRangeRequest {
        key: key.into(),
        revision: rev,
        ..Default::default()
    })
    .map(|r| r.kvs)
}

#[test]
fn imports_history_compaction_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_eq!(import(db(), &data, "restored").unwrap(), expected());
    let s = Arc::new(Store::open(&data).unwrap());
    assert_eq!(s.revision(), 130);
    assert_eq!(s.compact_revision(), 125);

    // history above the compaction point, with etcd's revisions and versions
    let h = get(&s, "hist", 0).unwrap();
    assert_eq!(
        (
            h[0].value.as_slice(),
            h[0].create_revision,
            h[0].mod_revision,
            h[0].version
        ),
        (&b"h6"[..], 123, 130, 6)
    );
    assert_eq!(get(&s, "hist", 125).unwrap()[0].value, b"h3");
    assert_eq!(get(&s, "hist", 126).unwrap()[0].value, b"h4");
    let e = get(&s, "hist", 124).unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // a deletion, seen from before and after it
    assert_eq!(get(&s, "k/119", 127).unwrap()[0].mod_revision, 121);
    assert!(get(&s, "k/119", 0).unwrap().is_empty());
    assert_eq!(get(&s, "big", 0).unwrap()[0].value.len(), 10_000);
    let all = s
        .range(&PbRangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.count, 122);

    // the lease, with its TTL and its key
    assert_eq!(s.lease_ids(), vec![0x1234]);
    let (_, ttl, keys) = s.lease_time_to_live(0x1234).unwrap();
    assert_eq!((ttl, keys), (3600, vec![b"leased".to_vec()]));
    assert_eq!(get(&s, "leased", 0).unwrap()[0].lease, 0x1234);

    // the events of the history, as a watch from the compaction point replays them
    let ev = s.events(126, 130).unwrap();
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[2].r#type, etcd_api::enums::event_type::DELETE);
    assert_eq!(ev[2].kv.as_ref().unwrap().mod_revision, 128);

    // and it takes writes at the next revision
    let r = s
        .apply(vec![Op::Put(PbPutRequest {
            key: b"after".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })])
        .unwrap();
    let Ok(OpResult::Put(p)) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(p.header.as_ref().unwrap().revision, 131);
    drop(s);
    let s = Store::open(&data).unwrap();
    assert_eq!((s.revision(), s.compact_revision()), (131, 125));
}

/// Rewrites a 17-byte revision value of the `meta` bucket (inline, so the bytes are in place).
fn set_meta_rev(d: &mut [u8], name: &[u8], main: u64) {
    let at = d
        .windows(name.len())
        .position(|w| w == name)
        .expect("meta key in the file")
        + name.len();
    d[at..at + 8].copy_from_slice(&main.to_be_bytes());
}

#[test]
fn a_scheduled_compaction_is_finished() {
    let mut d = db().to_vec();
    set_meta_rev(&mut d, b"scheduledCompactRev", 127);
    let dir = tempfile::tempdir().unwrap();
    let i = import(&d, &dir.path().join("d"), "x").unwrap();
    assert_eq!((i.compact_revision, i.revision), (127, 130));
    // hist at 125 and 126 are gone; h5 at 127 is the newest at the compaction point
    assert_eq!(i.revisions, 125);
    assert_eq!(i.notes.len(), 1, "{:?}", i.notes);
    let s = Store::open(&dir.path().join("d")).unwrap();
    assert!(get(&s, "hist", 126).is_err());
    assert_eq!(get(&s, "hist", 127).unwrap()[0].value, b"h5");
}

#[test]
fn restore_checks_the_hash_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    std::fs::write(&file, SNAPSHOT).unwrap();
    let opts = RestoreOptions::default();
    let out = dir.path().join("ok");
    assert_eq!(
        restore(&file, &out, &opts).unwrap(),
        Restored::Etcd(expected())
    );

    // one byte changed in the database: refused, nothing created
    let mut bad = SNAPSHOT.to_vec();
    bad[5 * 4096 + 100] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    let target = dir.path().join("bad");
    let e = restore(&file, &target, &opts).unwrap_err().to_string();
    assert!(e.contains("snapshot hash mismatch"), "{e}");
    assert!(!target.exists());

    // a bare db file (no hash): etcd's refusal, unless the check is skipped
    std::fs::write(&file, db()).unwrap();
    let e = restore(&file, &target, &opts).unwrap_err().to_string();
    assert!(
        e.contains("snapshot missing hash but --skip-hash-check=false"),
        "{e}"
    );
    assert!(!target.exists());
    let skip = RestoreOptions {
        skip_hash_check: true,
        ..Default::default()
    };
    assert_eq!(
        restore(&file, &target, &skip).unwrap(),
        Restored::Etcd(expected())
    );
    // the restored store refuses a second restore over it
    assert!(restore(&file, &target, &skip).is_err());
}

#[test]
fn a_bbolt_file_that_is_not_etcd_is_refused_untouched() {
    let mut d = db().to_vec();
    let bolt = Bolt::open(db()).unwrap();
    let root = bolt.meta().root as usize * 4096;
    let page = &mut d[root..root + 4096];
    let at = page.windows(3).position(|w| w == b"key").unwrap();
    page[at + 2] = b'z';
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let e = import(&d, &target, "x").unwrap_err().to_string();
    assert!(e.contains("not an etcd v3 backend"), "{e}");
    assert!(!target.exists());
}

/// Everything an import checks before it writes.
fn check(d: &[u8]) -> Result<Imported, Error> {
    let bolt = Bolt::open(d)?;
    let be = Backend::read(&bolt)?;
    Ok(plan(&be)?.imported)
}

#[test]
fn random_damage_is_an_error_or_a_consistent_import_never_a_panic() {
    assert_eq!(check(db()).unwrap(), expected());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut refused = 0;
    for _ in 0..2000 {
        let mut d = db().to_vec();
        let at = 2 * 4096 + (next() as usize) % (d.len() - 2 * 4096);
        d[at] = next() as u8;
        if check(&d).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0);
}
