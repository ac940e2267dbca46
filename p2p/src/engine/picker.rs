//! Rarest-first piece choice.
//!
//! The picker keeps, per piece, how many connected non-origin peers hold it, and as bit sets
//! which pieces are still wanted and which of those nobody has been asked for. A change of
//! availability (a have) is one counter; that is the operation a swarm does most, once per
//! piece per neighbour. A pick intersects the peer's bitfield with the unrequested set a
//! word at a time and takes the least available candidate, starting at a random place so
//! that equally rare pieces are chosen at random.
//!
//! Availability counts only non-origin peers: pieces that only origins hold have
//! availability 0, and those are what a connection to an origin is asked for, so origins
//! serve what nobody else can.

use rand::RngExt;
use rand::rngs::SmallRng;

use crate::bitfield::Bitfield;

#[derive(Debug, Clone)]
pub(crate) struct Picker {
    n: usize,
    /// Non-origin peers holding each piece (wanted or not).
    avail: Vec<u32>,
    /// Outstanding requests for each piece.
    requested: Vec<u8>,
    /// Pieces not held and not being written.
    wanted: Vec<u64>,
    /// Wanted pieces with no request outstanding.
    free: Vec<u64>,
    unrequested: usize,
}

/// What the picker needs to know about one connection.
pub(crate) struct Candidate<'a> {
    pub has: &'a Bitfield,
    /// Requests already out on this connection (endgame must not ask twice).
    pub asked: &'a [super::Req],
}

fn bit(p: u32) -> (usize, u64) {
    (p as usize / 64, 1u64 << (p % 64))
}

impl Picker {
    /// A picker wanting every piece not in `have`.
    pub fn new(have: &Bitfield) -> Self {
        let n = have.len();
        let mut wanted: Vec<u64> = have.words().iter().map(|w| !w).collect();
        if let Some(last) = wanted.last_mut()
            && !n.is_multiple_of(64)
        {
            *last &= (1u64 << (n % 64)) - 1;
        }
        let unrequested = wanted.iter().map(|w| w.count_ones() as usize).sum();
        Picker {
            n,
            avail: vec![0; n],
            requested: vec![0; n],
            free: wanted.clone(),
            wanted,
            unrequested,
        }
    }

