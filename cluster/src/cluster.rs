//! A running cluster: [`Cluster::prepare`] plans the ports, makes the directory, the
//! credentials, every config file and the recorded shape; [`Cluster::start_all`] starts the
//! origins, then the tracker and the proxy, then the agents, each group waited on until
//! every member answers `/ready`, with a pid file for each process. Dropping the cluster
//! stops every process it started, by pid; [`Cluster::detach`] leaves them running (the
//! local cluster's `up`), for [`ClusterDir::stop`] to stop later.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bins::Bins;
use crate::credentials::Credentials;
use crate::dir::{ClusterDir, State};
use crate::error::{LaunchError, Result};
use crate::http::Target;
use crate::process::{Process, open_log, stop_pids};
use crate::spec::{Backend, Member, Plan, Role, Spec};
use crate::tls::Pki;

/// How long a process may take to exit after SIGTERM before it is killed. The parts are
/// configured to finish requests in flight within 2s, so this is only for one that hangs.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Lines of a process's log shown when it fails.
const TAIL: usize = 20;

#[derive(Debug)]
pub struct Cluster {
    bins: Bins,
    dir: ClusterDir,
    spec: Spec,
    plan: Plan,
    credentials: Credentials,
    /// The TLS files, when the cluster runs over TLS.
    pki: Option<Pki>,
    /// How to reach an HTTPS member.
    https: Option<std::sync::Arc<shoal_core::tls::rustls::ClientConfig>>,
    /// The processes started, each with its member's index in the plan.
    procs: Vec<(usize, Process)>,
}

impl Cluster {
    /// Plans, prepares and starts a cluster in `root`; fails, having stopped whatever it
    /// started, unless every process comes up.
    pub fn start(bins: &Bins, root: &Path, spec: Spec) -> Result<Cluster> {
        let mut c = Cluster::prepare(bins, root, spec)?;
        c.start_all(&AtomicBool::new(false))?;
        Ok(c)
    }

    /// Everything but the processes: the ports, `root` and its directories, the
    /// credentials and TLS files (kept if `root` has them), each process's config, and
    /// `cluster.env`.
    pub fn prepare(bins: &Bins, root: &Path, spec: Spec) -> Result<Cluster> {
        bins.check(spec.binaries())?;
        let plan = Plan::new(&spec)?;
        std::fs::create_dir_all(root).map_err(LaunchError::io("cannot create", root))?;
        let dir = ClusterDir::new(root);
        let credentials = Credentials::ensure(&dir)?;
        for sub in ["config", "logs", "run", "data"] {
            dir.make(sub)?;
        }
        if spec.backend == Backend::Shared {
            dir.make("data/backend")?;
        }
        let pki = match spec.tls {
            true => Some(Pki::ensure(&dir, &plan.members)?),
            false => None,
        };
        let https = pki.as_ref().map(Pki::client_config).transpose()?;
        for m in &plan.members {
            crate::dir::make_private_dir(&dir.data(&m.name))?;
            let text = crate::config::render(&spec, &plan, m, &dir, &credentials, pki.as_ref());
            crate::dir::write_private(&dir.config(&m.name), text.as_bytes())?;
        }
        dir.write_state(&State {
            agents: spec.agents,
            rate: spec.rate.clone(),
            tls: spec.tls,
            proxy_tls: spec.proxy_tls,
        })?;
        Ok(Cluster {
            bins: bins.clone(),
            dir,
            spec,
            plan,
            credentials,
            pki,
            https,
            procs: Vec::new(),
        })
    }

    /// Starts every process, group by group, until each answers `/ready`. Stops nothing on
    /// failure: that is for the caller (or dropping the cluster). `interrupt` set from
    /// elsewhere ends the wait with [`LaunchError::Interrupted`].
    pub fn start_all(&mut self, interrupt: &AtomicBool) -> Result<()> {
        let groups: [&[Role]; 3] = [
            &[Role::Origin],
            &[Role::Tracker, Role::Proxy],
            &[Role::Agent],
        ];
        for roles in groups {
            let group: Vec<usize> = (0..self.plan.members.len())
                .filter(|&i| roles.contains(&self.plan.members[i].role))
                .collect();
            for &i in &group {
                if interrupt.load(Ordering::Relaxed) {
                    return Err(LaunchError::Interrupted);
                }
                self.spawn(i)?;
            }
            self.wait_ready(group, interrupt)?;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &self.plan.members[i];
        let log = self.dir.log(&m.name);
        {
            use std::io::Write;
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            open_log(&log)?
                .write_all(format!("\n==== {} started {now}\n", m.name).as_bytes())
                .map_err(LaunchError::io("cannot write", &log))?;
        }
        let mut cmd = Command::new(self.bins.path(m.role.binary()));
        cmd.arg("--config")
            .arg(self.dir.config(&m.name))
            .arg("--log")
            .arg(&self.spec.log)
            // The logs are files, read with less and grep, not a terminal.
            .env("NO_COLOR", "1");
        if self.spec.own_process_groups {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        // The config file is the whole of each part's configuration.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SHOAL_") {
                cmd.env_remove(k);
            }
        }
        let p = Process::spawn(&m.name, cmd, &log)?;
        self.dir.write_pidfile(&m.name, p.pid())?;
        self.procs.push((i, p));
        Ok(())
    }

