//! The forwarder role: loads the data plane ([`switchyard_forwarder::Dataplane`]), attaches it
//! to the unit's `forwarder.interfaces`, adds every packet service's VIP, and runs the
//! forwarder agent around it:
//!
//! - reads the data plane's ring buffer (tokio `AsyncFd` on its descriptor) and hands each
//!   miss and final packet to the classifier — in-process over a bounded channel, or to the
//!   classifier unit as authenticated `Miss` / `FinalPacket` datagrams on its plumbing port;
//! - for a remote classifier keeps the missed frames of each flow for about a second
//!   (bounded: [`PENDING_FRAMES_PER_FLOW`] frames, [`PENDING_FLOWS`] flows) and reinjects them
//!   when the classifier's `AddRoute` for the flow arrives, so the first packet is delivered
//!   without a client retransmission;
//! - serves `AddRoute` / `DeleteRoute` from its classifier unit only (authenticated, sender id
//!   checked);
//! - scans the routing table for idle flows and reports them (local: to the classifier;
//!   remote: `FinalPacket` with reason `IdleTimeout`);
//! - keeps a mirror of the routes it installed (flow → route, reply key → flow) to map
//!   reply-direction final packets to their flow and to count flows per VIP and host;
//! - with a remote classifier, keeps the routes the table could not hold
//!   ([`crate::overflow::Overflow`]) and sends those flows' packets itself on the slow path
//!   (the classifier's unit cannot): client packets arrive as misses, the hosts' replies as
//!   reply misses at the classifier's NAT sources, which the data plane reports for this.
//!
//! [`ForwarderHandle`] is the synchronous API the in-process classifier and the admin API
//! use. Map operations are short syscalls under one mutex; the event loop never holds it
//! across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchyard_classifier::{FinalReason, MissPacket, PlumbFailure, Side};
use switchyard_config::{AttachPoint, ClassifierSettings, Config, Firewall, ServiceMode, Unit};
use switchyard_forwarder::{
    self as fwd, AttachMode, Counters, Dataplane, Event, EventReader, Hook, VipStats,
};
use switchyard_transport::{Throttle, UdpEndpoint};

use crate::overflow::Overflow;
use switchyard_wire::plumbing::{self, Ingress, Route};
use switchyard_wire::{Codec, FlowTuple, HostId, Message, Protocol, SenderId, UnitId};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::plumbing::{
    ClassifierInput, Origin, complete_transport_checksum, dataplane_flow, dataplane_route,
    flow_tuple, reply_key, transport,
};

