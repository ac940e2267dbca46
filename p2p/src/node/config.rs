//! How a node runs: its settings and their defaults for agents and origins.

use std::net::IpAddr;
use std::time::Duration;

use shoal_core::peer::PeerId;

use super::budget::{DEFAULT_MAX_UNSENT_BYTES, DEFAULT_MAX_UNWRITTEN_BYTES};
#[cfg(doc)]
use super::{MetainfoSource, Node};
use crate::engine;

/// What [`NodeConfig::max_inbound_per_addr`] is for an agent unless set: one host pulling
/// that many blobs from this one at once, with room to spare.
pub const DEFAULT_MAX_INBOUND_PER_ADDR: usize = 64;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub peer_id: PeerId,
    pub engine: engine::Config,
    /// This node is an origin: it says so in its hello, and peers ask it only for what no
    /// one else holds.
    pub origin: bool,
    /// Whether blobs this node seeds without having downloaded them (through
    /// [`Node::seed`] or a [`MetainfoSource`]) are announced. Trackers list origins without
    /// being told.
    pub announce_seeds: bool,
    /// Caps on the bytes per second of pieces sent and received by all connections
    /// together; `None`: no cap.
    pub egress_rate: Option<u64>,
    pub ingress_rate: Option<u64>,
    /// Piece bytes the node holds in memory between receiving and writing them, for all
    /// blobs and connections together; while that much waits for the disk, connections
    /// stop reading pieces (the senders slow down) rather than the node buffering more.
    pub max_unwritten_bytes: u64,
    /// Piece bytes the node holds in memory between reading them from disk and writing
    /// them to peers (the seeding path), for all connections together; while that much
    /// waits for slow sockets, other uploads wait rather than the node reading more.
    pub max_unsent_bytes: u64,
    /// Connections made to this node from one source address (in their handshake or open,
    /// all blobs together). Beyond it a connection is answered `busy`, and beyond twice it
    /// is closed unanswered.
    pub max_inbound_per_addr: usize,
    /// The address to announce, when the tracker should not use the request's source.
    pub advertise_addr: Option<IpAddr>,
    /// The port to announce; `None`: the listener's.
    pub advertise_port: Option<u16>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A connection silent for this long is closed; keep-alives go out at a third of it.
    pub idle_timeout: Duration,
    /// Prefix of the metric names (`shoal_agent`, `shoal_origin`).
    pub metrics_prefix: String,
    /// The peer protocol over mutual TLS (`shoal_core::tls`): the node presents its
    /// certificate, and every peer must present one from the cluster's CA naming the id
    /// it claims. `peer_id` must then be the certificate's (`tls.identity()`), and
    /// `origin` true exactly when the certificate names an origin: [`crate::Node::start`]
    /// refuses otherwise. `None`: plaintext, peers unauthenticated (`tls.plaintext = true`).
    pub tls: Option<shoal_core::tls::Tls>,
}

impl NodeConfig {
    /// An agent: downloads, seeds what it downloaded until idle, announces everything.
    pub fn agent() -> Self {
        NodeConfig {
            peer_id: PeerId::random(),
            engine: engine::Config::default(),
            origin: false,
            announce_seeds: true,
            egress_rate: None,
            ingress_rate: None,
            max_unwritten_bytes: DEFAULT_MAX_UNWRITTEN_BYTES,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            max_inbound_per_addr: DEFAULT_MAX_INBOUND_PER_ADDR,
            advertise_addr: None,
            advertise_port: None,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: crate::wire::DEFAULT_IDLE_TIMEOUT,
            metrics_prefix: "shoal_agent".into(),
            tls: None,
        }
    }

    /// An origin: seeds every blob it holds, super-seeding (every piece once before any
    /// twice), to more peers per blob than an agent, without announcing.
    pub fn origin() -> Self {
        NodeConfig {
            origin: true,
            announce_seeds: false,
            engine: engine::Config::origin(),
            // One agent opens a connection per blob it pulls (two to origins at most).
            max_inbound_per_addr: 4 * DEFAULT_MAX_INBOUND_PER_ADDR,
            metrics_prefix: "shoal_origin".into(),
            ..NodeConfig::agent()
        }
    }
}
