//! The JSON documents of the local API: what requests carry (strictly parsed: unknown
//! fields are errors) and what responses show. Field names are the API's contract and are
//! documented in `docs/AGENT.md`.

use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use switchyard_wire::Protocol;
use switchyard_wire::health::{DirectiveState, Health};

/// An application's health, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiHealth {
    /// Serving normally.
    Healthy,
    /// Failing.
    Failing,
    /// Not known.
    Unknown,
}

impl From<Health> for ApiHealth {
    fn from(h: Health) -> Self {
        match h {
            Health::Healthy => Self::Healthy,
            Health::Failing => Self::Failing,
            Health::Unknown => Self::Unknown,
        }
    }
}

impl From<ApiHealth> for Health {
    fn from(h: ApiHealth) -> Self {
        match h {
            ApiHealth::Healthy => Self::Healthy,
            ApiHealth::Failing => Self::Failing,
            ApiHealth::Unknown => Self::Unknown,
        }
    }
}

/// A directive state, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiDirective {
    /// Receives new connections.
    Active,
    /// Keeps existing sessions, receives no new ones.
    Draining,
    /// Receives nothing.
    Inactive,
}

impl From<DirectiveState> for ApiDirective {
    fn from(d: DirectiveState) -> Self {
        match d {
            DirectiveState::Active => Self::Active,
            DirectiveState::Draining => Self::Draining,
            DirectiveState::Inactive => Self::Inactive,
        }
    }
}

impl From<ApiDirective> for DirectiveState {
    fn from(d: ApiDirective) -> Self {
        match d {
            ApiDirective::Active => Self::Active,
            ApiDirective::Draining => Self::Draining,
            ApiDirective::Inactive => Self::Inactive,
        }
    }
}

/// A transport protocol, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<Protocol> for ApiProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}

impl From<ApiProtocol> for Protocol {
    fn from(p: ApiProtocol) -> Self {
        match p {
            ApiProtocol::Tcp => Self::Tcp,
            ApiProtocol::Udp => Self::Udp,
        }
    }
}

/// The operator commands on directives, as they appear in routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveCommand {
    /// `drain`: target draining.
    Drain,
    /// `undrain`: target active.
    Undrain,
    /// `disable`: target inactive.
    Disable,
}

impl DirectiveCommand {
    /// The target state the command sets.
    pub fn target(self) -> DirectiveState {
        match self {
            Self::Drain => DirectiveState::Draining,
            Self::Undrain => DirectiveState::Active,
            Self::Disable => DirectiveState::Inactive,
        }
    }
}

impl FromStr for DirectiveCommand {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drain" => Ok(Self::Drain),
            "undrain" => Ok(Self::Undrain),
            "disable" => Ok(Self::Disable),
            other => Err(format!(
                "unknown command {other:?}: expected drain, undrain or disable"
            )),
        }
    }
}

/// `POST /v1/hosts/{host}/apps`: a row an application adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRow {
    /// Name of the row, unique within the host.
    pub name: String,
    /// The service's virtual address and port.
    pub vip: SocketAddr,
    /// The service's protocol.
    pub protocol: ApiProtocol,
    /// Where the application listens.
    pub endpoint: SocketAddr,
    /// Protocol-specific detail (application id, URL prefix); empty by default.
    #[serde(default)]
    pub info: String,
    /// Relative capacity 0..=99 (default 50).
    #[serde(default)]
    pub capacity: Option<i64>,
    /// Initial health (default unknown).
    #[serde(default)]
    pub health: Option<ApiHealth>,
    /// Initial load in percent, 0..=100 (default 0).
    #[serde(default)]
    pub load: Option<i64>,
}

/// `PUT /v1/hosts/{host}/apps/{app}/status`: the application's own report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    /// New health.
    #[serde(default)]
    pub health: Option<ApiHealth>,
    /// A raw load sample in percent, 0..=100 (smoothed before publication).
    #[serde(default)]
    pub load: Option<i64>,
    /// New relative capacity, 0..=99.
    #[serde(default)]
    pub capacity: Option<i64>,
}

/// A row's directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveJson {
    /// What the host wants.
    pub target: ApiDirective,
    /// What every LB unit is known to apply; `null` while the row does not exist (its
    /// service is down).
    pub current: Option<ApiDirective>,
}

