//! The classifier's decision logic (spec FIGS. 26–30) as a sans-I/O state
//! machine: [`Classifier`] takes forwarder events with `now` — misses,
//! final packets, idle reports, plumbing failures — and answers with
//! [`Action`]s the driver executes: plumb a route, deliver a packet, delete
//! a route.
//!
//! On a miss that starts a connection (a TCP SYN, or a UDP datagram of an
//! unknown flow) it picks the host — client-IP affinity first, else a token
//! of the service's allotment — allocates a NAT port for full NAT, records
//! the connection in the [`Inventory`], plumbs the route and delivers the
//! first packet itself. A later miss of a known flow (route lost, forwarder
//! restarted, table full) is answered from the inventory; one of an unknown
//! flow goes to the [`RouteLookup`] seam (the distributed session table, a
//! later issue) and is otherwise dropped and counted. Final packets start a
//! short linger, idle reports delete at once; either way the NAT port is
//! freed with the route.
//!
//! This module reads no clock and touches no socket or map.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_health::{AllotmentSource, Endpoint, TokenAllotment};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentScheme};
use switchyard_wire::plumbing::{Delivery, Route};
use switchyard_wire::{FlowTuple, Protocol};

use crate::affinity::{AffinityKey, AffinityTable};
use crate::counters::Counters;
use crate::error::ConfigError;
use crate::inventory::{Connection, ConnectionState, FinalReason, Inventory, Side};
use crate::nat_ports::{NatError, NatPorts};
use crate::service::{AffinitySpec, DeliverySpec, ServiceId, ServiceSpec, Settings};

/// TCP header flags of a missed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;

    /// Flags from the TCP header's flags byte (as the forwarder reports
    /// them).
    pub fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The flags byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// SYN set.
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }

    /// ACK set.
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }

    /// FIN set.
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }

    /// RST set.
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }
}

/// The transport header of a missed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment with these flags.
    Tcp(TcpFlags),
    /// A UDP datagram.
    Udp,
}

/// A packet the forwarder had no route for (the "default route" to the
/// classifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissPacket {
    /// Its flow (client → VIP).
    pub flow: FlowTuple,
    /// Its transport header.
    pub transport: Transport,
    /// The interface it arrived on (for reinjection).
    pub ingress_ifindex: u32,
    /// The frame as captured, handed back untouched in [`Deliver`].
    pub frame: Vec<u8>,
}

/// How the driver must send a packet the classifier delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryPath {
    /// The route was just plumbed (the preceding [`Action::PlumbRoute`]):
    /// reinject the frame into the forwarder, which now rewrites and sends
    /// it.
    Forwarder,
    /// The forwarder does not hold the route (its table was full): rewrite
    /// the packet per [`Deliver::route`] in the driver's slow path and send
    /// it. Reinjecting would only miss again.
    SlowPath,
}

/// A packet to deliver to its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The flow's route.
    pub route: Route,
    /// The frame, as received in the miss.
    pub frame: Vec<u8>,
    /// The interface it arrived on.
    pub ingress_ifindex: u32,
    /// How to send it.
    pub path: DeliveryPath,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Install (or replace) the route of `route.flow` in the forwarder. On
    /// failure call [`Classifier::on_plumb_failed`] before polling the next
    /// action.
    PlumbRoute(Route),
    /// Remove the flow's route from the forwarder (absent is fine).
    DeleteRoute(FlowTuple),
    /// Send a packet to its host.
    Deliver(Deliver),
    /// Look the client's session up in the session store and answer with
    /// [`Classifier::on_session`] (`query` echoed). The connection's first packet waits
    /// meanwhile (at most [`Settings::session_lookup_timeout`]).
    LookupSession {
        /// Echoed in the answer.
        query: u64,
        /// The client whose session (`SessionId::ClientIp`) is asked for.
        client: std::net::IpAddr,
    },
    /// Record (or refresh) the client's session: its new connections go to `host`, on
    /// every unit, for `ttl`.
    RecordSession {
        /// The client (`SessionId::ClientIp`).
        client: std::net::IpAddr,
        /// The host chosen.
        host: switchyard_wire::HostId,
        /// The service's affinity timeout.
        ttl: Duration,
    },
}

