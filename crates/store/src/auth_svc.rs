//! The etcd v3 Auth service (`etcdserverpb.Auth`) as a thin adapter over `Member` and the auth
//! store. etcd-client does not export every message of this service (AuthStatus), so its tonic
//! trait cannot be implemented; this adapter routes the service's methods itself, each through
//! tonic's own unary handling (codec, limits, compression, status trailers).
//!
//! Who may call what is etcd 3.4's: changes and lists need a root user once auth is enabled; a
//! user may read itself, and a role's holders the role; Authenticate needs no credentials.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use etcd_api::auth_msgs::{recode, AuthStatusRequest, AuthStatusResponse, Permission};
use etcd_api::*;
use futures::future::BoxFuture;
use mvcc::{AuthOp, OpResult};
use tonic::body::Body;
use tonic::{Request, Response, Status};

use crate::auth::Credentials;
use crate::member::Member;

type Answer<T> = Result<Response<T>, Status>;

#[derive(Clone)]
pub struct AuthService {
    pub member: Arc<Member>,
    /// Largest request accepted, in bytes.
    pub limit: usize,
}

impl tonic::server::NamedService for AuthService {
    const NAME: &'static str = "etcdserverpb.Auth";
}

impl tower::Service<http::Request<Body>> for AuthService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (m, limit) = (self.member.clone(), self.limit);
        Box::pin(async move { Ok(route(m, limit, req).await) })
    }
}

/// Decodes the request, runs `f` and encodes its answer, as tonic's generated servers do.
async fn unary<Req, Resp, F, Fut>(
    req: http::Request<Body>,
    limit: usize,
    f: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Request<Req>) -> Fut + Send,
    Fut: Future<Output = Answer<Resp>> + Send,
{
    let codec = tonic_prost::ProstCodec::<Resp, Req>::default();
    let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(limit), None);
    grpc.unary(tower::service_fn(f), req).await
}

async fn route(m: Arc<Member>, limit: usize, req: http::Request<Body>) -> http::Response<Body> {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    macro_rules! serve {
        ($handler:ident) => {
            unary(req, limit, move |r| {
                let m = m.clone();
                async move { $handler(&m, r).await }
            })
            .await
        };
    }
    match method.as_str() {
        "AuthEnable" => serve!(auth_enable),
        "AuthDisable" => serve!(auth_disable),
        "AuthStatus" => serve!(auth_status),
        "Authenticate" => serve!(authenticate),
        "UserAdd" => serve!(user_add),
        "UserGet" => serve!(user_get),
        "UserList" => serve!(user_list),
        "UserDelete" => serve!(user_delete),
        "UserChangePassword" => serve!(user_change_password),
        "UserGrantRole" => serve!(user_grant_role),
        "UserRevokeRole" => serve!(user_revoke_role),
        "RoleAdd" => serve!(role_add),
        "RoleGet" => serve!(role_get),
        "RoleList" => serve!(role_list),
        "RoleDelete" => serve!(role_delete),
        "RoleGrantPermission" => serve!(role_grant_permission),
        "RoleRevokePermission" => serve!(role_revoke_permission),
        _ => Status::unimplemented(format!("unknown method {method} of etcdserverpb.Auth"))
            .into_http(),
    }
}

fn header(m: &Member) -> Option<PbResponseHeader> {
    m.header(m.store.revision())
}

/// Applies an auth change for a root caller (any caller while auth is off); answers the header.
async fn change<T>(
    m: &Member,
    r: &Request<T>,
    op: AuthOp,
) -> Result<Option<PbResponseHeader>, Status> {
    let epoch = m.authorize_admin(&Credentials::of(r))?;
    change_at(m, op, epoch).await
}

async fn change_at(m: &Member, op: AuthOp, epoch: u64) -> Result<Option<PbResponseHeader>, Status> {
    match m.submit_at(mvcc::Op::Auth(op.clone()), epoch).await? {
        OpResult::Auth(_) => {
            m.after_auth_change(&op);
            tracing::info!(?op, "changed the auth store");
            Ok(header(m))
        }
        _ => Err(Status::internal("unexpected answer")),
    }
}

