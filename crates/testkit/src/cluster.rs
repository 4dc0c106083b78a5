//! Clusters of members as processes on loopback: kybern's replicated store or real etcd 3.4, with
//! the same `--initial-cluster` flags, so that one test can run against either.
//!
//! ```text
//! let c = Cluster::start(Kind::Kybern(bin), 3).await?;
//! let leader = c.leader().await?;
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::procs::{free_url, Kind, Member, MemberOpts};

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
        let peers: Vec<String> = (0..n).map(|_| free_url()).collect();
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