    /// Waits until every member of `group` answers `/ready`, or fails naming the first that
    /// exits or those not ready in time.
    fn wait_ready(&mut self, mut pending: Vec<usize>, interrupt: &AtomicBool) -> Result<()> {
        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            let mut still = Vec::new();
            for i in pending {
                if let Some((_, p)) = self.procs.iter_mut().find(|(j, _)| *j == i) {
                    p.check_alive("starting", TAIL)?;
                }
                let target = self.target(&self.plan.members[i]);
                if !crate::http::ready(target, Duration::from_secs(2)) {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if interrupt.load(Ordering::Relaxed) {
                return Err(LaunchError::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    names: pending
                        .iter()
                        .map(|&i| self.plan.members[i].name.clone())
                        .collect(),
                    timeout: self.spec.ready_timeout,
                    logs: format!("{}/logs/", self.dir.path().display()).into(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dir(&self) -> &ClusterDir {
        &self.dir
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The cluster's TLS files, when it runs over TLS.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// How a blocking request reaches `m` ([`crate::http`]): HTTPS trusting the cluster's
    /// CA if `m` serves HTTPS.
    pub fn target(&self, m: &Member) -> Target {
        match (&self.https, m.https) {
            (Some(cfg), true) => Target::https(&m.addr, cfg.clone()),
            _ => Target::plain(&m.addr),
        }
    }

    /// A reqwest client for the cluster's parts: one that trusts its CA when it runs over
    /// TLS.
    pub fn client(&self) -> Result<reqwest::Client> {
        match &self.pki {
            Some(p) => p.reqwest(),
            None => crate::registry::client(),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.plan.members
    }

    pub fn of(&self, role: Role) -> Vec<&Member> {
        self.plan.of(role).collect()
    }

    pub fn origins(&self) -> Vec<&Member> {
        self.of(Role::Origin)
    }

    pub fn agents(&self) -> Vec<&Member> {
        self.of(Role::Agent)
    }

    pub fn tracker(&self) -> Option<&Member> {
        self.plan.of(Role::Tracker).next()
    }

    pub fn proxy(&self) -> Option<&Member> {
        self.plan.of(Role::Proxy).next()
    }

    /// Each process started, with its pid.
    pub fn processes(&self) -> impl Iterator<Item = (&Member, u32)> {
        self.procs
            .iter()
            .map(|(i, p)| (&self.plan.members[*i], p.pid()))
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes()
            .find(|(m, _)| m.name == name)
            .map(|(_, pid)| pid)
    }

    pub fn started_any(&self) -> bool {
        !self.procs.is_empty()
    }

    /// An error naming the first process that has exited while the caller was `doing`
    /// something, with the end of its log.
    pub fn check_all_alive(&mut self, doing: &str) -> Result<()> {
        for (_, p) in &mut self.procs {
            p.check_alive(doing, TAIL)?;
        }
        Ok(())
    }

    /// Stops every process together (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and
    /// removes their pid files. Returns those that had to be killed. Blocking.
    pub fn stop(&mut self) -> Vec<(String, u32)> {
        let pids: Vec<(String, u32)> = self
            .procs
            .iter()
            .map(|(_, p)| (p.name().to_owned(), p.pid()))
            .collect();
        let killed = stop_pids(&pids, STOP_GRACE);
        for (_, mut p) in self.procs.drain(..) {
            p.reap();
            let _ = std::fs::remove_file(self.dir.pidfile(p.name()));
        }
        killed
    }

    /// Leaves every process running, recorded in its pid file.
    pub fn detach(mut self) {
        for (_, p) in self.procs.drain(..) {
            p.detach();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (name, pid) in self.stop() {
            eprintln!("{name} (pid {pid}) did not stop within {STOP_GRACE:?}: killed it");
        }
    }
}
