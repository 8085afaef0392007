//! The `router` role: the request router ([`switchyard_router`]) inside a unit.
//!
//! At start it compiles the router's part of the configuration, binds every listener a
//! request-mode service uses (`listeners[].address`; port 0 picks one, for tests), and
//! creates the [`Router`] with the affinity cookie key derived from the cluster secret, its
//! metrics on the unit's registry (the one `/metrics` encodes).
//!
//! **Backends.** The router picks hosts from an `ArcSwap<Backends>` snapshot that this
//! module keeps fed:
//!
//! - with the health-cache role on the same unit, every 200 ms from the cache
//!   ([`HealthCacheHandle::read`]): per pool host, the rows of that host whose endpoint and
//!   info are the pool host's `address` and `app` (preferring the rows of request-mode
//!   services on that pool). A host that stopped heartbeating or has no such row is *down*;
//!   a failing row, or a directive target `inactive`, makes it *down*; a target `draining`
//!   makes it *draining* (only cookie-affinitized requests); otherwise *active* with weight
//!   = spare capacity, capacity × (100 − load) — the quantity allotments are proportional
//!   to. A snapshot is stored only when it differs, and each host's change is logged.
//! - without it, from the allotments of the configuration's health-cache units, asked
//!   over UDP ([`crate::router_remote`], through the [`crate::allotment_client`] the
//!   classifier role uses too): the same states, with weight = the host's share in basis
//!   points; a draining host stays reachable for its affinitized requests because the
//!   router asks for the affinity variant of the allotment, which lists it. Answers are
//!   used for their duration plus a grace period; after that, or before the first answer,
//!   the static configuration (every host active, weight = its configured capacity) is
//!   used, as it is when no unit runs the health-cache role: the router then relies on its
//!   own passive outlier detection to avoid dead hosts.
//!
//! Where the backends come from is `source` in `GET /v1/router` (`local-cache`,
//! `remote-allotment` or `static`, with a `remote` section on a unit that asks
//! health-cache units) and `switchyard_router_backend_source{source}` (1 for the current
//! one).
//!
//! **Sessions.** With the session-store role on the same unit the router gets the unit's
//! DAM as its session directory ([`crate::router_sessions`]): client-IP and header affinity
//! are shared with every router of the cluster and keep draining hosts' clients, and
//! `app-cookie` affinity follows the sessions hosts report.
//!
//! **Outliers.** Hosts the router ejected after consecutive errors are logged when they
//! leave and rejoin rotation and exported as `switchyard_router_host_ejected{host}` (0/1).
//!
//! **Admin.** [`RouterHandle::view`] is the `GET /v1/router` document (with the response
//! caches' sizes); `POST /v1/cache/invalidate` ([`parse_invalidation`]) removes stored
//! responses by route or by host and path prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use switchyard_config::{Config, ListenerProtocol, ServiceMode, Unit};
use switchyard_health::allotment::spare_capacity;
use switchyard_health::{ConsolidatedCache, ServiceKey};
use switchyard_router::{
    Backend, Backends, HostState, Invalidation, Router, RouterConfig, RouterError,
};
use switchyard_wire::allotment::AllotmentScheme;
use switchyard_wire::health::{DirectiveState, Health, Row};
use switchyard_wire::{HostId, Message, Protocol};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::HealthCacheHandle;
use crate::admin::AdminState;
use crate::admin::api::ErrorBody;
use crate::allotment_client::{AllotmentClient, ClientCounters};
use crate::router_remote::{Fed, RemoteBackends, RemoteView, Status, refresh_every};

/// How often the backends are recomputed from the health cache and outliers looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long stopping lets open client connections finish (under the unit's stop grace).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Listen backlog of every listener.
const BACKLOG: u32 = 4096;

