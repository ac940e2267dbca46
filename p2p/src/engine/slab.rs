//! Connections by id in a vector: O(1) lookup without hashing, and ids that never come back
//! to life (a generation in the high bits), so an event for a closed connection is ignored
//! rather than applied to a newer one in the same slot.

use std::fmt;

/// A connection's id, unique for the life of an engine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    fn new(slot: usize, generation: u32) -> Self {
        ConnId(((generation as u64) << 32) | slot as u64)
    }

    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The raw value, for logs and maps.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The index of the slot, dense from 0: a simulator can keep per-connection tables in
    /// vectors indexed by it.
    pub fn index(self) -> usize {
        self.slot()
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.slot(), self.generation())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> ConnId {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            let e = &mut self.entries[slot];
            e.generation = e.generation.wrapping_add(1);
            e.value = Some(value);
            return ConnId::new(slot, e.generation);
        }
        self.entries.push(Entry {
            generation: 0,
            value: Some(value),
        });
        ConnId::new(self.entries.len() - 1, 0)
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.entries
            .get(id.slot())
            .filter(|e| e.generation == id.generation())
            .and_then(|e| e.value.as_ref())
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.entries
            .get_mut(id.slot())
            .filter(|e| e.generation == id.generation())
            .and_then(|e| e.value.as_mut())
    }

    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let e = self
            .entries
            .get_mut(id.slot())
            .filter(|e| e.generation == id.generation())?;
        let v = e.value.take()?;
        self.free.push(id.slot());
        self.len -= 1;
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| ConnId::new(i, e.generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_miss() {
        let mut s = Slab::default();
        let a = s.insert(1);
        assert_eq!(s.remove(a), Some(1));
        let b = s.insert(2);
        assert_eq!(a.index(), b.index());
        assert_ne!(a, b);
        assert!(s.get(a).is_none());
        assert_eq!(s.get(b), Some(&2));
        assert_eq!(s.len(), 1);
        assert_eq!(s.ids().collect::<Vec<_>>(), vec![b]);
    }
}