/// Why the forwarder did not take a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlumbFailure {
    /// Its routing table is full.
    TableFull,
    /// Any other error (forwarder unreachable, route refused).
    Other,
}

/// Where routes of flows this classifier did not plumb may be found (spec
/// FIG. 28: the DAM). Asked on a mid-connection miss of an unknown flow and
/// before admitting a UDP flow afresh.
///
/// Today's implementation is [`NoRouteLookup`]. A networked session store
/// will answer asynchronously; it will then become an action ("query") and
/// an input ("answer") of the machine, keeping this call as the local
/// cache's fast path.
pub trait RouteLookup: fmt::Debug {
    /// The route of `flow`, if known: live, or of a flow that ended recently.
    fn lookup(&mut self, now: Instant, flow: &FlowTuple) -> Option<FoundRoute>;
}

/// A route a [`RouteLookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundRoute {
    /// The route.
    pub route: Route,
    /// The flow ended (the route was deleted and is kept as a zombie): only its late
    /// packets still go to the old host (spec: the DAM's zombie state).
    pub ended: bool,
}

/// A [`RouteLookup`] that knows nothing (no session store yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRouteLookup;

impl RouteLookup for NoRouteLookup {
    fn lookup(&mut self, _now: Instant, _flow: &FlowTuple) -> Option<FoundRoute> {
        None
    }
}

#[derive(Debug)]
struct ServiceState {
    spec: ServiceSpec,
    allotment: Option<TokenAllotment>,
}

/// Why a route is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    Final,
    Idle,
}

/// What a miss is, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP SYN without ACK, or a UDP datagram.
    Start,
    /// Anything else of a connection.
    Continue,
}

fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The classifier state machine. See the crate documentation for how a
/// driver runs it.
#[derive(Debug)]
pub struct Classifier {
    settings: Settings,
    services: HashMap<ServiceId, ServiceState>,
    inventory: Inventory,
    affinity: AffinityTable,
    nat: NatPorts,
    pub(crate) counters: Counters,
    pub(crate) actions: VecDeque<Action>,
    lookup: Box<dyn RouteLookup>,
    next_request_id: u64,
    pub(crate) parked: crate::sessions::Parked,
}

impl Classifier {
    /// A classifier without services.
    pub fn new(settings: Settings) -> Result<Self, ConfigError> {
        settings.validate()?;
        Ok(Self {
            settings,
            services: HashMap::new(),
            inventory: Inventory::new(),
            affinity: AffinityTable::new(),
            nat: NatPorts::with_salt(settings.nat_port_salt),
            counters: Counters::default(),
            actions: VecDeque::new(),
            lookup: Box::new(NoRouteLookup),
            next_request_id: 1,
            parked: crate::sessions::Parked::default(),
        })
    }

    /// Uses `lookup` for flows the inventory does not know.
    pub fn set_route_lookup(&mut self, lookup: Box<dyn RouteLookup>) {
        self.lookup = lookup;
    }

    /// Adds or replaces a service. Its cached allotment is dropped.
    /// Fails if the spec is invalid or a NAT source address is already used
    /// by another service with a different port range.
    pub fn set_service(&mut self, spec: ServiceSpec) -> Result<(), ConfigError> {
        spec.validate()?;
        let id = spec.id();
        if let DeliverySpec::Nat(nat) = &spec.delivery {
            for other in self.services.values().filter(|s| s.spec.id() != id) {
                if let DeliverySpec::Nat(o) = &other.spec.delivery
                    && o.ports != nat.ports
                    && let Some(shared) = nat.sources.iter().find(|s| o.sources.contains(s))
                {
                    return Err(ConfigError::ConflictingPortRange {
                        source_addr: *shared,
                    });
                }
            }
        }
        self.services.insert(
            id,
            ServiceState {
                spec,
                allotment: None,
            },
        );
        Ok(())
    }