/// Why the router role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterRoleError {
    /// The router's configuration cannot be used (certificates, rules).
    #[error("router role: {0}")]
    Router(#[from] RouterError),
    /// The cluster key (for allotments over UDP) cannot be derived.
    #[error("router role: cannot derive the cluster key: {0}")]
    Key(#[from] switchyard_wire::KeyError),
    /// A listener's address cannot be bound.
    #[error("router role: cannot listen on {addr} for listener \"{name}\": {source}")]
    Bind {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// One host of a pool as the configuration describes it, with the rows that speak for it.
#[derive(Debug, Clone)]
pub(crate) struct PlanHost {
    pub(crate) id: HostId,
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) app: String,
    /// VIPs of the request-mode services on this pool (their rows are preferred).
    pub(crate) vips: Vec<SocketAddr>,
}

/// One pool: its hosts, and the services whose rows (or allotments) speak for them.
#[derive(Debug, Clone)]
pub(crate) struct PlanPool {
    pub(crate) name: String,
    pub(crate) hosts: Vec<PlanHost>,
    /// The service keys a health-cache unit is asked about for this pool: the VIPs of
    /// the request-mode services on it (else of its TCP services of any mode) with each
    /// app of its hosts. Empty when no service uses the pool.
    pub(crate) keys: Vec<ServiceKey>,
}

/// Every pool's hosts, from the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) pools: Vec<PlanPool>,
    /// The static configuration: every host active, weight = configured capacity.
    pub(crate) fallback: Backends,
}

impl Plan {
    fn from_config(config: &Config) -> Self {
        let pools = config
            .pools
            .iter()
            .map(|pool| {
                // The services that send to this pool: as theirs, or through a route (the
                // hosts' agents report a row for each, `Config::agent_apps`).
                let on_pool = || {
                    config.services.iter().filter(|s| {
                        s.pool == pool.name || config.routes(s).iter().any(|r| r.pool == pool.name)
                    })
                };
                let vips: Vec<SocketAddr> = on_pool()
                    .filter(|s| matches!(s.mode, ServiceMode::Request { .. }))
                    .map(|s| s.vip)
                    .collect();
                let asked: Vec<SocketAddr> = if vips.is_empty() {
                    on_pool()
                        .filter(|s| s.protocol == Protocol::Tcp)
                        .map(|s| s.vip)
                        .collect()
                } else {
                    vips.clone()
                };
                let apps: BTreeSet<&str> = pool.hosts.iter().map(|h| h.app.as_str()).collect();
                let keys = asked
                    .iter()
                    .flat_map(|vip| {
                        apps.iter()
                            .map(|app| ServiceKey::new(*vip, Protocol::Tcp, *app))
                    })
                    .collect();
                let hosts = pool
                    .hosts
                    .iter()
                    .map(|h| PlanHost {
                        id: h.id,
                        name: h.name.clone(),
                        address: h.address,
                        app: h.app.clone(),
                        vips: vips.clone(),
                    })
                    .collect();
                PlanPool {
                    name: pool.name.clone(),
                    hosts,
                    keys,
                }
            })
            .collect();
        Self {
            pools,
            fallback: Backends::from_config(config),
        }
    }

    /// Every service key of every pool, once.
    fn keys(&self) -> BTreeSet<ServiceKey> {
        self.pools
            .iter()
            .flat_map(|p| p.keys.iter().cloned())
            .collect()
    }

    /// Every pool's hosts, each with the state and weight `standing` gives it.
    pub(crate) fn backends_by(
        &self,
        mut standing: impl FnMut(&PlanPool, &PlanHost) -> (HostState, u32),
    ) -> Backends {
        let mut out = Backends::new();
        for pool in &self.pools {
            let hosts = pool
                .hosts
                .iter()
                .map(|h| {
                    let (state, weight) = standing(pool, h);
                    Backend {
                        id: h.id,
                        address: h.address,
                        state,
                        weight,
                    }
                })
                .collect();
            out.set_pool(&pool.name, hosts);
        }
        out
    }

    /// The backends the cache says now.
    fn backends(&self, cache: &ConsolidatedCache, now: std::time::Instant) -> Backends {
        self.backends_by(|_, h| {
            let rows: Vec<&Row> = if cache.is_alive(h.id, now) {
                cache
                    .host(h.id)
                    .map(|view| view.table.rows().collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            host_state(h, &rows)
        })
    }

    fn host_name(&self, id: HostId) -> Option<&str> {
        self.pools
            .iter()
            .flat_map(|p| p.hosts.iter())
            .find(|h| h.id == id)
            .map(|h| h.name.as_str())
    }
}

/// A host's state and weight from its rows (those of an alive host; none otherwise): the
/// rows for its endpoint and app, of the pool's request-mode services if it has any; the
/// worst state among them and the smallest spare capacity.
fn host_state(host: &PlanHost, rows: &[&Row]) -> (HostState, u32) {
    let mine: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| {
            r.app.protocol == Protocol::Tcp
                && r.app.endpoint == host.address
                && r.app.info == host.app
        })
        .collect();
    let preferred: Vec<&Row> = mine
        .iter()
        .copied()
        .filter(|r| host.vips.contains(&r.app.vip))
        .collect();
    let rows = if preferred.is_empty() {
        mine
    } else {
        preferred
    };
    if rows.is_empty() {
        return (HostState::Down, 0);
    }
    combine(rows.into_iter().map(|row| {
        let state = match (row.status.health(), row.directive.target) {
            (Health::Healthy, DirectiveState::Active) => HostState::Active,
            (Health::Healthy, DirectiveState::Draining) => HostState::Draining,
            _ => HostState::Down,
        };
        (
            state,
            u32::try_from(spare_capacity(row)).unwrap_or(u32::MAX),
        )
    }))
}

/// A host's state and weight from what several rows (or allotments) say about it: the
/// worst state, and the smallest weight when that is active (else 0).
pub(crate) fn combine(standings: impl Iterator<Item = (HostState, u32)>) -> (HostState, u32) {
    let (state, weight) = standings.fold((HostState::Active, u32::MAX), |(s, w), (s2, w2)| {
        (worse(s, s2), w.min(w2))
    });
    (
        state,
        if state == HostState::Active {
            weight
        } else {
            0
        },
    )
}

/// The state that takes less traffic.
fn worse(a: HostState, b: HostState) -> HostState {
    let rank = |s: HostState| match s {
        HostState::Active => 0,
        HostState::Draining => 1,
        HostState::Down => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Where the role's backends come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendSource {
    /// The unit's own health cache.
    LocalCache,
    /// Allotments from health-cache units over UDP (`crate::router_remote`).
    RemoteAllotment,
    /// The static configuration: no health-cache unit configured, none answered yet, or
    /// all silent past the grace period. Every host active, weight = configured capacity.
    Static,
}

impl BackendSource {
    const ALL: [Self; 3] = [Self::LocalCache, Self::RemoteAllotment, Self::Static];

    /// The name in `GET /v1/router` and the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::LocalCache => "local-cache",
            Self::RemoteAllotment => "remote-allotment",
            Self::Static => "static",
        }
    }
}

/// A listener the role serves.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerView {
    /// Its name.
    pub name: String,
    /// `http`, `h2c` or `https`.
    pub protocol: &'static str,
    /// Where it listens (bound address).
    pub address: SocketAddr,
}

