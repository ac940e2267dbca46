//! Origins in process for tests, this crate's and other crates' (feature `testing`; never in
//! a shipped binary): start one from a config and a listener, or a cluster of N on port 0
//! that can stop and restart its members with their data. Each seeds over the peer protocol
//! on a port-0 peer listener of its own.
//!
//! ```no_run
//! # async fn f() {
//! use shoal_origin::testing::TestCluster;
//! let mut cluster = TestCluster::builder(3).replicas(2).start().await;
//! let client = cluster.client();
//! cluster.stop(0).await;
//! cluster.restart(0).await;
//! # }
//! ```
//!
//! Every origin gets credentials as a real one must: [`test_config`] a fresh random write
//! token, and a cluster one write token and one read token shared by its members, which
//! [`TestCluster::write_token`] and [`TestCluster::read_token`] expose; [`TestCluster::client`]
//! writes with the first and [`TestCluster::reader`] reads with the second.
//!
//! Every origin runs in plaintext (`tls.plaintext = true`) unless the cluster is built with
//! [`ClusterBuilder::tls`]: then each origin `i` presents a certificate from the test CA
//! naming it `origin-<i>.origin.shoal`, serves HTTPS, and its members are `https://` URLs;
//! [`TestCluster::client_tls`] trusts that CA, as the other parts would.
//!
//! Helpers here panic with a message when the test itself is wrong (an index out of range,
//! a port that cannot be bound): that is a test failure, not an input to handle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use prometheus::Registry;
use shoal_core::Digest;
use shoal_core::origin_client::OriginClient;
use shoal_core::peer::PeerInfo;
use shoal_core::reference::{RepoName, Tag};
use shoal_core::ring::Ring;
use shoal_core::signature::KeyPairPem;
use shoal_core::testing::{TestPki, registry_sum, wait_until};
use shoal_core::tls::{Tls, TlsConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, Config, Secret};
use crate::{Error, Listeners, Origin};

pub use shoal_core::testing::random_token;

/// A config for tests: short timers so that failures are noticed within a fraction of a
/// second, no backend, data in `data_dir`, a fresh random write token and no read token,
/// plaintext.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir,
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
    c.peer.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.credentials.write_token = Secret::new(random_token());
    c.cluster.health_interval = Duration::from_millis(100);
    c.cluster.health_timeout = Duration::from_secs(1);
    c.cluster.down_after = 2;
    c.cluster.connect_timeout = Duration::from_secs(1);
    c.queue.retry_min = Duration::from_millis(50);
    c.queue.retry_max = Duration::from_millis(500);
    c.repair.interval = Duration::from_secs(3600);
    c.repair.settle = Duration::from_millis(200);
    c.backend.kind = BackendKind::None;
    c.credentials.metainfo_key = shoal_core::auth::Secret::new(metainfo_keys().private_pem.clone());
    c.tls = TlsConfig::plaintext();
    c
}

/// A `[tls]` table that trusts `pki`'s CA and presents nothing: what a client of the
/// origins holds.
pub fn client_tls(pki: &TestPki) -> Tls {
    match Tls::from_config(&pki.client()) {
        Ok(Some(t)) => t,
        Ok(None) => panic!("the test CA's client table is plaintext"),
        Err(e) => panic!("the test CA's client table: {e}"),
    }
}

/// The metainfo key pair of this test run, made once per process: every origin from
/// [`test_config`] signs with its private key, and agents in tests trust its public key.
pub fn metainfo_keys() -> &'static KeyPairPem {
    static KEYS: OnceLock<KeyPairPem> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeyPairPem::generate().unwrap_or_else(|e| panic!("generating a metainfo key pair: {e}"))
    })
}

/// A started origin with its own registry and shutdown token.
#[derive(Debug)]
pub struct TestOrigin {
    pub origin: Origin,
    pub registry: Registry,
    pub shutdown: CancellationToken,
}

impl TestOrigin {
    /// Starts an origin serving `http`, and the peer protocol on a listener bound at
    /// `config.peer.listen` (port 0 in [`test_config`]).
    pub async fn start(config: Config, http: TcpListener) -> Result<TestOrigin, Error> {
        let peer = TcpListener::bind(config.peer.listen).await?;
        Self::start_with(
            config,
            Listeners {
                http,
                peer: Some(peer),
            },
        )
        .await
    }