    /// Removes a service: new connections to it are refused (counted as
    /// unknown service); its existing connections keep their routes until
    /// they end or go idle.
    pub fn remove_service(&mut self, id: &ServiceId) -> Option<ServiceSpec> {
        self.services.remove(id).map(|s| s.spec)
    }

    /// The service `id`.
    pub fn service(&self, id: &ServiceId) -> Option<&ServiceSpec> {
        self.services.get(id).map(|s| &s.spec)
    }

    /// Drops every cached allotment, so the next new connection of each
    /// service asks afresh (call when a directive or health changed and
    /// waiting up to a token validity period is too slow).
    pub fn refresh_allotments(&mut self) {
        for s in self.services.values_mut() {
            s.allotment = None;
        }
    }

    /// Settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The affinity of service `sid`, if configured.
    pub(crate) fn service_affinity(&self, sid: &ServiceId) -> Option<AffinitySpec> {
        self.services.get(sid).map(|s| s.spec.affinity)
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The connection inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The affinity bindings.
    pub fn affinity(&self) -> &AffinityTable {
        &self.affinity
    }

    /// NAT ports in use (one per live full-NAT connection).
    pub fn nat_ports_in_use(&self) -> u64 {
        self.nat.in_use()
    }

    /// The idle timeout per protocol: ask the forwarder for flows idle this
    /// long and pass them to [`Self::on_idle`].
    pub fn idle_timeouts(&self) -> [(Protocol, Duration); 2] {
        [
            (Protocol::Tcp, self.settings.tcp_idle_timeout),
            (Protocol::Udp, self.settings.udp_idle_timeout),
        ]
    }

    /// The next action to execute.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] should run next. May be early (a
    /// cancelled timer); running it early is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.inventory.next_deadline(),
            self.affinity.poll_timeout(),
            self.parked.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Retires routes whose linger is over, expires unplumbed flows that
    /// went idle and forgets stale affinity bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.affinity.handle_timeout(now);
        while let Some(flow) = self.inventory.pop_due(now) {
            let Some(conn) = self.inventory.get(&flow) else {
                continue;
            };
            let (deadline, why) = self.deadline(conn);
            match deadline {
                Some(d) if d <= now => self.retire(now, flow, why),
                Some(d) => self.inventory.schedule(flow, d),
                None => {}
            }
        }
    }

    /// When `conn` must go, and why: a closing connection at its linger's
    /// end; an unplumbed one (which the forwarder cannot report idle) after
    /// the protocol's idle timeout since its last miss; else never by timer.
    fn deadline(&self, conn: &Connection) -> (Option<Instant>, Retire) {
        match conn.state {
            ConnectionState::Closing { delete_at, .. } => (Some(delete_at), Retire::Final),
            ConnectionState::Active if !conn.plumbed => (
                after(
                    conn.last_miss,
                    self.settings.idle_timeout(conn.route.flow.protocol()),
                ),
                Retire::Idle,
            ),
            ConnectionState::Active => (None, Retire::Idle),
        }
    }

