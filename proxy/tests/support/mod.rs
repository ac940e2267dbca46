//! A proxy on a real socket in front of origins, for tests that drive it from outside.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support: a failure is a failed test
use shoal_proxy::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Three origins on real sockets, each blob and tag on two of them; they stop when dropped.
pub struct Origins {
    pub cluster: shoal_origin::testing::TestCluster,
}

impl Origins {
    pub async fn start() -> Self {
        let cluster = shoal_origin::testing::TestCluster::builder(3)
            .replicas(2)
            .start()
            .await;
        Origins { cluster }
    }

    pub fn urls(&self) -> Vec<String> {
        self.cluster.urls()
    }

    /// Whether any origin holds `digest`.
    pub async fn stored(&self, digest: &shoal_core::Digest) -> bool {
        !self.cluster.holders(digest).await.is_empty()
    }
}

/// A running proxy and its origins; everything stops when it is dropped.
pub struct Cluster {
    /// `127.0.0.1:<port>` of the proxy.
    pub addr: String,
    pub registry: prometheus::Registry,
    pub origins: Origins,
    pub spool: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let origins = Origins::start().await;
        let spool = tempfile::tempdir().unwrap();
        let mut config = Config {
            origins: origins.urls(),
            ..Config::default()
        };
        config.credentials.write_token =
            shoal_proxy::config::Secret::new(origins.cluster.write_token());
        config.uploads.spool_dir = spool.path().to_owned();
        config.shutdown_grace = std::time::Duration::from_secs(1);
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let registry = prometheus::Registry::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (registry, shutdown) = (registry.clone(), shutdown.clone());
            async move {
                if let Err(e) = shoal_proxy::run(config, listener, registry, shutdown).await {
                    panic!("proxy failed: {e}");
                }
            }
        });
        let cluster = Cluster {
            addr,
            registry,
            origins,
            spool,
            shutdown,
            task,
        };
        cluster.wait_ready().await;
        cluster
    }

    async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let url = format!("http://{}/ready", self.addr);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proxy never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The value of a metric line such as `shoal_proxy_blobs_stored_total`, 0 if absent.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Files in the upload spool.
    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool.path().join("uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Whether any origin holds `digest`.
    pub async fn stored(&self, digest: &shoal_core::Digest) -> bool {
        self.origins.stored(digest).await
    }
}

/// Runs a program to the end and returns its stdout, failing the test with its output if
/// it does not succeed.
pub async fn run(program: &str, args: &[&str]) -> String {
    run_env(program, args, &[]).await
}

pub async fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    shoal_tests::process::run_async(program, args, env).await
}
