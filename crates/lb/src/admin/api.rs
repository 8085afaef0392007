//! The JSON documents of the admin API, shared by the server, `switchyard
//! ctl` and tests (every type serialises and deserialises). Enumerations
//! travel as lowercase strings (`"healthy"`, `"draining"`, `"tcp"`, ...) so
//! a newer unit can add values without breaking an older `ctl`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The unit that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// Unit name.
    pub name: String,
    /// Unit id.
    pub id: u32,
    /// Configured roles.
    pub roles: Vec<String>,
    /// Roles running in this process.
    pub running: Vec<String>,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsResponse {
    /// The unit.
    pub unit: UnitInfo,
    /// Every cached host, by id.
    pub hosts: Vec<HostEntry>,
}

/// One host in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// Host id.
    pub id: u32,
    /// Name from its heartbeats, else from the configuration.
    pub name: Option<String>,
    /// Address of its agent (advertised in heartbeats).
    pub address: Option<SocketAddr>,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms: u64,
    /// Whether it heartbeated within `host_dead_after`.
    pub alive: bool,
    /// Cached table generation.
    pub generation: u64,
    /// Whether the cache matched the host's last heartbeat.
    pub in_sync: bool,
    /// Whether the cache holds a complete copy (else a resync is pending).
    pub baseline: bool,
    /// Its application endpoints.
    pub rows: Vec<HostRow>,
}

/// One application endpoint of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Virtual service address.
    pub vip: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Application endpoint address.
    pub endpoint: SocketAddr,
    /// Protocol-specific info (URL prefix, ...).
    pub info: String,
    /// `healthy`, `failing` or `unknown`.
    pub health: String,
    /// Load in percent of capacity.
    pub load: u8,
    /// Relative capacity, 0..=99.
    pub capacity: u8,
    /// Directive target: `active`, `draining` or `inactive`.
    pub target: String,
    /// Directive current state.
    pub current: String,
    /// `complete` when target == current, else `pending`.
    pub handshake: String,
    /// Tokens this endpoint gets in a fresh allotment of 100 tokens for its
    /// service.
    pub tokens: u32,
}

/// `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesResponse {
    /// The unit.
    pub unit: UnitInfo,
    /// Every service with at least one cached endpoint.
    pub services: Vec<ServiceEntry>,
}

/// One service (VIP, protocol, info) and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The configured service with this VIP and protocol, if any.
    pub name: Option<String>,
    /// Virtual service address.
    pub vip: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Protocol-specific info.
    pub info: String,
    /// Its endpoints, by host.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// Host id.
    pub host: u32,
    /// Host name.
    pub host_name: Option<String>,
    /// Application endpoint address.
    pub endpoint: SocketAddr,
    /// Whether the host is alive.
    pub alive: bool,
    /// Health.
    pub health: String,
    /// Load in percent.
    pub load: u8,
    /// Capacity.
    pub capacity: u8,
    /// Directive target.
    pub target: String,
    /// Directive current state.
    pub current: String,
    /// Weight in allotments: capacity × (100 − load) when healthy and
    /// active, else 0.
    pub spare_capacity: u64,
}

/// `GET /v1/allotments`: one issued allotment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllotmentView {
    /// Request id.
    pub request_id: u64,
    /// Virtual service address.
    pub vip: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Protocol-specific info.
    pub info: String,
    /// `tokens` or `percentages`.
    pub scheme: String,
    /// Token scheme: how long the tokens stay valid.
    pub valid_for_ms: Option<u32>,
    /// Percentage scheme: how long the shares apply.
    pub duration_ms: Option<u32>,
    /// Grants, in cache order (by host).
    pub entries: Vec<AllotmentEntry>,
}

/// One grant of an allotment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllotmentEntry {
    /// Host id.
    pub host: u32,
    /// Host name.
    pub host_name: Option<String>,
    /// Application endpoint address.
    pub endpoint: SocketAddr,
    /// Token scheme: connections admitted.
    pub tokens: Option<u32>,
    /// Percentage scheme: share in 1/100 %.
    pub basis_points: Option<u16>,
}

/// `GET /v1/counters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersResponse {
    /// The unit.
    pub unit: UnitInfo,
    /// The UDP control endpoint.
    pub transport: TransportCountersView,
    /// The consolidated cache.
    pub cache: CacheCountersView,
    /// The health service.
    pub service: ServiceCountersView,
    /// Current sizes.
    pub state: StateView,
    /// The forwarder role, if the unit runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder: Option<super::flows::ForwarderView>,
    /// The classifier role, if the unit runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<super::flows::ClassifierView>,
}

/// Counters of the UDP control endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCountersView {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
    /// Datagrams received and authenticated.
    pub received: u64,
    /// Bytes received in authenticated datagrams.
    pub received_bytes: u64,
    /// Datagrams rejected, by reason (`framing`, `bad-tag`, `malformed`,
    /// `replayed`, `stale`, `too-many-senders`); every reason is listed.
    pub rejected: BTreeMap<String, u64>,
    /// All rejected datagrams.
    pub rejected_total: u64,
}

/// Counters of the consolidated cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCountersView {
    /// Messages handled, by kind (`Heartbeat`, `RowChange`, ...).
    pub received: BTreeMap<String, u64>,
    /// Messages sent, by kind.
    pub sent: BTreeMap<String, u64>,
    /// Messages ignored (all reasons; see `service.ignored`).
    pub ignored: u64,
    /// Row changes not newer than the cache.
    pub stale_row_changes: u64,
    /// Snapshot requests sent (resyncs started).
    pub snapshots_requested: u64,
    /// Snapshots applied (resyncs completed).
    pub snapshots_completed: u64,
    /// Incomplete snapshots dropped.
    pub partial_snapshots_dropped: u64,
    /// Hosts aged out.
    pub age_outs: u64,
    /// Hosts cleared by a goodbye.
    pub goodbyes: u64,
    /// Hosts resynchronised after their generation went backwards.
    pub generation_resets: u64,
    /// Answers to postulate rounds.
    pub postulate_replies: u64,
    /// Allotments issued.
    pub allotments: u64,
}

/// Counters of the health service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCountersView {
    /// Authenticated messages the cache ignored, by reason.
    pub ignored: BTreeMap<String, u64>,
    /// Messages dropped for lack of a destination address.
    pub unroutable: u64,
    /// Socket receive errors.
    pub receive_errors: u64,
}

/// Current sizes of the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    /// Hosts.
    pub hosts: u64,
    /// Hosts in sync.
    pub hosts_in_sync: u64,
    /// Endpoints (rows).
    pub endpoints: u64,
    /// Services.
    pub services: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}
