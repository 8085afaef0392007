//! The check runner: one task per application endpoint that probes it every interval, feeds
//! the results through [`RiseFall`], and reports on a channel when the health changes and
//! after every probe that reported a load.
//!
//! Every load sample is reported, not only changes of the raw value: the daemon feeds each
//! one into the row's load smoother (an exponentially weighted average with hysteresis, see
//! `switchyard_health::LoadSmoother`), which needs a sample per probe to converge. Reporting
//! only changes would give the average one sample per change, so a raw load that jumps from
//! 20 to 80 and stays there would leave the published load stuck part way. The smoother's
//! hysteresis and the protocol's load interval keep the repeated samples from churning the
//! units' caches.

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

    /// Probes every interval, reporting each change of health and every probe result that
    /// carries a load (see the [module docs](self)); returns when `events` is closed.
    ///
    /// The first probe runs after a random delay of up to a fifth of the interval (at most
    /// 1 s). Health starts unknown and is not reported until the first change.
    pub async fn run(self, events: mpsc::Sender<StatusEvent>) {
        let interval = self.check.interval;
        if self.jitter {
            let most = (interval / 5).min(MAX_JITTER);
            let millis = switchyard_health::millis(most);
            if millis > 0 {
                let delay = rand::random_range(0..=millis);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut machine = RiseFall::new(self.check.rise, self.check.fall);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = events.closed() => return,
            }
            let result = run_probe(&self.check.probe, self.endpoint, self.check.timeout).await;
            let changed = machine.record(result.ok);
            if changed.is_none() && result.load.is_none() {
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
