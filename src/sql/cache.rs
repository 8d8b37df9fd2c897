//! A bounded cache of classifications keyed by exact statement text, with
//! CLOCK (second-chance) eviction: a hit sets the entry's reference bit, and
//! the hand clears bits until it finds an entry that was not used since its
//! last pass. Close to LRU for this load (a working set of prepared and
//! repeated statements), with O(1) hits that move nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::Classification;

struct Slot {
    key: Box<str>,
    value: Arc<Classification>,
    referenced: bool,
}

pub(super) struct ClockCache {
    index: HashMap<Box<str>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

impl ClockCache {
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

    pub fn get(&mut self, key: &str) -> Option<Arc<Classification>> {
        let &i = self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(Arc::clone(&slot.value))
    }

    pub fn insert(&mut self, key: &str, value: Arc<Classification>) {
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
