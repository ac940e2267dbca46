//! The agent: one per host, a read-only OCI registry on 127.0.0.1:8081 whose layers arrive
//! piece by piece through the swarm, and a seeder of what it downloaded.
//!
//! - [`config`]: every config key, its default and its checks.
//! - [`routes`]: the registry API (`GET /v2/`, manifests, blobs with `Range`, tag lists);
//!   writes answer 405.
//! - [`manifests`]: tags resolved through the origins; manifests from an origin, verified,
//!   cached; their media types.
//! - [`blobs`]: blob bytes from the cache, straight from an origin (small ones), or streamed
//!   from the swarm in order as pieces verify.
//! - [`cache`]: the bounded blob cache on disk: index, recency, eviction, restart.
//! - [`upstream`]: metainfo from the tracker or the origins; origins as the only peers when
//!   there is no tracker.
//! - [`containerd`]: writing and restoring containerd's `hosts.toml` so that it pulls
//!   through the agent.
//! - [`metrics`]: the agent's own `shoal_agent_…` families (the swarm registers its own).
//! - [`state`]: what handlers and background tasks share.
//! - [`error`]: the crate's error type.
//! - `testing` (feature `testing`, never in a shipped binary): agents, with origins and a
//!   tracker, in process for tests of any crate.
//!
//! [`Agent::start`] opens the cache, starts the p2p node on the peer listener and serves the
//! registry API; [`Agent::wait`] returns once shutdown is over; [`run`] is both (the shape
//! of every part: `shoal_core::lifecycle`).
#![forbid(unsafe_code)]

pub mod blobs;
pub mod cache;
pub mod config;
pub mod containerd;
pub mod error;
pub mod manifests;
pub mod metrics;
pub mod routes;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use shoal_core::Digest;
use shoal_core::lifecycle::{BindError, bind};
use shoal_core::origin_client::OriginClient;
use shoal_core::tasks::Running;
use shoal_core::telemetry::Readiness;
use shoal_p2p::discovery::{Discovery, TrackerDiscovery};
use shoal_p2p::{Node, NodeConfig, Progress};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::AgentError;

use cache::Cache;
use metrics::Metrics;
use shoal_core::signature::MetainfoTrust;
use state::{AppState, State};
use upstream::{OriginDiscovery, TrackerThenOrigins, Upstream};

