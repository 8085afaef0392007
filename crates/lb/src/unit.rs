//! One load-balancing unit process: picks the unit out of the
//! configuration, starts the roles it has that this build provides, and
//! the admin API; stops them together.
//!
//! Roles come from `cluster.units[].roles`. Built today: `health-cache`
//! ([`crate::health_service`]), then `forwarder` and `classifier`
//! ([`crate::packet_roles`], which get the [`HealthCacheHandle`] for
//! allotments), then `router` ([`crate::router_role`], fed from the same
//! cache), and `session-store` ([`crate::session_role`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{Config, Role, Unit};
use switchyard_health::{AllotmentPolicy, CacheSettings};
use switchyard_wire::{HostId, KeyError, Protocol, UnitId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, api::UnitInfo};
use crate::health_service::{self, HealthCacheHandle, HealthServiceSettings, StartError};
use crate::packet_roles::{self, PacketRoleError};
use crate::trust::ClusterMembers;

/// How long [`RunningUnit::shutdown`] waits for each task.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What to run: the unit's name and optional address overrides.
#[derive(Debug, Clone)]
pub struct UnitOptions {
    /// Name of the unit in `cluster.units`.
    pub unit: String,
    /// Admin API address instead of the unit's `admin` (loopback only).
    pub admin: Option<SocketAddr>,
    /// Health control address (UDP) instead of the unit's `address` and
    /// `control_port`, e.g. `127.0.0.1:0` in tests.
    pub control: Option<SocketAddr>,
}

impl UnitOptions {
    /// Runs unit `name` at its configured addresses.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            unit: name.into(),
            admin: None,
            control: None,
        }
    }
}

