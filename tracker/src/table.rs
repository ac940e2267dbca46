//! The peer table: which peers are in which swarm. Whom to tell a caller about is the
//! handout policy of [`shoal_core::handout`], which the swarm simulator runs too.
//!
//! [`PeerStore`] is the seam: [`MemoryTable`] keeps everything in this process; a shared
//! store (Redis) can implement the same trait so that several trackers behind one address
//! see one table.
//!
//! The memory table is sharded by digest, so announces for different blobs rarely meet on a
//! lock. Each swarm keeps its complete and in-progress peers in two dense vectors with an
//! index by peer id, so an announce costs O(1) to record and O(handout size) to answer (the
//! policy samples random positions of the two vectors instead of shuffling the swarm).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_core::Digest;
use shoal_core::handout::{self, Caller, Listed};
use shoal_core::peer::{PeerId, PeerInfo};
use tokio::time::Instant;

use crate::config::TableConfig;
use crate::error::TrackerError;

pub use shoal_core::handout::Pick;

/// One announce, as the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub digest: Digest,
    pub peer_id: PeerId,
    /// Where other peers reach the caller's peer port.
    pub addr: SocketAddr,
    /// The address the announce came from (not the announced one): the bounds count per
    /// source, since peer ids are whatever the caller says.
    pub source: IpAddr,
    pub complete: bool,
}

impl Announce {
    /// Who announces, as the handout policy sees it.
    pub fn as_caller(&self) -> Caller {
        Caller {
            peer_id: self.peer_id,
            addr: self.addr,
        }
    }
}

/// Whether the caller was written into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// The swarm holds `table.max_peers_per_swarm` peers already.
    SwarmFull,
    /// The table holds `table.max_peers` entries already.
    TableFull,
    /// The swarm lists this peer id already, announced from another address: the caller
    /// is answered but cannot take over that entry. It is recorded once the entry expires.
    IdInUse,
}

impl Recorded {
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Yes => "recorded",
            Recorded::SwarmFull => "swarm_full",
            Recorded::TableFull => "table_full",
            Recorded::IdInUse => "id_in_use",
        }
    }
}

/// Other peers of the caller's swarm: complete ones first, then those in progress, random
/// within each class, never the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handout {
    pub peers: Vec<PeerInfo>,
    pub recorded: Recorded,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub swarms: usize,
    pub peers: usize,
}

/// Where the tracker keeps its swarms.
pub trait PeerStore: Send + Sync + 'static {
    /// Records the announce (or refreshes the caller's entry) and picks other peers of the
    /// same swarm. Refuses with [`TrackerError::TooManySwarms`] or
    /// [`TrackerError::TooManyEntriesForSource`], recording nothing, at those bounds.
    fn announce<'a>(
        &'a self,
        announce: &'a Announce,
        pick: Pick<'a>,
    ) -> BoxFuture<'a, Result<Handout, TrackerError>>;

    /// Drops entries that have not announced within their time to live, and swarms left
    /// empty. Returns how many entries went.
    fn expire(&self) -> BoxFuture<'_, Result<usize, TrackerError>>;

    fn stats(&self) -> BoxFuture<'_, Result<TableStats, TrackerError>>;
}

const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: PeerId,
    addr: SocketAddr,
    source: IpAddr,
    seen: Instant,
}

impl Listed for Entry {
    fn peer_id(&self) -> &PeerId {
        &self.id
    }

    fn addr(&self) -> &SocketAddr {
        &self.addr
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    complete: bool,
    pos: usize,
}

#[derive(Debug, Default)]
struct Swarm {
    slots: HashMap<PeerId, Slot>,
    complete: Vec<Entry>,
    partial: Vec<Entry>,
}

impl Swarm {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn entry(&self, slot: Slot) -> Option<&Entry> {
        if slot.complete {
            self.complete.get(slot.pos)
        } else {
            self.partial.get(slot.pos)
        }
    }

    fn class(&mut self, complete: bool) -> &mut Vec<Entry> {
        if complete {
            &mut self.complete
        } else {
            &mut self.partial
        }
    }

