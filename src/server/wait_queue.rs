//! The pool's FIFO of waiting requests, with O(1) removal from anywhere.
//!
//! A waiter whose client leaves must leave the queue, and under load the
//! queue can be thousands long: a `VecDeque` would find and remove it in
//! O(n) under the pool's lock. Here the entries live in a slab (a `Vec` of
//! slots with a free list) linked front to back by slot index, so pushing,
//! popping and removing by [`Key`] are all O(1), and memory is bounded by
//! the most waiters ever queued at once. A key carries its entry's stamp (a
//! number never reused), so a stale key (its entry served, its slot reused)
//! removes nothing.

/// Names one entry: its slot and its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    slot: usize,
    stamp: u64,
}

/// No slot: the end of a list.
const NONE: usize = usize::MAX;

enum Slot<T> {
    Taken {
        value: T,
        stamp: u64,
        prev: usize,
        next: usize,
    },
    Free {
        next_free: usize,
    },
}

/// A FIFO queue with O(1) push, pop and removal by key.
pub struct WaitQueue<T> {
    slots: Vec<Slot<T>>,
    front: usize,
    back: usize,
    free: usize,
    len: usize,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue {
            slots: Vec::new(),
            front: NONE,
            back: NONE,
            free: NONE,
            len: 0,
        }
    }
}

