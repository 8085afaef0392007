//! A deadline queue for lazily cancelled timers: entries are never removed
//! early; the owner checks on expiry whether the entry is still the one it
//! expects (see `timer_at` in [`crate::inventory`] and
//! [`crate::affinity`]). Ordered by deadline, then insertion order, so
//! expiry is deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug)]
struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    // Reversed: `BinaryHeap` is a max-heap, the earliest deadline must win.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Deadlines with payloads, earliest first.
#[derive(Debug)]
pub(crate) struct TimerQueue<K> {
    heap: BinaryHeap<Entry<K>>,
    seq: u64,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K> TimerQueue<K> {
    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            key,
        });
    }

    /// The earliest deadline (possibly of a cancelled entry).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|e| (e.at, e.key))
    }
}
