//! Replay protection: the sender-side [`Sequencer`] and the receiver-side
//! [`ReplayGuard`].
//!
//! Every frame carries the sender id and a sequence number. The guard keeps,
//! per sender, the newest sequence accepted and a bitmap of the
//! [`REPLAY_WINDOW`] sequences before it (as IPsec does, RFC 4303 §3.4.3),
//! so reordered datagrams within the window are accepted exactly once.
//! It is consulted only after a frame authenticated, so unauthenticated
//! input can never add senders or move windows. The number of senders is
//! bounded; memory is about 150 bytes per tracked sender.

use std::collections::HashMap;

use crate::error::WireError;
use crate::types::SenderId;

/// Sequences per sender remembered behind the newest one.
pub const REPLAY_WINDOW: u64 = 1024;
/// Default bound on tracked senders.
pub const DEFAULT_MAX_SENDERS: usize = 65_536;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Issues a sender's sequence numbers.
///
/// Daemons start at the current Unix time in nanoseconds, so a restarted
/// sender's sequences exceed those of its previous run and receivers keep
/// accepting it without persisted state. (The value is passed in: this
/// crate reads no clock.)
#[derive(Debug, Clone)]
pub struct Sequencer {
    next: u64,
}

impl Sequencer {
    /// A sequencer whose first number is `start`.
    pub fn new(start: u64) -> Self {
        Self { next: start }
    }

    /// The next sequence number. Saturates at `u64::MAX` (centuries away
    /// with nanosecond starts); receivers then reject repeats as replays,
    /// which fails closed.
    pub fn next_sequence(&mut self) -> u64 {
        let seq = self.next;
        self.next = self.next.saturating_add(1);
        seq
    }

    /// The number the next call will return.
    pub fn peek(&self) -> u64 {
        self.next
    }
}

/// Sliding window of one sender.
#[derive(Debug, Clone)]
struct Window {
    newest: u64,
    /// Bit `s % REPLAY_WINDOW` is set iff sequence `s` (within the window)
    /// was accepted.
    seen: [u64; WORDS],
}

impl Window {
    fn new(sequence: u64) -> Self {
        let mut window = Self {
            newest: sequence,
            seen: [0; WORDS],
        };
        window.set(sequence, true);
        window
    }

    fn slot(sequence: u64) -> (usize, u64) {
        let bit = sequence % REPLAY_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn is_set(&self, sequence: u64) -> bool {
        let (word, mask) = Self::slot(sequence);
        self.seen[word] & mask != 0
    }

    fn set(&mut self, sequence: u64, on: bool) {
        let (word, mask) = Self::slot(sequence);
        if on {
            self.seen[word] |= mask;
        } else {
            self.seen[word] &= !mask;
        }
    }

    fn check(&self, sender: SenderId, sequence: u64) -> Result<(), WireError> {
        if sequence > self.newest {
            return Ok(());
        }
        if self.newest - sequence >= REPLAY_WINDOW {
            return Err(WireError::Stale {
                sender,
                sequence,
                newest: self.newest,
            });
        }
        if self.is_set(sequence) {
            return Err(WireError::Replayed { sender, sequence });
        }
        Ok(())
    }

    /// Marks `sequence` seen; `check` must have passed.
    fn record(&mut self, sequence: u64) {
        if sequence > self.newest {
            let advance = sequence - self.newest;
            if advance >= REPLAY_WINDOW {
                self.seen = [0; WORDS];
            } else {
                // Slots of the sequences the window slides over are reused.
                for s in self.newest + 1..sequence {
                    self.set(s, false);
                }
            }
            self.newest = sequence;
        }
        self.set(sequence, true);
    }
}

/// Per-sender replay state of a receiver.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    windows: HashMap<SenderId, Window>,
    max_senders: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// A guard tracking at most `max_senders` senders.
    pub fn new(max_senders: usize) -> Self {
        Self {
            windows: HashMap::new(),
            max_senders,
        }
    }

    /// Whether `sequence` from `sender` would be accepted, without recording
    /// it.
    pub fn check(&self, sender: SenderId, sequence: u64) -> Result<(), WireError> {
        match self.windows.get(&sender) {
            Some(window) => window.check(sender, sequence),
            None if self.windows.len() >= self.max_senders => Err(WireError::TooManySenders {
                max: self.max_senders,
            }),
            None => Ok(()),
        }
    }

