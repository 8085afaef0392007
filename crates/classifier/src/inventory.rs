//! The connection inventory (spec FIG. 28): every flow this classifier
//! plumbed a route for, with its host endpoint, NAT source, creation time
//! and state, plus counts per service and per endpoint and an index from
//! the reply direction (host → NAT source or client) back to the flow.
//!
//! The inventory is the classifier's memory of routes: a mid-connection
//! miss of a known flow is answered from it, and its entries are what
//! finals and idle reports retire. It holds no policy: the
//! [`crate::Classifier`] decides when entries come and go, and frees NAT
//! ports with them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use switchyard_health::Endpoint;
use switchyard_wire::plumbing::{Delivery, Route};
use switchyard_wire::{FlowTuple, Protocol};

use crate::service::ServiceId;
use crate::timers::TimerQueue;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinalReason {
    /// A FIN was seen.
    Fin,
    /// An RST was seen.
    Rst,
}

/// Which end of a connection sent a packet: the client (client → VIP) or
/// the host (the reply direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client.
    Client,
    /// The host.
    Host,
}

/// Lifecycle of a connection's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Open.
    Active,
    /// A final packet was seen; the route is kept until `delete_at`.
    Closing {
        /// The first final packet's kind.
        reason: FinalReason,
        /// When the route is deleted.
        delete_at: Instant,
    },
}

/// One connection the classifier routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Its service.
    pub service: ServiceId,
    /// The route plumbed for it.
    pub route: Route,
    /// The host endpoint chosen.
    pub endpoint: Endpoint,
    /// When it was admitted.
    pub created: Instant,
    /// Open or closing.
    pub state: ConnectionState,
    /// Whether the forwarder is believed to hold the route (false after the
    /// driver reported a plumbing failure: packets take the slow path).
    pub plumbed: bool,
    /// Last time a `PlumbRoute` was emitted for it.
    pub last_plumb: Instant,
    /// Last miss of the flow (its activity while not plumbed).
    pub last_miss: Instant,
    /// Whether the client sent a FIN.
    pub client_fin: bool,
    /// Whether the host sent a FIN.
    pub host_fin: bool,
    pub(crate) timer_at: Option<Instant>,
}

impl Connection {
    /// The full-NAT source address and port, if any.
    pub fn nat_source(&self) -> Option<SocketAddr> {
        match self.route.delivery {
            Delivery::Nat { source } => Some(source),
            _ => None,
        }
    }

    /// Whether the route is lingering after a final packet.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, ConnectionState::Closing { .. })
    }
}

/// Reply-direction key of a route: (protocol, host endpoint, address the
/// host sees as its peer).
pub(crate) type ReplyKey = (Protocol, SocketAddr, SocketAddr);

fn norm(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port())
}

/// The reply key of `route` (what the forwarder's reply table is keyed by).
pub(crate) fn reply_key(route: &Route) -> ReplyKey {
    let peer = match route.delivery {
        Delivery::Nat { source } => source,
        _ => route.flow.client(),
    };
    (route.flow.protocol(), norm(route.target), norm(peer))
}

/// Connections by flow, with counts and the reply index.
#[derive(Debug, Default)]
pub struct Inventory {
    conns: HashMap<FlowTuple, Connection>,
    by_reply: HashMap<ReplyKey, FlowTuple>,
    per_service: HashMap<ServiceId, u64>,
    per_endpoint: HashMap<(ServiceId, SocketAddr), u64>,
    timers: TimerQueue<FlowTuple>,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection of `flow`.
    pub fn get(&self, flow: &FlowTuple) -> Option<&Connection> {
        self.conns.get(flow)
    }

    pub(crate) fn get_mut(&mut self, flow: &FlowTuple) -> Option<&mut Connection> {
        self.conns.get_mut(flow)
    }

