//! A whole Shoal on 127.0.0.1 in one process for the agent's tests: origins (which seed over
//! the peer protocol), a tracker, and agents, each on port 0.
// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{Encoder, Registry};
use shoal_agent::{Agent, Config as AgentConfig, Listeners};
use shoal_core::Digest;
use shoal_core::auth::Secret;
use shoal_core::origin_client::OriginClient;
use shoal_core::reference::{RepoName, Tag};
use shoal_core::signature::KeyPairPem;
use shoal_origin::Origin;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bytes that do not compress and differ per seed.
pub fn blob_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of every sample of `name` in `registry` whose labels contain `label` (if given).
pub fn metric(registry: &Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, labels) = match key.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (key, ""),
            };
            if n != name {
                return None;
            }
            if let Some(w) = &want
                && !labels.contains(w.as_str())
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

pub struct TestOrigins {
    pub origins: Vec<Origin>,
    pub registries: Vec<Registry>,
    pub urls: Vec<String>,
    /// The key pair this run's origins sign metainfo with (agents trust its public half).
    pub metainfo_keys: KeyPairPem,
    /// Fresh for each set of origins: what pushes present (as the proxy does).
    pub write_token: String,
    /// What agents and the tracker present to read.
    pub read_token: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestOrigins {
    /// `n` origins holding every blob on `replicas` of them, each seeding on a peer port.
    pub async fn start(n: usize, replicas: usize) -> TestOrigins {
        let dir = tempfile::tempdir().unwrap();
        let mut http = Vec::new();
        let mut peer = Vec::new();
        for _ in 0..n {
            http.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
            peer.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let urls: Vec<String> = http
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();
        let shutdown = CancellationToken::new();
        let write_token = shoal_origin::testing::random_token();
        let read_token = shoal_origin::testing::random_token();
        let mut origins = Vec::new();
        let mut registries = Vec::new();
        for (i, (h, p)) in http.into_iter().zip(peer).enumerate() {
            let mut config =
                shoal_origin::testing::test_config(dir.path().join(format!("origin-{i}")));
            config.credentials.write_token = Secret::new(write_token.clone());
            config.credentials.read_token = Secret::new(read_token.clone());
            config.replicas = replicas;
            config.advertise_url = urls[i].clone();
            config.cluster.members = urls.clone();
            let registry = Registry::new();
            let origin = Origin::start(
                config,
                shoal_origin::Listeners {
                    http: h,
                    peer: Some(p),
                },
                registry.clone(),
                shutdown.child_token(),
            )
            .await
            .unwrap();
            origins.push(origin);
            registries.push(registry);
        }
        let me = TestOrigins {
            origins,
            registries,
            urls,
            metainfo_keys: shoal_origin::testing::metainfo_keys().clone(),
            write_token,
            read_token,
            shutdown,
            _dir: dir,
        };
        let want = n;
        wait_until(
            "the origins see each other",
            Duration::from_secs(20),
            || {
                let ok = me.origins.iter().all(|o| o.live_members().len() == want);
                async move { ok }
            },
        )
        .await;
        me
    }

    /// A client that writes, with the write token.
    pub fn client(&self) -> OriginClient {
        OriginClient::new(&self.urls, Some(self.write_token.clone())).unwrap()
    }

    /// Blob bytes the origins have sent, over HTTP and the peer protocol together (the
    /// family counts each byte once, split by `proto`).
    pub fn bytes_sent(&self) -> f64 {
        self.registries
            .iter()
            .map(|r| metric(r, "shoal_origin_sent_bytes_total", None))
            .sum()
    }

    /// Uploads a blob and returns its digest.
    pub async fn push(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        self.client()
            .put_blob_bytes(&digest, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        digest
    }

    pub async fn tag(&self, name: &str, tag: &str, digest: &Digest) {
        let name: RepoName = name.parse().unwrap();
        let tag: Tag = tag.parse().unwrap();
        self.client().put_tag(&name, &tag, digest).await.unwrap();
    }

    /// Waits until every copy between origins is made, so that what they send afterwards
    /// is what pulls cost.
    pub async fn settle(&self) {
        wait_until(
            "the origins' copy queues are empty",
            Duration::from_secs(30),
            || async {
                for o in &self.origins {
                    if o.queue_depth().await.unwrap() != (0, 0) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for o in self.origins {
            let _ = o.wait().await;
        }
    }
}

pub struct TestTracker {
    pub url: String,
    pub registry: Registry,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestTracker {
    pub async fn start(origins: &TestOrigins, replicas: usize) -> TestTracker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = shoal_tracker::Config {
            listen: listener.local_addr().unwrap(),
            origins: origins.urls.clone(),
            replicas,
            announce_interval: Duration::from_secs(1),
            origin_refresh: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            ..shoal_tracker::Config::default()
        };
        config.credentials.read_token = Secret::new(origins.read_token.clone());
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let tracker =
            shoal_tracker::Tracker::start(config, listener, registry.clone(), shutdown.clone())
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            tracker.wait().await.unwrap();
        });
        let t = TestTracker {
            url,
            registry,
            shutdown,
            task,
        };
        let n = origins.urls.len() as f64;
        let reg = t.registry.clone();
        wait_until(
            "the tracker knows the origins",
            Duration::from_secs(10),
            || {
                let ok = metric(&reg, "shoal_tracker_origins_up", None) >= n;
                async move { ok }
            },
        )
        .await;
        t
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub struct TestAgent {
    pub agent: Agent,
    pub registry: Registry,
    pub url: String,
    pub dir: PathBuf,
    pub config: AgentConfig,
}

/// An agent config for tests: on port 0, quick to give up on stalls.
pub fn agent_config(
    dir: &Path,
    origins: &TestOrigins,
    tracker: Option<&TestTracker>,
) -> AgentConfig {
    let mut c = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tracker: tracker.map(|t| t.url.clone()).unwrap_or_default(),
        origins: origins.urls.clone(),
        shutdown_grace: Duration::from_secs(2),
        ..AgentConfig::default()
    };
    c.peer.listen = "127.0.0.1:0".parse().unwrap();
    c.credentials.read_token = Secret::new(origins.read_token.clone());
    c.cache.dir = dir.to_owned();
    c.credentials.metainfo_keys = origins.metainfo_keys.public_pem.clone();
    c.swarm.stall_timeout = Duration::from_secs(30);
    c
}

impl TestAgent {
    pub async fn start(config: AgentConfig) -> TestAgent {
        let http = TcpListener::bind(config.listen).await.unwrap();
        let peer = TcpListener::bind(config.peer.listen).await.unwrap();
        let registry = Registry::new();
        let url = format!("http://{}", http.local_addr().unwrap());
        let agent = Agent::start(
            config.clone(),
            Listeners {
                http,
                peer,
                ops: None,
            },
            registry.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        TestAgent {
            agent,
            registry,
            url,
            dir: config.cache.dir.clone(),
            config,
        }
    }

    pub fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        metric(&self.registry, name, label)
    }

    pub async fn stop(self) {
        self.agent.stop().await.unwrap();
    }
}

/// A client that neither retries nor follows redirects, with a generous timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
