//! The simulated world: every host with its engine, its links and its reader, and the loop
//! that runs their events in time order.

use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use super::SimConfig;
use super::network::{Ev, Scheduled, Upload};
use super::tracker::Tracker;
use crate::engine::{Action, CloseReason, ConnId, Engine, Event};
use crate::wire::Layout;

/// One host: its engine, its links' speeds and upload queue, its connections' other ends,
/// and what it measured.
pub(super) struct Host {
    pub(super) engine: Engine,
    pub(super) info: PeerInfo,
    pub(super) up: f64,
    pub(super) down: f64,
    pub(super) origin: bool,
    pub(super) slow: bool,
    pub(super) faulty: bool,
    /// Uploads waiting for the uplink, and the one on it (sent from `up_started`).
    pub(super) queue: VecDeque<Upload>,
    pub(super) sending: Option<(Upload, u64)>,
    pub(super) down_free: u64,
    /// conn slot -> (conn, peer host, peer conn); `None` until the dial completes.
    pub(super) links: Vec<Option<(ConnId, u32, Option<ConnId>)>>,
    pub(super) done_at: Option<u64>,
    /// When piece 0 was written.
    pub(super) first_at: Option<u64>,
    /// The reader's position, the first piece not yet written (tracked whether or not the
    /// engine is told of it).
    pub(super) reader: u32,
    /// Pieces written, and when the held count and the reader passed each progress mark.
    pub(super) held: u32,
    pub(super) held_at: [Option<u64>; 4],
    pub(super) in_order_at: [Option<u64>; 4],
    pub(super) uploaded: u64,
}

/// Progress fractions at which held and in-order figures are taken.
pub(super) const MARKS: [f64; 4] = [0.1, 0.5, 0.9, 1.0];

/// Records `now` for each mark that `count` of `pieces` has reached for the first time.
fn mark(at: &mut [Option<u64>; 4], count: u32, pieces: u32, now: u64) {
    for (slot, q) in at.iter_mut().zip(MARKS) {
        if slot.is_none() && count as f64 >= (q * pieces as f64).ceil() {
            *slot = Some(now);
        }
    }
}

/// A run: the hosts, the clock and the events waiting for it.
pub(super) struct Sim<'a> {
    pub(super) cfg: &'a SimConfig,
    pub(super) base: Instant,
    pub(super) now: u64,
    pub(super) seq: u64,
    pub(super) heap: BinaryHeap<Scheduled>,
    pub(super) fifo: VecDeque<Scheduled>,
    pub(super) latency: u64,
    pub(super) hosts: Vec<Host>,
    pub(super) rng: SmallRng,
    pub(super) tracker: Tracker,
    /// The origins as the tracker lists them.
    origins: Vec<PeerInfo>,
    pub(super) digest: Digest,
    pub(super) layout: Layout,
    pub(super) remaining: usize,
    pub(super) events: u64,
    /// Events for one host raised by its own actions (a write finishing), run before the
    /// clock moves.
    pub(super) local: VecDeque<Event>,
    /// Pieces the origins have sent at least once, and when the last of them first went.
    pub(super) origin_out: Vec<bool>,
    pub(super) origin_out_count: usize,
    pub(super) origin_all_out: Option<u64>,
    /// Virtual time of the next progress line (`SHOAL_SIM_TRACE_MS`), and the interval.
    pub(super) trace: Option<(u64, u64)>,
}

fn peer_id(host: u32) -> PeerId {
    let mut id = [0x5a; 20];
    id[..4].copy_from_slice(&host.to_be_bytes());
    PeerId(id)
}

pub(super) fn host_of(id: &PeerId) -> u32 {
    u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

impl<'a> Sim<'a> {
    pub(super) fn new(cfg: &'a SimConfig) -> Self {
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
        let origins: Vec<PeerInfo> = hosts[..cfg.origins]
            .iter()
            .map(|h| h.info.clone())
            .collect();
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
            tracker: Tracker::default(),
            origins,
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

    pub(super) fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    pub(super) fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Schedules after one latency, through the FIFO.
    pub(super) fn later(&mut self, ev: Ev) {
        self.seq += 1;
        self.fifo.push_back(Scheduled {
            at: self.now + self.latency,
            seq: self.seq,
            ev,
        });
    }

    pub(super) fn start(&mut self) {
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

    pub(super) fn run(&mut self) {
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

    pub(super) fn handle(&mut self, h: u32, ev: Event) {
        let now = self.instant(self.now);
        self.hosts[h as usize].engine.handle(now, ev);
        self.pump(h);
    }

    /// Carries out a host's actions, and the events they raise at once, until it is quiet.
    pub(super) fn pump(&mut self, h: u32) {
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
    pub(super) fn written(&mut self, h: u32, index: u32) {
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

    pub(super) fn act(&mut self, h: u32, a: Action) {
        match a {
            Action::Announce { complete, .. } => {
                let me = &mut self.hosts[h as usize].info;
                me.complete = complete;
                // No tracker: the origins are the only peers, as for an agent without one.
                let peers = if self.cfg.handout == 0 {
                    self.origins.clone()
                } else {
                    self.tracker.announce(
                        me,
                        complete,
                        self.cfg.handout,
                        &self.origins,
                        &mut self.rng,
                    )
                };
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
}
