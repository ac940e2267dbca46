//! Shoal's swarm: the peer protocol, the engine that decides who fetches what from whom, the
//! tokio driver that runs it over TCP, and the simulator that runs it at fleet scale.
//!
//! - [`wire`]: the peer protocol's hello and framed messages; a decoder that bounds every
//!   length before it allocates (`PROTOCOL.md` is the specification).
//! - [`bitfield`]: sets of pieces and their wire encoding.
//! - [`engine`]: the sans-IO swarm state machine, fed events and time, returning actions.
//! - [`node`]: the tokio driver: [`Node`] for origins (seed everything) and agents
//!   (download, stream in order, seed until idle).
//! - [`rate`]: per-host egress and ingress caps, paced in chunks.
//! - [`discovery`]: how peers are found: the tracker client, a static list.
//! - [`metrics`]: the node's Prometheus families.
//! - [`sim`]: the simulator behind the `swarm-sim` binary.
//! - [`error`]: the crate's error type.
#![forbid(unsafe_code)]

pub mod bitfield;
pub mod discovery;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod node;
pub mod rate;
pub mod sim;
pub mod wire;

pub use discovery::{Discovery, StaticDiscovery, TrackerDiscovery};
pub use error::P2pError;
pub use node::{
    DEFAULT_MAX_INBOUND_PER_ADDR, DEFAULT_MAX_UNSENT_BYTES, DEFAULT_MAX_UNWRITTEN_BYTES,
    DownloadError, DownloadHandle, MetainfoSource, Node, NodeConfig, Progress,
};
