//! What the agent asks of others: metainfo (from the tracker, or the origins without one),
//! and peers: the tracker's, with the blob's origins always among them ([`TrackerThenOrigins`]),
//! or, when no tracker is configured, the origins alone ([`OriginDiscovery`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shoal_core::Digest;
use shoal_core::origin_client::{OriginClient, blob_key};
use shoal_core::peer::PeerInfo;
use shoal_core::signature::{MetainfoTrust, Trusted};
use shoal_p2p::TrackerDiscovery;
use shoal_p2p::discovery::{Announce, Discovery, DiscoveryError, Peers};

use crate::error::AgentError;

/// Metainfo answers are a few KiB to a few hundred; anything past this is not one.
const MAX_METAINFO: usize = 64 << 20;
const TRACKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where metainfo comes from, and what of it is believed: only metainfo that the origins
/// signed with a key in `trust` (or anything, when the config is insecure), whoever carried
/// it.
#[derive(Debug)]
pub struct Upstream {
    origins: Arc<OriginClient>,
    tracker: Option<(reqwest::Client, String)>,
    trust: MetainfoTrust,
}

impl Upstream {
    /// `read_token` is presented to the tracker on every request; the tracker is verified
    /// against `tls.ca` when `tls` is given.
    pub fn new(
        origins: Arc<OriginClient>,
        tracker: Option<String>,
        trust: MetainfoTrust,
        read_token: Option<String>,
        tls: Option<&shoal_core::tls::Tls>,
    ) -> Result<Self, AgentError> {
        let tracker = match tracker {
            Some(base) => Some((
                tracker_client(read_token.as_deref(), tls)?,
                base.trim_end_matches('/').to_owned(),
            )),
            None => None,
        };
        Ok(Upstream {
            origins,
            tracker,
            trust,
        })
    }

    pub fn trust(&self) -> &MetainfoTrust {
        &self.trust
    }

    pub fn origins(&self) -> &Arc<OriginClient> {
        &self.origins
    }

    /// The blob's metainfo, verified against the metainfo keys and checked to describe
    /// `digest`; `None` if no origin has the blob. The tracker is asked first (it caches,
    /// and coalesces many hosts' questions into one for the origins); if it cannot answer,
    /// or answers with metainfo that does not verify, the origins are asked directly, and
    /// their answer is verified the same way: nothing decides piece hashes unsigned.
    pub async fn metainfo(&self, digest: Digest) -> Result<Option<Trusted>, AgentError> {
        if let Some((client, base)) = &self.tracker {
            match tracker_metainfo(client, base, digest).await {
                // A tracker that says "unknown" could be denying the blob: the origins decide.
                Ok(None) => {
                    tracing::debug!(%digest, "the tracker does not know the blob; asking the origins")
                }
                Ok(Some(wire)) => match self.accept(wire, digest) {
                    Ok(t) => return Ok(Some(t)),
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "refused the tracker's metainfo; asking the origins")
                    }
                },
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "tracker cannot give metainfo; asking the origins")
                }
            }
        }
        match self.origins.metainfo_wire(&digest).await {
            Ok(wire) => self.accept(wire, digest).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn accept(&self, wire: bytes::Bytes, digest: Digest) -> Result<Trusted, AgentError> {
        self.trust
            .accept(wire, digest)
            .map_err(|e| AgentError::BadMetainfo {
                digest,
                reason: e.to_string(),
            })
    }
}

/// The HTTP client for the tracker: its time limits, and the read token on every request.
fn tracker_client(
    read_token: Option<&str>,
    tls: Option<&shoal_core::tls::Tls>,
) -> Result<reqwest::Client, AgentError> {
    let mut headers = http::HeaderMap::new();
    if let Some(t) = read_token.filter(|t| !t.is_empty()) {
        let mut v = http::HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
            AgentError::Config("credentials.read_token is not a valid header value".into())
        })?;
        v.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, v);
    }
    shoal_core::tls::client_builder(tls)
        .map_err(|e| AgentError::Config(format!("tls: {e}")))?
        .timeout(TRACKER_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .default_headers(headers)
        .build()
        .map_err(|e| AgentError::Tracker(e.to_string()))
}

/// The tracker's answer as it came, not yet believed.
async fn tracker_metainfo(
    client: &reqwest::Client,
    base: &str,
    digest: Digest,
) -> Result<Option<bytes::Bytes>, AgentError> {
    let mut res = client
        .get(format!("{base}/v1/metainfo/{digest}"))
        .send()
        .await
        .map_err(|e| AgentError::Tracker(e.to_string()))?;
    match res.status() {
        http::StatusCode::OK => {}
        http::StatusCode::NOT_FOUND => return Ok(None),
        s => return Err(AgentError::Tracker(format!("metainfo answered {s}"))),
    }
    // Bounded whatever the answer's Content-Length says: a chunked answer has none.
    let bytes = shoal_p2p::discovery::read_bounded(&mut res, MAX_METAINFO)
        .await
        .map_err(|e| AgentError::BadMetainfo {
            digest,
            reason: e.to_string(),
        })?;
    Ok(Some(bytes.into()))
}

/// Discovery without a tracker: every origin is a peer of every blob, the blob's owners
/// first (the ones that do not hold it refuse, and the swarm moves on). Agents then do not
/// find each other.
pub struct OriginDiscovery {
    origins: Arc<OriginClient>,
    /// Each origin that answered its `/v1/info`, by base URL. Held across a look-up, so that
    /// announces arriving meanwhile wait for it instead of asking again.
    known: tokio::sync::Mutex<Option<(Instant, Vec<KnownOrigin>)>>,
}

/// An origin's base URL and how to reach it as a peer.
type KnownOrigin = (String, PeerInfo);