/// How long missed frames wait for their route from a remote classifier.
pub const PENDING_FOR: Duration = Duration::from_secs(1);
/// Frames kept per flow while its route is pending (a SYN and its retransmissions).
pub const PENDING_FRAMES_PER_FLOW: usize = 4;
/// Flows whose frames are kept at once; misses beyond are still reported, not kept.
pub const PENDING_FLOWS: usize = 8192;
/// Ethernet header length (a `Miss` carries the packet from the IP header on).
const ETH_LEN: usize = 14;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the forwarder role did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwarderError {
    /// Loading, attaching or configuring the data plane failed.
    #[error("forwarder data plane: {0}")]
    Dataplane(#[from] fwd::Error),
    /// The plumbing socket could not be bound.
    #[error("cannot bind the route plumbing socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The event ring buffer cannot be registered with the runtime.
    #[error("cannot watch the forwarder's event ring buffer: {0}")]
    Events(std::io::Error),
}

/// Where the forwarder's misses go.
#[derive(Debug)]
pub enum ClassifierLink {
    /// The classifier role of this unit.
    Local(mpsc::Sender<ClassifierInput>),
    /// Another unit, by id and plumbing address.
    Remote {
        /// Its id (the only sender whose routes are accepted).
        unit: UnitId,
        /// Its plumbing address.
        addr: SocketAddr,
    },
}

/// Counters of the forwarder agent (user space; the data plane's own are in [`Counters`]).
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Misses read from the ring buffer.
    pub misses: AtomicU64,
    /// Misses whose frame was captured only in part (not reinjectable).
    pub truncated_misses: AtomicU64,
    /// Misses and finals not handed on (local channel full, send error).
    pub dropped_events: AtomicU64,
    /// Final packets reported.
    pub finals: AtomicU64,
    /// Final packets (and reopening SYNs) of flows this forwarder did not plumb.
    pub finals_unknown: AtomicU64,
    /// SYNs on routed flows reported (the 4-tuple opened again).
    pub reopens: AtomicU64,
    /// Idle flows reported.
    pub idle_reported: AtomicU64,
    /// Routes installed.
    pub routes_added: AtomicU64,
    /// Routes deleted.
    pub routes_deleted: AtomicU64,
    /// Routes refused because the table was full.
    pub table_full: AtomicU64,
    /// Routes refused for another reason.
    pub route_errors: AtomicU64,
    /// Frames reinjected after plumbing.
    pub reinjected: AtomicU64,
    /// Reinjections that failed.
    pub reinject_errors: AtomicU64,
    /// Pending frames that expired before their route came.
    pub pending_expired: AtomicU64,
    /// Frames not kept because the pending buffer was full.
    pub pending_overflow: AtomicU64,
    /// Plumbing messages refused (wrong sender, unexpected kind).
    pub plumbing_refused: AtomicU64,
    /// Packets to a NAT source without a route (replies of flows on the slow path).
    pub reply_misses: AtomicU64,
    /// Frames sent along a route the table could not hold (slow path).
    pub slow_path_sent: AtomicU64,
    /// Slow-path frames the data plane refused (not of the flow, TTL, neighbour, FIB) or
    /// that failed to run.
    pub slow_path_failed: AtomicU64,
    /// Routes of a remote classifier kept in memory because the table was full (now).
    pub overflow_routes: AtomicU64,
    /// Overflow routes installed later, when the table had room again.
    pub overflow_installed: AtomicU64,
    /// Reply misses that belong to no overflow route (dropped).
    pub reply_misses_unknown: AtomicU64,
    /// Half-NAT routes of a remote classifier refused for a full table: not kept (their
    /// replies could not be caught), the flows' packets dropped.
    pub overflow_half_nat_refused: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A VIP the data plane serves.
#[derive(Debug, Clone)]
pub struct VipInfo {
    /// Its id in the data plane (counter index).
    pub id: u16,
    /// The service's name.
    pub service: String,
    /// Address and port.
    pub vip: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
}

struct State {
    dp: Dataplane,
    routes: HashMap<FlowTuple, Installed>,
    replies: HashMap<(Protocol, SocketAddr, SocketAddr), FlowTuple>,
    /// The host of every endpoint a route was installed to (kept after its routes end, so
    /// the endpoint's metrics keep their `host` label).
    host_of: BTreeMap<SocketAddr, HostId>,
}

/// A route in the mirror, with when it was installed (CLOCK_MONOTONIC ns, the data plane's
/// clock): a flow younger than its idle timeout cannot be idle, so the idle scan skips it
/// without asking the data plane.
#[derive(Debug, Clone, Copy)]
struct Installed {
    route: Route,
    at_ns: u64,
}

/// Flows whose last activity is read from the data plane per lock hold: the scans release
/// the lock between batches so route installs and events interleave with them.
const SCAN_BATCH: usize = 512;

/// Overflow routes the agent tries to install again per idle scan.
const OVERFLOW_RETRIES: usize = 256;

struct Shared {
    state: Mutex<State>,
    counters: AgentCounters,
    vips: Vec<VipInfo>,
    interfaces: Vec<String>,
    attach: AttachPoint,
    max_flows: u32,
}

/// The forwarder's synchronous API (cloneable).
#[derive(Clone)]
pub struct ForwarderHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ForwarderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderHandle")
            .field("interfaces", &self.shared.interfaces)
            .field("vips", &self.shared.vips.len())
            .finish_non_exhaustive()
    }
}

/// One VIP's counters and flows.
#[derive(Debug, Clone)]
pub struct VipSnapshot {
    /// The VIP.
    pub info: VipInfo,
    /// Data-plane counters.
    pub stats: VipStats,
    /// Routes installed now.
    pub flows: u64,
}

/// Everything the admin API shows of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderSnapshot {
    /// Attached interfaces.
    pub interfaces: Vec<String>,
    /// Attach point.
    pub attach: AttachPoint,
    /// Routing table capacity.
    pub max_flows: u32,
    /// Data-plane counters per hook.
    pub xdp: Counters,
    /// tc program counters.
    pub tc: Counters,
    /// Per VIP.
    pub vips: Vec<VipSnapshot>,
    /// Routes per host endpoint.
    pub hosts: BTreeMap<SocketAddr, u64>,
    /// The host of every endpoint routes were installed to since the role started.
    pub host_of: BTreeMap<SocketAddr, HostId>,
    /// Packets and bytes per host endpoint, both directions, since the role started.
    pub host_stats: Vec<(SocketAddr, fwd::HostStats)>,
    /// Routes installed.
    pub flows: u64,
    /// Agent counters, by name.
    pub agent: Vec<(&'static str, u64)>,
}

/// One installed route, for `/v1/flows`.
#[derive(Debug, Clone)]
pub struct RouteView {
    /// The route.
    pub route: Route,
    /// Time since its last packet.
    pub idle: Duration,
}

