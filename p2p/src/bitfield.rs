//! Which pieces of a blob a peer holds.
//!
//! On the wire a bitfield is `ceil(n / 8)` bytes, piece 0 in the high bit of the first byte
//! (BitTorrent's order, so packet dumps read the same way); the spare low bits of the last
//! byte must be zero, which makes every set of pieces have exactly one encoding.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    words: Vec<u64>,
    len: usize,
    ones: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield is {actual} bytes where {expected} pieces need {}", expected.div_ceil(8))]
    Length { expected: usize, actual: usize },
    #[error("bitfield sets bits past its last piece")]
    SpareBits,
}

impl Bitfield {
    /// No pieces out of `len`.
    pub fn new(len: usize) -> Self {
        Bitfield {
            words: vec![0; len.div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// All `len` pieces.
    pub fn full(len: usize) -> Self {
        let mut words = vec![u64::MAX; len.div_ceil(64)];
        if let Some(last) = words.last_mut()
            && !len.is_multiple_of(64)
        {
            *last = (1u64 << (len % 64)) - 1;
        }
        Bitfield {
            words,
            len,
            ones: len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> usize {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// The bits, 64 to a word, bit `i` at `1 << (i % 64)` of word `i / 64`; bits past the
    /// end are zero.
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn get(&self, index: usize) -> bool {
        index < self.len && self.words[index / 64] & (1 << (index % 64)) != 0
    }

    /// Sets bit `index`; returns whether it was newly set. Indexes past the end are ignored
    /// (callers check indexes from the wire before they get here).
    pub fn set(&mut self, index: usize) -> bool {
        if index >= self.len {
            return false;
        }
        let w = &mut self.words[index / 64];
        let bit = 1u64 << (index % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.ones += 1;
        true
    }

    /// The set bits in ascending order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len.div_ceil(8)];
        for i in self.ones() {
            out[i / 8] |= 0x80 >> (i % 8);
        }
        out
    }

    /// Decodes the wire encoding of a bitfield of `len` pieces.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Self, BitfieldError> {
        if bytes.len() != len.div_ceil(8) {
            return Err(BitfieldError::Length {
                expected: len,
                actual: bytes.len(),
            });
        }
        if !len.is_multiple_of(8)
            && let Some(&last) = bytes.last()
            && last & (0xff >> (len % 8)) != 0
        {
            return Err(BitfieldError::SpareBits);
        }
        let mut b = Bitfield::new(len);
        for (i, &byte) in bytes.iter().enumerate() {
            let mut byte = byte;
            while byte != 0 {
                let lead = byte.leading_zeros() as usize;
                b.set(i * 8 + lead);
                byte &= !(0x80 >> lead);
            }
        }
        Ok(b)
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_and_empty() {
        for len in [0, 1, 7, 8, 63, 64, 65, 1193] {
            let f = Bitfield::full(len);
            assert_eq!(f.count(), len);
            assert!(f.is_full());
            assert_eq!(f.ones().count(), len);
            assert_eq!(Bitfield::from_bytes(&f.to_bytes(), len).unwrap(), f);
            let e = Bitfield::new(len);
            assert_eq!(e.count(), 0);
            assert_eq!(e.is_full(), len == 0);
        }
    }

    #[test]
    fn wire_order_and_spare_bits() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.to_bytes(), vec![0x80, 0x40]);
        assert_eq!(
            Bitfield::from_bytes(&[0x80, 0x20], 10),
            Err(BitfieldError::SpareBits)
        );
        assert!(matches!(
            Bitfield::from_bytes(&[0x80], 10),
            Err(BitfieldError::Length { .. })
        ));
        assert!(!b.set(0));
        assert!(!b.set(10));
        assert!(!b.get(10));
    }

    proptest! {
        #[test]
        fn round_trip(len in 0usize..300, bits in proptest::collection::vec(any::<usize>(), 0..64)) {
            let mut b = Bitfield::new(len);
            let mut expect = std::collections::BTreeSet::new();
            for x in bits {
                if len > 0 {
                    b.set(x % len);
                    expect.insert(x % len);
                }
            }
            prop_assert_eq!(b.count(), expect.len());
            prop_assert_eq!(b.ones().collect::<Vec<_>>(), expect.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(Bitfield::from_bytes(&b.to_bytes(), len).unwrap(), b);
        }
    }
}
