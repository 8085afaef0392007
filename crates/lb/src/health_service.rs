//! The health-cache role of a unit: one [`ConsolidatedCache`] driven over
//! an authenticated UDP endpoint, and [`HealthCacheHandle`], the
//! in-process API the admin API, the classifier and the request router use.
//!
//! # The loop
//!
//! One task owns the [`UdpEndpoint`] (bound to the unit's control address,
//! speaking as the unit's sender id). It waits for the next datagram, the
//! cache's next deadline ([`ConsolidatedCache::poll_timeout`]) or shutdown,
//! whichever comes first; feeds datagrams to [`ConsolidatedCache::handle`]
//! and deadlines to [`ConsolidatedCache::handle_timeout`]; then drains
//! [`ConsolidatedCache::poll_transmit`] and sends each message:
//!
//! - to a **host**: to the address its heartbeats advertise (with the IP
//!   of its datagrams if it advertised an unspecified one), else to the
//!   source address of its latest datagram;
//! - to a **unit** (the answer to its allotment request): to the source
//!   address of its latest datagram.
//!
//! Before the cache sees a message, the service checks that its sender and the hosts it
//! reports for are in the configuration, and keeps a group leader's consolidated
//! heartbeat to the members of its group ([`crate::trust`]); refusals are counted as
//! ignored (`unknown-sender`, `unknown-host`, `unknown-unit`, `not-a-member`).
//!
//! A message with no known destination is dropped and counted
//! (`unroutable`). Rejected datagrams (framing, bad tag, malformed,
//! replayed, stale) are counted by the transport; messages the cache
//! ignored are counted here by reason. Both are logged, at most once per
//! reason every few seconds.
//!
//! Operators' acts on hosts ([`HealthCacheHandle::act`], [`crate::host_acts`]) go out
//! from the same endpoint, to the same destination as the cache's messages to the host;
//! the loop hands each host's `DirectiveReply` to the request waiting for it.
//!
//! # Sharing
//!
//! The cache lives behind a [`std::sync::Mutex`] shared by the loop and
//! every [`HealthCacheHandle`]. Every access is a short synchronous
//! critical section: the API takes closures, so the lock can never be held
//! across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_health::{
    AllotmentSource, CacheCounters, CacheSettings, ConsolidatedCache, HealthError, Ignored,
    ServiceKey,
};
use switchyard_transport::{
    Received, RejectReason, Throttle, TransportCounters, TransportSnapshot, UdpEndpoint,
};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentResponse, AllotmentScheme};
use switchyard_wire::health::{Act, DirectiveReply, DirectiveRequest};
use switchyard_wire::{AppId, Codec, HostId, Message, SenderId, UnitId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::host_acts::{ATTEMPTS, ActError, PendingActs, RETRY_AFTER};
use crate::observe::{Marks, Observer, destination, hosts_of};
use crate::trust::{Admission, ClusterMembers};

/// How often a log line about rejected or ignored datagrams may be written,
/// per reason.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Acts queued for the loop to send.
const ACTS_QUEUE: usize = 64;

/// Settings of the health-cache role.
#[derive(Debug, Clone)]
pub struct HealthServiceSettings {
    /// UDP address to bind (the unit's control address; port 0 picks one).
    pub control: SocketAddr,
    /// The cache's settings; `cache.unit` is also the sender id the
    /// endpoint speaks as.
    pub cache: CacheSettings,
    /// The cluster codec (key derived from the cluster secret and id).
    pub codec: Codec,
    /// Host names from the configuration, shown until a heartbeat carries
    /// the host's own name.
    pub host_names: BTreeMap<HostId, String>,
    /// The configured hosts, units and host groups: messages from or about anyone else
    /// are ignored.
    pub members: ClusterMembers,
}

/// Counters kept by the health service itself (the transport and the cache
/// keep their own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCounters {
    /// Authenticated messages the cache did not act on, by reason
    /// (`stale-generation`, `sender-mismatch`, `unknown-host`, ...).
    pub ignored: BTreeMap<&'static str, u64>,
    /// Messages dropped because the destination's address is unknown.
    pub unroutable: u64,
    /// Socket errors while receiving.
    pub receive_errors: u64,
}

