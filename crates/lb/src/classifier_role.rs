//! The classifier role: drives the sans-I/O [`Classifier`] with the forwarder's misses, final
//! packets and idle flows, and executes its actions.
//!
//! The machine is single-threaded and not `Send`, so it runs on its own thread with a
//! current-thread tokio runtime. Inputs arrive over a bounded channel (the unit's own
//! forwarder) and as `Miss` / `FinalPacket` datagrams on the unit's plumbing port (forwarder
//! units that name this unit as their `classifier`). Actions go back to the forwarder the
//! flow came from:
//!
//! | action | local forwarder | remote forwarder |
//! |---|---|---|
//! | `PlumbRoute` | `add_route`; on failure `on_plumb_failed` before the next action | `AddRoute` datagram |
//! | `Deliver` (forwarder path) | reinject the frame | nothing: the forwarder reinjects its pending frames on `AddRoute` |
//! | `Deliver` (slow path) | full NAT: `deliver_with_route` (`slow_path_delivered`); half NAT: dropped and counted (`slow_path_dropped`) | nothing: never asked for (the forwarder serves its overflow itself) |
//! | `DeleteRoute` | `delete_route` | `DeleteRoute` datagram |
//!
//! **Table full** (the forwarder refused a route): the machine keeps the connection in its
//! inventory, unplumbed, and asks for every later packet of the flow to be delivered on the
//! slow path. With the unit's own forwarder this driver sends each such frame along the route
//! with [`ForwarderHandle::deliver_with_route`] (the data plane's rewrite, one frame at a time,
//! nothing installed; serialised by this single thread and the forwarder's mutex). The host's
//! replies of a full-NAT flow go to the unit's NAT source, which the forwarder reports
//! ([`ClassifierInput::ReplyMiss`]) instead of passing to the stack: the driver finds the flow
//! with [`switchyard_classifier::Inventory::flow_of_reply`] and sends the reply along the same
//! route (reverse direction); a FIN or RST among them closes the flow as a final packet would.
//! Half NAT: the host's replies go to the client's address, which the forwarder cannot tell
//! from other traffic without a route, so a *new* half-NAT connection that finds the table
//! full is switched to full NAT from the unit's NAT sources (`half_nat_overflow`; the host
//! sees the NAT source for that connection). Without NAT sources, or for a half-NAT
//! connection that loses its route later, its packets are dropped and counted
//! (`slow_path_dropped`), never mis-forwarded. A remote forwarder serves the routes it cannot
//! hold itself (`crate::overflow`); the classifier never learns of them.
//!
//! Allotments come from the unit's health cache ([`HealthCacheHandle`]) when it runs that
//! role, else from a health-cache unit over UDP ([`crate::allotment_client`], shared with the
//! router role) through [`RemoteAllotments`]: the machine's calls are synchronous, so the
//! adapter serves the latest `AllotmentResponse` per service and the loop refreshes every
//! service's allotment in the background (every half token validity); a response older
//! than three validity periods is not served (no hosts: new connections are refused rather
//! than sent on stale health).
//!
//! Directive and health changes: the loop watches the local cache's host generations (or the
//! remote responses) every 200 ms and calls [`Classifier::refresh_allotments`] when they
//! change, so a drained or failed host stops getting new connections within that time rather
//! than at the end of a token validity period.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_classifier::{
    Action, Classifier, Counters, DeliveryPath, FinalReason, MissPacket, NatSpec, PortRange,
    ServiceSpec, Settings, Side,
};
use switchyard_config::{Config, Unit};
use switchyard_health::{AllotmentSource, ServiceKey};
use switchyard_transport::{Throttle, UdpEndpoint};
use switchyard_wire::allotment::{Allotment, AllotmentRequest, AllotmentResponse, AllotmentScheme};
use switchyard_wire::plumbing::{self, AddRoute, DeleteRoute, Delivery};
use switchyard_wire::{Codec, FlowTuple, HostId, Message, Protocol, SenderId, SessionId, UnitId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::HealthCacheHandle;
use crate::allotment_client::AllotmentClient;
use crate::forwarder_role::ForwarderHandle;
use crate::plumbing::{ClassifierInput, Origin, parse_ip_packet};

/// Capacity of the channel from the unit's forwarder.
pub const INPUT_QUEUE: usize = 65_536;
const WATCH_EVERY: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the classifier role did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifierError {
    /// The configuration's services or settings cannot be served.
    #[error("classifier configuration: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What the admin API shows of the classifier.
#[derive(Debug, Clone, Default)]
pub struct ClassifierSnapshot {
    /// The machine's counters.
    pub counters: Counters,
    /// Connections in the inventory.
    pub connections: u64,
    /// NAT ports in use.
    pub nat_ports_in_use: u64,
    /// Slow-path deliveries dropped: half NAT, or a remote forwarder.
    pub slow_path_dropped: u64,
    /// Frames of flows the forwarder's table could not hold, sent along their route
    /// (both directions).
    pub slow_path_delivered: u64,
    /// Of those, reply-direction frames (host → NAT source).
    pub slow_path_replies: u64,
    /// Slow-path frames the data plane did not send (see the forwarder's `slow_path_failed`).
    pub slow_path_failed: u64,
    /// Packets to a NAT source of no known flow: dropped.
    pub reply_misses_unknown: u64,
    /// Allotment refreshes after a health or directive change.
    pub refreshes: u64,
    /// Inputs refused (undecodable, unknown sender).
    pub refused: u64,
}

/// The classifier's published state (cloneable).
#[derive(Debug, Clone, Default)]
pub struct ClassifierStats(Arc<Mutex<ClassifierSnapshot>>);

impl ClassifierStats {
    /// The latest snapshot (at most 200 ms old).
    pub fn snapshot(&self) -> ClassifierSnapshot {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Where allotments come from.
#[derive(Debug, Clone)]
pub enum Allotments {
    /// This unit's health cache.
    Local(HealthCacheHandle),
    /// Health-cache units asked over UDP.
    Remote {
        /// Their ids and control addresses ([`crate::allotment_client::health_units`]).
        units: Vec<(UnitId, SocketAddr)>,
        /// Token validity (`[health] token_validity`).
        token_validity: Duration,
    },
}

/// The classifier machine's settings and services from the configuration. Services that
/// cannot be served (tunnel delivery, affinity kinds other than client-ip) are skipped with a
/// warning.
pub fn build(
    config: &Config,
    unit: &Unit,
    session_lookups: bool,
) -> Result<Classifier, ClassifierError> {
    let c = config.classifier_settings();
    let settings = Settings {
        fin_linger: c.fin_linger,
        rst_linger: c.rst_linger,
        tcp_idle_timeout: c.tcp_idle_timeout,
        udp_idle_timeout: c.udp_idle_timeout,
        // Random per process (std's hasher keys are), so a restarted unit starts its NAT
        // port pools elsewhere.
        nat_port_salt: std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            unit.id,
        ),
        session_lookups,
        ..Settings::default()
    };
    let mut classifier =
        Classifier::new(settings).map_err(|e| ClassifierError::Config(e.to_string()))?;
    let f = &unit.forwarder;
    let nat = nat_spec(unit)?;
    for (service, pool, spec) in packet_services(config, nat.as_ref()) {
        match spec {
            Ok(spec) => {
                let others: Vec<&str> = spec.other_apps(pool).collect();
                if !others.is_empty() {
                    tracing::warn!(
                        service = %service.name,
                        pool = %pool.name,
                        app = %spec.allotment_info,
                        hosts = ?others,
                        "the pool's hosts report different apps; the classifier balances over the hosts of the first host's app only"
                    );
                }
                classifier.set_service(spec).map_err(|e| {
                    ClassifierError::Config(format!("service {}: {e}", service.name))
                })?;
            }
            Err(error) => tracing::warn!(
                service = %service.name,
                %error,
                "service not classified by this unit"
            ),
        }
    }
    if nat.is_some() {
        warn_ephemeral_overlap(f.nat_ports.first, f.nat_ports.last);
    }
    Ok(classifier)
}

/// The unit's full-NAT settings (`None` without NAT sources).
fn nat_spec(unit: &Unit) -> Result<Option<NatSpec>, ClassifierError> {
    let f = &unit.forwarder;
    let ports = PortRange::new(f.nat_ports.first, f.nat_ports.last)
        .map_err(|e| ClassifierError::Config(e.to_string()))?;
    Ok((!f.nat_sources.is_empty()).then(|| NatSpec {
        sources: f.nat_sources.clone(),
        ports,
    }))
}

/// The configuration's packet services with their pools and classifier specs (`Err` for a
/// service this classifier cannot serve). Services whose pool is missing (the validated
/// configuration has none) are left out.
fn packet_services<'c>(
    config: &'c Config,
    nat: Option<&NatSpec>,
) -> impl Iterator<
    Item = (
        &'c switchyard_config::Service,
        &'c switchyard_config::Pool,
        Result<ServiceSpec, switchyard_classifier::ConfigError>,
    ),
> {
    config.services.iter().filter_map(move |service| {
        let pool = config.pool_of(service)?;
        ServiceSpec::from_config(service, pool, nat.cloned())
            .transpose()
            .map(|spec| (service, pool, spec))
    })
}

/// NAT ports inside the unit's ephemeral range would collide with local sockets.
fn warn_ephemeral_overlap(first: u16, last: u16) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u16>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next())
        && first <= hi
        && lo <= last
    {
        tracing::warn!(
            nat_ports = %format!("{first}-{last}"),
            ephemeral = %format!("{lo}-{hi}"),
            "the NAT port range overlaps the unit's ephemeral port range: replies to local sockets and NAT flows can collide; move one (sysctl net.ipv4.ip_local_port_range or forwarder.nat_ports)"
        );
    }
}

