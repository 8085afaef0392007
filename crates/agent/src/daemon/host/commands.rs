//! The local API's commands to a host driver, and how the driver carries them out: views,
//! adding and removing API rows (at most
//! [`MAX_API_ROWS_PER_HOST`](crate::api::validate::MAX_API_ROWS_PER_HOST) of them), applications'
//! reports and operators' targets. Requests arrive validated ([`crate::api::validate`]).

use std::time::Instant;

use switchyard_wire::health::DirectiveState;
use tokio::sync::oneshot;

use crate::api::ApiError;
use crate::api::model::{HostJson, RowJson};
use crate::api::validate::{ValidRow, ValidStatus};

use super::super::group::{GroupCountersView, GroupDriver};
use super::{Entry, HostDriver, Origin, Service};

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A request from the local API to a host driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// The host and all its rows.
    View(oneshot::Sender<HostJson>),
    /// One row.
    Row(String, Reply<RowJson>),
    /// Add a row.
    Add(ValidRow, Reply<RowJson>),
    /// Remove an API row.
    Remove(String, Reply<RowJson>),
    /// The application's own report.
    Status(String, ValidStatus, Reply<RowJson>),
    /// Set the target of one row (`Some`) or of every row (`None`).
    Target(Option<String>, DirectiveState, Reply<Vec<RowJson>>),
    /// Protocol and agent counters.
    Counters(oneshot::Sender<HostCounters>),
}

/// Counters a host driver keeps beside the protocol's and the transport's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DriverCounters {
    /// Authentic messages from a sender that is not one of the host's units.
    pub unknown_sender: u64,
    /// Messages the protocol ignored.
    pub ignored: u64,
    /// Messages that could not be sent.
    pub send_errors: u64,
    /// Units' acts carried out.
    pub unit_acts: u64,
    /// Units' acts refused (`unit_acts = false`) or naming no row of the host.
    pub unit_acts_refused: u64,
}

/// Everything countable about one host, for `/v1/counters` and `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct HostCounters {
    /// The protocol machine's counters.
    pub protocol: switchyard_health::HostCounters,
    /// The driver's counters.
    pub driver: DriverCounters,
    /// Rows in the table.
    pub rows: usize,
    /// Pending handshakes.
    pub handshakes_pending: usize,
    /// The host group's counters, if the host is in one.
    pub group: Option<GroupCountersView>,
}

impl HostDriver {
    pub(super) async fn on_command(&mut self, command: Command) {
        // Changes are published before the answer, so it shows the handshake started.
        match command {
            Command::View(reply) => {
                let _ = reply.send(self.view());
            }
            Command::Row(name, reply) => {
                let result = self.find(&name).and_then(|i| self.json_at(i));
                let _ = reply.send(result);
            }
            Command::Add(row, reply) => {
                let result = self.add(row);
                self.transmit().await;
                let _ = reply.send(result.and_then(|i| self.json_at(i)));
            }
            Command::Remove(name, reply) => {
                let result = self.remove(&name);
                self.transmit().await;
                let _ = reply.send(result);
            }
            Command::Status(name, update, reply) => {
                let result = self.status(&name, update);
                self.transmit().await;
                let _ = reply.send(result.and_then(|i| self.json_at(i)));
            }
            Command::Target(name, target, reply) => {
                let result = self.target(name.as_deref(), target);
                self.transmit().await;
                let result = result
                    .and_then(|indexes| indexes.into_iter().map(|i| self.json_at(i)).collect());
                let _ = reply.send(result);
            }
            Command::Counters(reply) => {
                let _ = reply.send(HostCounters {
                    protocol: self.protocol.counters().clone(),
                    driver: self.counters.clone(),
                    rows: self.protocol.rows().len(),
                    handshakes_pending: self.protocol.handshakes().len(),
                    group: self.group.as_ref().map(GroupDriver::counters),
                });
            }
        }
    }

