//! The membership library's [`Runtime`]: collects what it wants sent and
//! scheduled, with absolute deadlines, so [`super::HostGroup`] stays
//! sans-I/O.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::{Notification, OwnedNotification, Runtime, Timer};
use switchyard_wire::HostId;

use super::identity::MemberId;

/// Upper bound on queued notifications; older ones are dropped first (they
/// only feed events and logs, membership itself lives in the library).
const MAX_NOTIFICATIONS: usize = 256;

/// Outgoing gossip, timers and notifications of one group member.
#[derive(Debug)]
pub(crate) struct Io {
    /// The time of the call being served; timers are relative to it.
    pub(crate) now: Instant,
    /// Gossip addresses of the configured members (not this host).
    pub(crate) peers: BTreeMap<HostId, SocketAddr>,
    pub(crate) outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: BTreeMap<(Instant, u64), Timer<MemberId>>,
    next_timer_seq: u64,
    pub(crate) notifications: VecDeque<OwnedNotification<MemberId>>,
    /// Sends to hosts outside the configured group (dropped).
    pub(crate) unroutable: u64,
}

impl Io {
    pub(crate) fn new(now: Instant, peers: BTreeMap<HostId, SocketAddr>) -> Self {
        Self {
            now,
            peers,
            outbox: VecDeque::new(),
            timers: BTreeMap::new(),
            next_timer_seq: 0,
            notifications: VecDeque::new(),
            unroutable: 0,
        }
    }

    /// The earliest timer deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|&(at, _)| at)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer<MemberId>> {
        let entry = self.timers.first_entry()?;
        if entry.key().0 <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// Number of pending timers.
    pub(crate) fn pending_timers(&self) -> usize {
        self.timers.len()
    }
}

impl Runtime<MemberId> for Io {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        if self.notifications.len() >= MAX_NOTIFICATIONS {
            self.notifications.pop_front();
        }
        self.notifications.push_back(notification.to_owned());
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        // Gossip goes to configured addresses only: an identity cannot
        // redirect traffic elsewhere.
        match self.peers.get(&to.host()) {
            Some(&addr) => self.outbox.push_back((addr, data.to_vec())),
            None => self.unroutable += 1,
        }
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: Duration) {
        // The library's delays are configuration values (a day at most), so
        // the addition cannot overflow in practice; if it did, firing early
        // only makes a probe or a clean-up run sooner.
        let at = self.now.checked_add(after).unwrap_or(self.now);
        let seq = self.next_timer_seq;
        self.next_timer_seq += 1;
        self.timers.insert((at, seq), event);
    }
}
