//! Status events and the tasks that produce them: owns [`StatusEvent`] (what the agent
//! daemon consumes), the conversion of a configured row ([`AgentApp`]) to its wire
//! identifier, and [`spawn_status_tasks`], which starts one [`CheckRunner`] per row with a
//! health check and one [`ServiceWatcher`] per host with a service manager.
//!
//! Every task stops when its [`TaskGuard`] is dropped, or by itself when the event channel
//! is closed.

use std::path::PathBuf;
use std::time::Duration;

use switchyard_config::{AgentApp, ServiceManager};
use switchyard_wire::health::Health;
use switchyard_wire::{AppId, HostId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checks::CheckRunner;
use crate::service::{DEFAULT_POLL_INTERVAL, ServiceWatcher, systemd};

/// A change in what the agent knows about one application row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEvent {
    /// The row's health check changed its verdict, or the application reported a new load.
    Check {
        /// The host the row belongs to.
        host: HostId,
        /// The row.
        app: AppId,
        /// Health after this probe.
        health: Health,
        /// Load the probe reported (exec checks only), in percent.
        load: Option<u8>,
        /// What the probe saw, for logs and operators.
        detail: String,
    },
    /// The service manager says the application runs: the row should exist.
    ServiceUp {
        /// The host the row belongs to.
        host: HostId,
        /// The row.
        app: AppId,
    },
    /// The service manager says the application does not run: the row should not exist.
    ServiceDown {
        /// The host the row belongs to.
        host: HostId,
        /// The row.
        app: AppId,
        /// Why it counts as down (unit state, dead pid, systemctl unavailable, …).
        reason: String,
    },
}

impl StatusEvent {
    /// The host the event is about.
    pub fn host(&self) -> HostId {
        match self {
            Self::Check { host, .. }
            | Self::ServiceUp { host, .. }
            | Self::ServiceDown { host, .. } => *host,
        }
    }

    /// The row the event is about.
    pub fn app(&self) -> &AppId {
        match self {
            Self::Check { app, .. }
            | Self::ServiceUp { app, .. }
            | Self::ServiceDown { app, .. } => app,
        }
    }
}

/// The wire identifier of a configured row: {VIP, protocol, endpoint, application id}.
pub fn app_id(app: &AgentApp) -> AppId {
    AppId {
        vip: app.vip,
        protocol: app.protocol,
        endpoint: app.endpoint,
        info: app.app.clone(),
    }
}

/// The wire id of a configured row's host.
pub fn host_id(app: &AgentApp) -> HostId {
    app.host
}

/// A spawned task that is aborted when this guard is dropped.
#[derive(Debug)]
pub struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Guards `handle`.
    pub fn new(handle: JoinHandle<()>) -> Self {
        Self(handle)
    }

    /// Whether the task has ended (its channel closed, or it was aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Settings of the status tasks that do not come from the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOptions {
    /// Time between two looks at a service manager.
    pub service_poll: Duration,
    /// The `systemctl` program to ask about systemd units.
    pub systemctl: PathBuf,
}

impl Default for StatusOptions {
    fn default() -> Self {
        Self {
            service_poll: DEFAULT_POLL_INTERVAL,
            systemctl: PathBuf::from(systemd::SYSTEMCTL),
        }
    }
}

/// The running status tasks of some rows; dropping it stops them all.
#[derive(Debug, Default)]
pub struct StatusTasks {
    tasks: Vec<TaskGuard>,
}

impl StatusTasks {
    /// How many tasks run (health check runners plus service watchers).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task runs (no row has a check or a service manager).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds a task to stop with the others.
    pub fn push(&mut self, task: TaskGuard) {
        self.tasks.push(task);
    }
}

/// Starts the tasks that determine the status of `apps` (usually
/// [`switchyard_config::Config::agent_apps`] of one host; rows of several hosts work too,
/// for an agent that probes hosts from outside): a [`CheckRunner`] for each row with a
/// health check, and one [`ServiceWatcher`] for each host and service manager, reporting
/// for every row of that host. Events go to `events`.
///
/// Rows without a health check produce no check events: their health comes from elsewhere
/// (the local API). Must be called inside a tokio runtime.
pub fn spawn_status_tasks(
    apps: &[AgentApp],
    events: &mpsc::Sender<StatusEvent>,
    options: &StatusOptions,
) -> StatusTasks {
    let mut tasks = StatusTasks::default();
    for app in apps {
        if let Some(check) = &app.health_check {
            let runner = CheckRunner::new(host_id(app), app_id(app), check.clone());
            tasks.push(runner.spawn(events.clone()));
        }
    }
    // One watcher per (host, manager), in first-seen order.
    let mut watched: Vec<(HostId, &ServiceManager, Vec<AppId>)> = Vec::new();
    for app in apps {
        let Some(manager) = &app.service_manager else {
            continue;
        };
        let host = host_id(app);
        match watched
            .iter_mut()
            .find(|(h, m, _)| *h == host && *m == manager)
        {
            Some((_, _, rows)) => rows.push(app_id(app)),
            None => watched.push((host, manager, vec![app_id(app)])),
        }
    }
    for (host, manager, rows) in watched {
        let watcher = ServiceWatcher::new(host, rows, manager.clone())
            .with_poll_interval(options.service_poll)
            .with_systemctl(options.systemctl.clone());
        tasks.push(watcher.spawn(events.clone()));
    }
    tasks
}