/// How long the origins' peer ids and ports are reused before they are asked again.
const ORIGIN_INFO_TTL: Duration = Duration::from_secs(30);
/// How long one origin's `/v1/info` may take before it is left out until the next look-up.
const ORIGIN_INFO_TIMEOUT: Duration = Duration::from_secs(3);
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(10);
/// How soon a tracker that did not answer is asked again; meanwhile the origins stand in.
pub const TRACKER_RETRY: Duration = Duration::from_secs(5);

impl OriginDiscovery {
    pub fn new(origins: Arc<OriginClient>) -> Self {
        OriginDiscovery {
            origins,
            known: tokio::sync::Mutex::new(None),
        }
    }

    /// Every origin that answers, as a peer of `digest`: in the order the origins place the
    /// blob, so its owners come first.
    pub async fn peers_of(&self, digest: &Digest) -> Vec<PeerInfo> {
        let known = self.lookup().await;
        self.origins
            .ranked(&blob_key(digest))
            .iter()
            .filter_map(|m| known.iter().find(|(k, _)| k == m).map(|(_, p)| p.clone()))
            .collect()
    }

    async fn lookup(&self) -> Vec<KnownOrigin> {
        let mut known = self.known.lock().await;
        if let Some((at, peers)) = &*known
            && at.elapsed() < ORIGIN_INFO_TTL
        {
            return peers.clone();
        }
        let asks = self.origins.origins().iter().map(|origin| async move {
            let info =
                match tokio::time::timeout(ORIGIN_INFO_TIMEOUT, self.origins.info(origin)).await {
                    Ok(Ok(i)) => i,
                    Ok(Err(e)) => {
                        tracing::debug!(%origin, error = %e, "origin info unavailable");
                        return None;
                    }
                    Err(_) => {
                        tracing::debug!(%origin, "origin info did not come in time");
                        return None;
                    }
                };
            let addr = peer_addr(origin, info.peer_port).await?;
            Some((
                origin.clone(),
                PeerInfo {
                    peer_id: info.peer_id,
                    addr,
                    complete: true,
                    origin: true,
                },
            ))
        });
        let peers: Vec<KnownOrigin> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        *known = Some((Instant::now(), peers.clone()));
        peers
    }
}

/// Discovery through the tracker, with the blob's origins always in the answer: a tracker
/// that does not answer, answers an error, or leaves the origins out (it cannot reach them,
/// or it lies) never leaves the agent without a seed. While the tracker fails, the origins
/// alone are the peers and the tracker is asked again every [`TRACKER_RETRY`].
///
/// Whatever the tracker says is bounded first ([`Peers::clamped`]); the origins the agent
/// found itself come before any the tracker claims, so a tracker's fake "origins" cannot take
/// the few origin connections a download makes.
pub struct TrackerThenOrigins {
    tracker: TrackerDiscovery,
    origins: OriginDiscovery,
}

impl TrackerThenOrigins {
    pub fn new(tracker: TrackerDiscovery, origins: OriginDiscovery) -> Self {
        TrackerThenOrigins { tracker, origins }
    }
}

/// The tracker's peers, then the agent's own origins of the blob, then whatever else the
/// tracker called an origin; each address once.
fn merge(tracker: Vec<PeerInfo>, ours: Vec<PeerInfo>) -> Vec<PeerInfo> {
    let (claimed, mut out): (Vec<PeerInfo>, Vec<PeerInfo>) =
        tracker.into_iter().partition(|p| p.origin);
    out.retain(|p| !ours.iter().any(|o| o.addr == p.addr));
    out.extend(ours);
    for p in claimed {
        if !out.iter().any(|o| o.addr == p.addr) {
            out.push(p);
        }
    }
    out
}

impl Discovery for TrackerThenOrigins {
    fn announce(&self, a: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        Box::pin(async move {
            let digest = a.digest;
            match self.tracker.announce(a).await {
                Ok(answer) => {
                    let answer = answer.clamped();
                    let ours = self.origins.peers_of(&digest).await;
                    Ok(Peers {
                        peers: merge(answer.peers, ours),
                        interval: answer.interval,
                    })
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, retry_s = TRACKER_RETRY.as_secs(), "announce failed; the blob's origins stand in until the tracker answers");
                    Ok(Peers {
                        peers: self.origins.peers_of(&digest).await,
                        interval: TRACKER_RETRY,
                    })
                }
            }
        })
    }
}

/// The origin's host with its peer port.
async fn peer_addr(origin: &str, port: u16) -> Option<SocketAddr> {
    let url = reqwest::Url::parse(origin).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

impl Discovery for OriginDiscovery {
    fn announce(&self, announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        Box::pin(async move {
            Ok(Peers {
                peers: self.peers_of(&announce.digest).await,
                interval: ANNOUNCE_INTERVAL,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::peer::PeerId;

    fn p(i: u8, origin: bool) -> PeerInfo {
        PeerInfo {
            peer_id: PeerId([i; 20]),
            addr: SocketAddr::from(([10, 0, 0, i], 7000)),
            complete: true,
            origin,
        }
    }

    #[test]
    fn the_agents_own_origins_come_before_any_the_tracker_claims() {
        // The tracker lists two peers, a real origin (5) and a fake one (9).
        let got = merge(
            vec![p(9, true), p(1, false), p(5, true), p(2, false)],
            vec![p(5, true), p(6, true)],
        );
        let ids: Vec<u8> = got.iter().map(|p| p.peer_id.0[0]).collect();
        assert_eq!(ids, [1, 2, 5, 6, 9]);
        // A tracker that names an origin's address as a plain peer does not hide it.
        let got = merge(vec![p(5, false)], vec![p(5, true)]);
        assert_eq!(got, vec![p(5, true)]);
    }
}
