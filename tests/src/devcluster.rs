//! The cluster of `deploy/devcluster.sh`, driven the way a user drives it, in a directory of
//! its own that is deleted afterwards. Its ports are fixed (the script's header lists them),
//! so only one such cluster can run at a time on a machine: tests that use one must hold
//! [`exclusive`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::process::{Cmd, Output, cmd, tail};

/// The proxy's registry address.
pub const PROXY: &str = "127.0.0.1:5000";
pub const TRACKER: &str = "127.0.0.1:7070";
pub const ORIGINS: [&str; 3] = ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"];

/// The user of the proxy's login that `devcluster.sh up` makes.
pub const PROXY_USER: &str = "shoal";

/// Agent `i`'s registry address (agents count from 1).
pub fn agent(i: usize) -> String {
    format!("127.0.0.1:{}", 8080 + i)
}

/// The repository's top directory.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Serialises the tests of one process that start a cluster on the fixed ports.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

const PARTS: [&str; 4] = [
    "shoal-origin",
    "shoal-tracker",
    "shoal-proxy",
    "shoal-agent",
];

/// The directory holding the four parts' binaries, built through cargo into the target
/// directory and profile this test runs from. It builds what `cargo test --workspace`
/// builds (every member's bins and tests), so the features match and, under the README's
/// test command, everything is already built and nothing is compiled again.
///
/// With `SHOAL_BIN_DIR` set, the binaries in that directory are taken as they are.
pub fn binaries() -> &'static Path {
    BIN_DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SHOAL_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| panic!("cannot tell where this test runs from: {e}"));
        // <target>/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()))
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()));
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(&cargo);
        c.args([
            "build",
            "--workspace",
            "--bins",
            "--tests",
            "--locked",
            "--quiet",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root());
        match profile.as_str() {
            "debug" => {}
            "release" => {
                c.arg("--release");
            }
            other => {
                c.args(["--profile", other]);
            }
        }
        let status = c
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo} to build the binaries: {e}"));
        assert!(status.success(), "building the binaries failed: {status}");
        let missing: Vec<&str> = PARTS
            .into_iter()
            .filter(|p| !profile_dir.join(p).is_file())
            .collect();
        assert!(
            missing.is_empty(),
            "the workspace built no {} into {}: the cluster cannot start without {}",
            missing.join(", "),
            profile_dir.display(),
            if missing.len() == 1 { "it" } else { "them" }
        );
        profile_dir
    })
}

/// A running cluster of the script's. Dropping it runs `down --wipe`.
pub struct DevCluster {
    dir: tempfile::TempDir,
    pub agents: usize,
    up: bool,
}

impl DevCluster {
    /// A cluster directory with nothing running yet.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoal-devcluster.")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
        DevCluster {
            dir,
            agents: 0,
            up: false,
        }
    }

    /// `devcluster.sh up --agents N`; fails the test, with the end of every log, unless the
    /// whole cluster comes up.
    pub fn up(agents: usize) -> Self {
        let mut c = DevCluster::new();
        c.start(agents, &[]);
        c
    }

    /// Runs `up --agents N` plus `extra` and fails the test unless it succeeds.
    pub fn start(&mut self, agents: usize, extra: &[&str]) {
        let n = agents.to_string();
        let mut args = vec!["up", "--agents", &n];
        args.extend_from_slice(extra);
        binaries();
        self.up = true;
        self.agents = agents;
        let o = self.script(&args).run();
        if !o.success() {
            panic!(
                "devcluster.sh {} failed ({}):\n{}\n{}\n{}",
                args.join(" "),
                o.status,
                o.stdout,
                o.stderr,
                self.log_tails()
            );
        }
    }

    /// The script with this cluster's directory and, once [`binaries`] has built them, the
    /// workspace's binaries (`down` and `status` need none; a failed build must not make
    /// the clean-up build again).
    pub fn script(&self, args: &[&str]) -> Cmd {
        let c = cmd("bash")
            .arg(root().join("deploy/devcluster.sh"))
            .args(args)
            .env("SHOAL_DEVCLUSTER_DIR", self.dir.path())
            .timeout(Duration::from_secs(180));
        match BIN_DIR.get() {
            Some(bins) => c.env("SHOAL_BIN_DIR", bins),
            None => c,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the credentials `up` generated (`write-token`, `read-token`,
    /// `metainfo-key.pem`, `metainfo-pub.pem`, `proxy-password`, `htpasswd`).
    pub fn secret_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("secrets").join(name)
    }

    /// The first line of a credentials file; fails the test if it cannot be read.
    pub fn secret(&self, name: &str) -> String {
        let path = self.secret_path(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// `user:password` of the proxy's login, as skopeo's `--dest-creds` takes it.
    pub fn proxy_creds(&self) -> String {
        format!("{PROXY_USER}:{}", self.secret("proxy-password"))
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    /// The last lines of every process's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        logs.sort();
        for l in logs {
            out.push_str(&format!("---- {}\n{}\n", l.display(), tail(&l, 15)));
        }
        out
    }

    /// `addr`'s `/metrics`; fails the test if it does not answer.
    pub fn metrics(&self, addr: &str) -> String {
        match crate::http::get(addr, "/metrics") {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!("{addr}/metrics answered {status}: {body}"),
            Err(e) => panic!("{addr}/metrics: {e}"),
        }
    }

    /// `devcluster.sh down` (and `--wipe` if asked); returns what it said.
    pub fn down(&mut self, wipe: bool) -> Output {
        self.up = false;
        let mut args = vec!["down"];
        if wipe {
            args.push("--wipe");
        }
        self.script(&args).run()
    }
}

impl Default for DevCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if self.up {
            let o = self.down(true);
            if !o.success() {
                eprintln!("devcluster.sh down failed: {}\n{}", o.stdout, o.stderr);
            }
        }
    }
}
