//! Placement by rendezvous (highest-random-weight) hashing.
//!
//! Each member scores each key with a hash of both; a key's owners are the members with the
//! highest scores, best first. Adding or removing one member moves only the keys it gains or
//! held, and every member gets close to an equal share without virtual nodes.

use sha2::Digest as _;

/// A set of members, each named by a stable id (an origin's advertised address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<T> {
    members: Vec<T>,
}

impl<T: AsRef<str>> Ring<T> {
    pub fn new(members: Vec<T>) -> Self {
        Ring { members }
    }

    pub fn members(&self) -> &[T] {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The first `r` owners of `key`, best first (fewer if the ring is smaller).
    pub fn owners(&self, key: &[u8], r: usize) -> Vec<&T> {
        let mut scored: Vec<(u64, &T)> = self
            .members
            .iter()
            .map(|m| (score(m.as_ref(), key), m))
            .collect();
        // Ties (vanishingly rare) fall back to the id so every node agrees on the order.
        scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
        scored.into_iter().take(r).map(|(_, m)| m).collect()
    }

    /// Every member, ordered by preference for `key`.
    pub fn ranked(&self, key: &[u8]) -> Vec<&T> {
        self.owners(key, self.members.len())
    }
}

fn score(member: &str, key: &[u8]) -> u64 {
    let mut h = sha2::Sha256::new();
    h.update((member.len() as u64).to_be_bytes());
    h.update(member.as_bytes());
    h.update(key);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("origin-{i}.shoal:9000")).collect()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                Digest::sha256_of(format!("blob {i}").as_bytes())
                    .to_string()
                    .into_bytes()
            })
            .collect()
    }

    #[test]
    fn owners_are_distinct_and_bounded() {
        let ring = Ring::new(members(5));
        let o = ring.owners(b"k", 3);
        assert_eq!(o.len(), 3);
        assert!(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
        assert_eq!(ring.owners(b"k", 9).len(), 5);
        assert_eq!(Ring::<String>::new(vec![]).owners(b"k", 3).len(), 0);
        // The same answer from a ring built in another order.
        let mut shuffled = members(5);
        shuffled.reverse();
        assert_eq!(Ring::new(shuffled).owners(b"k", 3), o);
    }

    #[test]
    fn each_member_gets_a_fair_share() {
        let keys = keys(10_000);
        for n in 3..=20 {
            let ring = Ring::new(members(n));
            let mut count: HashMap<&String, usize> = HashMap::new();
            for k in &keys {
                *count.entry(ring.owners(k, 1)[0]).or_default() += 1;
            }
            let fair = keys.len() as f64 / n as f64;
            for m in ring.members() {
                let c = count.get(m).copied().unwrap_or(0) as f64;
                assert!(
                    (c - fair).abs() <= 0.10 * fair,
                    "{n} members: {m} owns {c} keys, fair share {fair}"
                );
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let keys = keys(10_000);
        for n in [3, 7, 20] {
            let all = members(n);
            let ring = Ring::new(all.clone());
            let gone = &all[n / 2];
            let smaller = Ring::new(all.iter().filter(|m| *m != gone).cloned().collect());
            for k in &keys {
                let before = ring.owners(k, 3);
                let after = smaller.owners(k, 3);
                let kept: Vec<_> = before.iter().filter(|m| **m != gone).collect();
                // Survivors keep their place and order; only the departed member's slot is
                // filled, by the next in line.
                assert_eq!(after.iter().take(kept.len()).collect::<Vec<_>>(), kept);
                if !before.contains(&gone) {
                    assert_eq!(after, before);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_key_any_size(key in proptest::collection::vec(any::<u8>(), 0..100), n in 0usize..30, r in 0usize..5) {
            let ring = Ring::new(members(n));
            let o = ring.owners(&key, r);
            prop_assert_eq!(o.len(), r.min(n));
        }
    }
}