impl ForwarderHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every operation is one
        // syscall or a mirror update after it), so keep going.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent's counters.
    pub fn counters(&self) -> &AgentCounters {
        &self.shared.counters
    }

    /// Installs `route` (replacing the flow's route).
    pub fn add_route(&self, route: &Route) -> Result<(), PlumbFailure> {
        let flow = dataplane_flow(&route.flow);
        let at_ns = fwd::monotonic_now_ns().unwrap_or(0);
        let mut state = self.lock();
        match state.dp.add_route(&flow, &dataplane_route(route)) {
            Ok(()) => {
                let installed = Installed {
                    route: *route,
                    at_ns,
                };
                state.host_of.insert(route.target, route.host);
                if let Some(old) = state.routes.insert(route.flow, installed) {
                    state.replies.remove(&reply_key(&old.route));
                }
                state.replies.insert(reply_key(route), route.flow);
                bump(&self.shared.counters.routes_added);
                Ok(())
            }
            Err(fwd::Error::TableFull { .. }) => {
                bump(&self.shared.counters.table_full);
                Err(PlumbFailure::TableFull)
            }
            Err(error) => {
                bump(&self.shared.counters.route_errors);
                tracing::warn!(flow = ?route.flow, %error, "route not installed");
                Err(PlumbFailure::Other)
            }
        }
    }

    /// Removes the flow's route (absent is fine).
    pub fn delete_route(&self, flow: &FlowTuple) {
        let mut state = self.lock();
        if let Err(error) = state.dp.delete_route(&dataplane_flow(flow)) {
            tracing::warn!(?flow, %error, "route not deleted");
        }
        if let Some(old) = state.routes.remove(flow) {
            let key = reply_key(&old.route);
            if state.replies.get(&key) == Some(flow) {
                state.replies.remove(&key);
            }
            bump(&self.shared.counters.routes_deleted);
        }
    }

    /// Sends a classified frame through the data plane again (its route is installed now).
    /// Completes the transport checksum first. Empty frames (not captured whole) are skipped.
    pub fn reinject(&self, mut frame: Vec<u8>, ifindex: u32) {
        if frame.is_empty() {
            return;
        }
        complete_transport_checksum(&mut frame);
        let state = self.lock();
        match state.dp.reinject(&frame, ifindex) {
            Ok(()) => bump(&self.shared.counters.reinjected),
            Err(error) => {
                bump(&self.shared.counters.reinject_errors);
                tracing::debug!(%error, ifindex, "reinjection failed");
            }
        }
    }

    /// The slow path: sends `frame` (either direction of `route.flow`) along `route` without
    /// installing it, for a flow the table could not hold. Completes the transport checksum
    /// first. True if the data plane sent it.
    pub fn deliver_with_route(&self, mut frame: Vec<u8>, ifindex: u32, route: &Route) -> bool {
        if frame.is_empty() {
            bump(&self.shared.counters.slow_path_failed);
            return false;
        }
        complete_transport_checksum(&mut frame);
        let flow = dataplane_flow(&route.flow);
        let result = {
            let mut state = self.lock();
            state
                .dp
                .deliver_with_route(&frame, ifindex, &flow, &dataplane_route(route))
        };
        match result {
            Ok(fwd::SlowOutcome::Sent) => {
                bump(&self.shared.counters.slow_path_sent);
                true
            }
            Ok(outcome) => {
                bump(&self.shared.counters.slow_path_failed);
                tracing::debug!(?flow, ?outcome, "slow path: frame not sent");
                false
            }
            Err(error) => {
                bump(&self.shared.counters.slow_path_failed);
                tracing::debug!(%error, ifindex, "slow path failed");
                false
            }
        }
    }

    /// The flow a packet seen in either direction belongs to, and which side sent it.
    fn flow_of(&self, w: &fwd::WireFlow) -> Option<(FlowTuple, Side)> {
        let state = self.lock();
        if let Some(flow) = flow_tuple(w)
            && state.routes.contains_key(&flow)
        {
            return Some((flow, Side::Client));
        }
        let key = (crate::plumbing::wire_protocol(w.proto), w.src, w.dst);
        state.replies.get(&key).map(|f| (*f, Side::Host))
    }

    /// Installed flows idle for at least their protocol's timeout, per protocol. Walks the
    /// mirror, not the BPF map: flows installed less than their timeout ago are skipped, the
    /// others' last activity is read from the data plane in batches of [`SCAN_BATCH`].
    fn idle_flows(&self, settings: &ClassifierSettings) -> Vec<(Duration, Vec<FlowTuple>)> {
        let timeout = |flow: &FlowTuple| match flow.protocol() {
            Protocol::Tcp => settings.tcp_idle_timeout,
            Protocol::Udp => settings.udp_idle_timeout,
        };
        let now = fwd::monotonic_now_ns().unwrap_or(0);
        let old_enough: Vec<FlowTuple> = self
            .lock()
            .routes
            .iter()
            .filter(|(flow, i)| Duration::from_nanos(now.saturating_sub(i.at_ns)) >= timeout(flow))
            .map(|(flow, _)| *flow)
            .collect();
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        // The data plane stamps a route's activity when it is installed, so `seen` is never
        // older than the install.
        for (flow, seen) in self.activity(&old_enough) {
            if Duration::from_nanos(now.saturating_sub(seen)) < timeout(&flow) {
                continue;
            }
            match flow.protocol() {
                Protocol::Tcp => tcp.push(flow),
                Protocol::Udp => udp.push(flow),
            }
        }
        vec![
            (settings.tcp_idle_timeout, tcp),
            (settings.udp_idle_timeout, udp),
        ]
    }

    /// The data plane's last-activity time (either direction; 0 = no packet yet) of each of
    /// `flows` that still has a route, read in batches of [`SCAN_BATCH`] per lock hold.
    fn activity(&self, flows: &[FlowTuple]) -> Vec<(FlowTuple, u64)> {
        let mut out = Vec::with_capacity(flows.len());
        for batch in flows.chunks(SCAN_BATCH) {
            let state = self.lock();
            for flow in batch {
                if !state.routes.contains_key(flow) {
                    continue;
                }
                match state.dp.route(&dataplane_flow(flow)) {
                    Ok(Some(info)) => out.push((*flow, info.last_seen_ns)),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "scan: cannot read a route's activity");
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Counters and flow counts.
    pub fn snapshot(&self) -> ForwarderSnapshot {
        let state = self.lock();
        let read = |hook| state.dp.counters(hook).unwrap_or_default();
        let (xdp, tc) = (read(Hook::Xdp), read(Hook::Tc));
        let mut per_vip: HashMap<SocketAddr, u64> = HashMap::new();
        let mut hosts: BTreeMap<SocketAddr, u64> = BTreeMap::new();
        for Installed { route, .. } in state.routes.values() {
            *per_vip.entry(route.flow.vip()).or_default() += 1;
            *hosts.entry(route.target).or_default() += 1;
        }
        let vips = self
            .shared
            .vips
            .iter()
            .map(|info| {
                let vip = fwd::Vip {
                    proto: crate::plumbing::dataplane_protocol(info.protocol),
                    addr: info.vip,
                };
                VipSnapshot {
                    info: info.clone(),
                    stats: state.dp.vip_stats(&vip).ok().flatten().unwrap_or_default(),
                    flows: per_vip.get(&info.vip).copied().unwrap_or(0),
                }
            })
            .collect();
        let c = &self.shared.counters;
        let agent = vec![
            ("misses", load(&c.misses)),
            ("truncated_misses", load(&c.truncated_misses)),
            ("dropped_events", load(&c.dropped_events)),
            ("finals", load(&c.finals)),
            ("finals_unknown", load(&c.finals_unknown)),
            ("idle_reported", load(&c.idle_reported)),
            ("routes_added", load(&c.routes_added)),
            ("routes_deleted", load(&c.routes_deleted)),
            ("table_full", load(&c.table_full)),
            ("route_errors", load(&c.route_errors)),
            ("reinjected", load(&c.reinjected)),
            ("reinject_errors", load(&c.reinject_errors)),
            ("pending_expired", load(&c.pending_expired)),
            ("pending_overflow", load(&c.pending_overflow)),
            ("plumbing_refused", load(&c.plumbing_refused)),
            ("reply_misses", load(&c.reply_misses)),
            ("slow_path_sent", load(&c.slow_path_sent)),
            ("slow_path_failed", load(&c.slow_path_failed)),
            ("reopens", load(&c.reopens)),
            ("overflow_routes", load(&c.overflow_routes)),
            ("overflow_installed", load(&c.overflow_installed)),
            ("reply_misses_unknown", load(&c.reply_misses_unknown)),
            (
                "overflow_half_nat_refused",
                load(&c.overflow_half_nat_refused),
            ),
        ];
        ForwarderSnapshot {
            interfaces: self.shared.interfaces.clone(),
            attach: self.shared.attach,
            max_flows: self.shared.max_flows,
            xdp,
            tc,
            vips,
            hosts,
            host_of: state.host_of.clone(),
            host_stats: state.dp.host_stats().unwrap_or_default(),
            flows: state.routes.len() as u64,
            agent,
        }
    }

    /// The `n` most recently active routes (reads every route's activity: O(flows), in
    /// batches that release the lock).
    pub fn top_routes(&self, n: usize) -> Vec<RouteView> {
        let flows: Vec<FlowTuple> = self.lock().routes.keys().copied().collect();
        let mut active = self.activity(&flows);
        active.sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
        let now = fwd::monotonic_now_ns().unwrap_or(0);
        let state = self.lock();
        active
            .iter()
            .filter_map(|(flow, seen)| {
                let installed = state.routes.get(flow)?;
                Some(RouteView {
                    route: installed.route,
                    idle: Duration::from_nanos(now.saturating_sub(*seen)),
                })
            })
            .take(n)
            .collect()
    }
}

/// The ring buffer's descriptor for tokio.
struct Ring(EventReader);

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers the ring buffer with the runtime. tokio's safe constructor is deprecated for
/// lacking I/O safety (a registered descriptor closed behind the reactor's back); here the
/// `AsyncFd` owns the reader that owns the descriptor, and deregisters before dropping it, so
/// that cannot happen — and the replacement is `unsafe`, which this crate forbids.
#[expect(
    deprecated,
    reason = "sound here: the AsyncFd owns the descriptor; see above"
)]
fn register(ring: Ring) -> std::io::Result<AsyncFd<Ring>> {
    AsyncFd::with_interest(ring, tokio::io::Interest::READABLE)
}

