use super::*;
use tonic::Code;

fn perm(t: i32, key: &str, end: &str) -> Permission {
    Permission {
        perm_type: t,
        key: key.into(),
        range_end: end.into(),
    }
}

fn add_user(s: &mut AuthState, name: &str) {
    s.apply(&AuthOp::UserAdd {
        name: name.into(),
        password: b"hash".to_vec(),
        no_password: false,
    })
    .unwrap();
}

fn caller(s: &AuthState, user: &str) -> Caller {
    Caller {
        user: user.into(),
        revision: s.revision(),
    }
}

/// root (root role) and `alice` with role `r` holding `perms`; auth enabled.
fn store_with(perms: &[Permission]) -> AuthState {
    let mut s = AuthState {
        revision: 1,
        ..AuthState::default()
    };
    add_user(&mut s, "root");
    s.apply(&AuthOp::UserGrantRole {
        user: "root".into(),
        role: "root".into(),
    })
    .unwrap();
    add_user(&mut s, "alice");
    s.apply(&AuthOp::RoleAdd("r".into())).unwrap();
    for p in perms {
        s.apply(&AuthOp::RoleGrantPermission {
            role: "r".into(),
            perm: p.clone(),
        })
        .unwrap();
    }
    s.apply(&AuthOp::UserGrantRole {
        user: "alice".into(),
        role: "r".into(),
    })
    .unwrap();
    s.apply(&AuthOp::Enable).unwrap();
    s
}

fn code(r: Result<(), Status>) -> Option<Code> {
    r.err().map(|e| e.code())
}

#[test]
fn enable_needs_root_with_root_role() {
    let mut s = AuthState::default();
    let e = s.apply(&AuthOp::Enable).unwrap_err();
    assert_eq!(e.message(), "etcdserver: root user does not exist");
    add_user(&mut s, "root");
    let e = s.apply(&AuthOp::Enable).unwrap_err();
    assert_eq!(e.message(), "etcdserver: root user does not have root role");
    // The root role need not exist as a role to be granted.
    s.apply(&AuthOp::UserGrantRole {
        user: "root".into(),
        role: "root".into(),
    })
    .unwrap();
    let rev = s.revision();
    s.apply(&AuthOp::Enable).unwrap();
    assert!(s.enabled());
    assert_eq!(
        s.revision(),
        rev,
        "enabling does not bump the auth revision"
    );
    // Enabling again is a no-op; disabling bumps the revision.
    assert!(s.apply(&AuthOp::Enable).unwrap().is_empty());
    s.apply(&AuthOp::Disable).unwrap();
    assert_eq!(s.revision(), rev + 1);
}

#[test]
fn user_and_role_errors_are_etcds() {
    let mut s = store_with(&[]);
    let msg = |r: Result<Changes, Status>| r.unwrap_err().message().to_string();
    assert_eq!(
        msg(s.apply(&AuthOp::UserAdd {
            name: "".into(),
            password: vec![],
            no_password: false
        })),
        "etcdserver: user name is empty"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserAdd {
            name: "alice".into(),
            password: vec![],
            no_password: false
        })),
        "etcdserver: user name already exists"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserDelete("bob".into()))),
        "etcdserver: user name not found"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserDelete("root".into()))),
        "etcdserver: invalid auth management"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserRevokeRole {
            user: "root".into(),
            role: "root".into()
        })),
        "etcdserver: invalid auth management"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::RoleDelete("root".into()))),
        "etcdserver: invalid auth management"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserGrantRole {
            user: "alice".into(),
            role: "nope".into()
        })),
        "etcdserver: role name not found"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::UserRevokeRole {
            user: "alice".into(),
            role: "nope".into()
        })),
        "etcdserver: role is not granted to the user"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::RoleAdd("".into()))),
        "etcdserver: role name is empty"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::RoleAdd("r".into()))),
        "etcdserver: role name already exists"
    );
    assert_eq!(
        msg(s.apply(&AuthOp::RoleRevokePermission {
            role: "r".into(),
            key: b"x".to_vec(),
            range_end: vec![]
        })),
        "etcdserver: permission is not granted to the role"
    );
    // Granting a role twice changes nothing.
    let rev = s.revision();
    assert!(s
        .apply(&AuthOp::UserGrantRole {
            user: "alice".into(),
            role: "r".into()
        })
        .unwrap()
        .is_empty());
    assert_eq!(s.revision(), rev);
}

#[test]
fn single_key_and_range_permissions() {
    let s = store_with(&[
        perm(perm_type::READ, "foo", "fop"), // prefix foo
        perm(perm_type::WRITE, "bar", ""),   // the key bar
        perm(perm_type::READWRITE, "m", "n"),
        perm(perm_type::READ, "n", "o"),
    ]);
    let a = caller(&s, "alice");
    let a = Some(&a);
    assert_eq!(code(s.check(a, b"foo1", b"", Access::Read)), None);
    assert_eq!(code(s.check(a, b"foo", b"fop", Access::Read)), None);
    assert_eq!(
        code(s.check(a, b"foo1", b"", Access::Write)),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(s.check(a, b"fo", b"fop", Access::Read)),
        Some(Code::PermissionDenied)
    );
    assert_eq!(code(s.check(a, b"bar", b"", Access::Write)), None);
    assert_eq!(
        code(s.check(a, b"bar", b"", Access::Read)),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(s.check(a, b"bar1", b"", Access::Write)),
        Some(Code::PermissionDenied)
    );
    // [m, n) and [n, o) are contiguous for reads, not for writes.
    assert_eq!(code(s.check(a, b"m", b"o", Access::Read)), None);
    assert_eq!(
        code(s.check(a, b"m", b"o", Access::Write)),
        Some(Code::PermissionDenied)
    );
    // From a key on ("\0") needs an open-ended permission.
    assert_eq!(
        code(s.check(a, b"m", b"\0", Access::Read)),
        Some(Code::PermissionDenied)
    );
}