    fn find(&self, name: &str) -> Result<usize, ApiError> {
        self.index_of(name).ok_or_else(|| {
            ApiError::NotFound(format!("host {} has no row named {name:?}", self.name))
        })
    }

    /// Adds an API row; returns its index.
    fn add(&mut self, row: ValidRow) -> Result<usize, ApiError> {
        let ValidRow {
            name,
            app,
            key,
            health,
            load,
            capacity,
        } = row;
        if self.index_of(&name).is_some() {
            return Err(ApiError::Conflict(format!(
                "host {} already has a row named {name:?}",
                self.name
            )));
        }
        if let Some(other) = self.rows.iter().find(|e| e.key == key) {
            return Err(ApiError::Conflict(format!(
                "row {:?} already has this vip, protocol, endpoint and info",
                other.name
            )));
        }
        let api_rows = self.rows.iter().filter(|e| e.origin == Origin::Api).count();
        if api_rows >= self.max_api_rows {
            return Err(ApiError::Conflict(format!(
                "host {} already has {api_rows} rows added through the API, the most it takes; remove one first",
                self.name
            )));
        }
        self.rows.push(Entry {
            name,
            app,
            key,
            origin: Origin::Api,
            service: Service::Unmanaged,
            health,
            load,
            capacity,
            target: DirectiveState::Active,
            check: None,
            logged_current: None,
        });
        let index = self.rows.len() - 1;
        self.insert(Instant::now(), index, "local API");
        if !self.present(index) {
            self.rows.pop();
            return Err(ApiError::Internal("the row could not be added".to_owned()));
        }
        Ok(index)
    }

    fn remove(&mut self, name: &str) -> Result<RowJson, ApiError> {
        let index = self.find(name)?;
        if self.rows.get(index).map(|e| e.origin) == Some(Origin::Config) {
            return Err(ApiError::Conflict(format!(
                "row {name:?} comes from the configuration and cannot be removed; drain or disable it instead"
            )));
        }
        self.take_out(Instant::now(), index, "local API");
        let mut json = self.json_at(index)?;
        json.present = false;
        json.directive.current = None;
        self.rows.remove(index);
        Ok(json)
    }

    /// Applies an application's report; returns the row's index.
    fn status(&mut self, name: &str, update: ValidStatus) -> Result<usize, ApiError> {
        let index = self.find(name)?;
        let now = Instant::now();
        if update.health.is_some() || update.capacity.is_some() {
            let e = self
                .rows
                .get(index)
                .ok_or_else(|| ApiError::Internal("row vanished".to_owned()))?;
            let health = update.health.unwrap_or(e.health);
            let capacity = update.capacity.unwrap_or(e.capacity);
            self.update_status(
                now,
                index,
                health,
                capacity,
                "reported through the local API",
            );
        }
        if let Some(load) = update.load {
            self.sample_load(now, index, load);
        }
        Ok(index)
    }

    fn target(
        &mut self,
        name: Option<&str>,
        target: DirectiveState,
    ) -> Result<Vec<usize>, ApiError> {
        let indexes: Vec<usize> = match name {
            Some(name) => vec![self.find(name)?],
            None => (0..self.rows.len()).collect(),
        };
        self.set_target(&indexes, target, "local API");
        Ok(indexes)
    }

    /// Sets the target of the rows at `indexes`; `by` says who asked, for the log.
    pub(super) fn set_target(&mut self, indexes: &[usize], target: DirectiveState, by: &str) {
        let now = Instant::now();
        for &index in indexes {
            let present = self.present(index);
            let Some(e) = self.rows.get_mut(index) else {
                continue;
            };
            if e.target != target {
                tracing::info!(host = %self.name, row = %e.name, units = self.units.len(), "target {} -> {} ({by}); current follows when every unit holds it", e.target.as_str(), target.as_str());
            }
            e.target = target;
            if present && let Err(error) = self.protocol.set_target(now, &e.app, target) {
                tracing::error!(host = %self.name, row = %e.name, %error, "target not set");
            }
        }
    }
}