/// The data plane's rules for a service's firewall; prefixes of the other address family
/// than the VIP's can never match its clients and are left out.
fn firewall_rules(fw: &Firewall, v4: bool) -> Result<fwd::FirewallRules, fwd::Error> {
    let prefixes = |list: &[switchyard_config::Prefix]| -> Result<Vec<fwd::Prefix>, fwd::Error> {
        list.iter()
            .filter(|p| p.addr.is_ipv4() == v4)
            .map(|p| fwd::Prefix::new(p.addr, p.len))
            .collect()
    };
    Ok(fwd::FirewallRules {
        allow: prefixes(&fw.allow)?,
        deny: prefixes(&fw.deny)?,
        new_conn_rate: fw
            .new_connections_per_second
            .map(|rate| (rate, fw.burst.unwrap_or(rate))),
    })
}

fn attach_mode(a: AttachPoint) -> AttachMode {
    match a {
        AttachPoint::Xdp => AttachMode::Xdp,
        AttachPoint::Tc => AttachMode::Tc,
        AttachPoint::XdpAndTc => AttachMode::XdpAndTc,
    }
}

/// Loads and attaches the data plane of `unit` and starts the forwarder agent. Needs root
/// (CAP_BPF, CAP_NET_ADMIN) and the unit's namespace (interfaces and reinjection resolve in
/// the calling thread's network namespace).
pub async fn start(
    config: &Config,
    unit: &Unit,
    link: ClassifierLink,
    codec: Codec,
    stop: watch::Receiver<bool>,
) -> Result<(ForwarderHandle, JoinHandle<()>), ForwarderError> {
    let settings = &unit.forwarder;
    let mut dp = Dataplane::load(fwd::Settings {
        max_routes: settings.max_flows,
        ..fwd::Settings::default()
    })?;
    let mut vips = Vec::new();
    for service in &config.services {
        let ServiceMode::Packet { .. } = service.mode else {
            continue;
        };
        let vip = fwd::Vip {
            proto: crate::plumbing::dataplane_protocol(service.protocol),
            addr: service.vip,
        };
        let id = dp.add_vip(vip)?;
        vips.push(VipInfo {
            id,
            service: service.name.clone(),
            vip: service.vip,
            protocol: service.protocol,
        });
        if let Some(fw) = config.firewall(service) {
            let rules = firewall_rules(fw, service.vip.is_ipv4())?;
            dp.set_firewall(&vip, &rules)?;
            tracing::info!(
                service = %service.name,
                allow = rules.allow.len(),
                deny = rules.deny.len(),
                rate = ?rules.new_conn_rate,
                "firewall installed"
            );
        }
    }
    // The NAT sources the classifier allocates from: the unit's own (all-in-one) or its
    // classifier unit's. Replies to them without a route (flows the table could not hold)
    // are reported, and sent along the reverse route on the slow path: by the classifier
    // (all-in-one) or by this agent (split; see `Overflow`).
    let nat_unit = match &link {
        ClassifierLink::Local(_) => Some(unit),
        ClassifierLink::Remote { unit: id, .. } => config.unit_by_id(*id),
    };
    if let Some(nat_unit) = nat_unit {
        let nat = &nat_unit.forwarder;
        for addr in &nat.nat_sources {
            dp.set_nat_source(*addr, nat.nat_ports.first, nat.nat_ports.last)?;
        }
    }
    for ifname in &settings.interfaces {
        dp.attach(ifname, attach_mode(settings.attach))?;
    }
    let events = register(Ring(dp.take_events()?)).map_err(ForwarderError::Events)?;
    let endpoint = match &link {
        ClassifierLink::Remote { .. } => {
            let addr = unit.plumbing_addr();
            let ep = UdpEndpoint::bind(addr, codec, SenderId::from(unit.id))
                .await
                .map_err(|source| ForwarderError::Bind { addr, source })?;
            Some(ep)
        }
        ClassifierLink::Local(_) => None,
    };
    let handle = ForwarderHandle {
        shared: Arc::new(Shared {
            state: Mutex::new(State {
                dp,
                routes: HashMap::new(),
                replies: HashMap::new(),
                host_of: BTreeMap::new(),
            }),
            counters: AgentCounters::default(),
            vips,
            interfaces: settings.interfaces.clone(),
            attach: settings.attach,
            max_flows: settings.max_flows,
        }),
    };
    let timeouts = *config.classifier_settings();
    let shortest = timeouts.tcp_idle_timeout.min(timeouts.udp_idle_timeout);
    let agent = Agent {
        handle: handle.clone(),
        link,
        endpoint,
        pending: HashMap::new(),
        overflow: Overflow::default(),
        timeouts,
        idle_every: (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(10)),
        throttle: Throttle::new(LOG_EVERY),
    };
    let task = tokio::spawn(agent.run(events, stop));
    Ok((handle, task))
}

