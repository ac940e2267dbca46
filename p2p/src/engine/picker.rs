//! Rarest-first piece choice in O(1) per availability change.
//!
//! The pieces still wanted sit in one array ordered by how many connected non-origin peers
//! hold them, in buckets of equal availability (libtorrent's piece-picker layout). A change of
//! availability by one moves a piece across one bucket edge with a single swap. Picking scans
//! buckets from the rarest, starting each bucket at a random offset, so equally rare pieces
//! are chosen at random without shuffling anything.
//!
//! Availability counts only non-origin peers: a piece that only origins hold sits in bucket 0,
//! which is what a connection to an origin picks from, so origins serve what nobody else can.

use rand::RngExt;
use rand::rngs::SmallRng;

use crate::bitfield::Bitfield;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct Picker {
    /// Wanted pieces, by ascending availability.
    order: Vec<u32>,
    /// Each piece's place in `order`, or `NONE` if not wanted.
    pos: Vec<u32>,
    /// Non-origin peers holding each piece (wanted or not).
    avail: Vec<u32>,
    /// `bucket[a]`: the first index in `order` whose availability is at least `a`. One entry
    /// past the highest availability seen, equal to `order.len()`.
    bucket: Vec<u32>,
    /// Outstanding requests for each piece.
    requested: Vec<u8>,
    /// Wanted pieces with no request outstanding.
    unrequested: usize,
}

/// What the picker needs to know about one connection.
pub(crate) struct Candidate<'a> {
    pub has: &'a Bitfield,
    /// Pieces already requested on this connection (endgame must not ask twice).
    pub asked: &'a [u32],
}

impl Picker {
    /// A picker wanting every piece not in `have`, in random order.
    pub fn new(have: &Bitfield, rng: &mut SmallRng) -> Self {
        let n = have.len();
        let mut order: Vec<u32> = (0..n as u32).filter(|&i| !have.get(i as usize)).collect();
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let mut pos = vec![NONE; n];
        for (k, &p) in order.iter().enumerate() {
            pos[p as usize] = k as u32;
        }
        Picker {
            unrequested: order.len(),
            bucket: vec![0, order.len() as u32],
            order,
            pos,
            avail: vec![0; n],
            requested: vec![0; n],
        }
    }

    pub fn is_wanted(&self, p: u32) -> bool {
        self.pos[p as usize] != NONE
    }

    pub fn unrequested(&self) -> usize {
        self.unrequested
    }

    pub fn requested(&self, p: u32) -> u8 {
        self.requested[p as usize]
    }

    #[cfg(test)]
    pub fn availability(&self, p: u32) -> u32 {
        self.avail[p as usize]
    }

    fn ensure_bucket(&mut self, a: usize) {
        while self.bucket.len() <= a + 1 {
            self.bucket.push(self.order.len() as u32);
        }
    }

    fn swap(&mut self, i: usize, j: usize) {
        if i != j {
            self.order.swap(i, j);
            self.pos[self.order[i] as usize] = i as u32;
            self.pos[self.order[j] as usize] = j as u32;
        }
    }

    /// One more non-origin peer holds `p`.
    pub fn inc(&mut self, p: u32) {
        let a = self.avail[p as usize] as usize;
        self.avail[p as usize] += 1;
        if self.pos[p as usize] == NONE {
            return;
        }
        self.ensure_bucket(a + 1);
        // Move p to the last slot of bucket a, then shift the edge so it belongs to a + 1.
        let last = self.bucket[a + 1] as usize - 1;
        self.swap(self.pos[p as usize] as usize, last);
        self.bucket[a + 1] -= 1;
    }

    /// One fewer non-origin peer holds `p`.
    pub fn dec(&mut self, p: u32) {
        let a = self.avail[p as usize] as usize;
        debug_assert!(a > 0, "availability underflow");
        if a == 0 {
            return;
        }
        self.avail[p as usize] -= 1;
        if self.pos[p as usize] == NONE {
            return;
        }
        let first = self.bucket[a] as usize;
        self.swap(self.pos[p as usize] as usize, first);
        self.bucket[a] += 1;
    }

