//! One host identity's driver: a task that owns the host's [`HostProtocol`], its UDP
//! endpoint and its named rows, and serialises every input (datagrams from LB units, timer
//! deadlines, status events from checks and service managers, local API commands). After
//! each input it sends what the protocol queued and logs what changed.
//!
//! When the host is in a host group, the driver also owns its [`GroupDriver`]: gossip
//! datagrams and the group's deadlines are inputs like the others, every message of the
//! protocol machine is routed through the group's heartbeat relay (heartbeats go to the
//! units directly, to the leader, or consolidated by this host when it leads), and
//! heartbeats that members send to this host's endpoint go to the relay.
//!
//! Rows are named: a configured row by its service's name, an API row by the name it was
//! created with. The driver remembers every row it owns even while the row is not in the
//! table (its service is down), so the last known health, capacity and the operator's
//! target come back with it.
//!
//! Units may relay an operator's act (`DirectiveRequest`: drain, undrain, disable, set a
//! capacity) unless the configuration says `[agent] unit_acts = false`; the driver carries
//! it out as the local API would and answers with a `DirectiveReply`.
//!
//! Submodules: `commands` carries out the local API's commands, `acts` the units' acts,
//! `view` builds the JSON views of the rows and the host.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_health::{AppKey, HostProtocol};
use switchyard_transport::{Received, Throttle, TransportCounters, UdpEndpoint};
use switchyard_wire::health::{AppStatus, DirectiveState, Health};
use switchyard_wire::{AppId, HostId, Message, MessageKind, UnitId};
use tokio::sync::{mpsc, watch};

use crate::api::validate::MAX_API_ROWS_PER_HOST;
use crate::group::{RelayTo, Relayed};
use crate::status::{StatusEvent, StatusTasks};

use super::group::GroupDriver;

mod acts;
mod commands;
mod view;

pub(crate) use commands::{Command, DriverCounters, HostCounters};

/// At most one log line per this interval for each kind of repeated network complaint.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Config,
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    /// No service manager: the row always exists.
    Unmanaged,
    /// Not looked at yet.
    Unknown,
    Up,
    Down(String),
}

#[derive(Debug, Clone)]
struct CheckInfo {
    health: Health,
    load: Option<u8>,
    detail: String,
    at: Instant,
}

/// A row the driver owns, present in the table or not.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    app: AppId,
    key: AppKey,
    origin: Origin,
    service: Service,
    health: Health,
    load: u8,
    capacity: u8,
    target: DirectiveState,
    check: Option<CheckInfo>,
    /// The current directive state last logged (`None`: not present).
    logged_current: Option<DirectiveState>,
}

/// A configured row, as the driver starts with it.
#[derive(Debug, Clone)]
pub(crate) struct ConfigRow {
    /// Name (the service's).
    pub name: String,
    /// Wire id.
    pub app: AppId,
    /// Configured capacity.
    pub capacity: u8,
    /// Whether a service manager decides whether it exists.
    pub managed: bool,
}

/// One LB unit.
#[derive(Debug, Clone)]
pub(crate) struct UnitInfo {
    /// Name in the configuration.
    pub name: String,
    /// Where its control messages go.
    pub address: SocketAddr,
}

/// Where the host's endpoint sends a message.
#[derive(Debug, Clone, Copy)]
enum Destination {
    /// An LB unit's control address.
    Unit(UnitId),
    /// A group member's agent address (the leader's, for this host's heartbeats).
    Member(HostId, SocketAddr),
}

/// The driver of one host identity. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct HostDriver {
    name: String,
    protocol: HostProtocol,
    endpoint: UdpEndpoint,
    listen: SocketAddr,
    units: BTreeMap<UnitId, UnitInfo>,
    rows: Vec<Entry>,
    counters: DriverCounters,
    rejected_log: Throttle,
    ignored_log: Throttle,
    unknown_log: Throttle,
    send_log: Throttle,
    recv_log: Throttle,
    given_up_logged: u64,
    group: Option<GroupDriver>,
    /// Most rows the API may add ([`MAX_API_ROWS_PER_HOST`] unless a test says otherwise).
    max_api_rows: usize,
    /// Whether units' acts are carried out (else refused).
    unit_acts: bool,
}

