//! Requests: what to ask of whom, and the one place a request is taken in flight or put
//! back.
//!
//! A request is counted in three places: on its connection ([`Conn::requests`]), in its
//! swarm's totals in flight ([`Download::in_flight`], and [`Download::in_flight_to_peers`]
//! unless the connection is an origin's), and in the picker (which stops offering a piece
//! while it is requested, unless in endgame). [`take_in_flight`] and [`put_back`] are the
//! only functions that change those counts, so they cannot drift apart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::conn::{Conn, Req};
use super::picker::Candidate;
use super::slab::Slab;
use super::swarm::{Download, Phase, Swarm, SwarmId};
use super::{Action, Config, ConnId, Engine};
use crate::wire::{Layout, Message};

/// Streaming: pieces ahead of a reader fetched first, at least, whatever their size: one to
/// read and a few behind it in flight, so a reader keeps moving at the download's pace.
pub const MIN_STREAM_AHEAD: usize = 4;

/// Asks the peer on `c` (`id`) for `piece`: counted in flight until [`put_back`].
pub(super) fn take_in_flight(
    dl: &mut Download,
    c: &mut Conn,
    id: ConnId,
    piece: u32,
    now: Instant,
    actions: &mut VecDeque<Action>,
) {
    if c.requests.is_empty() {
        // The stall clock runs from when an idle connection is given work.
        c.last_progress = now;
    }
    c.requests.push(Req { piece, at: now });
    dl.picker.on_request(piece);
    dl.in_flight += 1;
    if !c.origin {
        dl.in_flight_to_peers += 1;
    }
    actions.push_back(Action::Send {
        conn: id,
        msg: Message::Request(piece),
    });
}

/// The request of `piece` on `c` is over (it arrived, was rejected, cancelled, or the
/// connection is gone): it no longer counts in flight, and the piece may be asked for again
/// if still wanted. Returns whether `c` had asked for it.
pub(super) fn put_back(dl: &mut Download, c: &mut Conn, piece: u32) -> bool {
    let Some(pos) = c.requests.iter().position(|r| r.piece == piece) else {
        return false;
    };
    c.requests.swap_remove(pos);
    dl.in_flight -= 1;
    if !c.origin {
        dl.in_flight_to_peers -= 1;
    }
    dl.picker.on_unrequest(piece);
    true
}

/// Withdraws the request of `piece` on `c` (`id`), if there is one, and tells the peer; a
/// copy that crosses the cancel is then no protocol error.
pub(super) fn cancel(
    dl: &mut Download,
    c: &mut Conn,
    id: ConnId,
    piece: u32,
    actions: &mut VecDeque<Action>,
) {
    if !c.has_asked(piece) {
        return;
    }
    c.remember_cancel(piece);
    put_back(dl, c, piece);
    actions.push_back(Action::Send {
        conn: id,
        msg: Message::Cancel(piece),
    });
}

/// Streaming: how many missing pieces ahead of a reader are fetched first.
pub(super) fn stream_ahead(cfg: &Config, layout: &Layout) -> usize {
    let pieces = cfg.stream_ahead.div_ceil(layout.piece_length.max(1) as u64);
    usize::try_from(pieces)
        .unwrap_or(usize::MAX)
        .max(MIN_STREAM_AHEAD)
}

/// Requests to keep in flight to peers: the download rate times `request_queue_time`, in
/// pieces, within bounds.
pub(super) fn target_in_flight(
    cfg: &Config,
    dl: &Download,
    layout: &Layout,
    now: Instant,
) -> usize {
    let rate = dl.rate.decayed(now, cfg.rate_window);
    let ahead = rate * cfg.request_queue_time.as_secs_f64() / layout.piece_length.max(1) as f64;
    (ahead.ceil() as usize).clamp(cfg.min_in_flight, cfg.max_in_flight)
}

