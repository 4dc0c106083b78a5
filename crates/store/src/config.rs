//! `kybern store` configuration: etcd's flag names and defaults, and `--config-file` in the
//! etcd.conf.yml form (which, as in etcd, replaces the command-line flags when given).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    Periodic,
    Revision,
}

const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

/// Flags of `kybern store`, named and defaulted as etcd's.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: NAME.etcd).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic (http:// or https://).
    #[arg(long, default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// Comma-separated client URLs of this member to advertise to clients.
    #[arg(long, default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// Comma-separated URLs to listen on for peer traffic (used by the replicated store).
    #[arg(long, default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// Comma-separated peer URLs of this member to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: NAME=PEER-URL pairs, comma separated (a
    /// name may repeat for several URLs); this member is the entry named --name. Given, even with
    /// this member alone, the store runs Raft and can grow with `etcdctl member add`. Left out,
    /// the member is standalone: no Raft (its fastest), and it cannot take members.
    #[arg(long, default_value = DEFAULT_INITIAL_CLUSTER)]
    pub initial_cluster: String,

    /// Whether --initial-cluster was given (or the data dir already holds a Raft member).
    #[arg(skip)]
    pub clustered: bool,
    /// 'new' when every member of --initial-cluster starts a new cluster together; 'existing'
    /// to join a cluster that runs already (after `etcdctl member add`).
    #[arg(long, value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token: members of different clusters with the same peer URLs get
    /// different member and cluster ids.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk; the Raft log before it is
    /// then dropped, and a member that needs it is sent the snapshot instead.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept in the Raft log after a snapshot, so that a slow follower catches up from the
    /// log rather than from a whole snapshot.
    #[arg(long, default_value_t = 5000)]
    pub experimental_snapshot_catchup_entries: u64,
    /// How often the leader compares every member's hash of the key-value history and raises the
    /// CORRUPT alarm on a mismatch (0 turns it off; etcd's flag, on by default here).
    #[arg(long, default_value = "1m", value_parser = parse_duration_or_zero)]
    pub experimental_corrupt_check_time: std::time::Duration,
    /// Raise an alarm (NOSPACE) and refuse writes when the backend exceeds this size in bytes
    /// (0: the default of 2 GiB; negative: no quota).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,
    /// Interpret --auto-compaction-retention as a duration ('periodic') or a revision count ('revision').
    #[arg(long, value_enum, default_value = "periodic")]
    pub auto_compaction_mode: CompactionMode,
    /// Auto compaction retention: periodic mode takes a duration (1h, 30m, 10s) or a number of
    /// hours, revision mode a number of revisions to keep. 0 disables auto compaction.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1_572_864)]
    pub max_request_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Path to the client server TLS certificate file.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA certificate file (verifies client certificates).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Path to the peer TLS certificate file: served on https peer URLs and presented as client
    /// certificate to other members.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer TLS key file.
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer TLS trusted CA file: verifies other members' certificates (the system's
    /// CA bundle when not given).
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peer client certificates signed by --peer-trusted-ca-file.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Auth token kind: `simple` (etcd's default; tokens kept in memory by the member).
    #[arg(long, default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple auth token stays valid after its last use.
    #[arg(long, default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost for hashing user passwords (4 to 31).
    #[arg(long, default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Path to a YAML configuration file (etcd.conf.yml keys); when given, flags are ignored.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Accepted for compatibility; kybern serves only the v3 API and warns when this is true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub enable_v2: bool,
    /// Interval of watch progress notifications (etcd's experimental flag).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub experimental_watch_progress_notify_interval: std::time::Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileConfig {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    listen_client_urls: Option<String>,
    advertise_client_urls: Option<String>,
    listen_peer_urls: Option<String>,
    initial_advertise_peer_urls: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<ClusterState>,
    initial_cluster_token: Option<String>,
    heartbeat_interval: Option<u64>,
    election_timeout: Option<u64>,
    snapshot_count: Option<u64>,
    experimental_snapshot_catchup_entries: Option<u64>,
    quota_backend_bytes: Option<i64>,
    auto_compaction_mode: Option<CompactionMode>,
    auto_compaction_retention: Option<serde_yamlish::Scalar>,
    max_request_bytes: Option<u64>,
    max_txn_ops: Option<usize>,
    enable_v2: Option<bool>,
    auth_token: Option<String>,
    auth_token_ttl: Option<u64>,
    bcrypt_cost: Option<u32>,
    client_transport_security: Option<FileTls>,
    peer_transport_security: Option<FileTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: Option<bool>,
}