/// Starts the classifier thread. `inputs` is the receiving end of the unit's forwarder
/// channel (when it has one); `forwarder` its data plane. The plumbing port is bound when
/// some forwarder unit names this unit as its classifier.
#[expect(
    clippy::too_many_arguments,
    reason = "the roles the classifier talks to, handed over once at start"
)]
pub fn start(
    config: &Config,
    unit: &Unit,
    inputs: mpsc::Receiver<ClassifierInput>,
    forwarder: Option<ForwarderHandle>,
    allotments: Allotments,
    sessions: Option<crate::SessionStoreHandle>,
    codec: Codec,
    stop: watch::Receiver<bool>,
) -> (ClassifierStats, JoinHandle<()>) {
    let session_lookups = sessions.is_some();
    let store = sessions.clone();
    let route_zombie = config.sessions.zombie.four_tuple;
    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let forwarders: HashMap<UnitId, SocketAddr> = config
        .cluster
        .units
        .iter()
        .filter(|u| u.classifier.as_deref() == Some(unit.name.as_str()))
        .map(|u| (u.id, u.plumbing_addr()))
        .collect();
    let plumbing = (!forwarders.is_empty()).then(|| unit.plumbing_addr());
    let stats = ClassifierStats::default();
    // The keys the services' allotments are asked for under (the pool hosts' app), as the
    // classifier machine built from the same configuration uses them.
    let nat = nat_spec(unit).ok().flatten();
    let service_keys = packet_services(config, nat.as_ref())
        .filter_map(|(_, _, spec)| spec.ok())
        .map(|spec| {
            let key = spec.allotment_key();
            (key.vip, key.protocol, key.info)
        })
        .collect();
    let driver = DriverParts {
        service_keys,
        sessions,
        session_tx,
        route_zombie,
        forwarder,
        forwarders,
        owners: HashMap::new(),
        out: Vec::new(),
        stats: stats.clone(),
        slow_path: SlowPathCounters::default(),
        refreshes: 0,
        refused: 0,
        throttle: Throttle::new(LOG_EVERY),
    };
    let own = unit.id;
    let address = unit.address;
    let (config, unit) = (config.clone(), unit.clone());
    let task = tokio::task::spawn_blocking(move || {
        // The machine is not Send: it is built on, and never leaves, this thread. `start`'s
        // caller built it once already, so this cannot fail but for a changed configuration.
        let classifier = match build(&config, &unit, session_lookups) {
            Ok(mut c) => {
                if let Some(store) = &store {
                    c.set_route_lookup(Box::new(crate::route_atoms::DamRouteLookup(store.clone())));
                }
                c
            }
            Err(error) => {
                tracing::error!(%error, "classifier");
                return;
            }
        };
        let driver = driver.into_driver(classifier);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "classifier runtime");
                return;
            }
        };
        runtime.block_on(driver.run(
            inputs, session_rx, plumbing, allotments, address, own, codec, stop,
        ));
    });
    (stats, task)
}

