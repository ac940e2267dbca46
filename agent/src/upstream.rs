//! What the agent asks of others: metainfo (from the tracker, or the origins without one),
//! and, when no tracker is configured, the origins as the only peers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shoal_core::Digest;
use shoal_core::origin_client::OriginClient;
use shoal_core::peer::PeerInfo;
use shoal_core::signature::{MetainfoTrust, Trusted};
use shoal_p2p::discovery::{Announce, Discovery, DiscoveryError, Peers};

use crate::error::AgentError;

/// Metainfo answers are a few KiB to a few hundred; anything past this is not one.
const MAX_METAINFO: u64 = 64 << 20;
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
    pub fn new(
        origins: Arc<OriginClient>,
        tracker: Option<String>,
        trust: MetainfoTrust,
    ) -> Result<Self, AgentError> {
        let tracker = match tracker {
            Some(base) => {
                let client = reqwest::Client::builder()
                    .timeout(TRACKER_TIMEOUT)
                    .connect_timeout(Duration::from_secs(3))
                    .build()
                    .map_err(|e| AgentError::Tracker(e.to_string()))?;
                Some((client, base.trim_end_matches('/').to_owned()))
            }
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
                Ok(None) => return Ok(None),
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

/// The tracker's answer as it came, not yet believed.
async fn tracker_metainfo(
    client: &reqwest::Client,
    base: &str,
    digest: Digest,
) -> Result<Option<bytes::Bytes>, AgentError> {
    let res = client
        .get(format!("{base}/v1/metainfo/{digest}"))
        .send()
        .await
        .map_err(|e| AgentError::Tracker(e.to_string()))?;
    match res.status() {
        http::StatusCode::OK => {}
        http::StatusCode::NOT_FOUND => return Ok(None),
        s => return Err(AgentError::Tracker(format!("metainfo answered {s}"))),
    }
    if res.content_length().is_some_and(|n| n > MAX_METAINFO) {
        return Err(AgentError::BadMetainfo {
            digest,
            reason: "the answer is too long".into(),
        });
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|e| AgentError::Tracker(e.to_string()))?;
    Ok(Some(bytes))
}

/// Discovery without a tracker: every origin is a peer of every blob (the ones that do not
/// hold it refuse, and the swarm moves on). Agents then do not find each other.
pub struct OriginDiscovery {
    origins: Arc<OriginClient>,
    known: Mutex<Option<(Instant, Vec<PeerInfo>)>>,
}

/// How long the origins' peer ids and ports are reused before they are asked again.
const ORIGIN_INFO_TTL: Duration = Duration::from_secs(30);
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(10);

impl OriginDiscovery {
    pub fn new(origins: Arc<OriginClient>) -> Self {
        OriginDiscovery {
            origins,
            known: Mutex::new(None),
        }
    }

    async fn lookup(&self) -> Vec<PeerInfo> {
        if let Some((at, peers)) = &*self.known.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < ORIGIN_INFO_TTL
        {
            return peers.clone();
        }
        let mut peers = Vec::new();
        for origin in self.origins.origins() {
            let info = match self.origins.info(origin).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(%origin, error = %e, "origin info unavailable");
                    continue;
                }
            };
            let Some(addr) = peer_addr(origin, info.peer_port).await else {
                continue;
            };
            peers.push(PeerInfo {
                peer_id: info.peer_id,
                addr,
                complete: true,
                origin: true,
            });
        }
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), peers.clone()));
        peers
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
    fn announce(&self, _announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        Box::pin(async move {
            Ok(Peers {
                peers: self.lookup().await,
                interval: ANNOUNCE_INTERVAL,
            })
        })
    }
}
