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
//! The proxy speaks to its origins the way they run: HTTPS trusting the test CA when the
//! cluster was built with `.tls(&pki)`, plain HTTP otherwise. [`TestProxy::start_tls`]
//! also serves the registry API over HTTPS with a certificate of its own.
//!
//! Helpers here panic with a message when the test itself is wrong or a part fails to start:
//! that is a test failure, not an input to handle.

use std::path::Path;
use std::time::Duration;

use prometheus::Registry;
use shoal_core::Digest;
use shoal_core::testing::{TestPki, registry_sum, wait_until};
use shoal_core::tls::Tls;
use shoal_origin::testing::TestCluster;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};

/// A config for tests: the proxy of `origins`, with their write token, spooling uploads
/// under `spool_dir`, draining for at most a second when it stops; trusting the origins'
/// CA if they run over TLS, and serving plain HTTP.
pub fn test_config(origins: &TestCluster, spool_dir: &Path) -> Config {
    let mut config = Config {
        origins: origins.urls(),
        shutdown_grace: Duration::from_secs(1),
        tls: origins.client_tls_config(),
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
    /// What a client of the registry API trusts: `None` when it is plain HTTP.
    pub tls: Option<Tls>,
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

    /// A proxy in front of three origins over TLS, all with certificates from `pki`, that
    /// serves the registry API over HTTPS with its own (`proxy`, 127.0.0.1). `pki` must
    /// outlive the proxy.
    pub async fn start_tls(pki: &TestPki) -> Self {
        let origins = TestCluster::builder(3).replicas(2).tls(pki).start().await;
        let public = pki.server("proxy");
        Self::start_in_front_of(origins, |c| c.tls = public).await
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
        // Clients of an HTTPS proxy trust the CA it was given.
        let tls = match (&config.tls.cert, Tls::from_config(&config.tls)) {
            (Some(_), Ok(t)) => t,
            (None, Ok(_)) => None,
            (_, Err(e)) => panic!("the test proxy's [tls]: {e}"),
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
            tls,
            registry,
            origins,
            spool,
            shutdown,
            task,
        };
        let http = proxy.http();
        let ready = proxy.url("/ready");
        wait_until("the proxy is ready", Duration::from_secs(10), || {
            let answer = http.get(&ready).send();
            async move { matches!(answer.await, Ok(r) if r.status() == 200) }
        })
        .await;
        proxy
    }

    /// `http://<addr><path>`, or `https://` when the proxy serves HTTPS.
    pub fn url(&self, path: &str) -> String {
        match self.tls {
            Some(_) => format!("https://{}{path}", self.addr),
            None => format!("http://{}{path}", self.addr),
        }
    }

    /// A client of the registry API: trusting the proxy's CA when it serves HTTPS.
    pub fn http(&self) -> reqwest::Client {
        shoal_core::tls::client_builder(self.tls.as_ref())
            .unwrap_or_else(|e| panic!("HTTP client: {e}"))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"))
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
