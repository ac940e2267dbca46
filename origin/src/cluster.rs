//! Who the origins are, which of them are alive, and who owns what.
//!
//! Members come from a static list or from a DNS name resolved again from time to time.
//! This origin finds itself among them by the `advertise_url` or, without one, by asking
//! each member for its peer id until one answers with its own. Every member is asked
//! `/v1/info` every `health_interval`; `down_after` failures in a row take it out of
//! placement, one answer brings it back. A connection refused while forwarding takes it out
//! at once. Owners are the first `replicas` live members by rendezvous hashing, so while a
//! member is down its keys fall to the next in line, and come back when it does.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use shoal_core::origin_client::{OriginInfo, base_url};
use shoal_core::peer::PeerId;
use shoal_core::ring::Ring;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use shoal_core::tls::{Tls, client_builder};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;

#[derive(Debug)]
struct View {
    me: Option<String>,
    members: Vec<String>,
    failures: HashMap<String, u32>,
    down: HashSet<String>,
    live: Ring<String>,
}

impl View {
    fn rebuild(&mut self) {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| !self.down.contains(*m) || self.me.as_ref() == Some(*m))
            .cloned()
            .collect();
        self.live = Ring::new(live);
    }
}

/// Where the member list comes from.
#[derive(Debug, Clone)]
enum Source {
    Static,
    Dns(String),
}

#[derive(Debug)]
pub struct Cluster {
    replicas: usize,
    peer_id: PeerId,
    source: Source,
    view: RwLock<View>,
    changed: watch::Sender<u64>,
    health: reqwest::Client,
    /// `https://` or `http://`: the scheme of members found in DNS.
    scheme: &'static str,
    config: crate::config::ClusterConfig,
    metrics: Metrics,
}

