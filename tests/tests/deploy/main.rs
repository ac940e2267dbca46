//! The deployment files checked against the code they deploy.
//!
//! - [`chart`], [`credentials`]: the Helm chart. `tests/deploy/chart.py` lints it (strict)
//!   and renders it with Helm's own engine for every value set in `helm/shoal/ci/`,
//!   validates every object against the Kubernetes 1.30 schemas (strict, offline), and
//!   checks that bad values are refused ([`render`] reads what it rendered). The tests here
//!   check that the addresses each part is given match the rendered Services and pods,
//!   every pod runs restricted, every part takes its credentials from the credentials Secret
//!   (generated once and kept across upgrades, which chart.py checks through Helm's own
//!   `lookup` against a stand-in API server), the NetworkPolicy lets in Shoal's pods and
//!   the nodes, and the proxy's push login is on.
//! - [`tls`]: TLS on by default and plaintext when the values say so; every file a part's
//!   `[tls]` names is in its pod; the generated certificates name what the parts dial and
//!   come from CAs an upgrade keeps; cert-manager is asked for the same.
//! - [`configs`]: every rendered config is accepted by the real binary's `--check-config`,
//!   run with the pod's own arguments and environment, its Secrets resolved (certificates
//!   cert-manager would issue made by a test CA, with the names the Certificates ask for);
//!   so is each of `deploy/config/*.toml`.
//! - [`dockerfile`]: `deploy/Dockerfile` names binaries and stages that exist and needs no
//!   shell at run time.
//! - [`systemd`]: `deploy/systemd/*.service` run the binaries with their example configs,
//!   hardened, and pass `systemd-analyze verify` and `systemd-analyze security`.
//!
//! Built only with the `system-tests` feature (`./test.sh`): these tests need Python with
//! Helm's packages, openssl and systemd-analyze, and fail naming what is missing. A part
//! whose binary is not in the workspace yet cannot be run; the tests say so on stderr and
//! check everything else about it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

mod chart;
mod configs;
mod credentials;
mod dockerfile;
mod render;
mod systemd;
mod tls;

use render::*;
use systemd::{lookup, seconds, which};

const PARTS: [&str; 4] = ["origin", "tracker", "agent", "proxy"];
const VALUE_SETS: [&str; 9] = [
    "default",
    "auth",
    "ingress",
    "small",
    "restore",
    "no-agent",
    "no-containerd",
    "tls-off",
    "cert-manager",
];
const BIN_DIR: &str = "/usr/local/bin";

fn root() -> PathBuf {
    shoal_cluster::bins::workspace_root()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

// ---------------------------------------------------------------------------------------
// The real binaries.

/// The binary targets of the workspace, from cargo itself.
fn workspace() -> &'static (BTreeSet<String>, BTreeSet<String>) {
    static W: OnceLock<(BTreeSet<String>, BTreeSet<String>)> = OnceLock::new();
    W.get_or_init(|| {
        let out = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata failed");
        let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut packages = BTreeSet::new();
        let mut bins = BTreeSet::new();
        for p in meta["packages"].as_array().unwrap() {
            packages.insert(p["name"].as_str().unwrap().to_owned());
            for t in p["targets"].as_array().unwrap() {
                if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                    bins.insert(t["name"].as_str().unwrap().to_owned());
                }
            }
        }
        (packages, bins)
    })
}

/// `shoal-<part>` for each part whose binary exists, from the binary finder every test
/// uses ([`shoal_tests::bins`]): built once through cargo into the target dir this test runs
/// from, as `cargo test --workspace` builds them, so that under `./test.sh` everything is
/// built already.
fn binaries() -> &'static BTreeMap<&'static str, PathBuf> {
    static B: OnceLock<BTreeMap<&'static str, PathBuf>> = OnceLock::new();
    B.get_or_init(|| {
        let built = shoal_tests::bins();
        let (_, bins) = workspace();
        let mut found = BTreeMap::new();
        for part in PARTS {
            let name = format!("shoal-{part}");
            if bins.contains(&name) {
                let path = built.path(&name);
                assert!(path.exists(), "{} was not built", path.display());
                found.insert(part, path);
            }
        }
        assert!(
            found.contains_key("tracker"),
            "no shoal-tracker binary: these tests would check nothing"
        );
        found
    })
}

fn say_unchecked(what: &str) {
    let missing: Vec<&str> = PARTS
        .into_iter()
        .filter(|p| !binaries().contains_key(p))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "NOTE: {what}: not run for {} (no binary in the workspace yet)",
            missing
                .iter()
                .map(|p| format!("shoal-{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a binary with exactly `env` (nothing inherited, so no stray SHOAL_* variable can
/// change the outcome) and waits at most 60 s for it.
fn run(bin: &Path, args: &[String], env: &[(String, String)]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not exit within 60s (does it honour --check-config?)",
                bin.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: fs::read_to_string(out_path).unwrap_or_default(),
        stderr: fs::read_to_string(err_path).unwrap_or_default(),
    }
}
