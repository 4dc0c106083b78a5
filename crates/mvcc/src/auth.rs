//! The auth store, as etcd's `auth/store.go`: users, roles and their key permissions, whether auth
//! is enabled, and the auth revision (bumped by every change, as etcd's `authRevision`). It is part
//! of the state machine: changes are `AuthOp`s applied by `Store::apply` in the same backend
//! transaction as everything else, and are deterministic (passwords arrive already hashed).
//!
//! Permission checks follow etcd: a user with the `root` role may do anything; otherwise a single
//! key needs a permission interval that contains it, and a range needs the union of the user's
//! permission intervals to cover it without a gap.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use etcd_api::auth_msgs::{perm_type, Permission, Role, User, UserAddOptions};
use etcd_api::errors;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, Table, TableError};
use tonic::Status;

use crate::backend::{self, meta, AUTH_ROLES, AUTH_USERS};
use crate::Error;

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// A change to the auth store.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthOp {
    Enable,
    Disable,
    /// `password` is the bcrypt hash (empty with `no_password`).
    UserAdd {
        name: String,
        password: Vec<u8>,
        no_password: bool,
    },
    UserDelete(String),
    UserChangePassword {
        name: String,
        password: Vec<u8>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd(String),
    RoleDelete(String),
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// Who makes a request once authenticated (etcd's `AuthInfo`): the user name and the auth
/// revision the credentials were checked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A key interval; an empty bound stands for "past every key", as etcd's affine byte intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ivl {
    begin: Vec<u8>,
    end: Vec<u8>,
}

fn affine(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.cmp(b),
    }
}

impl Ivl {
    fn point(key: &[u8]) -> Ivl {
        let mut end = key.to_vec();
        end.push(0);
        Ivl {
            begin: key.to_vec(),
            end,
        }
    }

    /// `[key, range_end)`, where a range end of "\0" means every key from `key` on.
    fn range(key: &[u8], range_end: &[u8]) -> Ivl {
        let end = if range_end == [0] {
            Vec::new()
        } else {
            range_end.to_vec()
        };
        Ivl {
            begin: key.to_vec(),
            end,
        }
    }

    fn of_perm(p: &Permission) -> Ivl {
        if p.range_end.is_empty() {
            Ivl::point(&p.key)
        } else {
            Ivl::range(&p.key, &p.range_end)
        }
    }

    fn intersects(&self, o: &Ivl) -> bool {
        affine(&self.begin, &o.end) == Ordering::Less
            && affine(&o.begin, &self.end) == Ordering::Less
    }
}

/// A user's merged permissions, sorted by interval start.
#[derive(Debug, Default, Clone)]
struct Perms {
    read: Vec<Ivl>,
    write: Vec<Ivl>,
}

/// Whether the intervals in `set` that meet `q` cover it without a gap.
fn covers(set: &[Ivl], q: &Ivl) -> bool {
    let mut span: Option<(&[u8], &[u8])> = None;
    for i in set.iter().filter(|i| i.intersects(q)) {
        span = match span {
            None => Some((&i.begin, &i.end)),
            Some((_, end)) if affine(end, &i.begin) == Ordering::Less => return false,
            Some((begin, end)) => Some((
                begin,
                if affine(&i.end, end) == Ordering::Greater {
                    &i.end
                } else {
                    end
                },
            )),
        };
    }
    span.is_some_and(|(b, e)| {
        affine(b, &q.begin) != Ordering::Greater && affine(e, &q.end) != Ordering::Less
    })
}

/// What an applied `AuthOp` changed, to be written to the backend.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    users: Vec<String>,
    roles: Vec<String>,
    meta: bool,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty() && !self.meta
    }
}

#[derive(Debug, Default)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    /// Bumped by every applied change, enabling included (etcd's revision is not bumped by
    /// enabling): requests checked at an older epoch are refused at apply time.
    epoch: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    perms: HashMap<String, Perms>,
}

fn table_missing<T>(r: Result<T, TableError>) -> Result<Option<T>, Error> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn damaged(what: &str, e: prost::DecodeError) -> Error {
    Error::Damaged(format!("bad {what} record in the auth store: {e}"))
}

