//! What to start: the parts, their settings, and the ports they listen on. The local
//! cluster and the tests that stand in for it use the fixed, documented ports
//! ([`Ports::Fixed`]); benchmarks and other tests take free ones ([`Ports::Free`]). Either
//! way the same [`Plan`] names every process and its addresses.

use std::net::TcpListener;
use std::time::Duration;

use shoal_core::units::ByteSize;

use crate::error::{LaunchError, Result};

/// The local cluster's fixed ports (`deploy/devcluster.sh`'s header and the README list them).
pub mod local {
    /// Origin `i` (from 0) serves HTTP on `ORIGIN_HTTP_BASE + i`, pieces on `ORIGIN_PEER_BASE + i`.
    pub const ORIGIN_HTTP_BASE: u16 = 9000;
    pub const ORIGIN_PEER_BASE: u16 = 7000;
    pub const TRACKER_PORT: u16 = 7070;
    pub const PROXY_PORT: u16 = 5000;
    /// Agent `i` (from 1) serves its registry on `AGENT_HTTP_BASE + i`, pieces on
    /// `AGENT_PEER_BASE + i`.
    pub const AGENT_HTTP_BASE: u16 = 8080;
    pub const AGENT_PEER_BASE: u16 = 7100;
    pub const ORIGINS: usize = 3;
    pub const MAX_AGENTS: usize = 20;
    pub const DEFAULT_AGENTS: usize = 3;

    /// The proxy's registry address.
    pub const PROXY: &str = "127.0.0.1:5000";
    pub const TRACKER: &str = "127.0.0.1:7070";
    pub const ORIGIN_ADDRS: [&str; ORIGINS] =
        ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"];

    /// Agent `i`'s registry address (agents count from 1).
    pub fn agent(i: usize) -> String {
        format!("127.0.0.1:{}", usize::from(AGENT_HTTP_BASE) + i)
    }
}

/// Which ports the processes listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// The local cluster's ([`local`]): one such cluster per machine.
    Fixed,
    /// Free ones the kernel hands out when the cluster is planned.
    Free,
}

/// Where the origins keep what they write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One directory for all of them (`data/backend`), as a shared bucket would be.
    Shared,
    /// None: each origin holds only its own store.
    None,
}

/// Bytes per second every host may send and receive over the peer protocol, as the user
/// wrote it (`10000000`, `20MiB`); `0` is no cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate(String);

impl Rate {
    pub fn unlimited() -> Rate {
        Rate("0".into())
    }

    pub fn per_second(bytes: u64) -> Rate {
        Rate(bytes.to_string())
    }

