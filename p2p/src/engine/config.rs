//! The engine's knobs.

use std::time::Duration;

#[cfg(doc)]
use super::{Engine, MIN_STREAM_AHEAD};

/// The engine's knobs. The defaults suit hosts on 1–40 Gbit/s links.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections (open or being dialled) for one blob.
    pub max_conns_per_blob: usize,
    /// Of those, how many this node dials itself; the rest are left for peers that dial
    /// in. Without that reserve, hosts that start together fill each other's slots and the
    /// last to announce find everyone full.
    pub max_outbound_per_blob: usize,
    /// Connections for all blobs together.
    pub max_conns: usize,
    /// Connections a downloader keeps to origins for one blob: origins are seeds of last
    /// resort and serve many swarms.
    pub max_origin_conns_per_blob: usize,
    /// Requests in flight to peers for one blob, at least and at most; between the two the
    /// target is the download rate times `request_queue_time`. Requests to origins have
    /// their own budget (each origin connection's window).
    pub min_in_flight: usize,
    pub max_in_flight: usize,
    /// How much work, in time at the current rate, to keep requested ahead.
    pub request_queue_time: Duration,
    /// Streaming: how many bytes of missing pieces ahead of a reader's position (see
    /// [`Engine::set_focus`]) are requested first, in order, whatever the target in
    /// flight; at least [`MIN_STREAM_AHEAD`] pieces. Everything else stays rarest first.
    pub stream_ahead: u64,
    /// Requests in flight on one connection before its rate is known, and at most.
    pub initial_window: usize,
    pub max_window: usize,
    /// Over how long download rates are averaged.
    pub rate_window: Duration,
    /// Uploads queued for one blob beyond which requests are rejected.
    pub max_upload_queue: usize,
    /// Uploads queued for one connection beyond which its requests are rejected.
    pub max_uploads_per_conn: usize,
    /// A connection with requests out that delivers nothing for this long has them moved.
    pub request_timeout: Duration,
    /// After a reject, how long to leave that connection alone.
    pub reject_backoff: Duration,
    /// Copies of one piece requested at once in endgame.
    pub endgame_copies: u8,
    /// Failures (time-outs, failed dials, broken connections) before a peer is shunned.
    pub max_peer_failures: u32,
    /// How long a shunned address (or verified id) is refused.
    pub shun_for: Duration,
    /// Known peers kept per blob. When the list is full, a peer discovery names displaces
    /// the one heard of least recently that is not connected.
    pub max_known_peers: usize,
    /// A known peer that discovery has not named for this long, and that is not
    /// connected, is forgotten.
    pub forget_peer_after: Duration,
    /// How long a complete blob is seeded after its last upload; `None`: for ever.
    pub seed_idle: Option<Duration>,
    /// Super-seeding for blobs added with [`Engine::seed`]: instead of its whole bitfield, a
    /// seed shows downloaders only this many pieces at a time (a couple each, round robin),
    /// those it has uploaded least, and offers more as they are sent. A seed whose upload is
    /// the swarm's bottleneck (an origin at the start of a swarm) then sends every piece once
    /// before it sends any twice. `0`: show everything.
    pub super_seed_offers: usize,
    /// How often the engine wants [`Engine::handle_timeout`].
    pub tick: Duration,
    /// Wait before re-dialling a peer after its first failure; doubles with each failure.
    pub redial_backoff: Duration,
    /// Wait before announcing again after a failed announce; doubles up to the interval.
    pub announce_retry: Duration,
    /// Announce no more often than this, whatever a tracker says.
    pub min_announce_interval: Duration,
}

impl Config {
    /// What an origin runs with: it serves many swarms, so more connections in all and per
    /// blob than an agent (with fewer per blob, the simulator shows a slower last host: the
    /// first copies reach fewer downloaders), and it super-seeds. Both
    /// [`crate::NodeConfig::origin`] and the simulator use it.
    pub fn origin() -> Self {
        Config {
            max_conns_per_blob: 100,
            max_conns: 4000,
            super_seed_offers: 32,
            seed_idle: Some(Duration::from_secs(600)),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns_per_blob: 40,
            max_outbound_per_blob: 20,
            max_conns: 400,
            max_origin_conns_per_blob: 2,
            min_in_flight: 4,
            max_in_flight: 64,
            request_queue_time: Duration::from_millis(50),
            stream_ahead: 4 << 20,
            initial_window: 2,
            max_window: 8,
            rate_window: Duration::from_millis(500),
            max_upload_queue: 16,
            max_uploads_per_conn: 8,
            request_timeout: Duration::from_secs(30),
            reject_backoff: Duration::from_millis(20),
            endgame_copies: 2,
            max_peer_failures: 3,
            shun_for: Duration::from_secs(600),
            max_known_peers: 256,
            forget_peer_after: Duration::from_secs(600),
            seed_idle: Some(Duration::from_secs(300)),
            super_seed_offers: 0,
            tick: Duration::from_millis(250),
            redial_backoff: Duration::from_secs(1),
            announce_retry: Duration::from_secs(2),
            min_announce_interval: Duration::from_secs(1),
        }
    }
}
