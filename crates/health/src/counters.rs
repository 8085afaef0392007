//! Counters for visibility (`switchyard ctl hosts`, metrics): messages per
//! type, and the events operators care about (resyncs, age-outs, handshakes,
//! give-ups). Counters only ever grow; they never influence behaviour.

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

    /// Non-zero counts, in type-code order.
    pub fn iter(&self) -> impl Iterator<Item = (MessageKind, u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }
}

/// Counters of a [`crate::HostProtocol`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostCounters {
    /// Messages queued for sending, per type (one per destination unit).
    pub sent: MessageCounts,
    /// Messages handled, per type (including ignored ones).
    pub received: MessageCounts,
    /// Messages ignored (about another host, from an unknown unit, ...).
    pub ignored: u64,
    /// Snapshot requests answered.
    pub snapshots_served: u64,
    /// Row changes published (each to every unit).
    pub row_changes_published: u64,
    /// Rows units objected to in postulate answers (each objecting unit is
    /// sent a snapshot, at most one per postulate interval).
    pub rows_resent: u64,
    /// Postulate rounds sent.
    pub postulate_rounds: u64,
    /// Handshakes completed (directive current := target).
    pub handshakes_completed: u64,
    /// Units given up on during a handshake.
    pub units_given_up: u64,
    /// Times a handshake became blocked: no unit agreed and every unit was
    /// silent for `unit_give_up_after` (the host is likely cut off).
    pub handshakes_blocked: u64,
}

/// Counters of a [`crate::ConsolidatedCache`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheCounters {
    /// Messages handled, per type (including ignored ones).
    pub received: MessageCounts,
    /// Messages queued for sending, per type.
    pub sent: MessageCounts,
    /// Messages ignored (stale, forged sender, unknown host, ...).
    pub ignored: u64,
    /// Row changes dropped because they were not newer than the cache.
    pub stale_row_changes: u64,
    /// Snapshot requests sent (resyncs started).
    pub snapshots_requested: u64,
    /// Snapshots received completely and applied (resyncs done).
    pub snapshots_completed: u64,
    /// Incomplete snapshots dropped after the timeout.
    pub partial_snapshots_dropped: u64,
    /// Hosts aged out for lack of heartbeats.
    pub age_outs: u64,
    /// Hosts cleared by a goodbye.
    pub goodbyes: u64,
    /// Hosts whose generation went backwards for a whole dead interval
    /// (restart with a lower generation) and were resynchronised.
    pub generation_resets: u64,
    /// Answers to postulate rounds.
    pub postulate_replies: u64,
    /// Allotments computed.
    pub allotments: u64,
}