/// Everything countable about the health-cache role, at one moment.
#[derive(Debug, Clone)]
pub struct HealthCounters {
    /// The UDP endpoint: sent, received, rejected by reason.
    pub transport: TransportSnapshot,
    /// The cache: messages per kind, resyncs, age-outs, goodbyes, ...
    pub cache: CacheCounters,
    /// The service: ignored by reason, unroutable.
    pub service: ServiceCounters,
    /// Hosts in the cache.
    pub hosts: u64,
    /// Hosts whose cached table matched their last heartbeat.
    pub hosts_in_sync: u64,
    /// Application endpoints (rows) in the cache.
    pub endpoints: u64,
    /// Services with at least one endpoint.
    pub services: u64,
}

#[derive(Debug)]
struct State {
    cache: ConsolidatedCache,
    /// Source address of each sender's latest authenticated datagram.
    peers: HashMap<SenderId, SocketAddr>,
    counters: ServiceCounters,
    observer: Observer,
}

impl State {
    /// Where messages for `to` go: its advertised address, else its latest source
    /// ([`destination`]).
    fn address_of(&self, to: SenderId) -> Option<SocketAddr> {
        let advertised = self.cache.host(HostId(to.0)).and_then(|v| v.address);
        destination(advertised, self.peers.get(&to).copied())
    }
}

#[derive(Debug)]
struct Shared {
    unit: UnitId,
    control: SocketAddr,
    state: Mutex<State>,
    transport: Arc<TransportCounters>,
    next_request_id: AtomicU64,
    host_names: Arc<BTreeMap<HostId, String>>,
    /// Acts waiting for their host's reply.
    acts: PendingActs,
    /// Acts for the loop to send.
    outbox: mpsc::Sender<(HostId, Message)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the cache half
        // updated in a way later calls rely on: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The in-process API of a unit's consolidated health and load cache:
/// allotments for the classifier and the request router, and read access
/// for the admin API. Cheap to clone; every clone talks to the same cache.
///
/// Allotments come from [`Self::allot`] (a wire [`AllotmentRequest`], as a
/// remote classifier would send) or [`Self::allot_service`]; consumers
/// spend them with [`switchyard_health::TokenAllotment`] or
/// [`switchyard_health::PercentageAllotment`]. The handle also implements
/// [`AllotmentSource`], the seam those consumers are written against:
///
/// ```no_run
/// # fn demo(health: switchyard_lb::HealthCacheHandle) -> Result<(), switchyard_health::HealthError> {
/// use std::time::Instant;
/// use switchyard_health::{ServiceKey, TokenAllotment};
/// use switchyard_wire::Protocol;
/// use switchyard_wire::allotment::AllotmentScheme;
///
/// let web = ServiceKey::new("198.51.100.10:80".parse().expect("vip"), Protocol::Tcp, "");
/// let response = health.allot_service(&web, AllotmentScheme::Tokens, 100);
/// let mut tokens = TokenAllotment::new(&response, Instant::now())?;
/// while let Some(endpoint) = tokens.draw(Instant::now()) {
///     // send the new connection to endpoint.endpoint
/// #   let _ = endpoint;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HealthCacheHandle {
    shared: Arc<Shared>,
}

impl HealthCacheHandle {
    /// This unit.
    pub fn unit(&self) -> UnitId {
        self.shared.unit
    }

    /// The UDP address the service listens on.
    pub fn control_addr(&self) -> SocketAddr {
        self.shared.control
    }

    /// The host's name: from its heartbeats, else from the configuration.
    pub fn host_name(&self, host: HostId) -> Option<String> {
        let from_heartbeat =
            self.read(|cache, _| cache.host(host).and_then(|v| v.name.map(str::to_owned)));
        from_heartbeat.or_else(|| self.shared.host_names.get(&host).cloned())
    }

    /// The configured host names.
    pub fn configured_host_names(&self) -> &BTreeMap<HostId, String> {
        &self.shared.host_names
    }

    /// Runs `f` on the cache at the current time. Keep `f` short: the loop
    /// waits for it. (It is synchronous, so it cannot hold the cache across
    /// an `.await`.)
    pub fn read<R>(&self, f: impl FnOnce(&ConsolidatedCache, Instant) -> R) -> R {
        let state = self.shared.lock();
        f(&state.cache, Instant::now())
    }