    fn insert(&mut self, entry: Entry, complete: bool) {
        let class = self.class(complete);
        class.push(entry);
        let pos = class.len() - 1;
        self.slots.insert(entry.id, Slot { complete, pos });
    }

    /// Removes the entry at `pos` of a class; the last entry of the class takes its place.
    fn remove_at(&mut self, complete: bool, pos: usize) -> Option<Entry> {
        let class = self.class(complete);
        if pos >= class.len() {
            return None;
        }
        let gone = class.swap_remove(pos);
        let moved = class.get(pos).map(|e| e.id);
        if let Some(id) = moved
            && let Some(slot) = self.slots.get_mut(&id)
        {
            slot.pos = pos;
        }
        self.slots.remove(&gone.id);
        Some(gone)
    }

    /// Refreshes an existing entry, moving it to its new class if its state changed.
    fn refresh(&mut self, slot: Slot, entry: Entry, complete: bool) {
        if slot.complete == complete {
            if let Some(e) = self.class(complete).get_mut(slot.pos) {
                *e = entry;
            }
        } else if self.remove_at(slot.complete, slot.pos).is_some() {
            self.insert(entry, complete);
        }
    }

    /// Removes expired entries of both classes, calling `gone` for each.
    fn expire(&mut self, now: Instant, ttl: Duration, mut gone: impl FnMut(IpAddr)) -> usize {
        let mut n = 0;
        for complete in [true, false] {
            // Backwards, so the entry swapped into a freed position was already looked at.
            let mut i = self.class(complete).len();
            while i > 0 {
                i -= 1;
                let expired = self.class(complete)[i].seen + ttl <= now;
                if expired && let Some(e) = self.remove_at(complete, i) {
                    gone(e.source);
                    n += 1;
                }
            }
        }
        n
    }
}

/// The in-memory [`PeerStore`].
#[derive(Debug)]
pub struct MemoryTable {
    limits: TableConfig,
    ttl: Duration,
    shards: Box<[Mutex<HashMap<Digest, Swarm>>]>,
    /// How many entries each source address holds, sharded by address. Locked only while
    /// a swarm shard is held, never the other way round.
    sources: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    swarms: AtomicUsize,
    peers: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a shard was held cannot leave it inconsistent in a way worse than
    // losing the tracker's answers, so carry on with what is there.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shard_of(bytes: &[u8]) -> usize {
    let mut first = [0u8; 8];
    let n = bytes.len().min(8);
    first[..n].copy_from_slice(&bytes[..n]);
    (u64::from_le_bytes(first) % SHARDS as u64) as usize
}

impl MemoryTable {
    /// A table whose entries live for `ttl` after their last announce.
    pub fn new(limits: TableConfig, ttl: Duration) -> Self {
        MemoryTable {
            limits,
            ttl,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sources: (0..SHARDS).map(|_| Mutex::default()).collect(),
            swarms: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
        }
    }

