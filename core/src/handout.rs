//! The tracker's handout policy: which peers a peer announcing for a blob is told about.
//!
//! Complete peers first, then peers still downloading, at random within each class, never
//! the caller (by id or by address) and never an origin's id; when complete peers alone do
//! not fill the answer, room is left for the blob's owning origins, which come last. The
//! tracker's table and the swarm simulator both call these functions, so what the
//! simulator measures is the policy the tracker runs.
//!
//! Picking costs O(want) per class, not O(swarm): [`from_swarm`] samples random positions
//! rather than shuffling the swarm. Only when most of a sample is ineligible (entries
//! expired but not yet swept, or many sharing the caller's address) does it fall back to
//! one pass over the class.

use std::net::SocketAddr;

use rand::Rng;

use crate::peer::{PeerId, PeerInfo};

/// Extra positions sampled beyond the handout size, to cover the caller and a stale entry
/// or two without a second pass.
const SLACK: usize = 4;

/// Who announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub peer_id: PeerId,
    /// Where other peers reach the caller.
    pub addr: SocketAddr,
}

/// What the caller wants back from a swarm.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The most peers to return.
    pub want: usize,
    /// Slots to leave free for the origins when complete peers alone do not fill `want`:
    /// a swarm of peers that are all still downloading needs a seed.
    pub reserve: usize,
    /// Peer ids never to return (the origins, which the handout lists on their own).
    pub exclude: &'a [PeerId],
}

/// An entry of a swarm, as a store keeps it.
pub trait Listed {
    fn peer_id(&self) -> &PeerId;
    /// Where other peers reach it.
    fn addr(&self) -> &SocketAddr;
}

impl Listed for PeerInfo {
    fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    fn addr(&self) -> &SocketAddr {
        &self.addr
    }
}

/// A swarm's entries in their two classes.
#[derive(Debug)]
pub struct Swarm<'a, T> {
    pub complete: &'a [T],
    pub in_progress: &'a [T],
}

// By hand: derived, they would ask `T` to be `Copy` too.
impl<T> Clone for Swarm<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Swarm<'_, T> {}

/// The peers of `swarm` to tell `caller` about, up to `pick.want`: complete ones first, then
/// those in progress, each class in random order; only entries `live` holds for (a store's
/// own test of staleness). Origins are not added here: see [`origins_for`] and
/// [`add_origins`], or [`answer`] for all of it at once.
pub fn from_swarm<T: Listed>(
    swarm: Swarm<'_, T>,
    caller: &Caller,
    pick: Pick<'_>,
    live: impl Fn(&T) -> bool,
    rng: &mut impl Rng,
) -> Vec<PeerInfo> {
    let eligible = |e: &T| {
        *e.peer_id() != caller.peer_id
            && *e.addr() != caller.addr
            && live(e)
            && !pick.exclude.contains(e.peer_id())
    };
    let size = swarm.complete.len() + swarm.in_progress.len();
    let mut peers = Vec::with_capacity(pick.want.min(size));
    sample_into(swarm.complete, pick.want, true, &eligible, &mut peers, rng);
    // The reserve counts only when complete peers left room: if they filled `want`, there
    // is none left anyway.
    let room = pick
        .want
        .saturating_sub(peers.len())
        .saturating_sub(pick.reserve);
    sample_into(swarm.in_progress, room, false, &eligible, &mut peers, rng);
    peers
}

/// The owners of the blob, best first, that may go in `caller`'s answer: all but the
/// caller itself (an origin announcing as a peer). How many there are is the
/// [`Pick::reserve`] to ask of the swarm.
pub fn origins_for(caller: &Caller, mut owners: Vec<PeerInfo>) -> Vec<PeerInfo> {
    owners.retain(|o| o.peer_id != caller.peer_id && o.addr != caller.addr);
    owners
}

/// Appends `origins`, best first, in the room `peers` leaves of `want`.
pub fn add_origins(peers: &mut Vec<PeerInfo>, origins: Vec<PeerInfo>, want: usize) {
    let room = want.saturating_sub(peers.len());
    peers.extend(origins.into_iter().take(room));
}

/// The whole answer for a swarm held in memory: up to `want` peers of `swarm`, then the
/// blob's `owners` that fit. `exclude` holds every origin's id, owner of this blob or not.
pub fn answer<T: Listed>(
    swarm: Swarm<'_, T>,
    caller: &Caller,
    want: usize,
    owners: Vec<PeerInfo>,
    exclude: &[PeerId],
    live: impl Fn(&T) -> bool,
    rng: &mut impl Rng,
) -> Vec<PeerInfo> {
    let origins = origins_for(caller, owners);
    let pick = Pick {
        want,
        reserve: origins.len(),
        exclude,
    };
    let mut peers = from_swarm(swarm, caller, pick, live, rng);
    add_origins(&mut peers, origins, want);
    peers
}

/// Appends up to `k` random eligible entries of `entries` to `out`, in random order.
fn sample_into<T: Listed>(
    entries: &[T],
    k: usize,
    complete: bool,
    eligible: &impl Fn(&T) -> bool,
    out: &mut Vec<PeerInfo>,
    rng: &mut impl Rng,
) {
    if k == 0 || entries.is_empty() {
        return;
    }
    let info = |e: &T| PeerInfo {
        peer_id: *e.peer_id(),
        addr: *e.addr(),
        complete,
        origin: false,
    };
    let start = out.len();
    let tries = (k + SLACK).min(entries.len());
    for i in positions(rng, entries.len(), tries) {
        if out.len() - start == k {
            return;
        }
        if eligible(&entries[i]) {
            out.push(info(&entries[i]));
        }
    }
    if out.len() - start == k || tries == entries.len() {
        return;
    }
    // Most of the sample was ineligible: entries expired since the last sweep, or many
    // sharing the caller's address. One full pass finds whatever is left.
    out.truncate(start);
    let ok: Vec<usize> = (0..entries.len())
        .filter(|&i| eligible(&entries[i]))
        .collect();
    for j in positions(rng, ok.len(), k.min(ok.len())) {
        out.push(info(&entries[ok[j]]));
    }
}

/// `k` distinct positions of `0..n` (`k <= n`) in random order: Floyd's algorithm, whose
/// last-drawn-first fix-up makes the order a uniform shuffle too. O(k²) comparisons of small
/// integers and nothing O(n); `rand::seq::index::sample` fills an O(n) scratch vector for
/// classes of a few thousand, which showed in the tracker's benchmark.
fn positions(rng: &mut impl Rng, n: usize, k: usize) -> Vec<usize> {
    use rand::RngExt as _;
    let mut out: Vec<usize> = Vec::with_capacity(k);
    for j in n.saturating_sub(k)..n {
        let t = rng.random_range(..=j);
        if let Some(pos) = out.iter().position(|&x| x == t) {
            out[pos] = j;
        }
        out.push(t);
    }
    out
}

#[cfg(test)]
mod tests;
