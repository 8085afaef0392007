//! Health and load protocol (message types `0x1_`, spec FIGS. 15 and 16).
//!
//! Hosts report the health, load and load-balancing directive of each of
//! their applications to the load balancing units' consolidated health and
//! load caches. Heartbeats carry a content check so a unit can notice that
//! its cache diverged and ask for a snapshot; the postulate messages
//! implement the drain handshake (a host changes a directive's *current*
//! state only after no unit contradicts the *target* state any more).
//! A host-group leader may consolidate its members' heartbeats; the group's
//! members detect each other's failures with gossip carried in
//! [`GroupGossip`] frames, so membership traffic is authenticated like every
//! other control message.

use std::net::SocketAddr;

use crate::encoding::{Reader, Wire, Writer, wire_enum};
use crate::error::{DecodeError, Problem, ValueError};
use crate::types::{AppId, HostId, UnitId};

/// Maximum length of a host's DNS name in a heartbeat.
pub const MAX_DNS_NAME_LEN: usize = 253;
/// Largest allowed [`AppStatus::load`] (percent).
pub const MAX_LOAD: u8 = 100;
/// Largest allowed [`AppStatus::capacity`].
pub const MAX_CAPACITY: u8 = 99;
/// Maximum length of a host group's name in [`GroupGossip`] (the
/// configuration's name limit).
pub const MAX_GROUP_NAME_LEN: usize = 63;

/// Lists in this family are bounded by the payload size only.
const UNBOUNDED: usize = usize::MAX;

/// "I am alive", with a check of the sender's health and load table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The host the heartbeat is about.
    pub host: HostId,
    /// Content indicator of the host's table, to detect a stale cache.
    pub check: ContentCheck,
    /// The host's DNS name, sent every few heartbeats.
    pub name: Option<String>,
    /// The host's address for snapshot requests, if not derivable otherwise.
    pub address: Option<SocketAddr>,
    /// Host-group mode: ask the group leader to forward this heartbeat to
    /// the units even though group membership did not change.
    pub forward: bool,
}

/// Content indicator for a health and load table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentCheck {
    /// One generation and digest for the whole table.
    Table {
        /// Table generation.
        generation: u64,
        /// Digest of the table content.
        digest: u64,
    },
    /// Per-chunk generations and digests.
    Chunks(Vec<ChunkCheck>),
}

/// Content indicator for one chunk of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCheck {
    /// Chunk number.
    pub chunk: u16,
    /// Chunk generation.
    pub generation: u64,
    /// Digest of the chunk content.
    pub digest: u64,
}

/// "I am shutting down": units clear the host's rows at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    /// The departing host.
    pub host: HostId,
}

/// Rows of a host's table changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    /// The host whose table changed.
    pub host: HostId,
    /// Table generation after applying `ops`.
    pub generation: u64,
    /// Changes, applied in order.
    pub ops: Vec<RowOp>,
}

/// One change to a health and load table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// A new row.
    Add(Row),
    /// Replaces the row with the same application id.
    Update(Row),
    /// Removes the row of an application.
    Delete(AppId),
}

/// One application's row in a health and load table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The application.
    pub app: AppId,
    /// Its health and load.
    pub status: AppStatus,
    /// Its load balancing directive.
    pub directive: Directive,
}

wire_enum! {
    /// Health of an application.
    pub enum Health {
        /// Serving normally.
        Healthy = 0,
        /// Failing its health checks.
        Failing = 1,
        /// Not known yet.
        Unknown = 2,
    }
}

impl Health {
    /// Stable lowercase name for logs, APIs and metrics labels:
    /// `"healthy"`, `"failing"` or `"unknown"`.
    ///
    /// ```
    /// use switchyard_wire::health::Health;
    /// let names: Vec<_> = Health::ALL.iter().map(|h| h.as_str()).collect();
    /// assert_eq!(names, ["healthy", "failing", "unknown"]);
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Failing => "failing",
            Self::Unknown => "unknown",
        }
    }
}

/// Health, load and capacity of one application. Fields are private so
/// every value is in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppStatus {
    health: Health,
    load: u8,
    capacity: u8,
}

impl AppStatus {
    /// A status; `load` is a percentage (0..=100) and `capacity` a relative
    /// weight (0..=99).
    pub fn new(health: Health, load: u8, capacity: u8) -> Result<Self, ValueError> {
        ValueError::check_range("AppStatus.load", load.into(), 0, MAX_LOAD.into())?;
        ValueError::check_range(
            "AppStatus.capacity",
            capacity.into(),
            0,
            MAX_CAPACITY.into(),
        )?;
        Ok(Self {
            health,
            load,
            capacity,
        })
    }