/// One backend in `GET /v1/router`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    /// Host id.
    pub host: u32,
    /// Host name from the configuration.
    pub name: String,
    /// The application's address.
    pub address: SocketAddr,
    /// `active`, `draining` or `down`.
    pub state: &'static str,
    /// Relative share of new requests.
    pub weight: u32,
    /// Out of rotation after consecutive errors (outlier detection).
    pub ejected: bool,
}

/// One pool in `GET /v1/router`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Its hosts.
    pub backends: Vec<BackendView>,
}

/// Counters in `GET /v1/router`.
#[derive(Debug, Clone, Serialize)]
pub struct RouterCountersView {
    /// Requests answered.
    pub requests: u64,
    /// Answers by status class.
    pub responses: BTreeMap<&'static str, u64>,
    /// Attempts repeated on another host.
    pub retries: u64,
    /// Requests refused by a protection limit.
    pub rejected: u64,
    /// Outlier ejections.
    pub outlier_ejections: u64,
    /// Backend snapshots stored since start.
    pub backend_updates: u64,
}

/// The `GET /v1/router` document.
#[derive(Debug, Clone, Serialize)]
pub struct RouterView {
    /// Where host states come from: `local-cache`, `remote-allotment` or `static`.
    pub source: BackendSource,
    /// On a unit without the health-cache role that has health-cache units to ask: whom
    /// it asks and how current the answers are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteView>,
    /// Listeners served.
    pub listeners: Vec<ListenerView>,
    /// Pools and their backends.
    pub pools: Vec<PoolView>,
    /// Totals.
    pub counters: RouterCountersView,
    /// Reloads applied since the role started.
    pub reloads: u64,
    /// Response caches: one per route that has one.
    pub caches: Vec<CacheView>,
}

/// One route's response cache in `GET /v1/router`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    /// The route label (`service#N`, as in metrics and invalidations).
    pub route: String,
    /// Responses held (variants count separately).
    pub entries: u64,
    /// Bytes held (bodies, headers and keys).
    pub bytes: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectedLabels {
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: String,
    state: &'static str,
}

#[derive(Debug)]
struct Shared {
    router: Router,
    unit: String,
    /// The file the unit's configuration came from (re-read by reloads).
    config_path: std::path::PathBuf,
    /// Served listeners by name (bound address, protocol, the stop of its serve task).
    served: Mutex<BTreeMap<String, Served>>,
    source: Mutex<BackendSource>,
    health: Option<HealthCacheHandle>,
    /// Without the health-cache role, with health-cache units to ask.
    remote: Option<Mutex<Remote>>,
    plan: ArcSwap<Plan>,
    ejected_gauge: Family<EjectedLabels, Gauge>,
    source_gauge: Family<SourceLabels, Gauge>,
    pool_gauge: Family<PoolStateLabels, Gauge>,
    updates: std::sync::atomic::AtomicU64,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    reloads: std::sync::atomic::AtomicU64,
    /// Serve tasks of listeners that reloads added (awaited when the role stops).
    added_tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The remote feed's state, shared by the feed task, reloads and the admin view.
#[derive(Debug)]
struct Remote {
    answers: RemoteBackends,
    units: Vec<SocketAddr>,
    asking: Option<SocketAddr>,
    counters: ClientCounters,
}

/// A listener being served.
#[derive(Debug)]
struct Served {
    /// The configured address (the bound one is in `view`).
    configured: SocketAddr,
    view: ListenerView,
    stop: watch::Sender<bool>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadSummary {
    /// Reloads since the role started, this one included.
    pub generation: u64,
    /// Listeners bound by this reload.
    pub added: Vec<String>,
    /// Listeners that stopped accepting (their open connections finish).
    pub removed: Vec<String>,
    /// Listeners served on, with the new rules, limits and certificates.
    pub kept: Vec<String>,
    /// Things that changed but apply only after a restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload was refused (the old configuration stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file does not load or validate; the diagnostics say where.
    #[error("{path} is not a valid configuration:\n{diagnostics}")]
    Invalid {
        /// The configuration file.
        path: String,
        /// Every problem found, with file, line and hint.
        diagnostics: String,
    },
    /// The file is valid but cannot be applied by a reload.
    #[error("{0}")]
    Refused(String),
    /// The router could not compile or bind it.
    #[error(transparent)]
    Role(#[from] RouterRoleError),
}

/// The running router role, shared with the admin API.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl RouterHandle {
    /// The router.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// The listeners with their bound addresses, by name.
    pub fn listeners(&self) -> Vec<ListenerView> {
        lock(&self.shared.served)
            .values()
            .map(|s| s.view.clone())
            .collect()
    }

    /// Where listener `name` listens.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.shared.served).get(name).map(|s| s.view.address)
    }