impl HostDriver {
    /// A driver for `protocol`, sending through `endpoint` to `units`, with the configured
    /// `rows`. Rows without a service manager enter the table at once with health unknown.
    pub fn new(
        name: String,
        protocol: HostProtocol,
        endpoint: UdpEndpoint,
        units: BTreeMap<UnitId, UnitInfo>,
        rows: Vec<ConfigRow>,
    ) -> io::Result<Self> {
        let listen = endpoint.local_addr()?;
        let mut driver = Self {
            name,
            protocol,
            endpoint,
            listen,
            units,
            rows: Vec::new(),
            counters: DriverCounters::default(),
            rejected_log: Throttle::new(LOG_EVERY),
            ignored_log: Throttle::new(LOG_EVERY),
            unknown_log: Throttle::new(LOG_EVERY),
            send_log: Throttle::new(LOG_EVERY),
            recv_log: Throttle::new(LOG_EVERY),
            given_up_logged: 0,
            group: None,
            max_api_rows: MAX_API_ROWS_PER_HOST,
            unit_acts: true,
        };
        let now = Instant::now();
        for row in rows {
            let Ok(key) = AppKey::new(&row.app) else {
                tracing::error!(host = %driver.name, row = %row.name, "row cannot be encoded (application id too long); skipped");
                continue;
            };
            let entry = Entry {
                name: row.name,
                app: row.app,
                key,
                origin: Origin::Config,
                service: if row.managed {
                    Service::Unknown
                } else {
                    Service::Unmanaged
                },
                health: Health::Unknown,
                load: 0,
                capacity: row.capacity,
                target: DirectiveState::Active,
                check: None,
                logged_current: None,
            };
            driver.rows.push(entry);
            let index = driver.rows.len() - 1;
            if !row.managed {
                driver.insert(now, index, "configured");
            }
        }
        Ok(driver)
    }

    /// Makes the driver take part in the host's group.
    pub fn with_group(mut self, group: GroupDriver) -> Self {
        self.group = Some(group);
        self
    }

    /// Limits the rows the API may add to `limit` instead of [`MAX_API_ROWS_PER_HOST`].
    pub fn with_api_row_limit(mut self, limit: usize) -> Self {
        self.max_api_rows = limit;
        self
    }

    /// Whether units' acts are carried out (`[agent] unit_acts`; default true).
    pub fn with_unit_acts(mut self, allowed: bool) -> Self {
        self.unit_acts = allowed;
        self
    }

    /// The host's id.
    pub fn host(&self) -> HostId {
        self.protocol.host()
    }

    /// The endpoint's counters.
    pub fn transport(&self) -> Arc<TransportCounters> {
        Arc::clone(self.endpoint.counters())
    }

