//! Network namespaces for partition tests: each member gets its own namespace with one address on
//! a bridge the test creates, so links between members can be cut and healed with nftables rules
//! inside the namespaces, while the test (in the root namespace) still reaches every member.
//!
//! ```text
//! let lab = NetLab::new(3)?;                 // namespaces lab.ns(i), addresses lab.ip(i)
//! lab.partition(&[&[0], &[1, 2]])?;         // member 0 hears nobody, 1 and 2 hear each other
//! lab.heal()?;
//! ```
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Everything is removed when the lab is dropped.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct NetLab {
    prefix: String,
    subnet: [u8; 3],
    n: usize,
}

/// Runs a command; its stderr is the error.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("spawn {cmd}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this machine can build a lab (root, `ip`, `nft`); the reason when it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed (scripts/deps.sh installs it)"));
        }
    }
    None
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

impl NetLab {
    /// A bridge and `n` namespaces, each with address `ip(i)` on it and the loopback up.
    pub fn new(n: usize) -> Result<NetLab> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let tag = (h.finish() % 0xffff) as u32;
        // 10.<200..=249>.<0..=255>.0/24, random so that parallel tests do not collide.
        let subnet = [10, 200 + (tag % 50) as u8, (tag >> 8) as u8];
        let lab = NetLab {
            prefix: format!("kbl{tag:04x}"),
            subnet,
            n,
        };
        lab.build().inspect_err(|_| lab.teardown())?;
        Ok(lab)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The namespace of member `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// The address of member `i`.
    pub fn ip(&self, i: usize) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.{}", 10 + i)
    }

    /// The bridge's own address (the root namespace, where tests run).
    pub fn gateway(&self) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.1")
    }

    fn build(&self) -> Result<()> {
        let br = self.bridge();
        run("ip", &["link", "add", &br, "type", "bridge"], None)?;
        run("ip", &["addr", "add", &format!("{}/24", self.gateway()), "dev", &br], None)?;
        run("ip", &["link", "set", &br, "up"], None)?;
        for i in 0..self.n {
            let (ns, host) = (self.ns(i), format!("{}h{i}", self.prefix));
            run("ip", &["netns", "add", &ns], None)?;
            run(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns],
                None,
            )?;
            run("ip", &["link", "set", &host, "master", &br, "up"], None)?;
            let addr = format!("{}/24", self.ip(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"], None)?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"], None)?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"], None)?;
            run("ip", &["-n", &ns, "route", "add", "default", "via", &self.gateway()], None)?;
        }
        Ok(())
    }

    /// Cuts every link between members of different groups (both directions); members in no
    /// group keep all their links. Replaces any earlier partition. The root namespace (clients)
    /// still reaches everyone.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<()> {
        self.heal()?;
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, o)| o.iter().map(|&j| self.ip(j)))
                .collect();
            if others.is_empty() {
                continue;
            }
            let set = others.join(", ");
            let rules = format!(
                "table inet kybern_partition {{\n\
                 chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            for &i in group.iter() {
                run("ip", &["netns", "exec", &self.ns(i), "nft", "-f", "-"], Some(&rules))?;
            }
        }
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&self) -> Result<()> {
        for i in 0..self.n {
            // Absent table: nothing to heal in this namespace.
            let _ = run(
                "ip",
                &["netns", "exec", &self.ns(i), "nft", "delete", "table", "inet", "kybern_partition"],
                None,
            );
        }
        Ok(())
    }

    fn teardown(&self) {
        for i in 0..self.n {
            let _ = run("ip", &["netns", "del", &self.ns(i)], None);
        }
        let _ = run("ip", &["link", "del", &self.bridge()], None);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
