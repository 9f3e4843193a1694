//! The candidate lists picks index into, changed one instance at a time.
//!
//! Picks need `list[i]` for a random or rotating `i`, lock-free, while the updater changes the
//! list under them. A [`Chunked`] list is a vector of copy-on-write chunks: a reader holds an
//! immutable version, and a change copies one or two chunks of 64 and the (N/64-long) table of
//! chunks: the only part of a change that grows with the service, a pointer per 64 instances
//! (BENCHMARKS.md: 0.05 ms per change at 100 instances, 0.29 ms at 50,000, median).
//!
//! [`Slots`] is the updater's side: the list plus where each instance sits in it. Removal
//! moves the last instance into the hole, so instances do not keep their positions; no policy
//! depends on them (a hash ring is rebuilt from the list).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const CHUNK: usize = 64;

/// An immutable-to-readers list of `T`, cheap to copy and to change by copying.
#[derive(Clone)]
pub(super) struct Chunked<T> {
    chunks: Arc<Vec<Arc<Vec<T>>>>,
    len: usize,
}

impl<T: Clone> Chunked<T> {
    pub(super) fn new() -> Self {
        Self {
            chunks: Arc::new(Vec::new()),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `index`th element; panics past the end, like a slice.
    pub(super) fn get(&self, index: usize) -> &T {
        assert!(index < self.len, "index {index} out of a list of {}", self.len);
        &self.chunks[index / CHUNK][index % CHUNK]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    fn push(&mut self, value: T) {
        let chunks = Arc::make_mut(&mut self.chunks);
        if self.len.is_multiple_of(CHUNK) {
            chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(chunks.last_mut().expect("a chunk was just ensured")).push(value);
        self.len += 1;
    }

    fn set(&mut self, index: usize, value: T) -> T {
        let chunk = &mut Arc::make_mut(&mut self.chunks)[index / CHUNK];
        std::mem::replace(&mut Arc::make_mut(chunk)[index % CHUNK], value)
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let chunks = Arc::make_mut(&mut self.chunks);
        let last = Arc::make_mut(chunks.last_mut().expect("a non-empty list has a chunk"));
        let value = last.pop();
        if last.is_empty() {
            chunks.pop();
        }
        self.len -= 1;
        value
    }
}

/// Something a [`Slots`] list holds: it names itself and says its weight.
pub(super) trait Slotted: Clone {
    fn key(&self) -> &Arc<str>;
    fn weight(&self) -> u32;
}

/// A [`Chunked`] list with the position of each element by key, and the largest weight.
pub(super) struct Slots<T> {
    list: Chunked<T>,
    positions: HashMap<Arc<str>, usize>,
    /// How many elements have each weight, for the largest in O(log N).
    weights: BTreeMap<u32, usize>,
}

impl<T: Slotted> Slots<T> {
    pub(super) fn new() -> Self {
        Self {
            list: Chunked::new(),
            positions: HashMap::new(),
            weights: BTreeMap::new(),
        }
    }

    /// The current list, for readers.
    pub(super) fn list(&self) -> &Chunked<T> {
        &self.list
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn get(&self, key: &str) -> Option<&T> {
        self.positions.get(key).map(|&at| self.list.get(at))
    }

    pub(super) fn max_weight(&self) -> u32 {
        self.weights.keys().next_back().copied().unwrap_or(0)
    }

    /// Puts `value` in (replacing one with the same key); returns the one replaced.
    pub(super) fn put(&mut self, value: T) -> Option<T> {
        *self.weights.entry(value.weight()).or_default() += 1;
        match self.positions.get(value.key()) {
            Some(&at) => {
                let old = self.list.set(at, value);
                self.forget_weight(old.weight());
                Some(old)
            }
            None => {
                self.positions.insert(Arc::clone(value.key()), self.list.len());
                self.list.push(value);
                None
            }
        }
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<T> {
        let at = self.positions.remove(key)?;
        let last = self.list.pop().expect("a listed key has an element");
        let removed = if at == self.list.len() {
            last
        } else {
            self.positions.insert(Arc::clone(last.key()), at);
            self.list.set(at, last)
        };
        self.forget_weight(removed.weight());
        Some(removed)
    }

    fn forget_weight(&mut self, weight: u32) {
        if let Some(count) = self.weights.get_mut(&weight) {
            *count -= 1;
            if *count == 0 {
                self.weights.remove(&weight);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Item(Arc<str>, u32);

    impl Slotted for Item {
        fn key(&self) -> &Arc<str> {
            &self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
    }

    fn item(i: usize) -> Item {
        Item(format!("k{i}").into(), (i % 7) as u32)
    }

    #[test]
    fn slots_stay_consistent_through_puts_and_removes_and_readers_keep_their_version() {
        let mut slots = Slots::new();
        for i in 0..1000 {
            slots.put(item(i));
        }
        let before = slots.list().clone();
        for i in (0..1000).step_by(3) {
            assert_eq!(slots.remove(&format!("k{i}")), Some(item(i)));
        }
        slots.put(Item("k1".into(), 99));
        assert_eq!(slots.len(), 666);
        assert_eq!(slots.max_weight(), 99);
        for i in 0..1000 {
            let expected = match i {
                1 => Some(Item("k1".into(), 99)),
                _ if i % 3 == 0 => None,
                _ => Some(item(i)),
            };
            assert_eq!(slots.get(&format!("k{i}")).cloned(), expected, "k{i}");
        }
        let mut listed: Vec<_> = slots.list().iter().map(|i| i.0.to_string()).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), 666, "every element once");
        assert_eq!(before.len(), 1000, "a reader's version does not change");
        assert_eq!(before.iter().filter(|i| i.0.as_ref() == "k3").count(), 1);
        slots.remove("k1");
        assert_eq!(slots.max_weight(), 6);
    }
}
