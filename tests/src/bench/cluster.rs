//! A Shoal cluster on this machine: origins, optionally a tracker and a proxy, and agents,
//! each a real process of the release binaries on free 127.0.0.1 ports, with its config file
//! in `<dir>/config/`, its data in `<dir>/<name>/` and its log in `<dir>/logs/`.
//!
//! Starting it panics, with the end of the process's log, if a part exits or is not ready
//! within a minute ([`Daemon::wait_until`]); every process is stopped by its pid when the
//! cluster is stopped or dropped, however the run ends.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{BenchError, Result};
use crate::process::{Daemon, stop_all};

/// The directory the parts' binaries are taken from.
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
}

const PARTS: [&str; 4] = [
    "shoal-origin",
    "shoal-tracker",
    "shoal-agent",
    "shoal-proxy",
];

impl Bins {
    /// `explicit`, else `$SHOAL_BIN_DIR`, else the directory this program runs from if it is
    /// a release build, else `$CARGO_TARGET_DIR/release`: the first that holds every part's
    /// binary.
    pub fn find(explicit: Option<PathBuf>) -> Result<Bins> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = explicit {
            candidates.push(d);
        } else {
            if let Some(d) = std::env::var_os("SHOAL_BIN_DIR") {
                candidates.push(d.into());
            }
            if let Some(d) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
                .filter(|d| d.ends_with("release"))
            {
                candidates.push(d);
            }
            if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
                candidates.push(PathBuf::from(d).join("release"));
            }
        }
        let mut tried = Vec::new();
        for d in candidates {
            if PARTS.iter().all(|b| d.join(b).is_file()) {
                return Ok(Bins { dir: d });
            }
            tried.push(d.display().to_string());
        }
        Err(BenchError::Check(format!(
            "no directory holds {} (tried: {}); build them with `cargo build --release -p \
             shoal-origin -p shoal-tracker -p shoal-agent -p shoal-proxy` or name one with \
             --bin-dir",
            PARTS.join(", "),
            tried.join(", ")
        )))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `n` ports the kernel says are free now, all distinct.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Held together until all are chosen, so the kernel hands out distinct ones.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(BenchError::io("cannot bind", "127.0.0.1:0"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(BenchError::io("cannot read the address of", "127.0.0.1:0"))
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    pub origins: usize,
    /// Origins holding each blob (the origins' and the tracker's `replicas`).
    pub replicas: usize,
    /// Without a tracker, agents take the origins as their only peers (the agent's
    /// `tracker = ""`).
    pub tracker: bool,
    pub proxy: bool,
    pub agents: usize,
    /// Bytes per second every host may send and receive over the peer protocol
    /// (`peer.egress`/`peer.ingress` on origins and agents alike); `None`: no cap.
    pub rate: Option<u64>,
    /// Each agent's `cache.max_size`.
    pub cache_size: u64,
    /// Each agent's `swarm.stall_timeout`, in seconds: how long a client's pull may wait
    /// for a piece before it is broken off.
    pub stall_timeout_s: u64,
    /// The processes' log filter.
    pub log: String,
}

/// One process of the cluster.
#[derive(Debug)]
pub struct Member {
    /// `127.0.0.1:<port>`: its API, `/ready` and `/metrics`.
    pub addr: String,
    /// What it is (`origin`, `tracker`, `proxy`, `agent`, or another program's name), to add
    /// up CPU by role.
    pub role: &'static str,
    pub daemon: Daemon,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub origins: Vec<Member>,
    pub tracker: Option<Member>,
    pub proxy: Option<Member>,
    pub agents: Vec<Member>,
    /// Other programs run beside the cluster (a reference registry), stopped with it.
    pub others: Vec<Member>,
    /// This run's write token (origins, proxy): what uploads to the origins present.
    pub write_token: String,
    /// This run's read token (origins, tracker, agents).
    pub read_token: String,
    log: String,
    /// The metainfo key pair of this run (given to the parts through the environment).
    metainfo_keys: shoal_core::signature::KeyPairPem,
}

/// A fresh random token of 64 hex characters, as `openssl rand -hex 32` makes one.
pub fn random_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(BenchError::io("cannot read", "/dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How long each process may take to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Waits until `m` answers `GET /ready` with 200.
fn wait_ready(m: &mut Member) {
    let addr = m.addr.clone();
    m.daemon.wait_until("ready", READY_TIMEOUT, || {
        crate::http::get(&addr, "/ready").is_ok_and(|(status, _)| status == 200)
    });
}

impl Cluster {
    /// Starts the cluster in `dir` (created if need be): origins, then the tracker and the
    /// proxy, then the agents, each group waited on until every member answers `/ready`.
    /// Blocking: call it from a runtime's worker with `block_in_place`.
    pub fn start(bins: &Bins, dir: &Path, spec: &Spec) -> Result<Cluster> {
        for sub in ["config", "logs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(BenchError::io("cannot create", &d))?;
        }
        let mut c = Cluster {
            dir: dir.to_owned(),
            origins: Vec::new(),
            tracker: None,
            proxy: None,
            agents: Vec::new(),
            others: Vec::new(),
            write_token: random_token()?,
            read_token: random_token()?,
            log: spec.log.clone(),
            metainfo_keys: shoal_core::signature::KeyPairPem::generate()
                .map_err(|e| BenchError::Check(format!("a metainfo key pair: {e}")))?,
        };
        let rate = spec.rate.unwrap_or(0);

        let origin_ports = free_ports(spec.origins * 2)?;
        let members: Vec<String> = (0..spec.origins)
            .map(|i| format!("http://{}", addr(origin_ports[2 * i])))
            .collect();
        for i in 0..spec.origins {
            let name = format!("origin-{i}");
            let data = dir.join(&name);
            let config = format!(
                r#"listen = "{listen}"
data_dir = {data:?}
advertise_url = "{advertise}"
replicas = {replicas}
shutdown_grace = "2s"

[peer]
listen = "{peer}"
egress = {rate}
ingress = {rate}

[cluster]
members = {members}

[credentials]
write_token = "{write_token}"
read_token = "{read_token}"

[backend]
kind = "none"
"#,
                write_token = c.write_token,
                read_token = c.read_token,
                listen = addr(origin_ports[2 * i]),
                peer = addr(origin_ports[2 * i + 1]),
                data = data.display().to_string(),
                advertise = members[i],
                replicas = spec.replicas,
                members = toml_list(&members),
            );
            let m = c.spawn(
                bins,
                &name,
                "origin",
                "shoal-origin",
                &config,
                origin_ports[2 * i],
            )?;
            c.origins.push(m);
        }
        c.origins.iter_mut().for_each(wait_ready);

        if spec.tracker {
            let port = free_ports(1)?[0];
            let config = format!(
                r#"listen = "{listen}"
origins = {members}
replicas = {replicas}
shutdown_grace = "2s"

[credentials]
read_token = "{read_token}"
"#,
                read_token = c.read_token,
                listen = addr(port),
                members = toml_list(&members),
                replicas = spec.replicas,
            );
            let mut m = c.spawn(bins, "tracker", "tracker", "shoal-tracker", &config, port)?;
            wait_ready(&mut m);
            c.tracker = Some(m);
        }
        if spec.proxy {
            let port = free_ports(1)?[0];
            let spool = dir.join("proxy");
            let config = format!(
                r#"listen = "{listen}"
origins = {members}
shutdown_grace = "2s"

[credentials]
write_token = "{write_token}"

[uploads]
spool_dir = {spool:?}
"#,
                write_token = c.write_token,
                listen = addr(port),
                members = toml_list(&members),
                spool = spool.display().to_string(),
            );
            let mut m = c.spawn(bins, "proxy", "proxy", "shoal-proxy", &config, port)?;
            wait_ready(&mut m);
            c.proxy = Some(m);
        }

        let tracker = c.tracker.as_ref().map_or(String::new(), Member::url);
        let ports = free_ports(spec.agents * 2)?;
        for i in 0..spec.agents {
            let name = format!("agent-{}", i + 1);
            let cache = dir.join(&name);
            let config = format!(
                r#"listen = "{listen}"
tracker = "{tracker}"
origins = {members}
shutdown_grace = "2s"

[credentials]
read_token = "{read_token}"

[cache]
dir = {cache:?}
max_size = {cache_size}

[peer]
listen = "{peer}"
egress = {rate}
ingress = {rate}

[swarm]
stall_timeout = "{stall}s"
"#,
                stall = spec.stall_timeout_s,
                read_token = c.read_token,
                listen = addr(ports[2 * i]),
                peer = addr(ports[2 * i + 1]),
                members = toml_list(&members),
                cache = cache.display().to_string(),
                cache_size = spec.cache_size,
            );
            let m = c.spawn(bins, &name, "agent", "shoal-agent", &config, ports[2 * i])?;
            c.agents.push(m);
        }
        c.agents.iter_mut().for_each(wait_ready);
        Ok(c)
    }

    fn spawn(
        &mut self,
        bins: &Bins,
        name: &str,
        role: &'static str,
        bin: &str,
        config: &str,
        port: u16,
    ) -> Result<Member> {
        let path = self.dir.join("config").join(format!("{name}.toml"));
        // Each config holds a credential: readable by its owner only.
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(config.as_bytes()))
                .map_err(BenchError::io("cannot write", &path))?;
        }
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let args: Vec<OsString> = vec![
            "--config".into(),
            path.into_os_string(),
            "--log".into(),
            self.log.clone().into(),
        ];
        let mut cmd = Command::new(bins.path(bin));
        cmd.args(&args).env("NO_COLOR", "1");
        // The config file is the whole of each part's configuration.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SHOAL_") {
                cmd.env_remove(k);
            }
        }
        // The run's own metainfo key pair: origins sign with it, agents verify with it.
        match role {
            "origin" => {
                cmd.env(
                    "SHOAL_ORIGIN_CREDENTIALS__METAINFO_KEY",
                    &self.metainfo_keys.private_pem,
                );
            }
            "agent" => {
                cmd.env(
                    "SHOAL_AGENT_CREDENTIALS__METAINFO_KEYS",
                    &self.metainfo_keys.public_pem,
                );
            }
            _ => {}
        }
        Ok(Member {
            addr: addr(port),
            role,
            daemon: Daemon::start(name, cmd, &log),
        })
    }

    /// Every process, the cluster's and the others.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.origins
            .iter()
            .chain(&self.tracker)
            .chain(&self.proxy)
            .chain(&self.agents)
            .chain(&self.others)
    }

    /// An error naming the first process that has exited, with the end of its log.
    pub fn check_all_alive(&mut self, doing: &str) -> Result<()> {
        let all = self
            .origins
            .iter_mut()
            .chain(&mut self.tracker)
            .chain(&mut self.proxy)
            .chain(&mut self.agents)
            .chain(&mut self.others);
        for m in all {
            if let Some(status) = m.daemon.exited() {
                return Err(BenchError::Check(format!(
                    "{} exited ({status}) while {doing}; the end of its log ({}):\n{}",
                    m.daemon.name(),
                    m.daemon.log().display(),
                    crate::process::tail(m.daemon.log(), 25)
                )));
            }
        }
        Ok(())
    }

    /// Stops every process together (SIGTERM, then SIGKILL after a grace). Blocking.
    pub fn stop(&mut self) {
        let mut all: Vec<&mut Daemon> = self
            .origins
            .iter_mut()
            .chain(&mut self.tracker)
            .chain(&mut self.proxy)
            .chain(&mut self.agents)
            .chain(&mut self.others)
            .map(|m| &mut m.daemon)
            .collect();
        stop_all(&mut all, STOP_GRACE);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