    /// Re-reads the configuration file the unit started from, validates it and applies
    /// the router's part without closing a connection: rules, limits, certificates and
    /// pools are swapped (new connections and requests use them at once), new listeners
    /// are bound, removed ones stop accepting and drain. A file that does not validate,
    /// that drops this unit or its router role, or whose new listeners cannot be bound
    /// changes nothing.
    pub async fn reload(&self, path: &std::path::Path) -> Result<ReloadSummary, ReloadError> {
        let s = &self.shared;
        let _one = s.reloading.lock().await;
        let config = switchyard_config::load_file(path).map_err(|d| ReloadError::Invalid {
            path: path.display().to_string(),
            diagnostics: d.to_string(),
        })?;
        let Some(unit) = config.unit(&s.unit) else {
            return Err(ReloadError::Refused(format!(
                "the new configuration has no unit \"{}\"; changing units needs a restart",
                s.unit
            )));
        };
        if !unit.has_role(switchyard_config::Role::Router) {
            return Err(ReloadError::Refused(format!(
                "the new configuration takes the router role from unit \"{}\"; changing roles needs a restart",
                s.unit
            )));
        }
        let router_config = RouterConfig::from_config(&config)
            .map_err(RouterRoleError::from)?
            .with_drain_timeout(DRAIN_TIMEOUT);
        let mut summary = ReloadSummary::default();
        if config.router.upstream != s.router.config().settings().upstream {
            summary.restart_needed.push("router.upstream".to_owned());
        }
        let wanted: BTreeMap<String, (SocketAddr, &'static str)> = config
            .listeners
            .iter()
            .filter(|l| router_config.listener_names().contains(&l.name.as_str()))
            .map(|l| (l.name.clone(), (l.address, protocol_name(&l.protocol))))
            .collect();
        // Listeners that go away or move (address or protocol) stop first, so that a
        // moved one can bind its address again.
        let (moved, removed): (Vec<String>, Vec<String>) = {
            let served = lock(&s.served);
            let gone: Vec<String> = served
                .iter()
                .filter(|(name, sv)| wanted.get(*name) != Some(&(sv.configured, sv.view.protocol)))
                .map(|(name, _)| name.clone())
                .collect();
            gone.into_iter().partition(|n| wanted.contains_key(n))
        };
        let to_bind: Vec<(String, SocketAddr, &'static str)> = wanted
            .iter()
            .filter(|(name, _)| !lock(&s.served).contains_key(*name) || moved.contains(*name))
            .map(|(name, (addr, proto))| (name.clone(), *addr, *proto))
            .collect();
        // Bind new listeners whose address none of ours holds before changing anything,
        // so that a busy address refuses the whole reload.
        let held: Vec<SocketAddr> = lock(&s.served).values().map(|sv| sv.configured).collect();
        let mut bound = Vec::new();
        let mut later = Vec::new();
        for (name, addr, proto) in to_bind {
            if moved.contains(&name) || held.contains(&addr) {
                later.push((name, addr, proto));
            } else {
                let socket = bind(&name, addr).await?;
                bound.push((name, addr, proto, socket));
            }
        }
        // From here on the reload applies.
        s.router.reload(router_config);
        s.plan.store(Arc::new(Plan::from_config(&config)));
        self.update_backends();
        for name in moved.iter().chain(&removed) {
            let stopped = lock(&s.served).remove(name);
            if let Some(sv) = stopped {
                sv.stop.send_replace(true);
                tracing::info!(unit = %s.unit, listener = %name, address = %sv.view.address, "router listener stopped accepting (reload); open connections finish");
            }
        }
        // A moved listener, or one taking over a stopped listener's address: its old
        // socket closes as soon as the old serve task sees the stop.
        for (name, addr, proto) in later {
            match bind_retrying(&name, addr).await {
                Ok(socket) => bound.push((name, addr, proto, socket)),
                Err(e) => {
                    tracing::error!(unit = %s.unit, listener = %name, error = %e, "reload could not bind a listener");
                    summary.restart_needed.push(format!("listener {name}: {e}"));
                }
            }
        }
        for (name, addr, proto, socket) in bound {
            let handle = self.serve(&name, addr, proto, socket);
            match handle {
                Ok(h) => {
                    lock(&s.added_tasks).push(h);
                    summary.added.push(name);
                }
                Err(e) => summary
                    .restart_needed
                    .push(format!("listener {name} ({e})")),
            }
        }
        summary.removed = removed;
        summary.kept = lock(&s.served)
            .keys()
            .filter(|n| !summary.added.contains(n))
            .cloned()
            .collect();
        summary.generation = s.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(
            unit = %s.unit,
            generation = summary.generation,
            added = ?summary.added,
            removed = ?summary.removed,
            kept = ?summary.kept,
            restart_needed = ?summary.restart_needed,
            "router configuration reloaded"
        );
        Ok(summary)
    }

    /// Spawns the serve task of a bound listener and records it.
    fn serve(
        &self,
        name: &str,
        configured: SocketAddr,
        protocol: &'static str,
        socket: TcpListener,
    ) -> Result<JoinHandle<()>, std::io::Error> {
        let address = socket.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let serve = self.shared.router.serve_until(name, socket, stop_rx);
        let view = ListenerView {
            name: name.to_owned(),
            protocol,
            address,
        };
        tracing::info!(
            unit = %self.shared.unit,
            listener = %name,
            protocol,
            address = %address,
            "router role listening"
        );
        lock(&self.shared.served).insert(
            name.to_owned(),
            Served {
                configured,
                view,
                stop,
            },
        );
        let name = name.to_owned();
        Ok(tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(listener = %name, %error, "router listener stopped");
            }
        }))
    }

