//! The bytes of a log entry's command and of its answer: one mvcc `Op` (or `OpResult`) as a tag
//! byte and the etcd protobuf message it carries. serde (for openraft's messages) carries these
//! bytes as they are.

use etcd_api::*;
use mvcc::{Op, OpResult};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tonic::{Code, Status};

/// A log entry's command, and the auth revision it was authorized at (0: not subject to auth).
/// Every member refuses it at apply time if auth is on and its revision is older than the auth
/// store's (etcd's "revision of auth store is old"), so a revoked permission cannot slip through.
#[derive(Clone, Debug)]
pub struct Cmd(pub Op, pub u64);

/// A command's answer on the member that applied it; `None` for entries that carry no command
/// (blank entries of a new leader, membership changes).
#[derive(Clone, Debug, Default)]
pub struct Reply(pub Option<Result<OpResult, Status>>);

fn two(a: i64, b: i64) -> Vec<u8> {
    [a.to_be_bytes(), b.to_be_bytes()].concat()
}

fn int(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn encode_op(op: &Op) -> Vec<u8> {
    let (tag, body) = match op {
        Op::Put(r) => (1, r.encode_to_vec()),
        Op::Delete(r) => (2, r.encode_to_vec()),
        Op::Txn(r) => (3, r.encode_to_vec()),
        Op::Compact(rev) => (4, rev.to_be_bytes().to_vec()),
        Op::LeaseGrant { id, ttl } => (5, two(*id, *ttl)),
        Op::LeaseRevoke(id) => (6, id.to_be_bytes().to_vec()),
        Op::Alarm(r) => (7, r.encode_to_vec()),
        Op::Auth(a) => (8, super::auth_codec::encode(a)),
    };
    [vec![tag], body].concat()
}

pub fn decode_op(b: &[u8]) -> Result<Op, String> {
    let (tag, body) = b.split_first().ok_or("empty command")?;
    let bad = |e: prost::DecodeError| e.to_string();
    Ok(match tag {
        1 => Op::Put(PbPutRequest::decode(body).map_err(bad)?),
        2 => Op::Delete(PbDeleteRequest::decode(body).map_err(bad)?),
        3 => Op::Txn(PbTxnRequest::decode(body).map_err(bad)?),
        4 => Op::Compact(int(body, 0).ok_or("short compact command")?),
        5 => Op::LeaseGrant {
            id: int(body, 0).ok_or("short lease grant")?,
            ttl: int(body, 8).ok_or("short lease grant")?,
        },
        6 => Op::LeaseRevoke(int(body, 0).ok_or("short lease revoke")?),
        7 => Op::Alarm(PbAlarmRequest::decode(body).map_err(bad)?),
        8 => Op::Auth(super::auth_codec::decode(body)?),
        t => return Err(format!("unknown command tag {t}")),
    })
}

fn decode_cmd(b: &[u8]) -> Result<Cmd, String> {
    match b.split_first() {
        Some((9, rest)) => {
            let rev = int(rest, 0).ok_or("short auth revision")? as u64;
            decode_op(&rest[8..]).map(|op| Cmd(op, rev))
        }
        _ => decode_op(b).map(|op| Cmd(op, 0)),
    }
}

pub fn encode_reply(r: &Reply) -> Vec<u8> {
    let (tag, body) = match &r.0 {
        None => (0, vec![]),
        Some(Err(s)) => (
            255,
            [
                (s.code() as i32).to_be_bytes().to_vec(),
                s.message().as_bytes().to_vec(),
            ]
            .concat(),
        ),
        Some(Ok(OpResult::Put(x))) => (1, x.encode_to_vec()),
        Some(Ok(OpResult::Delete(x))) => (2, x.encode_to_vec()),
        Some(Ok(OpResult::Txn(x))) => (3, x.encode_to_vec()),
        Some(Ok(OpResult::Compact(x))) => (4, x.encode_to_vec()),
        Some(Ok(OpResult::LeaseGrant(x))) => (5, x.encode_to_vec()),
        Some(Ok(OpResult::LeaseRevoke(x))) => (6, x.encode_to_vec()),
        Some(Ok(OpResult::Alarm(x))) => (7, x.encode_to_vec()),
        Some(Ok(OpResult::Auth(h))) => (8, h.clone().unwrap_or_default().encode_to_vec()),
    };
    [vec![tag], body].concat()
}

pub fn decode_reply(b: &[u8]) -> Result<Reply, String> {
    let (tag, body) = b.split_first().ok_or("empty reply")?;
    let bad = |e: prost::DecodeError| e.to_string();
    let ok = |r| Ok(Reply(Some(Ok(r))));
    match tag {
        0 => Ok(Reply(None)),
        255 => {
            let code = i32::from_be_bytes(
                body.get(..4)
                    .ok_or("short error")?
                    .try_into()
                    .unwrap_or([0; 4]),
            );
            let msg = String::from_utf8_lossy(&body[4..]).into_owned();
            Ok(Reply(Some(Err(Status::new(Code::from_i32(code), msg)))))
        }
        1 => ok(OpResult::Put(PbPutResponse::decode(body).map_err(bad)?)),
        2 => ok(OpResult::Delete(
            PbDeleteResponse::decode(body).map_err(bad)?,
        )),
        3 => ok(OpResult::Txn(PbTxnResponse::decode(body).map_err(bad)?)),
        4 => ok(OpResult::Compact(
            PbCompactionResponse::decode(body).map_err(bad)?,
        )),
        5 => ok(OpResult::LeaseGrant(
            PbLeaseGrantResponse::decode(body).map_err(bad)?,
        )),
        6 => ok(OpResult::LeaseRevoke(
            PbLeaseRevokeResponse::decode(body).map_err(bad)?,
        )),
        7 => ok(OpResult::Alarm(PbAlarmResponse::decode(body).map_err(bad)?)),
        8 => ok(OpResult::Auth(Some(
            PbResponseHeader::decode(body).map_err(bad)?,
        ))),
        t => Err(format!("unknown reply tag {t}")),
    }
}

impl Serialize for Cmd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let op = encode_op(&self.0);
        match self.1 {
            0 => s.serialize_bytes(&op),
            // tag 9: the auth revision, then the command
            rev => s.serialize_bytes(&[&[9u8][..], &rev.to_be_bytes(), &op].concat()),
        }
    }
}

impl<'de> Deserialize<'de> for Cmd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: Vec<u8> = serde_bytes_vec(d)?;
        decode_cmd(&b).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_reply(self))
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: Vec<u8> = serde_bytes_vec(d)?;
        decode_reply(&b).map_err(serde::de::Error::custom)
    }
}

/// Reads what `serialize_bytes` wrote.
fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = a.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip() {
        let ops = vec![
            Op::Put(PbPutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ..Default::default()
            }),
            Op::Compact(42),
            Op::LeaseGrant { id: -3, ttl: 60 },
            Op::LeaseRevoke(9),
            Op::Auth(mvcc::AuthOp::RoleAdd("r".into())),
        ];
        for op in ops {
            for rev in [0, 1, u64::MAX] {
                let b = postcard::to_allocvec(&Cmd(op.clone(), rev)).unwrap();
                let back: Cmd = postcard::from_bytes(&b).unwrap();
                assert_eq!((encode_op(&back.0), back.1), (encode_op(&op), rev));
            }
        }
        let r = Reply(Some(Err(Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ))));
        let b = postcard::to_allocvec(&r).unwrap();
        let back: Reply = postcard::from_bytes(&b).unwrap();
        let e = back.0.unwrap().unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        assert!(decode_op(&[99]).is_err());
        assert!(decode_op(&[]).is_err());
    }
}