impl AuthState {
    /// Reads the auth store from the backend (a store made before auth existed has none).
    pub(crate) fn load(
        tx: &ReadTransaction,
        m: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<AuthState, Error> {
        let mut s = AuthState {
            enabled: m.get(meta::AUTH_ENABLED)?.is_some_and(|v| v.value() == [1]),
            revision: backend::get_u64(m, meta::AUTH_REVISION)?.max(1),
            ..AuthState::default()
        };
        if let Some(t) = table_missing(tx.open_table(AUTH_USERS))? {
            for row in t.iter()? {
                let (k, v) = row?;
                let u = User::decode(v.value()).map_err(|e| damaged("user", e))?;
                s.users.insert(k.value().to_string(), u);
            }
        }
        if let Some(t) = table_missing(tx.open_table(AUTH_ROLES))? {
            for row in t.iter()? {
                let (k, v) = row?;
                let r = Role::decode(v.value()).map_err(|e| damaged("role", e))?;
                s.roles.insert(k.value().to_string(), r);
            }
        }
        s.refresh();
        Ok(s)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// User names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's `isOpPermitted`: may `who` read or write `[key, range_end)` (a single key when
    /// `range_end` is empty)?
    pub fn check(
        &self,
        who: Option<&Caller>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), Status> {
        if !self.enabled {
            return Ok(());
        }
        let Some(who) = who.filter(|w| w.revision != 0) else {
            return Err(errors::user_empty());
        };
        if who.revision < self.revision {
            return Err(errors::auth_old_revision());
        }
        if !self.users.contains_key(&who.user) {
            return Err(errors::permission_denied());
        }
        if self.has_role(&who.user, ROOT_ROLE) {
            return Ok(());
        }
        let Some(p) = self.perms.get(&who.user) else {
            return Err(errors::permission_denied());
        };
        let set = match access {
            Access::Read => &p.read,
            Access::Write => &p.write,
        };
        let ok = if range_end.is_empty() {
            let q = Ivl::point(key);
            set.iter().any(|i| i.intersects(&q))
        } else {
            covers(set, &Ivl::range(key, range_end))
        };
        if ok {
            Ok(())
        } else {
            Err(errors::permission_denied())
        }
    }

    /// etcd's `IsAdminPermitted`: is `who` a user with the root role (always, when auth is off)?
    pub fn check_admin(&self, who: Option<&Caller>) -> Result<(), Status> {
        if !self.enabled {
            return Ok(());
        }
        let Some(who) = who.filter(|w| !w.user.is_empty()) else {
            return Err(errors::user_empty());
        };
        if !self.users.contains_key(&who.user) {
            return Err(errors::user_not_found());
        }
        if !self.has_role(&who.user, ROOT_ROLE) {
            return Err(errors::permission_denied());
        }
        Ok(())
    }

    /// Rebuilds every user's merged permissions.
    fn refresh(&mut self) {
        let mut perms = HashMap::new();
        for (name, u) in &self.users {
            let mut p = Perms::default();
            for perm in u
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| &r.key_permission)
            {
                let ivl = Ivl::of_perm(perm);
                if matches!(perm.perm_type, perm_type::READ | perm_type::READWRITE) {
                    p.read.push(ivl.clone());
                }
                if matches!(perm.perm_type, perm_type::WRITE | perm_type::READWRITE) {
                    p.write.push(ivl);
                }
            }
            for set in [&mut p.read, &mut p.write] {
                set.sort_by(|a, b| affine(&a.begin, &b.begin).then_with(|| affine(&a.end, &b.end)));
            }
            perms.insert(name.clone(), p);
        }
        self.perms = perms;
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, Status> {
        self.users.get_mut(name).ok_or_else(errors::user_not_found)
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, Status> {
        self.roles.get_mut(name).ok_or_else(errors::role_not_found)
    }

    /// Applies one change in memory with etcd's checks and answers; returns what to persist.
    pub(crate) fn apply(&mut self, op: &AuthOp) -> Result<Changes, Status> {
        let mut ch = Changes::default();
        match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Ok(ch);
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or_else(errors::root_user_not_exist)?;
                if !root.roles.iter().any(|r| r == ROOT_ROLE) {
                    return Err(errors::root_role_not_exist());
                }
                self.enabled = true;
                ch.meta = true;
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Ok(ch);
                }
                self.enabled = false;
                self.revision += 1;
                ch.meta = true;
            }
            AuthOp::UserAdd {
                name,
                password,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(errors::user_empty());
                }
                if self.users.contains_key(name) {
                    return Err(errors::user_already_exist());
                }
                let user = User {
                    name: name.as_bytes().to_vec(),
                    password: if *no_password {
                        Vec::new()
                    } else {
                        password.clone()
                    },
                    roles: Vec::new(),
                    options: Some(UserAddOptions {
                        no_password: *no_password,
                    }),
                };
                self.users.insert(name.clone(), user);
                ch.users.push(name.clone());
            }
            AuthOp::UserDelete(name) => {
                if self.enabled && name == ROOT_USER {
                    return Err(errors::invalid_auth_mgmt());
                }
                self.users.remove(name).ok_or_else(errors::user_not_found)?;
                ch.users.push(name.clone());
            }
            AuthOp::UserChangePassword { name, password } => {
                self.user_mut(name)?.password = password.clone();
                ch.users.push(name.clone());
            }
            AuthOp::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(errors::user_not_found());
                }
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(errors::role_not_found());
                }
                let u = self.user_mut(user)?;
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(ch),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
                ch.users.push(user.clone());
            }
            AuthOp::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(errors::invalid_auth_mgmt());
                }
                let u = self.user_mut(user)?;
                let before = u.roles.len();
                u.roles.retain(|r| r != role);
                if u.roles.len() == before {
                    return Err(errors::role_not_granted());
                }
                ch.users.push(user.clone());
            }
            AuthOp::RoleAdd(name) => {
                if name.is_empty() {
                    return Err(errors::role_empty());
                }
                if self.roles.contains_key(name) {
                    return Err(errors::role_already_exist());
                }
                let role = Role {
                    name: name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                };
                self.roles.insert(name.clone(), role);
                ch.roles.push(name.clone());
            }
            AuthOp::RoleDelete(name) => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(errors::invalid_auth_mgmt());
                }
                self.roles.remove(name).ok_or_else(errors::role_not_found)?;
                ch.roles.push(name.clone());
                for (uname, u) in self.users.iter_mut() {
                    let before = u.roles.len();
                    u.roles.retain(|r| r != name);
                    if u.roles.len() != before {
                        ch.users.push(uname.clone());
                    }
                }
            }
            AuthOp::RoleGrantPermission { role, perm } => {
                let r = self.role_mut(role)?;
                match r
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        r.key_permission.push(perm.clone());
                        r.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                ch.roles.push(role.clone());
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.role_mut(role)?;
                let before = r.key_permission.len();
                r.key_permission
                    .retain(|p| p.key != *key || p.range_end != *range_end);
                if r.key_permission.len() == before {
                    return Err(errors::permission_not_granted());
                }
                ch.roles.push(role.clone());
            }
        }
        // Every change but enabling is a new auth revision, as in etcd.
        if !ch.users.is_empty() || !ch.roles.is_empty() {
            self.revision += 1;
            ch.meta = true;
        }
        self.epoch += 1;
        self.refresh();
        Ok(ch)
    }

    /// Writes what `apply` changed.
    pub(crate) fn persist(
        &self,
        ch: &Changes,
        users: &mut Table<&'static str, &'static [u8]>,
        roles: &mut Table<&'static str, &'static [u8]>,
        m: &mut Table<&'static str, &'static [u8]>,
    ) -> Result<(), Error> {
        for name in &ch.users {
            match self.users.get(name) {
                Some(u) => users.insert(name.as_str(), u.encode_to_vec().as_slice())?,
                None => users.remove(name.as_str())?,
            };
        }
        for name in &ch.roles {
            match self.roles.get(name) {
                Some(r) => roles.insert(name.as_str(), r.encode_to_vec().as_slice())?,
                None => roles.remove(name.as_str())?,
            };
        }
        if ch.meta {
            m.insert(meta::AUTH_ENABLED, &[self.enabled as u8][..])?;
            m.insert(meta::AUTH_REVISION, &self.revision.to_be_bytes()[..])?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