impl Engine {
    /// Requests pieces: from peers, round robin, each up to its window, until the blob has
    /// its target in flight; from origins, what no peer holds, up to each origin
    /// connection's window whatever the target (an origin's offer is the swarm's scarcest
    /// upload and should never wait); then endgame copies.
    pub(super) fn fill(&mut self, now: Instant, s: SwarmId) {
        let Engine {
            cfg,
            rng,
            swarms,
            conns,
            actions,
            ..
        } = self;
        let Some(sw) = swarms.get_mut(s) else { return };
        if sw.conns.is_empty() {
            return;
        }
        fill_focus(cfg, sw, conns, actions, now);
        let Phase::Downloading(dl) = &mut sw.phase else {
            return;
        };
        let target = target_in_flight(cfg, dl, &sw.layout, now);
        // Requests waiting far longer than a piece takes at this blob's rate (queued behind
        // a slow peer's other uploads) do not count against the target: otherwise a few
        // slow peers hold a host to their pace, and its rate, and so its target, stay low.
        let rate = dl.rate.decayed(now, cfg.rate_window);
        let piece_time = Duration::try_from_secs_f64(sw.layout.piece_length as f64 / rate)
            .unwrap_or(Duration::MAX);
        let late_after = piece_time
            .saturating_mul(3)
            .max(cfg.request_queue_time.saturating_mul(2));
        let late = sw
            .conns
            .iter()
            .filter_map(|&id| conns.get(id))
            .filter(|c| !c.origin)
            .flat_map(|c| &c.requests)
            .filter(|r| now.saturating_duration_since(r.at) > late_after)
            .count();
        let n = sw.conns.len();
        for pass in 0..3 {
            let room = |dl: &Download| match pass {
                0 => dl.in_flight_to_peers < target + late,
                1 => true,
                _ => dl.in_flight < target,
            };
            if !room(dl) || pass == 2 && dl.picker.unrequested() > 0 {
                continue;
            }
            // Origins serve pieces peers hold only when no peer can be asked for anything.
            let fallback = dl.in_flight_to_peers == 0
                && !sw.conns.iter().any(|&id| {
                    conns.get(id).is_some_and(|c| {
                        !c.origin && dl.holders.interesting(c.slot) > 0 && !c.backed_off(now)
                    })
                });
            for k in 0..n {
                let at = (dl.cursor + k) % n;
                let id = sw.conns[at];
                let Some(c) = conns.get_mut(id) else { continue };
                // Pass 0 asks peers, pass 1 origins, pass 2 (endgame) peers again, and
                // origins only if no peer is of use: an origin's upload is the scarcest.
                let wrong_kind = match pass {
                    0 => c.origin,
                    1 => !c.origin,
                    _ => c.origin && !fallback,
                };
                if wrong_kind
                    || dl.holders.interesting(c.slot) == 0
                    || c.requests.len() >= c.window
                    || c.backed_off(now)
                {
                    continue;
                }
                while c.requests.len() < c.window && room(dl) {
                    let Some(has) = c.has.as_ref() else {
                        break;
                    };
                    let cand = Candidate {
                        has,
                        asked: &c.requests,
                    };
                    let p = match pass {
                        0 => dl.picker.pick(&cand, rng),
                        1 => dl.picker.pick_from_origin(&cand, fallback, rng),
                        _ => dl.picker.pick_duplicate(&cand, cfg.endgame_copies),
                    };
                    let Some(p) = p else { break };
                    take_in_flight(dl, c, id, p, now, actions);
                }
                if !room(dl) {
                    dl.cursor = (at + 1) % n;
                    break;
                }
            }
        }
    }
}

/// Streaming: requests the missing pieces just ahead of a reader that nobody has been asked
/// for, in order, before the rest and whatever the target in flight (there are only a
/// few). Each goes to the connection that will likely deliver it soonest: a peer before an
/// origin, then the one with the fewest requests queued; so consecutive pieces spread over
/// connections and arrive side by side.
///
/// An origin is asked only for pieces it offered, as for everything else, unless no peer
/// is connected at all: a swarm's readers all wait at the same place, and if each asked an
/// origin for the pieces nobody holds yet, the origin would send every piece once per
/// host. Its offers (super-seeding) put each piece with one host, and the readers take it
/// from there.
fn fill_focus(
    cfg: &Config,
    sw: &mut Swarm,
    conns: &mut Slab<Conn>,
    actions: &mut VecDeque<Action>,
    now: Instant,
) {
    let Phase::Downloading(dl) = &mut sw.phase else {
        return;
    };
    let Some(from) = dl.focus else { return };
    let ahead = stream_ahead(cfg, &sw.layout);
    let only_origins = sw.conns.len() <= sw.origin_conns;
    let free: Vec<u32> = dl
        .picker
        .focus(from, ahead)
        .filter(|&p| dl.picker.requested(p) == 0)
        .collect();
    for p in free {
        let mut best: Option<((bool, usize), ConnId)> = None;
        for &id in &sw.conns {
            let Some(c) = conns.get(id) else { continue };
            let Some(has) = c.has.as_ref() else { continue };
            if c.requests.len() >= c.window
                || c.backed_off(now)
                || !(has.get(p as usize) || c.origin && only_origins)
            {
                continue;
            }
            let key = (c.origin, c.requests.len());
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, id));
            }
        }
        let Some((_, id)) = best else { continue };
        if let Some(c) = conns.get_mut(id) {
            take_in_flight(dl, c, id, p, now, actions);
        }
    }
}
