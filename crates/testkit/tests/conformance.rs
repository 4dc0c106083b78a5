//! The `Kv` conformance suite against the in-process store member and against a real etcd 3.4
//! (Debian `etcd-server`) through `RemoteKv`: what passes on one must pass on the other.

use std::sync::Arc;

use store::remote::RemoteKv;
use store::{Kv, Member, Settings};
use testkit::procs::{self, MemberOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let m: Arc<dyn Kv> = Member::start(dir.path(), Settings::default()).unwrap();
    testkit::conformance::run_all(m.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_etcd_conforms() {
    procs::require_etcd().unwrap();
    let etcd = procs::Member::start_etcd(MemberOpts::default())
        .await
        .unwrap();
    let kv = RemoteKv::connect(&[etcd.client_url.clone()], None)
        .await
        .unwrap();
    testkit::conformance::run_all(&kv).await;
}
