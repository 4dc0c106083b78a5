//! `kybern store member remove`: removes a member through the cluster and, given the member's
//! data directory on this machine, deletes it once the member has stopped, so that nothing of the
//! old member is left to start again by mistake.

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The member to remove: its name or its id in hex (as `etcdctl member list` shows it).
    pub member: String,
    /// Client URLs of the cluster's members.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// The removed member's data directory on this machine, deleted once the member has stopped
    /// (it stops by itself when it learns it was removed).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub async fn remove(a: RemoveArgs) -> Result<(), (u8, String)> {
    let mut client = etcd_client::Client::connect(&a.endpoints, None)
        .await
        .map_err(|e| (1, format!("cannot reach {}: {e}", a.endpoints.join(","))))?;
    let list = client
        .member_list()
        .await
        .map_err(|e| (1, format!("member list: {e}")))?;
    let cluster = list.header().map_or(0, |h| h.cluster_id());
    let found = list
        .members()
        .iter()
        .find(|m| m.name() == a.member || format!("{:x}", m.id()) == a.member.to_lowercase());
    let Some(m) = found else {
        let names: Vec<String> = list
            .members()
            .iter()
            .map(|m| format!("{} ({:x})", m.name(), m.id()))
            .collect();
        return Err((
            2,
            format!(
                "no member {:?} in the cluster; members: {}",
                a.member,
                names.join(", ")
            ),
        ));
    };
    let id = m.id();
    client
        .member_remove(id)
        .await
        .map_err(|e| (1, format!("member remove {id:x}: {e}")))?;
    println!("Member {id:x} removed from cluster {cluster:x}");
    let Some(dir) = a.data_dir else {
        return Ok(());
    };
    // The removed member holds its store open until it stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let owner = loop {
        match mvcc::Store::open(&dir) {
            Ok(s) => break s.member_id,
            Err(e) if Instant::now() > deadline => {
                return Err((
                    1,
                    format!(
                        "{} is still in use ({e}); stop the member and delete it yourself",
                        dir.display()
                    ),
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    if owner != id {
        return Err((
            2,
            format!(
                "{} belongs to member {owner:x}, not {id:x}; left as it is",
                dir.display()
            ),
        ));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| (1, format!("deleting {}: {e}", dir.display())))?;
    println!("Deleted its data directory {}", dir.display());
    Ok(())
}