    /// The local address of the endpoint.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), then says goodbye to
    /// every unit. `_tasks` (the status tasks of this host) stop when it returns.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut status: mpsc::Receiver<StatusEvent>,
        mut shutdown: watch::Receiver<bool>,
        _tasks: StatusTasks,
    ) {
        loop {
            self.transmit().await;
            self.log_progress();
            if *shutdown.borrow() {
                break;
            }
            let protocol_deadline = self.protocol.poll_timeout();
            let group_deadline = self.group.as_ref().and_then(|g| g.group.poll_timeout());
            let deadline = match (protocol_deadline, group_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(tokio::time::Instant::from_std);
            let gossip = async {
                match self.group.as_mut() {
                    Some(g) => g.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.endpoint.recv() => self.on_datagram(received).await,
                received = gossip => {
                    if let Some(g) = self.group.as_mut() {
                        g.on_datagram(received).await;
                    }
                }
                () = sleep_until(deadline) => self.on_timeout(),
                Some(event) = status.recv() => self.on_status(event),
                Some(command) = commands.recv() => self.on_command(command).await,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        self.protocol.goodbye();
        self.transmit().await;
        tracing::info!(host = %self.name, units = self.units.len(), "goodbye sent");
        if let Some(g) = self.group.as_mut() {
            g.leave().await;
        }
    }

    /// Runs the protocol's and the group's timers that are due.
    fn on_timeout(&mut self) {
        let now = Instant::now();
        if self.protocol.poll_timeout().is_some_and(|at| at <= now) {
            self.protocol.handle_timeout(now);
        }
        if let Some(g) = self.group.as_mut()
            && g.group.poll_timeout().is_some_and(|at| at <= now)
        {
            g.group.handle_timeout(now);
        }
    }

    /// Sends everything the protocol queued (through the group's relay when the host is in
    /// a group), then the group's gossip.
    async fn transmit(&mut self) {
        let now = Instant::now();
        let view = self.group.as_ref().map(|g| g.group.view());
        while let Some(t) = self.protocol.poll_transmit() {
            let (to, message) = match (self.group.as_mut(), &view) {
                (Some(g), Some(view)) => match g.relay.route(now, view, t) {
                    None => continue,
                    Some(Relayed {
                        to: RelayTo::Unit(unit),
                        message,
                    }) => (Destination::Unit(unit), message),
                    Some(Relayed {
                        to: RelayTo::Host(host),
                        message,
                    }) => match g.group.agent_addr(host) {
                        Some(addr) => (Destination::Member(host, addr), message),
                        None => {
                            g.unroutable(host);
                            continue;
                        }
                    },
                },
                _ => (Destination::Unit(t.to), t.message),
            };
            self.send(to, &message).await;
        }
        if let Some(g) = self.group.as_mut() {
            g.flush().await;
        }
    }

    /// Sends one message from the host's endpoint.
    async fn send(&mut self, to: Destination, message: &Message) {
        let addr = match to {
            Destination::Unit(unit) => match self.units.get(&unit) {
                Some(info) => info.address,
                None => return,
            },
            Destination::Member(_, addr) => addr,
        };
        if let Err(error) = self.endpoint.send(addr, message).await {
            self.counters.send_errors += 1;
            if let Some(suppressed) = self.send_log.event(Instant::now()) {
                match to {
                    Destination::Unit(unit) => {
                        tracing::warn!(host = %self.name, unit = %self.unit_name(unit), %error, suppressed, "cannot send");
                    }
                    Destination::Member(leader, _) => {
                        tracing::warn!(host = %self.name, %leader, %error, suppressed, "cannot send to the group leader");
                    }
                }
            }
        }
    }

    async fn on_datagram(&mut self, received: io::Result<Received>) {
        let now = Instant::now();
        let received = match received {
            Ok(r) => r,
            Err(error) => {
                if let Some(suppressed) = self.recv_log.event(now) {
                    tracing::warn!(host = %self.name, %error, suppressed, "cannot receive");
                }
                // Do not spin on a socket that keeps failing.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        };
        let envelope = match received.result {
            Ok(envelope) => envelope,
            Err(error) => {
                if let Some(suppressed) = self.rejected_log.event(now) {
                    tracing::warn!(host = %self.name, from = %received.from, %error, suppressed, "datagram rejected");
                }
                return;
            }
        };
        let unit = UnitId(envelope.sender.0);
        let Some(info) = self.units.get(&unit) else {
            if self.group.is_some() && matches!(envelope.message, Message::Heartbeat(_)) {
                // A member's heartbeat for the leader (counted and logged when refused).
                if let (Some(g), Message::Heartbeat(hb)) = (self.group.as_mut(), envelope.message) {
                    let _ = g.on_member_heartbeat(now, envelope.sender, received.from, hb);
                }
                return;
            }
            self.counters.unknown_sender += 1;
            if let Some(suppressed) = self.unknown_log.event(now) {
                tracing::warn!(host = %self.name, from = %received.from, sender = %envelope.sender, suppressed, "message from a sender that is not a health-cache unit ignored");
            }
            return;
        };
        let unit_name = info.name.clone();
        if let Message::DirectiveRequest(request) = &envelope.message {
            self.on_unit_act(unit, &unit_name, request).await;
            return;
        }
        let kind = envelope.message.kind();
        match self.protocol.handle(now, unit, &envelope.message) {
            Ok(()) if kind == MessageKind::GetTableSnapshot => {
                tracing::info!(host = %self.name, unit = %unit_name, generation = self.protocol.published().generation(), rows = self.protocol.published().len(), "resync: serving the table snapshot");
            }
            Ok(()) => {}
            Err(reason) => {
                self.counters.ignored += 1;
                if let Some(suppressed) = self.ignored_log.event(now) {
                    tracing::info!(host = %self.name, unit = %unit_name, message = kind.name(), %reason, suppressed, "message ignored");
                }
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.rows.iter().position(|e| e.name == name)
    }

    fn index_of_app(&self, app: &AppId) -> Option<usize> {
        let key = AppKey::new(app).ok()?;
        self.rows.iter().position(|e| e.key == key)
    }

    fn present(&self, index: usize) -> bool {
        self.rows
            .get(index)
            .is_some_and(|e| self.protocol.row(&e.app).is_some())
    }

    /// Puts row `index` into the table with its remembered status and target.
    fn insert(&mut self, now: Instant, index: usize, why: &str) {
        let Some(e) = self.rows.get(index) else {
            return;
        };
        let status = match AppStatus::new(e.health, e.load, e.capacity) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(host = %self.name, row = %e.name, %error, "invalid status; row not added");
                return;
            }
        };
        let (app, target, name) = (e.app.clone(), e.target, e.name.clone());
        if let Err(error) = self.protocol.set_app(now, app.clone(), status) {
            tracing::error!(host = %self.name, row = %name, %error, "row not added");
            return;
        }
        if target != DirectiveState::Active
            && let Err(error) = self.protocol.set_target(now, &app, target)
        {
            tracing::error!(host = %self.name, row = %name, %error, "cannot restore the target");
        }
        tracing::info!(host = %self.name, row = %name, vip = %app.vip, endpoint = %app.endpoint, health = status.health().as_str(), capacity = status.capacity(), "row added ({why})");
    }

    /// Takes row `index` out of the table (remembering its load).
    fn take_out(&mut self, now: Instant, index: usize, why: &str) {
        let Some(e) = self.rows.get(index) else {
            return;
        };
        let app = e.app.clone();
        let Some(load) = self.protocol.row(&app).map(|v| v.row.status.load()) else {
            return;
        };
        if let Err(error) = self.protocol.remove_app(now, &app) {
            tracing::error!(host = %self.name, row = %e.name, %error, "row not removed");
            return;
        }
        if let Some(e) = self.rows.get_mut(index) {
            e.load = load;
            e.logged_current = None;
            tracing::info!(host = %self.name, row = %e.name, "row removed ({why})");
        }
    }

    /// Sets the health, capacity of row `index` (and the table's, if present).
    fn update_status(
        &mut self,
        now: Instant,
        index: usize,
        health: Health,
        capacity: u8,
        why: &str,
    ) {
        let present = self.present(index);
        let Some(e) = self.rows.get_mut(index) else {
            return;
        };
        if e.health != health {
            tracing::info!(host = %self.name, row = %e.name, "health {} -> {} ({why})", e.health.as_str(), health.as_str());
        }
        if e.capacity != capacity {
            tracing::info!(host = %self.name, row = %e.name, "capacity {} -> {capacity} ({why})", e.capacity);
        }
        e.health = health;
        e.capacity = capacity;
        if !present {
            return;
        }
        let app = e.app.clone();
        let load = self
            .protocol
            .row(&app)
            .map_or(e.load, |v| v.row.status.load());
        match AppStatus::new(health, load, capacity) {
            Ok(status) => {
                if let Err(error) = self.protocol.set_app(now, app, status) {
                    tracing::error!(host = %self.name, row = %e.name, %error, "status not updated");
                }
            }
            Err(error) => {
                tracing::error!(host = %self.name, row = %e.name, %error, "invalid status")
            }
        }
    }

    /// Feeds a raw load sample of row `index` through the smoother.
    fn sample_load(&mut self, now: Instant, index: usize, raw: u8) {
        let present = self.present(index);
        let Some(e) = self.rows.get_mut(index) else {
            return;
        };
        if !present {
            e.load = raw.min(100);
            return;
        }
        match self.protocol.report_load(now, &e.app, raw) {
            Ok(Some(load)) => {
                e.load = load;
                tracing::debug!(host = %self.name, row = %e.name, raw, load, "load changed");
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(host = %self.name, row = %e.name, %error, "load not updated")
            }
        }
    }

    fn on_status(&mut self, event: StatusEvent) {
        let now = Instant::now();
        let Some(index) = self.index_of_app(event.app()) else {
            tracing::debug!(host = %self.name, app = ?event.app(), "status event for an unknown row");
            return;
        };
        match event {
            StatusEvent::Check {
                health,
                load,
                detail,
                ..
            } => {
                if let Some(e) = self.rows.get_mut(index) {
                    e.check = Some(CheckInfo {
                        health,
                        load,
                        detail: detail.clone(),
                        at: now,
                    });
                }
                let capacity = self.rows.get(index).map_or(0, |e| e.capacity);
                let why = format!("health check: {detail}");
                self.update_status(now, index, health, capacity, &why);
                if let Some(load) = load {
                    self.sample_load(now, index, load);
                }
            }
            StatusEvent::ServiceUp { .. } => {
                if let Some(e) = self.rows.get_mut(index) {
                    e.service = Service::Up;
                }
                if !self.present(index) {
                    self.insert(now, index, "service up");
                }
            }
            StatusEvent::ServiceDown { reason, .. } => {
                if let Some(e) = self.rows.get_mut(index) {
                    if e.service != Service::Down(reason.clone()) {
                        tracing::info!(host = %self.name, row = %e.name, %reason, "service down");
                    }
                    e.service = Service::Down(reason);
                }
                if self.present(index) {
                    self.take_out(now, index, "service down");
                }
            }
        }
    }

    /// Logs handshakes that completed and units given up on since the last call.
    fn log_progress(&mut self) {
        for i in 0..self.rows.len() {
            let Some(e) = self.rows.get(i) else { continue };
            let current = self.protocol.row(&e.app).map(|v| v.row.directive.current);
            if current != e.logged_current {
                if let (Some(state), Some(_)) = (current, e.logged_current) {
                    tracing::info!(host = %self.name, row = %e.name, "handshake complete: current is now {}", state.as_str());
                }
                if let Some(e) = self.rows.get_mut(i) {
                    e.logged_current = current;
                }
            }
        }
        let given_up = self.protocol.counters().units_given_up;
        if given_up > self.given_up_logged {
            self.given_up_logged = given_up;
            for h in self.protocol.handshakes() {
                if !h.given_up.is_empty() {
                    let units: Vec<&str> = h.given_up.iter().map(|u| self.unit_name(*u)).collect();
                    tracing::warn!(host = %self.name, endpoint = %h.app.endpoint, ?units, "handshake gave up on silent units");
                }
            }
        }
    }

    fn unit_name(&self, unit: UnitId) -> &str {
        self.units.get(&unit).map_or("?", |u| u.name.as_str())
    }

    fn unit_names(&self, units: &[UnitId]) -> Vec<String> {
        units
            .iter()
            .map(|u| self.unit_name(*u).to_owned())
            .collect()
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A driver's message kinds as metric labels: every kind with a non-zero count.
pub(crate) fn kind_counts(counts: &switchyard_health::MessageCounts) -> Vec<(&'static str, u64)> {
    counts.iter().map(|(k, n)| (k.name(), n)).collect()
}

/// Heartbeats queued (one per unit).
pub(crate) fn heartbeats(counters: &switchyard_health::HostCounters) -> u64 {
    counters.sent.get(MessageKind::Heartbeat)
}