/// Serves the latest allotment response per service to the synchronous machine.
#[derive(Debug, Default)]
pub struct RemoteAllotments {
    latest: HashMap<(SocketAddr, Protocol, String), (AllotmentResponse, Instant)>,
    wanted: HashSet<(SocketAddr, Protocol, String)>,
    max_age: Duration,
}

impl RemoteAllotments {
    fn store(&mut self, response: AllotmentResponse, now: Instant) -> bool {
        let key = (response.vip, response.protocol, response.info.clone());
        let changed = self
            .latest
            .get(&key)
            .is_none_or(|(old, _)| old.allotment != response.allotment);
        self.latest.insert(key, (response, now));
        changed
    }
}

impl AllotmentSource for RemoteAllotments {
    fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        let key = (request.vip, request.protocol, request.info.clone());
        let fresh = self
            .latest
            .get(&key)
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.max_age);
        let allotment = match fresh {
            Some((r, _)) => r.allotment.clone(),
            None => Allotment::Tokens {
                entries: Vec::new(),
                valid_for_ms: 1,
            },
        };
        self.wanted.insert(key);
        AllotmentResponse {
            request_id: request.request_id,
            vip: request.vip,
            protocol: request.protocol,
            info: request.info.clone(),
            allotment,
        }
    }
}