    /// The `GET /v1/router` document.
    pub fn view(&self) -> RouterView {
        let s = &self.shared;
        let ejected: BTreeSet<HostId> = s.router.ejected_hosts().into_iter().collect();
        let plan = s.plan.load();
        let backends = s.router.backends().load();
        let pools = backends
            .pools()
            .into_iter()
            .map(|(name, hosts)| PoolView {
                name: name.to_owned(),
                backends: hosts
                    .iter()
                    .map(|b| BackendView {
                        host: b.id.0,
                        name: plan.host_name(b.id).unwrap_or("").to_owned(),
                        address: b.address,
                        state: b.state.name(),
                        weight: b.weight,
                        ejected: ejected.contains(&b.id),
                    })
                    .collect(),
            })
            .collect();
        let c = s.router.counters();
        let responses = BTreeMap::from([
            ("1xx", c.responses_1xx),
            ("2xx", c.responses_2xx),
            ("3xx", c.responses_3xx),
            ("4xx", c.responses_4xx),
            ("5xx", c.responses_5xx),
        ]);
        let remote = s.remote.as_ref().map(|r| {
            let r = lock(r);
            let now = Instant::now();
            RemoteView {
                units: r.units.clone(),
                asking: r.asking,
                status: r.answers.status(now),
                last_answer_ms: r
                    .answers
                    .last_answer_age(now)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                counters: r.counters,
            }
        });
        RouterView {
            source: *lock(&s.source),
            remote,
            listeners: self.listeners(),
            pools,
            counters: RouterCountersView {
                requests: c.requests,
                responses,
                retries: c.retries,
                rejected: c.rejected,
                outlier_ejections: c.outlier_ejections,
                backend_updates: s.updates.load(std::sync::atomic::Ordering::Relaxed),
            },
            reloads: s.reloads.load(std::sync::atomic::Ordering::Relaxed),
            caches: s
                .router
                .caches()
                .into_iter()
                .map(|c| CacheView {
                    route: c.route,
                    entries: c.entries,
                    bytes: c.bytes,
                })
                .collect(),
        }
    }
}

/// The router role's admin routes: `GET /v1/router`, `POST /v1/cache/invalidate`.
pub(crate) fn admin_routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/v1/router", axum::routing::get(router_document))
        .route("/v1/cache/invalidate", axum::routing::post(invalidate))
        .route("/v1/reload", axum::routing::post(reload))
}

/// `POST /v1/reload`: re-reads the configuration file the unit started from and applies
/// the router's part (as SIGHUP does). 200 with what changed; 400 with the diagnostics
/// when the file is refused (the old configuration stays).
async fn reload(State(state): State<AdminState>) -> Response {
    let Some(router) = &state.router else {
        return no_router(&state);
    };
    let path = router.shared.config_path.clone();
    match router.reload(&path).await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// The answer to `POST /v1/cache/invalidate`.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidateView {
    /// Stored responses removed.
    pub removed: u64,
}

/// Reads an invalidation request: `{"route": "web#0"}` (optionally with `"prefix"`: a
/// cache key prefix, `host/path…`) or `{"host": "www.example.com", "path_prefix": "/img/"}`
/// (every cache). Every mistake gets a sentence saying what is expected.
pub fn parse_invalidation(body: &[u8]) -> Result<Invalidation, String> {
    const EXPECTED: &str = r#"expected {"route": "service#N"} (optional "prefix") or {"host": "name", "path_prefix": "/…"}"#;
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); {EXPECTED}"))?;
    let Some(object) = value.as_object() else {
        return Err(format!("the body is not a JSON object; {EXPECTED}"));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["route", "prefix", "host", "path_prefix"].contains(&k.as_str()))
    {
        return Err(format!("unknown field \"{unknown}\"; {EXPECTED}"));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{key}\" must be a non-empty string; {EXPECTED}")),
        }
    };
    let (route, prefix, host, path_prefix) = (
        text("route")?,
        text("prefix")?,
        text("host")?,
        text("path_prefix")?,
    );
    match (route, host) {
        (Some(route), None) => {
            if path_prefix.is_some() {
                return Err(format!(
                    "\"path_prefix\" goes with \"host\", not \"route\"; {EXPECTED}"
                ));
            }
            Ok(Invalidation::Route { route, prefix })
        }
        (None, Some(host)) => {
            if prefix.is_some() {
                return Err(format!(
                    "\"prefix\" goes with \"route\", not \"host\"; {EXPECTED}"
                ));
            }
            let path_prefix = path_prefix.unwrap_or_else(|| "/".to_owned());
            if !path_prefix.starts_with('/') {
                return Err(format!("\"path_prefix\" must start with \"/\"; {EXPECTED}"));
            }
            if host.contains(['/', ' ']) {
                return Err(format!(
                    "\"host\" is a host name without scheme or path; {EXPECTED}"
                ));
            }
            Ok(Invalidation::Host { host, path_prefix })
        }
        (Some(_), Some(_)) => Err(format!(
            "give either \"route\" or \"host\", not both; {EXPECTED}"
        )),
        (None, None) => Err(format!("nothing to invalidate; {EXPECTED}")),
    }
}

