//! What the classifier counts: every input that was acted on or dropped
//! has a counter, so an operator can tell misses, new connections,
//! rejections, mid-connection misses and retired routes apart. Gauges (NAT
//! ports in use, connections per service and endpoint) are read from the
//! machine itself ([`crate::Classifier::nat_ports_in_use`],
//! [`crate::Inventory`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::service::ServiceId;

/// Why a connection was not admitted (its first packet is dropped; the
/// client retries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// The allotment had no endpoint (no healthy, active host).
    pub no_healthy_host: u64,
    /// Every NAT port toward the chosen endpoint was in use.
    pub nat_ports_exhausted: u64,
    /// No NAT source address of the endpoint's address family.
    pub no_nat_source: u64,
    /// The allotted endpoint's address family differs from the VIP's.
    pub endpoint_family_mismatch: u64,
    /// Half NAT: another flow already reaches the endpoint from the same
    /// client address and port, so replies could not be told apart.
    pub reply_conflict: u64,
}

/// Inputs that were not understood and caused no action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Malformed {
    /// The flow's VIP and protocol are not a configured service.
    pub unknown_service: u64,
    /// The packet's transport does not match the flow's protocol.
    pub protocol_mismatch: u64,
    /// TCP flags that neither start nor continue a connection (e.g. SYN
    /// with FIN or RST).
    pub bad_tcp_flags: u64,
}

/// Mid-connection misses: a packet of a connection the forwarder has no
/// route for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MidConnection {
    /// Known to the inventory: route plumbed again, packet delivered.
    pub replumbed: u64,
    /// Route found through the route lookup (session store).
    pub from_lookup: u64,
    /// Late packets of a connection that ended (its route a zombie in the session store):
    /// sent to its old host on a route that lingers for the FIN linger.
    pub to_zombie: u64,
    /// Unknown: dropped ("mid-connection miss without route").
    pub dropped: u64,
}

/// Counters of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// New connections admitted.
    pub new_connections: u64,
    /// New connections rejected (any reason).
    pub rejected: u64,
    /// New connections per host endpoint.
    pub per_endpoint: HashMap<SocketAddr, u64>,
}

/// All counters of a classifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Misses received.
    pub misses: u64,
    /// New connections admitted (all services).
    pub new_connections: u64,
    /// New connections that went to their client's affinitized host.
    pub affinity_hits: u64,
    /// New connections of affinity services without a binding.
    pub affinity_misses: u64,
    /// Bindings whose host was no longer allotted: chosen afresh.
    pub affinity_reselections: u64,
    /// Allotment requests made.
    pub allotment_requests: u64,
    /// Allotment responses that could not be used (wrong scheme).
    pub allotment_errors: u64,
    /// Rejected new connections, by reason.
    pub rejected: Rejections,
    /// Dropped malformed inputs, by reason.
    pub malformed: Malformed,
    /// Mid-connection misses, by outcome.
    pub mid_connection: MidConnection,
    /// Retransmitted SYNs / repeated first datagrams of a known flow
    /// (route plumbed again, same host).
    pub repeated_first_packets: u64,
    /// SYNs on a flow whose route was lingering: route replaced.
    pub replaced_on_syn: u64,
    /// Routes deleted after a FIN/RST linger.
    pub routes_deleted_final: u64,
    /// Routes deleted because the flow was idle.
    pub routes_deleted_idle: u64,
    /// Idle flows reported by the forwarder that the inventory did not
    /// know (route deleted anyway).
    pub idle_unknown: u64,
    /// Final packets of flows the inventory did not know.
    pub final_unknown: u64,
    /// NAT port allocations that failed for lack of ports.
    pub nat_ports_exhausted: u64,
    /// Plumbing failures because the forwarder's table was full.
    pub table_full: u64,
    /// Plumbing failures for other reasons.
    pub plumb_errors: u64,
    /// Packets handed to the driver's slow path (flow not plumbed).
    pub slow_path_deliveries: u64,
    /// New half-NAT connections the forwarder's table could not hold, served with full NAT
    /// on the slow path instead (the service's overflow NAT sources).
    pub half_nat_overflow: u64,
    /// Lingering connections opened again by a SYN on their route (kept, back to open).
    pub reopened: u64,
    /// Session lookups asked of the session store (new connections parked).
    pub session_lookups: u64,
    /// New connections sent to the host of the client's session.
    pub session_hits: u64,
    /// Lookups that found no session, or one whose host is not allotted.
    pub session_misses: u64,
    /// Parked connections balanced without an answer (timeout or parking full).
    pub session_timeouts: u64,
    /// Per-service counters.
    pub services: HashMap<ServiceId, ServiceCounters>,
}