    /// `p` is no longer wanted (it arrived and is being written).
    pub fn remove(&mut self, p: u32) {
        let at = self.pos[p as usize];
        if at == NONE {
            return;
        }
        // Carry p up through every higher bucket to the very end, then drop it.
        let mut a = self.avail[p as usize] as usize;
        while a + 1 < self.bucket.len() {
            let last = self.bucket[a + 1] as usize - 1;
            self.swap(self.pos[p as usize] as usize, last);
            self.bucket[a + 1] -= 1;
            a += 1;
        }
        debug_assert_eq!(self.order.last(), Some(&p));
        self.order.pop();
        self.pos[p as usize] = NONE;
        let len = self.order.len() as u32;
        for b in &mut self.bucket {
            *b = (*b).min(len);
        }
        if self.requested[p as usize] == 0 {
            self.unrequested -= 1;
        }
    }

    /// `p` is wanted again (its write failed).
    pub fn insert(&mut self, p: u32) {
        if self.pos[p as usize] != NONE {
            return;
        }
        let a = self.avail[p as usize] as usize;
        self.ensure_bucket(a);
        self.order.push(p);
        let mut at = self.order.len() - 1;
        self.pos[p as usize] = at as u32;
        // p sits past every bucket; carry it down across each edge above bucket a.
        for b in (a + 1..self.bucket.len()).rev() {
            let first = self.bucket[b] as usize;
            self.swap(at, first);
            at = first;
            self.bucket[b] += 1;
        }
        if self.requested[p as usize] == 0 {
            self.unrequested += 1;
        }
    }

    pub fn on_request(&mut self, p: u32) {
        let r = &mut self.requested[p as usize];
        if *r == 0 && self.pos[p as usize] != NONE {
            self.unrequested -= 1;
        }
        *r = r.saturating_add(1);
    }

    pub fn on_unrequest(&mut self, p: u32) {
        let r = &mut self.requested[p as usize];
        debug_assert!(*r > 0, "request count underflow");
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 && self.pos[p as usize] != NONE {
            self.unrequested += 1;
        }
    }