async fn invalidate(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Some(router) = &state.router else {
        return no_router(&state);
    };
    let target = match parse_invalidation(&body) {
        Ok(t) => t,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    match router.router().invalidate(&target) {
        Ok(removed) => {
            tracing::info!(?target, removed, "response cache invalidated");
            axum::Json(InvalidateView { removed }).into_response()
        }
        Err(e) => {
            let known: Vec<String> = router
                .router()
                .caches()
                .into_iter()
                .map(|c| c.route)
                .collect();
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{e} (routes with a cache: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn no_router(state: &AdminState) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "unit {} does not run the router role; ask a unit that does",
            state.unit.name
        ),
    )
}

async fn router_document(State(state): State<AdminState>) -> Response {
    match &state.router {
        Some(router) => axum::Json(router.view()).into_response(),
        None => no_router(&state),
    }
}

fn protocol_name(protocol: &ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Http => "http",
        ListenerProtocol::H2c => "h2c",
        ListenerProtocol::Https { .. } => "https",
    }
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, RouterRoleError> {
    let err = |source| RouterRoleError::Bind {
        name: name.to_owned(),
        addr,
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

/// Starts the router role of `unit`: binds its listeners, builds the router (with the
/// unit's session store as its session directory, if it runs that role), and spawns one
/// task per listener plus the backends feeder, its metrics registered on the unit's
/// `registry`. Everything stops when `stopped` turns `true` (open connections get
/// [`DRAIN_TIMEOUT`] to finish).
pub async fn start(
    config: &Config,
    unit: &Unit,
    health: Option<HealthCacheHandle>,
    sessions: Option<crate::SessionStoreHandle>,
    stopped: watch::Receiver<bool>,
    registry: &mut Registry,
) -> Result<(RouterHandle, Vec<(&'static str, JoinHandle<()>)>), RouterRoleError> {
    let router_config = RouterConfig::from_config(config)?.with_drain_timeout(DRAIN_TIMEOUT);
    let served: BTreeSet<String> = router_config
        .listener_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if !served.contains(&listener.name) {
            tracing::info!(
                unit = %unit.name,
                listener = %listener.name,
                "no request-mode service uses this listener; not bound"
            );
            continue;
        }
        let socket = bind(&listener.name, listener.address).await?;
        bound.push((
            listener.name.clone(),
            listener.address,
            protocol_name(&listener.protocol),
            socket,
        ));
    }
    let plan = Plan::from_config(config);
    let health_units = crate::allotment_client::health_units(config);
    let mut client = None;
    if health.is_none() {
        if health_units.is_empty() {
            tracing::warn!(
                unit = %unit.name,
                "router role without the health-cache role, and no unit of the configuration runs it: static backends from the configuration (capacity as weight), outlier detection only"
            );
        } else {
            let codec = switchyard_transport::cluster_codec(config)?;
            match AllotmentClient::bind(unit.address, codec, unit.id, health_units.clone()).await {
                Ok(c) => {
                    tracing::info!(
                        unit = %unit.name,
                        health_units = ?health_units.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
                        "router role without the health-cache role: asking health-cache units for allotments over UDP (static backends until one answers)"
                    );
                    client = Some(c);
                }
                Err(error) => tracing::error!(
                    unit = %unit.name,
                    address = %unit.address,
                    %error,
                    "router role cannot bind its allotment socket: static backends from the configuration, outlier detection only"
                ),
            }
        }
    }
    let remote = client.as_ref().map(|c| {
        Mutex::new(Remote {
            answers: RemoteBackends::default(),
            units: health_units.iter().map(|(_, a)| *a).collect(),
            asking: c.asking(),
            counters: c.counters(),
        })
    });
    let refresh = refresh_every(config.health_settings().percentage_duration);
    let (source, initial) = match &health {
        Some(h) => (
            BackendSource::LocalCache,
            h.read(|cache, now| plan.backends(cache, now)),
        ),
        None => (BackendSource::Static, plan.fallback.clone()),
    };
    let backends = Arc::new(ArcSwap::from_pointee(initial));
    let router = match sessions {
        Some(store) => {
            let directory = Arc::new(crate::router_sessions::DamSessions(store));
            Router::with_session_directory(router_config, backends.clone(), registry, directory)
        }
        None => Router::new(router_config, backends.clone(), registry),
    };
    let ejected_gauge = Family::<EjectedLabels, Gauge>::default();
    let pool_gauge = Family::<PoolStateLabels, Gauge>::default();
    let source_gauge = Family::<SourceLabels, Gauge>::default();
    {
        let r = registry.sub_registry_with_prefix("switchyard_router");
        r.register(
            "host_ejected",
            "1 while outlier detection keeps the host out of rotation",
            ejected_gauge.clone(),
        );
        r.register(
            "backends",
            "Hosts per pool and state (active, draining, down)",
            pool_gauge.clone(),
        );
        r.register(
            "backend_source",
            "1 for where host states come from now (local-cache, remote-allotment, static)",
            source_gauge.clone(),
        );
    }
    let handle = RouterHandle {
        shared: Arc::new(Shared {
            router,
            unit: unit.name.clone(),
            config_path: config.source.clone(),
            served: Mutex::new(BTreeMap::new()),
            source: Mutex::new(source),
            health,
            remote,
            plan: ArcSwap::from_pointee(plan),
            ejected_gauge,
            source_gauge,
            pool_gauge,
            updates: std::sync::atomic::AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
            reloads: std::sync::atomic::AtomicU64::new(0),
            added_tasks: Mutex::new(Vec::new()),
        }),
    };
    publish_pool_gauges(&handle, &backends.load());
    publish_source(&handle.shared, source);
    let mut tasks = Vec::new();
    for (name, configured, protocol, socket) in bound {
        let task = handle
            .serve(&name, configured, protocol, socket)
            .map_err(|source| RouterRoleError::Bind {
                name: name.clone(),
                addr: configured,
                source,
            })?;
        tasks.push(("router-listener", task));
    }
    let stopped_too = stopped.clone();
    tasks.push((
        "router-feeder",
        tokio::spawn(feed(handle.clone(), stopped, client, refresh)),
    ));
    tasks.push((
        "router-reload-signal",
        tokio::spawn(reload_on_sighup(
            handle.clone(),
            config.source.clone(),
            stopped_too,
        )),
    ));
    Ok((handle, tasks))
}

/// Reloads on every SIGHUP until the role stops (`switchyard lb` runs one unit per
/// process). A refused reload is logged with its diagnostics; the old configuration stays.
async fn reload_on_sighup(
    handle: RouterHandle,
    path: std::path::PathBuf,
    mut stopped: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; reload through POST /v1/reload");
            return;
        }
    };
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!(path = %path.display(), "SIGHUP: reloading the router configuration");
                if let Err(e) = handle.reload(&path).await {
                    tracing::error!(error = %e, "reload refused; the previous configuration stays");
                }
            }
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return;
                }
            }
        }
    }
}

