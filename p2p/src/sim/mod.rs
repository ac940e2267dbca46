//! The swarm simulator: thousands of engines ([`crate::engine::Engine`]), one per host,
//! driven by a virtual clock over a modelled network. It is how behaviour at fleet scale is
//! measured here.
//!
//! The model, chosen to be simple, deterministic and cheap per piece:
//! - Every host has an upload and a download capacity in bytes per second. An upload queue
//!   sends one whole piece at a time at full upload speed, in the order the engine asked
//!   (the tokio driver paces whole pieces through one token bucket the same way).
//! - A piece then occupies the receiver's download link for `size / download` seconds, no
//!   earlier than it started to leave the sender plus the latency, and arrives no earlier than
//!   it finished leaving plus the latency. So neither link ever carries more than its
//!   capacity, and a fast sender to a slow receiver is held to the receiver's speed.
//! - Control messages (have, request, cancel, reject, the handshake) take one latency and no
//!   bandwidth; they travel in one FIFO, which stays in time order because every message
//!   has the same latency.
//! - Writing a piece and committing a blob take no time (disks are not the bottleneck
//!   being studied).
//! - The tracker answers each announce by its real handout policy
//!   ([`shoal_core::handout`]): up to `handout` peers that announced before, complete ones
//!   first, at random within each class, room kept for the origins while complete peers do
//!   not fill the answer, origins last. Entries do not expire. With `handout` 0 there is no
//!   tracker: every host knows only the origins (the one-server baseline).
//! - Optional slow hosts (a fraction of hosts at `1 / slow_factor` of the speed, both ways)
//!   and faulty ones (every piece they send is corrupt).
//! - Optional readers (`streaming`): every downloader has a reader that takes the blob in
//!   order as fast as pieces arrive, so its position is its first missing piece, and tells
//!   its engine (as an agent streaming a layer to its client does).
//!
//! Given a seed, a run is deterministic: every random choice (the engines' and the model's)
//! comes from seeded generators, and events at the same instant run in the order they were
//! scheduled.

//!
//! The parts: the scenario and the report (here); the hosts and the event loop
//! (`world.rs`); the network model (`network.rs`); the figures of a run (`report.rs`).

mod network;
mod report;
#[cfg(test)]
mod tests;
mod tracker;
mod world;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Config;
use world::Sim;

/// One simulated scenario.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Downloading hosts.
    pub hosts: usize,
    /// Blob size in bytes.
    pub size: u64,
    pub piece_length: u32,
    /// Upload and download capacity of a host, bytes per second.
    pub rate: u64,
    /// Upload capacity of each origin; `None`: the hosts' rate.
    pub origin_rate: Option<u64>,
    pub origins: usize,
    /// One-way latency between any two hosts.
    pub latency: Duration,
    pub slow_fraction: f64,
    pub slow_factor: f64,
    pub faulty_fraction: f64,
    /// Peers in one tracker handout; 0: no tracker, every host knows only the origins.
    pub handout: usize,
    pub seed: u64,
    /// Engine settings of the hosts and of the origins.
    pub engine: Config,
    pub origin_engine: Config,
    /// Virtual time after which the run stops, finished or not.
    pub time_limit: Duration,
    /// Every downloader reads the blob in order as it arrives.
    pub streaming: bool,
    /// Origins offer in index order, origin `k` of `r` from piece `k * n / r`, rather than
    /// the first few pieces and then the rest at random.
    pub ranked_offers: bool,
}

impl SimConfig {
    /// The seed scenario's shape with the engine's default settings.
    pub fn new(hosts: usize, size: u64, rate: u64) -> Self {
        SimConfig {
            hosts,
            size,
            piece_length: shoal_core::metainfo::piece_length_for(size),
            rate,
            origin_rate: None,
            origins: 1,
            latency: Duration::from_micros(250),
            slow_fraction: 0.0,
            slow_factor: 1.0,
            faulty_fraction: 0.0,
            handout: 50,
            seed: 1,
            engine: Config::default(),
            origin_engine: Config::origin(),
            time_limit: Duration::from_secs(3600),
            streaming: false,
            ranked_offers: false,
        }
    }

    /// The lower bound on the time to bring the blob to every host: the origins must send it
    /// once, the slowest host must receive it, and all of it must cross someone's uplink N
    /// times: max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).
    pub fn bound(&self) -> Duration {
        let f = self.size as f64;
        let n = self.hosts as f64;
        let u_s = self.origin_upload() as f64;
        let (slow, fast) = self.slow_and_fast();
        let slow_rate = self.rate as f64 / self.slow_factor.max(1.0);
        let d_min = if slow > 0 {
            slow_rate
        } else {
            self.rate as f64
        };
        let sum_u = fast as f64 * self.rate as f64 + slow as f64 * slow_rate;
        Duration::from_secs_f64((f / u_s).max(f / d_min).max(n * f / (u_s + sum_u)))
    }

    /// What the origins alone would need: N·F/u_s.
    pub fn central(&self) -> Duration {
        Duration::from_secs_f64(self.hosts as f64 * self.size as f64 / self.origin_upload() as f64)
    }

    fn origin_upload(&self) -> u64 {
        self.origins.max(1) as u64 * self.origin_rate.unwrap_or(self.rate)
    }

    fn slow_and_fast(&self) -> (usize, usize) {
        let slow = if self.slow_factor > 1.0 {
            (self.hosts as f64 * self.slow_fraction).round() as usize
        } else {
            0
        };
        (slow.min(self.hosts), self.hosts - slow.min(self.hosts))
    }
}

/// The outcome of a run. Times are from the start, when every host asks for the blob.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub hosts: usize,
    pub size_bytes: u64,
    pub piece_bytes: u32,
    pub rate_bytes_per_s: u64,
    pub seed: u64,
    pub completed: usize,
    pub bound_s: f64,
    pub central_s: f64,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
    pub mean_s: f64,
    /// p99 and max over the hosts that are not slow.
    pub fast_p99_s: f64,
    pub fast_max_s: f64,
    /// `max_s / bound_s` and `p99_s / bound_s`.
    pub max_over_bound: f64,
    pub p99_over_bound: f64,
    /// Bytes the origins uploaded, in copies of the blob.
    pub origin_copies: f64,
    /// When the origins had sent every piece at least once.
    pub origin_all_out_s: f64,
    /// When hosts held their first piece (piece 0): the first byte an in-order reader gets.
    pub first_piece_p50_s: f64,
    pub first_piece_p99_s: f64,
    /// Progress fractions at which the two figures below are taken.
    pub progress_marks: [f64; 4],
    /// p50 over hosts of when they held that fraction of the pieces, and of when the
    /// contiguous prefix from piece 0 (what an in-order reader has had) reached it.
    pub held_p50_s: [f64; 4],
    pub in_order_p50_s: [f64; 4],
    pub streaming: bool,
    pub ranked_offers: bool,
    pub duplicate_pieces: u64,
    pub bad_pieces: u64,
    pub timeouts: u64,
    pub rejects: u64,
    pub slow_hosts: usize,
    pub faulty_hosts: usize,
    /// Events the simulator processed and how long the run took on this machine.
    pub events: u64,
    pub wall_s: f64,
}

/// Runs a scenario to the end.
pub fn run(cfg: &SimConfig) -> SimReport {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg);
    sim.start();
    sim.run();
    sim.report(wall.elapsed())
}
