//! The swarm simulator: thousands of [`Engine`]s, one per host, driven by a virtual clock
//! over a modelled network. It is how behaviour at fleet scale is measured here.
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
//! - A tracker hands each announcing host up to `handout` peers at random from those that
//!   announced before it, origins last.
//! - Optional slow hosts (a fraction of hosts at `1 / slow_factor` of the speed, both ways)
//!   and faulty ones (every piece they send is corrupt).
//! - Optional readers (`streaming`): every downloader has a reader that takes the blob in
//!   order as fast as pieces arrive, so its position is its first missing piece, and tells
//!   its engine (as an agent streaming a layer to its client does).
//!
//! Given a seed, a run is deterministic: every random choice (the engines' and the model's)
//! comes from seeded generators, and events at the same instant run in the order they were
//! scheduled.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use crate::engine::{Action, CloseReason, Config, ConnId, Engine, Event, Remote};
use crate::wire::{Layout, Message};

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
    /// Peers in one tracker handout.
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

#[derive(Debug)]
enum Ev {
    /// A control message sent on (host, conn) reaches the other end.
    Msg {
        from: u32,
        conn: ConnId,
        /// The other end, if the link was complete when the message was sent; else it is
        /// looked up on arrival.
        to: Option<(u32, ConnId)>,
        msg: Message,
    },
    /// A dial reaches its target.
    Dial {
        from: u32,
        to: u32,
    },
    /// The answer to a dial reaches the dialler: the target's conn, or its refusal.
    DialResult {
        from: u32,
        to: u32,
        theirs: Result<ConnId, crate::wire::ErrorCode>,
    },
    /// (host, conn) was closed by the other end.
    Closed {
        host: u32,
        conn: ConnId,
        reason: CloseReason,
    },
    Announced {
        host: u32,
        peers: Vec<PeerInfo>,
    },
    UplinkDone {
        host: u32,
    },
    PieceArrives {
        from: u32,
        conn: ConnId,
        index: u32,
        valid: bool,
    },
    Tick {
        host: u32,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap pops the largest, the simulator wants the earliest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Upload {
    conn: ConnId,
    index: u32,
}

struct Host {
    engine: Engine,
    info: PeerInfo,
    up: f64,
    down: f64,
    origin: bool,
    slow: bool,
    faulty: bool,
    /// Uploads waiting for the uplink, and the one on it (sent from `up_started`).
    queue: VecDeque<Upload>,
    sending: Option<(Upload, u64)>,
    down_free: u64,
    /// conn slot -> (conn, peer host, peer conn); `None` until the dial completes.
    links: Vec<Option<(ConnId, u32, Option<ConnId>)>>,
    done_at: Option<u64>,
    /// When piece 0 was written.
    first_at: Option<u64>,
    /// The reader's position, the first piece not yet written (tracked whether or not the
    /// engine is told of it).
    reader: u32,
    /// Pieces written, and when the held count and the reader passed each progress mark.
    held: u32,
    held_at: [Option<u64>; 4],
    in_order_at: [Option<u64>; 4],
    uploaded: u64,
}

/// Progress fractions at which held and in-order figures are taken.
const MARKS: [f64; 4] = [0.1, 0.5, 0.9, 1.0];

/// Records `now` for each mark that `count` of `pieces` has reached for the first time.
fn mark(at: &mut [Option<u64>; 4], count: u32, pieces: u32, now: u64) {
    for (slot, q) in at.iter_mut().zip(MARKS) {
        if slot.is_none() && count as f64 >= (q * pieces as f64).ceil() {
            *slot = Some(now);
        }
    }
}

/// Runs a scenario to the end.
pub fn run(cfg: &SimConfig) -> SimReport {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg);
    sim.start();
    sim.run();
    sim.report(wall.elapsed())
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    base: Instant,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Scheduled>,
    fifo: VecDeque<Scheduled>,
    latency: u64,
    hosts: Vec<Host>,
    rng: SmallRng,
    /// Hosts in the order they announced, with whether they were complete.
    tracker: Vec<u32>,
    digest: Digest,
    layout: Layout,
    remaining: usize,
    events: u64,
    /// Events for one host raised by its own actions (a write finishing), run before the
    /// clock moves.
    local: VecDeque<Event>,
    /// Pieces the origins have sent at least once, and when the last of them first went.
    origin_out: Vec<bool>,
    origin_out_count: usize,
    origin_all_out: Option<u64>,
    /// Virtual time of the next progress line (`SHOAL_SIM_TRACE_MS`), and the interval.
    trace: Option<(u64, u64)>,
}

fn peer_id(host: u32) -> PeerId {
    let mut id = [0x5a; 20];
    id[..4].copy_from_slice(&host.to_be_bytes());
    PeerId(id)
}

fn host_of(id: &PeerId) -> u32 {
    u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let layout = Layout {
            pieces: cfg.size.div_ceil(cfg.piece_length as u64) as u32,
            piece_length: cfg.piece_length,
            length: cfg.size,
        };
        let (slow, _) = cfg.slow_and_fast();
        let faulty = (cfg.hosts as f64 * cfg.faulty_fraction).round() as usize;
        // Which downloaders are slow or faulty: a random draw, fixed by the seed.
        let mut kinds: Vec<u8> = (0..cfg.hosts)
            .map(|i| {
                if i < slow {
                    1
                } else if i < slow + faulty {
                    2
                } else {
                    0
                }
            })
            .collect();
        for i in (1..kinds.len()).rev() {
            let j = rng.random_range(0..=i);
            kinds.swap(i, j);
        }
        let origin_rate = cfg.origin_rate.unwrap_or(cfg.rate) as f64;
        let mut hosts = Vec::with_capacity(cfg.origins + cfg.hosts);
        for h in 0..cfg.origins + cfg.hosts {
            let origin = h < cfg.origins;
            let kind = if origin { 0 } else { kinds[h - cfg.origins] };
            let speed = if kind == 1 {
                cfg.rate as f64 / cfg.slow_factor
            } else {
                cfg.rate as f64
            };
            let id = peer_id(h as u32);
            let engine_cfg = if origin {
                cfg.origin_engine.clone()
            } else {
                cfg.engine.clone()
            };
            hosts.push(Host {
                engine: Engine::new(
                    engine_cfg,
                    id,
                    cfg.seed ^ (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                info: PeerInfo {
                    peer_id: id,
                    addr: SocketAddr::from(([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 7000)),
                    complete: origin,
                    origin,
                },
                up: if origin { origin_rate } else { speed },
                down: speed,
                origin,
                slow: kind == 1,
                faulty: kind == 2,
                queue: VecDeque::new(),
                sending: None,
                down_free: 0,
                links: Vec::new(),
                done_at: None,
                first_at: None,
                reader: 0,
                held: 0,
                held_at: [None; 4],
                in_order_at: [None; 4],
                uploaded: 0,
            });
        }
        Sim {
            cfg,
            base: Instant::now(),
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            fifo: VecDeque::new(),
            latency: cfg.latency.as_nanos() as u64,
            hosts,
            rng,
            tracker: Vec::new(),
            digest: Digest::sha256_of(b"simulated blob"),
            layout,
            remaining: cfg.hosts,
            events: 0,
            local: VecDeque::new(),
            origin_out: vec![false; layout.pieces as usize],
            origin_out_count: 0,
            origin_all_out: None,
            trace: std::env::var("SHOAL_SIM_TRACE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| (0, ms * 1_000_000)),
        }
    }

    fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Schedules after one latency, through the FIFO.
    fn later(&mut self, ev: Ev) {
        self.seq += 1;
        self.fifo.push_back(Scheduled {
            at: self.now + self.latency,
            seq: self.seq,
            ev,
        });
    }

    fn start(&mut self) {
        let now = self.instant(0);
        for h in 0..self.cfg.origins {
            let (d, l) = (self.digest, self.layout);
            // Origins need not announce: trackers know them.
            let _ = self.hosts[h].engine.seed(now, d, l, false);
            if self.cfg.ranked_offers {
                let start = (h as u64 * l.pieces as u64 / self.cfg.origins.max(1) as u64) as u32;
                self.hosts[h].engine.set_offer_start(&d, start);
            }
        }
        // Every downloader asks at once, in a random order.
        let mut order: Vec<u32> =
            (self.cfg.origins as u32..(self.cfg.origins + self.cfg.hosts) as u32).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.random_range(0..=i);
            order.swap(i, j);
        }
        for h in order {
            let (d, l) = (self.digest, self.layout);
            let engine = &mut self.hosts[h as usize].engine;
            let _ = engine.download(now, d, l);
            if self.cfg.streaming {
                engine.set_focus(now, &d, Some(0));
            }
            self.pump(h);
        }
        for h in 0..self.hosts.len() as u32 {
            if let Some(t) = self.hosts[h as usize].engine.poll_timeout() {
                let at = t.saturating_duration_since(self.base).as_nanos() as u64;
                self.at(at, Ev::Tick { host: h });
            }
        }
    }

    fn run(&mut self) {
        let limit = self.cfg.time_limit.as_nanos() as u64;
        while self.remaining > 0 {
            let take_fifo = match (self.fifo.front(), self.heap.peek()) {
                (Some(f), Some(h)) => (f.at, f.seq) < (h.at, h.seq),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_fifo {
                self.fifo.pop_front()
            } else {
                self.heap.pop()
            };
            let Some(next) = next else { break };
            if next.at > limit {
                break;
            }
            self.now = next.at;
            self.events += 1;
            if let Some((due, every)) = self.trace
                && self.now >= due
            {
                self.trace = Some((self.now + every, every));
                self.print_trace();
            }
            self.dispatch(next.ev);
        }
    }

    fn handle(&mut self, h: u32, ev: Event) {
        let now = self.instant(self.now);
        self.hosts[h as usize].engine.handle(now, ev);
        self.pump(h);
    }

    fn link(&self, h: u32, conn: ConnId) -> Option<(u32, ConnId)> {
        match self.hosts[h as usize].links.get(conn.index()) {
            Some(Some((c, peer, Some(theirs)))) if *c == conn => Some((*peer, *theirs)),
            _ => None,
        }
    }

    fn set_link(&mut self, h: u32, conn: ConnId, peer: u32, theirs: Option<ConnId>) {
        let links = &mut self.hosts[h as usize].links;
        if links.len() <= conn.index() {
            links.resize(conn.index() + 1, None);
        }
        links[conn.index()] = Some((conn, peer, theirs));
    }

    fn clear_link(&mut self, h: u32, conn: ConnId) {
        if let Some(slot) = self.hosts[h as usize].links.get_mut(conn.index())
            && slot.is_some_and(|(c, _, _)| c == conn)
        {
            *slot = None;
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Msg {
                from,
                conn,
                to,
                msg,
            } => {
                if let Some((to, theirs)) = to.or_else(|| self.link(from, conn)) {
                    self.handle(to, Event::Message { conn: theirs, msg });
                }
            }
            Ev::Dial { from, to } => {
                let now = self.instant(self.now);
                let info = self.hosts[from as usize].info.clone();
                let d = self.digest;
                let r = self.hosts[to as usize].engine.open(
                    now,
                    &d,
                    Remote::claimed(info.peer_id, info.addr),
                    false,
                );
                let theirs = match r {
                    Ok(c) => {
                        // The dialler's conn id is not known until the answer arrives.
                        self.set_link(to, c, from, None);
                        Ok(c)
                    }
                    Err(refusal) => Err(refusal.code()),
                };
                // The answer goes first: the bitfield the target sends next must find the
                // dialler's half of the link in place.
                self.later(Ev::DialResult { from, to, theirs });
                self.pump(to);
            }
            Ev::DialResult { from, to, theirs } => {
                let d = self.digest;
                // The target may have dropped its half before the answer arrived.
                let theirs = theirs.and_then(|tc| {
                    match self.hosts[to as usize].links.get(tc.index()).copied() {
                        Some(Some((c, _, _))) if c == tc => Ok(tc),
                        _ => Err(crate::wire::ErrorCode::Shutdown),
                    }
                });
                match theirs {
                    Ok(tc) => {
                        let now = self.instant(self.now);
                        let info = self.hosts[to as usize].info.clone();
                        match self.hosts[from as usize].engine.open(
                            now,
                            &d,
                            Remote::claimed(info.peer_id, info.addr),
                            true,
                        ) {
                            Ok(oc) => {
                                self.set_link(from, oc, to, Some(tc));
                                self.set_link(to, tc, from, Some(oc));
                            }
                            Err(r) => {
                                self.clear_link(to, tc);
                                self.later(Ev::Closed {
                                    host: to,
                                    conn: tc,
                                    reason: CloseReason::Remote(r.code()),
                                });
                            }
                        }
                        self.pump(from);
                    }
                    Err(code) => {
                        let peer = self.hosts[to as usize].info.peer_id;
                        self.handle(
                            from,
                            Event::DialFailed {
                                blob: d,
                                peer,
                                code: Some(code),
                            },
                        );
                    }
                }
            }
            Ev::Closed { host, conn, reason } => {
                self.clear_link(host, conn);
                self.handle(host, Event::Closed { conn, reason });
            }
            Ev::Announced { host, peers } => {
                let d = self.digest;
                self.handle(
                    host,
                    Event::Announced {
                        blob: d,
                        peers,
                        interval: Duration::from_secs(30),
                    },
                );
            }
            Ev::UplinkDone { host } => self.uplink_done(host),
            Ev::PieceArrives {
                from,
                conn,
                index,
                valid,
            } => {
                if let Some((to, theirs)) = self.link(from, conn) {
                    self.handle(
                        to,
                        Event::PieceReceived {
                            conn: theirs,
                            index,
                            valid,
                        },
                    );
                }
            }
            Ev::Tick { host } => {
                let now = self.instant(self.now);
                self.hosts[host as usize].engine.handle_timeout(now);
                self.pump(host);
                if let Some(t) = self.hosts[host as usize].engine.poll_timeout() {
                    let at = t.saturating_duration_since(self.base).as_nanos() as u64;
                    self.at(at.max(self.now + 1), Ev::Tick { host });
                }
            }
        }
    }

    /// Carries out a host's actions, and the events they raise at once, until it is quiet.
    fn pump(&mut self, h: u32) {
        loop {
            while let Some(a) = self.hosts[h as usize].engine.poll_action() {
                self.act(h, a);
            }
            let Some(ev) = self.local.pop_front() else {
                return;
            };
            let now = self.instant(self.now);
            let written = match ev {
                Event::PieceWritten { index, .. } => Some(index),
                _ => None,
            };
            self.hosts[h as usize].engine.handle(now, ev);
            if let Some(index) = written {
                self.written(h, index);
            }
        }
    }

    /// A piece is in place: the reader, if it waited for it, moves on to the next gap.
    fn written(&mut self, h: u32, index: u32) {
        let now = self.instant(self.now);
        let d = self.digest;
        let host = &mut self.hosts[h as usize];
        if index == 0 {
            host.first_at = Some(self.now);
        }
        let pieces = self.layout.pieces;
        host.held += 1;
        mark(&mut host.held_at, host.held, pieces, self.now);
        if index != host.reader {
            return;
        }
        let Some(have) = host.engine.have(&d) else {
            return;
        };
        let mut r = host.reader;
        while (r as usize) < have.len() && have.get(r as usize) {
            r += 1;
        }
        host.reader = r;
        mark(&mut host.in_order_at, r, pieces, self.now);
        if self.cfg.streaming {
            let focus = (r < pieces).then_some(r);
            host.engine.set_focus(now, &d, focus);
        }
    }

    fn act(&mut self, h: u32, a: Action) {
        match a {
            Action::Announce { complete, .. } => {
                let peers = self.handout(h);
                if !self.tracker.contains(&h) {
                    self.tracker.push(h);
                }
                self.hosts[h as usize].info.complete = complete;
                // The tracker answers after a round trip.
                self.seq += 1;
                let at = self.now + 2 * self.latency;
                self.heap.push(Scheduled {
                    at,
                    seq: self.seq,
                    ev: Ev::Announced { host: h, peers },
                });
            }
            Action::Connect { peer, .. } => {
                let to = host_of(&peer.peer_id);
                self.later(Ev::Dial { from: h, to });
            }
            Action::Send { conn, msg } => {
                // Resolved now, while this host's link table is warm in the cache.
                let to = self.link(h, conn);
                self.later(Ev::Msg {
                    from: h,
                    conn,
                    to,
                    msg,
                });
            }
            Action::Upload { conn, index } => {
                self.hosts[h as usize]
                    .queue
                    .push_back(Upload { conn, index });
                if self.hosts[h as usize].sending.is_none() {
                    self.start_upload(h);
                }
            }
            Action::CancelUpload { conn, index } => {
                self.hosts[h as usize]
                    .queue
                    .retain(|u| !(u.conn == conn && u.index == index));
            }
            Action::Close { conn, code } => {
                if let Some((to, theirs)) = self.link(h, conn) {
                    self.later(Ev::Closed {
                        host: to,
                        conn: theirs,
                        reason: code.map_or(CloseReason::Disconnected, CloseReason::Remote),
                    });
                }
                self.clear_link(h, conn);
            }
            Action::WritePiece { blob, index, .. } => {
                self.local.push_back(Event::PieceWritten {
                    blob,
                    index,
                    ok: true,
                });
            }
            Action::Commit { blob } => {
                self.local.push_back(Event::Committed { blob, ok: true });
            }
            Action::Completed { .. } => {
                let host = &mut self.hosts[h as usize];
                if host.done_at.is_none() && !host.origin {
                    host.done_at = Some(self.now);
                    self.remaining -= 1;
                }
            }
            Action::Failed { .. } => {
                self.remaining -= 1;
            }
            Action::DropPiece { .. } | Action::Retired { .. } | Action::Shunned { .. } => {}
        }
    }

    /// Up to `handout` peers that announced earlier, at random; origins last.
    fn handout(&mut self, h: u32) -> Vec<PeerInfo> {
        let want = self.cfg.handout.saturating_sub(self.cfg.origins);
        let mut picked: Vec<u32> = Vec::with_capacity(want);
        let n = self.tracker.len();
        if n <= want {
            picked.extend(self.tracker.iter().copied().filter(|&x| x != h));
        } else {
            while picked.len() < want {
                let x = self.tracker[self.rng.random_range(0..n)];
                if x != h && !picked.contains(&x) {
                    picked.push(x);
                }
            }
        }
        let mut out: Vec<PeerInfo> = picked
            .into_iter()
            .map(|x| self.hosts[x as usize].info.clone())
            .collect();
        out.extend((0..self.cfg.origins).map(|o| self.hosts[o].info.clone()));
        out
    }

    fn piece_size(&self, index: u32) -> u64 {
        self.layout.piece_size(index).unwrap_or(0) as u64
    }

    fn start_upload(&mut self, h: u32) {
        let Some(u) = self.hosts[h as usize].queue.pop_front() else {
            return;
        };
        let size = self.piece_size(u.index) as f64;
        let dur = (size / self.hosts[h as usize].up * 1e9) as u64;
        self.hosts[h as usize].sending = Some((u, self.now));
        self.at(self.now + dur.max(1), Ev::UplinkDone { host: h });
    }

    fn uplink_done(&mut self, h: u32) {
        let Some((u, started)) = self.hosts[h as usize].sending.take() else {
            return;
        };
        let size = self.piece_size(u.index);
        self.hosts[h as usize].uploaded += size;
        if self.hosts[h as usize].origin && !self.origin_out[u.index as usize] {
            self.origin_out[u.index as usize] = true;
            self.origin_out_count += 1;
            if self.origin_out_count == self.origin_out.len() {
                self.origin_all_out = Some(self.now);
            }
        }
        if let Some((to, _)) = self.link(h, u.conn) {
            let receiver = &mut self.hosts[to as usize];
            let on_link = (size as f64 / receiver.down * 1e9) as u64;
            let dl_start = (started + self.latency).max(receiver.down_free);
            let arrives = (dl_start + on_link).max(self.now + self.latency);
            receiver.down_free = arrives;
            let valid = !self.hosts[h as usize].faulty;
            self.at(
                arrives,
                Ev::PieceArrives {
                    from: h,
                    conn: u.conn,
                    index: u.index,
                    valid,
                },
            );
        }
        self.handle(
            h,
            Event::Uploaded {
                conn: u.conn,
                index: u.index,
            },
        );
        if self.hosts[h as usize].sending.is_none() {
            self.start_upload(h);
        }
    }

    /// One line of swarm state, for studying the dynamics of a run.
    fn print_trace(&self) {
        let leechers = &self.hosts[self.cfg.origins..];
        let pieces = self.layout.pieces.max(1) as f64;
        let haves: Vec<usize> = leechers
            .iter()
            .map(|h| {
                h.engine
                    .have(&self.digest)
                    .map_or(self.layout.pieces as usize, |b| b.count())
            })
            .collect();
        let mean = haves.iter().sum::<usize>() as f64 / haves.len().max(1) as f64 / pieces;
        let min = haves.iter().copied().min().unwrap_or(0) as f64 / pieces;
        let busy = leechers.iter().filter(|h| h.sending.is_some()).count();
        let queued: usize = leechers.iter().map(|h| h.queue.len()).sum();
        let in_flight: usize = leechers
            .iter()
            .filter_map(|h| h.engine.stats(&self.digest).map(|s| s.in_flight))
            .sum();
        if let Some((worst, _)) = haves
            .iter()
            .enumerate()
            .filter(|(i, _)| !leechers[*i].slow)
            .min_by_key(|(_, h)| **h)
        {
            let h = &leechers[worst];
            let peers = h.engine.peers(&self.digest);
            let to_origin = peers
                .iter()
                .filter(|p| (host_of(p) as usize) < self.cfg.origins)
                .count();
            eprintln!(
                "  slowest fast host {}: peers {} (origins {}, slow {}) tracker-rank {:?} {:?}",
                worst + self.cfg.origins,
                peers.len(),
                to_origin,
                peers
                    .iter()
                    .filter(|p| self.hosts[host_of(p) as usize].slow)
                    .count(),
                self.tracker
                    .iter()
                    .position(|&x| x as usize == worst + self.cfg.origins),
                h.engine.stats(&self.digest)
            );
        }
        eprintln!(
            "t={:.3}s origin-out {:.3} origin-copies {:.3} mean-have {:.3} min-have {:.3} uplinks-busy {:.2} queued/host {:.1} in-flight/host {:.1} done {}",
            self.now as f64 / 1e9,
            self.origin_out_count as f64 / pieces,
            self.hosts[..self.cfg.origins]
                .iter()
                .map(|h| h.uploaded)
                .sum::<u64>() as f64
                / self.cfg.size.max(1) as f64,
            mean,
            min,
            busy as f64 / leechers.len().max(1) as f64,
            queued as f64 / leechers.len().max(1) as f64,
            in_flight as f64 / leechers.len().max(1) as f64,
            self.cfg.hosts - self.remaining,
        );
    }

    fn report(&self, wall: Duration) -> SimReport {
        let secs = |t: u64| t as f64 / 1e9;
        let mut all: Vec<f64> = Vec::new();
        let mut fast: Vec<f64> = Vec::new();
        let mut stats = (0u64, 0u64, 0u64, 0u64);
        let first: Vec<f64> = self.hosts[self.cfg.origins..]
            .iter()
            .map(|h| h.first_at.map_or(f64::INFINITY, secs))
            .collect();
        for host in &self.hosts[self.cfg.origins..] {
            let t = host.done_at.map_or(f64::INFINITY, secs);
            all.push(t);
            if !host.slow {
                fast.push(t);
            }
            if let Some(s) = host.engine.stats(&self.digest) {
                stats.0 += s.duplicate_pieces;
                stats.1 += s.bad_pieces;
                stats.2 += s.timeouts;
                stats.3 += s.rejects_received;
            }
        }
        let marks_p50 = |f: &dyn Fn(&Host) -> [Option<u64>; 4]| {
            let mut out = [f64::NAN; 4];
            for (i, o) in out.iter_mut().enumerate() {
                let v: Vec<f64> = self.hosts[self.cfg.origins..]
                    .iter()
                    .map(|h| f(h)[i].map_or(f64::INFINITY, secs))
                    .collect();
                *o = percentile(&v, 0.5);
            }
            out
        };
        let origin_bytes: u64 = self.hosts[..self.cfg.origins]
            .iter()
            .map(|h| h.uploaded)
            .sum();
        let bound = self.cfg.bound().as_secs_f64();
        let p = |v: &[f64], q: f64| percentile(v, q);
        let p99 = p(&all, 0.99);
        let max = p(&all, 1.0);
        let finite: Vec<f64> = all.iter().copied().filter(|t| t.is_finite()).collect();
        SimReport {
            hosts: self.cfg.hosts,
            size_bytes: self.cfg.size,
            piece_bytes: self.cfg.piece_length,
            rate_bytes_per_s: self.cfg.rate,
            seed: self.cfg.seed,
            completed: finite.len(),
            bound_s: bound,
            central_s: self.cfg.central().as_secs_f64(),
            p50_s: p(&all, 0.5),
            p99_s: p99,
            max_s: max,
            mean_s: finite.iter().sum::<f64>() / finite.len().max(1) as f64,
            fast_p99_s: p(&fast, 0.99),
            fast_max_s: p(&fast, 1.0),
            max_over_bound: max / bound,
            p99_over_bound: p99 / bound,
            origin_copies: origin_bytes as f64 / self.cfg.size.max(1) as f64,
            origin_all_out_s: self.origin_all_out.map_or(f64::INFINITY, secs),
            first_piece_p50_s: p(&first, 0.5),
            first_piece_p99_s: p(&first, 0.99),
            progress_marks: MARKS,
            held_p50_s: marks_p50(&|h| h.held_at),
            in_order_p50_s: marks_p50(&|h| h.in_order_at),
            streaming: self.cfg.streaming,
            ranked_offers: self.cfg.ranked_offers,
            duplicate_pieces: stats.0,
            bad_pieces: stats.1,
            timeouts: stats.2,
            rejects: stats.3,
            slow_hosts: self.hosts.iter().filter(|h| h.slow).count(),
            faulty_hosts: self.hosts.iter().filter(|h| h.faulty).count(),
            events: self.events,
            wall_s: wall.as_secs_f64(),
        }
    }
}

/// The `q` quantile (nearest rank) of `v`; infinite entries are hosts that never finished.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimConfig {
        let mut c = SimConfig::new(30, 200 << 20, 1 << 30);
        c.seed = 7;
        c
    }

    #[test]
    fn everyone_finishes_near_the_bound() {
        let r = run(&small());
        assert_eq!(r.completed, 30);
        assert!(r.max_s >= r.bound_s);
        assert!(r.max_s < 2.0 * r.bound_s, "{r:?}");
        assert!(r.max_s < r.central_s / 5.0, "{r:?}");
    }

    #[test]
    fn runs_are_deterministic_per_seed() {
        let a = run(&small());
        let b = run(&small());
        assert_eq!((a.max_s, a.p50_s, a.events), (b.max_s, b.p50_s, b.events));
        let mut other = small();
        other.seed = 8;
        let c = run(&other);
        assert_ne!((a.max_s, a.events), (c.max_s, c.events));
    }

    #[test]
    fn faulty_hosts_are_shunned_and_the_rest_finish() {
        let mut c = small();
        c.faulty_fraction = 0.2;
        let r = run(&c);
        assert_eq!(r.faulty_hosts, 6);
        // Faulty hosts fetch good pieces from others, so they finish too; every bad piece
        // was caught.
        assert_eq!(r.completed, 30);
        assert!(r.bad_pieces > 0);
    }

    #[test]
    fn readers_get_their_first_piece_early_and_everyone_still_finishes() {
        let plain = run(&small());
        let mut c = small();
        c.streaming = true;
        let streaming = run(&c);
        assert_eq!(streaming.completed, 30);
        // The first bytes come after a few pieces' time, not near the end of the download.
        assert!(
            streaming.first_piece_p99_s < 0.1 * plain.max_s,
            "{streaming:?}\n{plain:?}"
        );
        assert!(
            streaming.max_s < 1.5 * plain.max_s,
            "{streaming:?}\n{plain:?}"
        );
        // Readers all wait at the same place; the origin must still send about one copy,
        // not one per reader.
        assert!(streaming.origin_copies < 1.5, "{streaming:?}");
    }

    #[test]
    fn bound_formula() {
        let mut c = SimConfig::new(1000, 5_000_000_000, 5_000_000_000);
        assert!((c.bound().as_secs_f64() - 1.0).abs() < 1e-9);
        assert!((c.central().as_secs_f64() - 1000.0).abs() < 1e-9);
        c.slow_fraction = 0.1;
        c.slow_factor = 10.0;
        assert!((c.bound().as_secs_f64() - 10.0).abs() < 1e-9);
    }
}