enum Source {
    Local(HealthCacheHandle),
    Remote(RemoteAllotments),
}

impl AllotmentSource for Source {
    fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        match self {
            Source::Local(h) => AllotmentSource::allot(h, request, now),
            Source::Remote(r) => r.allot(request, now),
        }
    }
}

/// The driver's slow-path counters.
#[derive(Debug, Default, Clone, Copy)]
struct SlowPathCounters {
    dropped: u64,
    delivered: u64,
    replies: u64,
    failed: u64,
    unknown_replies: u64,
}

/// The driver's `Send` parts, moved into the classifier thread.
struct DriverParts {
    service_keys: Vec<(SocketAddr, Protocol, String)>,
    sessions: Option<crate::SessionStoreHandle>,
    session_tx: mpsc::UnboundedSender<(u64, Option<HostId>)>,
    route_zombie: Duration,
    forwarder: Option<ForwarderHandle>,
    forwarders: HashMap<UnitId, SocketAddr>,
    owners: HashMap<FlowTuple, Origin>,
    out: Vec<(SocketAddr, Message)>,
    stats: ClassifierStats,
    slow_path: SlowPathCounters,
    refreshes: u64,
    refused: u64,
    throttle: Throttle,
}

impl DriverParts {
    fn into_driver(self, classifier: Classifier) -> Driver {
        Driver {
            service_keys: self.service_keys,
            sessions: self.sessions,
            session_tx: self.session_tx,
            route_zombie: self.route_zombie,
            classifier,
            forwarder: self.forwarder,
            forwarders: self.forwarders,
            owners: self.owners,
            out: self.out,
            stats: self.stats,
            slow_path: self.slow_path,
            refreshes: self.refreshes,
            refused: self.refused,
            throttle: self.throttle,
        }
    }
}

