//! A cluster's directory: each process's config file, data directory, log and pid file, the
//! credentials, and the recorded shape of the cluster.
//!
//! ```text
//! config/NAME.toml   data/NAME/   logs/NAME.log   run/NAME.pid   secrets/   tls/   cluster.env
//! ```
//!
//! A pid file holds the pid of a process that was started from its config file; a process
//! counts as running from the directory only if that pid still runs with that config file on
//! its command line, so a recycled pid is never taken for it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{LaunchError, Result};
use crate::process::{cmdline_contains, pid_running, stop_pids, tail};
use crate::spec::Rate;

/// The recorded shape of a cluster (`cluster.env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub agents: usize,
    pub rate: Rate,
    /// The parts speak TLS to each other ([`crate::tls`]).
    pub tls: bool,
    /// The proxy's registry is served over HTTPS too.
    pub proxy_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDir {
    root: PathBuf,
}

impl ClusterDir {
    pub fn new(root: impl Into<PathBuf>) -> ClusterDir {
        ClusterDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn config(&self, name: &str) -> PathBuf {
        self.root.join("config").join(format!("{name}.toml"))
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    pub fn pidfile(&self, name: &str) -> PathBuf {
        self.root.join("run").join(format!("{name}.pid"))
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(name)
    }

    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// A file of the credentials (`write-token`, `read-token`, `metainfo-key.pem`,
    /// `metainfo-pub.pem`, `proxy-password`, `htpasswd`).
    pub fn secret(&self, file: &str) -> PathBuf {
        self.secrets().join(file)
    }

    /// The cluster's TLS files ([`crate::tls`]).
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("cluster.env")
    }

    /// Creates `sub` (and its parents), private to the owner.
    pub fn make(&self, sub: &str) -> Result<PathBuf> {
        let d = self.root.join(sub);
        make_private_dir(&d)?;
        Ok(d)
    }

    /// Names of the processes recorded in `run/`, whatever the cluster's size, sorted.
    pub fn recorded_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("run")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".pid"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// The pid recorded for `name` if that process still runs and is the one started from
    /// this directory's config file.
    pub fn live_pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pidfile(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let config = self.config(name);
        (pid_running(pid) && cmdline_contains(pid, &config.to_string_lossy())).then_some(pid)
    }

    /// The recorded processes that run, in [`ClusterDir::recorded_names`] order.
    pub fn running_names(&self) -> Vec<String> {
        self.recorded_names()
            .into_iter()
            .filter(|n| self.live_pid(n).is_some())
            .collect()
    }

    pub fn write_pidfile(&self, name: &str, pid: u32) -> Result<()> {
        self.make("run")?;
        write_private(&self.pidfile(name), format!("{pid}\n").as_bytes())
    }

    /// Stops the named processes that run from here (SIGTERM, then SIGKILL after `grace`)
    /// and removes their pid files. Returns those that had to be killed.
    pub fn stop(&self, names: &[String], grace: Duration) -> Vec<(String, u32)> {
        let mut pids = Vec::new();
        for name in names {
            if let Some(pid) = self.live_pid(name) {
                pids.push((name.clone(), pid));
            }
            let _ = std::fs::remove_file(self.pidfile(name));
        }
        stop_pids(&pids, grace)
    }

    pub fn read_state(&self) -> Option<State> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        let mut agents = None;
        let mut rate = Rate::unlimited();
        let (mut tls, mut proxy_tls) = (false, false);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("AGENTS", v)) => agents = v.trim().parse().ok(),
                Some(("RATE", v)) => rate = Rate::parse(&unquote(v.trim()))?,
                Some(("TLS", v)) => tls = v.trim() == "1",
                Some(("PROXY_TLS", v)) => proxy_tls = v.trim() == "1",
                _ => {}
            }
        }
        Some(State {
            agents: agents?,
            rate,
            tls,
            proxy_tls,
        })
    }

    pub fn write_state(&self, state: &State) -> Result<()> {
        let rate = state.rate.as_str();
        let rate = if rate.contains(' ') {
            format!("'{rate}'")
        } else {
            rate.to_owned()
        };
        write_private(
            &self.state_file(),
            format!(
                "AGENTS={}\nRATE={rate}\nTLS={}\nPROXY_TLS={}\n",
                state.agents,
                u8::from(state.tls),
                u8::from(state.proxy_tls)
            )
            .as_bytes(),
        )
    }

    /// Whether this is a directory a cluster was started in (and so may be deleted whole).
    pub fn looks_like_cluster(&self) -> bool {
        self.state_file().is_file() || self.root.join("run").is_dir()
    }

    /// The last `lines` lines of every process's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.root.join("logs")) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        logs.sort();
        for l in logs {
            out.push_str(&format!("---- {}\n{}\n", l.display(), tail(&l, lines)));
        }
        out
    }
}

/// `RATE=1.5\ MiB` or `RATE='1.5 MiB'` (as a shell wrote it) to `1.5 MiB`.
fn unquote(v: &str) -> String {
    let v = v
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v);
    v.replace('\\', "")
}

/// Creates `dir` and its parents; the ones made here are private to the owner.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LaunchError::io("cannot create", dir))
}

/// Writes `bytes` to `path`, readable by its owner only (whatever the file's mode was).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
        })
        .map_err(LaunchError::io("cannot write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_back_and_reads_what_a_shell_wrote() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = ClusterDir::new(tmp.path());
        assert_eq!(dir.read_state(), None);
        for (rate, tls) in [("0", false), ("20MiB", true), ("1.5 MiB", true)] {
            let state = State {
                agents: 4,
                rate: Rate::parse(rate).unwrap_or_else(|| panic!("{rate}")),
                tls,
                proxy_tls: rate == "0",
            };
            dir.write_state(&state).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(dir.read_state(), Some(state));
        }
        std::fs::write(dir.state_file(), "AGENTS=2\nRATE=1.5\\ MiB\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dir.read_state()
                .map(|s| (s.agents, s.rate.as_str().to_owned())),
            Some((2, "1.5 MiB".to_owned()))
        );
    }

    #[test]
    fn a_pid_counts_only_with_its_config_on_its_command_line() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = ClusterDir::new(tmp.path());
        // This test's own pid runs, but not from the directory's config.
        dir.write_pidfile("origin-0", std::process::id())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dir.recorded_names(), ["origin-0"]);
        assert_eq!(dir.live_pid("origin-0"), None);
        assert!(dir.running_names().is_empty());
    }
}
