//! A read-only reader of bbolt database files (the backend format of etcd), held in memory.
//!
//! Only what reading needs is implemented: the two meta pages (the valid one with the higher
//! transaction id wins), branch and leaf pages with their overflow pages, and buckets, stored
//! either in their own pages or inline in their parent's leaf. Every offset read from the file is
//! bounds-checked and every page is visited at most once per walk, so a damaged file gives an
//! error, never a panic or an endless loop. Integers are little-endian (bbolt writes the host's
//! order; files from big-endian hosts are refused as such).

use std::collections::HashSet;

/// The magic number at the start of each meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only file format version bbolt writes.
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
/// Bytes of the meta struct covered by its checksum (magic .. txid).
const META_SUMMED: usize = 56;

const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
/// Leaf element flag: the value is a nested bucket.
const BUCKET_LEAF: u32 = 0x01;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoltError {
    #[error("not a bbolt file: {0}")]
    NotBolt(String),
    #[error("damaged bbolt file: {0}")]
    Damaged(String),
}

fn damaged<T>(msg: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError::Damaged(msg.into()))
}

/// Page sizes tried for meta 1 when meta 0 is unreadable (bbolt uses the host's page size):
/// 1 KiB to 64 KiB.
fn page_sizes() -> impl Iterator<Item = usize> {
    (10..=16).map(|s| 1usize << s)
}

/// True when `data` starts like a bbolt file: a meta page's magic number where bbolt puts one.
pub fn looks_like_bolt(data: &[u8]) -> bool {
    u32_at(data, PAGE_HEADER) == Some(MAGIC)
        || page_sizes().any(|ps| u32_at(data, ps + PAGE_HEADER) == Some(MAGIC))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// 64-bit FNV-1a, the checksum of a meta page.
fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    /// Page of the root bucket (the bucket holding the top-level buckets).
    pub root: u64,
    /// High-water mark: pages at or above it are not part of the database.
    pub pgid: u64,
    pub txid: u64,
}