    /// Starts an origin on the listeners given (`peer: None` serves no peers).
    pub async fn start_with(config: Config, listeners: Listeners) -> Result<TestOrigin, Error> {
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let origin = Origin::start(config, listeners, registry.clone(), shutdown.clone()).await?;
        Ok(TestOrigin {
            origin,
            registry,
            shutdown,
        })
    }

    pub async fn stop(self) {
        if let Err(e) = self.origin.stop().await {
            tracing::warn!(error = %e, "test origin stopped with an error");
        }
    }
}

/// How many idle connections one test process can hold open to a server in the same
/// process: each costs two descriptors, and the soft `ulimit -n` bounds them.
pub fn idle_connections_possible(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    let n = wanted.min(soft.saturating_sub(256) / 2);
    if n < wanted {
        eprintln!("ulimit -n is {soft}: opening {n} idle connections, not {wanted}");
    }
    n
}

type Configure = Box<dyn Fn(usize, &mut Config) + Send + Sync>;

pub struct ClusterBuilder {
    n: usize,
    replicas: usize,
    shared_backend: bool,
    configure: Option<Configure>,
    /// Each origin's `[tls]` and what clients trust, when the cluster runs over TLS.
    tls: Option<(Vec<TlsConfig>, TlsConfig)>,
}

impl ClusterBuilder {
    /// Runs every origin over TLS with a certificate from `pki` (`origin-<i>.origin.shoal`
    /// and 127.0.0.1): HTTPS between them and to them, the peer protocol over mutual TLS.
    /// `pki` must outlive the cluster (its files are read on every reload check).
    pub fn tls(mut self, pki: &TestPki) -> Self {
        let configs = (0..self.n)
            .map(|i| pki.origin(&format!("origin-{i}")))
            .collect();
        self.tls = Some((configs, pki.client()));
        self
    }

    /// Replicas per blob and tag (default 3).
    pub fn replicas(mut self, r: usize) -> Self {
        self.replicas = r;
        self
    }

    /// Every origin uses one filesystem backend directory, as if it were shared storage.
    pub fn shared_backend(mut self) -> Self {
        self.shared_backend = true;
        self
    }

    /// Adjusts origin `i`'s config after the defaults are set.
    pub fn configure(mut self, f: impl Fn(usize, &mut Config) + Send + Sync + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Binds every origin's port first, so each knows the whole member list, then starts
    /// them and waits until each sees all the others alive.
    pub async fn start(self) -> TestCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let mut listeners = Vec::new();
        for _ in 0..self.n {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("binding a test port: {e}"));
            listeners.push(l);
        }
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| match l.local_addr() {
                Ok(a) if self.tls.is_some() => format!("https://{a}"),
                Ok(a) => format!("http://{a}"),
                Err(e) => panic!("test listener address: {e}"),
            })
            .collect();
        let write_token = random_token();
        let read_token = random_token();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut config = test_config(dir.path().join(format!("origin-{i}")));
            config.credentials.write_token = Secret::new(write_token.clone());
            config.credentials.read_token = Secret::new(read_token.clone());
            config.replicas = self.replicas;
            config.advertise_url = urls[i].clone();
            config.cluster.members = urls.clone();
            if let Some((tls, _)) = &self.tls {
                config.tls = tls[i].clone();
            }
            if self.shared_backend {
                config.backend.kind = BackendKind::Filesystem;
                config.backend.path = dir.path().join("backend");
            }
            if let Some(f) = &self.configure {
                f(i, &mut config);
            }
            let addr = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => panic!("test listener address: {e}"),
            };
            let running = TestOrigin::start(config.clone(), listener)
                .await
                .unwrap_or_else(|e| panic!("starting origin {i}: {e}"));
            nodes.push(Node {
                config,
                addr,
                url: urls[i].clone(),
                running: Some(running),
            });
        }
        let cluster = TestCluster {
            dir,
            nodes,
            write_token,
            read_token,
            client_tls: self.tls.map(|(_, c)| {
                let tls = match Tls::from_config(&c) {
                    Ok(Some(t)) => t,
                    Ok(None) => panic!("the test CA's client table is plaintext"),
                    Err(e) => panic!("the test CA's client table: {e}"),
                };
                (c, tls)
            }),
        };
        cluster.wait_converged().await;
        cluster
    }
}