#[test]
fn open_ended_permission_and_root() {
    let s = store_with(&[perm(perm_type::READ, "k", "\0")]);
    let a = caller(&s, "alice");
    assert_eq!(code(s.check(Some(&a), b"k", b"\0", Access::Read)), None);
    assert_eq!(code(s.check(Some(&a), b"zzz", b"", Access::Read)), None);
    assert_eq!(
        code(s.check(Some(&a), b"a", b"", Access::Read)),
        Some(Code::PermissionDenied)
    );
    let root = caller(&s, "root");
    assert_eq!(code(s.check(Some(&root), b"", b"\0", Access::Write)), None);
    assert_eq!(code(s.check_admin(Some(&root))), None);
    assert_eq!(
        s.check_admin(Some(&a)).unwrap_err().message(),
        "etcdserver: permission denied"
    );
    assert_eq!(
        s.check_admin(None).unwrap_err().message(),
        "etcdserver: user name is empty"
    );
    assert_eq!(
        s.check(None, b"k", b"", Access::Read)
            .unwrap_err()
            .message(),
        "etcdserver: user name is empty"
    );
    let ghost = caller(&s, "ghost");
    assert_eq!(
        s.check_admin(Some(&ghost)).unwrap_err().message(),
        "etcdserver: user name not found"
    );
    assert_eq!(
        code(s.check(Some(&ghost), b"k", b"", Access::Read)),
        Some(Code::PermissionDenied)
    );
}

#[test]
fn changes_follow_role_edits() {
    let mut s = store_with(&[perm(perm_type::READ, "a", "")]);
    assert!(s
        .check(Some(&caller(&s, "alice")), b"a", b"", Access::Read)
        .is_ok());
    // Regranting the same interval replaces its type.
    s.apply(&AuthOp::RoleGrantPermission {
        role: "r".into(),
        perm: perm(perm_type::WRITE, "a", ""),
    })
    .unwrap();
    assert_eq!(s.role("r").unwrap().key_permission.len(), 1);
    let a = caller(&s, "alice");
    assert!(s.check(Some(&a), b"a", b"", Access::Read).is_err());
    assert!(s.check(Some(&a), b"a", b"", Access::Write).is_ok());
    // A caller checked at an older auth revision is refused.
    let old = Caller {
        user: "alice".into(),
        revision: s.revision() - 1,
    };
    assert_eq!(
        s.check(Some(&old), b"a", b"", Access::Write)
            .unwrap_err()
            .message(),
        "etcdserver: revision of auth store is old"
    );
    // Deleting the role takes it from its users.
    s.apply(&AuthOp::RoleDelete("r".into())).unwrap();
    assert!(s.user("alice").unwrap().roles.is_empty());
    let a = caller(&s, "alice");
    assert!(s.check(Some(&a), b"a", b"", Access::Write).is_err());
}

#[test]
fn disabled_auth_permits_everything() {
    let mut s = store_with(&[]);
    s.apply(&AuthOp::Disable).unwrap();
    assert!(s.check(None, b"x", b"", Access::Write).is_ok());
    assert!(s.check_admin(None).is_ok());
}

#[test]
fn auth_store_survives_reopen_and_snapshot() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    {
        let st = Arc::new(crate::Store::open(&data).unwrap());
        assert_eq!(st.auth().revision(), 1);
        let ops = vec![
            AuthOp::UserAdd {
                name: "root".into(),
                password: b"h".to_vec(),
                no_password: false,
            },
            AuthOp::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthOp::RoleAdd("reader".into()),
            AuthOp::RoleGrantPermission {
                role: "reader".into(),
                perm: perm(perm_type::READ, "p/", "p0"),
            },
            AuthOp::Enable,
        ];
        for op in ops {
            st.apply(vec![crate::Op::Auth(op)])
                .unwrap()
                .pop()
                .unwrap()
                .unwrap();
        }
        let snap = st.snapshot_to(dir.path()).unwrap();
        let opts = crate::snapshot::RestoreOptions {
            name: "x".into(),
            skip_hash_check: false,
        };
        crate::snapshot::restore(&snap, &dir.path().join("restored"), &opts).unwrap();
    }
    for d in [data, dir.path().join("restored")] {
        let st = crate::Store::open(&d).unwrap();
        let a = st.auth();
        assert!(a.enabled());
        assert_eq!(a.revision(), 5);
        assert_eq!(a.user_names(), ["root"]);
        assert_eq!(a.user("root").unwrap().roles, ["root"]);
        assert_eq!(a.role_names(), ["reader"]);
        assert_eq!(
            a.role("reader").unwrap().key_permission,
            [perm(perm_type::READ, "p/", "p0")]
        );
    }
}
