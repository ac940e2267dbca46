//! The test kit every crate's tests share (feature `testing`; never in a shipped binary):
//! waiting for a condition, and reading a registry's metrics the way a scraper does
//! (through [`crate::telemetry::scrape`], which the product's own tools use too).
//!
//! Each part offers a harness for the others' tests in its own `testing` module, behind the
//! same feature name; this module holds what they all need.

use std::future::Future;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};

pub use crate::telemetry::scrape::{metric_sum, metric_value};

/// How often [`wait_until`] and [`wait_until_blocking`] look again.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` every [`POLL`] until it holds; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code outside a runtime: polls `condition` every [`POLL`] on this
/// thread.
pub fn wait_until_blocking(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A fresh random token of 64 hex characters, as `openssl rand -hex 32` makes one: test
/// credentials are made when the test runs.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the binary `bin` with `args` and no environment but `env`, so that nothing from the
/// shell that runs the tests reaches its config.
pub fn run_binary(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// What a finished program wrote to stderr.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a part's `--check-config` and its start were both refused for its config
/// (exit 64, `EX_CONFIG`), each naming `needle`.
pub fn assert_config_refused(args: &[&str], checked: Output, started: Output, needle: &str) {
    for (what, out) in [("--check-config", checked), ("a start", started)] {
        let stderr = stderr_text(&out);
        assert_eq!(
            out.status.code(),
            Some(crate::config::EX_CONFIG),
            "{what} {args:?}: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{what}: {needle} missing from {stderr}"
        );
    }
}

/// `registry` in the Prometheus text format, as `/metrics` serves it.
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap_or_else(|e| panic!("encoding the metrics: {e}"));
    String::from_utf8(out).unwrap_or_else(|e| panic!("metrics are not UTF-8: {e}"))
}

/// [`metric_sum`] over `registry` as it is now.
pub fn registry_sum(registry: &Registry, name: &str, labels: &[&str]) -> f64 {
    metric_sum(&metrics_text(registry), name, labels)
}

/// A throwaway CA in a temporary directory, and certificates from it for the parts a test
/// starts: what `[tls]` tables point at in tests that run over TLS.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: crate::tls::issue::Ca,
    ca_path: std::path::PathBuf,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ca = crate::tls::issue::Ca::new("shoal test CA").unwrap_or_else(|e| panic!("CA: {e}"));
        let ca_path = ca
            .write_cert(dir.path())
            .unwrap_or_else(|e| panic!("CA file: {e}"));
        TestPki { dir, ca, ca_path }
    }

    /// The CA's certificate file.
    pub fn ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }

    /// A `[tls]` table for a part known as `names` (DNS names or IPs; for a peer, one of
    /// them `<x>.agent.shoal` or `<x>.origin.shoal`), valid as `validity` says; the files
    /// are `<stem>.crt` and `<stem>.key`.
    pub fn issue(
        &self,
        stem: &str,
        names: &[&str],
        validity: crate::tls::issue::Validity,
    ) -> crate::tls::TlsConfig {
        let (cert, key) = self
            .ca
            .issue(names, validity)
            .and_then(|i| {
                i.write(self.dir.path(), stem)
                    .map_err(|e| panic!("write: {e}"))
            })
            .unwrap_or_else(|e| panic!("issue: {e}"));
        crate::tls::TlsConfig::files(cert, key, &self.ca_path)
    }

    /// A certificate for the agent `name` on 127.0.0.1, valid for a day.
    pub fn agent(&self, name: &str) -> crate::tls::TlsConfig {
        let peer = crate::tls::issue::agent_name(name);
        self.issue(
            name,
            &[&peer, "127.0.0.1", "localhost"],
            crate::tls::issue::Validity::days(1),
        )
    }

    /// A certificate for the origin `name` on 127.0.0.1 (its HTTPS and its peer port).
    pub fn origin(&self, name: &str) -> crate::tls::TlsConfig {
        let peer = crate::tls::issue::origin_name(name);
        self.issue(
            name,
            &[&peer, "127.0.0.1", "localhost"],
            crate::tls::issue::Validity::days(1),
        )
    }

    /// A certificate for a server that is no peer (a tracker, a proxy) on 127.0.0.1.
    pub fn server(&self, name: &str) -> crate::tls::TlsConfig {
        self.issue(
            name,
            &[name, "127.0.0.1", "localhost"],
            crate::tls::issue::Validity::days(1),
        )
    }

    /// A table that trusts this CA and presents nothing (a client only).
    pub fn client(&self) -> crate::tls::TlsConfig {
        crate::tls::TlsConfig {
            ca: Some(self.ca_path.clone()),
            ..crate::tls::TlsConfig::default()
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_reads_as_its_scrape() {
        let r = Registry::new();
        let c = prometheus::IntCounterVec::new(prometheus::Opts::new("y_total", "y"), &["route"])
            .unwrap_or_else(|e| panic!("{e}"));
        r.register(Box::new(c.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        c.with_label_values(&["a"]).inc_by(3);
        c.with_label_values(&["b"]).inc();
        assert_eq!(registry_sum(&r, "y_total", &["route=\"a\""]), 3.0);
        assert_eq!(registry_sum(&r, "y_total", &[]), 4.0);
    }

    #[test]
    fn waiting_ends_when_the_condition_holds_and_fails_loudly_when_it_never_does() {
        let mut n = 0;
        wait_until_blocking("the third look", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        let failed = std::panic::catch_unwind(|| {
            wait_until_blocking("never", Duration::from_millis(50), || false)
        });
        let msg = failed
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(msg.contains("waiting until never"), "{msg}");
    }
}
