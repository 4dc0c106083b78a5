//! Writing a bbolt database file, the format of etcd's backend and of `etcdctl snapshot save`.
//!
//! kybern's snapshots are bbolt files in etcd's layout, so that `etcdctl snapshot status` reads them
//! and etcd's own restore accepts them. The writer builds a fresh file in one pass: two meta pages,
//! an empty freelist, then for every bucket a B+tree of leaf pages (and branch pages above them
//! when a bucket spans several leaves), and last the root bucket's leaf listing the buckets.
//!
//! Format facts (bbolt, native little-endian on the machines etcd runs on): a page starts with a
//! 16-byte header (id u64, flags u16, count u16, overflow u32); leaf elements are 16 bytes
//! (flags u32, pos u32, ksize u32, vsize u32) and branch elements 16 bytes (pos u32, ksize u32,
//! pgid u64), `pos` counting from the element itself; a bucket's value in its parent is its root
//! page id and sequence (u64 each); a meta page holds magic, version 2, page size, flags, the root
//! bucket, the freelist page, the page count, the txid and an FNV-1a checksum of what precedes it.

use std::io::Write;

const PAGE: usize = 4096;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
const BUCKET_LEAF: u32 = 0x01;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;

/// A bucket to write: its name and its key/value pairs in ascending key order.
pub struct Bucket {
    pub name: Vec<u8>,
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Pages being laid out; page ids are positions in `pages` (each a multiple of PAGE long).
struct Pages {
    pages: Vec<u8>,
    next: u64,
}

impl Pages {
    /// Appends one node (leaf or branch) as a page, with overflow pages when it is larger.
    fn node(&mut self, flags: u16, count: usize, body: &[u8]) -> u64 {
        let id = self.next;
        let size = HEADER + body.len();
        let npages = size.div_ceil(PAGE).max(1);
        let mut page = vec![0u8; npages * PAGE];
        page[0..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&flags.to_le_bytes());
        page[10..12].copy_from_slice(&(count as u16).to_le_bytes());
        page[12..16].copy_from_slice(&((npages - 1) as u32).to_le_bytes());
        page[HEADER..size].copy_from_slice(body);
        self.pages.extend_from_slice(&page);
        self.next += npages as u64;
        id
    }

