//! Leader election against a real kybern API server (in process, embedded store): acquire,
//! renew, release on shutdown with an immediate takeover, a lease taken by someone else, and a
//! leader cut off from the API server that stops acting before anyone else starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use leaderelect::Config;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

struct Server {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let args = apiserver::ApiserverArgs::from_flags([
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--cert-dir={}", dir.path().join("pki").display()),
        "--etcd-compaction-interval=0".to_string(),
    ])
    .unwrap();
    tokio::spawn(apiserver::serve_on(args, l));
    let s = Server { _dir: dir, addr };
    let c = client(addr);
    let deadline = Instant::now() + WAIT;
    while Api::<Lease>::namespaced(c.clone(), "kube-system")
        .list(&Default::default())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the API server never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

fn client(addr: std::net::SocketAddr) -> kube::Client {
    let mut cfg = kube::Config::new(format!("https://{addr}").parse().unwrap());
    cfg.accept_invalid_certs = true;
    cfg.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).unwrap()
}

fn config(name: &str) -> Config {
    Config {
        namespace: "kube-system".into(),
        name: name.into(),
        identity: leaderelect::default_identity(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(500),
    }
}

async fn lease(c: &kube::Client, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(c.clone(), "kube-system")
        .get_opt(name)
        .await
        .unwrap()
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Who is acting, and the most that ever acted at once.
#[derive(Default)]
struct Acting {
    now: AtomicUsize,
    max: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl Acting {
    /// The work of candidate `who`: act until told to stop.
    fn work(
        self: &Arc<Self>,
        who: &'static str,
    ) -> impl FnOnce(
        CancellationToken,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
    > {
        let me = self.clone();
        move |leading: CancellationToken| {
            Box::pin(async move {
                let n = me.now.fetch_add(1, Ordering::SeqCst) + 1;
                me.max.fetch_max(n, Ordering::SeqCst);
                me.log.lock().unwrap().push(format!("{who} start"));
                // Stop acting when cancelled or aborted.
                struct Stop(Arc<Acting>, &'static str);
                impl Drop for Stop {
                    fn drop(&mut self) {
                        self.0.now.fetch_sub(1, Ordering::SeqCst);
                        self.0.log.lock().unwrap().push(format!("{} stop", self.1));
                    }
                }
                let _stop = Stop(me.clone(), who);
                leading.cancelled().await;
                Ok(())
            })
        }
    }

    fn running(&self, who: &str) -> bool {
        let log = self.log.lock().unwrap();
        log.iter()
            .rev()
            .find(|l| l.starts_with(who))
            .is_some_and(|l| l.ends_with("start"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_renew_release_and_takeover() {
    let s = server().await;
    let c = client(s.addr);
    let acting = Arc::new(Acting::default());
    let (a_cfg, b_cfg) = (config("test-lock"), config("test-lock"));
    let a_id = a_cfg.identity.clone();
    let b_id = b_cfg.identity.clone();
    let a_stop = CancellationToken::new();
    let a = tokio::spawn(leaderelect::run(
        c.clone(),
        a_cfg,
        a_stop.clone(),
        acting.work("a"),
    ));
    wait_until("a to lead", || async { acting.running("a") }).await;
    let l = lease(&c, "test-lock").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some(a_id.as_str()));
    assert_eq!(l.lease_duration_seconds, Some(3));
    assert_eq!(l.lease_transitions, Some(0));
    let first_renew = l.renew_time.clone();
    wait_until("a renewal", || {
        let c = c.clone();
        let first = first_renew.clone();
        async move {
            lease(&c, "test-lock")
                .await
                .unwrap()
                .spec
                .unwrap()
                .renew_time
                != first
        }
    })
    .await;

    // b waits while a renews; a's clean shutdown releases the lease and b takes it over.
    let b_stop = CancellationToken::new();
    let b = tokio::spawn(leaderelect::run(
        c.clone(),
        b_cfg,
        b_stop.clone(),
        acting.work("b"),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!acting.running("b"), "b acted while a held a renewed lease");
    let released = Instant::now();
    a_stop.cancel();
    a.await.unwrap().unwrap();
    wait_until("b to lead", || async { acting.running("b") }).await;
    println!(
        "b took over {:?} after a released the lease",
        released.elapsed()
    );
    let l = lease(&c, "test-lock").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some(b_id.as_str()));
    assert_eq!(l.lease_transitions, Some(1));
    b_stop.cancel();
    b.await.unwrap().unwrap();
    let l = lease(&c, "test-lock").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity, None, "released on shutdown");
    assert_eq!(l.lease_duration_seconds, Some(1));
    assert_eq!(
        acting.max.load(Ordering::SeqCst),
        1,
        "two leaders acted at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_is_taken_stops() {
    let s = server().await;
    let c = client(s.addr);
    let acting = Arc::new(Acting::default());
    let a = tokio::spawn(leaderelect::run(
        c.clone(),
        config("stolen"),
        CancellationToken::new(),
        acting.work("a"),
    ));
    wait_until("a to lead", || async { acting.running("a") }).await;
    let api = Api::<Lease>::namespaced(c.clone(), "kube-system");
    let mut l = api.get("stolen").await.unwrap();
    let spec = l.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(600);
    api.replace("stolen", &PostParams::default(), &l)
        .await
        .unwrap();
    let res = tokio::time::timeout(WAIT, a)
        .await
        .expect("a gave up")
        .unwrap();
    let err = res.expect_err("losing the lease is an error");
    assert!(format!("{err:#}").contains("lost"), "{err:#}");
    assert!(!acting.running("a"), "a still acts after losing the lease");
}

/// A TCP proxy to the API server that can be cut (every connection dropped, new ones refused).
async fn proxy(to: std::net::SocketAddr, cut: CancellationToken) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            if cut.is_cancelled() {
                continue;
            }
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut out) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    _ = cut.cancelled() => {}
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_stops_before_another_starts() {
    let s = server().await;
    let c = client(s.addr);
    let cut = CancellationToken::new();
    let via_proxy = client(proxy(s.addr, cut.clone()).await);
    let acting = Arc::new(Acting::default());
    let a = tokio::spawn(leaderelect::run(
        via_proxy,
        config("cut"),
        CancellationToken::new(),
        acting.work("a"),
    ));
    wait_until("a to lead", || async { acting.running("a") }).await;
    let b_stop = CancellationToken::new();
    let b = tokio::spawn(leaderelect::run(
        c.clone(),
        config("cut"),
        b_stop.clone(),
        acting.work("b"),
    ));
    cut.cancel();
    let res = tokio::time::timeout(WAIT, a)
        .await
        .expect("a gave up")
        .unwrap();
    assert!(res.is_err(), "a cut-off leader reports lost leadership");
    wait_until("b to lead", || async { acting.running("b") }).await;
    let log = acting.log.lock().unwrap().clone();
    println!("{log:?}");
    let a_stop = log.iter().position(|l| l == "a stop").unwrap();
    let b_start = log.iter().position(|l| l == "b start").unwrap();
    assert!(a_stop < b_start, "b started before a stopped: {log:?}");
    assert_eq!(acting.max.load(Ordering::SeqCst), 1);
    b_stop.cancel();
    b.await.unwrap().unwrap();
}