    /// Issues the allotment for `request` from the rows of alive hosts
    /// (counted as an allotment).
    pub fn allot(&self, request: &AllotmentRequest) -> AllotmentResponse {
        let mut state = self.shared.lock();
        state.cache.allot(request, Instant::now())
    }

    /// Issues an allotment for `service` (request id chosen here).
    /// `wanted_tokens` applies to the token scheme; 0 asks for the default.
    pub fn allot_service(
        &self,
        service: &ServiceKey,
        scheme: AllotmentScheme,
        wanted_tokens: u32,
    ) -> AllotmentResponse {
        let request = self.request(service, scheme, wanted_tokens);
        self.allot(&request)
    }

    /// What [`Self::allot_service`] would issue now, without counting an
    /// allotment (for displays such as `ctl hosts`).
    pub fn preview(
        &self,
        service: &ServiceKey,
        scheme: AllotmentScheme,
        wanted_tokens: u32,
    ) -> AllotmentResponse {
        let request = AllotmentRequest {
            request_id: 0,
            vip: service.vip,
            protocol: service.protocol,
            info: service.info.clone(),
            scheme,
            wanted_tokens,
        };
        self.read(|cache, now| cache.preview(&request, now))
    }

    fn request(
        &self,
        service: &ServiceKey,
        scheme: AllotmentScheme,
        wanted_tokens: u32,
    ) -> AllotmentRequest {
        AllotmentRequest {
            request_id: self.shared.next_request_id.fetch_add(1, Ordering::Relaxed),
            vip: service.vip,
            protocol: service.protocol,
            info: service.info.clone(),
            scheme,
            wanted_tokens,
        }
    }

    /// Relays an operator's act to `host`'s agent (every application of the host, or
    /// `app` only) and waits for its answer; see [`crate::host_acts`].
    pub async fn act(
        &self,
        host: HostId,
        app: Option<AppId>,
        act: Act,
    ) -> Result<DirectiveReply, ActError> {
        if !self.shared.host_names.contains_key(&host) {
            return Err(ActError::UnknownHost(host));
        }
        let known = self.shared.lock().address_of(SenderId(host.0)).is_some();
        if !known {
            return Err(ActError::NoAddress(host));
        }
        let (request, mut reply) = self.shared.acts.register(host);
        let message = Message::from(DirectiveRequest {
            host,
            unit: self.shared.unit,
            request,
            app,
            act,
        });
        let mut outcome = Err(ActError::NoAnswer {
            host,
            attempts: ATTEMPTS,
        });
        for _ in 0..ATTEMPTS {
            if self
                .shared
                .outbox
                .send((host, message.clone()))
                .await
                .is_err()
            {
                outcome = Err(ActError::Stopped);
                break;
            }
            match tokio::time::timeout(RETRY_AFTER, &mut reply).await {
                Ok(Ok(answer)) => {
                    outcome = Ok(answer);
                    break;
                }
                Ok(Err(_)) => {
                    outcome = Err(ActError::Stopped);
                    break;
                }
                Err(_) => {}
            }
        }
        self.shared.acts.forget(request);
        outcome
    }

    /// Number of hosts in the cache.
    pub fn hosts_count(&self) -> usize {
        self.read(|cache, _| cache.hosts().count())
    }

    /// All counters.
    pub fn counters(&self) -> HealthCounters {
        let transport = self.shared.transport.snapshot();
        let state = self.shared.lock();
        let cache = &state.cache;
        let mut hosts = 0u64;
        let mut in_sync = 0u64;
        let mut endpoints = 0u64;
        for view in cache.hosts() {
            hosts += 1;
            in_sync += u64::from(view.in_sync);
            endpoints += view.table.len() as u64;
        }
        HealthCounters {
            transport,
            cache: cache.counters().clone(),
            service: state.counters.clone(),
            hosts,
            hosts_in_sync: in_sync,
            endpoints,
            services: cache.services().count() as u64,
        }
    }
}

impl AllotmentSource for HealthCacheHandle {
    fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        let mut state = self.shared.lock();
        state.cache.allot(request, now)
    }
}

