//! Session lookups (spec FIG. 26: session reference first, then health and load): with a
//! session store attached ([`Settings::session_lookups`]), the first packet of every new
//! connection of a client-IP affinity service is *parked* while the driver asks the store
//! ([`Action::LookupSession`]); the store, not this unit's own affinity table, decides, so
//! every unit sends a client's connections to the same host (the store's local copies and
//! cache answer most lookups without a network round trip). The answer
//! ([`Classifier::on_session`]) admits it — to the session's host when that host is
//! allotted, else balanced (and the new choice recorded, [`Action::RecordSession`]). A
//! lookup that does not answer within [`Settings::session_lookup_timeout`] is balanced
//! without it, so a slow or absent store delays a SYN, never loses it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use switchyard_health::AllotmentSource;
use switchyard_wire::{FlowTuple, HostId};

use crate::decision::{Action, Classifier};
use crate::service::AffinitySpec;
use crate::{MissPacket, ServiceId, Settings};

/// At most this many first packets wait for the session store at once; beyond, new
/// connections are balanced at once (counted as timeouts).
pub const MAX_PARKED: usize = 4096;

/// What admission knows about the client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preferred {
    /// Nothing asked (no store, or not an affinity service).
    None,
    /// Asked: the store has no session (or did not answer).
    NoSession,
    /// Asked: the session is on this host.
    Session(HostId),
}

#[derive(Debug)]
struct Waiting {
    sid: ServiceId,
    miss: MissPacket,
    deadline: Instant,
}

/// First packets waiting for the session store, by query id.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    by_query: HashMap<u64, Waiting>,
    by_flow: HashMap<FlowTuple, u64>,
    deadlines: BTreeMap<(Instant, u64), ()>,
    next_query: u64,
}

impl Parked {
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    fn take(&mut self, query: u64) -> Option<Waiting> {
        let w = self.by_query.remove(&query)?;
        self.by_flow.remove(&w.miss.flow);
        self.deadlines.remove(&(w.deadline, query));
        Some(w)
    }

    fn len(&self) -> usize {
        self.by_query.len()
    }
}

impl Classifier {
    /// Parks `miss` (the first packet of a new connection of `sid`) for a session lookup
    /// when the store is attached and the service has client-IP affinity. True if parked
    /// (or a duplicate of a parked one): the caller stops there.
    pub(crate) fn park(&mut self, now: Instant, sid: ServiceId, miss: &MissPacket) -> bool {
        let settings: &Settings = self.settings();
        if !settings.session_lookups {
            return false;
        }
        let timeout = settings.session_lookup_timeout;
        let flow = miss.flow;
        if self.parked.by_flow.contains_key(&flow) {
            // A retransmitted first packet while the lookup runs: the parked one goes on.
            self.counters.repeated_first_packets += 1;
            return true;
        }
        let Some(AffinitySpec::ClientIp { .. }) = self.service_affinity(&sid) else {
            return false;
        };
        if self.parked.len() >= MAX_PARKED {
            self.counters.session_timeouts += 1;
            return false;
        }
        let Some(deadline) = now.checked_add(timeout) else {
            return false;
        };
        let query = self.parked.next_query;
        self.parked.next_query = self.parked.next_query.wrapping_add(1);
        self.parked.by_flow.insert(flow, query);
        self.parked.deadlines.insert((deadline, query), ());
        self.parked.by_query.insert(
            query,
            Waiting {
                sid,
                miss: miss.clone(),
                deadline,
            },
        );
        self.counters.session_lookups += 1;
        self.actions.push_back(Action::LookupSession {
            query,
            client: flow.client().ip(),
        });
        true
    }

    /// The session store's answer to [`Action::LookupSession`] `query`: the host holding
    /// the client's session, if any. Admits the parked connection (to that host when it is
    /// allotted). Unknown or late answers are ignored.
    pub fn on_session<S: AllotmentSource + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut S,
        query: u64,
        host: Option<HostId>,
    ) {
        let Some(w) = self.parked.take(query) else {
            return;
        };
        let preferred = match host {
            Some(h) => Preferred::Session(h),
            None => Preferred::NoSession,
        };
        self.admit_with(now, source, w.sid, w.miss, false, preferred);
    }

    /// Admits parked connections whose lookup did not answer within
    /// [`Settings::session_lookup_timeout`], balanced. Call it when
    /// [`Classifier::poll_timeout`] is due, next to [`Classifier::handle_timeout`].
    pub fn expire_session_lookups<S: AllotmentSource + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut S,
    ) {
        let due: Vec<u64> = self
            .parked
            .deadlines
            .keys()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, q)| *q)
            .collect();
        for query in due {
            if let Some(w) = self.parked.take(query) {
                self.counters.session_timeouts += 1;
                self.admit_with(now, source, w.sid, w.miss, false, Preferred::NoSession);
            }
        }
    }
}