    /// A rate as `up --rate` takes it: a whole number of bytes per second, or a number
    /// with a unit (`10MiB`, `1.5 GB`, an optional `/s`). `None` if it is neither.
    pub fn parse(text: &str) -> Option<Rate> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Rate(text.to_owned()));
        }
        let t = text.strip_suffix("/s").unwrap_or(text);
        let int_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if int_end == 0 {
            return None;
        }
        let mut rest = &t[int_end..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(frac.len());
            if n == 0 {
                return None;
            }
            rest = &frac[n..];
        }
        let unit = rest.trim_start();
        let unit_ok = unit == "B"
            || matches!(
                unit.as_bytes(),
                [b'k' | b'K' | b'M' | b'G' | b'T', b'B']
                    | [b'k' | b'K' | b'M' | b'G' | b'T', b'i', b'B']
            );
        unit_ok.then(|| Rate(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_unlimited(&self) -> bool {
        self.0 == "0"
    }

    /// As a TOML value: a bare number, or a string with its unit.
    pub fn toml(&self) -> String {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.clone()
        } else {
            toml_str(&self.0)
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    pub origins: usize,
    /// Origins holding each blob (the origins' and the tracker's `replicas`).
    pub replicas: usize,
    /// Without a tracker, agents take the origins as their only peers (`tracker = ""`).
    pub tracker: bool,
    /// The tracker's `announce_interval`; `None`: its default.
    pub announce_interval: Option<Duration>,
    pub proxy: bool,
    /// Pushes through the proxy need the generated login (user [`crate::PROXY_USER`]);
    /// pulls do not.
    pub proxy_login: bool,
    pub agents: usize,
    pub rate: Rate,
    /// Each agent's `cache.max_size`.
    pub cache_size: ByteSize,
    /// Each agent's `swarm.stall_timeout`; `None`: its default.
    pub stall_timeout: Option<Duration>,
    pub backend: Backend,
    /// The parts speak TLS to each other: HTTPS between them, the peer protocol over
    /// mutually authenticated TLS, every certificate from the cluster's own CA
    /// ([`crate::tls`]). The agents' registry API stays plain HTTP on loopback.
    pub tls: bool,
    /// The proxy serves its registry over HTTPS too (needs `tls`).
    pub proxy_tls: bool,
    pub ports: Ports,
    /// The processes' log filter (`--log`).
    pub log: String,
    /// How long each group of processes may take to answer `/ready`.
    pub ready_timeout: Duration,
    /// Each process in a process group of its own, so that a Ctrl-C at the terminal that
    /// started the cluster does not reach it: for a cluster left running in the
    /// background. Otherwise a Ctrl-C stops the processes with whatever started them.
    pub own_process_groups: bool,
}

impl Spec {
    /// The local cluster: three origins sharing a backend directory, a tracker, the proxy
    /// with its login, and `agents` agents, on the fixed ports.
    pub fn local(agents: usize, rate: Rate) -> Spec {
        Spec {
            origins: local::ORIGINS,
            replicas: 3,
            tracker: true,
            // Short, so that agents that start a download together find each other quickly.
            announce_interval: Some(Duration::from_secs(1)),
            proxy: true,
            proxy_login: true,
            agents,
            rate,
            cache_size: ByteSize::gib(4),
            stall_timeout: None,
            backend: Backend::Shared,
            tls: false,
            proxy_tls: false,
            ports: Ports::Fixed,
            log: "info".into(),
            ready_timeout: Duration::from_secs(60),
            own_process_groups: true,
        }
    }

    /// A cluster for a test or a benchmark on free ports: `origins` origins (each blob on up
    /// to three), a tracker, the proxy without a login, and `agents` agents, no rate cap,
    /// no backend; its processes stop with whatever started them.
    pub fn on_free_ports(origins: usize, agents: usize) -> Spec {
        Spec {
            origins,
            replicas: origins.min(3),
            tracker: true,
            announce_interval: None,
            proxy: true,
            proxy_login: false,
            agents,
            rate: Rate::unlimited(),
            cache_size: ByteSize::gib(4),
            stall_timeout: None,
            backend: Backend::None,
            tls: false,
            proxy_tls: false,
            ports: Ports::Free,
            log: "info".into(),
            ready_timeout: Duration::from_secs(60),
            own_process_groups: false,
        }
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> Vec<&'static str> {
        let mut b = vec!["shoal-origin"];
        if self.tracker {
            b.push("shoal-tracker");
        }
        if self.proxy {
            b.push("shoal-proxy");
        }
        if self.agents > 0 {
            b.push("shoal-agent");
        }
        b
    }
}

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Origin,
    Tracker,
    Proxy,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Tracker => "tracker",
            Role::Proxy => "proxy",
            Role::Agent => "agent",
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Role::Origin => "shoal-origin",
            Role::Tracker => "shoal-tracker",
            Role::Proxy => "shoal-proxy",
            Role::Agent => "shoal-agent",
        }
    }
}

/// One process of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `origin-0`, `tracker`, `proxy`, `agent-1`: its config, log, data and pid file names.
    pub name: String,
    pub role: Role,
    /// `127.0.0.1:<port>`: its API, `/ready` and `/metrics`.
    pub addr: String,
    /// `127.0.0.1:<port>` of its peer protocol (origins and agents).
    pub peer: Option<String>,
    /// It serves `addr` over HTTPS.
    pub https: bool,
}