    /// Health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Load in percent, 0..=100.
    pub fn load(&self) -> u8 {
        self.load
    }

    /// Relative capacity, 0..=99.
    pub fn capacity(&self) -> u8 {
        self.capacity
    }
}

impl Wire for AppStatus {
    fn encode(&self, w: &mut Writer) {
        self.health.encode(w);
        w.u8(self.load);
        w.u8(self.capacity);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let health = Health::decode(r)?;
        let load = r.u8("AppStatus.load")?;
        let capacity = r.u8("AppStatus.capacity")?;
        r.check(Self::new(health, load, capacity))
    }
}

wire_enum! {
    /// A load balancing directive state.
    pub enum DirectiveState {
        /// Receives new connections.
        Active = 0,
        /// Keeps existing sessions, receives no new ones.
        Draining = 1,
        /// Receives nothing.
        Inactive = 2,
    }
}

impl DirectiveState {
    /// Stable lowercase name for logs, APIs and metrics labels:
    /// `"active"`, `"draining"` or `"inactive"`.
    ///
    /// ```
    /// use switchyard_wire::health::DirectiveState;
    /// let names: Vec<_> = DirectiveState::ALL.iter().map(|s| s.as_str()).collect();
    /// assert_eq!(names, ["active", "draining", "inactive"]);
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Inactive => "inactive",
        }
    }
}

/// A row's directive: what the host wants (`target`) and what it believes
/// the units currently apply (`current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Directive {
    /// Desired state.
    pub target: DirectiveState,
    /// State the units are believed to apply.
    pub current: DirectiveState,
}

/// A unit asks a host for its whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetTableSnapshot {
    /// The requesting unit.
    pub requester: UnitId,
}

/// One part of a host's table, sent in answer to [`GetTableSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTableSnapshot {
    /// The host whose table this is.
    pub host: HostId,
    /// Table generation of the snapshot.
    pub generation: u64,
    /// Index of this part, `< parts`.
    pub part: u16,
    /// Number of parts, at least 1.
    pub parts: u16,
    /// Rows in this part.
    pub rows: Vec<Row>,
}

impl SendTableSnapshot {
    fn validate(&self) -> Result<(), ValueError> {
        ValueError::check_range(
            "SendTableSnapshot.parts",
            self.parts.into(),
            1,
            u16::MAX.into(),
        )?;
        ValueError::check_range(
            "SendTableSnapshot.part",
            self.part.into(),
            0,
            u64::from(self.parts) - 1,
        )
    }
}

/// A host postulates the directive state units should hold for its
/// applications; units that disagree answer with [`PostulateWrong`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostulateTableState {
    /// The postulating host.
    pub host: HostId,
    /// Round number, echoed in answers.
    pub round: u32,
    /// Postulated states.
    pub postulates: Vec<Postulate>,
}

/// One postulated directive state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postulate {
    /// The application.
    pub app: AppId,
    /// The state units should hold.
    pub state: DirectiveState,
}

/// A unit reports which postulates of a round it disagrees with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostulateWrong {
    /// The host that postulated.
    pub host: HostId,
    /// The disagreeing unit.
    pub unit: UnitId,
    /// The round being answered.
    pub round: u32,
    /// The disagreements.
    pub wrong: Vec<WrongPostulate>,
}

/// One disagreement with a postulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongPostulate {
    /// The application.
    pub app: AppId,
    /// The state the unit actually holds; `None` if it has no such row.
    pub actual: Option<DirectiveState>,
}

/// Heartbeats of a host group, sent by its elected leader (FIG. 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolidatedHeartbeat {
    /// The group leader.
    pub leader: HostId,
    /// Members' heartbeats.
    pub heartbeats: Vec<Heartbeat>,
}

/// One membership gossip datagram of a host group (FIG. 16). The wire
/// protocol only authenticates and carries it: `data` is opaque here and
/// belongs to the group membership protocol of the host agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGossip {
    /// The group the gossip belongs to, at most [`MAX_GROUP_NAME_LEN`]
    /// bytes; receivers drop gossip of other groups.
    pub group: String,
    /// The membership protocol's datagram, bounded by the payload size.
    pub data: Vec<u8>,
}

/// An operator's act on a host, relayed by a unit (a switchyard extension of the protocol:
/// the host's agent carries it out as its local API would, and the postulate handshake then
/// moves every unit to the new directive). Hosts answer with [`DirectiveReply`]; the act is
/// idempotent, so a unit may repeat a request it got no answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveRequest {
    /// The host addressed.
    pub host: HostId,
    /// The unit relaying the act.
    pub unit: UnitId,
    /// Echoed in the reply.
    pub request: u32,
    /// One application, or every application of the host (`None`).
    pub app: Option<AppId>,
    /// What to do.
    pub act: Act,
}

