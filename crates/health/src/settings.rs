//! Settings of the state machines, with the defaults daemons start from:
//! [`HostSettings`] for [`crate::HostProtocol`], [`CacheSettings`] for
//! [`crate::ConsolidatedCache`] and [`SmootherSettings`] for
//! [`crate::LoadSmoother`]. Validation lives here too, so a state machine is
//! never built with a zero interval (which would make a driver spin).

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_wire::{HostId, UnitId};

use crate::allotment::AllotmentPolicy;
use crate::error::HealthError;

/// Settings of one host identity's protocol machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSettings {
    /// The host this machine reports for.
    pub host: HostId,
    /// The host's DNS name, sent every [`Self::name_every`] heartbeats.
    pub name: Option<String>,
    /// Where units reach the agent (sent in every heartbeat).
    pub address: Option<SocketAddr>,
    /// Every LB unit with the health-cache role.
    pub units: Vec<UnitId>,
    /// First table generation. Daemons pass the Unix time in nanoseconds so
    /// generations keep growing across restarts.
    pub initial_generation: u64,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Send the DNS name every this many heartbeats (0: never).
    pub name_every: u32,
    /// Minimum time between load-only table updates.
    pub load_interval: Duration,
    /// Delay between publishing a directive change and the first postulate.
    pub postulate_delay: Duration,
    /// Time between postulate rounds while a handshake is pending.
    pub postulate_interval: Duration,
    /// A unit silent for this long since a handshake began no longer blocks it.
    pub unit_give_up_after: Duration,
    /// Target size of a message's encoded payload, in bytes: snapshot
    /// parts, row changes and postulate rounds are split to stay within it
    /// (see [`crate::datagram`]). At least
    /// [`crate::datagram::MIN_DATAGRAM_PAYLOAD`], at most
    /// `switchyard_wire::frame::MAX_UDP_PAYLOAD`.
    pub max_datagram_payload: usize,
    /// Load smoothing for [`crate::HostProtocol::report_load`].
    pub smoothing: SmootherSettings,
}

impl HostSettings {
    /// Defaults for `host` reporting to `units`.
    pub fn new(host: HostId, units: Vec<UnitId>) -> Self {
        Self {
            host,
            name: None,
            address: None,
            units,
            initial_generation: 0,
            heartbeat_interval: Duration::from_secs(1),
            name_every: 10,
            load_interval: Duration::from_secs(15),
            postulate_delay: Duration::from_millis(200),
            postulate_interval: Duration::from_millis(500),
            unit_give_up_after: Duration::from_secs(30),
            max_datagram_payload: crate::datagram::DEFAULT_MAX_DATAGRAM_PAYLOAD,
            smoothing: SmootherSettings::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        nonzero("heartbeat_interval", self.heartbeat_interval)?;
        nonzero("postulate_interval", self.postulate_interval)?;
        if self.max_datagram_payload < crate::datagram::MIN_DATAGRAM_PAYLOAD {
            return Err(invalid(
                "max_datagram_payload",
                "must be at least 256 bytes",
            ));
        }
        if self.max_datagram_payload > switchyard_wire::frame::MAX_UDP_PAYLOAD {
            return Err(invalid(
                "max_datagram_payload",
                "must fit a UDP datagram (65000 bytes)",
            ));
        }
        if let Some(name) = &self.name
            && name.len() > switchyard_wire::health::MAX_DNS_NAME_LEN
        {
            return Err(invalid("name", "longer than 253 bytes"));
        }
        self.smoothing.validate()
    }
}

/// Settings of one LB unit's consolidated cache and allotment service.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// This unit.
    pub unit: UnitId,
    /// A host without a heartbeat for this long is aged out.
    pub host_dead_after: Duration,
    /// Minimum time between two snapshot requests to one host.
    pub snapshot_retry: Duration,
    /// An incomplete snapshot is dropped after this long without a new
    /// part.
    pub partial_snapshot_timeout: Duration,
    /// How allotments are computed.
    pub allotment: AllotmentPolicy,
}

impl CacheSettings {
    /// Defaults for `unit`.
    pub fn new(unit: UnitId) -> Self {
        Self {
            unit,
            host_dead_after: Duration::from_secs(5),
            snapshot_retry: Duration::from_secs(1),
            partial_snapshot_timeout: Duration::from_secs(3),
            allotment: AllotmentPolicy::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        nonzero("host_dead_after", self.host_dead_after)?;
        nonzero("partial_snapshot_timeout", self.partial_snapshot_timeout)
    }
}

/// Load smoothing: an exponentially weighted moving average with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmootherSettings {
    /// Weight of a new sample, in (0, 1]; 1 disables averaging.
    pub alpha: f64,
    /// Publish only when the average moved this many points from the last
    /// published value (or reached 0 or 100).
    pub hysteresis: u8,
}

impl Default for SmootherSettings {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            hysteresis: 5,
        }
    }
}

impl SmootherSettings {
    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        if self.alpha > 0.0 && self.alpha <= 1.0 {
            Ok(())
        } else {
            Err(invalid("smoothing.alpha", "must be in (0, 1]"))
        }
    }
}

fn nonzero(field: &'static str, d: Duration) -> Result<(), HealthError> {
    if d.is_zero() {
        Err(invalid(field, "must not be zero"))
    } else {
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &'static str) -> HealthError {
    HealthError::InvalidSettings { field, reason }
}
