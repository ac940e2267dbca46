//! End to end: the local cluster (three origins, a tracker, the proxy on 127.0.0.1:5000,
//! three agents on 127.0.0.1:8081-8083, started by the cluster launcher exactly as
//! `deploy/devcluster.sh up --tls` starts it), and the real clients users run against it.
//! Every test runs the parts over TLS, their certificates from the cluster's own CA, but one
//! ([`script::a_plaintext_cluster_still_carries_an_image`]) that keeps the plaintext switch
//! covered; the agents' registries, where the clients pull, are plain HTTP on loopback.
//!
//! - [`docker`]: a sandboxed dockerd (vfs, no iptables, no bridge, its own root, exec root,
//!   pidfile and socket) pushes an image made with `docker import` (a static program and a
//!   40 MiB layer) through the proxy, forgets it, pulls it through each agent, and runs it.
//! - [`clients`]: skopeo sends a two-platform index in through the proxy and both platforms
//!   come back, byte for byte, through an agent; podman (its own root and run root, vfs)
//!   pulls through an agent; containerd (its own config, root, state and socket) pulls with
//!   `ctr --hosts-dir` and a `hosts.toml` that mirrors a registry name that does not exist
//!   to an agent: the `ns=` path.
//! - [`proxy_https`]: the proxy serves its registry over HTTPS (`--proxy-tls`): skopeo pushes
//!   through it trusting the cluster's CA (`--dest-cert-dir`), and one that does not trust
//!   it is refused.
//! - [`script`]: `devcluster.sh demo` pushes its own image and pulls it through every
//!   agent; the script itself: `up` is idempotent, refuses busy ports, `status` tells,
//!   `down` stops exactly what it started and `--wipe` deletes the data; credentials: `up`
//!   generates them, pushes need the proxy's login (docker login, skopeo `--dest-creds`) and
//!   one without it is refused and counted; pulls through the proxy and the agents need
//!   none; the origins refuse a write without the write token and a read without the read
//!   token; every file holding a secret is readable by its owner alone.
//!
//! The cluster's ports are fixed, so the tests take turns ([`exclusive`]). A program a test
//! needs that is missing or cannot start fails the test, naming its package. Every daemon a
//! test starts is stopped by its pid, also when the test fails. Built only with the
//! `system-tests` feature (`./test.sh`): these tests need root and programs other than Rust.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod clients;
mod docker;
mod proxy_https;
mod script;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_cluster::figures::agent_piece_bytes;
use shoal_cluster::http::Target;
use shoal_cluster::spec::local::agent;
use shoal_cluster::{Cluster, ClusterDir, PROXY_USER, Rate, Spec};
use shoal_tests::process::{Cmd, cmd};

const AGENTS: usize = 3;

/// Serialises the tests of this binary, which start clusters on the fixed ports.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `deploy/devcluster.sh` with `args`, for the cluster in `dir`, taking the binaries the
/// tests use.
fn script(dir: &Path, args: &[&str]) -> Cmd {
    cmd("bash")
        .arg(shoal_cluster::bins::workspace_root().join("deploy/devcluster.sh"))
        .args(args)
        .env("SHOAL_DEVCLUSTER_DIR", dir)
        .env("SHOAL_BIN_DIR", shoal_tests::bins().dir())
        .timeout(Duration::from_secs(180))
}

/// `at`'s `/metrics`; fails the test if it does not answer.
fn metrics(at: impl Into<Target>) -> String {
    shoal_cluster::http::metrics(at).unwrap_or_else(|e| panic!("{e}"))
}

/// The local cluster, started through the launcher in a directory of its own and stopped
/// (and the directory deleted) when dropped.
pub struct Local {
    cluster: Cluster,
    // Dropped after the cluster.
    dir: tempfile::TempDir,
}

impl Local {
    /// Fails the test, with the end of every log, unless the whole cluster comes up over
    /// TLS.
    fn up(agents: usize) -> Local {
        Local::up_with(agents, |_| {})
    }

    /// [`Local::up`] with the spec changed by `change`.
    fn up_with(agents: usize, change: impl FnOnce(&mut Spec)) -> Local {
        let dir = tempfile::Builder::new()
            .prefix("shoal-devcluster.")
            .tempdir()
            .unwrap();
        let mut spec = Spec::local(agents, Rate::unlimited());
        spec.own_process_groups = false;
        spec.tls = true;
        change(&mut spec);
        let cluster = Cluster::start(&shoal_tests::bins(), dir.path(), spec).unwrap_or_else(|e| {
            panic!(
                "the local cluster did not come up: {e}\n{}",
                ClusterDir::new(dir.path()).log_tails(15)
            )
        });
        Local { cluster, dir }
    }

    fn agents(&self) -> usize {
        self.cluster.agents().len()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn script(&self, args: &[&str]) -> Cmd {
        script(self.dir(), args)
    }

    fn secret_path(&self, name: &str) -> PathBuf {
        self.cluster.dir().secret(name)
    }

    /// `user:password` of the proxy's login, as skopeo's `--dest-creds` takes it.
    fn proxy_creds(&self) -> String {
        format!("{PROXY_USER}:{}", self.cluster.credentials().proxy_password)
    }

    fn log_tails(&self) -> String {
        self.cluster.dir().log_tails(15)
    }
}

type Scenario = fn(&Local);

/// Runs each scenario against one cluster, every one even when an earlier one fails, and
/// fails with the list of those that did.
#[test]
fn real_clients_push_through_the_proxy_and_pull_through_every_agent() {
    let _turn = exclusive();
    let cluster = Local::up(AGENTS);
    let scenarios: [(&str, Scenario); 5] = [
        ("docker", docker::docker),
        ("skopeo", clients::skopeo_two_platform_index),
        ("podman", clients::podman),
        ("containerd", clients::containerd_mirror),
        ("demo", script::demo),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&cluster)));
        eprintln!("scenario {name}: {:.1?}", started.elapsed());
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    if !failed.is_empty() {
        panic!(
            "{} of {} scenarios failed:\n\n{}\n\nthe cluster's logs:\n{}",
            failed.len(),
            scenarios.len(),
            failed.join("\n\n"),
            cluster.log_tails()
        );
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Piece bytes agent `i` has received since it started: (from peers, from origins).
fn swarm_bytes(i: usize) -> (f64, f64) {
    agent_piece_bytes(&agent(i))
}