/// What a [`DirectiveRequest`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Set the directive's target state.
    Target(DirectiveState),
    /// Set the relative capacity, `0..=`[`MAX_CAPACITY`].
    Capacity(u8),
}

impl Act {
    /// Stable lowercase name for logs: the target state's name, or `"capacity"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Target(state) => state.as_str(),
            Self::Capacity(_) => "capacity",
        }
    }
}

wire_enum! {
    /// How a host answered a [`DirectiveRequest`].
    pub enum ActOutcome {
        /// Applied to `rows` applications.
        Applied = 0,
        /// The host has no such application.
        NoSuchApp = 1,
        /// The host does not take acts from units (its agent's configuration).
        Refused = 2,
    }
}

impl ActOutcome {
    /// Stable lowercase name for logs and APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NoSuchApp => "no-such-app",
            Self::Refused => "refused",
        }
    }
}

/// A host's answer to a [`DirectiveRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectiveReply {
    /// The answering host.
    pub host: HostId,
    /// The request answered.
    pub request: u32,
    /// What happened.
    pub outcome: ActOutcome,
    /// Applications the act applied to (0 unless [`ActOutcome::Applied`]).
    pub rows: u16,
}

impl Wire for ChunkCheck {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.chunk);
        w.u64(self.generation);
        w.u64(self.digest);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            chunk: r.u16("ChunkCheck.chunk")?,
            generation: r.u64("ChunkCheck.generation")?,
            digest: r.u64("ChunkCheck.digest")?,
        })
    }
}

impl Wire for ContentCheck {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Table { generation, digest } => {
                w.u8(0);
                w.u64(*generation);
                w.u64(*digest);
            }
            Self::Chunks(chunks) => {
                w.u8(1);
                w.list_of("ContentCheck.chunks", chunks, UNBOUNDED);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("ContentCheck")? {
            0 => Ok(Self::Table {
                generation: r.u64("ContentCheck.generation")?,
                digest: r.u64("ContentCheck.digest")?,
            }),
            1 => Ok(Self::Chunks(r.list_of("ContentCheck.chunks", UNBOUNDED)?)),
            tag => Err(r.error("ContentCheck", Problem::InvalidTag(tag))),
        }
    }
}

impl Wire for Heartbeat {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        self.check.encode(w);
        w.option(self.name.as_ref(), |w, name| {
            w.string("Heartbeat.name", name, MAX_DNS_NAME_LEN);
        });
        w.option(self.address.as_ref(), Writer::socket_addr);
        w.bool(self.forward);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            check: ContentCheck::decode(r)?,
            name: r.option("Heartbeat.name", |r| {
                r.string("Heartbeat.name", MAX_DNS_NAME_LEN)
            })?,
            address: r.option("Heartbeat.address", |r| r.socket_addr("Heartbeat.address"))?,
            forward: r.bool("Heartbeat.forward")?,
        })
    }
}

impl Wire for Goodbye {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
        })
    }
}

impl Wire for Directive {
    fn encode(&self, w: &mut Writer) {
        self.target.encode(w);
        self.current.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            target: DirectiveState::decode(r)?,
            current: DirectiveState::decode(r)?,
        })
    }
}

impl Wire for Row {
    fn encode(&self, w: &mut Writer) {
        self.app.encode(w);
        self.status.encode(w);
        self.directive.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            app: AppId::decode(r)?,
            status: AppStatus::decode(r)?,
            directive: Directive::decode(r)?,
        })
    }
}

impl Wire for RowOp {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Add(row) => {
                w.u8(0);
                row.encode(w);
            }
            Self::Update(row) => {
                w.u8(1);
                row.encode(w);
            }
            Self::Delete(app) => {
                w.u8(2);
                app.encode(w);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("RowOp")? {
            0 => Row::decode(r).map(Self::Add),
            1 => Row::decode(r).map(Self::Update),
            2 => AppId::decode(r).map(Self::Delete),
            tag => Err(r.error("RowOp", Problem::InvalidTag(tag))),
        }
    }
}

impl Wire for RowChange {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        w.u64(self.generation);
        w.list_of("RowChange.ops", &self.ops, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            generation: r.u64("RowChange.generation")?,
            ops: r.list_of("RowChange.ops", UNBOUNDED)?,
        })
    }
}