/// Reads and validates the meta at byte `off`; None when it is not a valid meta.
fn read_meta(data: &[u8], off: usize) -> Option<Meta> {
    let m = data.get(off + PAGE_HEADER..off + PAGE_HEADER + META_SUMMED + 8)?;
    if u16_at(data, off + 8)? != META_PAGE
        || u32_at(m, 0)? != MAGIC
        || u32_at(m, 4)? != VERSION
        || u64_at(m, META_SUMMED)? != fnv1a64(&m[..META_SUMMED])
    {
        return None;
    }
    Some(Meta {
        page_size: u32_at(m, 8)?,
        root: u64_at(m, 16)?,
        pgid: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// Where a bucket's tree starts: a page of the file, or a leaf page inline in its parent's value.
#[derive(Clone, Copy, Debug)]
pub enum Bucket<'a> {
    Paged(u64),
    Inline(&'a [u8]),
}

/// One leaf entry of a bucket.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    Value(&'a [u8]),
    Bucket(Bucket<'a>),
}

/// A bbolt database file's content.
pub struct Bolt<'a> {
    data: &'a [u8],
    page_size: usize,
    meta: Meta,
}

/// A page's bytes (with its overflow pages) and header fields.
struct Page<'a> {
    bytes: &'a [u8],
    flags: u16,
    count: usize,
}

impl<'a> Bolt<'a> {
    /// Opens the database in `data`, which must hold every page up to the high-water mark (extra
    /// bytes after it are ignored).
    pub fn open(data: &'a [u8]) -> Result<Bolt<'a>, BoltError> {
        if u32_at(data, PAGE_HEADER).is_some_and(|m| m.swap_bytes() == MAGIC) {
            return Err(BoltError::NotBolt(
                "written on a big-endian machine, which is not supported".into(),
            ));
        }
        if !looks_like_bolt(data) {
            return Err(BoltError::NotBolt("no bbolt magic number".into()));
        }
        let meta0 = read_meta(data, 0);
        // Meta 1 sits one page further; without a valid meta 0, try the usual page sizes.
        let sizes: Vec<usize> = match meta0 {
            Some(m) => vec![m.page_size as usize],
            None => page_sizes().collect(),
        };
        let meta1 = sizes
            .iter()
            .find_map(|&ps| read_meta(data, ps).filter(|m| m.page_size as usize == ps));
        let meta = match (meta0, meta1) {
            (Some(a), Some(b)) => {
                if a.txid >= b.txid {
                    a
                } else {
                    b
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return damaged("no valid meta page (bad checksum or version)"),
        };
        let page_size = meta.page_size as usize;
        if !page_size.is_power_of_two() || !(512..=1 << 20).contains(&page_size) {
            return damaged(format!("implausible page size {page_size}"));
        }
        let needed = (meta.pgid as usize)
            .checked_mul(page_size)
            .filter(|_| meta.pgid >= 2 && meta.pgid < (usize::MAX / page_size) as u64);
        match needed {
            Some(n) if n <= data.len() => {}
            Some(n) => {
                return damaged(format!(
                    "truncated: {} bytes, the database needs {n}",
                    data.len()
                ))
            }
            None => return damaged(format!("implausible page count {}", meta.pgid)),
        }
        if meta.root < 2 || meta.root >= meta.pgid {
            return damaged(format!("root bucket page {} out of range", meta.root));
        }
        Ok(Bolt {
            data,
            page_size,
            meta,
        })
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Size in bytes of the database proper (up to the high-water mark).
    pub fn size(&self) -> usize {
        self.meta.pgid as usize * self.page_size
    }

    /// The bucket holding the top-level buckets.
    pub fn root(&self) -> Bucket<'a> {
        Bucket::Paged(self.meta.root)
    }

    fn page(&self, id: u64) -> Result<Page<'a>, BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return damaged(format!("reference to page {id} out of range"));
        }
        let start = id as usize * self.page_size;
        let head = &self.data[start..start + PAGE_HEADER];
        if u64_at(head, 0) != Some(id) {
            return damaged(format!("page {id} identifies itself as another page"));
        }
        let overflow = u32_at(head, 12).unwrap_or(0) as u64;
        if id + overflow >= self.meta.pgid {
            return damaged(format!("page {id} overflows past the end of the database"));
        }
        let len = (overflow as usize + 1) * self.page_size;
        self.parse(&self.data[start..start + len], &format!("page {id}"))
    }

    fn parse(&self, bytes: &'a [u8], what: &str) -> Result<Page<'a>, BoltError> {
        let (Some(flags), Some(count)) = (u16_at(bytes, 8), u16_at(bytes, 10)) else {
            return damaged(format!("{what} is too short"));
        };
        let count = count as usize;
        if PAGE_HEADER + count * ELEMENT > bytes.len() {
            return damaged(format!("{what}: {count} elements do not fit"));
        }
        Ok(Page {
            bytes,
            flags,
            count,
        })
    }

    /// Bytes `[pos, pos+len)` counted from element `i`'s header, within the page.
    fn slice(page: &Page<'a>, i: usize, pos: u32, len: u32) -> Result<&'a [u8], BoltError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let from = at.checked_add(pos as usize);
        let to = from.and_then(|f| f.checked_add(len as usize));
        match (from, to) {
            (Some(f), Some(t)) if t <= page.bytes.len() => Ok(&page.bytes[f..t]),
            _ => damaged("element points outside its page"),
        }
    }

    /// Finds the entry `name` of `bucket`.
    pub fn get(&self, bucket: Bucket<'a>, name: &[u8]) -> Result<Option<Entry<'a>>, BoltError> {
        let mut found = None;
        self.for_each(bucket, |k, e| {
            if k == name {
                found = Some(e);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The nested bucket `name` of `bucket`; None when absent; an error when it is a plain value.
    pub fn bucket(&self, parent: Bucket<'a>, name: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        match self.get(parent, name)? {
            None => Ok(None),
            Some(Entry::Bucket(b)) => Ok(Some(b)),
            Some(Entry::Value(_)) => damaged(format!(
                "{} is a value where a bucket was expected",
                String::from_utf8_lossy(name)
            )),
        }
    }

    /// Calls `f` with every entry of `bucket` in key order. Stops at the first error, `f`'s or
    /// the file's.
    pub fn for_each<E>(
        &self,
        bucket: Bucket<'a>,
        mut f: impl FnMut(&'a [u8], Entry<'a>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<BoltError>,
    {
        let mut seen = HashSet::new();
        match bucket {
            Bucket::Paged(id) => self.walk(id, &mut seen, &mut f),
            Bucket::Inline(bytes) => {
                let page = self.parse(bytes, "inline bucket")?;
                if page.flags != LEAF_PAGE {
                    return Err(BoltError::Damaged("inline bucket is not a leaf".into()).into());
                }
                self.leaf(&page, &mut f)
            }
        }
    }

    fn walk<E: From<BoltError>>(
        &self,
        id: u64,
        seen: &mut HashSet<u64>,
        f: &mut impl FnMut(&'a [u8], Entry<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        // Depth-first over an explicit stack: a file cannot exhaust the call stack.
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                return Err(BoltError::Damaged(format!("page {id} is reachable twice")).into());
            }
            let page = self.page(id)?;
            match page.flags {
                LEAF_PAGE => self.leaf(&page, f)?,
                BRANCH_PAGE => {
                    let mut children = Vec::with_capacity(page.count);
                    for i in 0..page.count {
                        let at = PAGE_HEADER + i * ELEMENT;
                        children.push(u64_at(page.bytes, at + 8).unwrap_or(0));
                    }
                    // Pushed in reverse so that children are visited in key order.
                    stack.extend(children.into_iter().rev());
                }
                other => {
                    return Err(BoltError::Damaged(format!(
                        "page {id} has type {other:#x} inside a bucket's tree"
                    ))
                    .into())
                }
            }
        }
        Ok(())
    }

    fn leaf<E: From<BoltError>>(
        &self,
        page: &Page<'a>,
        f: &mut impl FnMut(&'a [u8], Entry<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        for i in 0..page.count {
            let at = PAGE_HEADER + i * ELEMENT;
            let field = |o| u32_at(page.bytes, at + o).unwrap_or(0);
            let (flags, pos, ksize, vsize) = (field(0), field(4), field(8), field(12));
            let key = Self::slice(page, i, pos, ksize)?;
            let value = Self::slice(page, i, pos.saturating_add(ksize), vsize)?;
            let entry = if flags & BUCKET_LEAF != 0 {
                if value.len() < BUCKET_HEADER {
                    return Err(BoltError::Damaged("bucket header too short".into()).into());
                }
                match u64_at(value, 0).unwrap_or(0) {
                    0 => Entry::Bucket(Bucket::Inline(&value[BUCKET_HEADER..])),
                    root => Entry::Bucket(Bucket::Paged(root)),
                }
            } else {
                Entry::Value(value)
            };
            f(key, entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "bbolt_tests.rs"]
pub(crate) mod tests;
