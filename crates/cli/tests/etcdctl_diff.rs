//! Differential etcdctl scenarios: the same scripts of real `etcdctl` 3.4 commands
//! (tests/etcdctl/*.sh) run against a fresh real etcd 3.4 and a fresh kybern store; their outputs
//! (stdout, stderr, exit code of every step) must be equal once what differs by nature is masked:
//! member/cluster/lease ids, URLs and ports, db sizes, hashes, raft terms and indexes, times, the
//! server version. Revisions are not masked: both stores start empty.
//!
//! The core scenario also runs against a follower-or-leader of a three-member cluster of each kind,
//! one after the other in the same network namespaces (testkit's `NetLab`): same peer URLs and
//! token, hence the same member and cluster ids, as both derive them the same way.
//!
//! On a mismatch the test prints a unified diff (etcd is `---`, kybern is `+++`) and keeps both
//! masked outputs under `target/tmp/etcdctl-diff/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::{Captures, Regex};
use testkit::cluster::Cluster;
use testkit::netlab::NetLab;
use testkit::procs::{Kind, Member, MemberOpts};

fn kybern() -> Kind {
    Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")))
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/etcdctl")
}

/// What a masked run needs to know about its member.
struct Ids {
    client_url: String,
    peer_url: String,
    member_id: u64,
    cluster_id: u64,
}

async fn ids(m: &Member) -> Ids {
    let mut c = m.client().await.expect("connect");
    let st = c.status().await.expect("status");
    let h = st.header().expect("status has a header");
    Ids {
        client_url: m.client_url.clone(),
        peer_url: m.peer_url.clone(),
        member_id: h.member_id(),
        cluster_id: h.cluster_id(),
    }
}

/// Runs `tests/etcdctl/<script>` against a member (bounded by `timeout`), in `work`.
fn run_script(script: &str, m_url: &str, work: &Path) -> String {
    let path = scenario_dir().join(script);
    let out = Command::new("timeout")
        .args(["-k", "5", "300"])
        .arg("bash")
        .arg(&path)
        .arg(m_url)
        .arg(work)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} itself failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn re(s: &str) -> Regex {
    Regex::new(s).unwrap()
}