struct Driver {
    service_keys: Vec<(SocketAddr, Protocol, String)>,
    /// The unit's session store, when it runs that role: new connections of client-IP
    /// affinity services look the client's session up there first.
    sessions: Option<crate::SessionStoreHandle>,
    /// Where lookups spawned on this thread's runtime send their answers.
    session_tx: mpsc::UnboundedSender<(u64, Option<HostId>)>,
    /// How long a retired route's atom lingers as a zombie.
    route_zombie: Duration,
    classifier: Classifier,
    forwarder: Option<ForwarderHandle>,
    forwarders: HashMap<UnitId, SocketAddr>,
    owners: HashMap<FlowTuple, Origin>,
    out: Vec<(SocketAddr, Message)>,
    stats: ClassifierStats,
    slow_path: SlowPathCounters,
    refreshes: u64,
    refused: u64,
    throttle: Throttle,
}

async fn recv_on(ep: &mut Option<UdpEndpoint>) -> std::io::Result<switchyard_transport::Received> {
    match ep {
        Some(e) => e.recv().await,
        None => std::future::pending().await,
    }
}

/// What the local cache looks like, to notice changes cheaply.
fn fingerprint(h: &HealthCacheHandle) -> Vec<(u32, u64, bool)> {
    h.read(|cache, _| {
        let mut v: Vec<(u32, u64, bool)> = cache
            .hosts()
            .map(|v| (v.host.0, v.generation, v.baseline))
            .collect();
        v.sort_unstable();
        v
    })
}