/// bcrypt, off the async threads (it is slow on purpose).
async fn hash(m: &Member, password: String) -> Result<Vec<u8>, Status> {
    let cost = m.settings.bcrypt_cost;
    tokio::task::spawn_blocking(move || {
        bcrypt::hash_with_result(password, cost)
            .map(|h| h.format_for_version(bcrypt::Version::TwoA).into_bytes())
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| Status::unknown(format!("failed to hash the password: {e}")))
}

async fn auth_enable(m: &Member, r: Request<PbAuthEnableRequest>) -> Answer<PbAuthEnableResponse> {
    let header = change(m, &r, AuthOp::Enable).await?;
    Ok(Response::new(PbAuthEnableResponse { header }))
}

async fn auth_disable(
    m: &Member,
    r: Request<PbAuthDisableRequest>,
) -> Answer<PbAuthDisableResponse> {
    let header = change(m, &r, AuthOp::Disable).await?;
    Ok(Response::new(PbAuthDisableResponse { header }))
}

async fn auth_status(m: &Member, _: Request<AuthStatusRequest>) -> Answer<AuthStatusResponse> {
    let (enabled, auth_revision) = {
        let a = m.store.auth();
        (a.enabled(), a.revision())
    };
    Ok(Response::new(AuthStatusResponse {
        header: header(m),
        enabled,
        auth_revision,
    }))
}

/// Checks a user's password; a token for the user then, unless the auth store changed while
/// the (slow) check ran, in which case it is checked again, as etcd does.
async fn authenticate(
    m: &Member,
    r: Request<PbAuthenticateRequest>,
) -> Answer<PbAuthenticateResponse> {
    let r = r.into_inner();
    loop {
        let (hashed, revision) = {
            let a = m.store.auth();
            if !a.enabled() {
                return Err(errors::auth_not_enabled());
            }
            let user = a.user(&r.name).ok_or_else(errors::auth_failed)?;
            if user.no_password() {
                return Err(errors::no_password_user());
            }
            (
                String::from_utf8_lossy(&user.password).into_owned(),
                a.revision(),
            )
        };
        let password = r.password.clone();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hashed).unwrap_or(false))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        if !ok {
            tracing::warn!(user = %r.name, "invalid authentication was requested");
            return Err(errors::auth_failed());
        }
        if m.store.auth().revision() == revision {
            let token = m.tokens.assign(&r.name);
            return Ok(Response::new(PbAuthenticateResponse {
                header: header(m),
                token,
            }));
        }
    }
}

async fn user_add(m: &Member, r: Request<PbAuthUserAddRequest>) -> Answer<PbAuthUserAddResponse> {
    let epoch = m.authorize_admin(&Credentials::of(&r))?;
    let r = r.into_inner();
    let no_password = r.options.is_some_and(|o| o.no_password);
    if r.name.is_empty() {
        return Err(errors::user_empty());
    }
    let password = if no_password {
        Vec::new()
    } else {
        hash(m, r.password).await?
    };
    let op = AuthOp::UserAdd {
        name: r.name,
        password,
        no_password,
    };
    let header = change_at(m, op, epoch).await?;
    Ok(Response::new(PbAuthUserAddResponse { header }))
}

/// Root users may read any user, a user itself.
async fn user_get(m: &Member, r: Request<PbAuthUserGetRequest>) -> Answer<PbAuthUserGetResponse> {
    let who = m.caller(&Credentials::of(&r))?;
    let r = r.into_inner();
    let a = m.store.auth();
    if let Err(e) = a.check_admin(who.as_ref()) {
        if who.as_ref().is_none_or(|w| w.user != r.name) {
            return Err(e);
        }
    }
    let roles = a
        .user(&r.name)
        .ok_or_else(errors::user_not_found)?
        .roles
        .clone();
    Ok(Response::new(PbAuthUserGetResponse {
        header: header(m),
        roles,
    }))
}

async fn user_list(
    m: &Member,
    r: Request<PbAuthUserListRequest>,
) -> Answer<PbAuthUserListResponse> {
    m.authorize_admin(&Credentials::of(&r))?;
    let users = m.store.auth().user_names();
    Ok(Response::new(PbAuthUserListResponse {
        header: header(m),
        users,
    }))
}

