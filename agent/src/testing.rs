//! Agents in process for tests, this crate's and other crates' (feature `testing`; never in
//! a shipped binary): a whole Shoal on 127.0.0.1 in one process, with origins from
//! [`shoal_origin::testing`] (which seed over the peer protocol), a tracker from
//! [`shoal_tracker::testing`], and agents, each on port 0.
//!
//! ```no_run
//! # async fn f(dir: &std::path::Path) {
//! use shoal_agent::testing::{TestAgent, agent_config, tracker_for};
//! use shoal_origin::testing::TestCluster;
//! let origins = TestCluster::builder(1).replicas(1).start().await;
//! let tracker = tracker_for(&origins, 1).await;
//! let agent = TestAgent::start(agent_config(dir, &origins, Some(&tracker))).await;
//! agent.stop().await;
//! # }
//! ```
//!
//! Everything runs in plaintext unless asked: origins built with
//! `TestCluster::builder(n).tls(&pki)` run over TLS, [`tls_tracker_for`] starts a tracker
//! over TLS for them, and [`agent_tls_config`] gives an agent a certificate of its own from
//! the same CA.
//!
//! Helpers here panic with a message when the test itself is wrong or a part fails to start:
//! that is a test failure, not an input to handle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus::Registry;
use shoal_core::auth::Secret;
use shoal_core::testing::{TestPki, registry_sum};
use shoal_core::tls::TlsConfig;
use shoal_origin::testing::{TestCluster, metainfo_keys};
use shoal_tracker::testing::{TestTracker, test_config, tls_config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Agent, Config, Listeners};

/// An agent config for tests: on port 0 of 127.0.0.1, its cache in `dir`, reading from
/// `origins` with their read token and trusting their metainfo key, announcing to `tracker`
/// (none: the origins are its only peers), quick to give up on stalls; in plaintext (see
/// [`agent_tls_config`] for TLS).
pub fn agent_config(dir: &Path, origins: &TestCluster, tracker: Option<&TestTracker>) -> Config {
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tracker: tracker.map(|t| t.url.clone()).unwrap_or_default(),
        origins: origins.urls(),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
    c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.credentials.read_token = Secret::new(origins.read_token());
    c.cache.dir = dir.to_owned();
    c.credentials.metainfo_keys = metainfo_keys().public_pem.clone();
    c.swarm.stall_timeout = Duration::from_secs(30);
    c.tls = TlsConfig::plaintext();
    c
}

/// [`agent_config`] over TLS: a certificate from `pki` naming the agent
/// `<name>.agent.shoal`, the origins (built with `.tls(pki)`) and the tracker (from
/// [`tls_tracker_for`]) verified against its CA, the peer protocol over mutual TLS.
/// `pki` must outlive the agent.
pub fn agent_tls_config(
    dir: &Path,
    origins: &TestCluster,
    tracker: Option<&TestTracker>,
    pki: &TestPki,
    name: &str,
) -> Config {
    Config {
        tls: pki.agent(name),
        ..agent_config(dir, origins, tracker)
    }
}

/// A tracker for `origins` that places blobs on `replicas` of them, with one-second announce
/// intervals and origin lookups, once it has found every origin up.
pub async fn tracker_for(origins: &TestCluster, replicas: usize) -> TestTracker {
    start_tracker(
        test_config(origins.urls(), origins.read_token()),
        origins,
        replicas,
    )
    .await
}

/// [`tracker_for`] over TLS, with a certificate from `pki` (the origins' CA): HTTPS to
/// agents and to the origins.
pub async fn tls_tracker_for(origins: &TestCluster, replicas: usize, pki: &TestPki) -> TestTracker {
    let config = tls_config(origins.urls(), origins.read_token(), pki);
    start_tracker(config, origins, replicas).await
}

async fn start_tracker(
    mut config: shoal_tracker::Config,
    origins: &TestCluster,
    replicas: usize,
) -> TestTracker {
    config.replicas = replicas;
    config.announce_interval = Duration::from_secs(1);
    config.origin_refresh = Duration::from_secs(1);
    config.shutdown_grace = Duration::from_secs(1);
    let tracker = TestTracker::start(config).await;
    tracker.wait_origins_up(origins.len()).await;
    tracker
}

/// A started agent with its own registry, serving the registry API on `url`.
#[derive(Debug)]
pub struct TestAgent {
    pub agent: Agent,
    pub registry: Registry,
    /// `http://<address of the registry API>`.
    pub url: String,
    /// The cache directory.
    pub dir: PathBuf,
    pub config: Config,
}

impl TestAgent {
    /// Starts an agent serving the registry API and the peer protocol on listeners bound at
    /// `config.listen` and `config.peer.listen`, with no separate ops address.
    pub async fn start(config: Config) -> TestAgent {
        let http = TcpListener::bind(config.listen)
            .await
            .unwrap_or_else(|e| panic!("binding the agent's port {}: {e}", config.listen));
        let peer = TcpListener::bind(config.peer.listen)
            .await
            .unwrap_or_else(|e| panic!("binding the agent's peer port: {e}"));
        let url = match http.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("test listener address: {e}"),
        };
        let registry = Registry::new();
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
        .unwrap_or_else(|e| panic!("starting the agent: {e}"));
        TestAgent {
            agent,
            registry,
            url,
            dir: config.cache.dir.clone(),
            config,
        }
    }

    /// The sum of `name`'s samples whose labels contain each of `labels` (written as they
    /// appear, such as `source="peer"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        registry_sum(&self.registry, name, labels)
    }

    /// Stops the agent and waits until it has stopped; panics if it failed.
    pub async fn stop(self) {
        self.agent
            .stop()
            .await
            .unwrap_or_else(|e| panic!("the agent failed: {e}"));
    }
}