impl Driver {
    #[expect(
        clippy::too_many_arguments,
        reason = "the loop's inputs, moved in once"
    )]
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<ClassifierInput>,
        mut session_answers: mpsc::UnboundedReceiver<(u64, Option<HostId>)>,
        plumbing: Option<SocketAddr>,
        allotments: Allotments,
        address: IpAddr,
        own: UnitId,
        codec: Codec,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut plumbing_ep = match plumbing {
            Some(addr) => match UdpEndpoint::bind(addr, codec.clone(), SenderId::from(own)).await {
                Ok(ep) => {
                    tracing::info!(%addr, forwarders = self.forwarders.len(), "classifier listening for route plumbing (UDP)");
                    Some(ep)
                }
                Err(error) => {
                    tracing::error!(%addr, %error, "cannot bind the route plumbing port; remote forwarders are not served");
                    None
                }
            },
            None => None,
        };
        let (mut source, health_units, validity) = match allotments {
            Allotments::Local(h) => (Source::Local(h), Vec::new(), Duration::from_secs(2)),
            Allotments::Remote {
                units,
                token_validity,
            } => (
                Source::Remote(RemoteAllotments {
                    max_age: token_validity.saturating_mul(3),
                    ..RemoteAllotments::default()
                }),
                units,
                token_validity,
            ),
        };
        let mut allot_client = if health_units.is_empty() {
            None
        } else {
            match AllotmentClient::bind(address, codec, own, health_units).await {
                Ok(client) => Some(client),
                Err(error) => {
                    tracing::error!(%address, %error, "cannot bind the allotment socket; no allotments");
                    None
                }
            }
        };
        if let Source::Remote(r) = &mut source {
            // Ask for every service at once, so the first connection finds an allotment.
            for key in self.service_keys.clone() {
                r.wanted.insert(key);
            }
        }
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let refresh_every = (validity / 2).max(Duration::from_millis(100));
        let mut refresh = tokio::time::interval(refresh_every);
        let mut last_seen = Vec::new();
        let mut inputs_open = true;
        loop {
            let deadline = self
                .classifier
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            if *stop.borrow() {
                break;
            }
            let local_inputs = async {
                if inputs_open {
                    inputs.recv().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                input = local_inputs => {
                    let Some(input) = input else {
                        // No local forwarder (or it stopped): serve remote ones only.
                        inputs_open = false;
                        continue;
                    };
                    self.input(&mut source, input);
                    for _ in 0..256 {
                        match inputs.try_recv() {
                            Ok(input) => self.input(&mut source, input),
                            Err(_) => break,
                        }
                    }
                }
                received = recv_on(&mut plumbing_ep) => match received {
                    Ok(r) => self.datagram(&mut source, r),
                    Err(error) => {
                        tracing::warn!(%error, "route plumbing receive error");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                answer = AllotmentClient::answer(&mut allot_client) => {
                    if let (Message::AllotmentResponse(response), Source::Remote(remote)) = (answer, &mut source)
                        && remote.store(response, Instant::now())
                    {
                        self.classifier.refresh_allotments();
                        self.refreshes += 1;
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    self.classifier.handle_timeout(now);
                    self.classifier.expire_session_lookups(now, &mut source);
                }
                Some((query, host)) = session_answers.recv() => {
                    self.classifier.on_session(Instant::now(), &mut source, query, host);
                }
                _ = watch.tick() => {
                    if let Source::Local(h) = &source {
                        let now = fingerprint(h);
                        if now != last_seen {
                            if !last_seen.is_empty() {
                                self.classifier.refresh_allotments();
                                self.refreshes += 1;
                            }
                            last_seen = now;
                        }
                    }
                    self.publish();
                }
                _ = refresh.tick() => {
                    if let (Source::Remote(remote), Some(client)) = (&source, &mut allot_client) {
                        let keys = remote.wanted.iter().map(|(vip, protocol, info)| ServiceKey::new(*vip, *protocol, info.clone()));
                        client.ask(keys, AllotmentScheme::Tokens, Message::from).await;
                    }
                }
            }
            self.execute(Instant::now());
            if let Some(ep) = &plumbing_ep {
                for (to, message) in std::mem::take(&mut self.out) {
                    if let Err(error) = ep.send(to, &message).await
                        && let Some(suppressed) = self.throttle.event(Instant::now())
                    {
                        tracing::warn!(%to, %error, suppressed, "cannot send route plumbing");
                    }
                }
            } else {
                self.out.clear();
            }
        }
        self.publish();
        tracing::debug!("classifier stopped");
    }

    fn publish(&self) {
        let snapshot = ClassifierSnapshot {
            counters: self.classifier.counters().clone(),
            connections: self.classifier.inventory().len() as u64,
            nat_ports_in_use: self.classifier.nat_ports_in_use(),
            slow_path_dropped: self.slow_path.dropped,
            slow_path_delivered: self.slow_path.delivered,
            slow_path_replies: self.slow_path.replies,
            slow_path_failed: self.slow_path.failed,
            reply_misses_unknown: self.slow_path.unknown_replies,
            refreshes: self.refreshes,
            refused: self.refused,
        };
        *self
            .stats
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }

    fn input(&mut self, source: &mut Source, input: ClassifierInput) {
        let now = Instant::now();
        match input {
            ClassifierInput::Miss { origin, packet } => {
                let flow = packet.flow;
                self.classifier.on_miss(now, source, packet);
                self.execute_for(now, Some((flow, origin)));
            }
            ClassifierInput::Final {
                flow, reason, side, ..
            } => {
                self.classifier.on_final(now, &flow, reason, side);
            }
            ClassifierInput::Reopen { flow, .. } => self.classifier.on_reopen(now, &flow),
            ClassifierInput::Idle {
                idle_for, flows, ..
            } => self.classifier.on_idle(now, idle_for, &flows),
            ClassifierInput::ReplyMiss {
                wire,
                tcp_flags,
                ingress_ifindex,
                frame,
            } => self.reply_miss(now, &wire, tcp_flags, ingress_ifindex, frame),
        }
    }

    /// A host's packet to the unit's NAT source without a route: the reply of a flow the
    /// forwarder could not hold. Sent along the flow's route (reverse direction); unknown
    /// ones are dropped (counted).
    fn reply_miss(
        &mut self,
        now: Instant,
        wire: &switchyard_forwarder::WireFlow,
        tcp_flags: u8,
        ifindex: u32,
        frame: Vec<u8>,
    ) {
        let protocol = crate::plumbing::wire_protocol(wire.proto);
        let known = self
            .classifier
            .inventory()
            .flow_of_reply(protocol, wire.src, wire.dst)
            .and_then(|flow| Some((flow, self.classifier.inventory().get(&flow)?.route)));
        let (Some((flow, route)), Some(forwarder)) = (known, &self.forwarder) else {
            self.slow_path.unknown_replies += 1;
            return;
        };
        if forwarder.deliver_with_route(frame, ifindex, &route) {
            self.slow_path.delivered += 1;
            self.slow_path.replies += 1;
        } else {
            self.slow_path.failed += 1;
        }
        // The forwarder reports no final packets of flows without a route.
        if protocol == Protocol::Tcp {
            if tcp_flags & 0x04 != 0 {
                self.classifier
                    .on_final(now, &flow, FinalReason::Rst, Side::Host);
            } else if tcp_flags & 0x01 != 0 {
                self.classifier
                    .on_final(now, &flow, FinalReason::Fin, Side::Host);
            }
        }
    }

    fn datagram(&mut self, source: &mut Source, received: switchyard_transport::Received) {
        let envelope = match received.result {
            Ok(e) => e,
            Err(error) => {
                self.refused += 1;
                if let Some(suppressed) = self.throttle.event(Instant::now()) {
                    tracing::warn!(from = %received.from, %error, suppressed, "route plumbing datagram rejected");
                }
                return;
            }
        };
        let unit = UnitId(envelope.sender.0);
        let Some(addr) = self.forwarders.get(&unit).copied() else {
            self.refused += 1;
            if let Some(suppressed) = self.throttle.event(Instant::now()) {
                tracing::warn!(from = %received.from, sender = %envelope.sender, suppressed, "route plumbing from a unit this classifier does not serve ignored");
            }
            return;
        };
        let origin = Origin::Remote { unit, addr };
        match envelope.message {
            Message::Miss(miss) => {
                let Some((flow, transport)) = parse_ip_packet(&miss.packet) else {
                    self.refused += 1;
                    return;
                };
                let packet = MissPacket {
                    flow,
                    transport,
                    ingress_ifindex: miss.ingress.ifindex,
                    frame: Vec::new(),
                };
                self.input(source, ClassifierInput::Miss { origin, packet });
            }
            Message::RouteRefused(r) => {
                // A half-NAT route the forwarder's full table could not take: a new
                // connection switches to full NAT (when this unit has NAT sources) and its new
                // route goes out at once; the forwarder serves that one itself.
                let now = Instant::now();
                self.classifier.on_plumb_failed(
                    now,
                    &r.flow,
                    switchyard_classifier::PlumbFailure::TableFull,
                );
                if let Some(conn) = self.classifier.inventory().get(&r.flow)
                    && matches!(conn.route.delivery, Delivery::Nat { .. })
                {
                    let route = conn.route;
                    self.out.push((
                        addr,
                        Message::AddRoute(AddRoute {
                            routes: vec![route],
                        }),
                    ));
                }
            }
            Message::FinalPacket(f) => {
                let now = Instant::now();
                match f.reason {
                    plumbing::FinalReason::Fin => {
                        self.classifier
                            .on_final(now, &f.flow, FinalReason::Fin, Side::Client);
                    }
                    plumbing::FinalReason::HostFin => {
                        self.classifier
                            .on_final(now, &f.flow, FinalReason::Fin, Side::Host);
                    }
                    plumbing::FinalReason::Rst => {
                        self.classifier
                            .on_final(now, &f.flow, FinalReason::Rst, Side::Client);
                    }
                    plumbing::FinalReason::IdleTimeout => {
                        let idle_for = self.classifier.settings().idle_timeout(f.flow.protocol());
                        self.classifier.on_idle(now, idle_for, &[f.flow]);
                    }
                    plumbing::FinalReason::Reopened => self.classifier.on_reopen(now, &f.flow),
                }
            }
            _ => self.refused += 1,
        }
    }

    /// Asks the session store for `client`'s session on this thread's runtime; the answer
    /// (the host, unless the session is a zombie) comes back through `session_tx`. Without
    /// a store the machine never asks.
    fn lookup_session(&self, query: u64, client: IpAddr) {
        let Some(sessions) = self.sessions.clone() else {
            return;
        };
        let tx = self.session_tx.clone();
        tokio::spawn(async move {
            let key = SessionId::ClientIp(client).key();
            let host = sessions
                .lookup(&key)
                .await
                .filter(|l| !l.zombie)
                .map(|l| l.host);
            // The loop is gone only when the classifier stops.
            let _ = tx.send((query, host));
        });
    }

    /// With the session store: records a plumbed route as an atom, so another unit can
    /// rebuild it (`route_atoms`).
    fn record_route(&self, route: &switchyard_wire::plumbing::Route) {
        if let (Some(store), Some(data)) = (&self.sessions, crate::route_atoms::encode(route)) {
            store.record_data(&crate::route_atoms::key(&route.flow), data, None);
        }
    }

    fn execute(&mut self, now: Instant) {
        self.execute_for(now, None);
    }

    /// Executes queued actions; `current` is the flow and origin of the input that caused
    /// them (for routes of new flows).
    fn execute_for(&mut self, now: Instant, current: Option<(FlowTuple, Origin)>) {
        while let Some(action) = self.classifier.poll_action() {
            match action {
                Action::PlumbRoute(route) => {
                    self.record_route(&route);
                    let origin = match current {
                        Some((flow, origin)) if flow == route.flow => origin,
                        _ => self
                            .owners
                            .get(&route.flow)
                            .copied()
                            .unwrap_or(Origin::Local),
                    };
                    self.owners.insert(route.flow, origin);
                    match origin {
                        Origin::Local => {
                            let result = match &self.forwarder {
                                Some(f) => f.add_route(&route),
                                None => Err(switchyard_classifier::PlumbFailure::Other),
                            };
                            if let Err(failure) = result {
                                self.classifier.on_plumb_failed(now, &route.flow, failure);
                            }
                        }
                        Origin::Remote { addr, .. } => self.out.push((
                            addr,
                            Message::AddRoute(AddRoute {
                                routes: vec![route],
                            }),
                        )),
                    }
                }
                Action::Deliver(d) => match (d.path, self.owners.get(&d.route.flow)) {
                    (DeliveryPath::Forwarder, Some(Origin::Local)) => {
                        if let Some(f) = &self.forwarder {
                            f.reinject(d.frame, d.ingress_ifindex);
                        }
                    }
                    (DeliveryPath::Forwarder, _) => {}
                    (DeliveryPath::SlowPath, Some(Origin::Local))
                        if matches!(d.route.delivery, Delivery::Nat { .. }) =>
                    {
                        let sent = self.forwarder.as_ref().is_some_and(|f| {
                            f.deliver_with_route(d.frame, d.ingress_ifindex, &d.route)
                        });
                        if sent {
                            self.slow_path.delivered += 1;
                        } else {
                            self.slow_path.failed += 1;
                        }
                    }
                    (DeliveryPath::SlowPath, origin) => {
                        self.slow_path.dropped += 1;
                        if let Some(suppressed) = self.throttle.event(now) {
                            let why = if matches!(origin, Some(Origin::Local)) {
                                "half NAT has no slow path (the host's replies could not be caught)"
                            } else {
                                "a remote forwarder has no slow path"
                            };
                            tracing::warn!(flow = ?d.route.flow, suppressed, why, "forwarder table full: packet of an unplumbed flow dropped");
                        }
                    }
                },
                Action::LookupSession { query, client } => self.lookup_session(query, client),
                Action::RecordSession { client, host, ttl } => {
                    if let Some(sessions) = &self.sessions {
                        sessions.record(&SessionId::ClientIp(client).key(), host, Some(ttl));
                    }
                }
                Action::DeleteRoute(flow) => {
                    if let Some(store) = &self.sessions {
                        store.forget(&crate::route_atoms::key(&flow), self.route_zombie);
                    }
                    let origin = self.owners.remove(&flow).or(current.map(|(_, o)| o));
                    match origin {
                        Some(Origin::Remote { addr, .. }) => self.out.push((
                            addr,
                            Message::DeleteRoute(DeleteRoute { flows: vec![flow] }),
                        )),
                        _ => {
                            if let Some(f) = &self.forwarder {
                                f.delete_route(&flow);
                            }
                        }
                    }
                }
            }
        }
    }
}