impl<T> WaitQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `value` last. `stamp` must never have been used before (the
    /// pool's ticket counter): it tells a live key from a stale one.
    pub fn push_back(&mut self, stamp: u64, value: T) -> Key {
        let taken = Slot::Taken {
            value,
            stamp,
            prev: self.back,
            next: NONE,
        };
        let slot = match self.free {
            NONE => {
                self.slots.push(taken);
                self.slots.len() - 1
            }
            slot => {
                if let Slot::Free { next_free } = self.slots[slot] {
                    self.free = next_free;
                }
                self.slots[slot] = taken;
                slot
            }
        };
        match self.back {
            NONE => self.front = slot,
            back => self.set_next(back, slot),
        }
        self.back = slot;
        self.len += 1;
        Key { slot, stamp }
    }

    pub fn front(&self) -> Option<&T> {
        self.value(self.front)
    }

    pub fn back(&self) -> Option<&T> {
        self.value(self.back)
    }

    pub fn pop_front(&mut self) -> Option<T> {
        match self.front {
            NONE => None,
            slot => Some(self.unlink(slot)),
        }
    }

    /// Removes the entry `key` names, if it is still queued.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        match self.slots.get(key.slot) {
            Some(Slot::Taken { stamp, .. }) if *stamp == key.stamp => Some(self.unlink(key.slot)),
            _ => None,
        }
    }

    /// Removes every entry for which `expired` holds, in queue order (O(n)).
    pub fn remove_where(&mut self, mut expired: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut slot = self.front;
        while slot != NONE {
            let (next, hit) = match &self.slots[slot] {
                Slot::Taken { value, next, .. } => (*next, expired(value)),
                Slot::Free { .. } => (NONE, false),
            };
            if hit {
                removed.push(self.unlink(slot));
            }
            slot = next;
        }
        removed
    }

    /// The entries, front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let mut slot = self.front;
        std::iter::from_fn(move || {
            let Slot::Taken { value, next, .. } = self.slots.get(slot)? else {
                return None;
            };
            slot = *next;
            Some(value)
        })
    }

    /// Drops every entry and the slab's memory.
    pub fn clear(&mut self) {
        *self = WaitQueue::default();
    }

    fn value(&self, slot: usize) -> Option<&T> {
        match self.slots.get(slot)? {
            Slot::Taken { value, .. } => Some(value),
            Slot::Free { .. } => None,
        }
    }

    fn set_next(&mut self, slot: usize, to: usize) {
        if let Slot::Taken { next, .. } = &mut self.slots[slot] {
            *next = to;
        }
    }

    fn set_prev(&mut self, slot: usize, to: usize) {
        if let Slot::Taken { prev, .. } = &mut self.slots[slot] {
            *prev = to;
        }
    }

    /// Takes a queued slot out of the list and onto the free list.
    fn unlink(&mut self, slot: usize) -> T {
        let freed = Slot::Free {
            next_free: self.free,
        };
        let Slot::Taken {
            value, prev, next, ..
        } = std::mem::replace(&mut self.slots[slot], freed)
        else {
            unreachable!("unlink is called on queued slots only");
        };
        self.free = slot;
        match prev {
            NONE => self.front = next,
            prev => self.set_next(prev, next),
        }
        match next {
            NONE => self.back = prev,
            next => self.set_prev(next, prev),
        }
        self.len -= 1;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn items(queue: &WaitQueue<u64>) -> Vec<u64> {
        queue.iter().copied().collect()
    }

    #[test]
    fn a_waiter_in_the_middle_leaves_and_the_order_and_count_stay_right() {
        let mut queue = WaitQueue::default();
        let keys: Vec<Key> = (0..5).map(|n| queue.push_back(n, n)).collect();
        assert_eq!(queue.remove(keys[2]), Some(2));
        assert_eq!(queue.len(), 4);
        assert_eq!(items(&queue), [0, 1, 3, 4]);
        assert_eq!(queue.remove(keys[2]), None, "removed twice");
        assert_eq!(queue.len(), 4);
        // The freed slot is reused; the stale key must not remove its new entry.
        let reused = queue.push_back(5, 5);
        assert_eq!(reused.slot, keys[2].slot);
        assert_eq!(
            queue.remove(keys[2]),
            None,
            "a stale key removed a new entry"
        );
        assert_eq!(items(&queue), [0, 1, 3, 4, 5]);
        assert_eq!(queue.pop_front(), Some(0));
        assert_eq!(queue.remove(keys[4]), Some(4));
        assert_eq!(queue.back(), Some(&5));
        assert_eq!(queue.remove(reused), Some(5));
        assert_eq!(queue.back(), Some(&3));
        assert_eq!(queue.front(), Some(&1));
        assert_eq!(queue.remove_where(|&n| n == 3), [3]);
        assert_eq!(queue.pop_front(), Some(1));
        assert!(queue.is_empty());
        assert_eq!((queue.front(), queue.back()), (None, None));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
        /// Remove the waiter at this index among those ever pushed.
        Remove(usize),
        RemoveOdd,
    }

    proptest! {
        /// Against a `VecDeque` model: the same entries, in the same order,
        /// and the same count after any sequence of operations.
        #[test]
        fn behaves_like_a_fifo_with_removal(ops in proptest::collection::vec(
            prop_oneof![
                4 => Just(Op::Push),
                2 => Just(Op::Pop),
                3 => (0usize..64).prop_map(Op::Remove),
                1 => Just(Op::RemoveOdd),
            ],
            0..200,
        )) {
            let mut queue = WaitQueue::default();
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut keys = Vec::new();
            for op in ops {
                match op {
                    Op::Push => {
                        let n = keys.len() as u64;
                        keys.push(queue.push_back(n, n));
                        model.push_back(n);
                    }
                    Op::Pop => prop_assert_eq!(queue.pop_front(), model.pop_front()),
                    Op::Remove(i) => {
                        let Some(&key) = keys.get(i) else { continue };
                        let n = i as u64;
                        let expected = model.iter().position(|&m| m == n).and_then(|p| model.remove(p));
                        prop_assert_eq!(queue.remove(key), expected);
                    }
                    Op::RemoveOdd => {
                        let expected: Vec<u64> = model.iter().copied().filter(|n| n % 2 == 1).collect();
                        model.retain(|n| n % 2 == 0);
                        prop_assert_eq!(queue.remove_where(|n| n % 2 == 1), expected);
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(items(&queue), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(queue.front(), model.front());
                prop_assert_eq!(queue.back(), model.back());
            }
        }
    }
}
