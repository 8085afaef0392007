//! Service-manager watching: whether a host's application runs, according to its systemd
//! unit ([`systemd`]) or its pid file ([`pidfile`]), the Linux counterparts of the spec's
//! control manager. The [`ServiceWatcher`] task polls one and reports transitions as
//! [`StatusEvent::ServiceUp`] / [`StatusEvent::ServiceDown`] for every row of its host.
//!
//! Anything that prevents an answer (no systemctl, no systemd, an unreadable pid file)
//! counts as down, with the reason.

pub mod pidfile;
pub mod systemd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_config::ServiceManager;
use switchyard_wire::{AppId, HostId};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::status::{StatusEvent, TaskGuard};

/// Default time between two looks at a service manager.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Whether an application runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// It runs.
    Up,
    /// It does not run, or that could not be determined.
    Down {
        /// Why, in one line.
        reason: String,
    },
}

impl ServiceState {
    /// Down for `reason`.
    pub fn down(reason: impl Into<String>) -> Self {
        Self::Down {
            reason: reason.into(),
        }
    }

    /// Whether it is [`ServiceState::Up`].
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up)
    }
}

/// Asks `manager` once whether the application runs; systemd units are asked through
/// the program `systemctl`.
pub async fn service_state(manager: &ServiceManager, systemctl: &Path) -> ServiceState {
    match manager {
        ServiceManager::Systemd { unit } => systemd::unit_state(systemctl, unit).await,
        ServiceManager::Pidfile { path } => pidfile::process_state(path).await,
    }
}

/// Polls one service manager for the rows of one host.
#[derive(Debug, Clone)]
pub struct ServiceWatcher {
    host: HostId,
    apps: Vec<AppId>,
    manager: ServiceManager,
    poll: Duration,
    systemctl: PathBuf,
}

impl ServiceWatcher {
    /// A watcher reporting for rows `apps` of `host`, polling every
    /// [`DEFAULT_POLL_INTERVAL`].
    pub fn new(host: HostId, apps: Vec<AppId>, manager: ServiceManager) -> Self {
        Self {
            host,
            apps,
            manager,
            poll: DEFAULT_POLL_INTERVAL,
            systemctl: PathBuf::from(systemd::SYSTEMCTL),
        }
    }

    /// Polls every `poll` instead (at least 1 ms).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Asks systemd units through `systemctl` instead of the one on the `PATH`.
    pub fn with_systemctl(mut self, systemctl: PathBuf) -> Self {
        self.systemctl = systemctl;
        self
    }

    /// Runs in a new task until the guard is dropped or `events` is closed.
    pub fn spawn(self, events: mpsc::Sender<StatusEvent>) -> TaskGuard {
        TaskGuard::new(tokio::spawn(self.run(events)))
    }

    /// Polls until `events` is closed. The first answer is always reported (for every row),
    /// later ones only when the application goes from up to down or back; a changed reason
    /// while down is logged, not reported.
    pub async fn run(self, events: mpsc::Sender<StatusEvent>) {
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<ServiceState> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = events.closed() => return,
            }
            let state = service_state(&self.manager, &self.systemctl).await;
            let transition = last.as_ref().is_none_or(|l| l.is_up() != state.is_up());
            if !transition {
                if let (Some(ServiceState::Down { reason: old }), ServiceState::Down { reason }) =
                    (&last, &state)
                    && old != reason
                {
                    tracing::debug!(host = self.host.0, %reason, "service still down");
                    last = Some(state);
                }
                continue;
            }
            match &state {
                ServiceState::Up => {
                    tracing::info!(host = self.host.0, manager = ?self.manager, "service up")
                }
                ServiceState::Down { reason } => {
                    tracing::warn!(host = self.host.0, manager = ?self.manager, %reason, "service down");
                }
            }
            for app in &self.apps {
                let event = match &state {
                    ServiceState::Up => StatusEvent::ServiceUp {
                        host: self.host,
                        app: app.clone(),
                    },
                    ServiceState::Down { reason } => StatusEvent::ServiceDown {
                        host: self.host,
                        app: app.clone(),
                        reason: reason.clone(),
                    },
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            last = Some(state);
        }
    }
}