struct Pending {
    since: Instant,
    frames: Vec<(Vec<u8>, u32)>,
}

struct Agent {
    handle: ForwarderHandle,
    link: ClassifierLink,
    endpoint: Option<UdpEndpoint>,
    pending: HashMap<FlowTuple, Pending>,
    overflow: Overflow,
    timeouts: ClassifierSettings,
    idle_every: Duration,
    throttle: Throttle,
}

async fn recv_from(
    endpoint: &mut Option<UdpEndpoint>,
) -> std::io::Result<switchyard_transport::Received> {
    match endpoint {
        Some(e) => e.recv().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    async fn run(mut self, mut events: AsyncFd<Ring>, mut stop: watch::Receiver<bool>) {
        let mut idle = tokio::time::interval(self.idle_every);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A safety net under the readiness notifications, and the pending buffer's clock.
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            let out = tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                ready = events.readable_mut() => match ready {
                    Ok(mut guard) => {
                        let out = self.drain(&mut guard.get_inner_mut().0);
                        guard.clear_ready();
                        out
                    }
                    Err(error) => {
                        tracing::error!(%error, "forwarder event ring buffer failed");
                        break;
                    }
                },
                _ = sweep.tick() => {
                    self.expire_pending();
                    self.drain(&mut events.get_mut().0)
                }
                _ = idle.tick() => self.idle_scan(),
                received = recv_from(&mut self.endpoint) => {
                    match received {
                        Ok(r) => self.on_plumbing(r),
                        Err(error) => {
                            tracing::warn!(%error, "route plumbing socket receive error");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            Vec::new()
                        }
                    }
                }
            };
            self.send(out).await;
        }
        tracing::debug!("forwarder agent stopped");
    }

    fn counters(&self) -> &AgentCounters {
        self.handle.counters()
    }

    fn give(&self, input: ClassifierInput) {
        if let ClassifierLink::Local(tx) = &self.link
            && tx.try_send(input).is_err()
        {
            bump(&self.counters().dropped_events);
        }
    }

    /// Handles every queued event; returns datagrams for a remote classifier.
    fn drain(&mut self, reader: &mut EventReader) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(event) = reader.try_next() {
            match event {
                Event::Miss(miss) => self.on_miss(miss, &mut out),
                Event::Final(f) => self.on_final(&f, &mut out),
                Event::ReplyMiss(miss) => self.on_reply_miss(miss, &mut out),
                Event::Reopen(f) => self.on_reopen(&f, &mut out),
            }
        }
        out
    }

    fn on_miss(&mut self, miss: fwd::Miss, out: &mut Vec<Message>) {
        bump(&self.counters().misses);
        let Some(flow) = flow_tuple(&miss.flow) else {
            return;
        };
        let whole = u32::try_from(miss.frame.len()).unwrap_or(u32::MAX) >= miss.len;
        if !whole {
            bump(&self.counters().truncated_misses);
        }
        let t = transport(flow.protocol(), miss.tcp_flags);
        match &self.link {
            ClassifierLink::Local(_) => self.give(ClassifierInput::Miss {
                origin: Origin::Local,
                packet: MissPacket {
                    flow,
                    transport: t,
                    ingress_ifindex: miss.ifindex,
                    frame: if whole { miss.frame } else { Vec::new() },
                },
            }),
            ClassifierLink::Remote { .. } => {
                if let Some(route) = self.overflow.forward(&flow, Instant::now()) {
                    self.overflow_packet(&flow, Side::Client, &route, miss, whole, out);
                    return;
                }
                let packet = miss.frame.get(ETH_LEN..).unwrap_or_default().to_vec();
                if whole {
                    self.keep(flow, miss.frame, miss.ifindex);
                }
                out.push(Message::Miss(plumbing::Miss {
                    ingress: Ingress {
                        ifindex: miss.ifindex,
                        queue: 0,
                    },
                    packet,
                }));
            }
        }
    }

    fn on_reply_miss(&mut self, miss: fwd::Miss, out: &mut Vec<Message>) {
        bump(&self.counters().reply_misses);
        let whole = u32::try_from(miss.frame.len()).unwrap_or(u32::MAX) >= miss.len;
        if !whole {
            bump(&self.counters().truncated_misses);
        }
        if let ClassifierLink::Remote { .. } = &self.link {
            let protocol = crate::plumbing::wire_protocol(miss.flow.proto);
            match self
                .overflow
                .reply(protocol, miss.flow.src, miss.flow.dst, Instant::now())
            {
                Some((flow, side, route)) => {
                    self.overflow_packet(&flow, side, &route, miss, whole, out);
                }
                None => bump(&self.counters().reply_misses_unknown),
            }
            return;
        }
        // The local classifier finds the flow and sends the frame on the slow path.
        self.give(ClassifierInput::ReplyMiss {
            wire: miss.flow,
            tcp_flags: miss.tcp_flags,
            ingress_ifindex: miss.ifindex,
            frame: if whole { miss.frame } else { Vec::new() },
        });
    }

    /// A packet of an overflow flow (either direction): sent along its route on the slow
    /// path; a FIN or RST is reported to the classifier, as the data plane reports none for
    /// flows without a route.
    fn overflow_packet(
        &mut self,
        flow: &FlowTuple,
        side: Side,
        route: &Route,
        miss: fwd::Miss,
        whole: bool,
        out: &mut Vec<Message>,
    ) {
        if whole {
            self.handle
                .deliver_with_route(miss.frame, miss.ifindex, route);
        } else {
            bump(&self.counters().slow_path_failed);
        }
        if flow.protocol() == Protocol::Tcp && miss.tcp_flags & 0x05 != 0 {
            let reason = if miss.tcp_flags & 0x04 != 0 {
                plumbing::FinalReason::Rst
            } else if side == Side::Host {
                plumbing::FinalReason::HostFin
            } else {
                plumbing::FinalReason::Fin
            };
            out.push(Message::FinalPacket(plumbing::FinalPacket {
                flow: *flow,
                reason,
            }));
        }
    }

    /// Overflow routes: forgets `flow`'s, updating the gauge.
    fn forget_overflow(&mut self, flow: &FlowTuple) {
        if self.overflow.remove(flow) {
            self.counters()
                .overflow_routes
                .store(self.overflow.len() as u64, Ordering::Relaxed);
        }
    }

    /// Tries to install up to [`OVERFLOW_RETRIES`] overflow routes (the table may have room
    /// again); installed ones leave the overflow.
    fn retry_overflow(&mut self) {
        for route in self.overflow.some_routes(OVERFLOW_RETRIES) {
            if self.handle.add_route(&route).is_ok() {
                bump(&self.counters().overflow_installed);
                self.forget_overflow(&route.flow);
            } else {
                break;
            }
        }
    }

    fn keep(&mut self, flow: FlowTuple, frame: Vec<u8>, ifindex: u32) {
        let full = self.pending.len() >= PENDING_FLOWS;
        match self.pending.get_mut(&flow) {
            Some(p) if p.frames.len() < PENDING_FRAMES_PER_FLOW => p.frames.push((frame, ifindex)),
            Some(_) => bump(&self.counters().pending_overflow),
            None if full => bump(&self.counters().pending_overflow),
            None => {
                self.pending.insert(
                    flow,
                    Pending {
                        since: Instant::now(),
                        frames: vec![(frame, ifindex)],
                    },
                );
            }
        }
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        let mut expired = 0u64;
        self.pending.retain(|_, p| {
            let keep = now.duration_since(p.since) < PENDING_FOR;
            if !keep {
                expired += p.frames.len() as u64;
            }
            keep
        });
        if before != self.pending.len() {
            self.counters()
                .pending_expired
                .fetch_add(expired, Ordering::Relaxed);
        }
    }

    /// A SYN on a routed flow: the client reuses the 4-tuple, so the classifier must keep
    /// the route past its linger.
    fn on_reopen(&mut self, f: &fwd::Final, out: &mut Vec<Message>) {
        bump(&self.counters().reopens);
        let Some((flow, Side::Client)) = self.handle.flow_of(&f.flow) else {
            bump(&self.counters().finals_unknown);
            return;
        };
        match &self.link {
            ClassifierLink::Local(_) => self.give(ClassifierInput::Reopen {
                origin: Origin::Local,
                flow,
            }),
            ClassifierLink::Remote { .. } => {
                out.push(Message::FinalPacket(plumbing::FinalPacket {
                    flow,
                    reason: plumbing::FinalReason::Reopened,
                }));
            }
        }
    }

    fn on_final(&mut self, f: &fwd::Final, out: &mut Vec<Message>) {
        bump(&self.counters().finals);
        let Some((flow, side)) = self.handle.flow_of(&f.flow) else {
            bump(&self.counters().finals_unknown);
            return;
        };
        let reason = if f.tcp_flags & 0x04 != 0 {
            FinalReason::Rst
        } else {
            FinalReason::Fin
        };
        match &self.link {
            ClassifierLink::Local(_) => self.give(ClassifierInput::Final {
                origin: Origin::Local,
                flow,
                reason,
                side,
            }),
            ClassifierLink::Remote { .. } => {
                out.push(Message::FinalPacket(plumbing::FinalPacket {
                    flow,
                    reason: match reason {
                        FinalReason::Rst => plumbing::FinalReason::Rst,
                        FinalReason::Fin if side == Side::Host => plumbing::FinalReason::HostFin,
                        FinalReason::Fin => plumbing::FinalReason::Fin,
                    },
                }))
            }
        }
    }

    fn idle_scan(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.overflow.is_empty() {
            let t = self.timeouts;
            let idle = self.overflow.idle(Instant::now(), |f| match f.protocol() {
                Protocol::Tcp => t.tcp_idle_timeout,
                Protocol::Udp => t.udp_idle_timeout,
            });
            self.counters()
                .idle_reported
                .fetch_add(idle.len() as u64, Ordering::Relaxed);
            out.extend(idle.into_iter().map(|flow| {
                Message::FinalPacket(plumbing::FinalPacket {
                    flow,
                    reason: plumbing::FinalReason::IdleTimeout,
                })
            }));
            self.retry_overflow();
        }
        for (idle_for, flows) in self.handle.idle_flows(&self.timeouts) {
            if flows.is_empty() {
                continue;
            }
            self.counters()
                .idle_reported
                .fetch_add(flows.len() as u64, Ordering::Relaxed);
            match &self.link {
                ClassifierLink::Local(_) => self.give(ClassifierInput::Idle {
                    origin: Origin::Local,
                    idle_for,
                    flows,
                }),
                ClassifierLink::Remote { .. } => {
                    out.extend(flows.into_iter().map(|flow| {
                        Message::FinalPacket(plumbing::FinalPacket {
                            flow,
                            reason: plumbing::FinalReason::IdleTimeout,
                        })
                    }));
                }
            }
        }
        out
    }

    /// A datagram from the classifier unit; returns the answers (refusals).
    fn on_plumbing(&mut self, received: switchyard_transport::Received) -> Vec<Message> {
        let mut out = Vec::new();
        let ClassifierLink::Remote { unit, .. } = &self.link else {
            return out;
        };
        let envelope = match received.result {
            Ok(e) => e,
            Err(error) => {
                if let Some(suppressed) = self.throttle.event(Instant::now()) {
                    tracing::warn!(from = %received.from, %error, suppressed, "route plumbing datagram rejected");
                }
                return out;
            }
        };
        if envelope.sender != SenderId::from(*unit) {
            bump(&self.counters().plumbing_refused);
            if let Some(suppressed) = self.throttle.event(Instant::now()) {
                tracing::warn!(from = %received.from, sender = %envelope.sender, classifier = %unit, suppressed, "route plumbing from a unit that is not this forwarder's classifier ignored");
            }
            return out;
        }
        match envelope.message {
            Message::AddRoute(add) => {
                for route in &add.routes {
                    let result = self.handle.add_route(route);
                    let pending = self.pending.remove(&route.flow);
                    match result {
                        Ok(()) => {
                            self.forget_overflow(&route.flow);
                            for (frame, ifindex) in pending.map(|p| p.frames).unwrap_or_default() {
                                self.handle.reinject(frame, ifindex);
                            }
                        }
                        Err(PlumbFailure::TableFull)
                            if matches!(route.delivery, plumbing::Delivery::HalfNat) =>
                        {
                            // The host would answer the client directly, and without a route
                            // that reply could not be caught and translated: refused, and
                            // the classifier told, so it can offer a full-NAT route instead;
                            // the flow's frames wait for it.
                            bump(&self.counters().overflow_half_nat_refused);
                            if let Some(p) = pending {
                                self.pending.insert(route.flow, p);
                            }
                            out.push(Message::RouteRefused(plumbing::RouteRefused {
                                flow: route.flow,
                                reason: plumbing::RefusalReason::TableFull,
                            }));
                        }
                        Err(PlumbFailure::TableFull) => {
                            // The classifier's unit cannot send this unit's frames: keep the
                            // route here and serve the flow on the slow path.
                            self.overflow.insert(*route, Instant::now());
                            self.counters()
                                .overflow_routes
                                .store(self.overflow.len() as u64, Ordering::Relaxed);
                            for (frame, ifindex) in pending.map(|p| p.frames).unwrap_or_default() {
                                self.handle.deliver_with_route(frame, ifindex, route);
                            }
                        }
                        Err(PlumbFailure::Other) => {}
                    }
                }
            }
            Message::DeleteRoute(del) => {
                for flow in &del.flows {
                    self.handle.delete_route(flow);
                    self.forget_overflow(flow);
                }
            }
            _ => bump(&self.counters().plumbing_refused),
        }
        out
    }

    async fn send(&mut self, out: Vec<Message>) {
        let (Some(endpoint), ClassifierLink::Remote { addr, .. }) = (&self.endpoint, &self.link)
        else {
            return;
        };
        for message in out {
            if let Err(error) = endpoint.send(*addr, &message).await {
                bump(&self.handle.counters().dropped_events);
                if let Some(suppressed) = self.throttle.event(Instant::now()) {
                    tracing::warn!(%error, suppressed, "cannot send to the classifier unit");
                }
            }
        }
    }
}