/// Masks what differs between two members by nature.
fn mask(out: &str, ids: &Ids) -> String {
    let mut s = out.to_string();
    let addr = |u: &str| u.split("://").nth(1).unwrap_or(u).to_string();
    s = s.replace(&ids.client_url, "<CLIENT_URL>");
    s = s.replace(&ids.peer_url, "<PEER_URL>");
    s = s.replace(&addr(&ids.client_url), "<CLIENT_ADDR>");
    s = s.replace(&addr(&ids.peer_url), "<PEER_ADDR>");

    // Lease ids: numbered in order of grant, in hex (as etcdctl prints them, maybe zero-padded)
    // and decimal (json). Ids that never were granted (1234abcd) stay.
    let mut leases: Vec<u64> = Vec::new();
    for c in re(r"lease ([0-9a-f]{1,16}) granted").captures_iter(out) {
        let id = u64::from_str_radix(&c[1], 16).unwrap();
        if !leases.contains(&id) {
            leases.push(id);
        }
    }
    // Lock and election keys carry the session's lease id: <name>/<hex id>.
    for c in re(r"(?m)\b(?:mylock|myelection)/([0-9a-f]{1,16})\b").captures_iter(out) {
        let id = u64::from_str_radix(&c[1], 16).unwrap();
        if !leases.contains(&id) {
            leases.push(id);
        }
    }
    let mut names: Vec<(String, String)> = Vec::new();
    let mut id_forms = |id: u64, label: String| {
        if id == 0 {
            return;
        }
        names.push((format!("{id:016x}"), label.clone()));
        names.push((format!("{id:x}"), label.clone()));
        names.push((format!("{id}"), label));
    };
    id_forms(ids.member_id, "<MEMBER_ID>".into());
    id_forms(ids.cluster_id, "<CLUSTER_ID>".into());
    for (i, id) in leases.iter().enumerate() {
        id_forms(*id, format!("<LEASE{}>", i + 1));
    }
    // Longest forms first, whole words only.
    names.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
    let by_form: HashMap<String, String> = names.into_iter().rev().collect();
    s = re(r"\b[0-9a-f]{1,20}\b")
        .replace_all(&s, |c: &Captures| {
            by_form
                .get(&c[0])
                .cloned()
                .unwrap_or_else(|| c[0].to_string())
        })
        .into_owned();

    let rules: &[(&str, &str)] = &[
        // client log lines
        (r#""ts":("[^"]*"|[0-9.e+]+)"#, r#""ts":<TS>"#),
        (
            r#"endpoint://client-[0-9a-f-]+/"#,
            "endpoint://client-<UUID>/",
        ),
        (r#""took":("[^"]*"|[0-9.e-]+)"#, r#""took":<TOOK>"#),
        (r"took = \S+", "took = <TOOK>"),
        (r#""size":"[^"]*""#, r#""size":<SIZE>"#),
        // raft terms and indexes, sizes, hashes, versions
        (r#""raft_term":\d+"#, r#""raft_term":<TERM>"#),
        (r#""RaftTerm" : \d+"#, r#""RaftTerm" : <TERM>"#),
        (r#""raftTerm":\d+"#, r#""raftTerm":<TERM>"#),
        (r#""raftIndex":\d+"#, r#""raftIndex":<INDEX>"#),
        (r#""raftAppliedIndex":\d+"#, r#""raftAppliedIndex":<INDEX>"#),
        (r#""dbSize":\d+"#, r#""dbSize":<SIZE>"#),
        (r#""dbSizeInUse":\d+"#, r#""dbSizeInUse":<SIZE>"#),
        (r#""version":"[^"]*""#, r#""version":<VERSION>"#),
        (r#""hash":\d+"#, r#""hash":<HASH>"#),
        (r#""totalKey":\d+"#, r#""totalKey":<N>"#),
        (r#""totalSize":\d+"#, r#""totalSize":<SIZE>"#),
        // lease time left (granted TTLs stay)
        (r"remaining\(\d+s\)", "remaining(<TTL>s)"),
        (r#""ttl":\d+"#, r#""ttl":<TTL>"#),
    ];
    for (pat, rep) in rules {
        s = re(pat).replace_all(&s, *rep).into_owned();
    }
    // The keys of a lease come in map order in etcd (random): compare them sorted.
    s = re(r"attached keys\(\[([^\]]*)\]\)")
        .replace_all(&s, |c: &Captures| {
            let mut keys: Vec<&str> = c[1].split(' ').collect();
            keys.sort_unstable();
            format!("attached keys([{}])", keys.join(" "))
        })
        .into_owned();
    s = re(r#""keys":\[([^\]]*)\]"#)
        .replace_all(&s, |c: &Captures| {
            let mut keys: Vec<&str> = c[1].split(',').collect();
            keys.sort_unstable();
            format!(r#""keys":[{}]"#, keys.join(","))
        })
        .into_owned();
    // `endpoint status` / `endpoint hashkv` simple and table rows: mask version, db size, raft
    // term, raft index, raft applied index (status) or the hash (hashkv).
    let mut lines = Vec::new();
    let mut in_lease_list = false;
    for line in s.lines() {
        // `lease list`: ids of leases this run did not see granted (lock and election sessions)
        if line.starts_with("found ") && line.ends_with(" leases") {
            in_lease_list = true;
        } else if in_lease_list && re(r"^[0-9a-f]{1,16}$").is_match(line) {
            lines.push("<LEASE?>".to_string());
            continue;
        } else if in_lease_list && re(r"^<LEASE\d+>$").is_match(line) {
        } else {
            in_lease_list = false;
        }
        let table = line.starts_with('|');
        let cells: Vec<String> = if table {
            line.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        } else {
            line.split(", ").map(str::to_string).collect()
        };
        let status_row = cells.len() >= 9
            && (cells[0] == "<CLIENT_URL>" || cells[0] == "<CLIENT_ADDR>")
            && cells[1] == "<MEMBER_ID>"
            && (cells[4] == "true" || cells[4] == "false");
        let hash_row = cells.len() == 2
            && (cells[0] == "<CLIENT_URL>" || cells[0] == "<CLIENT_ADDR>")
            && !table
            && cells[1].chars().all(|c| c.is_ascii_digit());
        let mut cells = cells;
        if status_row {
            for i in [2, 3, 6, 7, 8] {
                cells[i] = "<MASKED>".into();
            }
        }
        if hash_row {
            cells[1] = "<HASH>".into();
        }
        let line = if table {
            format!("| {} |", cells.join(" | "))
        } else if line.starts_with('+') && line.ends_with('+') {
            // table borders: widths follow the (masked) contents
            re(r"-+").replace_all(line, "-").into_owned()
        } else if status_row || hash_row {
            cells.join(", ")
        } else {
            line.to_string()
        };
        lines.push(line);
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The steps (`### ` headers) whose blocks differ.
fn differing_steps(a: &str, b: &str) -> Vec<String> {
    fn blocks(s: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        for line in s.lines() {
            if let Some(h) = line.strip_prefix("### ") {
                v.push((h.to_string(), String::new()));
            } else if let Some(last) = v.last_mut() {
                last.1.push_str(line);
                last.1.push('\n');
            }
        }
        v
    }
    let (a, b) = (blocks(a), blocks(b));
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), _) => out.push(x.0.clone()),
            (None, Some(y)) => out.push(y.0.clone()),
            (None, None) => {}
        }
    }
    out
}

fn unified_diff(a: &Path, b: &Path) -> String {
    let out = Command::new("diff")
        .args(["-u", "--label", "etcd", "--label", "kybern"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff(1)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn differential(script: &str) {
    testkit::procs::require_etcd().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (etcd, kyb) = tokio::join!(
        Member::start(Kind::Etcd, MemberOpts::default()),
        Member::start(kybern(), MemberOpts::default()),
    );
    let etcd = etcd.unwrap();
    let kyb = kyb.unwrap();
    let (etcd_ids, kyb_ids) = (ids(&etcd).await, ids(&kyb).await);

    let (we, wk) = (tmp.path().join("etcd"), tmp.path().join("kybern"));
    let (eu, ku) = (etcd.client_url.clone(), kyb.client_url.clone());
    let s1 = script.to_string();
    let s2 = script.to_string();
    let we2 = we.clone();
    let wk2 = wk.clone();
    let te = std::thread::spawn(move || run_script(&s1, &eu, &we2));
    let tk = std::thread::spawn(move || run_script(&s2, &ku, &wk2));
    let (raw_e, raw_k) = (te.join().unwrap(), tk.join().unwrap());
    let (me, mk) = (mask(&raw_e, &etcd_ids), mask(&raw_k, &kyb_ids));

    report(script, &me, &mk, &raw_e, &raw_k, &kyb.stderr_path());
}

/// Keeps both outputs under target/tmp/etcdctl-diff/ and fails with a diff when they differ.
fn report(script: &str, me: &str, mk: &str, raw_e: &str, raw_k: &str, kybern_log: &Path) {
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcdctl-diff");
    std::fs::create_dir_all(&keep).unwrap();
    let stem = script.trim_end_matches(".sh");
    let (fe, fk) = (
        keep.join(format!("{stem}.etcd.txt")),
        keep.join(format!("{stem}.kybern.txt")),
    );
    std::fs::write(&fe, me).unwrap();
    std::fs::write(&fk, mk).unwrap();
    std::fs::write(keep.join(format!("{stem}.etcd.raw.txt")), raw_e).unwrap();
    std::fs::write(keep.join(format!("{stem}.kybern.raw.txt")), raw_k).unwrap();
    if me != mk {
        let steps = differing_steps(me, mk);
        panic!(
            "etcdctl output differs between etcd 3.4 and kybern in {} step(s) of {script}:\n  {}\n\n\
             {}\n(masked outputs kept in {} and {}; kybern's log: {})",
            steps.len(),
            steps.join("\n  "),
            unified_diff(&fe, &fk),
            fe.display(),
            fk.display(),
            kybern_log.display(),
        );
    }
}

/// Runs `script` against member 0 of a new three-member cluster of `kind` in `lab`; the raw output
/// and member 0's ids.
async fn on_cluster(kind: Kind, lab: &NetLab, script: &str, work: PathBuf) -> (String, Ids) {
    let c = Cluster::start_in_lab(kind, lab, 3, &[]).await.unwrap();
    let ids = ids(&c.members[0]).await;
    let (s, url) = (script.to_string(), c.members[0].client_url.clone());
    let raw = tokio::task::spawn_blocking(move || run_script(&s, &url, &work))
        .await
        .unwrap();
    (raw, ids)
}

/// What differs between two runs on clusters by chance: which member leads.
fn mask_leader(s: &str) -> String {
    let s = re(r#""leader":(\d+|<MEMBER_ID>)"#).replace_all(s, r#""leader":<LEADER>"#);
    let s = re(r"(?m)^(<CLIENT_(?:URL|ADDR)>, <MEMBER_ID>, <MASKED>, <MASKED>, )(true|false),")
        .replace_all(&s, "${1}<IS_LEADER>,");
    re(r"(?m)^(\| <CLIENT_(?:URL|ADDR)> \| <MEMBER_ID> \| <MASKED> \| <MASKED> \| )(true|false) \|")
        .replace_all(&s, "${1}<IS_LEADER> |")
        .into_owned()
}

async fn differential_on_clusters(script: &str) {
    testkit::procs::require_etcd().unwrap();
    let lab = NetLab::new(3).unwrap_or_else(|e| panic!("cannot build network namespaces: {e:#}"));
    let tmp = tempfile::tempdir().unwrap();
    let (raw_e, ids_e) = on_cluster(Kind::Etcd, &lab, script, tmp.path().join("etcd")).await;
    let (raw_k, ids_k) = on_cluster(kybern(), &lab, script, tmp.path().join("kybern")).await;
    assert_eq!(
        (ids_e.member_id, ids_e.cluster_id),
        (ids_k.member_id, ids_k.cluster_id),
        "the same --initial-cluster and token must give the same ids"
    );
    let me = mask_leader(&mask(&raw_e, &ids_e));
    let mk = mask_leader(&mask(&raw_k, &ids_k));
    let stem = format!("cluster-{script}");
    report(
        &stem,
        &me,
        &mk,
        &raw_e,
        &raw_k,
        Path::new("(the cluster's logs are gone)"),
    );
}

/// put/get with every range option, del, txn, watch replay, compaction, leases, bad input,
/// defrag, alarms, snapshot, endpoint status/health, member list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_scenario_matches_etcd() {
    differential("core.sh").await;
}

/// The core scenario through a member of a three-member cluster of each kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_scenario_on_three_members_matches_etcd() {
    differential_on_clusters("core.sh").await;
}

/// The auth scenario through a member of a three-member cluster of each kind: users, roles and
/// the auth switch are replicated, and each member enforces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scenario_on_three_members_matches_etcd() {
    differential_on_clusters("auth.sh").await;
}

/// lock, elect, hashkv, auth users/roles, `--cluster` endpoints, table output of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extras_scenario_matches_etcd() {
    differential("extras.sh").await;
}

/// Auth: users, roles, a prefix reader, enabling auth, what each user may do, bad passwords and
/// tokens, admin-only calls, disabling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scenario_matches_etcd() {
    differential("auth.sh").await;
}

/// The masking itself: ids, urls and sizes go, revisions stay.
#[test]
fn masking_keeps_revisions() {
    let ids = Ids {
        client_url: "http://127.0.0.1:5000".into(),
        peer_url: "http://127.0.0.1:5001".into(),
        member_id: 0x5ce91e5511fc28b0,
        cluster_id: 14053772641839187581,
    };
    let out = "lease 28b0a238c8ff5351 granted with TTL(100s)\n\
        {\"header\":{\"cluster_id\":14053772641839187581,\"member_id\":6694915671785744560,\"revision\":11,\"raft_term\":2}}\n\
        http://127.0.0.1:5000, 5ce91e5511fc28b0, 3.4.23, 20 kB, true, false, 2, 55, 55, \n\
        {\"lease\":2932021722192237393}\n";
    let m = mask(out, &ids);
    assert_eq!(
        m,
        "lease <LEASE1> granted with TTL(100s)\n\
        {\"header\":{\"cluster_id\":<CLUSTER_ID>,\"member_id\":<MEMBER_ID>,\"revision\":11,\"raft_term\":<TERM>}}\n\
        <CLIENT_URL>, <MEMBER_ID>, <MASKED>, <MASKED>, true, false, <MASKED>, <MASKED>, <MASKED>, \n\
        {\"lease\":<LEASE1>}\n"
    );
}
