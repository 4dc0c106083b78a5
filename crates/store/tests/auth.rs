//! Auth enforcement on a member served on loopback, through raw gRPC calls that carry (or not) a
//! `token` metadata: tokens from Authenticate, invalid and revoked tokens, nested transactions,
//! the auth status, and writes authorized at a stale auth epoch.

use std::sync::Arc;

use etcd_api::*;
use http::uri::PathAndQuery;
use mvcc::{AuthOp, Op};
use store::{Member, Settings};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

async fn serve(dir: &std::path::Path) -> (Arc<Member>, Channel) {
    let member = Member::start(dir, Settings::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(store::server::accept_loop(
        listener,
        store::server::router(member.clone()),
        None,
    ));
    let ch = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    (member, ch)
}

async fn call<Q, R>(
    ch: &Channel,
    path: &'static str,
    req: Q,
    token: Option<&str>,
) -> Result<R, Status>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.unwrap();
    let mut r = Request::new(req);
    if let Some(t) = token {
        r.metadata_mut().insert("token", t.parse().unwrap());
    }
    let codec = ProstCodec::<Q, R>::default();
    Ok(g.unary(r, PathAndQuery::from_static(path), codec)
        .await?
        .into_inner())
}

async fn auth_op(
    ch: &Channel,
    path: &'static str,
    req: impl prost::Message + 'static,
    token: Option<&str>,
) {
    // Every auth change answers a message with only a header; any such message decodes it.
    call::<_, PbAuthEnableResponse>(ch, path, req, token)
        .await
        .unwrap();
}

async fn login(ch: &Channel, name: &str, password: &str) -> Result<String, Status> {
    let req = PbAuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    let r: PbAuthenticateResponse = call(ch, "/etcdserverpb.Auth/Authenticate", req, None).await?;
    Ok(r.token)
}

fn range(key: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn put(key: &str) -> PbPutRequest {
    PbPutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_permissions_and_stale_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (member, ch) = serve(dir.path()).await;
    let user = |name: &str, pw: &str| PbAuthUserAddRequest {
        name: name.into(),
        password: pw.into(),
        ..Default::default()
    };
    auth_op(
        &ch,
        "/etcdserverpb.Auth/UserAdd",
        user("root", "secret"),
        None,
    )
    .await;
    let grant = |u: &str, r: &str| PbAuthUserGrantRoleRequest {
        user: u.into(),
        role: r.into(),
    };
    auth_op(
        &ch,
        "/etcdserverpb.Auth/UserGrantRole",
        grant("root", "root"),
        None,
    )
    .await;
    auth_op(&ch, "/etcdserverpb.Auth/UserAdd", user("alice", "pw"), None).await;
    let op = Op::Auth(AuthOp::RoleAdd("rw".into()));
    member.submit(op).await.unwrap();
    let perm = auth_msgs::Permission {
        perm_type: auth_msgs::perm_type::READWRITE,
        key: b"a/".to_vec(),
        range_end: b"a0".to_vec(),
    };
    let op = Op::Auth(AuthOp::RoleGrantPermission {
        role: "rw".into(),
        perm,
    });
    member.submit(op).await.unwrap();
    auth_op(
        &ch,
        "/etcdserverpb.Auth/UserGrantRole",
        grant("alice", "rw"),
        None,
    )
    .await;

    // Before auth is enabled, Authenticate is refused and any token is invalid.
    let e = login(&ch, "alice", "pw").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: authentication is not enabled"
        )
    );
    let e = call::<_, PbRangeResponse>(&ch, RANGE, range("a/1"), Some("bogus.1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );

    auth_op(
        &ch,
        "/etcdserverpb.Auth/AuthEnable",
        PbAuthEnableRequest {},
        None,
    )
    .await;
    let status: auth_msgs::AuthStatusResponse = call(
        &ch,
        "/etcdserverpb.Auth/AuthStatus",
        auth_msgs::AuthStatusRequest {},
        None,
    )
    .await
    .unwrap();
    assert!(status.enabled);
    assert_eq!(status.auth_revision, 7);

    let alice = login(&ch, "alice", "pw").await.unwrap();
    let root = login(&ch, "root", "secret").await.unwrap();
    let e = login(&ch, "alice", "nope").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password"
        )
    );
    call::<_, PbRangeResponse>(&ch, RANGE, range("a/1"), Some(&alice))
        .await
        .unwrap();
    let e = call::<_, PbRangeResponse>(&ch, RANGE, range("b"), Some(&alice))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::PermissionDenied, "etcdserver: permission denied")
    );
    let e = call::<_, PbRangeResponse>(&ch, RANGE, range("a/1"), None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: user name is empty")
    );

    // A nested transaction is checked too (etcd 3.4 misses those).
    let op = |r| PbTxnRequestOp { request: Some(r) };
    let nested = PbTxnRequest {
        success: vec![op(PbTxnOpRequest::RequestPut(put("b")))],
        ..Default::default()
    };
    let txn = PbTxnRequest {
        success: vec![
            op(PbTxnOpRequest::RequestPut(put("a/1"))),
            op(PbTxnOpRequest::RequestTxn(nested)),
        ],
        ..Default::default()
    };
    let e = call::<_, PbTxnResponse>(&ch, TXN, txn.clone(), Some(&alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    call::<_, PbTxnResponse>(&ch, TXN, txn, Some(&root))
        .await
        .unwrap();

    // Admin calls need root.
    let e = call::<_, PbAuthUserListResponse>(
        &ch,
        "/etcdserverpb.Auth/UserList",
        PbAuthUserListRequest {},
        Some(&alice),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let users: PbAuthUserListResponse = call(
        &ch,
        "/etcdserverpb.Auth/UserList",
        PbAuthUserListRequest {},
        Some(&root),
    )
    .await
    .unwrap();
    assert_eq!(users.users, ["alice", "root"]);

    // A new password revokes the user's tokens.
    let change = PbAuthUserChangePasswordRequest {
        name: "alice".into(),
        password: "pw2".into(),
        ..Default::default()
    };
    auth_op(
        &ch,
        "/etcdserverpb.Auth/UserChangePassword",
        change,
        Some(&root),
    )
    .await;
    let e = call::<_, PbRangeResponse>(&ch, RANGE, range("a/1"), Some(&alice))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    login(&ch, "alice", "pw2").await.unwrap();

    // A write authorized before the auth store changed is refused when applied.
    let epoch = member.store.auth().epoch();
    member
        .submit(Op::Auth(AuthOp::RoleAdd("other".into())))
        .await
        .unwrap();
    let e = member
        .submit_at(Op::Put(put("a/2")), epoch)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old"
        )
    );

    // A write authorized while auth was off is refused once it is on.
    let e = member
        .submit_at(Op::Put(put("a/2")), store::auth::AUTH_OFF)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Disabling drops every token.
    auth_op(
        &ch,
        "/etcdserverpb.Auth/AuthDisable",
        PbAuthDisableRequest {},
        Some(&root),
    )
    .await;
    let e = call::<_, PbRangeResponse>(&ch, RANGE, range("a/1"), Some(&root))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    call::<_, PbRangeResponse>(&ch, RANGE, range("b"), None)
        .await
        .unwrap();

    // With auth off, a change to users or roles does not refuse writes authorized before it.
    member
        .submit(Op::Auth(AuthOp::RoleAdd("third".into())))
        .await
        .unwrap();
    member
        .submit_at(Op::Put(put("b")), store::auth::AUTH_OFF)
        .await
        .unwrap();
}