    /// Accepts `sequence` from `sender` once: records it, or reports why it
    /// is a replay, stale, or from one sender too many. Call only for
    /// authenticated frames.
    pub fn accept(&mut self, sender: SenderId, sequence: u64) -> Result<(), WireError> {
        self.check(sender, sequence)?;
        self.windows
            .entry(sender)
            .and_modify(|w| w.record(sequence))
            .or_insert_with(|| Window::new(sequence));
        Ok(())
    }

    /// Drops the state of `sender` (e.g. after its goodbye) to make room.
    /// Until it is seen again, old frames of that sender could be replayed
    /// once, so forget only senders that are gone. Returns whether the
    /// sender was tracked.
    pub fn forget(&mut self, sender: SenderId) -> bool {
        self.windows.remove(&sender).is_some()
    }

    /// The newest sequence accepted from `sender`.
    pub fn newest(&self, sender: SenderId) -> Option<u64> {
        self.windows.get(&sender).map(|w| w.newest)
    }

    /// Number of tracked senders.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The bound on tracked senders.
    pub fn max_senders(&self) -> usize {
        self.max_senders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SenderId = SenderId(1);

    #[test]
    fn window_slides() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.accept(A, 5000), Ok(()));
        // Out of order within the window: accepted once.
        assert_eq!(g.accept(A, 4000), Ok(()));
        assert_eq!(
            g.accept(A, 4000),
            Err(WireError::Replayed {
                sender: A,
                sequence: 4000
            })
        );
        // Exactly at the window edge.
        assert!(matches!(
            g.accept(A, 5000 - REPLAY_WINDOW),
            Err(WireError::Stale { .. })
        ));
        assert_eq!(g.accept(A, 5000 - REPLAY_WINDOW + 1), Ok(()));
        // Advance by less than the window: slots in between are cleared and
        // reusable, older ones are still remembered.
        assert_eq!(g.accept(A, 5500), Ok(()));
        assert_eq!(g.accept(A, 5400), Ok(()));
        assert!(matches!(g.accept(A, 5000), Err(WireError::Replayed { .. })));
        assert!(matches!(
            g.accept(A, 4000),
            Err(WireError::Stale { newest: 5500, .. })
        ));
        // Jump beyond the window: everything before is stale.
        assert_eq!(g.accept(A, 100_000), Ok(()));
        assert_eq!(g.accept(A, 100_000 - 1), Ok(()));
        assert!(matches!(g.accept(A, 5500), Err(WireError::Stale { .. })));
        assert_eq!(g.newest(A), Some(100_000));
    }

    #[test]
    fn slot_reuse_does_not_mask_new_sequences() {
        let mut g = ReplayGuard::default();
        g.accept(A, 1).unwrap_or_default();
        // 1 + REPLAY_WINDOW shares slot with 1; it must be accepted.
        assert_eq!(g.accept(A, 1 + REPLAY_WINDOW), Ok(()));
        assert!(matches!(g.accept(A, 1), Err(WireError::Stale { .. })));
        assert_eq!(g.accept(A, 2 + REPLAY_WINDOW), Ok(()));
    }

    #[test]
    fn sender_bound_and_forget() {
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.accept(SenderId(1), 1), Ok(()));
        assert_eq!(g.accept(SenderId(2), 1), Ok(()));
        assert_eq!(
            g.accept(SenderId(3), 1),
            Err(WireError::TooManySenders { max: 2 })
        );
        // Known senders keep working at the bound.
        assert_eq!(g.accept(SenderId(2), 2), Ok(()));
        assert!(g.forget(SenderId(1)));
        assert_eq!(g.accept(SenderId(3), 1), Ok(()));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn sequencer_counts_up_and_saturates() {
        let mut s = Sequencer::new(u64::MAX - 1);
        assert_eq!(s.next_sequence(), u64::MAX - 1);
        assert_eq!(s.next_sequence(), u64::MAX);
        assert_eq!(s.next_sequence(), u64::MAX);
    }
}
