//! Authentication and authorization of client requests, as etcd 3.4 does them with
//! `--auth-token simple`: who a request comes from (a `token` from Authenticate in the gRPC
//! metadata, else the common name of a verified TLS client certificate under
//! `--client-cert-auth`), and whether that user may do what the request asks (the checks of
//! etcd's `authApplierV3`, over `mvcc::AuthState`).
//!
//! A check answers the auth store's epoch it was made at (or `AUTH_OFF`); the apply thread refuses
//! a write whose epoch is no longer current (etcd's "revision of auth store is old"), so that a permission
//! revoked meanwhile is never bypassed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_api::*;
use mvcc::{Access, AuthState, Caller};
use parking_lot::Mutex;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::member::Member;

/// The epoch of a request authorized while auth was off: it stays valid as long as auth is off
/// (changes to users and roles then do not concern it).
pub const AUTH_OFF: u64 = u64::MAX;

/// The metadata keys etcd reads a token from (gRPC clients, then the gRPC gateway).
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];
const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The common name of the verified client certificate of a TLS connection, put in every request's
/// extensions by the server.
#[derive(Debug, Clone)]
pub struct PeerCommonName(pub String);

struct Token {
    user: String,
    expires: Instant,
}

/// etcd's simple tokens: opaque, kept in memory, valid for `ttl` since last use, dropped when
/// auth is disabled or their user is deleted or changes password.
pub struct Tokens {
    ttl: Duration,
    map: Mutex<HashMap<String, Token>>,
    next: Mutex<u64>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            map: Mutex::new(HashMap::new()),
            next: Mutex::new(0),
        }
    }

    /// A new token for `user`: 16 random letters, a dot and a sequence number, as etcd's.
    pub fn assign(&self, user: &str) -> String {
        let prefix: String = (0..16)
            .map(|_| TOKEN_LETTERS[rand::random_range(0..TOKEN_LETTERS.len())] as char)
            .collect();
        let n = {
            let mut n = self.next.lock();
            *n += 1;
            *n
        };
        let token = format!("{prefix}.{n}");
        let now = Instant::now();
        let mut map = self.map.lock();
        map.retain(|_, t| t.expires > now);
        map.insert(
            token.clone(),
            Token {
                user: user.to_string(),
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The user of a live token, whose lifetime starts again.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let t = map.get_mut(token)?;
        if t.expires <= now {
            map.remove(token);
            return None;
        }
        t.expires = now + self.ttl;
        Some(t.user.clone())
    }

    pub fn invalidate_user(&self, user: &str) {
        self.map.lock().retain(|_, t| t.user != user);
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }
}

/// Where a request's credentials come from: its metadata and its connection.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    token: Option<String>,
    common_name: Option<String>,
}

impl Credentials {
    pub fn of<T>(r: &Request<T>) -> Credentials {
        Credentials::from_parts(r.metadata(), r.extensions())
    }

    pub fn from_parts(md: &MetadataMap, ext: &tonic::Extensions) -> Credentials {
        let token = TOKEN_KEYS
            .iter()
            .find_map(|k| md.get(*k))
            .map(|v| v.to_str().unwrap_or("").to_string());
        Credentials {
            token,
            common_name: ext.get::<PeerCommonName>().map(|c| c.0.clone()),
        }
    }
}

impl Member {
    /// etcd's `AuthInfoFromCtx`: the caller of a request, if it says who it is. A token that is
    /// not (or no longer) valid is an error, whether or not auth is enabled.
    pub fn caller(&self, c: &Credentials) -> Result<Option<Caller>, Status> {
        let revision = self.store.auth().revision();
        if let Some(t) = &c.token {
            let user = self.tokens.user(t).ok_or_else(errors::invalid_auth_token)?;
            return Ok(Some(Caller { user, revision }));
        }
        if self.settings.client_cert_auth {
            if let Some(cn) = &c.common_name {
                return Ok(Some(Caller {
                    user: cn.clone(),
                    revision,
                }));
            }
        }
        Ok(None)
    }

    /// Runs `check` on the auth store for the caller of `creds`; answers the epoch to submit a
    /// write at.
    pub fn authorize(
        &self,
        creds: &Credentials,
        check: impl FnOnce(&AuthState, Option<&Caller>) -> Result<(), Status>,
    ) -> Result<u64, Status> {
        let who = self.caller(creds)?;
        let auth = self.store.auth();
        check(&auth, who.as_ref())?;
        Ok(if auth.enabled() {
            auth.epoch()
        } else {
            AUTH_OFF
        })
    }

    /// Only a root user may (any caller while auth is off); answers the epoch.
    pub fn authorize_admin(&self, creds: &Credentials) -> Result<u64, Status> {
        self.authorize(creds, |a, who| a.check_admin(who))
    }