    /// Takes one unit of a counter unless it is at `max`.
    fn take(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give(counter: &AtomicUsize) {
        let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_sub(1))
        });
    }

    fn source_shard(&self, source: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Addresses of one network share their first bytes: mix them all.
        let mix = |bytes: &[u8]| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let h = match source {
            IpAddr::V4(v4) => mix(&v4.octets()),
            IpAddr::V6(v6) => mix(&v6.octets()),
        };
        lock(&self.sources[(h % SHARDS as u64) as usize])
    }

    /// Counts one more entry for `source`, unless it holds its most already.
    fn join(&self, source: IpAddr) -> Result<(), TrackerError> {
        let max = self.limits.max_entries_per_source;
        let mut m = self.source_shard(&source);
        let n = m.entry(source).or_insert(0);
        if *n >= max {
            if *n == 0 {
                m.remove(&source);
            }
            return Err(TrackerError::TooManyEntriesForSource { addr: source, max });
        }
        *n += 1;
        Ok(())
    }

    fn leave(&self, source: IpAddr) {
        let mut m = self.source_shard(&source);
        if let Some(n) = m.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&source);
            }
        }
    }

    /// [`PeerStore::announce`] at a given instant.
    pub fn announce_at(
        &self,
        a: &Announce,
        pick: Pick<'_>,
        now: Instant,
    ) -> Result<Handout, TrackerError> {
        let entry = Entry {
            id: a.peer_id,
            addr: a.addr,
            source: a.source,
            seen: now,
        };
        let mut shard = lock(&self.shards[shard_of(a.digest.as_bytes())]);
        let Some(swarm) = shard.get_mut(&a.digest) else {
            // A new swarm: nobody to hand out, only the caller to record.
            self.join(a.source)?;
            if !Self::take(&self.swarms, self.limits.max_swarms) {
                self.leave(a.source);
                return Err(TrackerError::TooManySwarms {
                    max: self.limits.max_swarms,
                });
            }
            if !Self::take(&self.peers, self.limits.max_peers) {
                self.leave(a.source);
                Self::give(&self.swarms);
                return Ok(Handout {
                    peers: Vec::new(),
                    recorded: Recorded::TableFull,
                });
            }
            let mut swarm = Swarm::default();
            swarm.insert(entry, a.complete);
            shard.insert(a.digest, swarm);
            return Ok(Handout {
                peers: Vec::new(),
                recorded: Recorded::Yes,
            });
        };

        let recorded = match swarm.slots.get(&a.peer_id).copied() {
            // Only the address that recorded an entry refreshes it: anyone can say any id.
            Some(slot) if swarm.entry(slot).is_some_and(|e| e.source != a.source) => {
                Recorded::IdInUse
            }
            Some(slot) => {
                swarm.refresh(slot, entry, a.complete);
                Recorded::Yes
            }
            None if swarm.len() >= self.limits.max_peers_per_swarm => Recorded::SwarmFull,
            None => {
                self.join(a.source)?;
                if Self::take(&self.peers, self.limits.max_peers) {
                    swarm.insert(entry, a.complete);
                    Recorded::Yes
                } else {
                    self.leave(a.source);
                    Recorded::TableFull
                }
            }
        };

        let ttl = self.ttl;
        let classes = handout::Swarm {
            complete: &swarm.complete,
            in_progress: &swarm.partial,
        };
        let live = |e: &Entry| e.seen + ttl > now;
        let peers = handout::from_swarm(classes, &a.as_caller(), pick, live, &mut rand::rng());
        Ok(Handout { peers, recorded })
    }

    /// [`PeerStore::expire`] at a given instant, all shards at once.
    pub fn expire_at(&self, now: Instant) -> usize {
        (0..SHARDS).map(|i| self.expire_shard(i, now)).sum()
    }

    fn expire_shard(&self, shard: usize, now: Instant) -> usize {
        let mut total = 0;
        let mut shard = lock(&self.shards[shard]);
        let before = shard.len();
        shard.retain(|_, swarm| {
            total += swarm.expire(now, self.ttl, |source| {
                self.leave(source);
                Self::give(&self.peers);
            });
            swarm.len() > 0
        });
        for _ in shard.len()..before {
            Self::give(&self.swarms);
        }
        total
    }

    pub fn stats_now(&self) -> TableStats {
        TableStats {
            swarms: self.swarms.load(Ordering::Acquire),
            peers: self.peers.load(Ordering::Acquire),
        }
    }

    /// How many entries announces from `source` hold (tests and debugging).
    pub fn entries_of(&self, source: &IpAddr) -> usize {
        self.source_shard(source).get(source).copied().unwrap_or(0)
    }
}

impl PeerStore for MemoryTable {
    fn announce<'a>(
        &'a self,
        announce: &'a Announce,
        pick: Pick<'a>,
    ) -> BoxFuture<'a, Result<Handout, TrackerError>> {
        let result = self.announce_at(announce, pick, Instant::now());
        Box::pin(std::future::ready(result))
    }

    fn expire(&self) -> BoxFuture<'_, Result<usize, TrackerError>> {
        Box::pin(async move {
            let mut total = 0;
            for shard in 0..SHARDS {
                total += self.expire_shard(shard, Instant::now());
                // A million entries take tens of milliseconds to look at: let announces
                // waiting on this worker in between shards.
                tokio::task::yield_now().await;
            }
            Ok(total)
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<TableStats, TrackerError>> {
        Box::pin(std::future::ready(Ok(self.stats_now())))
    }
}

#[cfg(test)]
mod tests;
