//! The origins as members of every swarm: each blob's owning origins seed it, so they are in
//! its handout even before any agent has announced.
//!
//! The tracker places blobs exactly as origins do (origin/API.md, "Placement"): the ring's
//! members are the configured base URLs, a blob's key is its digest string, and its owners
//! are the first `R` members that are up. Each origin's peer id and peer port come from its
//! `GET /v1/info`, asked again every `origin_refresh`; an origin that does not answer is
//! left out of placement until it does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_core::Digest;
use shoal_core::origin_client::{OriginClient, base_url, blob_key};
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::ring::Ring;

/// Where an origin's peer protocol listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub peer_id: PeerId,
    pub addr: SocketAddr,
}

#[derive(Debug)]
struct View {
    /// The members that answered their last `/v1/info`.
    up: Ring<String>,
    seeds: HashMap<String, Seed>,
    ids: Arc<[PeerId]>,
}

impl Default for View {
    fn default() -> Self {
        View {
            up: Ring::new(Vec::new()),
            seeds: HashMap::new(),
            ids: Arc::from(Vec::new()),
        }
    }
}

/// A blob's owning origins and the ids of every known origin.
#[derive(Debug, Clone)]
pub struct Owners {
    /// Best first; complete and marked as origins.
    pub peers: Vec<PeerInfo>,
    /// Every origin's peer id, so that an origin that also announces is listed only once,
    /// last, as an origin.
    pub all_ids: Arc<[PeerId]>,
}

#[derive(Debug)]
pub struct Origins {
    members: Vec<String>,
    /// Whether a bare `host:port` means `https://`.
    tls: bool,
    replicas: usize,
    view: RwLock<View>,
}

impl Origins {
    /// `members` as configured (base URLs or `host:port`, which take `https://` when `tls`
    /// is on); `replicas` is the origins' `R`.
    pub fn new(members: &[String], replicas: usize, tls: bool) -> Self {
        Origins {
            members: members.iter().map(|m| base_url(m, tls)).collect(),
            tls,
            replicas,
            view: RwLock::new(View::default()),
        }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The owners of `digest` that are up, best first.
    pub fn owners(&self, digest: &Digest) -> Owners {
        let view = match self.view.read() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        let peers = view
            .up
            .owners(&blob_key(digest), self.replicas)
            .into_iter()
            .filter_map(|m| view.seeds.get(m))
            .map(|s| PeerInfo {
                peer_id: s.peer_id,
                addr: s.addr,
                complete: true,
                origin: true,
            })
            .collect();
        Owners {
            peers,
            all_ids: Arc::clone(&view.ids),
        }
    }

    /// How many origins answered their last `/v1/info`.
    pub fn up(&self) -> usize {
        self.view.read().map(|v| v.up.len()).unwrap_or(0)
    }

    /// Replaces what is known of the origins with `seeds` (member → seed); members missing
    /// from it are down.
    pub fn set(&self, seeds: HashMap<String, Seed>) {
        let up: Vec<String> = self
            .members
            .iter()
            .filter(|m| seeds.contains_key(*m))
            .cloned()
            .collect();
        let ids: Arc<[PeerId]> = seeds.values().map(|s| s.peer_id).collect();
        let view = View {
            up: Ring::new(up),
            seeds,
            ids,
        };
        match self.view.write() {
            Ok(mut v) => *v = view,
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }

    /// Asks every origin's `/v1/info` at once and records who answered. Returns how many
    /// did.
    pub async fn refresh(&self, client: &OriginClient, timeout: Duration) -> usize {
        let asks = self.members.iter().map(|m| async move {
            let seed = match tokio::time::timeout(timeout, learn(client, m, self.tls)).await {
                Ok(Ok(seed)) => Some(seed),
                Ok(Err(e)) => {
                    tracing::warn!(origin = %m, error = %e, "origin left out of placement");
                    None
                }
                Err(_) => {
                    tracing::warn!(origin = %m, timeout_s = timeout.as_secs_f64(), "origin did not answer /v1/info; left out of placement");
                    None
                }
            };
            (m.clone(), seed)
        });
        let answers = futures::future::join_all(asks).await;
        let seeds: HashMap<String, Seed> = answers
            .into_iter()
            .filter_map(|(m, s)| s.map(|s| (m, s)))
            .collect();
        let n = seeds.len();
        self.set(seeds);
        n
    }
}

/// One origin's seed: its `/v1/info`, at the host of its base URL.
async fn learn(client: &OriginClient, member: &str, tls: bool) -> Result<Seed, String> {
    let info = client.info(member).await.map_err(|e| e.to_string())?;
    if base_url(&info.member, tls) != member {
        // Placement hashes member strings: a different spelling here means the tracker and
        // the origins disagree about which origins own which blob.
        tracing::warn!(configured = %member, advertised = %info.member, "origin advertises a different member URL; fix the tracker's `origins` to match the origins' member list");
    }
    let url = reqwest::Url::parse(member).map_err(|e| format!("bad base URL: {e}"))?;
    let host = url.host_str().ok_or("base URL without a host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, info.peer_port),
        Err(_) => tokio::net::lookup_host((host, info.peer_port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?,
    };
    Ok(Seed {
        peer_id: info.peer_id,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(i: u8) -> Seed {
        Seed {
            peer_id: PeerId([i; 20]),
            addr: SocketAddr::from(([10, 0, 0, i], 7000)),
        }
    }

    #[test]
    fn owners_follow_the_ring_over_the_origins_that_are_up() {
        let members: Vec<String> = (1..=5).map(|i| format!("http://10.0.0.{i}:9000")).collect();
        let origins = Origins::new(&members, 3, false);
        let d = Digest::sha256_of(b"blob");
        assert!(origins.owners(&d).peers.is_empty(), "nothing known yet");

        origins.set(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.clone(), seed(i as u8 + 1)))
                .collect(),
        );
        let ring = Ring::new(members.clone());
        let want: Vec<PeerId> = ring
            .owners(&blob_key(&d), 3)
            .into_iter()
            .map(|m| seed(members.iter().position(|x| x == m).unwrap() as u8 + 1).peer_id)
            .collect();
        let got = origins.owners(&d);
        assert_eq!(
            got.peers.iter().map(|p| p.peer_id).collect::<Vec<_>>(),
            want
        );
        assert!(got.peers.iter().all(|p| p.origin && p.complete));
        assert_eq!(got.all_ids.len(), 5);

        // The first owner goes down: the next in line takes its place, as on the origins.
        let first = ring.owners(&blob_key(&d), 1)[0].clone();
        origins.set(
            members
                .iter()
                .enumerate()
                .filter(|(_, m)| **m != first)
                .map(|(i, m)| (m.clone(), seed(i as u8 + 1)))
                .collect(),
        );
        let next: Vec<PeerId> = ring
            .owners(&blob_key(&d), 4)
            .into_iter()
            .skip(1)
            .map(|m| seed(members.iter().position(|x| x == m).unwrap() as u8 + 1).peer_id)
            .collect();
        assert_eq!(
            origins
                .owners(&d)
                .peers
                .iter()
                .map(|p| p.peer_id)
                .collect::<Vec<_>>(),
            next
        );
        assert_eq!(origins.up(), 4);
    }
}