/// Progress of a row's postulate handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeJson {
    /// The state being postulated.
    pub target: ApiDirective,
    /// The latest postulate round that listed the row (`null` before the first).
    pub round: Option<u32>,
    /// The first round that counts for this handshake.
    pub first_round: Option<u32>,
    /// Units that hold the target state.
    pub agreed: Vec<String>,
    /// Units the handshake waits for.
    pub waiting: Vec<String>,
    /// Units given up on (silent for `unit_give_up_after` while another unit answered).
    pub given_up: Vec<String>,
    /// No unit has agreed and every unit is silent: the handshake cannot complete until a
    /// unit answers (current stays as it is).
    pub blocked: bool,
    /// Milliseconds since the target change was published.
    pub age_ms: u64,
}

/// The last verdict of a row's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckJson {
    /// The check's health verdict.
    pub health: ApiHealth,
    /// Load the check reported (exec checks).
    pub load: Option<u8>,
    /// What the probe saw.
    pub detail: String,
    /// Milliseconds since this verdict.
    pub age_ms: u64,
}

/// What the service manager says about a row's application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceJson {
    /// `up`, `down`, or `unknown` before the first look.
    pub state: String,
    /// Why it is down.
    pub reason: Option<String>,
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowJson {
    /// The row's name (a configured row: its service's name).
    pub name: String,
    /// `config` or `api`.
    pub origin: String,
    /// Whether the row is in the table (rows with a service manager exist only while the
    /// service is up).
    pub present: bool,
    /// The service's virtual address.
    pub vip: SocketAddr,
    /// The protocol.
    pub protocol: ApiProtocol,
    /// The application endpoint.
    pub endpoint: SocketAddr,
    /// Protocol-specific detail.
    pub info: String,
    /// Health.
    pub health: ApiHealth,
    /// Load in percent (smoothed).
    pub load: u8,
    /// Relative capacity.
    pub capacity: u8,
    /// Directive.
    pub directive: DirectiveJson,
    /// Whether the LB units were told the row as it is now (`false` while a load-only
    /// change waits for the load interval, or the row is not present).
    pub published: bool,
    /// The pending handshake, if the target differs from the current state.
    pub handshake: Option<HandshakeJson>,
    /// The last health-check verdict, if the row has a check and it reported.
    pub check: Option<CheckJson>,
    /// The service manager's view, if the row has one.
    pub service: Option<ServiceJson>,
}

/// One LB unit the agent reports to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitJson {
    /// Unit name.
    pub name: String,
    /// Unit id.
    pub id: u32,
    /// Its control address.
    pub address: SocketAddr,
}

/// One host this agent reports for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostJson {
    /// Host name.
    pub name: String,
    /// Host id (the sender id of its messages).
    pub id: u32,
    /// The UDP address its messages leave from and units' messages arrive on.
    pub listen: SocketAddr,
    /// Generation of the published table.
    pub generation: u64,
    /// Rows in the published table.
    pub published_rows: usize,
    /// The LB units (health-cache role) it reports to.
    pub units: Vec<UnitJson>,
    /// Its rows, configured rows first.
    pub rows: Vec<RowJson>,
    /// Its host group as this agent sees it; absent when the host is in no group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupJson>,
}

/// A host's group (`[[host_groups]]`) as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupJson {
    /// Group name.
    pub name: String,
    /// The leader's host name: the lowest host id among the live members.
    pub leader: String,
    /// The leader's host id.
    pub leader_id: u32,
    /// Names of the live members (this host included), in id order.
    pub members: Vec<String>,
    /// Names of every configured member, in id order.
    pub configured: Vec<String>,
    /// What this host does with its heartbeats: `direct` (no other member is live: to the
    /// units), `lead` (consolidates the group's heartbeats for the units) or `member` (to
    /// the leader).
    pub mode: String,
    /// The address it gossips on.
    pub gossip: Option<SocketAddr>,
    /// Generation of its identity in the group (grows when it rejoins).
    pub generation: u64,
}

/// The error document every failed request gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    /// What went wrong.
    pub error: String,
}
