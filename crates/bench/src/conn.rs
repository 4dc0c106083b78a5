//! gRPC connections to the benchmarked endpoints: `--conns` distinct connections (one
//! `etcd_client::Client` each; clones of a `Client` share its channel), endpoints assigned
//! round-robin, clients assigned to connections round-robin.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::{usage, GlobalArgs};

/// Parses a duration as etcd's flags write them: `500ms`, `5s`, `2m`, `1h`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 500ms, 5s, 1m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (ns, us, ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn connect_options(g: &GlobalArgs) -> Result<ConnectOptions> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(g.dial_timeout)
        .with_tcp_keepalive(Duration::from_secs(30));
    if let Some(user) = &g.user {
        let (name, pass) = user.split_once(':').ok_or_else(|| {
            usage("--user must be NAME:PASSWORD (kybern bench does not prompt)".into())
        })?;
        o = o.with_user(name, pass);
    }
    if g.cacert.is_some() || g.cert.is_some() || g.key.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &g.cacert {
            let pem =
                std::fs::read(ca).with_context(|| format!("read --cacert {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        match (&g.cert, &g.key) {
            (Some(c), Some(k)) => {
                let cert =
                    std::fs::read(c).with_context(|| format!("read --cert {}", c.display()))?;
                let key =
                    std::fs::read(k).with_context(|| format!("read --key {}", k.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => return Err(usage("--cert and --key go together".into())),
        }
        o = o.with_tls(tls);
    }
    Ok(o)
}

/// Opens `g.conns` connections, each to one endpoint (round-robin over `--endpoints`), and checks
/// that every one answers a Status within `--dial-timeout` so that a wrong endpoint fails fast
/// and connection setup is not counted in the measured time.
pub async fn connect_all(g: &GlobalArgs) -> Result<Vec<Client>> {
    let opts = connect_options(g)?;
    let mut out = Vec::with_capacity(g.conns as usize);
    for i in 0..g.conns as usize {
        let ep = &g.endpoints[i % g.endpoints.len()];
        let client = Client::connect([ep.as_str()], Some(opts.clone()))
            .await
            .with_context(|| format!("connect to {ep}"))?;
        let mut m = client.maintenance_client();
        match tokio::time::timeout(g.dial_timeout.max(Duration::from_millis(100)), m.status()).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow::anyhow!("endpoint {ep} does not answer: {e}")),
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "endpoint {ep} does not answer within --dial-timeout {:?}",
                    g.dial_timeout
                ))
            }
        }
        out.push(client);
    }
    Ok(out)
}

/// The connection that client number `i` uses.
pub fn for_client(conns: &[Client], i: usize) -> &Client {
    &conns[i % conns.len()]
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