/// Label of an ignore reason, for counters and metrics.
pub fn ignored_label(reason: &Ignored) -> &'static str {
    match reason {
        Ignored::OtherHost { .. } => "other-host",
        Ignored::SenderMismatch { .. } => "sender-mismatch",
        Ignored::UnitMismatch { .. } => "unit-mismatch",
        Ignored::UnknownHost(_) => "unknown-host",
        Ignored::Departed(_) => "departed",
        Ignored::StaleGeneration { .. } => "stale-generation",
        Ignored::InvalidRow(_) => "invalid-row",
        Ignored::UnknownUnit(_) => "unknown-unit",
        Ignored::NotForThisMachine(_) => "not-for-this-machine",
        _ => "other",
    }
}

/// Why the health service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The cache settings are invalid.
    #[error("invalid health cache settings: {0}")]
    Settings(#[from] HealthError),
    /// The control address cannot be bound.
    #[error("cannot bind the health and load control port {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// Starts the health-cache role: binds the control endpoint and spawns the
/// loop, which runs until `shutdown` turns `true` (or its sender is
/// dropped). Returns the handle and the loop's task.
pub async fn start(
    settings: HealthServiceSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<(HealthCacheHandle, JoinHandle<()>), StartError> {
    let unit = settings.cache.unit;
    let cache = ConsolidatedCache::new(settings.cache, Instant::now())?;
    let endpoint = UdpEndpoint::bind(settings.control, settings.codec, SenderId::from(unit))
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.control,
            source,
        })?;
    let control = endpoint.local_addr().map_err(|source| StartError::Bind {
        addr: settings.control,
        source,
    })?;
    let host_names = Arc::new(settings.host_names);
    let (outbox, acts_out) = mpsc::channel(ACTS_QUEUE);
    let shared = Arc::new(Shared {
        unit,
        control,
        state: Mutex::new(State {
            cache,
            peers: HashMap::new(),
            counters: ServiceCounters::default(),
            observer: Observer::new(host_names.clone()),
        }),
        transport: endpoint.counters().clone(),
        next_request_id: AtomicU64::new(1),
        host_names,
        acts: PendingActs::default(),
        outbox,
    });
    let service = Service {
        endpoint,
        shared: shared.clone(),
        shutdown,
        throttles: HashMap::new(),
        members: settings.members,
        acts_out,
    };
    let task = tokio::spawn(service.run());
    Ok((HealthCacheHandle { shared }, task))
}

enum Event {
    Datagram(Box<std::io::Result<Received>>),
    Act(HostId, Box<Message>),
    Timeout,
}

struct Service {
    endpoint: UdpEndpoint,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    throttles: HashMap<&'static str, Throttle>,
    members: ClusterMembers,
    acts_out: mpsc::Receiver<(HostId, Message)>,
}