    pub fn is_wanted(&self, p: u32) -> bool {
        let (w, b) = bit(p);
        self.wanted.get(w).is_some_and(|x| x & b != 0)
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

    /// One more non-origin peer holds `p`.
    pub fn inc(&mut self, p: u32) {
        self.avail[p as usize] += 1;
    }

    /// One fewer non-origin peer holds `p`.
    pub fn dec(&mut self, p: u32) {
        let a = &mut self.avail[p as usize];
        debug_assert!(*a > 0, "availability underflow");
        *a = a.saturating_sub(1);
    }

    /// `p` is no longer wanted (it arrived and is being written).
    pub fn remove(&mut self, p: u32) {
        if !self.is_wanted(p) {
            return;
        }
        let (w, b) = bit(p);
        self.wanted[w] &= !b;
        if self.free[w] & b != 0 {
            self.free[w] &= !b;
            self.unrequested -= 1;
        }
    }

    /// `p` is wanted again (its write failed).
    pub fn insert(&mut self, p: u32) {
        if self.is_wanted(p) || p as usize >= self.n {
            return;
        }
        let (w, b) = bit(p);
        self.wanted[w] |= b;
        if self.requested[p as usize] == 0 {
            self.free[w] |= b;
            self.unrequested += 1;
        }
    }

    pub fn on_request(&mut self, p: u32) {
        let (w, b) = bit(p);
        if self.free[w] & b != 0 {
            self.free[w] &= !b;
            self.unrequested -= 1;
        }
        let r = &mut self.requested[p as usize];
        *r = r.saturating_add(1);
    }

    pub fn on_unrequest(&mut self, p: u32) {
        let r = &mut self.requested[p as usize];
        debug_assert!(*r > 0, "request count underflow");
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 && self.is_wanted(p) {
            let (w, b) = bit(p);
            self.free[w] |= b;
            self.unrequested += 1;
        }
    }

    /// Streaming: the next `ahead` wanted pieces from `from` on, in order, requested or not.
    /// A reader at `from` needs them first; bounding them by count keeps the rest of the
    /// download rarest first.
    pub fn focus(&self, from: u32, ahead: usize) -> impl Iterator<Item = u32> + '_ {
        let first = from as usize / 64;
        // The pieces below `from` in its word.
        let skip = (1u64 << (from % 64)) - 1;
        self.wanted
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(w, &bits)| {
                let mut bits = if w == first { bits & !skip } else { bits };
                std::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    Some((w * 64) as u32 + b)
                })
            })
            .take(ahead)
    }

    /// Whether `p` is one of [`Picker::focus`]`(from, ahead)`, counted without walking them.
    pub fn in_focus(&self, p: u32, from: u32, ahead: usize) -> bool {
        if p < from || !self.is_wanted(p) {
            return false;
        }
        let (fw, pw) = (from as usize / 64, p as usize / 64);
        let below = |w: usize, upto: u32| self.wanted[w] & ((1u64 << upto) - 1);
        let mut before = 0usize;
        for w in fw..=pw {
            let mut bits = if w == pw {
                below(w, p % 64)
            } else {
                self.wanted[w]
            };
            if w == fw {
                bits &= !below(w, from % 64);
            }
            before += bits.count_ones() as usize;
            if before >= ahead {
                return false;
            }
        }
        true
    }

    /// The least available of `pool ∩ c.has` with availability at most `max`, equal ones
    /// broken at random; stops early at `floor`, the least possible.
    fn least(
        &self,
        pool: &[u64],
        c: &Candidate<'_>,
        floor: u32,
        max: u32,
        rng: &mut SmallRng,
    ) -> Option<u32> {
        let words = pool.len();
        if words == 0 {
            return None;
        }
        let has = c.has.words();
        let start = rng.random_range(0..words);
        let rot = rng.random_range(0..64u32);
        let mut best: Option<(u32, u32)> = None;
        for k in 0..words {
            let w = (start + k) % words;
            let mut cand = (pool[w] & has.get(w).copied().unwrap_or(0)).rotate_right(rot);
            while cand != 0 {
                let b = cand.trailing_zeros();
                cand &= cand - 1;
                let p = (w * 64) as u32 + (b + rot) % 64;
                let a = self.avail[p as usize];
                if a <= max && best.is_none_or(|(ba, _)| a < ba) {
                    best = Some((a, p));
                    if a <= floor {
                        return Some(p);
                    }
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// The piece to request from a non-origin peer: the rarest it holds.
    pub fn pick(&self, c: &Candidate<'_>, rng: &mut SmallRng) -> Option<u32> {
        if self.unrequested == 0 {
            return None;
        }
        self.least(&self.free, c, 1, u32::MAX, rng)
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
        let max = if fallback { u32::MAX } else { 0 };
        self.least(&self.free, c, 0, max, rng)
    }

    /// Endgame: a piece already requested elsewhere, fewer than `max_copies` times, that `c`
    /// holds and was not asked for; the least-requested first.
    pub fn pick_duplicate(&self, c: &Candidate<'_>, max_copies: u8) -> Option<u32> {
        let has = c.has.words();
        let mut best: Option<(u8, u32)> = None;
        for (w, &wanted) in self.wanted.iter().enumerate() {
            let mut cand = wanted & !self.free[w] & has.get(w).copied().unwrap_or(0);
            while cand != 0 {
                let p = (w * 64) as u32 + cand.trailing_zeros();
                cand &= cand - 1;
                let r = self.requested[p as usize];
                if r == 0 || r >= max_copies || c.asked.iter().any(|a| a.piece == p) {
                    continue;
                }
                if best.is_none_or(|(br, _)| r < br) {
                    best = Some((r, p));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    #[cfg(test)]
    pub fn check(&self) {
        let mut unreq = 0;
        for p in 0..self.n as u32 {
            let (w, b) = bit(p);
            let wanted = self.wanted[w] & b != 0;
            let free = self.free[w] & b != 0;
            assert_eq!(free, wanted && self.requested[p as usize] == 0, "piece {p}");
            unreq += free as usize;
        }
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
        /// Any sequence of changes keeps the sets and counts consistent, and a pick is always
        /// a rarest candidate of the right kind.
        #[test]
        fn invariants_hold(
            n in 1u32..150,
            ops in proptest::collection::vec(op(150), 0..400),
            held in proptest::collection::vec(any::<bool>(), 150),
            seed in any::<u64>(),
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut have = Bitfield::new(n as usize);
            have.set(0);
            let mut p = Picker::new(&have);
            let mut req = vec![0u8; n as usize];
            for o in ops {
                match o {
                    Op::Inc(i) if i < n => p.inc(i),
                    Op::Dec(i) if i < n && p.avail[i as usize] > 0 => p.dec(i),
                    Op::Remove(i) if i < n => p.remove(i),
                    Op::Insert(i) if i < n => p.insert(i),
                    Op::Request(i) if i < n => { p.on_request(i); req[i as usize] += 1; }
                    Op::Unrequest(i) if i < n && req[i as usize] > 0 => {
                        p.on_unrequest(i);
                        req[i as usize] -= 1;
                    }
                    _ => {}
                }
                p.check();
            }
            let mut peer = Bitfield::new(n as usize);
            for (i, _) in held.iter().enumerate().take(n as usize).filter(|(_, h)| **h) {
                peer.set(i);
            }
            let c = Candidate { has: &peer, asked: &[] };
            let eligible = |q: u32| p.is_wanted(q) && p.requested(q) == 0 && peer.get(q as usize);
            let rarest = (0..n).filter(|&q| eligible(q) && p.availability(q) >= 1)
                .map(|q| p.availability(q)).min();
            match p.pick(&c, &mut rng) {
                Some(x) => {
                    prop_assert!(eligible(x));
                    // Availability 0 cannot happen for a peer that holds the piece; the
                    // picker then treats it as rarest of all.
                    prop_assert!(p.availability(x) == 0 || Some(p.availability(x)) == rarest);
                }
                None => prop_assert!((0..n).all(|q| !eligible(q))),
            }
            match p.pick_from_origin(&c, false, &mut rng) {
                Some(x) => prop_assert!(eligible(x) && p.availability(x) == 0),
                None => prop_assert!((0..n).all(|q| !eligible(q) || p.availability(q) > 0)),
            }
        }
    }

    proptest! {
        /// `focus` is the first `ahead` wanted pieces from `from` on, and `in_focus` agrees
        /// with it, across word boundaries.
        #[test]
        fn focus_is_the_next_wanted_pieces(
            n in 1u32..300,
            held in proptest::collection::vec(any::<bool>(), 300),
            from in 0u32..310,
            ahead in 0usize..80,
        ) {
            let mut have = Bitfield::new(n as usize);
            for (i, _) in held.iter().enumerate().take(n as usize).filter(|(_, h)| **h) {
                have.set(i);
            }
            let p = Picker::new(&have);
            let expect: Vec<u32> = (from..n).filter(|&q| !have.get(q as usize)).take(ahead).collect();
            let got: Vec<u32> = p.focus(from, ahead).collect();
            prop_assert_eq!(&got, &expect);
            for q in 0..n {
                prop_assert_eq!(p.in_focus(q, from, ahead), expect.contains(&q), "piece {}", q);
            }
        }
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut rng = SmallRng::seed_from_u64(1);
        let have = Bitfield::new(200);
        let mut p = Picker::new(&have);
        for i in 0..200 {
            p.inc(i);
        }
        let all = Bitfield::full(200);
        let c = Candidate {
            has: &all,
            asked: &[],
        };
        let picks: std::collections::BTreeSet<u32> =
            (0..300).filter_map(|_| p.pick(&c, &mut rng)).collect();
        assert!(picks.len() > 100, "only {} distinct picks", picks.len());
        // A rarer piece always wins.
        for i in (0..200).filter(|&i| i != 17) {
            p.inc(i);
        }
        for _ in 0..50 {
            assert_eq!(p.pick(&c, &mut rng), Some(17));
        }
    }

    #[test]
    fn endgame_duplicates_least_requested_not_asked() {
        let mut rng = SmallRng::seed_from_u64(2);
        let have = Bitfield::new(4);
        let mut p = Picker::new(&have);
        for i in 0..4 {
            p.inc(i);
            p.on_request(i);
        }
        p.on_request(0);
        p.on_request(1);
        let all = Bitfield::full(4);
        let now = std::time::Instant::now();
        let req = |piece| super::super::Req { piece, at: now };
        let c = Candidate {
            has: &all,
            asked: &[req(2)],
        };
        assert_eq!(p.pick(&c, &mut rng), None);
        assert_eq!(p.pick_duplicate(&c, 2), Some(3));
        let c2 = Candidate {
            has: &all,
            asked: &[req(2), req(3)],
        };
        assert_eq!(p.pick_duplicate(&c2, 2), None);
        assert!(p.pick_duplicate(&c2, 3).is_some());
    }
}
