//! The host agent daemon (`switchyard agent`): wires the status tasks ([`crate::status`]),
//! one [`HostProtocol`] per host it reports for, one authenticated UDP endpoint per host,
//! and the local API ([`crate::api`]) together.
//!
//! - Each host gets a driver task (module `host`) that owns its protocol machine, its
//!   endpoint and its rows and serialises every input: datagrams from the LB units,
//!   protocol deadlines, status events, API commands. After every input it sends what the
//!   machine queued to the units' control addresses.
//! - The first host's endpoint is bound to `[agent] listen`; further hosts of a proxy agent
//!   (spec FIG. 17A) get an ephemeral port on the same address, since one endpoint speaks
//!   as one sender id. Each host's heartbeats carry its endpoint's address unless the
//!   address is unspecified (`0.0.0.0`), in which case units reply to the datagram source.
//! - A host named in a `[[host_groups]]` entry joins its group ([`crate::group`]): its
//!   driver binds a second endpoint on `HOST_IP:gossip_port` for the group's gossip and
//!   routes its heartbeats through the group's relay (to the units while alone, to the
//!   leader as a member, consolidated as the leader). Its heartbeats then always carry a
//!   concrete address (`HOST_IP:listen port` when `listen` is `0.0.0.0`), since a leader,
//!   not the host, sends them on. Without a group nothing changes.
//! - [`Agent::shutdown`] (SIGTERM/SIGINT in [`run`]) sends a goodbye for every host, leaves
//!   the host groups, stops the API and removes the Unix socket. [`Agent::abort`] stops
//!   everything at once without a word, as a crash would.
//!
//! ```no_run
//! # async fn demo(config: switchyard_config::Config) -> anyhow::Result<()> {
//! use switchyard_agent::daemon::{Agent, AgentOptions};
//!
//! let options = AgentOptions::for_hosts(["web-1"]);
//! let agent = Agent::start(&config, options).await?;
//! println!("API on {}", agent.api_addr());
//! agent.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub(crate) mod group;
pub(crate) mod host;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use switchyard_config::{Config, Role};
use switchyard_health::{HostProtocol, HostSettings, SmootherSettings};
use switchyard_transport::{TransportCounters, UdpEndpoint};
use switchyard_wire::{HostId, SenderId, UnitId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::group::GroupSettings;
use crate::status::{StatusOptions, app_id, spawn_status_tasks};
use group::GroupDriver;
use host::{Command, ConfigRow, HostDriver, UnitInfo};

/// Capacity of each host driver's command and status-event queues.
const QUEUE: usize = 256;

/// What the daemon needs beyond the configuration file: which hosts it reports for and the
/// command-line overrides of `[agent]`.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Names of the hosts (in `pools.hosts`) to report for; at least one.
    pub hosts: Vec<String>,
    /// Overrides `[agent] listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `[agent] api` (must be a loopback address).
    pub api: Option<SocketAddr>,
    /// Overrides `[agent] socket`.
    pub socket: Option<PathBuf>,
    /// Settings of the status tasks.
    pub status: StatusOptions,
}

/// Limits on what clients of the local API may make the agent hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Rows the API may add per host (configured rows do not count).
    pub api_rows_per_host: usize,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            api_rows_per_host: crate::api::validate::MAX_API_ROWS_PER_HOST,
        }
    }
}