async fn user_delete(
    m: &Member,
    r: Request<PbAuthUserDeleteRequest>,
) -> Answer<PbAuthUserDeleteResponse> {
    let op = AuthOp::UserDelete(r.get_ref().name.clone());
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthUserDeleteResponse { header }))
}

async fn user_change_password(
    m: &Member,
    r: Request<PbAuthUserChangePasswordRequest>,
) -> Answer<PbAuthUserChangePasswordResponse> {
    let epoch = m.authorize_admin(&Credentials::of(&r))?;
    let r = r.into_inner();
    let password = hash(m, r.password).await?;
    let op = AuthOp::UserChangePassword {
        name: r.name,
        password,
    };
    let header = change_at(m, op, epoch).await?;
    Ok(Response::new(PbAuthUserChangePasswordResponse { header }))
}

async fn user_grant_role(
    m: &Member,
    r: Request<PbAuthUserGrantRoleRequest>,
) -> Answer<PbAuthUserGrantRoleResponse> {
    let op = AuthOp::UserGrantRole {
        user: r.get_ref().user.clone(),
        role: r.get_ref().role.clone(),
    };
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthUserGrantRoleResponse { header }))
}

async fn user_revoke_role(
    m: &Member,
    r: Request<PbAuthUserRevokeRoleRequest>,
) -> Answer<PbAuthUserRevokeRoleResponse> {
    let op = AuthOp::UserRevokeRole {
        user: r.get_ref().name.clone(),
        role: r.get_ref().role.clone(),
    };
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthUserRevokeRoleResponse { header }))
}

async fn role_add(m: &Member, r: Request<PbAuthRoleAddRequest>) -> Answer<PbAuthRoleAddResponse> {
    let op = AuthOp::RoleAdd(r.get_ref().name.clone());
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthRoleAddResponse { header }))
}

/// Root users may read any role, a user the roles it has.
async fn role_get(m: &Member, r: Request<PbAuthRoleGetRequest>) -> Answer<PbAuthRoleGetResponse> {
    let who = m.caller(&Credentials::of(&r))?;
    let r = r.into_inner();
    let a = m.store.auth();
    if let Err(e) = a.check_admin(who.as_ref()) {
        if !who.as_ref().is_some_and(|w| a.has_role(&w.user, &r.role)) {
            return Err(e);
        }
    }
    let role = a.role(&r.role).ok_or_else(errors::role_not_found)?;
    Ok(Response::new(PbAuthRoleGetResponse {
        header: header(m),
        perm: role.key_permission.iter().map(recode).collect(),
    }))
}

async fn role_list(
    m: &Member,
    r: Request<PbAuthRoleListRequest>,
) -> Answer<PbAuthRoleListResponse> {
    m.authorize_admin(&Credentials::of(&r))?;
    let roles = m.store.auth().role_names();
    Ok(Response::new(PbAuthRoleListResponse {
        header: header(m),
        roles,
    }))
}

async fn role_delete(
    m: &Member,
    r: Request<PbAuthRoleDeleteRequest>,
) -> Answer<PbAuthRoleDeleteResponse> {
    let op = AuthOp::RoleDelete(r.get_ref().role.clone());
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthRoleDeleteResponse { header }))
}

async fn role_grant_permission(
    m: &Member,
    r: Request<PbAuthRoleGrantPermissionRequest>,
) -> Answer<PbAuthRoleGrantPermissionResponse> {
    let epoch = m.authorize_admin(&Credentials::of(&r))?;
    let r = r.into_inner();
    let perm: Permission = r
        .perm
        .as_ref()
        .map(recode)
        .ok_or_else(errors::permission_not_given)?;
    let op = AuthOp::RoleGrantPermission { role: r.name, perm };
    let header = change_at(m, op, epoch).await?;
    Ok(Response::new(PbAuthRoleGrantPermissionResponse { header }))
}

async fn role_revoke_permission(
    m: &Member,
    r: Request<PbAuthRoleRevokePermissionRequest>,
) -> Answer<PbAuthRoleRevokePermissionResponse> {
    let op = AuthOp::RoleRevokePermission {
        role: r.get_ref().role.clone(),
        key: r.get_ref().key.clone(),
        range_end: r.get_ref().range_end.clone(),
    };
    let header = change(m, &r, op).await?;
    Ok(Response::new(PbAuthRoleRevokePermissionResponse { header }))
}