    /// The rarest wanted, unrequested piece `c` holds among buckets `from..to`, equal
    /// rarities broken at random.
    fn scan(&self, c: &Candidate<'_>, from: usize, to: usize, rng: &mut SmallRng) -> Option<u32> {
        for a in from..to.min(self.bucket.len() - 1) {
            let (lo, hi) = (self.bucket[a] as usize, self.bucket[a + 1] as usize);
            if lo == hi {
                continue;
            }
            let start = rng.random_range(lo..hi);
            for k in (start..hi).chain(lo..start) {
                let p = self.order[k];
                if self.requested[p as usize] == 0 && c.has.get(p as usize) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// The piece to request from a non-origin peer: the rarest it holds.
    pub fn pick(&self, c: &Candidate<'_>, rng: &mut SmallRng) -> Option<u32> {
        if self.unrequested == 0 {
            return None;
        }
        self.scan(c, 1, usize::MAX, rng)
    }

    /// The piece to request from an origin: one no connected peer holds, unless `fallback`
    /// (nothing else is moving) lets it serve anything.
    pub fn pick_from_origin(
        &self,
        c: &Candidate<'_>,
        fallback: bool,
        rng: &mut SmallRng,
    ) -> Option<u32> {
        if self.unrequested == 0 {
            return None;
        }
        self.scan(c, 0, if fallback { usize::MAX } else { 1 }, rng)
    }

    /// Endgame: a piece already requested elsewhere, fewer than `max_copies` times, that `c`
    /// holds and was not asked for; the least-requested first.
    pub fn pick_duplicate(&self, c: &Candidate<'_>, max_copies: u8) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for &p in &self.order {
            let r = self.requested[p as usize];
            if r == 0 || r >= max_copies || !c.has.get(p as usize) || c.asked.contains(&p) {
                continue;
            }
            if best.is_none_or(|(br, _)| r < br) {
                best = Some((r, p));
            }
        }
        best.map(|(_, p)| p)
    }

    #[cfg(test)]
    pub fn check(&self) {
        for (k, &p) in self.order.iter().enumerate() {
            assert_eq!(self.pos[p as usize], k as u32);
        }
        let mut prev = 0;
        for (k, &p) in self.order.iter().enumerate() {
            let a = self.avail[p as usize];
            assert!(a >= prev, "order not sorted by availability");
            prev = a;
            assert!(self.bucket[a as usize] as usize <= k);
            assert!(self.bucket[a as usize + 1] as usize > k);
        }
        let unreq = self
            .order
            .iter()
            .filter(|&&p| self.requested[p as usize] == 0)
            .count();
        assert_eq!(unreq, self.unrequested);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[derive(Debug, Clone)]
    enum Op {
        Inc(u32),
        Dec(u32),
        Remove(u32),
        Insert(u32),
        Request(u32),
        Unrequest(u32),
    }

    fn op(n: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..n).prop_map(Op::Inc),
            (0..n).prop_map(Op::Dec),
            (0..n).prop_map(Op::Remove),
            (0..n).prop_map(Op::Insert),
            (0..n).prop_map(Op::Request),
            (0..n).prop_map(Op::Unrequest),
        ]
    }

    proptest! {
        /// Any sequence of changes keeps the buckets sorted and the counts right, and a pick
        /// is always a rarest candidate.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(40), 0..400), seed in any::<u64>()) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut have = Bitfield::new(40);
            have.set(3);
            let mut p = Picker::new(&have, &mut rng);
            let mut req = [0u8; 40];
            for o in ops {
                match o {
                    Op::Inc(i) => p.inc(i),
                    Op::Dec(i) => if p.avail[i as usize] > 0 { p.dec(i) },
                    Op::Remove(i) => p.remove(i),
                    Op::Insert(i) => p.insert(i),
                    Op::Request(i) => { p.on_request(i); req[i as usize] += 1; }
                    Op::Unrequest(i) => if req[i as usize] > 0 { p.on_unrequest(i); req[i as usize] -= 1; },
                }
                p.check();
            }
            let all = Bitfield::full(40);
            let c = Candidate { has: &all, asked: &[] };
            if let Some(x) = p.pick(&c, &mut rng) {
                prop_assert!(p.is_wanted(x) && p.requested(x) == 0 && p.availability(x) >= 1);
                let min = p.order.iter().filter(|&&q| p.requested(q) == 0 && p.availability(q) >= 1)
                    .map(|&q| p.availability(q)).min();
                prop_assert_eq!(Some(p.availability(x)), min);
            }
            if let Some(x) = p.pick_from_origin(&c, false, &mut rng) {
                prop_assert_eq!(p.availability(x), 0);
            }
        }
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut rng = SmallRng::seed_from_u64(1);
        let have = Bitfield::new(64);
        let mut p = Picker::new(&have, &mut rng);
        for i in 0..64 {
            p.inc(i);
        }
        let all = Bitfield::full(64);
        let c = Candidate {
            has: &all,
            asked: &[],
        };
        let picks: std::collections::BTreeSet<u32> =
            (0..200).filter_map(|_| p.pick(&c, &mut rng)).collect();
        assert!(picks.len() > 30, "only {} distinct picks", picks.len());
        // A rarer piece always wins.
        for i in 0..64 {
            if i != 17 {
                p.inc(i);
            }
        }
        for _ in 0..50 {
            assert_eq!(p.pick(&c, &mut rng), Some(17));
        }
    }

    #[test]
    fn endgame_duplicates_least_requested_not_asked() {
        let mut rng = SmallRng::seed_from_u64(2);
        let have = Bitfield::new(4);
        let mut p = Picker::new(&have, &mut rng);
        for i in 0..4 {
            p.inc(i);
            p.on_request(i);
        }
        p.on_request(0);
        p.on_request(1);
        let all = Bitfield::full(4);
        let c = Candidate {
            has: &all,
            asked: &[2],
        };
        assert_eq!(p.pick(&c, &mut rng), None);
        assert_eq!(p.pick_duplicate(&c, 2), Some(3));
        let c2 = Candidate {
            has: &all,
            asked: &[2, 3],
        };
        assert_eq!(p.pick_duplicate(&c2, 2), None);
        assert!(p.pick_duplicate(&c2, 3).is_some());
    }
}
