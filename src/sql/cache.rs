//! A bounded cache keyed by text (classifications by exact statement text,
//! or what is known of a shape), with CLOCK (second-chance) eviction: a hit sets the entry's reference bit, and
//! the hand clears bits until it finds an entry that was not used since its
//! last pass. Close to LRU for this load (a working set of prepared and
//! repeated statements), with O(1) hits that move nothing.

use std::collections::HashMap;

struct Slot<V> {
    key: Box<str>,
    value: V,
    referenced: bool,
}

pub(super) struct ClockCache<V> {
    index: HashMap<Box<str>, usize>,
    slots: Vec<Slot<V>>,
    hand: usize,
    capacity: usize,
}

impl<V: Clone> ClockCache<V> {
    pub fn new(capacity: usize) -> Self {
        ClockCache {
            index: HashMap::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            hand: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&mut self, key: &str) -> Option<V> {
        let &i = self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Replaces the value of a key the cache holds; nothing otherwise.
    pub fn replace(&mut self, key: &str, value: V) {
        if let Some(slot) = self.index.get(key).and_then(|&i| self.slots.get_mut(i)) {
            slot.value = value;
        }
    }

    /// Adds a key the cache does not hold (one it holds keeps its value).
    pub fn insert(&mut self, key: &str, value: V) {
        if self.capacity == 0 || self.index.contains_key(key) {
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(key.into(), self.slots.len());
            self.slots.push(Slot {
                key: key.into(),
                value,
                referenced: false,
            });
            return;
        }
        // Every pass clears the bits it crosses, so this ends within two
        // turns of the clock.
        loop {
            let hand = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            let Some(slot) = self.slots.get_mut(hand) else { return };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.index.remove(&slot.key);
            slot.key = key.into();
            slot.value = value;
            slot.referenced = false;
            self.index.insert(key.into(), hand);
            debug_assert_eq!(self.index.len(), self.slots.len());
            return;
        }
    }
}
