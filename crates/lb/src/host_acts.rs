//! Operators' acts on hosts, relayed by the health-cache role: the admin API's
//! `POST /v1/hosts/{host}/drain|undrain|disable` and `PUT /v1/hosts/{host}/capacity`
//! become a [`DirectiveRequest`] to the host's agent, over the same authenticated
//! endpoint the health protocol uses. The agent carries it out as its local API would
//! and answers with a [`DirectiveReply`]; the directive itself then reaches every unit
//! through the postulate handshake, so the reply only says the host took the act.
//!
//! Datagrams may be lost: a request is sent up to [`ATTEMPTS`] times, [`RETRY_AFTER`]
//! apart (acts are idempotent), and the caller gets [`ActError::NoAnswer`] when none was
//! answered. [`PendingActs`] pairs replies with waiting requests by request id and host.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use switchyard_wire::HostId;
use switchyard_wire::health::DirectiveReply;
use tokio::sync::oneshot;

/// How many times a request is sent before giving up.
pub const ATTEMPTS: u32 = 4;
/// How long to wait for a reply before sending the request again.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Why an act did not reach a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActError {
    /// The configuration has no such host.
    #[error("the configuration has no {0}")]
    UnknownHost(HostId),
    /// The host has not been heard from, so its address is not known.
    #[error(
        "{0} has not been heard from: its agent's address is not known (is `switchyard agent` running there?)"
    )]
    NoAddress(HostId),
    /// No reply came.
    #[error(
        "{host} did not answer {attempts} requests (is its agent running and reachable on UDP?)"
    )]
    NoAnswer {
        /// The host.
        host: HostId,
        /// Requests sent.
        attempts: u32,
    },
    /// The health-cache role stopped.
    #[error("the health-cache role stopped")]
    Stopped,
}

/// Requests waiting for their reply.
#[derive(Debug, Default)]
pub(crate) struct PendingActs {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    waiting: HashMap<u32, (HostId, oneshot::Sender<DirectiveReply>)>,
}

impl PendingActs {
    /// A new request id for an act on `host`, and where its reply will arrive.
    pub(crate) fn register(&self, host: HostId) -> (u32, oneshot::Receiver<DirectiveReply>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next = inner.next.wrapping_add(1);
        let id = inner.next;
        let (tx, rx) = oneshot::channel();
        inner.waiting.insert(id, (host, tx));
        (id, rx)
    }

    /// Hands `reply`, sent by `from`, to its request. False when no request waits for it
    /// (answered already, given up, or from another host).
    pub(crate) fn complete(&self, from: HostId, reply: DirectiveReply) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.waiting.get(&reply.request) {
            Some((host, _)) if *host == from && reply.host == from => {}
            _ => return false,
        }
        match inner.waiting.remove(&reply.request) {
            Some((_, tx)) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Forgets request `id` (answered or given up).
    pub(crate) fn forget(&self, id: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.waiting.remove(&id);
    }

    /// Requests waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .len()
    }
}

#[cfg(test)]
mod tests {
    use switchyard_wire::health::ActOutcome;

    use super::*;

    fn reply(host: HostId, request: u32) -> DirectiveReply {
        DirectiveReply {
            host,
            request,
            outcome: ActOutcome::Applied,
            rows: 1,
        }
    }

    #[test]
    fn a_reply_reaches_its_request_once_and_only_from_its_host() {
        let pending = PendingActs::default();
        let (id, mut rx) = pending.register(HostId(7));
        assert!(
            !pending.complete(HostId(8), reply(HostId(8), id)),
            "another host's reply"
        );
        assert!(
            !pending.complete(HostId(8), reply(HostId(7), id)),
            "a reply naming the host, sent by another"
        );
        assert!(
            !pending.complete(HostId(7), reply(HostId(7), id + 1)),
            "another request"
        );
        assert!(rx.try_recv().is_err());
        assert!(pending.complete(HostId(7), reply(HostId(7), id)));
        assert_eq!(rx.try_recv().ok(), Some(reply(HostId(7), id)));
        assert!(
            !pending.complete(HostId(7), reply(HostId(7), id)),
            "a duplicate"
        );
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn forgotten_requests_take_no_reply() {
        let pending = PendingActs::default();
        let (a, _rx_a) = pending.register(HostId(1));
        let (b, _rx_b) = pending.register(HostId(1));
        assert_ne!(a, b);
        pending.forget(a);
        assert!(!pending.complete(HostId(1), reply(HostId(1), a)));
        assert_eq!(pending.len(), 1);
    }
}