impl Cluster {
    /// `listen_url` names this origin when it is configured alone (no members, no DNS).
    /// Health checks go over HTTPS verified against `tls.ca` when `tls` is given.
    pub fn new(
        config: &Config,
        peer_id: PeerId,
        listen_url: String,
        metrics: Metrics,
        tls: Option<&Tls>,
    ) -> Result<Self, Error> {
        let advertise = (!config.advertise_url.is_empty())
            .then(|| base_url(&config.advertise_url, tls.is_some()));
        let (source, members, me) = if !config.cluster.dns.is_empty() {
            (
                Source::Dns(config.cluster.dns.clone()),
                Vec::new(),
                advertise,
            )
        } else if config.cluster.members.is_empty() {
            let me = advertise.unwrap_or(listen_url);
            (Source::Static, vec![me.clone()], Some(me))
        } else {
            (Source::Static, config.static_members(), advertise)
        };
        let health = client_builder(tls)
            .map_err(|e| Error::Tls(e.to_string()))?
            .connect_timeout(config.cluster.health_timeout)
            .timeout(config.cluster.health_timeout)
            .build()
            .map_err(Error::Client)?;
        let mut view = View {
            me,
            members,
            failures: HashMap::new(),
            down: HashSet::new(),
            live: Ring::new(Vec::new()),
        };
        view.rebuild();
        metrics.live_members.set(view.live.len() as i64);
        Ok(Cluster {
            replicas: config.replicas,
            peer_id,
            source,
            view: RwLock::new(view),
            changed: watch::channel(0).0,
            health,
            scheme: if tls.is_some() { "https" } else { "http" },
            config: config.cluster.clone(),
            metrics,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        match self.view.read() {
            Ok(v) => f(&v),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Applies `f`; if it changed who is live or who is a member, tells the subscribers.
    fn update(&self, f: impl FnOnce(&mut View)) {
        let changed = {
            let mut v = match self.view.write() {
                Ok(v) => v,
                Err(poisoned) => poisoned.into_inner(),
            };
            let before = (v.me.clone(), v.live.members().to_vec(), v.members.clone());
            f(&mut v);
            v.rebuild();
            self.metrics.live_members.set(v.live.len() as i64);
            before != (v.me.clone(), v.live.members().to_vec(), v.members.clone())
        };
        if changed {
            self.changed.send_modify(|g| *g += 1);
        }
    }

    /// A receiver that sees a new value whenever membership or liveness changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// This origin's URL as the member list has it, once known.
    pub fn me(&self) -> Option<String> {
        self.read(|v| v.me.clone())
    }

    pub fn is_me(&self, member: &str) -> bool {
        self.read(|v| v.me.as_deref() == Some(member))
    }

    pub fn members(&self) -> Vec<String> {
        self.read(|v| v.members.clone())
    }

    pub fn is_member(&self, member: &str) -> bool {
        self.read(|v| v.members.iter().any(|m| m == member))
    }

    pub fn is_live(&self, member: &str) -> bool {
        self.read(|v| v.live.members().iter().any(|m| m == member))
    }

    /// Every live member, this one included.
    pub fn live(&self) -> Vec<String> {
        self.read(|v| v.live.members().to_vec())
    }

    /// Every live member but this one.
    pub fn others_live(&self) -> Vec<String> {
        self.read(|v| {
            v.live
                .members()
                .iter()
                .filter(|m| v.me.as_ref() != Some(*m))
                .cloned()
                .collect()
        })
    }

    /// The key's owners among the live members, best first.
    pub fn owners(&self, key: &[u8]) -> Vec<String> {
        self.read(|v| {
            v.live
                .owners(key, self.replicas)
                .into_iter()
                .cloned()
                .collect()
        })
    }

    /// Every live member in the key's order of preference.
    pub fn ranked(&self, key: &[u8]) -> Vec<String> {
        self.read(|v| v.live.ranked(key).into_iter().cloned().collect())
    }

    pub fn is_owner(&self, key: &[u8]) -> bool {
        match self.me() {
            Some(me) => self.owners(key).contains(&me),
            None => false,
        }
    }

    /// A member could not be reached at all: out of placement until it answers a health
    /// check again.
    pub fn report_unreachable(&self, member: &str) {
        if self.is_me(member) || !self.is_live(member) {
            return;
        }
        tracing::warn!(
            member,
            "origin unreachable; out of placement until it answers"
        );
        self.update(|v| {
            v.down.insert(member.to_owned());
        });
    }

    fn record(&self, member: &str, ok: bool) {
        let down_after = self.config.down_after;
        self.update(|v| {
            if ok {
                v.failures.remove(member);
                if v.down.remove(member) {
                    tracing::info!(member, "origin is back");
                }
            } else {
                let f = v.failures.entry(member.to_owned()).or_default();
                *f += 1;
                if *f >= down_after && v.down.insert(member.to_owned()) {
                    tracing::warn!(member, failures = *f, "origin is down");
                }
            }
        });
    }

    fn set_members(&self, mut members: Vec<String>) {
        members.sort();
        members.dedup();
        self.update(|v| {
            if v.members != members {
                tracing::info!(?members, "origin members changed");
                v.failures.retain(|m, _| members.contains(m));
                v.down.retain(|m| members.contains(m));
                v.members = members;
            }
        });
    }

    async fn resolve(&self, name: &str) {
        match tokio::net::lookup_host(name).await {
            Ok(addrs) => {
                let members: Vec<String> =
                    addrs.map(|a| format!("{}://{a}", self.scheme)).collect();
                if members.is_empty() {
                    tracing::warn!(
                        name,
                        "origin DNS name resolved to nothing; keeping the members"
                    );
                } else {
                    self.set_members(members);
                }
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot resolve the origin DNS name; keeping the members")
            }
        }
    }

    /// Asks one member who it is.
    async fn check(&self, member: &str) -> Result<OriginInfo, String> {
        let res = self
            .health
            .get(format!("{member}/v1/info"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("answered {}", res.status()));
        }
        res.json::<OriginInfo>().await.map_err(|e| e.to_string())
    }

    /// One round of health checks (and, without an `advertise_url`, the search for this
    /// origin in the list).
    pub async fn check_all(&self) {
        let me = self.me();
        let members: Vec<String> = self
            .members()
            .into_iter()
            .filter(|m| Some(m) != me.as_ref())
            .collect();
        let results = futures::future::join_all(
            members
                .iter()
                .map(|m| async move { (m, self.check(m).await) }),
        )
        .await;
        for (member, result) in results {
            match result {
                Ok(info) if info.peer_id == self.peer_id => {
                    tracing::info!(member, "found this origin in the member list");
                    self.update(|v| {
                        v.me = Some(member.clone());
                        v.down.remove(member);
                    });
                }
                Ok(info) => {
                    if !info.member.is_empty() && info.member != *member {
                        tracing::warn!(
                            member,
                            calls_itself = info.member,
                            "origin advertises a different URL than the member list has"
                        );
                    }
                    self.record(member, true);
                }
                Err(error) => {
                    tracing::debug!(member, error, "health check failed");
                    self.record(member, false);
                }
            }
        }
    }

    /// Resolves members (DNS) and checks health until `shutdown`. `on_round` runs after
    /// each round (readiness).
    pub async fn run(&self, shutdown: CancellationToken, on_round: impl Fn(&Cluster)) {
        let last_resolve = std::sync::Mutex::new(None::<Instant>);
        let (last_resolve, on_round) = (&last_resolve, &on_round);
        shoal_core::tasks::every(self.config.health_interval, &shutdown, move || async move {
            if let Source::Dns(name) = &self.source {
                let due = last_resolve
                    .lock()
                    .map(|t| t.is_none_or(|t| t.elapsed() >= self.config.dns_refresh))
                    .unwrap_or(true);
                if due {
                    self.resolve(name).await;
                    if let Ok(mut t) = last_resolve.lock() {
                        *t = Some(Instant::now());
                    }
                }
            }
            self.check_all().await;
            on_round(self);
        })
        .await;
    }

    /// How long to wait between rounds.
    pub fn health_interval(&self) -> Duration {
        self.config.health_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn cluster(config: &Config) -> Cluster {
        let metrics = Metrics::register(&Registry::new()).unwrap();
        Cluster::new(
            config,
            PeerId([7; 20]),
            "http://127.0.0.1:1".into(),
            metrics,
            None,
        )
        .unwrap()
    }

    #[test]
    fn alone_it_is_its_own_cluster() {
        let c = cluster(&Config::default());
        assert_eq!(c.me().as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(c.owners(b"k"), ["http://127.0.0.1:1"]);
        assert!(c.is_owner(b"k"));
    }

    #[test]
    fn down_members_leave_placement_and_come_back() {
        let mut config = Config::default();
        config.cluster.members = vec![
            "http://a:1".into(),
            "http://b:1".into(),
            "http://c:1".into(),
        ];
        config.advertise_url = "http://a:1".into();
        config.replicas = 2;
        let c = cluster(&config);
        let mut changes = c.subscribe();
        assert_eq!(c.live().len(), 3);
        // Find a key that b owns.
        let key = (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|k| c.owners(k).contains(&"http://b:1".to_string()))
            .unwrap();
        c.record("http://b:1", false);
        assert!(c.is_live("http://b:1"), "one failure is not enough");
        c.record("http://b:1", false);
        assert!(!c.is_live("http://b:1"));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert!(!c.owners(&key).contains(&"http://b:1".to_string()));
        assert_eq!(c.owners(&key).len(), 2);
        c.record("http://b:1", true);
        assert!(c.owners(&key).contains(&"http://b:1".to_string()));
        assert!(changes.has_changed().unwrap());
        // This origin never leaves its own view.
        c.report_unreachable("http://a:1");
        assert!(c.is_live("http://a:1"));
        c.report_unreachable("http://c:1");
        assert!(!c.is_live("http://c:1"));
    }

    #[tokio::test]
    async fn dns_names_become_members() {
        let mut config = Config::default();
        config.cluster.dns = "localhost:9000".into();
        let c = cluster(&config);
        assert!(c.members().is_empty());
        c.resolve("localhost:9000").await;
        assert!(
            c.members().contains(&"http://127.0.0.1:9000".to_string()),
            "{:?}",
            c.members()
        );
        // A name that does not resolve keeps the members.
        c.resolve("no-such-host.invalid:9000").await;
        assert!(!c.members().is_empty());
    }
}