#[derive(Debug)]
struct Node {
    config: Config,
    addr: SocketAddr,
    url: String,
    running: Option<TestOrigin>,
}

/// N origins on 127.0.0.1, each with its own data directory under one temporary directory
/// that is removed when the cluster is dropped.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    write_token: String,
    read_token: String,
    client_tls: Option<(TlsConfig, Tls)>,
}

impl TestCluster {
    pub fn builder(n: usize) -> ClusterBuilder {
        ClusterBuilder {
            n,
            replicas: 3,
            shared_backend: false,
            configure: None,
            tls: None,
        }
    }

    /// What a client of these origins trusts: `None` when they run in plaintext.
    pub fn client_tls(&self) -> Option<&Tls> {
        self.client_tls.as_ref().map(|(_, t)| t)
    }

    /// The `[tls]` table of a client of these origins: the test CA and no certificate, or
    /// plaintext.
    pub fn client_tls_config(&self) -> TlsConfig {
        match &self.client_tls {
            Some((c, _)) => c.clone(),
            None => TlsConfig::plaintext(),
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("the cluster has no origin {i}"))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every member's URL, running or not.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn url(&self, i: usize) -> &str {
        &self.node(i).url
    }

    pub fn config(&self, i: usize) -> &Config {
        &self.node(i).config
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.node(i).config.data_dir.clone()
    }

    /// The shared backend's directory (used when built with `shared_backend`).
    pub fn backend_dir(&self) -> PathBuf {
        self.dir.path().join("backend")
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.node(i).running.is_some()
    }

    /// Origin `i`; panics if it is stopped.
    pub fn origin(&self, i: usize) -> &Origin {
        match &self.node(i).running {
            Some(r) => &r.origin,
            None => panic!("origin {i} is stopped"),
        }
    }

    /// Where origin `i` serves the peer protocol, and as whom: what a tracker hands out.
    pub fn peer_info(&self, i: usize) -> PeerInfo {
        let o = self.origin(i);
        PeerInfo {
            peer_id: o.peer_id(),
            addr: SocketAddr::new(o.local_addr().ip(), o.peer_port()),
            complete: true,
            origin: true,
        }
    }

    pub fn registry(&self, i: usize) -> &Registry {
        match &self.node(i).running {
            Some(r) => &r.registry,
            None => panic!("origin {i} is stopped"),
        }
    }

    /// The indexes of the running origins.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// The write token every member takes (as the proxy holds it), unless `configure`
    /// changed a member's.
    pub fn write_token(&self) -> &str {
        &self.write_token
    }

    /// The read token every member asks reads for (as agents and trackers hold it).
    pub fn read_token(&self) -> &str {
        &self.read_token
    }

    /// A client that knows every member and presents the write token, as the proxy does.
    pub fn client(&self) -> OriginClient {
        self.client_with_token(Some(self.write_token.clone()))
    }

    /// A client that presents the read token, as agents and trackers do.
    pub fn reader(&self) -> OriginClient {
        self.client_with_token(Some(self.read_token.clone()))
    }

    /// A client with no credential at all.
    pub fn anonymous(&self) -> OriginClient {
        self.client_with_token(None)
    }

    /// A plain HTTP client that sends `Authorization: Bearer <token>` with every request.
    pub fn http_with_token(token: &str) -> reqwest::Client {
        Self::http_over(None, token)
    }

    fn http_over(tls: Option<&Tls>, token: &str) -> reqwest::Client {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        shoal_core::tls::client_builder(tls)
            .unwrap_or_else(|e| panic!("HTTP client: {e}"))
            .default_headers(headers)
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"))
    }

    /// An HTTP client (HTTPS trusting the test CA when the cluster runs over TLS) that
    /// presents the write token with every request.
    pub fn http(&self) -> reqwest::Client {
        Self::http_over(self.client_tls(), &self.write_token)
    }

    pub fn client_with_token(&self, token: Option<String>) -> OriginClient {
        OriginClient::new(&self.urls(), token, self.client_tls())
            .unwrap_or_else(|e| panic!("origin client: {e}"))
    }

