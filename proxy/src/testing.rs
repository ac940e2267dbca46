//! A proxy on a real socket in front of origins, for tests of this crate and others (feature
//! `testing`; never in a shipped binary). The origins come from [`shoal_origin::testing`].
//!
//! ```no_run
//! # async fn f() {
//! use shoal_proxy::testing::TestProxy;
//! let proxy = TestProxy::start().await;
//! let base = proxy.url("/v2/");
//! # }
//! ```
//!
//! Helpers here panic with a message when the test itself is wrong or a part fails to start:
//! that is a test failure, not an input to handle.

use std::path::Path;
use std::time::Duration;

use prometheus::Registry;
use shoal_core::Digest;
use shoal_core::testing::{registry_sum, wait_until};
use shoal_origin::testing::TestCluster;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};

/// A config for tests: the proxy of `origins`, with their write token, spooling uploads
/// under `spool_dir`, draining for at most a second when it stops.
pub fn test_config(origins: &TestCluster, spool_dir: &Path) -> Config {
    let mut config = Config {
        origins: origins.urls(),
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    };
    config.credentials.write_token = Secret::new(origins.write_token());
    config.uploads.spool_dir = spool_dir.to_owned();
    config
}

/// A running proxy and the origins behind it; everything stops when it is dropped.
#[derive(Debug)]
pub struct TestProxy {
    /// `127.0.0.1:<port>` of the proxy.
    pub addr: String,
    pub registry: Registry,
    pub origins: TestCluster,
    pub spool: tempfile::TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl TestProxy {
    /// A proxy in front of three origins that keep each blob and tag on two of them.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`TestProxy::start`], with `configure` adjusting the proxy's config first.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let origins = TestCluster::builder(3).replicas(2).start().await;
        Self::start_in_front_of(origins, configure).await
    }

    /// A proxy in front of `origins`, with `configure` adjusting its config first; ready
    /// when this returns.
    pub async fn start_in_front_of(
        origins: TestCluster,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let mut config = test_config(&origins, spool.path());
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding a test port: {e}"));
        let addr = match listener.local_addr() {
            Ok(a) => a.to_string(),
            Err(e) => panic!("test listener address: {e}"),
        };
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (registry, shutdown) = (registry.clone(), shutdown.clone());
            async move {
                if let Err(e) = crate::run(config, listener, registry, shutdown).await {
                    panic!("proxy failed: {e}");
                }
            }
        });
        let proxy = TestProxy {
            addr,
            registry,
            origins,
            spool,
            shutdown,
            task,
        };
        let http = shoal_core::tls::client();
        let ready = proxy.url("/ready");
        wait_until("the proxy is ready", Duration::from_secs(10), || {
            let answer = http.get(&ready).send();
            async move { matches!(answer.await, Ok(r) if r.status() == 200) }
        })
        .await;
        proxy
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The sum of `name`'s samples whose labels contain each of `labels` (written as they
    /// appear, such as `route="upload"`); 0 when there is none.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        registry_sum(&self.registry, name, labels)
    }

    /// Files in the upload spool.
    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool.path().join("uploads")).map_or(0, |d| d.count())
    }

    /// Whether any origin holds `digest`.
    pub async fn stored(&self, digest: &Digest) -> bool {
        !self.origins.holders(digest).await.is_empty()
    }
}
