//! A tracker on a free port of 127.0.0.1 for tests, this crate's and other crates' (feature
//! `testing`; never in a shipped binary).
//!
//! ```no_run
//! # async fn f(origins: Vec<String>, read_token: &str) {
//! use shoal_tracker::testing::{TestTracker, test_config};
//! let tracker = TestTracker::start(test_config(origins, read_token)).await;
//! let url = &tracker.url;
//! tracker.stop().await;
//! # }
//! ```
//!
//! Helpers here panic with a message when the test itself is wrong or the tracker fails:
//! that is a test failure, not an input to handle.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::Registry;
use shoal_core::auth::Secret;
use shoal_core::testing::{TestPki, registry_sum, wait_until};
use shoal_core::tls::{Tls, TlsConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, TrackerError};

/// How long a test tracker may take to become ready, and to see its origins.
const START: Duration = Duration::from_secs(10);

/// A config for tests: the tracker of `origins`, on port 0 of 127.0.0.1, asking announces
/// and metainfo requests for `read_token`, in plaintext; every other key at its default.
pub fn test_config(origins: Vec<String>, read_token: &str) -> Config {
    let mut c = Config {
        origins,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: TlsConfig::plaintext(),
        ..Config::default()
    };
    c.credentials.read_token = Secret::new(read_token);
    c
}

/// [`test_config`] over TLS: HTTPS with a certificate from `pki` for 127.0.0.1, the
/// origins verified against its CA (they run over TLS too: `https://` URLs). `pki` must
/// outlive the tracker.
pub fn tls_config(origins: Vec<String>, read_token: &str, pki: &TestPki) -> Config {
    Config {
        tls: pki.server("tracker"),
        ..test_config(origins, read_token)
    }
}

/// A tracker serving on a real socket until it is stopped or dropped, with its own
/// registry.
#[derive(Debug)]
pub struct TestTracker {
    pub addr: SocketAddr,
    /// `http://<addr>`, or `https://<addr>` when the config has TLS on.
    pub url: String,
    pub registry: Registry,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), TrackerError>>>,
}

impl TestTracker {
    /// Serves `config` on a free port of 127.0.0.1 and waits until it is ready: its first
    /// look at the origins is over, whatever it found.
    pub async fn start(config: Config) -> TestTracker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding a test port: {e}"));
        Self::start_on(config, listener).await
    }

    /// [`TestTracker::start`] on a listener the test has bound itself.
    pub async fn start_on(config: Config, listener: TcpListener) -> TestTracker {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test listener address: {e}"));
        // The tracker's own CA verifies it, as its clients would.
        let tls = Tls::from_config(&config.tls)
            .unwrap_or_else(|e| panic!("the test tracker's [tls]: {e}"));
        let url = match tls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let http = shoal_core::tls::client_builder(tls.as_ref())
            .unwrap_or_else(|e| panic!("HTTP client: {e}"))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        let registry = Registry::new();
        let stop = CancellationToken::new();
        let mut task = tokio::spawn(crate::run(config, listener, registry.clone(), stop.clone()));
        let ready = format!("{url}/ready");
        let became_ready = wait_until("the tracker is ready", START, || {
            let answer = http.get(&ready).send();
            async move { matches!(answer.await, Ok(r) if r.status().is_success()) }
        });
        tokio::select! {
            () = became_ready => {}
            ended = &mut task => match ended {
                Ok(Ok(())) => panic!("the tracker stopped before it was ready"),
                Ok(Err(e)) => panic!("the tracker failed to start: {e}"),
                Err(e) => panic!("the tracker's task: {e}"),
            },
        }
        TestTracker {
            addr,
            url,
            registry,
            stop,
            task: Some(task),
        }
    }

    /// Waits until the tracker has found at least `n` of its origins up.
    pub async fn wait_origins_up(&self, n: usize) {
        wait_until(&format!("the tracker sees {n} origins up"), START, || {
            let up = self.metric("shoal_tracker_origins_up", &[]);
            async move { up >= n as f64 }
        })
        .await;
    }

    /// The sum of `name`'s samples whose labels contain each of `labels`, as
    /// [`shoal_core::testing::registry_sum`] reads them.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        registry_sum(&self.registry, name, labels)
    }

    /// Stops the tracker and waits until it has stopped; panics if it failed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the tracker failed: {e}"),
                Err(e) => panic!("the tracker's task: {e}"),
            }
        }
    }
}

impl Drop for TestTracker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
