//! The `Kv` conformance suite against a `kybern store` process over gRPC (`RemoteKv`): the same
//! suite the embedded member and real etcd 3.4 pass (crates/testkit/tests/conformance.rs), here
//! through kybern's own gRPC services.

use std::path::Path;

use store::remote::RemoteKv;
use testkit::procs::{Member, MemberOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kybern_over_grpc_conforms() {
    let m = Member::start_kybern(
        Path::new(env!("CARGO_BIN_EXE_kybern")),
        MemberOpts::default(),
    )
    .await
    .unwrap();
    let kv = RemoteKv::connect(&[m.client_url.clone()], None)
        .await
        .unwrap();
    testkit::conformance::run_all(&kv).await;
}