impl AgentOptions {
    /// Options for `hosts` with every setting from the configuration.
    pub fn for_hosts<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// A host driver as the API sees it.
#[derive(Debug, Clone)]
pub(crate) struct HostHandle {
    /// Host name.
    pub name: String,
    /// Host id.
    pub id: HostId,
    /// Commands to the driver.
    pub commands: mpsc::Sender<Command>,
    /// The host endpoint's counters.
    pub transport: Arc<TransportCounters>,
    /// The endpoint's local address.
    pub listen: SocketAddr,
}

/// A running agent. Dropping it without [`Agent::shutdown`] stops the tasks without a
/// goodbye only when the runtime ends; call `shutdown`.
#[derive(Debug)]
pub struct Agent {
    hosts: Arc<[HostHandle]>,
    api_addr: SocketAddr,
    socket: PathBuf,
    shutdown: watch::Sender<bool>,
    drivers: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Agent {
    /// Starts the agent for `options.hosts` of `config`: binds the UDP endpoints and the
    /// API, starts the status tasks and the host drivers. Must run inside a tokio runtime.
    pub async fn start(config: &Config, options: AgentOptions) -> anyhow::Result<Self> {
        Self::start_with_limits(config, options, AgentLimits::default()).await
    }

    /// [`Self::start`] with other [`AgentLimits`] than the defaults (tests use small ones).
    pub async fn start_with_limits(
        config: &Config,
        options: AgentOptions,
        limits: AgentLimits,
    ) -> anyhow::Result<Self> {
        if options.hosts.is_empty() {
            bail!("no host to report for: name at least one with --host");
        }
        let settings = config.agent_settings();
        let listen = options.listen.unwrap_or(settings.listen);
        let api_addr = options.api.unwrap_or(settings.api);
        let socket = options
            .socket
            .clone()
            .unwrap_or_else(|| settings.socket.clone());
        let codec = switchyard_transport::cluster_codec(config)
            .context("cannot derive the cluster key from the secret")?;
        let units: BTreeMap<UnitId, UnitInfo> = config
            .units_with_role(Role::HealthCache)
            .map(|u| {
                (
                    u.id,
                    UnitInfo {
                        name: u.name.clone(),
                        address: u.control_addr(),
                    },
                )
            })
            .collect();
        if units.is_empty() {
            tracing::warn!(
                "no unit has the health-cache role: nobody will hear this agent's reports"
            );
        }
        // Validate every host before binding anything.
        let mut seen = Vec::new();
        for name in &options.hosts {
            if config.host_by_name(name).is_none() {
                bail!("no host named {name:?} in pools.hosts");
            }
            if seen.contains(&name) {
                bail!("host {name:?} is named twice");
            }
            seen.push(name);
        }
        // Bind the API first, so a second agent fails before touching the network.
        let tcp = api::bind_tcp(api_addr).await?;
        let api_addr = tcp.local_addr().context("local API address")?;
        let unix = api::bind_unix(&socket)?;

        let health = config.health_settings();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let generation = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        let unix_start_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut handles = Vec::new();
        let mut drivers = Vec::new();
        for (i, name) in options.hosts.iter().enumerate() {
            let Some((_, host)) = config.host_by_name(name) else {
                continue;
            };
            let id = host.id;
            let bind = if i == 0 {
                listen
            } else {
                SocketAddr::new(listen.ip(), 0)
            };
            let endpoint = UdpEndpoint::bind(bind, codec.clone(), SenderId::from(id))
                .await
                .with_context(|| format!("cannot bind {bind} for host {name}"))?;
            let local = endpoint.local_addr().context("endpoint address")?;
            let mut group_settings = GroupSettings::from_config(config, name, unix_start_ms);
            if let Some(gs) = group_settings.as_mut() {
                // Where this host really receives: the configured host address when the
                // endpoint listens on every address.
                let agent = if local.ip().is_unspecified() {
                    SocketAddr::new(gs.me.agent.ip(), local.port())
                } else {
                    local
                };
                if agent != gs.me.agent {
                    tracing::warn!(host = %name, group = %gs.group, configured = %gs.me.agent, actual = %agent, "this host's agent address differs from the one its group members derive from the configuration (host address, [agent] listen port): heartbeats they send while it leads will not arrive");
                    gs.me.agent = agent;
                }
            }
            let mut hs = HostSettings::new(id, units.keys().copied().collect());
            hs.name = Some(host.name.clone());
            hs.address = match &group_settings {
                // A leader sends this host's heartbeats on: units must not reply to the
                // datagram's source.
                Some(gs) => Some(gs.me.agent),
                None => (!local.ip().is_unspecified()).then_some(local),
            };
            hs.initial_generation = generation;
            hs.heartbeat_interval = health.heartbeat_interval;
            hs.load_interval = health.load_interval;
            hs.postulate_interval = health.postulate_interval;
            hs.postulate_delay = health.postulate_delay.min(health.postulate_interval);
            hs.unit_give_up_after = health.unit_give_up_after;
            hs.smoothing = SmootherSettings {
                alpha: health.load_smoothing,
                hysteresis: health.load_hysteresis,
            };
            let protocol = HostProtocol::new(hs, Instant::now())
                .with_context(|| format!("host {name}: invalid protocol settings"))?;
            let apps = config.agent_apps(name);
            if apps.is_empty() {
                tracing::warn!(host = %name, "no service uses this host's pool: no configured rows");
            }
            let rows = apps
                .iter()
                .map(|a| ConfigRow {
                    name: a.service.clone(),
                    app: app_id(a),
                    capacity: a.capacity,
                    managed: a.service_manager.is_some(),
                })
                .collect();
            let group = match group_settings {
                Some(gs) => {
                    let names = config
                        .host_group_of(name)
                        .map(|g| {
                            g.hosts
                                .iter()
                                .filter_map(|n| config.host_by_name(n))
                                .map(|(_, h)| (h.id, h.name.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let (group, peers) = (gs.group.clone(), gs.peers.len());
                    let driver = GroupDriver::start(
                        name,
                        gs,
                        &endpoint,
                        codec.clone(),
                        health.heartbeat_interval,
                        names,
                    )
                    .await?;
                    let gossip = driver.gossip_addr().context("gossip address")?;
                    tracing::info!(host = %name, %group, %gossip, peers, "joining host group {group}: heartbeats go through its leader once another member is live");
                    Some(driver)
                }
                None => None,
            };
            let mut driver = HostDriver::new(name.clone(), protocol, endpoint, units.clone(), rows)
                .context("endpoint address")?;
            if let Some(group) = group {
                driver = driver.with_group(group);
            }
            let driver = driver
                .with_api_row_limit(limits.api_rows_per_host)
                .with_unit_acts(config.agent.unit_acts);
            let (command_tx, command_rx) = mpsc::channel(QUEUE);
            let (status_tx, status_rx) = mpsc::channel(QUEUE);
            let tasks = spawn_status_tasks(&apps, &status_tx, &options.status);
            drop(status_tx);
            handles.push(HostHandle {
                name: name.clone(),
                id,
                commands: command_tx,
                transport: driver.transport(),
                listen: driver.listen(),
            });
            tracing::info!(host = %name, id = id.0, listen = %local, rows = apps.len(), checks = tasks.len(), units = units.len(), "host driver started");
            drivers.push(tokio::spawn(driver.run(
                command_rx,
                status_rx,
                shutdown_rx.clone(),
                tasks,
            )));
        }
        let session_hosts: Vec<_> = handles
            .iter()
            .map(|h| {
                let apps = config
                    .agent_apps(&h.name)
                    .iter()
                    .map(|a| (a.service.clone(), app_id(a)))
                    .collect();
                (h.name.clone(), h.id, apps)
            })
            .collect();
        let (sessions, session_tasks) = crate::sessions::start(
            config,
            &session_hosts,
            listen,
            codec.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        drivers.extend(session_tasks);
        let hosts: Arc<[HostHandle]> = handles.into();
        let state = ApiState::new(Arc::clone(&hosts), sessions.into());
        let tcp_router = api::router(state.clone(), api::Listener::Tcp);
        let unix_router = api::router(state, api::Listener::Unix);
        let servers = vec![
            tokio::spawn(api::serve_tcp(
                tcp,
                tcp_router,
                signalled(shutdown_rx.clone()),
            )),
            tokio::spawn(api::serve_unix(unix, unix_router, signalled(shutdown_rx))),
        ];
        tracing::info!(api = %api_addr, socket = %socket.display(), hosts = ?options.hosts, "agent ready");
        Ok(Self {
            hosts,
            api_addr,
            socket,
            shutdown,
            drivers,
            servers,
        })
    }

    /// The address the local API listens on (TCP).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The local API's Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Each host's name and the local address of its UDP endpoint.
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.hosts
            .iter()
            .map(|h| (h.name.clone(), h.listen))
            .collect()
    }

    /// Stops every task at once, as a crash would: no goodbye to the units, no leaving the
    /// host groups (members and units find out by silence). The API stops answering and the
    /// sockets close; the Unix socket file is left behind, as after a crash.
    pub async fn abort(self) {
        for task in &self.drivers {
            task.abort();
        }
        for task in &self.servers {
            task.abort();
        }
        for task in self.drivers {
            let _ = task.await;
        }
        for task in self.servers {
            let _ = task.await;
        }
        tracing::info!("agent aborted");
    }

    /// Stops the agent: every host says goodbye to every unit and leaves its host group,
    /// the API stops serving and the Unix socket is removed.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for driver in self.drivers {
            let _ = driver.await;
        }
        for server in self.servers {
            match server.await {
                Ok(Err(error)) => tracing::warn!(%error, "local API server failed"),
                Err(error) => tracing::warn!(%error, "local API server task failed"),
                Ok(Ok(())) => {}
            }
        }
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(socket = %self.socket.display(), %error, "cannot remove the socket")
            }
        }
        tracing::info!("agent stopped");
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
async fn signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What `switchyard agent` runs: the configuration file and [`AgentOptions`].
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The configuration file.
    pub config: PathBuf,
    /// Hosts and overrides.
    pub options: AgentOptions,
    /// Log filter (e.g. `info`, `switchyard_agent=debug`); `RUST_LOG` when `None`, else
    /// `info`.
    pub log_level: Option<String>,
}

/// Runs the agent until SIGTERM or SIGINT: sets up logging, loads and validates the
/// configuration (printing every diagnostic and returning exit code 1 on errors), starts
/// the agent on a new tokio runtime, and shuts it down cleanly on the signal.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_level.as_deref())?;
    let config = match switchyard_config::load_file(&args.config) {
        Ok(config) => config,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Install the handlers before announcing readiness, so an early signal is not lost.
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tracing::info!(config = %args.config.display(), "{}", config.summary());
        let agent = Agent::start(&config, args.options).await?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        agent.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Installs the global `tracing` subscriber: human-readable lines on standard error,
/// filtered by `level` (a `RUST_LOG`-style directive), else `RUST_LOG`, else `info`.
pub fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Another subscriber already installed (tests): keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}