impl Service {
    async fn run(mut self) {
        loop {
            let deadline = self.shared.lock().cache.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => break,
                received = self.endpoint.recv() => Event::Datagram(Box::new(received)),
                Some((host, message)) = self.acts_out.recv() => Event::Act(host, Box::new(message)),
                () = sleep => Event::Timeout,
            };
            match event {
                Event::Datagram(received) => match *received {
                    Ok(received) => self.on_datagram(received),
                    Err(error) => {
                        self.shared.lock().counters.receive_errors += 1;
                        if let Some(suppressed) = self.throttle("receive-error") {
                            tracing::warn!(%error, suppressed, "health control socket receive error");
                        }
                        // Do not spin on a persistent socket error.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Event::Act(host, message) => self.send_act(host, &message).await,
                Event::Timeout => self.on_timeout(),
            }
            self.flush().await;
        }
        tracing::debug!(unit = %self.shared.unit, "health service stopped");
    }

    fn throttle(&mut self, key: &'static str) -> Option<u64> {
        self.throttles
            .entry(key)
            .or_insert_with(|| Throttle::new(LOG_EVERY))
            .event(Instant::now())
    }

    fn on_datagram(&mut self, received: Received) {
        let now = Instant::now();
        let from = received.from;
        let envelope = match received.result {
            Ok(envelope) => envelope,
            Err(error) => {
                let reason = RejectReason::of(&error).label();
                if let Some(suppressed) = self.throttle(reason) {
                    tracing::warn!(%from, reason, %error, suppressed, "datagram rejected");
                }
                return;
            }
        };
        let (filtered, not_members) = match self.members.admit(envelope.sender, &envelope.message) {
            Admission::Admit => (None, 0),
            Admission::Filtered { message, dropped } => (Some(message), dropped),
            Admission::Refuse(label) => {
                *self
                    .shared
                    .lock()
                    .counters
                    .ignored
                    .entry(label)
                    .or_default() += 1;
                let kind = envelope.message.kind().name();
                let sender = envelope.sender;
                if let Some(suppressed) = self.throttle(label) {
                    tracing::warn!(%from, %sender, kind, reason = label, suppressed, "message from or about an id the configuration does not have ignored");
                }
                return;
            }
        };
        let message = filtered.as_deref().unwrap_or(&envelope.message);
        if let Message::DirectiveReply(reply) = message {
            self.on_act_reply(envelope.sender, from, *reply);
            return;
        }
        let outcome = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            state.peers.insert(envelope.sender, from);
            if not_members > 0 {
                *state.counters.ignored.entry("not-a-member").or_default() += not_members;
            }
            let before = Marks::of(state.cache.counters());
            let hosts = hosts_of(message);
            let result = state.cache.handle(now, envelope.sender, message);
            if let Err(reason) = &result {
                *state
                    .counters
                    .ignored
                    .entry(ignored_label(reason))
                    .or_default() += 1;
            }
            state.observer.update(&state.cache, hosts, before);
            result
        };
        if not_members > 0
            && let Some(suppressed) = self.throttle("not-a-member")
        {
            let sender = envelope.sender;
            tracing::warn!(%from, %sender, dropped = not_members, suppressed, "consolidated heartbeat carried hosts outside the leader's host group; those heartbeats ignored");
        }
        if let Err(reason) = outcome {
            let label = ignored_label(&reason);
            let kind = envelope.message.kind().name();
            let sender = envelope.sender;
            let suspicious = matches!(
                reason,
                Ignored::SenderMismatch { .. }
                    | Ignored::UnitMismatch { .. }
                    | Ignored::NotForThisMachine(_)
            );
            if let Some(suppressed) = self.throttle(label) {
                if suspicious {
                    tracing::warn!(%from, %sender, kind, %reason, suppressed, "message ignored");
                } else {
                    tracing::debug!(%from, %sender, kind, %reason, suppressed, "message ignored");
                }
            }
        }
    }

    /// Sends an act's request to `host` (where the cache's messages to it go).
    async fn send_act(&mut self, host: HostId, message: &Message) {
        let to = self.shared.lock().address_of(SenderId(host.0));
        let Some(to) = to else {
            self.shared.lock().counters.unroutable += 1;
            return;
        };
        if let Err(error) = self.endpoint.send(to, message).await
            && let Some(suppressed) = self.throttle("send-error")
        {
            tracing::warn!(%to, %error, suppressed, "cannot send an act to a host");
        }
    }

    /// Hands a host's answer to the act waiting for it.
    fn on_act_reply(&mut self, sender: SenderId, from: SocketAddr, reply: DirectiveReply) {
        if !self.shared.acts.complete(HostId(sender.0), reply) {
            *self
                .shared
                .lock()
                .counters
                .ignored
                .entry("unexpected-reply")
                .or_default() += 1;
            if let Some(suppressed) = self.throttle("unexpected-reply") {
                tracing::debug!(%from, %sender, request = reply.request, suppressed, "act reply nobody waits for ignored (late, duplicate or from another host)");
            }
        }
    }

    fn on_timeout(&mut self) {
        let now = Instant::now();
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let before = Marks::of(state.cache.counters());
        state.cache.handle_timeout(now);
        state.observer.update_all(&state.cache, before);
    }

    async fn flush(&mut self) {
        let outgoing: Vec<(SocketAddr, Message)> = {
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            let mut out = Vec::new();
            while let Some(t) = state.cache.poll_transmit() {
                match state.address_of(t.to) {
                    Some(addr) => out.push((addr, t.message)),
                    None => {
                        state.counters.unroutable += 1;
                        tracing::debug!(to = %t.to, kind = t.message.kind().name(), "no address for destination; message dropped");
                    }
                }
            }
            out
        };
        for (to, message) in outgoing {
            if let Err(error) = self.endpoint.send(to, &message).await
                && let Some(suppressed) = self.throttle("send-error")
            {
                tracing::warn!(%to, %error, suppressed, "cannot send a health message");
            }
        }
    }
}
