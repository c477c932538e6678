//! Faults on real interfaces, for machines where the harness runs as root: each node in
//! its own network namespace, joined to the others by a veth pair on a bridge. A cut link
//! is a blackhole route (the sender's packets to that peer are dropped by its kernel, and
//! TCP between the two stalls both ways, as on a real network); latency is `tc netem` on
//! the node's interface, where the kernel has it.
//!
//! Needs root and `ip` (iproute2); `tc` and the `sch_netem` module for latency. Everything
//! is named after the harness's process id and removed at the end; after a crash of the
//! harness, `ip -all netns delete` and `ip link del rcb<pid>` clean up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::proxy::NodeId;

/// The namespaces of one run.
#[derive(Debug)]
pub struct Namespaces {
    tag: u32,
    subnet: [u8; 2],
    created: Vec<NodeId>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Raft's port inside every namespace.
const RAFT_PORT: u16 = 7000;
/// The API's port inside every namespace.
const API_PORT: u16 = 8000;

impl Namespaces {
    /// Whether this machine can run nodes in namespaces (root, and `ip netns` works).
    pub fn available() -> bool {
        rustix::process::geteuid().is_root()
            && Command::new("ip")
                .args(["netns", "list"])
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// Creates the bridge.
    pub fn new() -> Result<Self, String> {
        let pid = std::process::id();
        let tag = pid % 100_000;
        let subnet = [(100 + (pid >> 8) % 100) as u8, (pid % 256) as u8];
        let n = Namespaces {
            tag,
            subnet,
            created: Vec::new(),
        };
        let br = n.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", n.addr_of(None)),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        Ok(n)
    }

    fn bridge(&self) -> String {
        format!("rcb{}", self.tag)
    }

    fn ns(&self, id: NodeId) -> String {
        format!("raftchaos-{}-{id}", self.tag)
    }

    /// The node's address (`None`: the bridge's, where the harness is).
    fn addr_of(&self, id: Option<NodeId>) -> Ipv4Addr {
        let host = id.map_or(1, |i| 10 + (i % 200) as u8);
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], host)
    }

    /// Creates node `id`'s namespace; its Raft and API addresses (both where it listens).
    pub fn add(&mut self, id: NodeId) -> Result<(SocketAddr, SocketAddr), String> {
        let ns = self.ns(id);
        let veth = format!("rcv{}n{id}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.created.push(id);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge(), "up"])?;
        let me = self.addr_of(Some(id));
        ip(&["-n", &ns, "addr", "add", &format!("{me}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok((
            SocketAddr::new(IpAddr::V4(me), RAFT_PORT),
            SocketAddr::new(IpAddr::V4(me), API_PORT),
        ))
    }

    /// The command that runs `program` in node `id`'s namespace.
    pub fn command(&self, id: NodeId, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(id)]).arg(program);
        c
    }

    /// Drops what `from` sends to `to`.
    pub fn cut(&self, from: NodeId, to: NodeId) -> Result<(), String> {
        let dest = format!("{}/32", self.addr_of(Some(to)));
        ip(&["-n", &self.ns(from), "route", "replace", "blackhole", &dest])
    }

    /// Delays everything node `id` sends by `delay`.
    pub fn delay(&self, id: NodeId, delay: Duration) -> Result<(), String> {
        let ms = format!("{}ms", delay.as_millis());
        let ns = self.ns(id);
        ip(&[
            "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            "delay", &ms,
        ])
    }

    /// Removes every cut and delay.
    pub fn heal(&self, ids: &[NodeId]) {
        for &id in ids {
            let ns = self.ns(id);
            let _ = ip(&["-n", &ns, "route", "flush", "type", "blackhole"]);
            let _ = ip(&[
                "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for &id in &self.created {
            let _ = ip(&["netns", "delete", &self.ns(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
