//! The check runner: one task per application endpoint that probes it every interval, feeds
//! the results through [`RiseFall`], and reports on a channel only when the health or the
//! reported load changes.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_config::HealthCheck;
use switchyard_wire::{AppId, HostId};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{RiseFall, run_probe};
use crate::status::{StatusEvent, TaskGuard};

/// Longest random delay before the first probe, so that runners started together (all rows
/// of an agent, all agents after a deployment) do not probe in lock step.
const MAX_JITTER: Duration = Duration::from_secs(1);

/// Probes one application endpoint with one health check.
#[derive(Debug, Clone)]
pub struct CheckRunner {
    host: HostId,
    app: AppId,
    endpoint: SocketAddr,
    check: HealthCheck,
    jitter: bool,
}

impl CheckRunner {
    /// A runner for row `app` of `host`, probing `app.endpoint` with `check`.
    pub fn new(host: HostId, app: AppId, check: HealthCheck) -> Self {
        Self {
            host,
            endpoint: app.endpoint,
            app,
            check,
            jitter: true,
        }
    }

    /// Probes `endpoint` instead of the row's own endpoint (an agent that checks an
    /// application through another address, e.g. a local port).
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Without the random delay before the first probe (for deterministic tests and
    /// one-shot runs).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Runs in a new task until the guard is dropped or `events` is closed.
    pub fn spawn(self, events: mpsc::Sender<StatusEvent>) -> TaskGuard {
        TaskGuard::new(tokio::spawn(self.run(events)))
    }

    /// Probes every interval, reporting each change of health or of reported load; returns
    /// when `events` is closed.
    ///
    /// The first probe runs after a random delay of up to a fifth of the interval (at most
    /// 1 s). Health starts unknown and is not reported until the first change.
    pub async fn run(self, events: mpsc::Sender<StatusEvent>) {
        let interval = self.check.interval;
        if self.jitter {
            let most = (interval / 5).min(MAX_JITTER);
            let millis = u64::try_from(most.as_millis()).unwrap_or(u64::MAX);
            if millis > 0 {
                let delay = rand::random_range(0..=millis);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut machine = RiseFall::new(self.check.rise, self.check.fall);
        let mut reported_load: Option<u8> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = events.closed() => return,
            }
            let result = run_probe(&self.check.probe, self.endpoint, self.check.timeout).await;
            let changed = machine.record(result.ok);
            let new_load = result.load.filter(|load| Some(*load) != reported_load);
            if changed.is_none() && new_load.is_none() {
                continue;
            }
            if let Some(health) = changed {
                tracing::info!(
                    host = self.host.0,
                    endpoint = %self.endpoint,
                    check = %self.check.name,
                    ?health,
                    detail = %result.detail,
                    "health changed"
                );
            }
            if new_load.is_some() {
                reported_load = new_load;
            }
            let event = StatusEvent::Check {
                host: self.host,
                app: self.app.clone(),
                health: machine.health(),
                load: result.load,
                detail: result.detail,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}