    /// The flow whose replies travel from `host` to `peer` (the NAT source
    /// for full NAT, the client for half NAT): how a driver maps a final
    /// packet seen in the reply direction to its flow.
    pub fn flow_of_reply(
        &self,
        protocol: Protocol,
        host: SocketAddr,
        peer: SocketAddr,
    ) -> Option<FlowTuple> {
        self.by_reply
            .get(&(protocol, norm(host), norm(peer)))
            .copied()
    }

    /// Whether a connection other than `flow` already uses the reply key of
    /// `route`.
    pub(crate) fn reply_taken(&self, route: &Route) -> bool {
        self.by_reply
            .get(&reply_key(route))
            .is_some_and(|f| *f != route.flow)
    }

    /// Adds a connection; the caller has removed any previous one of the
    /// flow and checked [`Self::reply_taken`].
    pub(crate) fn insert(&mut self, conn: Connection) {
        let flow = conn.route.flow;
        debug_assert!(!self.conns.contains_key(&flow));
        self.by_reply.entry(reply_key(&conn.route)).or_insert(flow);
        *self.per_service.entry(conn.service).or_default() += 1;
        *self
            .per_endpoint
            .entry((conn.service, norm(conn.endpoint.endpoint)))
            .or_default() += 1;
        self.conns.insert(flow, conn);
    }

    /// Changes how `flow`'s packets are delivered (and so its reply key). False, and nothing
    /// changed, if the flow is unknown or another connection holds the new reply key.
    pub(crate) fn set_delivery(&mut self, flow: &FlowTuple, delivery: Delivery) -> bool {
        let Some(conn) = self.conns.get(flow) else {
            return false;
        };
        let mut route = conn.route;
        route.delivery = delivery;
        if self.reply_taken(&route) {
            return false;
        }
        let old = reply_key(&conn.route);
        if self.by_reply.get(&old) == Some(flow) {
            self.by_reply.remove(&old);
        }
        self.by_reply.insert(reply_key(&route), *flow);
        if let Some(conn) = self.conns.get_mut(flow) {
            conn.route = route;
        }
        true
    }

    /// Removes the connection of `flow`.
    pub(crate) fn remove(&mut self, flow: &FlowTuple) -> Option<Connection> {
        let conn = self.conns.remove(flow)?;
        let rk = reply_key(&conn.route);
        if self.by_reply.get(&rk) == Some(flow) {
            self.by_reply.remove(&rk);
        }
        decrement(&mut self.per_service, conn.service);
        decrement(
            &mut self.per_endpoint,
            (conn.service, norm(conn.endpoint.endpoint)),
        );
        Some(conn)
    }

    /// Arms `flow`'s timer for `at` unless an earlier one is armed.
    pub(crate) fn schedule(&mut self, flow: FlowTuple, at: Instant) {
        if let Some(c) = self.conns.get_mut(&flow)
            && c.timer_at.is_none_or(|t| at < t)
        {
            c.timer_at = Some(at);
            self.timers.push(at, flow);
        }
    }

    /// The next flow whose armed timer is due at `now` (the timer is
    /// disarmed; the caller decides and re-arms).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<FlowTuple> {
        while let Some((at, flow)) = self.timers.pop_due(now) {
            if let Some(c) = self.conns.get_mut(&flow)
                && c.timer_at == Some(at)
            {
                c.timer_at = None;
                return Some(flow);
            }
        }
        None
    }

    /// When a timer is due next (possibly a cancelled one).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections of `service`.
    pub fn service_connections(&self, service: &ServiceId) -> u64 {
        self.per_service.get(service).copied().unwrap_or(0)
    }

    /// Connections of `service` on host endpoint `endpoint`.
    pub fn endpoint_connections(&self, service: &ServiceId, endpoint: SocketAddr) -> u64 {
        self.per_endpoint
            .get(&(*service, norm(endpoint)))
            .copied()
            .unwrap_or(0)
    }

    /// Every connection.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowTuple, &Connection)> + '_ {
        self.conns.iter()
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}