/// Why a unit could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// The configuration has no such unit.
    #[error("no unit named {name:?} in cluster.units (units: {known})")]
    UnknownUnit {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The admin address is not loopback.
    #[error(
        "admin API address {0} is not a loopback address; without a bearer token only loopback (127.0.0.1 or ::1) is allowed: set cluster.units.admin or --admin, or give switchyard lb --admin-token-file FILE"
    )]
    AdminNotLoopback(SocketAddr),
    /// The admin address cannot be bound.
    #[error("cannot listen for the admin API on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The cluster key cannot be derived.
    #[error("cannot derive the cluster key from cluster.secret_file: {0}")]
    Key(#[from] KeyError),
    /// The health-cache role did not start.
    #[error(transparent)]
    Health(#[from] StartError),
    /// The forwarder or classifier role did not start.
    #[error(transparent)]
    Packet(#[from] PacketRoleError),
    /// The router role did not start.
    #[error(transparent)]
    Router(#[from] crate::router_role::RouterRoleError),
    /// The session-store role did not start.
    #[error(transparent)]
    Sessions(#[from] crate::session_role::SessionRoleError),
}

/// The name of a role as the configuration spells it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Forwarder => "forwarder",
        Role::Classifier => "classifier",
        Role::Router => "router",
        Role::SessionStore => "session-store",
        Role::HealthCache => "health-cache",
    }
}

/// The cache settings a unit runs with, from `[health]`.
pub fn cache_settings(config: &Config, unit: &Unit) -> CacheSettings {
    let health = config.health_settings();
    let mut settings = CacheSettings::new(unit.id);
    settings.host_dead_after = health.host_dead_after;
    // Resync promptly: at most one snapshot request per heartbeat interval
    // (never more often than the core's default allows).
    settings.snapshot_retry = settings.snapshot_retry.min(health.heartbeat_interval);
    settings.allotment = AllotmentPolicy {
        token_valid_for: health.token_validity,
        percentage_duration: health.percentage_duration,
        ..settings.allotment
    };
    settings
}

/// Configured host names by id.
pub fn host_names(config: &Config) -> BTreeMap<HostId, String> {
    config
        .pools
        .iter()
        .flat_map(|pool| pool.hosts.iter())
        .map(|host| (host.id, host.name.clone()))
        .collect()
}

fn service_names(config: &Config) -> Vec<(SocketAddr, Protocol, String)> {
    config
        .services
        .iter()
        .map(|s| (s.vip, s.protocol, s.name.clone()))
        .collect()
}

/// The packet-mode services (VIP, protocol, name).
fn packet_service_names(config: &Config) -> Vec<(SocketAddr, Protocol, String)> {
    config
        .services
        .iter()
        .filter(|s| matches!(s.mode, switchyard_config::ServiceMode::Packet { .. }))
        .map(|s| (s.vip, s.protocol, s.name.clone()))
        .collect()
}

/// A started unit. Dropping it without [`Self::shutdown`] stops the tasks
/// too (their stop signal's sender is dropped).
#[derive(Debug)]
pub struct RunningUnit {
    name: String,
    id: UnitId,
    admin: SocketAddr,
    health: Option<HealthCacheHandle>,
    router: Option<crate::router_role::RouterHandle>,
    sessions: Option<crate::SessionStoreHandle>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl RunningUnit {
    /// Starts unit `options.unit` of `config`: the admin API and every role
    /// this build provides. Logs `lb ready` with the bound addresses once
    /// everything listens.
    pub async fn start(config: &Config, options: UnitOptions) -> Result<Self, UnitError> {
        Self::start_with_admin_token(config, options, None).await
    }

    /// [`Self::start`] with the admin API's bearer token: with `Some`, the admin API may
    /// bind any address and every request must carry the token ([`admin::auth`]).
    pub async fn start_with_admin_token(
        config: &Config,
        options: UnitOptions,
        token: Option<admin::auth::AdminToken>,
    ) -> Result<Self, UnitError> {
        let unit = config
            .unit(&options.unit)
            .ok_or_else(|| UnitError::UnknownUnit {
                name: options.unit.clone(),
                known: config
                    .cluster
                    .units
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let admin_addr = options.admin.unwrap_or(unit.admin);
        let listener = admin::bind_with_token(admin_addr, token.as_ref()).await?;
        let admin_addr = listener
            .local_addr()
            .map_err(|source| UnitError::AdminBind {
                addr: admin_addr,
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut running = Vec::new();
        let mut health = None;
        let mut sessions = None;
        for role in &unit.roles {
            match role {
                Role::HealthCache => {
                    let settings = HealthServiceSettings {
                        control: options.control.unwrap_or_else(|| unit.control_addr()),
                        cache: cache_settings(config, unit),
                        codec: switchyard_transport::cluster_codec(config)?,
                        host_names: host_names(config),
                        members: ClusterMembers::from_config(config),
                    };
                    let (handle, task) = health_service::start(settings, stopped.clone()).await?;
                    tracing::info!(
                        unit = %unit.name,
                        control = %handle.control_addr(),
                        host_dead_after = ?config.health_settings().host_dead_after,
                        "health-cache role listening for host agents (UDP)"
                    );
                    health = Some(handle);
                    tasks.push(("health-cache", task));
                    running.push(role_name(*role).to_owned());
                }
                Role::SessionStore => {
                    let settings = crate::session_role::SessionRoleSettings::from_config(
                        config,
                        unit,
                        switchyard_transport::cluster_codec(config)?,
                    );
                    let (handle, task) =
                        crate::session_role::start(settings, stopped.clone()).await?;
                    tracing::info!(
                        unit = %unit.name,
                        sessions = %handle.addr(),
                        replication = ?config.sessions.replication,
                        "session-store role listening for hosts' sessions and DAM calls (UDP)"
                    );
                    sessions = Some(handle);
                    tasks.push(("session-store", task));
                    running.push(role_name(*role).to_owned());
                }
                // Started below, once the health cache they take allotments from runs.
                Role::Forwarder | Role::Classifier | Role::Router => {}
            }
        }
        let packet = packet_roles::start(
            config,
            unit,
            health.clone(),
            sessions.clone(),
            stopped.clone(),
        )
        .await?;
        running.extend(packet.running.iter().map(|r| (*r).to_owned()));
        if health.is_none() {
            tracing::info!(
                unit = %unit.name,
                "unit does not run the health-cache role; running the admin API only"
            );
        }
        let packet_state = admin::PacketState {
            forwarder: packet.forwarder.clone(),
            classifier: packet.classifier.clone(),
        };
        let mut info = UnitInfo {
            name: unit.name.clone(),
            id: unit.id.0,
            roles: unit
                .roles
                .iter()
                .map(|r| role_name(*r).to_owned())
                .collect(),
            running: Vec::new(),
        };
        // One registry for the whole process: collectors for the roles started so far, and
        // the router registers its families on it as it starts.
        let mut registry = admin::metrics::registry(
            &info,
            packet_service_names(config),
            health.clone(),
            packet_state.clone(),
            sessions.clone(),
        );
        let router = if unit.has_role(Role::Router) {
            let (handle, router_tasks) = crate::router_role::start(
                config,
                unit,
                health.clone(),
                sessions.clone(),
                stopped.clone(),
                &mut registry,
            )
            .await?;
            tasks.extend(router_tasks);
            running.push(role_name(Role::Router).to_owned());
            Some(handle)
        } else {
            None
        };
        info.running = running.clone();
        let state = AdminState {
            unit: info,
            health: health.clone(),
            sessions: sessions.clone(),
            services: Arc::new(service_names(config)),
            router: router.clone(),
            packet: packet_state,
            token,
            metrics: Arc::new(registry),
        };
        tasks.extend(packet.tasks);
        tasks.push(("admin", admin::serve(listener, state, stopped)));
        let control = health
            .as_ref()
            .map_or_else(|| "-".to_owned(), |h| h.control_addr().to_string());
        tracing::info!(
            unit = %unit.name,
            id = unit.id.0,
            control = %control,
            admin = %admin_addr,
            roles = %running.join(","),
            "lb ready"
        );
        Ok(Self {
            name: unit.name.clone(),
            id: unit.id,
            admin: admin_addr,
            health,
            router,
            sessions,
            stop,
            tasks,
        })
    }

    /// The unit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unit's id.
    pub fn id(&self) -> UnitId {
        self.id
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Where the health-cache role listens (UDP), if the unit runs it.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().map(HealthCacheHandle::control_addr)
    }

    /// The health-cache role's API, if the unit runs it.
    pub fn health(&self) -> Option<&HealthCacheHandle> {
        self.health.as_ref()
    }

    /// The session-store role's API (DAM lookups), if the unit runs it.
    pub fn sessions(&self) -> Option<&crate::SessionStoreHandle> {
        self.sessions.as_ref()
    }

    /// The router role, if the unit runs it.
    pub fn router(&self) -> Option<&crate::router_role::RouterHandle> {
        self.router.as_ref()
    }

    /// Stops every role and the admin API and waits for them (a few
    /// seconds at most per task).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (name, mut task) in self.tasks {
            match tokio::time::timeout(STOP_GRACE, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(task = name, %error, "task failed"),
                Err(_) => {
                    tracing::warn!(task = name, "task did not stop in time; aborted");
                    task.abort();
                }
            }
        }
        tracing::info!(unit = %self.name, "lb stopped");
    }
}