    /// Writes the leaves holding `items` (bucket flags per item) and the branches above them;
    /// returns the root page id.
    fn tree(&mut self, items: &[(Vec<u8>, Vec<u8>, u32)]) -> u64 {
        // Leaves: fill each up to a page (an item larger than a page gets a page of its own).
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        if items.is_empty() {
            level.push((Vec::new(), self.node(LEAF, 0, &[])));
        }
        let mut start = 0;
        while start < items.len() {
            let mut end = start;
            let mut size = HEADER;
            while end < items.len() {
                let (k, v, _) = &items[end];
                let add = ELEMENT + k.len() + v.len();
                if end > start && size + add > PAGE {
                    break;
                }
                size += add;
                end += 1;
            }
            let group = &items[start..end];
            let id = self.node(LEAF, group.len(), &leaf_body(group));
            level.push((group[0].0.clone(), id));
            start = end;
        }
        // Branches until one root remains.
        while level.len() > 1 {
            let mut upper = Vec::new();
            let mut start = 0;
            while start < level.len() {
                let mut end = start;
                let mut size = HEADER;
                while end < level.len() {
                    let add = ELEMENT + level[end].0.len();
                    if end > start + 1 && size + add > PAGE {
                        break;
                    }
                    size += add;
                    end += 1;
                }
                let group = &level[start..end];
                let id = self.node(BRANCH, group.len(), &branch_body(group));
                upper.push((group[0].0.clone(), id));
                start = end;
            }
            level = upper;
        }
        level[0].1
    }
}

fn leaf_body(items: &[(Vec<u8>, Vec<u8>, u32)]) -> Vec<u8> {
    let mut body = vec![0u8; items.len() * ELEMENT];
    for (i, (k, v, flags)) in items.iter().enumerate() {
        let pos = body.len() - i * ELEMENT;
        let e = &mut body[i * ELEMENT..(i + 1) * ELEMENT];
        e[0..4].copy_from_slice(&flags.to_le_bytes());
        e[4..8].copy_from_slice(&(pos as u32).to_le_bytes());
        e[8..12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        body.extend_from_slice(k);
        body.extend_from_slice(v);
    }
    body
}

fn branch_body(children: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut body = vec![0u8; children.len() * ELEMENT];
    for (i, (k, id)) in children.iter().enumerate() {
        let pos = body.len() - i * ELEMENT;
        let e = &mut body[i * ELEMENT..(i + 1) * ELEMENT];
        e[0..4].copy_from_slice(&(pos as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(k.len() as u32).to_le_bytes());
        e[8..16].copy_from_slice(&id.to_le_bytes());
        body.extend_from_slice(k);
    }
    body
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn meta_page(id: u64, root: u64, pages: u64, txid: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&VERSION.to_le_bytes());
    m.extend_from_slice(&(PAGE as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes()); // flags
    m.extend_from_slice(&root.to_le_bytes()); // root bucket: root page
    m.extend_from_slice(&0u64.to_le_bytes()); // root bucket: sequence
    m.extend_from_slice(&2u64.to_le_bytes()); // freelist page
    m.extend_from_slice(&pages.to_le_bytes()); // high water mark
    m.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv1a(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    let mut page = vec![0u8; PAGE];
    page[0..8].copy_from_slice(&id.to_le_bytes());
    page[8..10].copy_from_slice(&META.to_le_bytes());
    page[HEADER..HEADER + m.len()].copy_from_slice(&m);
    page
}

/// Writes a bbolt file holding `buckets` (names unique; each bucket's items sorted by key) to `w`.
pub fn write(mut buckets: Vec<Bucket>, w: &mut impl Write) -> std::io::Result<()> {
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    // Pages 0 and 1 are the metas, page 2 the (empty) freelist; nodes start at 3.
    let mut p = Pages {
        pages: Vec::new(),
        next: 3,
    };
    let mut roots = Vec::new();
    for b in &buckets {
        let items: Vec<_> = b
            .items
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), 0u32))
            .collect();
        let root = p.tree(&items);
        let mut header = root.to_le_bytes().to_vec();
        header.extend_from_slice(&0u64.to_le_bytes());
        roots.push((b.name.clone(), header, BUCKET_LEAF));
    }
    let root = p.tree(&roots);
    let total = p.next;
    w.write_all(&meta_page(0, root, total, 0))?;
    w.write_all(&meta_page(1, root, total, 1))?;
    let mut free = vec![0u8; PAGE];
    free[0..8].copy_from_slice(&2u64.to_le_bytes());
    free[8..10].copy_from_slice(&FREELIST.to_le_bytes());
    w.write_all(&free)?;
    w.write_all(&p.pages)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Reads every (key, value) of the tree rooted at `page` (test-only walker).
    fn walk(file: &[u8], page: u64, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let p = &file[page as usize * PAGE..];
        assert_eq!(le64(p, 0), page, "page id");
        let flags = u16::from_le_bytes([p[8], p[9]]);
        let count = u16::from_le_bytes([p[10], p[11]]) as usize;
        for i in 0..count {
            let e = HEADER + i * ELEMENT;
            if flags == LEAF {
                let pos = e + le32(p, e + 4) as usize;
                let (ks, vs) = (le32(p, e + 8) as usize, le32(p, e + 12) as usize);
                out.push((
                    p[pos..pos + ks].to_vec(),
                    p[pos + ks..pos + ks + vs].to_vec(),
                ));
            } else {
                assert_eq!(flags, BRANCH);
                walk(file, le64(p, e + 8), out);
            }
        }
    }

    #[test]
    fn metas_validate_and_trees_hold_every_item() {
        let items: Vec<_> = (0..5000u32)
            .map(|i| {
                (
                    format!("k{i:06}").into_bytes(),
                    vec![b'v'; (i % 300) as usize],
                )
            })
            .collect();
        let big = vec![(b"huge".to_vec(), vec![7u8; 3 * PAGE])];
        let mut file = Vec::new();
        write(
            vec![
                Bucket {
                    name: b"key".to_vec(),
                    items: items.clone(),
                },
                Bucket {
                    name: b"big".to_vec(),
                    items: big.clone(),
                },
                Bucket {
                    name: b"empty".to_vec(),
                    items: vec![],
                },
            ],
            &mut file,
        )
        .unwrap();
        assert_eq!(file.len() % PAGE, 0);
        for id in 0..2 {
            let m = &file[id * PAGE + HEADER..];
            assert_eq!(le32(m, 0), MAGIC);
            assert_eq!(fnv1a(&m[..56]), le64(m, 56));
            assert_eq!(le64(m, 40) as usize * PAGE, file.len());
        }
        let mut buckets = Vec::new();
        walk(&file, le64(&file[HEADER..], 16), &mut buckets);
        let names: Vec<_> = buckets.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            vec![b"big".to_vec(), b"empty".to_vec(), b"key".to_vec()]
        );
        let mut got = Vec::new();
        walk(&file, le64(&buckets[2].1, 0), &mut got);
        assert_eq!(got, items);
        let mut got = Vec::new();
        walk(&file, le64(&buckets[0].1, 0), &mut got);
        assert_eq!(got, big);
        let mut got = Vec::new();
        walk(&file, le64(&buckets[1].1, 0), &mut got);
        assert!(got.is_empty());
    }
}
