//! Peer discovery: how a node learns who else holds a blob. A small trait, so that the
//! tracker client here and a gossip/DHT one later are interchangeable; and a fixed list for
//! tests and tiny setups.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_core::Digest;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId, PeerInfo};

/// What a node says about itself for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub digest: Digest,
    pub peer_id: PeerId,
    /// The peer-protocol port this node listens on.
    pub port: u16,
    /// An address to be dialled at instead of the one the tracker sees.
    pub addr: Option<IpAddr>,
    /// Whether this node holds the whole blob.
    pub complete: bool,
}

/// Peers of a blob, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    pub peers: Vec<PeerInfo>,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("tracker request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("tracker answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
}

/// A way to find the peers of a blob.
pub trait Discovery: Send + Sync + 'static {
    fn announce(&self, announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>>;
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn announce(&self, announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        (**self).announce(announce)
    }
}

/// The tracker client: `POST {base}/v1/announce` with an [`AnnounceRequest`], answered by an
/// [`AnnounceResponse`] (see `tracker/API.md`).
#[derive(Debug, Clone)]
pub struct TrackerDiscovery {
    client: reqwest::Client,
    url: String,
}

/// Error bodies from a tracker are kept in errors up to this many bytes.
const MAX_ERROR_BODY: usize = 512;

impl TrackerDiscovery {
    /// A client of the tracker at `base` (`http://tracker:7070`), with a request timeout.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, DiscoveryError> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(TrackerDiscovery {
            client,
            url: format!("{}/v1/announce", base.trim_end_matches('/')),
        })
    }
}

impl Discovery for TrackerDiscovery {
    fn announce(&self, a: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        Box::pin(async move {
            let req = AnnounceRequest {
                digest: a.digest,
                peer_id: a.peer_id,
                port: a.port,
                complete: a.complete,
                addr: a.addr,
            };
            let res = self.client.post(&self.url).json(&req).send().await?;
            let status = res.status();
            if !status.is_success() {
                let body = res.text().await.unwrap_or_default();
                let mut end = body.len().min(MAX_ERROR_BODY);
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                return Err(DiscoveryError::Status {
                    status,
                    body: body[..end].to_owned(),
                });
            }
            let r: AnnounceResponse = res.json().await?;
            Ok(Peers {
                peers: r.peers,
                interval: Duration::from_secs(r.interval_secs),
            })
        })
    }
}

/// A fixed list of peers, for tests and setups without a tracker.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    peers: Arc<std::sync::RwLock<Vec<PeerInfo>>>,
    interval: Duration,
}

impl StaticDiscovery {
    pub fn new(peers: Vec<PeerInfo>, interval: Duration) -> Self {
        StaticDiscovery {
            peers: Arc::new(std::sync::RwLock::new(peers)),
            interval,
        }
    }

    /// Adds a peer to the list (a node started later in a test).
    pub fn add(&self, peer: PeerInfo) {
        self.peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(peer);
    }
}

impl Discovery for StaticDiscovery {
    fn announce(&self, a: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        let peers = self
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|p| p.peer_id != a.peer_id)
            .cloned()
            .collect();
        let interval = self.interval;
        Box::pin(async move { Ok(Peers { peers, interval }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server that records the request and answers with `status` and `body`.
    async fn serve_once(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&req).to_string()
        });
        (format!("http://{addr}"), task)
    }

    fn announce() -> Announce {
        Announce {
            digest: Digest::sha256_of(b"blob"),
            peer_id: PeerId([3; 20]),
            port: 7001,
            addr: None,
            complete: false,
        }
    }

    #[tokio::test]
    async fn tracker_client_posts_and_parses() {
        let peer = PeerInfo {
            peer_id: PeerId([9; 20]),
            addr: SocketAddr::from(([10, 0, 0, 9], 7001)),
            complete: true,
            origin: true,
        };
        let body = serde_json::to_string(&AnnounceResponse {
            peers: vec![peer.clone()],
            interval_secs: 3,
        })
        .unwrap();
        let (base, server) = serve_once("200 OK", body).await;
        let t = TrackerDiscovery::new(&format!("{base}/"), Duration::from_secs(5)).unwrap();
        let got = t.announce(announce()).await.unwrap();
        assert_eq!(got.peers, vec![peer]);
        assert_eq!(got.interval, Duration::from_secs(3));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /v1/announce HTTP/1.1"), "{req}");
        let json = &req[req.find("\r\n\r\n").unwrap() + 4..];
        let sent: AnnounceRequest = serde_json::from_str(json).unwrap();
        assert_eq!(sent.peer_id, PeerId([3; 20]));
        assert_eq!(sent.port, 7001);
        assert!(!sent.complete);
    }

    #[tokio::test]
    async fn tracker_errors_are_reported() {
        let (base, _server) = serve_once(
            "429 Too Many Requests",
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.into(),
        )
        .await;
        let t = TrackerDiscovery::new(&base, Duration::from_secs(5)).unwrap();
        match t.announce(announce()).await {
            Err(DiscoveryError::Status { status, body }) => {
                assert_eq!(status.as_u16(), 429);
                assert!(body.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn static_list_leaves_out_the_caller() {
        let me = PeerInfo {
            peer_id: PeerId([3; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            complete: false,
            origin: false,
        };
        let other = PeerInfo {
            peer_id: PeerId([4; 20]),
            ..me.clone()
        };
        let d = StaticDiscovery::new(vec![me], Duration::from_secs(1));
        d.add(other.clone());
        assert_eq!(d.announce(announce()).await.unwrap().peers, vec![other]);
    }
}
