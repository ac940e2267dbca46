//! Programs the tests and benchmarks run: to completion within a deadline ([`Cmd`]), or in
//! the background until they are done with them ([`Daemon`], the cluster launcher's
//! [`Process`], stopped by its pid on drop).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use shoal_cluster::bins::which;
pub use shoal_cluster::process::{Process, Signal, pid_running, signal, stat_fields, tail};

/// Fails the test unless `program` is on the PATH, naming the Debian package that has it.
pub fn require(program: &str, package: &str) {
    if which(program).is_none() {
        panic!(
            "{program} is not installed, and this test needs it: install the Debian package \
             {package} (tests/install-deps.sh does, and ./test.sh runs that first)"
        );
    }
}

/// What a finished program printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A program to run to completion: it must finish within its deadline (default two
/// minutes) or it is killed and the test fails with what it had printed.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    dir: Option<PathBuf>,
    stdin: Option<PathBuf>,
    timeout: Duration,
}

pub fn cmd(program: &str) -> Cmd {
    Cmd {
        program: program.to_owned(),
        args: Vec::new(),
        env: Vec::new(),
        dir: None,
        stdin: None,
        timeout: Duration::from_secs(120),
    }
}

impl Cmd {
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.env.push((k.to_owned(), v.into()));
        self
    }

    pub fn dir(mut self, d: &Path) -> Self {
        self.dir = Some(d.to_owned());
        self
    }

    /// Feeds the file to the program's stdin (a password, so that it is in no command line).
    pub fn stdin_file(mut self, path: &Path) -> Self {
        self.stdin = Some(path.to_owned());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs the program and returns how it ended, whatever that was. Fails the test if it
    /// cannot be started or does not finish in time.
    pub fn run(&self) -> Output {
        // Output goes to files rather than pipes: a program that leaves a child behind
        // holding its stdout (a daemon it started) must not keep the test waiting.
        let mut out = tempfile::tempfile()
            .unwrap_or_else(|e| panic!("cannot make a temporary file for output: {e}"));
        let mut err = tempfile::tempfile()
            .unwrap_or_else(|e| panic!("cannot make a temporary file for output: {e}"));
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        match &self.stdin {
            Some(p) => {
                let f = File::open(p)
                    .unwrap_or_else(|e| panic!("cannot open {} for stdin: {e}", p.display()));
                c.stdin(f);
            }
            None => {
                c.stdin(Stdio::null());
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        let (o, e) = match (out.try_clone(), err.try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            _ => panic!("cannot share a temporary file with a child process"),
        };
        c.stdout(o).stderr(e);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(poll_interval()),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not finish within {:?}; it printed:\n{}\n{}",
                        self.display(),
                        self.timeout,
                        read_all(&mut out),
                        read_all(&mut err)
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.display()),
            }
        };
        Output {
            status,
            stdout: read_all(&mut out),
            stderr: read_all(&mut err),
        }
    }

    /// Runs the program and returns its stdout; fails the test, with everything the
    /// program printed, unless it exits 0.
    pub fn ok(&self) -> String {
        let o = self.run();
        if !o.success() {
            panic!(
                "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                self.display(),
                o.status,
                o.stdout,
                o.stderr
            );
        }
        o.stdout
    }
}

fn poll_interval() -> Duration {
    Duration::from_millis(50)
}

fn read_all(f: &mut File) -> String {
    let mut s = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// A program running in the background with its output in a log file: the launcher's
/// [`Process`], failing the test where that returns an error. Dropping it stops it:
/// SIGTERM, then SIGKILL after a grace period. The pid stays ours until then, since the
/// child is only reaped here.
#[derive(Debug)]
pub struct Daemon(Process);

impl Daemon {
    /// Starts `program` with `args`, its stdout and stderr appended to `log`. Fails the test
    /// if it cannot be started.
    pub fn spawn(name: &str, program: &str, args: &[OsString], log: &Path) -> Daemon {
        let mut c = Command::new(program);
        c.args(args);
        Daemon::start(name, c, log)
    }

    /// Starts a prepared command (its arguments and environment set by the caller), its
    /// stdin closed and its stdout and stderr appended to `log`. Fails the test if it cannot
    /// be started.
    pub fn start(name: &str, command: Command, log: &Path) -> Daemon {
        Daemon(Process::spawn(name, command, log).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// How the daemon ended, if it has; it is reaped then.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.exited()
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    pub fn log(&self) -> &Path {
        self.0.log()
    }

    /// Waits until `ready()` holds. Fails the test, with the end of the daemon's log, if the
    /// daemon exits first or `timeout` passes.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            if let Some(status) = self.0.exited() {
                panic!(
                    "{} exited ({status}) before {what}; the end of its log ({}):\n{}",
                    self.name(),
                    self.log().display(),
                    tail(self.log(), 30)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} is running but not {what} after {timeout:?}; the end of its log ({}):\n{}",
                    self.name(),
                    self.log().display(),
                    tail(self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon: SIGTERM, then SIGKILL if it still runs after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.0.stop(grace) {
            eprintln!(
                "{} did not stop within {grace:?} of SIGTERM: killed it",
                self.name()
            );
        }
    }
}

/// Runs `program` with `args` and `env` to the end from async code (tests whose servers run
/// on the same runtime must not block it), within two minutes, and returns its stdout;
/// fails the test with its output if it does not succeed.
pub async fn run_async(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} took more than two minutes"))
    .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_outlives_its_deadline_is_killed_and_fails() {
        let r = std::panic::catch_unwind(|| {
            cmd("sleep")
                .arg("30")
                .timeout(Duration::from_millis(200))
                .run()
        });
        let msg = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(msg.contains("did not finish"), "{msg}");
    }

    #[test]
    fn output_and_status_come_back() {
        let o = cmd("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert_eq!(o.status.code(), Some(3));
    }

    #[test]
    fn a_missing_program_is_named() {
        let r = std::panic::catch_unwind(|| require("no-such-program-here", "nothing"));
        let msg = r
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.contains("no-such-program-here is not installed"),
            "{msg}"
        );
    }

    #[test]
    fn a_daemon_is_stopped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::spawn("sleeper", "sleep", &["30".into()], &dir.path().join("log"));
        let pid = d.pid();
        assert!(pid_running(pid));
        drop(d);
        assert!(!pid_running(pid));
    }
}
