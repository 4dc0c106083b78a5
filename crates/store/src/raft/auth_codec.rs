//! The bytes of an auth change in a log entry: a kind byte, then its fields, each a length-prefixed
//! byte string (a permission as etcd's protobuf `Permission`). Passwords are already bcrypt
//! hashes, so every member applies the same bytes.

use etcd_api::auth_msgs::Permission;
use mvcc::AuthOp;
use prost::Message;

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub fn encode(op: &AuthOp) -> Vec<u8> {
    let mut out = Vec::new();
    let (kind, fields): (u8, Vec<&[u8]>) = match op {
        AuthOp::Enable => (0, vec![]),
        AuthOp::Disable => (1, vec![]),
        AuthOp::UserAdd {
            name,
            password,
            no_password,
        } => (
            2,
            vec![name.as_bytes(), password, if *no_password { b"1" } else { b"0" }],
        ),
        AuthOp::UserDelete(name) => (3, vec![name.as_bytes()]),
        AuthOp::UserChangePassword { name, password } => (4, vec![name.as_bytes(), password]),
        AuthOp::UserGrantRole { user, role } => (5, vec![user.as_bytes(), role.as_bytes()]),
        AuthOp::UserRevokeRole { user, role } => (6, vec![user.as_bytes(), role.as_bytes()]),
        AuthOp::RoleAdd(name) => (7, vec![name.as_bytes()]),
        AuthOp::RoleDelete(name) => (8, vec![name.as_bytes()]),
        AuthOp::RoleGrantPermission { role, perm } => {
            out.push(9);
            field(&mut out, role.as_bytes());
            field(&mut out, &perm.encode_to_vec());
            return out;
        }
        AuthOp::RoleRevokePermission {
            role,
            key,
            range_end,
        } => (10, vec![role.as_bytes(), key, range_end]),
    };
    out.push(kind);
    for f in fields {
        field(&mut out, f);
    }
    out
}

/// Reads what `encode` wrote.
pub fn decode(b: &[u8]) -> Result<AuthOp, String> {
    let (kind, mut rest) = b.split_first().ok_or("empty auth change")?;
    let mut next = || -> Result<Vec<u8>, String> {
        let n = rest
            .get(..4)
            .map(|l| u32::from_be_bytes(l.try_into().unwrap_or_default()) as usize)
            .ok_or("short auth change")?;
        let v = rest.get(4..4 + n).ok_or("short auth change")?.to_vec();
        rest = &rest[4 + n..];
        Ok(v)
    };
    let text = |v: Vec<u8>| String::from_utf8(v).map_err(|e| e.to_string());
    Ok(match kind {
        0 => AuthOp::Enable,
        1 => AuthOp::Disable,
        2 => AuthOp::UserAdd {
            name: text(next()?)?,
            password: next()?,
            no_password: next()? == b"1",
        },
        3 => AuthOp::UserDelete(text(next()?)?),
        4 => AuthOp::UserChangePassword {
            name: text(next()?)?,
            password: next()?,
        },
        5 => AuthOp::UserGrantRole {
            user: text(next()?)?,
            role: text(next()?)?,
        },
        6 => AuthOp::UserRevokeRole {
            user: text(next()?)?,
            role: text(next()?)?,
        },
        7 => AuthOp::RoleAdd(text(next()?)?),
        8 => AuthOp::RoleDelete(text(next()?)?),
        9 => AuthOp::RoleGrantPermission {
            role: text(next()?)?,
            perm: Permission::decode(next()?.as_slice()).map_err(|e| e.to_string())?,
        },
        10 => AuthOp::RoleRevokePermission {
            role: text(next()?)?,
            key: next()?,
            range_end: next()?,
        },
        k => return Err(format!("unknown auth change kind {k}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_round_trips() {
        let perm = Permission {
            perm_type: 2,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        };
        let ops = vec![
            AuthOp::Enable,
            AuthOp::Disable,
            AuthOp::UserAdd {
                name: "u".into(),
                password: b"$2a$10$hash".to_vec(),
                no_password: false,
            },
            AuthOp::UserAdd {
                name: "v".into(),
                password: vec![],
                no_password: true,
            },
            AuthOp::UserDelete("u".into()),
            AuthOp::UserChangePassword {
                name: "u".into(),
                password: b"x".to_vec(),
            },
            AuthOp::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
            AuthOp::UserRevokeRole {
                user: "u".into(),
                role: "r".into(),
            },
            AuthOp::RoleAdd("r".into()),
            AuthOp::RoleDelete("r".into()),
            AuthOp::RoleGrantPermission {
                role: "r".into(),
                perm,
            },
            AuthOp::RoleRevokePermission {
                role: "r".into(),
                key: b"a".to_vec(),
                range_end: vec![],
            },
        ];
        for op in ops {
            assert_eq!(decode(&encode(&op)).unwrap(), op);
        }
        assert!(decode(&[2, 0, 0, 0, 9, b'x']).is_err(), "a short field is refused");
        assert!(decode(&[42]).is_err());
    }
}
