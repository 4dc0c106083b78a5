//! Clusters of members as processes on loopback: kybern's replicated store or real etcd 3.4, with
//! the same `--initial-cluster` flags, so that one test can run against either.
//!
//! ```text
//! let c = Cluster::start(Kind::Kybern(bin), 3).await?;
//! let leader = c.leader().await?;
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netlab::NetLab;
use crate::procs::{etcdctl, free_url, Kind, Member, MemberOpts};

pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members named m0, m1, ... as one new cluster and waits until each answers.
    pub async fn start(kind: Kind, n: usize) -> Result<Cluster> {
        Self::start_with(kind, n, &[]).await
    }

    /// `start`, with `args` given to every member.
    pub async fn start_with(kind: Kind, n: usize, args: &[&str]) -> Result<Cluster> {
        Self::start_in(kind, n, args, None).await
    }

    /// `start_with`, member i in the network namespace `lab.ns(i)` listening on `lab.ip(i)`
    /// (ports 2379 and 2380, as etcd's defaults), so that tests can partition them.
    pub async fn start_in_lab(kind: Kind, lab: &NetLab, n: usize, args: &[&str]) -> Result<Cluster> {
        Self::start_in(kind, n, args, Some(lab)).await
    }

    async fn start_in(kind: Kind, n: usize, args: &[&str], lab: Option<&NetLab>) -> Result<Cluster> {
        let url = |i: usize, port: u16| match lab {
            Some(l) => format!("http://{}:{port}", l.ip(i)),
            None => free_url(),
        };
        let peers: Vec<String> = (0..n).map(|i| url(i, 2380)).collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let mut opts = MemberOpts::default().with_name(format!("m{i}")).with_args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "kybern-test",
            ]);
            opts = opts.with_args(args.iter().copied());
            opts.peer_url = Some(peer.clone());
            if let Some(l) = lab {
                opts.client_url = Some(url(i, 2379));
                opts.netns = Some(l.ns(i));
            }
            opts.wait_ready = false;
            members.push(Member::start(kind.clone(), opts).await?);
        }
        for m in &mut members {
            m.wait_ready().await?;
        }
        let c = Cluster { members };
        c.leader().await?;
        Ok(c)
    }

    /// Adds a member as an operator does: `etcdctl member add` through the running members, then
    /// a new process with an empty data dir and `--initial-cluster-state existing`; waits until
    /// the cluster has promoted it to a voter.
    pub async fn add_member(&mut self, name: &str) -> Result<()> {
        let t = Duration::from_secs(30);
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.pid().is_some())
            .map(|m| m.client_url.clone())
            .collect();
        let eps = running.join(",");
        let peer = free_url();
        let added = etcdctl(
            &eps,
            &["member", "add", name, &format!("--peer-urls={peer}")],
            None,
            t,
            None,
        )?;
        if added.code != 0 {
            bail!("member add {name}: {}{}", added.stdout, added.stderr);
        }
        // The running members' names and peer URLs, as etcdctl member add prints them.
        let initial = added
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .map(|v| v.trim_matches('"').to_string())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "member add printed no ETCD_INITIAL_CLUSTER: {}",
                    added.stdout
                )
            })?;
        let mut opts = MemberOpts::default().with_name(name).with_args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "existing",
            "--initial-cluster-token",
            "kybern-test",
        ]);
        opts.peer_url = Some(peer.clone());
        let kind = self.members[0].kind().clone();
        self.members.push(Member::start(kind, opts).await?);
        let deadline = Instant::now() + t;
        loop {
            let list = etcdctl(&eps, &["member", "list", "-w", "json"], None, t, None)?;
            let v: serde_json::Value = serde_json::from_str(&list.stdout)?;
            let promoted = v["members"].as_array().into_iter().flatten().any(|m| {
                m["peerURLs"][0] == peer.as_str() && m["isLearner"] != true && m["name"] == name
            });
            if promoted {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} was never promoted: {}", list.stdout);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The index of the member that is leader, as the running members agree (bounded wait).
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ids = Vec::new();
            let mut leaders = Vec::new();
            for m in self.members.iter().filter(|m| m.pid().is_some()) {
                if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(2), async {
                    m.client()
                        .await?
                        .status()
                        .await
                        .map_err(anyhow::Error::from)
                })
                .await
                {
                    ids.push(st.header().map(|h| h.member_id()));
                    leaders.push(st.leader());
                }
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some(i) = ids.iter().position(|id| *id == Some(l)) {
                        let running: Vec<usize> = (0..self.members.len())
                            .filter(|i| self.members[*i].pid().is_some())
                            .collect();
                        return Ok(running[i]);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader after 30 s (members report leaders {leaders:x?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