impl Wire for GetTableSnapshot {
    fn encode(&self, w: &mut Writer) {
        self.requester.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            requester: UnitId::decode(r)?,
        })
    }
}

impl Wire for SendTableSnapshot {
    fn encode(&self, w: &mut Writer) {
        w.check(self.validate());
        self.host.encode(w);
        w.u64(self.generation);
        w.u16(self.part);
        w.u16(self.parts);
        w.list_of("SendTableSnapshot.rows", &self.rows, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let snapshot = Self {
            host: HostId::decode(r)?,
            generation: r.u64("SendTableSnapshot.generation")?,
            part: r.u16("SendTableSnapshot.part")?,
            parts: r.u16("SendTableSnapshot.parts")?,
            rows: r.list_of("SendTableSnapshot.rows", UNBOUNDED)?,
        };
        r.check(snapshot.validate())?;
        Ok(snapshot)
    }
}

impl Wire for Postulate {
    fn encode(&self, w: &mut Writer) {
        self.app.encode(w);
        self.state.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            app: AppId::decode(r)?,
            state: DirectiveState::decode(r)?,
        })
    }
}

impl Wire for PostulateTableState {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        w.u32(self.round);
        w.list_of(
            "PostulateTableState.postulates",
            &self.postulates,
            UNBOUNDED,
        );
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            round: r.u32("PostulateTableState.round")?,
            postulates: r.list_of("PostulateTableState.postulates", UNBOUNDED)?,
        })
    }
}

impl Wire for WrongPostulate {
    fn encode(&self, w: &mut Writer) {
        self.app.encode(w);
        w.option(self.actual.as_ref(), |w, state| state.encode(w));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            app: AppId::decode(r)?,
            actual: r.option("WrongPostulate.actual", DirectiveState::decode)?,
        })
    }
}

impl Wire for PostulateWrong {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        self.unit.encode(w);
        w.u32(self.round);
        w.list_of("PostulateWrong.wrong", &self.wrong, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            unit: UnitId::decode(r)?,
            round: r.u32("PostulateWrong.round")?,
            wrong: r.list_of("PostulateWrong.wrong", UNBOUNDED)?,
        })
    }
}

impl Wire for ConsolidatedHeartbeat {
    fn encode(&self, w: &mut Writer) {
        self.leader.encode(w);
        w.list_of(
            "ConsolidatedHeartbeat.heartbeats",
            &self.heartbeats,
            UNBOUNDED,
        );
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            leader: HostId::decode(r)?,
            heartbeats: r.list_of("ConsolidatedHeartbeat.heartbeats", UNBOUNDED)?,
        })
    }
}

impl Wire for GroupGossip {
    fn encode(&self, w: &mut Writer) {
        w.string("GroupGossip.group", &self.group, MAX_GROUP_NAME_LEN);
        w.blob("GroupGossip.data", &self.data, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            group: r.string("GroupGossip.group", MAX_GROUP_NAME_LEN)?,
            data: r.blob("GroupGossip.data", UNBOUNDED)?,
        })
    }
}

impl Wire for Act {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Target(state) => {
                w.u8(0);
                state.encode(w);
            }
            Self::Capacity(capacity) => {
                w.check(ValueError::check_range(
                    "Act.capacity",
                    (*capacity).into(),
                    0,
                    MAX_CAPACITY.into(),
                ));
                w.u8(1);
                w.u8(*capacity);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("Act")? {
            0 => DirectiveState::decode(r).map(Self::Target),
            1 => {
                let capacity = r.u8("Act.capacity")?;
                r.check(ValueError::check_range(
                    "Act.capacity",
                    capacity.into(),
                    0,
                    MAX_CAPACITY.into(),
                ))?;
                Ok(Self::Capacity(capacity))
            }
            tag => Err(r.error("Act", Problem::InvalidTag(tag))),
        }
    }
}

impl Wire for DirectiveRequest {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        self.unit.encode(w);
        w.u32(self.request);
        w.option(self.app.as_ref(), |w, app| app.encode(w));
        self.act.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            unit: UnitId::decode(r)?,
            request: r.u32("DirectiveRequest.request")?,
            app: r.option("DirectiveRequest.app", AppId::decode)?,
            act: Act::decode(r)?,
        })
    }
}

impl Wire for DirectiveReply {
    fn encode(&self, w: &mut Writer) {
        self.host.encode(w);
        w.u32(self.request);
        self.outcome.encode(w);
        w.u16(self.rows);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            host: HostId::decode(r)?,
            request: r.u32("DirectiveReply.request")?,
            outcome: ActOutcome::decode(r)?,
            rows: r.u16("DirectiveReply.rows")?,
        })
    }
}