/// How often the cache is trimmed, since seeding blobs become evictable only once the
/// swarm lets them go.
const TRIM_EVERY: Duration = Duration::from_secs(30);
const TRACKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets an agent serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The registry API, `/health`, `/ready` and `/metrics`.
    pub http: TcpListener,
    /// The peer protocol.
    pub peer: TcpListener,
    /// `/health`, `/ready` and `/metrics` again, elsewhere (`ops_listen`).
    pub ops: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen`, `peer.listen` and `ops_listen` if it is set.
    pub async fn bind(config: &Config) -> Result<Self, BindError> {
        Ok(Listeners {
            http: bind("the registry API", config.listen).await?,
            peer: bind("the peer protocol", config.peer.listen).await?,
            ops: match config.ops_addr() {
                Some(a) => Some(bind("ops_listen", a).await?),
                None => None,
            },
        })
    }
}

/// A running agent. Dropping it stops it.
#[derive(Debug)]
pub struct Agent {
    state: AppState,
    running: Running,
    /// Stops the p2p node once the HTTP servers have drained, so that responses in flight
    /// can finish during the grace period.
    node_shutdown: CancellationToken,
    addr: SocketAddr,
}

/// Starts an agent and waits until `shutdown` is cancelled and it has stopped.
pub async fn run(
    config: Config,
    listeners: Listeners,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    Agent::start(config, listeners, registry, shutdown)
        .await?
        .wait()
        .await
}

// The shape every part shares (`shoal_core::lifecycle::Part`), for the `main` they share.
shoal_core::part!(
    Agent: Config, Listeners, AgentError;
    "shoal-agent", config::ENV_PREFIX, Listeners::bind
);

impl Agent {
    pub async fn start(
        config: Config,
        listeners: Listeners,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> Result<Agent, AgentError> {
        let tls = config.peer_tls().map_err(AgentError::Config)?;
        let addr = listeners.http.local_addr()?;
        let ops_addr = listeners.ops.as_ref().map(|l| l.local_addr()).transpose()?;
        let metrics = Metrics::register(&registry)?;
        let cache = Cache::open(
            &config.cache.dir,
            config.cache.max_size.bytes(),
            metrics.clone(),
        )
        .await?;
        let peer_tls = tls.as_ref().map(|(t, _)| t);
        let origins = Arc::new(OriginClient::new(
            &config.origins,
            config.credentials.read_token.get().map(str::to_owned),
            peer_tls,
        )?);
        let tracker = config.tracker_url();
        let read_token = config.credentials.read_token.get().map(str::to_owned);
        let discovery: Arc<dyn Discovery> = match &tracker {
            Some(url) => Arc::new(TrackerThenOrigins::new(
                TrackerDiscovery::new(url, TRACKER_TIMEOUT, peer_tls)
                    .map_err(|e| AgentError::Config(format!("tracker: {e}")))?
                    .with_token(read_token.clone()),
                OriginDiscovery::new(Arc::clone(&origins)),
            )),
            None => Arc::new(OriginDiscovery::new(Arc::clone(&origins))),
        };
        let upstream = Upstream::new(
            origins,
            tracker.clone(),
            metainfo_trust(&config)?,
            read_token,
            peer_tls,
        )?;

        let mut node_cfg = NodeConfig::agent();
        if let Some((tls, me)) = &tls {
            node_cfg.peer_id = me.id;
            node_cfg.tls = Some(tls.clone());
        }
        node_cfg.engine.seed_idle = Some(config.swarm.seed_idle);
        node_cfg.egress_rate = config.peer.egress.per_second();
        node_cfg.ingress_rate = config.peer.ingress.per_second();
        node_cfg.max_unwritten_bytes = config.peer.max_unwritten.bytes();
        node_cfg.max_unsent_bytes = config.peer.max_unsent.bytes();
        node_cfg.max_inbound_per_addr = config.peer.max_inbound_per_addr;
        node_cfg.advertise_addr = config.advertise_ip();
        node_cfg.metrics_prefix = "shoal_agent".into();
        let node_shutdown = CancellationToken::new();
        let node = Node::start(
            node_cfg,
            listeners.peer,
            cache.store().clone(),
            discovery,
            None,
            &registry,
            node_shutdown.clone(),
        )?;

        // Dropping the agent stops it, without cancelling the caller's token.
        let mut running = Running::new(&shutdown);
        let tasks = running.tasks().clone();
        let state: AppState = Arc::new(State {
            config,
            cache,
            node,
            upstream,
            metrics,
            downloads: tokio::sync::Mutex::new(HashMap::new()),
            direct: Mutex::new(HashMap::new()),
            tags: Mutex::new(HashMap::new()),
            seeding: Mutex::new(HashSet::new()),
            tasks: tasks.clone(),
        });

        let ready = Readiness::default();
        let app = routes::router(state.clone(), registry.clone(), ready.clone());
        let grace = state.config.shutdown_grace;
        let limits = &state.config.server;
        running.serve(
            tracing::info_span!("http", %addr),
            listeners.http,
            app,
            grace,
            limits.clone(),
            None,
        );
        if let (Some(ops), Some(ops_addr)) = (listeners.ops, ops_addr) {
            let app = shoal_core::telemetry::ops_router(registry, ready.clone());
            running.serve(
                tracing::info_span!("ops", addr = %ops_addr),
                ops,
                app,
                grace,
                limits.clone(),
                None,
            );
        }
        {
            let st = state.clone();
            tasks.every(tracing::info_span!("trim"), TRIM_EVERY, move || {
                let st = st.clone();
                async move {
                    if let Err(e) = st.cache.trim(&st.node).await {
                        tracing::warn!(error = %e, "cache eviction failed");
                    }
                }
            });
        }
        tasks.unready_on_shutdown(ready.clone());
        ready.set(true);
        tasks.spawn(
            tracing::info_span!("swarm_watch"),
            unready_when_the_swarm_stops(
                state.node.clone(),
                ready.clone(),
                tasks.shutdown().clone(),
            ),
        );
        tracing::info!(
            %addr,
            peer_addr = %state.node.local_addr(),
            peer_id = %state.node.peer_id(),
            tracker = tracker.as_deref().unwrap_or("(none: origins only)"),
            tls = tls.is_some(),
            origins = state.upstream.origins().origins().len(),
            "agent started"
        );
        Ok(Agent {
            state,
            running,
            node_shutdown,
            addr,
        })
    }

    /// The address the registry API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the peer protocol is bound to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.state.node.local_addr()
    }

    pub fn node(&self) -> &Node {
        &self.state.node
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.state.cache
    }

    /// The progress of the swarm download of `digest`, while this agent runs one.
    pub async fn progress(&self, digest: &Digest) -> Option<watch::Receiver<Progress>> {
        self.state
            .active_download(digest)
            .await
            .map(|h| h.progress())
    }

    /// Waits until shutdown has been asked for and everything has stopped: the HTTP servers
    /// drain first (for up to the grace period), then the swarm stops.
    pub async fn wait(mut self) -> Result<(), AgentError> {
        let served = self.running.drained().await;
        self.running.stop();
        self.node_shutdown.cancel();
        self.running.close().await;
        self.state.node.closed().await;
        tracing::info!(addr = %self.addr, "agent stopped");
        Ok(served?)
    }

    /// Asks the agent to stop and waits until it has.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.running.stop();
        self.wait().await
    }
}

/// Readiness tells the truth: an agent whose p2p node has stopped (its task ended, or
/// panicked) while the agent is meant to serve cannot download, so it is not ready.
async fn unready_when_the_swarm_stops(
    node: shoal_p2p::Node,
    ready: Readiness,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = node.stopped() => {
            if !shutdown.is_cancelled() {
                ready.set(false);
                tracing::error!("the p2p node stopped while the agent serves: not ready from now on");
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.node_shutdown.cancel();
    }
}

/// The keys metainfo must be signed with. Without any the agent does not start unless its
/// config is insecure: piece hashes from an unauthenticated source would decide what
/// clients receive.
fn metainfo_trust(config: &Config) -> Result<MetainfoTrust, AgentError> {
    let trust = MetainfoTrust::from_pem(&config.credentials.metainfo_keys, config.insecure)
        .map_err(|e| AgentError::MetainfoKeys(e.to_string()))?;
    let keys: Vec<String> = trust.key_ids().map(|k| k.to_string()).collect();
    if !keys.is_empty() {
        tracing::info!(?keys, "metainfo must be signed by one of these keys");
    } else if config.insecure {
        tracing::warn!(
            "no credentials.metainfo_keys: unsigned metainfo is accepted (insecure = true), so whoever answers for the tracker or the origins chooses the piece hashes"
        );
    } else {
        return Err(AgentError::MetainfoKeys(config::NO_METAINFO_KEYS.into()));
    }
    Ok(trust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::store::BlobStore;
    use shoal_p2p::StaticDiscovery;

    #[tokio::test]
    async fn readiness_goes_false_when_the_p2p_node_dies_while_the_agent_serves() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let node_stop = CancellationToken::new();
        let node = Node::start(
            NodeConfig::agent(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            store,
            Arc::new(StaticDiscovery::new(Vec::new(), Duration::from_secs(1))),
            None,
            &Registry::new(),
            node_stop.clone(),
        )
        .unwrap();
        let ready = Readiness::default();
        ready.set(true);
        let agent_stop = CancellationToken::new();
        let watch = tokio::spawn(unready_when_the_swarm_stops(
            node.clone(),
            ready.clone(),
            agent_stop.clone(),
        ));
        tokio::task::yield_now().await;
        assert!(ready.is_ready());
        // The node's task ends while the agent goes on serving.
        node_stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .unwrap()
            .unwrap();
        assert!(!ready.is_ready(), "a dead swarm is not ready");
    }
}
