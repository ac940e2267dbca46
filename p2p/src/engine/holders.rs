//! Who holds which piece, by connection slot.
//!
//! Each swarm numbers its connections densely from 0 ([`Slots`]), so that what is kept per
//! piece and per connection is a bit set over slots ([`Holders`]) rather than a walk through
//! every connection's own state. When a piece is written, the swarm learns in one row of
//! bits which neighbours hold it: the operation a swarm does once per piece per neighbour.

use super::ConnId;

/// A swarm's connections by slot, and whether each is an origin's.
#[derive(Debug)]
pub(super) struct Slots {
    conns: Vec<Option<ConnId>>,
    origin: Vec<bool>,
    cap: usize,
}

impl Slots {
    /// Room for every connection a blob can have, `max_conns`, plus one that replaces
    /// another (a simultaneous dial) before the other is gone; in whole words of bits.
    pub fn new(max_conns: usize) -> Self {
        Slots {
            conns: Vec::new(),
            origin: Vec::new(),
            cap: (max_conns + 1).div_ceil(64).max(1) * 64,
        }
    }

    /// The most slots there can be.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// A slot for a new connection: the lowest free one, or a new one while there is room.
    pub fn free(&mut self) -> Option<usize> {
        if let Some(i) = self.conns.iter().position(Option::is_none) {
            return Some(i);
        }
        if self.conns.len() >= self.cap {
            return None;
        }
        self.conns.push(None);
        self.origin.push(false);
        Some(self.conns.len() - 1)
    }

    /// Puts `id` in `slot` (one [`Slots::free`] gave).
    pub fn fill(&mut self, slot: usize, id: ConnId, origin: bool) {
        if let (Some(c), Some(o)) = (self.conns.get_mut(slot), self.origin.get_mut(slot)) {
            *c = Some(id);
            *o = origin;
        }
    }

    pub fn clear(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            *c = None;
        }
    }

    /// The connections, with their slot and whether each is an origin's.
    pub fn iter(&self) -> impl Iterator<Item = (usize, ConnId, bool)> + '_ {
        self.conns
            .iter()
            .zip(&self.origin)
            .enumerate()
            .filter_map(|(slot, (id, &origin))| id.map(|id| (slot, id, origin)))
    }

    #[cfg(test)]
    pub fn get(&self, slot: usize) -> Option<ConnId> {
        self.conns.get(slot).copied().flatten()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.iter().flatten().count()
    }
}

/// While a blob downloads: per piece, the slots whose peer holds it; per slot, how many
/// pieces its peer holds that this node lacks (its peer is worth asking while that is not 0).
#[derive(Debug)]
pub(super) struct Holders {
    /// Words of bits per piece.
    words: usize,
    /// `bits[piece * words + slot / 64]`, bit `slot % 64`.
    bits: Vec<u64>,
    interesting: Vec<u32>,
}

impl Holders {
    pub fn new(pieces: usize, slots: &Slots) -> Self {
        let words = slots.capacity() / 64;
        Holders {
            words,
            bits: vec![0; pieces * words],
            interesting: vec![0; slots.capacity()],
        }
    }

    fn at(&self, piece: usize, slot: usize) -> (usize, u64) {
        (piece * self.words + slot / 64, 1u64 << (slot % 64))
    }

    pub fn holds(&self, piece: usize, slot: usize) -> bool {
        let (w, b) = self.at(piece, slot);
        self.bits.get(w).is_some_and(|h| h & b != 0)
    }

    /// The peer in `slot` holds `piece`.
    pub fn add(&mut self, piece: usize, slot: usize) {
        let (w, b) = self.at(piece, slot);
        if let Some(h) = self.bits.get_mut(w) {
            *h |= b;
        }
    }

    /// The peer in `slot` is gone; `pieces` are those it held.
    pub fn remove_slot(&mut self, slot: usize, pieces: impl Iterator<Item = usize>) {
        for p in pieces {
            let (w, b) = self.at(p, slot);
            if let Some(h) = self.bits.get_mut(w) {
                *h &= !b;
            }
        }
    }

    /// Pieces the peer in `slot` holds that this node lacks.
    pub fn interesting(&self, slot: usize) -> u32 {
        self.interesting.get(slot).copied().unwrap_or(0)
    }

    pub fn set_interesting(&mut self, slot: usize, n: u32) {
        if let Some(i) = self.interesting.get_mut(slot) {
            *i = n;
        }
    }

    /// The peer in `slot` holds one more piece this node lacks.
    pub fn more_interesting(&mut self, slot: usize) {
        if let Some(i) = self.interesting.get_mut(slot) {
            *i += 1;
        }
    }

    /// This node now holds `piece`: the peer in `slot` has one thing fewer to offer if it
    /// holds it too. Returns whether it does.
    pub fn written(&mut self, piece: usize, slot: usize) -> bool {
        let holds = self.holds(piece, slot);
        if holds && let Some(i) = self.interesting.get_mut(slot) {
            *i = i.saturating_sub(1);
        }
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::slab::Slab;

    #[test]
    fn slots_beyond_the_first_word_keep_their_own_bits() {
        let mut slots = Slots::new(100);
        assert_eq!(slots.capacity(), 128);
        let mut h = Holders::new(3, &slots);
        let mut conns = Slab::default();
        let taken: Vec<usize> = (0..128)
            .map(|_| {
                let slot = slots.free().unwrap();
                slots.fill(slot, conns.insert(()), false);
                slot
            })
            .collect();
        assert_eq!(taken, (0..128).collect::<Vec<_>>());
        assert_eq!(slots.free(), None, "no slot beyond the capacity");
        h.add(2, 70);
        h.add(2, 3);
        assert!(h.holds(2, 70) && h.holds(2, 3));
        assert!(!h.holds(1, 70) && !h.holds(2, 6));
        h.set_interesting(70, 1);
        assert!(h.written(2, 70));
        assert_eq!(h.interesting(70), 0);
        assert!(!h.written(1, 70));
        h.remove_slot(70, [2].into_iter());
        assert!(!h.holds(2, 70) && h.holds(2, 3));
    }
}