impl Member {
    /// `http://` or `https://` and its address.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every port it listens on.
    pub fn ports(&self) -> Vec<u16> {
        [Some(&self.addr), self.peer.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .collect()
    }
}

/// Every process of a cluster, in start order, with its addresses.
#[derive(Debug, Clone)]
pub struct Plan {
    pub members: Vec<Member>,
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Plan {
    /// The names of a local cluster's processes with `agents` agents, in start order.
    pub fn local_names(agents: usize) -> Vec<String> {
        Plan::new(&Spec::local(agents, Rate::unlimited()))
            .map(|p| p.members.into_iter().map(|m| m.name).collect())
            .unwrap_or_default()
    }

    pub fn new(spec: &Spec) -> Result<Plan> {
        if spec.proxy_tls && !spec.tls {
            return Err(LaunchError::Check(
                "the proxy serves HTTPS only in a cluster that runs over TLS".into(),
            ));
        }
        let needed = spec.origins * 2
            + usize::from(spec.tracker)
            + usize::from(spec.proxy)
            + spec.agents * 2;
        let mut ports = match spec.ports {
            Ports::Free => free_ports(needed)?,
            Ports::Fixed => Vec::new(),
        }
        .into_iter();
        let mut next = |fixed: usize| -> Result<u16> {
            match spec.ports {
                Ports::Fixed => u16::try_from(fixed)
                    .map_err(|_| LaunchError::Check(format!("port {fixed} is out of range"))),
                Ports::Free => ports
                    .next()
                    .ok_or_else(|| LaunchError::Check("too few free ports".into())),
            }
        };
        let mut members = Vec::with_capacity(needed);
        for i in 0..spec.origins {
            members.push(Member {
                name: format!("origin-{i}"),
                role: Role::Origin,
                addr: addr(next(usize::from(local::ORIGIN_HTTP_BASE) + i)?),
                peer: Some(addr(next(usize::from(local::ORIGIN_PEER_BASE) + i)?)),
                https: spec.tls,
            });
        }
        if spec.tracker {
            members.push(Member {
                name: "tracker".into(),
                role: Role::Tracker,
                addr: addr(next(usize::from(local::TRACKER_PORT))?),
                peer: None,
                https: spec.tls,
            });
        }
        if spec.proxy {
            members.push(Member {
                name: "proxy".into(),
                role: Role::Proxy,
                addr: addr(next(usize::from(local::PROXY_PORT))?),
                peer: None,
                https: spec.proxy_tls,
            });
        }
        for i in 1..=spec.agents {
            members.push(Member {
                name: format!("agent-{i}"),
                role: Role::Agent,
                addr: addr(next(usize::from(local::AGENT_HTTP_BASE) + i)?),
                peer: Some(addr(next(usize::from(local::AGENT_PEER_BASE) + i)?)),
                // Its registry API: docker and containerd reach it on loopback.
                https: false,
            });
        }
        Ok(Plan { members })
    }

    pub fn of(&self, role: Role) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.role == role)
    }

    /// The origins' URLs, as every part's `origins` (and the origins' `cluster.members`).
    pub fn origin_urls(&self) -> Vec<String> {
        self.of(Role::Origin).map(Member::url).collect()
    }

    /// Every port of the plan something answers on now, with the member meant to have it.
    pub fn busy_ports(&self) -> Vec<(u16, String)> {
        self.members
            .iter()
            .flat_map(|m| m.ports().into_iter().map(move |p| (p, m.name.clone())))
            .filter(|(p, _)| port_in_use(*p))
            .collect()
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// `n` ports the kernel says are free now, all distinct.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Held together until all are chosen, so the kernel hands out distinct ones.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(LaunchError::io("cannot bind", "127.0.0.1:0"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(LaunchError::io("cannot read the address of", "127.0.0.1:0"))
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_taken_as_the_local_cluster_documents_them() {
        for ok in ["0", "10000000", "10MiB", "20MiB/s", "1.5 GB", "512kB", "7B"] {
            assert!(Rate::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "fast", "10 MiBs", "1.MiB", "-5", "MiB", "10PiB"] {
            assert!(Rate::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            Rate::parse("20MiB/s").map(|r| r.toml()),
            Some("\"20MiB\"".into())
        );
        assert_eq!(Rate::parse("1000").map(|r| r.toml()), Some("1000".into()));
    }

    #[test]
    fn the_local_plan_has_the_documented_ports() {
        let plan = Plan::new(&Spec::local(2, Rate::unlimited())).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = plan.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "origin-0", "origin-1", "origin-2", "tracker", "proxy", "agent-1", "agent-2"
            ]
        );
        assert_eq!(plan.members[1].ports(), [9001, 7001]);
        assert_eq!(plan.members[3].addr, local::TRACKER);
        assert_eq!(plan.members[4].addr, local::PROXY);
        assert_eq!(plan.members[6].addr, local::agent(2));
        assert_eq!(plan.members[6].ports(), [8082, 7102]);
        assert_eq!(
            plan.origin_urls(),
            local::ORIGIN_ADDRS.map(|a| format!("http://{a}"))
        );
    }

    #[test]
    fn a_free_plan_has_distinct_ports() {
        let mut spec = Spec::local(3, Rate::unlimited());
        spec.ports = Ports::Free;
        let plan = Plan::new(&spec).unwrap_or_else(|e| panic!("{e}"));
        let mut ports: Vec<u16> = plan.members.iter().flat_map(Member::ports).collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
        assert_eq!(n, 3 * 2 + 2 + 3 * 2);
    }
}