/// A poison-tolerant lock (the guarded maps stay consistent: no code panics holding one).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds `addr`, retrying for up to a second while a stopping listener still holds it.
async fn bind_retrying(name: &str, addr: SocketAddr) -> Result<TcpListener, RouterRoleError> {
    let mut tries = 0;
    loop {
        match bind(name, addr).await {
            Ok(socket) => return Ok(socket),
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn publish_pool_gauges(handle: &RouterHandle, backends: &Backends) {
    for (pool, hosts) in backends.pools() {
        for state in [HostState::Active, HostState::Draining, HostState::Down] {
            let n = hosts.iter().filter(|b| b.state == state).count();
            handle
                .shared
                .pool_gauge
                .get_or_create(&PoolStateLabels {
                    pool: pool.to_owned(),
                    state: state.name(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn publish_source(s: &Shared, source: BackendSource) {
    for each in BackendSource::ALL {
        s.source_gauge
            .get_or_create(&SourceLabels {
                source: each.name(),
            })
            .set(i64::from(each == source));
    }
}

impl RouterHandle {
    /// Recomputes the backends from where they come from (local cache, remote allotments,
    /// static configuration) and the current plan; stores them when they changed, and logs
    /// each host's change and the remote answers' status changes.
    fn update_backends(&self) {
        let s = &self.shared;
        let plan = s.plan.load_full();
        let (source, next) = match (&s.health, &s.remote) {
            (Some(h), _) => (
                BackendSource::LocalCache,
                h.read(|cache, now| plan.backends(cache, now)),
            ),
            (None, Some(remote)) => {
                let now = Instant::now();
                let mut r = lock(remote);
                r.answers.retain(&plan);
                if let Some((before, status)) = r.answers.status_change(now) {
                    log_status(&s.unit, before, status);
                }
                let (backends, fed) = r.answers.backends(&plan, now);
                let source = if fed == Fed::Static {
                    BackendSource::Static
                } else {
                    BackendSource::RemoteAllotment
                };
                (source, backends)
            }
            (None, None) => (BackendSource::Static, plan.fallback.clone()),
        };
        let changed_source = std::mem::replace(&mut *lock(&s.source), source) != source;
        if changed_source {
            publish_source(s, source);
        }
        let current = s.router.backends().load_full();
        if *current != next {
            log_changes(&plan, &current, &next);
            publish_pool_gauges(self, &next);
            s.router.backends().store(Arc::new(next));
            s.updates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn log_status(unit: &str, before: Option<Status>, status: Status) {
    match (before, status) {
        (_, Status::Waiting) => {}
        (None | Some(Status::Waiting), Status::Fresh) => {
            tracing::info!(unit, "router backends from health-cache unit allotments");
        }
        (_, Status::Fresh) => {
            tracing::info!(
                unit,
                "a health-cache unit answers again: router backends from its allotments"
            );
        }
        (_, Status::Stale) => tracing::warn!(
            unit,
            "no health-cache unit answered within the allotments' duration: keeping the last allotments for a grace period (two more durations)"
        ),
        (_, Status::Lost) => tracing::warn!(
            unit,
            "no health-cache unit answered past the grace period: router backends from the static configuration (every host active, outlier detection only) until one answers"
        ),
    }
}

/// Keeps the backends fed (from the health cache, or from health-cache units' allotments
/// asked every `refresh` through `client`) and reports outliers, until stopped; then
/// stops the router.
async fn feed(
    handle: RouterHandle,
    mut stopped: watch::Receiver<bool>,
    mut client: Option<AllotmentClient>,
    refresh: Duration,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut ask = tokio::time::interval(refresh);
    let mut ejected: BTreeSet<HostId> = BTreeSet::new();
    let s = &handle.shared;
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
            answer = AllotmentClient::answer(&mut client) => {
                if let (Message::AffinityAllotmentResponse(response), Some(remote)) = (answer, &s.remote) {
                    lock(remote).answers.store(response, Instant::now());
                }
            }
            _ = ask.tick(), if client.is_some() => {
                if let Some(c) = &mut client {
                    let keys = s.plan.load().keys();
                    c.ask(keys, AllotmentScheme::Percentages, crate::router_remote::wrap).await;
                }
            }
            _ = tick.tick() => {
                handle.update_backends();
                let plan = s.plan.load_full();
                let now: BTreeSet<HostId> = s.router.ejected_hosts().into_iter().collect();
                for id in now.difference(&ejected) {
                    tracing::warn!(host = id.0, name = plan.host_name(*id).unwrap_or(""), "router: host out of rotation (outlier detection)");
                    s.ejected_gauge.get_or_create(&EjectedLabels { host: id.0.to_string() }).set(1);
                }
                for id in ejected.difference(&now) {
                    tracing::info!(host = id.0, name = plan.host_name(*id).unwrap_or(""), "router: host back in rotation");
                    s.ejected_gauge.get_or_create(&EjectedLabels { host: id.0.to_string() }).set(0);
                }
                ejected = now;
            }
        }
        if let (Some(c), Some(remote)) = (&client, &s.remote) {
            let mut r = lock(remote);
            r.asking = c.asking();
            r.counters = c.counters();
        }
    }
    s.router.shutdown();
    let added: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&s.added_tasks));
    for task in added {
        let _ = task.await;
    }
}

fn log_changes(plan: &Plan, before: &Backends, after: &Backends) {
    for (pool, hosts) in after.pools() {
        let old = before.pool(pool);
        for b in hosts {
            let was = old.iter().find(|o| o.id == b.id);
            if was.is_none_or(|o| o.state != b.state) {
                tracing::info!(
                    pool,
                    host = b.id.0,
                    name = plan.host_name(b.id).unwrap_or(""),
                    from = was.map_or("-", |o| o.state.name()),
                    to = b.state.name(),
                    weight = b.weight,
                    "router backend changed"
                );
            } else if was.is_some_and(|o| o.weight != b.weight) {
                tracing::debug!(
                    pool,
                    host = b.id.0,
                    weight = b.weight,
                    "router backend weight"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_wire::health::{AppStatus, Directive};
    use switchyard_wire::types::AppId;

    fn plan_host() -> PlanHost {
        PlanHost {
            id: HostId(101),
            name: "web-1".into(),
            address: "192.0.2.11:8080".parse().expect("address"),
            app: "shop".into(),
            vips: vec!["198.51.100.10:8000".parse().expect("vip")],
        }
    }

    fn row(vip: &str, health: Health, load: u8, target: DirectiveState) -> Row {
        Row {
            app: AppId {
                vip: vip.parse().expect("vip"),
                protocol: Protocol::Tcp,
                endpoint: "192.0.2.11:8080".parse().expect("endpoint"),
                info: "shop".into(),
            },
            status: AppStatus::new(health, load, 50).expect("status"),
            directive: Directive {
                target,
                current: DirectiveState::Active,
            },
        }
    }

    #[test]
    fn pools_are_asked_about_by_their_request_services_else_their_tcp_services() {
        let text = r#"
[cluster]
id = "plan-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["forwarder", "classifier", "router", "health-cache"]

[[listeners]]
name = "web-http"
address = "198.51.100.10:8000"
protocol = "http"

[[services]]
name = "web-http"
vip = "198.51.100.10:8000"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"

[[services.routes]]
path_prefix = "/other/"
pool = "other"

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "bulk"
vip = "198.51.100.11:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "bulk"

[[pools]]
name = "web"

[[pools.hosts]]
id = 101
name = "web-1"
address = "192.0.2.11:8080"
app = "shop"

[[pools.hosts]]
id = 102
name = "web-2"
address = "192.0.2.12:8080"
app = "cart"

[[pools]]
name = "other"

[[pools.hosts]]
id = 201
name = "other-1"
address = "192.0.2.21:8080"
app = "shop"

[[pools]]
name = "bulk"

[[pools.hosts]]
id = 301
name = "bulk-1"
address = "192.0.2.31:8080"
app = "bulk"
"#;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("cluster.key"),
            "router plan tests: not a production secret",
        )
        .expect("secret");
        let config = switchyard_config::load_str(text, &dir.path().join("plan.toml"))
            .unwrap_or_else(|d| panic!("{d}"));
        let plan = Plan::from_config(&config);
        let keys = |pool: &str| -> Vec<String> {
            plan.pools
                .iter()
                .find(|p| p.name == pool)
                .expect("pool")
                .keys
                .iter()
                .map(|k| format!("{} {}", k.vip, k.info))
                .collect()
        };
        // The request service only (not the packet one), with each app of the pool.
        assert_eq!(
            keys("web"),
            ["198.51.100.10:8000 cart", "198.51.100.10:8000 shop"]
        );
        // Reached through a route only: the route's service (its hosts' agents report a
        // row for it).
        assert_eq!(keys("other"), ["198.51.100.10:8000 shop"]);
        // No request service: its packet service.
        assert_eq!(keys("bulk"), ["198.51.100.11:80 bulk"]);
        assert_eq!(plan.keys().len(), 3);
        assert_eq!(plan.fallback, Backends::from_config(&config));
    }

    #[test]
    fn host_state_follows_health_directive_and_spare_capacity() {
        let h = plan_host();
        let vip = "198.51.100.10:8000";
        let healthy = row(vip, Health::Healthy, 20, DirectiveState::Active);
        assert_eq!(host_state(&h, &[&healthy]), (HostState::Active, 50 * 80));
        let draining = row(vip, Health::Healthy, 20, DirectiveState::Draining);
        assert_eq!(host_state(&h, &[&draining]), (HostState::Draining, 0));
        let failing = row(vip, Health::Failing, 20, DirectiveState::Active);
        assert_eq!(host_state(&h, &[&failing]), (HostState::Down, 0));
        let inactive = row(vip, Health::Healthy, 20, DirectiveState::Inactive);
        assert_eq!(host_state(&h, &[&inactive]), (HostState::Down, 0));
        assert_eq!(host_state(&h, &[]), (HostState::Down, 0));
    }

    #[test]
    fn rows_of_the_request_service_are_preferred() {
        let h = plan_host();
        let packet = row(
            "198.51.100.10:80",
            Health::Failing,
            0,
            DirectiveState::Active,
        );
        let request = row(
            "198.51.100.10:8000",
            Health::Healthy,
            0,
            DirectiveState::Active,
        );
        assert_eq!(
            host_state(&h, &[&packet, &request]),
            (HostState::Active, 5000)
        );
        // Only rows of other services: they speak for the host.
        assert_eq!(host_state(&h, &[&packet]), (HostState::Down, 0));
        let mut other = row(
            "198.51.100.10:8000",
            Health::Healthy,
            0,
            DirectiveState::Active,
        );
        other.app.endpoint = "192.0.2.99:8080".parse().expect("endpoint");
        assert_eq!(host_state(&h, &[&other]), (HostState::Down, 0));
    }
}