    /// The first `r` members for `key` on the ring of every member, as indexes.
    pub fn owners(&self, key: &[u8], r: usize) -> Vec<usize> {
        let urls = self.urls();
        Ring::new(urls.clone())
            .owners(key, r)
            .into_iter()
            .filter_map(|o| urls.iter().position(|u| u == o))
            .collect()
    }

    /// The running origins whose own store holds `digest`.
    pub async fn holders(&self, digest: &Digest) -> Vec<usize> {
        let mut out = Vec::new();
        for i in self.running() {
            if matches!(self.origin(i).store().contains(digest).await, Ok(true)) {
                out.push(i);
            }
        }
        out
    }

    /// Stores `bytes` as a blob through the cluster, as the proxy does, and returns its
    /// digest.
    pub async fn push(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        self.client()
            .put_blob_bytes(&digest, Bytes::copy_from_slice(bytes))
            .await
            .unwrap_or_else(|e| panic!("storing {digest}: {e}"));
        digest
    }

    /// Points `name:tag` at `digest`.
    pub async fn tag(&self, name: &str, tag: &str, digest: &Digest) {
        let repo: RepoName = name
            .parse()
            .unwrap_or_else(|e| panic!("repository name {name:?}: {e}"));
        let t: Tag = tag.parse().unwrap_or_else(|e| panic!("tag {tag:?}: {e}"));
        self.client()
            .put_tag(&repo, &t, digest)
            .await
            .unwrap_or_else(|e| panic!("tagging {name}:{tag}: {e}"));
    }

    /// Waits until every copy between the running origins is made, so that what they send
    /// afterwards is what reads cost.
    pub async fn settle(&self) {
        wait_until(
            "the origins' copy queues are empty",
            Duration::from_secs(30),
            || async {
                for i in self.running() {
                    match self.origin(i).queue_depth().await {
                        Ok((0, 0)) => {}
                        Ok(_) => return false,
                        Err(e) => panic!("origin {i}'s queue depth: {e}"),
                    }
                }
                true
            },
        )
        .await;
    }

    /// Blob bytes the running origins have sent, over HTTP and the peer protocol together
    /// (the family counts each byte once, split by `proto`).
    pub fn sent_bytes(&self) -> f64 {
        self.running()
            .into_iter()
            .map(|i| registry_sum(self.registry(i), "shoal_origin_sent_bytes_total", &[]))
            .sum()
    }

    /// Stops origin `i` and waits until it has stopped; its data stays.
    pub async fn stop(&mut self, i: usize) {
        let running = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.running.take())
            .unwrap_or_else(|| panic!("origin {i} is not running"));
        running.stop().await;
    }

    /// Starts origin `i` again on its address, with its data directory.
    pub async fn restart(&mut self, i: usize) {
        let (addr, config) = {
            let n = self.node(i);
            assert!(n.running.is_none(), "origin {i} is running");
            (n.addr, n.config.clone())
        };
        let mut listener = None;
        wait_until(
            &format!("origin {i}'s port {addr} can be bound again"),
            Duration::from_secs(10),
            || {
                let bound = std::net::TcpListener::bind(addr).and_then(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                });
                let ok = match bound {
                    Ok(l) => {
                        listener = Some(l);
                        true
                    }
                    Err(_) => false,
                };
                async move { ok }
            },
        )
        .await;
        let Some(listener) = listener else {
            panic!("origin {i}'s port was not bound")
        };
        let running = TestOrigin::start(config, listener)
            .await
            .unwrap_or_else(|e| panic!("restarting origin {i}: {e}"));
        self.nodes[i].running = Some(running);
    }

    /// Waits until every running origin sees exactly the running origins alive.
    pub async fn wait_converged(&self) {
        let mut want: Vec<String> = self
            .running()
            .iter()
            .map(|&i| self.nodes[i].url.clone())
            .collect();
        want.sort();
        wait_until(
            "every running origin sees exactly the running ones alive",
            Duration::from_secs(20),
            || {
                let ok = self.running().iter().all(|&i| {
                    let mut live = self.origin(i).live_members();
                    live.sort();
                    live == want
                });
                async move { ok }
            },
        )
        .await;
    }

    /// Stops every running origin.
    pub async fn shutdown(mut self) {
        for i in self.running() {
            self.stop(i).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Some(r) = &n.running {
                r.shutdown.cancel();
            }
        }
    }
}
