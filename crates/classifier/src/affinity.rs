//! Client-IP session affinity: which host endpoint a client's new
//! connections to a service go to, and until when.
//!
//! A binding is made or refreshed by every admitted connection and
//! refreshed again when one of the client's connections ends, so a client
//! with a long connection keeps its host for `timeout` after that
//! connection. Whether the bound endpoint may still take connections is not
//! decided here: [`crate::Classifier`] checks it against the current
//! allotment and rebinds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use switchyard_health::Endpoint;

use crate::service::ServiceId;
use crate::timers::TimerQueue;

/// Key of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// The service.
    pub service: ServiceId,
    /// The client's address.
    pub client: IpAddr,
}

/// One client's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The host endpoint.
    pub endpoint: Endpoint,
    /// The binding is forgotten at this instant.
    pub expires: Instant,
    timer_at: Option<Instant>,
}

/// Client-IP bindings with expiry.
#[derive(Debug, Default)]
pub struct AffinityTable {
    bindings: HashMap<AffinityKey, Binding>,
    timers: TimerQueue<AffinityKey>,
}

impl AffinityTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live binding of `key` at `now`.
    pub fn get(&self, now: Instant, key: &AffinityKey) -> Option<Endpoint> {
        self.bindings
            .get(key)
            .filter(|b| now < b.expires)
            .map(|b| b.endpoint)
    }

    /// Binds `key` to `endpoint` until `now + timeout`.
    pub fn bind(&mut self, now: Instant, key: AffinityKey, endpoint: Endpoint, timeout: Duration) {
        let expires = now.checked_add(timeout).unwrap_or(now);
        let b = self.bindings.entry(key).or_insert(Binding {
            endpoint,
            expires,
            timer_at: None,
        });
        b.endpoint = endpoint;
        b.expires = expires;
        if b.timer_at.is_none() {
            b.timer_at = Some(expires);
            self.timers.push(expires, key);
        }
    }

    /// Extends a live binding of `key` to at least `now + timeout`.
    pub fn touch(&mut self, now: Instant, key: &AffinityKey, timeout: Duration) {
        if let Some(b) = self.bindings.get_mut(key)
            && now < b.expires
        {
            b.expires = b.expires.max(now.checked_add(timeout).unwrap_or(now));
        }
    }

    /// Forgets expired bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            let Some(b) = self.bindings.get_mut(&key) else {
                continue;
            };
            if b.timer_at != Some(at) {
                continue;
            }
            if b.expires <= now {
                self.bindings.remove(&key);
            } else {
                // Refreshed since: one entry per binding, re-armed lazily.
                b.timer_at = Some(b.expires);
                self.timers.push(b.expires, key);
            }
        }
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Number of bindings (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_wire::{HostId, Protocol};

    use super::*;

    #[test]
    fn bindings_expire_unless_refreshed() {
        let t0 = Instant::now();
        let mut t = AffinityTable::new();
        let key = AffinityKey {
            service: ServiceId::new(SocketAddr::from(([10, 0, 0, 1], 80)), Protocol::Tcp),
            client: IpAddr::from([192, 0, 2, 1]),
        };
        let e = Endpoint {
            endpoint: SocketAddr::from(([10, 1, 0, 1], 80)),
            host: HostId(1),
        };
        t.bind(t0, key, e, Duration::from_secs(10));
        assert_eq!(t.get(t0 + Duration::from_secs(9), &key), Some(e));
        t.touch(t0 + Duration::from_secs(9), &key, Duration::from_secs(10));
        t.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(t.len(), 1, "refreshed binding survives its first deadline");
        assert_eq!(t.get(t0 + Duration::from_secs(18), &key), Some(e));
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(19)));
        t.handle_timeout(t0 + Duration::from_secs(19));
        assert!(t.is_empty());
        assert_eq!(t.get(t0 + Duration::from_secs(19), &key), None);
    }
}