    /// A Put: write on its key, read too for prev_kv, and write on every key of its lease
    /// (which the put may move to another lease's keys' fate).
    pub fn authorize_put(&self, creds: &Credentials, p: &PbPutRequest) -> Result<u64, Status> {
        let lease_keys = self.lease_keys_if_enabled(p.lease);
        self.authorize(creds, |a, who| {
            check_put(a, who, p)?;
            for k in &lease_keys {
                a.check(who, k, &[], Access::Write)?;
            }
            Ok(())
        })
    }

    /// A lease revoke deletes the lease's keys: write on each.
    pub fn authorize_lease_revoke(&self, creds: &Credentials, id: i64) -> Result<u64, Status> {
        let keys = self.lease_keys_if_enabled(id);
        self.authorize(creds, |a, who| {
            keys.iter()
                .try_for_each(|k| a.check(who, k, &[], Access::Write))
        })
    }

    /// A transaction: its compares and every operation, nested transactions included, in
    /// both branches; a put's lease keys as for a single put.
    pub fn authorize_txn(&self, creds: &Credentials, t: &PbTxnRequest) -> Result<u64, Status> {
        let mut leases = Vec::new();
        txn_leases(t, &mut leases);
        let lease_keys: Vec<Vec<u8>> = leases
            .into_iter()
            .flat_map(|l| self.lease_keys_if_enabled(l))
            .collect();
        self.authorize(creds, |a, who| {
            check_txn(a, who, t)?;
            for k in &lease_keys {
                a.check(who, k, &[], Access::Write)?;
            }
            Ok(())
        })
    }

    /// Lease keys are read before the auth store is locked (see the lock order in mvcc).
    fn lease_keys_if_enabled(&self, lease: i64) -> Vec<Vec<u8>> {
        if lease == 0 || !self.store.auth().enabled() {
            return Vec::new();
        }
        self.store.lease_keys(lease)
    }

    /// Applies a successful auth change to the tokens, as etcd's token provider does.
    pub fn after_auth_change(&self, op: &mvcc::AuthOp) {
        match op {
            mvcc::AuthOp::Disable => self.tokens.clear(),
            mvcc::AuthOp::UserDelete(u) | mvcc::AuthOp::UserChangePassword { name: u, .. } => {
                self.tokens.invalidate_user(u)
            }
            _ => {}
        }
    }
}

/// etcd's maintenance service answers auth failures with the auth store's own error, unmapped:
/// code Unknown and the `auth:` text.
pub fn maintenance_error(s: Status) -> Status {
    let text = match s.message() {
        "etcdserver: permission denied" => "auth: permission denied",
        "etcdserver: user name is empty" => "auth: user name is empty",
        "etcdserver: user name not found" => "auth: user not found",
        "etcdserver: invalid auth token" => "auth: invalid auth token",
        "etcdserver: revision of auth store is old" => "auth: revision in header is old",
        _ => return s,
    };
    Status::unknown(text)
}

pub fn check_range(a: &AuthState, who: Option<&Caller>, r: &PbRangeRequest) -> Result<(), Status> {
    a.check(who, &r.key, &r.range_end, Access::Read)
}

fn check_put(a: &AuthState, who: Option<&Caller>, p: &PbPutRequest) -> Result<(), Status> {
    a.check(who, &p.key, &[], Access::Write)?;
    if p.prev_kv {
        a.check(who, &p.key, &[], Access::Read)?;
    }
    Ok(())
}

pub fn check_delete(
    a: &AuthState,
    who: Option<&Caller>,
    d: &PbDeleteRequest,
) -> Result<(), Status> {
    a.check(who, &d.key, &d.range_end, Access::Write)?;
    if d.prev_kv {
        a.check(who, &d.key, &d.range_end, Access::Read)?;
    }
    Ok(())
}

fn check_txn(a: &AuthState, who: Option<&Caller>, t: &PbTxnRequest) -> Result<(), Status> {
    for c in &t.compare {
        a.check(who, &c.key, &c.range_end, Access::Read)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(PbTxnOpRequest::RequestRange(r)) => check_range(a, who, r)?,
            Some(PbTxnOpRequest::RequestPut(p)) => check_put(a, who, p)?,
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => check_delete(a, who, d)?,
            Some(PbTxnOpRequest::RequestTxn(n)) => check_txn(a, who, n)?,
            None => {}
        }
    }
    Ok(())
}

fn txn_leases(t: &PbTxnRequest, out: &mut Vec<i64>) {
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(PbTxnOpRequest::RequestTxn(n)) => txn_leases(n, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_invalidated() {
        let t = Tokens::new(Duration::from_millis(50));
        let a = t.assign("alice");
        let b = t.assign("bob");
        assert_ne!(a, b);
        assert_eq!(a.split('.').next().unwrap().len(), 16);
        assert_eq!(t.user(&a).as_deref(), Some("alice"));
        t.invalidate_user("alice");
        assert_eq!(t.user(&a), None);
        assert_eq!(t.user(&b).as_deref(), Some("bob"));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.user(&b), None);
        let c = t.assign("carol");
        t.clear();
        assert_eq!(t.user(&c), None);
        assert_eq!(t.user("bogus"), None);
    }
}