    /// A packet without a route: admit a new connection, answer a known
    /// one, or drop and count.
    pub fn on_miss<S: AllotmentSource + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut S,
        miss: MissPacket,
    ) {
        self.counters.misses += 1;
        let flow = miss.flow;
        let kind = match (flow.protocol(), miss.transport) {
            (Protocol::Udp, Transport::Udp) => Kind::Start,
            (Protocol::Tcp, Transport::Tcp(f)) => {
                if f.syn() && (f.fin() || f.rst()) {
                    self.counters.malformed.bad_tcp_flags += 1;
                    return;
                }
                if f.syn() && !f.ack() {
                    Kind::Start
                } else {
                    Kind::Continue
                }
            }
            _ => {
                self.counters.malformed.protocol_mismatch += 1;
                return;
            }
        };
        let sid = ServiceId::new(flow.vip(), flow.protocol());

        if let Some(conn) = self.inventory.get(&flow) {
            let closing = conn.is_closing();
            match (kind, flow.protocol()) {
                (Kind::Start, Protocol::Tcp) if closing => {
                    // Port reuse: a new connection on a lingering flow.
                    if self.services.contains_key(&sid) {
                        if self.admit(now, source, sid, miss, true) {
                            self.counters.replaced_on_syn += 1;
                        }
                    } else {
                        self.counters.malformed.unknown_service += 1;
                    }
                }
                (Kind::Start, Protocol::Tcp) => {
                    // Retransmitted SYN: same host.
                    self.counters.repeated_first_packets += 1;
                    self.serve_known(now, miss);
                }
                _ => {
                    self.counters.mid_connection.replumbed += 1;
                    self.serve_known(now, miss);
                }
            }
            return;
        }

        if !self.services.contains_key(&sid) {
            self.counters.malformed.unknown_service += 1;
            return;
        }
        // A route found elsewhere must be the missed flow's. Adopted: whether the flow ended.
        let adopted = match self
            .lookup
            .lookup(now, &flow)
            .filter(|f| f.route.flow == flow)
        {
            // A late packet of a connection that ended: to its old host, on a route that
            // lingers like a closing one. (A new connection starts afresh.)
            Some(FoundRoute { route, ended: true }) if kind == Kind::Continue => {
                self.adopt_zombie(now, sid, route).then_some(true)
            }
            Some(FoundRoute {
                route,
                ended: false,
            }) => self
                .adopt_route(now, sid, route, ConnectionState::Active)
                .then_some(false),
            _ => None,
        };
        if let Some(ended) = adopted {
            if ended {
                self.counters.mid_connection.to_zombie += 1;
            } else {
                self.counters.mid_connection.from_lookup += 1;
            }
            self.serve_known(now, miss);
            return;
        }
        match kind {
            Kind::Start => {
                if self.park(now, sid, &miss) {
                    return;
                }
                self.admit(now, source, sid, miss, false);
            }
            Kind::Continue => {
                tracing::debug!(?flow, "mid-connection miss without route: dropped");
                self.counters.mid_connection.dropped += 1;
            }
        }
    }

    /// The forwarder saw a FIN or RST of `flow` (client → VIP; map
    /// reply-direction flows with [`Inventory::flow_of_reply`] first), sent
    /// by `side`. After an RST the route lingers ([`Settings::rst_linger`]),
    /// then is deleted. A FIN only half-closes the connection (the other
    /// side may keep sending for as long as it likes): the route lingers
    /// ([`Settings::fin_linger`]) once both sides have sent a FIN; a
    /// half-closed connection that goes quiet is retired as idle.
    pub fn on_final(&mut self, now: Instant, flow: &FlowTuple, reason: FinalReason, side: Side) {
        if self.inventory.get(flow).is_none() {
            self.counters.final_unknown += 1;
            return;
        }
        self.close(now, flow, reason, side);
    }

    /// The forwarder saw a SYN (no ACK) from the client on `flow`'s route: the client opens
    /// the same 4-tuple again — after an RST, or reusing its port while the route lingers —
    /// and the packet went to the same host along the route. A lingering connection goes back
    /// to open (its FINs forgotten), so the route is not deleted under the new connection.
    pub fn on_reopen(&mut self, _now: Instant, flow: &FlowTuple) {
        let Some(conn) = self.inventory.get_mut(flow) else {
            self.counters.final_unknown += 1;
            return;
        };
        conn.client_fin = false;
        conn.host_fin = false;
        if conn.is_closing() {
            conn.state = ConnectionState::Active;
            self.counters.reopened += 1;
        }
    }

    /// The forwarder reports `flows` without a packet for at least
    /// `idle_for`. Those whose protocol's idle timeout is at most `idle_for`
    /// lose their routes now (unknown ones too: nobody else will delete
    /// them); the others are ignored.
    pub fn on_idle(&mut self, now: Instant, idle_for: Duration, flows: &[FlowTuple]) {
        for flow in flows {
            if idle_for < self.settings.idle_timeout(flow.protocol()) {
                continue;
            }
            if self.inventory.get(flow).is_some() {
                self.retire(now, *flow, Retire::Idle);
            } else {
                self.counters.idle_unknown += 1;
                self.actions.push_back(Action::DeleteRoute(*flow));
            }
        }
    }

    /// The driver could not plumb `flow`'s route. The connection is still
    /// served: a queued [`Deliver`] of the flow switches to
    /// [`DeliveryPath::SlowPath`], as will the flow's later misses; plumbing
    /// is tried again on a miss after [`Settings::plumb_retry_interval`].
    pub fn on_plumb_failed(&mut self, _now: Instant, flow: &FlowTuple, failure: PlumbFailure) {
        tracing::debug!(?flow, ?failure, "route not plumbed: slow path");
        match failure {
            PlumbFailure::TableFull => self.counters.table_full += 1,
            PlumbFailure::Other => self.counters.plumb_errors += 1,
        }
        let Some(conn) = self.inventory.get_mut(flow) else {
            return;
        };
        conn.plumbed = false;
        let last_miss = conn.last_miss;
        let first_plumb = conn.last_plumb == conn.created;
        if failure == PlumbFailure::TableFull && first_plumb {
            self.overflow_half_nat(flow);
        }
        let route = self.inventory.get(flow).map(|c| c.route);
        for action in &mut self.actions {
            if let Action::Deliver(d) = action
                && d.route.flow == *flow
                && d.path == DeliveryPath::Forwarder
            {
                d.path = DeliveryPath::SlowPath;
                if let Some(route) = route {
                    d.route = route;
                }
                self.counters.slow_path_deliveries += 1;
            }
        }
        if let Some(at) = after(last_miss, self.settings.idle_timeout(flow.protocol())) {
            self.inventory.schedule(*flow, at);
        }
    }

    /// A new half-NAT connection whose route did not fit (its first packet not yet
    /// delivered): switch it to full NAT from the service's overflow sources, whose replies
    /// the forwarder reports to the slow path. The host sees the NAT source for this
    /// connection. Without overflow sources (or ports) it stays half NAT: its packets are
    /// dropped by the driver and counted.
    fn overflow_half_nat(&mut self, flow: &FlowTuple) {
        let Some(conn) = self.inventory.get(flow) else {
            return;
        };
        if !matches!(conn.route.delivery, Delivery::HalfNat) {
            return;
        }
        let Some(DeliverySpec::HalfNat {
            overflow: Some(nat),
        }) = self.services.get(&conn.service).map(|s| &s.spec.delivery)
        else {
            return;
        };
        let target = conn.route.target;
        let Ok(source) = self
            .nat
            .allocate(&nat.sources, nat.ports, target, flow.protocol())
        else {
            self.counters.nat_ports_exhausted += 1;
            return;
        };
        if self.inventory.set_delivery(flow, Delivery::Nat { source }) {
            self.counters.half_nat_overflow += 1;
        } else {
            self.nat.release(source, target, flow.protocol());
        }
    }

    /// Answers a miss of a flow in the inventory: plumb again (if the
    /// forwarder should have it, or a retry is due) and deliver.
    fn serve_known(&mut self, now: Instant, miss: MissPacket) {
        let flow = miss.flow;
        let retry = self.settings.plumb_retry_interval;
        let idle = self.settings.idle_timeout(flow.protocol());
        let Some(conn) = self.inventory.get_mut(&flow) else {
            return;
        };
        conn.last_miss = now;
        let replumb = conn.plumbed || after(conn.last_plumb, retry).is_none_or(|t| now >= t);
        let route = conn.route;
        let path = if replumb {
            // Optimistic: a failure is reported through on_plumb_failed.
            conn.plumbed = true;
            conn.last_plumb = now;
            self.actions.push_back(Action::PlumbRoute(route));
            DeliveryPath::Forwarder
        } else {
            self.counters.slow_path_deliveries += 1;
            if let Some(at) = after(now, idle) {
                self.inventory.schedule(flow, at);
            }
            DeliveryPath::SlowPath
        };
        self.actions.push_back(Action::Deliver(Deliver {
            route,
            frame: miss.frame,
            ingress_ifindex: miss.ingress_ifindex,
            path,
        }));
        // A FIN or RST that missed (route lost, or slow path) is a final
        // packet the forwarder will not report.
        if let Transport::Tcp(f) = miss.transport {
            if f.rst() {
                self.close(now, &flow, FinalReason::Rst, Side::Client);
            } else if f.fin() {
                self.close(now, &flow, FinalReason::Fin, Side::Client);
            }
        }
    }

    /// Starts or shortens the linger of `flow` (an RST, or a FIN of the
    /// second side), or records a half-close.
    fn close(&mut self, now: Instant, flow: &FlowTuple, reason: FinalReason, side: Side) {
        let linger = match reason {
            FinalReason::Fin => self.settings.fin_linger,
            FinalReason::Rst => self.settings.rst_linger,
        };
        let Some(conn) = self.inventory.get_mut(flow) else {
            return;
        };
        if reason == FinalReason::Fin {
            match side {
                Side::Client => conn.client_fin = true,
                Side::Host => conn.host_fin = true,
            }
            if !(conn.client_fin && conn.host_fin) {
                // Half-closed: the other side may still send.
                return;
            }
        }
        let Some(delete_at) = after(now, linger) else {
            return;
        };
        match &mut conn.state {
            ConnectionState::Active => {
                conn.state = ConnectionState::Closing { reason, delete_at };
            }
            ConnectionState::Closing {
                reason: r,
                delete_at: d,
            } => {
                if delete_at < *d {
                    *d = delete_at;
                    *r = reason;
                }
            }
        }
        self.inventory.schedule(*flow, delete_at);
    }

    /// Removes `flow` from the inventory, frees its NAT port and deletes
    /// its route.
    fn retire(&mut self, now: Instant, flow: FlowTuple, why: Retire) {
        let Some(conn) = self.inventory.remove(&flow) else {
            return;
        };
        if let Some(src) = conn.nat_source() {
            self.nat.release(src, conn.route.target, flow.protocol());
        }
        self.actions.push_back(Action::DeleteRoute(flow));
        match why {
            Retire::Final => self.counters.routes_deleted_final += 1,
            Retire::Idle => self.counters.routes_deleted_idle += 1,
        }
        if let Some(AffinitySpec::ClientIp { timeout }) =
            self.services.get(&conn.service).map(|s| s.spec.affinity)
        {
            let key = AffinityKey {
                service: conn.service,
                client: flow.client().ip(),
            };
            self.affinity.touch(now, &key, timeout);
        }
    }

    /// Adopts the zombie `route` (of a connection that ended) as a closing connection that
    /// lingers for the FIN linger; false if it cannot be used here.
    fn adopt_zombie(&mut self, now: Instant, sid: ServiceId, route: Route) -> bool {
        let flow = route.flow;
        let Some(delete_at) = after(now, self.settings.fin_linger) else {
            return false;
        };
        let state = ConnectionState::Closing {
            reason: FinalReason::Fin,
            delete_at,
        };
        if !self.adopt_route(now, sid, route, state) {
            return false;
        }
        self.inventory.schedule(flow, delete_at);
        true
    }

    /// Puts a route found elsewhere (for its own flow) into the inventory with `state`;
    /// false if it conflicts with what this classifier holds.
    fn adopt_route(
        &mut self,
        now: Instant,
        sid: ServiceId,
        route: Route,
        state: ConnectionState,
    ) -> bool {
        let flow = &route.flow;
        if self.inventory.reply_taken(&route) {
            return false;
        }
        if let Delivery::Nat { source } = route.delivery
            && let Some(ServiceState {
                spec:
                    ServiceSpec {
                        delivery: DeliverySpec::Nat(nat),
                        ..
                    },
                ..
            }) = self.services.get(&sid)
            && nat.sources.contains(&source.ip())
            && !self
                .nat
                .reserve(source, nat.ports, route.target, flow.protocol())
        {
            // Our port, already used by another route: never share it.
            return false;
        }
        self.inventory.insert(Connection {
            service: sid,
            route,
            endpoint: Endpoint {
                endpoint: route.target,
                host: route.host,
            },
            created: now,
            state,
            plumbed: true,
            last_plumb: now,
            last_miss: now,
            client_fin: false,
            host_fin: false,
            timer_at: None,
        });
        true
    }

    /// Admits a new connection for `miss` (replacing a lingering one of the
    /// same flow if `replacing`): choose the endpoint, build the route,
    /// record it, plumb it and deliver the packet. False if rejected (then
    /// nothing changed but counters and allotment tokens).
    ///
    /// An affinity hit spends no token: the allotment steers the balanced
    /// share of connections, and a client bound to a host would otherwise
    /// drain that host's tokens and push unbound clients elsewhere. The
    /// host's load report accounts for affinitized connections.
    fn admit<S: AllotmentSource + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut S,
        sid: ServiceId,
        miss: MissPacket,
        replacing: bool,
    ) -> bool {
        self.admit_with(
            now,
            source,
            sid,
            miss,
            replacing,
            crate::sessions::Preferred::None,
        )
    }

    /// [`Self::admit`], with the host the client's session names (if any).
    pub(crate) fn admit_with<S: AllotmentSource + ?Sized>(
        &mut self,
        now: Instant,
        source: &mut S,
        sid: ServiceId,
        miss: MissPacket,
        replacing: bool,
        preferred: crate::sessions::Preferred,
    ) -> bool {
        use crate::sessions::Preferred;
        let flow = miss.flow;
        let Self {
            settings,
            services,
            inventory,
            affinity,
            nat,
            counters,
            actions,
            next_request_id,
            ..
        } = self;
        let Some(svc) = services.get_mut(&sid) else {
            counters.malformed.unknown_service += 1;
            return false;
        };
        let affinity_key = AffinityKey {
            service: sid,
            client: flow.client().ip(),
        };
        let affinity_timeout = match svc.spec.affinity {
            AffinitySpec::ClientIp { timeout } => Some(timeout),
            AffinitySpec::None => None,
        };

        // (1) Affinity, if the bound endpoint is still allotted: the client's session in
        // the session store (when asked), else the local binding.
        let mut chosen = None;
        let mut local_hit = false;
        if let Preferred::Session(host) = preferred {
            if svc.allotment.as_ref().is_none_or(|a| a.is_expired(now)) {
                request_allotment(now, source, svc, settings, counters, next_request_id);
            }
            chosen = svc.allotment.as_ref().and_then(|a| {
                a.entries()
                    .iter()
                    .map(|(e, _)| *e)
                    .find(|e| e.host == host && e.endpoint.is_ipv4() == flow.vip().is_ipv4())
            });
            if chosen.is_some() {
                counters.session_hits += 1;
            } else {
                counters.session_misses += 1;
            }
        } else if matches!(preferred, Preferred::NoSession) {
            counters.session_misses += 1;
        } else if affinity_timeout.is_some() {
            match affinity.get(now, &affinity_key) {
                Some(bound) => {
                    if svc.allotment.as_ref().is_none_or(|a| a.is_expired(now)) {
                        request_allotment(now, source, svc, settings, counters, next_request_id);
                    }
                    let allotted = svc
                        .allotment
                        .as_ref()
                        .is_some_and(|a| a.entries().iter().any(|(e, _)| *e == bound));
                    if allotted {
                        counters.affinity_hits += 1;
                        chosen = Some(bound);
                        local_hit = true;
                    } else {
                        counters.affinity_reselections += 1;
                    }
                }
                None => counters.affinity_misses += 1,
            }
        }

        // (2) A token.
        let chosen = chosen.or_else(|| {
            if let Some(e) = svc.allotment.as_mut().and_then(|a| a.draw(now)) {
                return Some(e);
            }
            request_allotment(now, source, svc, settings, counters, next_request_id);
            svc.allotment.as_mut().and_then(|a| a.draw(now))
        });
        let service_counters = counters.services.entry(sid).or_default();
        let Some(endpoint) = chosen else {
            tracing::debug!(?flow, "new connection rejected: no healthy host allotted");
            counters.rejected.no_healthy_host += 1;
            service_counters.rejected += 1;
            return false;
        };
        if endpoint.endpoint.is_ipv4() != flow.vip().is_ipv4() {
            counters.rejected.endpoint_family_mismatch += 1;
            service_counters.rejected += 1;
            return false;
        }

        // (3) The route.
        let protocol = flow.protocol();
        let delivery = match &svc.spec.delivery {
            DeliverySpec::HalfNat { .. } => Delivery::HalfNat,
            DeliverySpec::Nat(n) => {
                match nat.allocate(&n.sources, n.ports, endpoint.endpoint, protocol) {
                    Ok(source) => Delivery::Nat { source },
                    Err(NatError::NoSource) => {
                        counters.rejected.no_nat_source += 1;
                        service_counters.rejected += 1;
                        return false;
                    }
                    Err(NatError::Exhausted) => {
                        counters.nat_ports_exhausted += 1;
                        counters.rejected.nat_ports_exhausted += 1;
                        service_counters.rejected += 1;
                        return false;
                    }
                }
            }
        };
        let route = Route {
            flow,
            host: endpoint.host,
            target: endpoint.endpoint,
            delivery,
            idle_timeout_ms: millis(settings.idle_timeout(protocol)),
        };
        if inventory.reply_taken(&route) {
            // Only half NAT can get here (NAT ports are unique per endpoint).
            if let Delivery::Nat { source } = delivery {
                nat.release(source, endpoint.endpoint, protocol);
            }
            counters.rejected.reply_conflict += 1;
            service_counters.rejected += 1;
            return false;
        }

        // Commit.
        if replacing && let Some(old) = inventory.remove(&flow) {
            // Delete first rather than rely on the PlumbRoute replacing
            // it: if plumbing fails (table full) the forwarder would keep
            // the old route — the old host, and a NAT port freed here.
            if let Some(src) = old.nat_source() {
                nat.release(src, old.route.target, protocol);
            }
            actions.push_back(Action::DeleteRoute(flow));
        }
        inventory.insert(Connection {
            service: sid,
            route,
            endpoint,
            created: now,
            state: ConnectionState::Active,
            plumbed: true,
            last_plumb: now,
            last_miss: now,
            client_fin: false,
            host_fin: false,
            timer_at: None,
        });
        let mut record = None;
        if let Some(timeout) = affinity_timeout {
            affinity.bind(now, affinity_key, endpoint, timeout);
            // Share a new choice through the session store (not one it or the local
            // binding already holds).
            if settings.session_lookups
                && !local_hit
                && !matches!(preferred, Preferred::Session(h) if h == endpoint.host)
            {
                record = Some(Action::RecordSession {
                    client: flow.client().ip(),
                    host: endpoint.host,
                    ttl: timeout,
                });
            }
        }
        counters.new_connections += 1;
        service_counters.new_connections += 1;
        *service_counters
            .per_endpoint
            .entry(endpoint.endpoint)
            .or_default() += 1;
        actions.push_back(Action::PlumbRoute(route));
        actions.push_back(Action::Deliver(Deliver {
            route,
            frame: miss.frame,
            ingress_ifindex: miss.ingress_ifindex,
            path: DeliveryPath::Forwarder,
        }));
        actions.extend(record);
        true
    }
}

/// Asks `source` for a fresh token allotment of `svc`.
fn request_allotment<S: AllotmentSource + ?Sized>(
    now: Instant,
    source: &mut S,
    svc: &mut ServiceState,
    settings: &Settings,
    counters: &mut Counters,
    next_request_id: &mut u64,
) {
    counters.allotment_requests += 1;
    let key = svc.spec.allotment_key();
    let request = AllotmentRequest {
        request_id: *next_request_id,
        vip: key.vip,
        protocol: key.protocol,
        info: key.info,
        scheme: AllotmentScheme::Tokens,
        wanted_tokens: settings.wanted_tokens,
    };
    *next_request_id += 1;
    let response = source.allot(&request, now);
    svc.allotment = match TokenAllotment::new(&response, now) {
        Ok(a) => Some(a),
        Err(_) => {
            counters.allotment_errors += 1;
            None
        }
    };
}

/// The address the host sees as a flow's source under `route`.
pub fn host_sees(route: &Route) -> SocketAddr {
    match route.delivery {
        Delivery::Nat { source } => source,
        _ => route.flow.client(),
    }
}