mod serde_yamlish {
    /// A YAML scalar that may be written as a number or a string (`auto-compaction-retention: 1`).
    #[derive(Debug, serde::Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Int(i64),
        Str(String),
    }
}

/// A configuration error: reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl StoreArgs {
    /// Applies `--config-file` when given, then checks the whole configuration.
    pub fn resolve(mut self) -> Result<StoreArgs, ConfigError> {
        if let Some(path) = self.config_file.clone() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(format!("cannot read --config-file {}: {e}", path.display()))
            })?;
            let f: FileConfig = serde_saphyr::from_str(&text)
                .map_err(|e| ConfigError(format!("invalid config file {}: {e}", path.display())))?;
            macro_rules! take { ($($f:ident),*) => {$( if let Some(v) = f.$f { self.$f = v; } )*} }
            take!(
                name,
                listen_client_urls,
                advertise_client_urls,
                listen_peer_urls,
                initial_advertise_peer_urls,
                initial_cluster,
                initial_cluster_state,
                initial_cluster_token,
                heartbeat_interval,
                election_timeout,
                snapshot_count,
                experimental_snapshot_catchup_entries,
                quota_backend_bytes,
                auto_compaction_mode,
                max_request_bytes,
                max_txn_ops,
                enable_v2,
                auth_token,
                auth_token_ttl,
                bcrypt_cost
            );
            if f.data_dir.is_some() {
                self.data_dir = f.data_dir;
            }
            match f.auto_compaction_retention {
                Some(serde_yamlish::Scalar::Int(n)) => {
                    self.auto_compaction_retention = n.to_string()
                }
                Some(serde_yamlish::Scalar::Str(s)) => self.auto_compaction_retention = s,
                None => {}
            }
            if let Some(t) = f.client_transport_security {
                self.cert_file = t.cert_file.or(self.cert_file);
                self.key_file = t.key_file.or(self.key_file);
                self.trusted_ca_file = t.trusted_ca_file.or(self.trusted_ca_file);
                self.client_cert_auth = t.client_cert_auth.unwrap_or(self.client_cert_auth);
            }
            if let Some(t) = f.peer_transport_security {
                self.peer_cert_file = t.cert_file.or(self.peer_cert_file);
                self.peer_key_file = t.key_file.or(self.peer_key_file);
                self.peer_trusted_ca_file = t.trusted_ca_file.or(self.peer_trusted_ca_file);
                self.peer_client_cert_auth =
                    t.client_cert_auth.unwrap_or(self.peer_client_cert_auth);
            }
        }
        for u in self
            .client_urls()?
            .iter()
            .chain(&self.advertised_client_urls()?)
        {
            if u.scheme() == "https" && (self.cert_file.is_none() || self.key_file.is_none()) {
                return Err(ConfigError(format!("{u} needs --cert-file and --key-file")));
            }
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(ConfigError(
                "--client-cert-auth needs --trusted-ca-file".into(),
            ));
        }
        for u in self
            .peer_urls()?
            .iter()
            .chain(&self.advertised_peer_urls()?)
        {
            if u.scheme() == "https"
                && (self.peer_cert_file.is_none() || self.peer_key_file.is_none())
            {
                return Err(ConfigError(format!(
                    "{u} needs --peer-cert-file and --peer-key-file"
                )));
            }
        }
        if self.peer_cert_file.is_some() != self.peer_key_file.is_some() {
            return Err(ConfigError(
                "--peer-cert-file and --peer-key-file go together".into(),
            ));
        }
        if self.peer_client_cert_auth && self.peer_trusted_ca_file.is_none() {
            return Err(ConfigError(
                "--peer-client-cert-auth needs --peer-trusted-ca-file".into(),
            ));
        }
        if self.auth_token.split(',').next() != Some("simple") {
            return Err(ConfigError(format!(
                "--auth-token {:?}: kybern supports only simple tokens (--auth-token simple)",
                self.auth_token
            )));
        }
        if self.auth_token_ttl == 0 {
            return Err(ConfigError("--auth-token-ttl must be positive".into()));
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(ConfigError(format!(
                "--bcrypt-cost {}: must be between 4 and 31",
                self.bcrypt_cost
            )));
        }
        if self.max_txn_ops == 0 {
            return Err(ConfigError("--max-txn-ops must be positive".into()));
        }
        self.retention()?;
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        self.clustered = self.initial_cluster != DEFAULT_INITIAL_CLUSTER
            || crate::raft::log::path(&self.data_dir()).exists();
        if self.initial_cluster == DEFAULT_INITIAL_CLUSTER && self.name != "default" {
            // As etcd: the default cluster is this member alone, under its own name.
            self.initial_cluster = self
                .initial_advertise_peer_urls
                .split(',')
                .map(|u| format!("{}={}", self.name, u.trim()))
                .collect::<Vec<_>>()
                .join(",");
        }
        let members = self.cluster().map_err(ConfigError)?;
        if !members.values().any(|m| m.name == self.name) {
            return Err(ConfigError(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            )));
        }
        Ok(self)
    }

    /// The members of --initial-cluster by member id.
    pub fn cluster(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, crate::raft::MemberInfo>, String> {
        crate::raft::node::parse_initial_cluster(&self.initial_cluster, &self.initial_cluster_token)
    }

    /// Whether the store runs Raft: --initial-cluster was given or names more than one member, or
    /// the data dir is a Raft member's.
    pub fn replicated(&self) -> bool {
        self.clustered || self.cluster().map(|c| c.len() > 1).unwrap_or(false)
    }

    pub fn peer_urls(&self) -> Result<Vec<url::Url>, ConfigError> {
        parse_urls("--listen-peer-urls", &self.listen_peer_urls)
    }

    pub fn advertised_peer_urls(&self) -> Result<Vec<url::Url>, ConfigError> {
        parse_urls(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    pub fn client_urls(&self) -> Result<Vec<url::Url>, ConfigError> {
        parse_urls("--listen-client-urls", &self.listen_client_urls)
    }

    pub fn advertised_client_urls(&self) -> Result<Vec<url::Url>, ConfigError> {
        parse_urls("--advertise-client-urls", &self.advertise_client_urls)
    }

    /// The quota in bytes, or None for no quota.
    pub fn quota(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(2 * 1024 * 1024 * 1024),
            n if n < 0 => None,
            n => Some(n as u64),
        }
    }

    /// Auto compaction: None when off.
    pub fn retention(&self) -> Result<Option<Retention>, ConfigError> {
        let r = self.auto_compaction_retention.trim();
        let bad = || {
            ConfigError(format!(
                "invalid --auto-compaction-retention {r:?} for mode {:?}",
                self.auto_compaction_mode
            ))
        };
        Ok(match self.auto_compaction_mode {
            CompactionMode::Revision => match r.parse::<i64>().map_err(|_| bad())? {
                0 => None,
                n if n < 0 => return Err(bad()),
                n => Some(Retention::Revisions(n)),
            },
            CompactionMode::Periodic => {
                let d = match r.parse::<u64>() {
                    Ok(h) => std::time::Duration::from_secs(h * 3600),
                    Err(_) => parse_duration(r).map_err(|_| bad())?,
                };
                (!d.is_zero()).then_some(Retention::Period(d))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    Period(std::time::Duration),
    Revisions(i64),
}

fn parse_urls(flag: &str, s: &str) -> Result<Vec<url::Url>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let url = url::Url::parse(u)
                .map_err(|e| ConfigError(format!("{flag}: invalid URL {u:?}: {e}")))?;
            match (url.scheme(), url.host_str(), url.port()) {
                ("http" | "https", Some(_), Some(_)) => Ok(url),
                _ => Err(ConfigError(format!(
                    "{flag}: {u:?} must be http(s)://HOST:PORT"
                ))),
            }
        })
        .collect()
}

/// Go-style durations: 500ms, 10s, 5m, 1h, 1h30m.
fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    match s.trim() {
        "0" => Ok(std::time::Duration::ZERO),
        s => parse_duration(s),
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    if s.trim().is_empty() {
        return Err("empty duration".into());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
    }
    if !num.is_empty() {
        return Err(format!("invalid duration {s:?}: missing unit"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
