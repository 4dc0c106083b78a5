//! Revisions and their on-disk encoding. A revision is (main, sub): `main` grows by one per write
//! transaction, `sub` counts the changes inside it. Encoded big-endian so that byte order is
//! revision order in the backend.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

pub const REV_BYTES: usize = 16;

impl Rev {
    pub fn new(main: i64, sub: i64) -> Self {
        Rev { main, sub }
    }

    pub fn to_bytes(self) -> [u8; REV_BYTES] {
        let mut b = [0u8; REV_BYTES];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Rev> {
        if b.len() != REV_BYTES {
            return None;
        }
        let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(b[8..].try_into().ok()?) as i64;
        Some(Rev { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_order_and_round_trips() {
        let revs = [
            Rev::new(1, 0),
            Rev::new(1, 1),
            Rev::new(2, 0),
            Rev::new(256, 3),
        ];
        for w in revs.windows(2) {
            assert!(w[0].to_bytes() < w[1].to_bytes());
        }
        for r in revs {
            assert_eq!(Rev::from_bytes(&r.to_bytes()), Some(r));
        }
        assert_eq!(Rev::from_bytes(&[1, 2, 3]), None);
    }
}
