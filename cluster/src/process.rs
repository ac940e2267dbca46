//! Processes started in the background and stopped by their pid: the parts of a cluster, and
//! any daemon a test or benchmark runs beside them.
//!
//! A [`Process`] is started with stdin closed and its output appended to a log file.
//! Dropping one stops it unless it was [detached](Process::detach). [`stop_pids`] stops any
//! set of pids together: SIGTERM to each, then SIGKILL to those still running after a grace.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Pid;
pub use rustix::process::Signal;

use crate::error::{LaunchError, Result};

/// How often stopping and readiness look again.
const POLL: Duration = Duration::from_millis(100);

/// Sends `signal` to `pid`; false if there is no such process (or it is not ours to signal).
pub fn signal(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, signal).is_ok())
}

/// Whether the process with this pid runs: it exists and is not a zombie (one that has
/// exited but that its parent, perhaps init, has not reaped yet).
pub fn pid_running(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.into_iter().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The fields of `/proc/<pid>/stat` after the command name, from the state (field 3 of the
/// line) on; `None` if there is no such process.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces and parentheses itself.
    let (_, rest) = stat.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether the command line of `pid` contains `needle` (a config file's path): a recycled
/// pid is never taken for a process we started.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let line = String::from_utf8_lossy(&c).replace('\0', " ");
        line.contains(needle)
    })
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({} cannot be read: {e})", path.display()),
    }
}

/// Stops the processes together: SIGTERM to each, then SIGKILL to any still running after
/// `grace`. Returns those that had to be killed.
pub fn stop_pids(pids: &[(String, u32)], grace: Duration) -> Vec<(String, u32)> {
    let mut sent = Vec::new();
    for (name, pid) in pids {
        if pid_running(*pid) && signal(*pid, Signal::TERM) {
            sent.push((name.clone(), *pid));
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let left: Vec<(String, u32)> = sent
            .iter()
            .filter(|(_, pid)| pid_running(*pid))
            .cloned()
            .collect();
        if left.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            for (_, pid) in &left {
                signal(*pid, Signal::KILL);
            }
            return left;
        }
        std::thread::sleep(POLL);
    }
}

/// Opens `log` for appending, readable by its owner only.
pub fn open_log(log: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(LaunchError::io("cannot open", log))
}

/// A program running in the background with its output in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Reaped, stopped, or left running on purpose: nothing to do on drop.
    done: bool,
}

impl Process {
    /// Starts a prepared command (its arguments, environment and process group set by the
    /// caller), its stdin closed and its stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process> {
        let out = open_log(log)?;
        let err = out
            .try_clone()
            .map_err(LaunchError::io("cannot open", log))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                LaunchError::Check(format!(
                    "cannot start {name} ({}): {e}",
                    command.get_program().to_string_lossy()
                ))
            })?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            done: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How the process ended, if it has; it is reaped then.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.done = true;
                Some(status)
            }
            _ => None,
        }
    }

    /// An error naming the process, with the end of its log, if it has exited while the
    /// caller was `doing` something.
    pub fn check_alive(&mut self, doing: &str, lines: usize) -> Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(_) => Err(LaunchError::Exited {
                name: self.name.clone(),
                doing: doing.to_owned(),
                log: self.log.clone(),
                tail: tail(&self.log, lines),
            }),
        }
    }

    /// Stops it: SIGTERM, then SIGKILL if it still runs after `grace`. True if it had to be
    /// killed.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if self.done || self.exited().is_some() {
            return false;
        }
        let killed = !stop_pids(&[(self.name.clone(), self.pid())], grace).is_empty();
        self.reap();
        killed
    }

    /// Reaps the process once it has ended (after [`stop_pids`] stopped it).
    pub fn reap(&mut self) {
        if !self.done {
            let _ = self.child.wait();
            self.done = true;
        }
    }

    /// Leaves it running when this handle goes.
    pub fn detach(mut self) {
        self.done = true;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.stop(Duration::from_secs(20)) {
            eprintln!(
                "{} did not stop within 20s of SIGTERM: killed it",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_stopped_on_drop_and_a_detached_one_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("log");
        let start = || {
            let mut c = Command::new("sleep");
            c.arg("30");
            Process::spawn("sleeper", c, &log).unwrap_or_else(|e| panic!("{e}"))
        };
        let p = start();
        let pid = p.pid();
        assert!(pid_running(pid));
        drop(p);
        assert!(!pid_running(pid));

        let p = start();
        let pid = p.pid();
        p.detach();
        assert!(pid_running(pid));
        assert!(stop_pids(&[("sleeper".into(), pid)], Duration::from_secs(5)).is_empty());
        // Nothing reaps it now: it stays a zombie of this test, which counts as stopped.
        assert!(!pid_running(pid));
    }

    #[test]
    fn one_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = Command::new("sh");
        c.args(["-c", "trap '' TERM; echo up; while :; do sleep 1; done"]);
        let log = dir.path().join("log");
        let mut p = Process::spawn("stubborn", c, &log).unwrap_or_else(|e| panic!("{e}"));
        shoal_core::testing::wait_until_blocking(
            "the shell traps SIGTERM",
            Duration::from_secs(10),
            || tail(&log, 1) == "up",
        );
        assert!(p.stop(Duration::from_millis(300)));
        assert!(p.exited().is_some() || !pid_running(p.pid()));
    }
}
