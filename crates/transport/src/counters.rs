//! Counters of one endpoint: messages and bytes sent and received, and rejections by reason.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use switchyard_wire::WireError;

/// Why an incoming datagram was rejected, coarse enough to be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// Not a switchyard frame, wrong version, unknown type, bad length or flags.
    Framing,
    /// The authentication tag did not verify (forged, corrupted, other cluster).
    BadTag,
    /// Authentic, but the payload does not decode.
    Malformed,
    /// Authentic, but already accepted (replayed or duplicated).
    Replayed,
    /// Authentic, but older than the sender's replay window.
    Stale,
    /// Authentic, but the receiver tracks too many senders already.
    TooManySenders,
}

impl RejectReason {
    /// Every reason, in a stable order.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Framing,
        RejectReason::BadTag,
        RejectReason::Malformed,
        RejectReason::Replayed,
        RejectReason::Stale,
        RejectReason::TooManySenders,
    ];

    /// Classifies a receive error.
    pub fn of(error: &WireError) -> Self {
        match error {
            WireError::BadTag => RejectReason::BadTag,
            WireError::Malformed(_) => RejectReason::Malformed,
            WireError::Replayed { .. } => RejectReason::Replayed,
            WireError::Stale { .. } => RejectReason::Stale,
            WireError::TooManySenders { .. } => RejectReason::TooManySenders,
            _ => RejectReason::Framing,
        }
    }

    /// The reason as a metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Framing => "framing",
            RejectReason::BadTag => "bad-tag",
            RejectReason::Malformed => "malformed",
            RejectReason::Replayed => "replayed",
            RejectReason::Stale => "stale",
            RejectReason::TooManySenders => "too-many-senders",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters of an endpoint; cheap to update from any task.
#[derive(Debug, Default)]
pub struct TransportCounters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// A copy of [`TransportCounters`] at one moment, for APIs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransportSnapshot {
    /// Messages sent.
    pub sent: u64,
    /// Bytes sent (whole frames).
    pub sent_bytes: u64,
    /// Messages that could not be sent (socket or encoding errors).
    pub send_errors: u64,
    /// Messages received and accepted.
    pub received: u64,
    /// Bytes of accepted messages.
    pub received_bytes: u64,
    /// Datagrams rejected, by reason label.
    pub rejected: Vec<(RejectReason, u64)>,
}

impl TransportSnapshot {
    /// All rejected datagrams, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// Rejections for one reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

impl TransportCounters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> TransportSnapshot {
        TransportSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, self.rejected[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}
