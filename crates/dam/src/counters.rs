//! [`DamCounters`]: what one unit's DAM portion holds (gauges) and what it
//! did (cumulative counts), for metrics and `ctl`. Counters never influence
//! behaviour.

use std::collections::BTreeMap;

use switchyard_wire::MessageKind;

/// A count per message type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageCounts(BTreeMap<MessageKind, u64>);

impl MessageCounts {
    pub(crate) fn add(&mut self, kind: MessageKind) {
        *self.0.entry(kind).or_default() += 1;
    }

    /// Messages of `kind`.
    pub fn get(&self, kind: MessageKind) -> u64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    /// All messages.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The count of every type counted so far.
    pub fn iter(&self) -> impl Iterator<Item = (MessageKind, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}

/// Gauges and counts of a [`crate::Dam`] (see [`crate::Dam::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamCounters {
    // Gauges.
    /// Atoms this unit owns (it is in their owner set), zombies included.
    pub atoms_owned: u64,
    /// Atoms held until their new owners acknowledge them (this unit added
    /// them, or stopped owning them), zombies included.
    pub atoms_handoff: u64,
    /// Cache entries.
    pub atoms_cached: u64,
    /// Zombies among all of the above.
    pub zombies: u64,
    /// Estimated memory of all entries, in bytes (see
    /// [`crate::table::footprint`]).
    pub memory_bytes: u64,
    /// Replication lag: pushes (atom, target unit) queued or awaiting an
    /// acknowledgement.
    pub pushes_pending: u64,
    /// Held atoms whose owners are still to be recomputed after a
    /// membership change.
    pub rebalance_pending: u64,
    /// Queries waiting for answers.
    pub queries_pending: u64,

    // Local calls.
    /// `add` calls.
    pub adds: u64,
    /// `delete` calls that turned a held or cached atom into a zombie.
    pub deletes: u64,
    /// `delete` calls for keys not held here (forwarded as `DeleteAtom`).
    pub deletes_forwarded: u64,
    /// Queries answered from an owned (or handed-off) copy.
    pub local_hits: u64,
    /// Queries answered from the cache.
    pub cache_hits: u64,
    /// Queries that had to ask other units.
    pub remote_queries: u64,
    /// Remote queries that found the atom.
    pub remote_found: u64,
    /// Remote queries nobody could answer (resolved as not found).
    pub misses: u64,

    // Protocol.
    /// Messages queued for sending, per type.
    pub sent: MessageCounts,
    /// Messages handled, per type (including ignored ones).
    pub received: MessageCounts,
    /// Messages ignored.
    pub ignored: u64,
    /// Incoming atoms that did not outrank the copy held (late, duplicated
    /// or reordered; never applied).
    pub stale_updates: u64,
    /// `QueryAtom`s answered for other units.
    pub queries_served: u64,
    /// Pushes (`AddAtom` to an owner) sent, first attempts and retries.
    pub pushes_sent: u64,
    /// Push retries after a missing acknowledgement.
    pub push_retries: u64,
    /// Pushes acknowledged.
    pub pushes_acked: u64,
    /// Pushes given up because the target left or no longer owns the key.
    pub pushes_dropped: u64,
    /// Atoms removed because they (or their cache entry) expired.
    pub expired: u64,
    /// Cache entries evicted for space.
    pub evicted: u64,
    /// Membership changes applied.
    pub membership_changes: u64,
}
