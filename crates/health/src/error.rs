//! Typed errors: [`HealthError`] for misuse of the local API (unknown
//! application, invalid settings, wrong allotment scheme) and [`Ignored`]
//! for incoming messages a state machine did not act on. Neither module
//! here panics on network input; everything that came from the network and
//! was not used is reported as an [`Ignored`] reason and counted.

use switchyard_wire::allotment::AllotmentScheme;
use switchyard_wire::{AppId, HostId, MessageKind, SenderId, UnitId, ValueError};

/// An error of the local (in-process) API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The host's table has no row for this application.
    #[error("no row for application {0:?}")]
    UnknownApp(Box<AppId>),
    /// The application id cannot be put on the wire (for example its
    /// protocol-specific info is too long).
    #[error("invalid application id: {0}")]
    InvalidApp(#[source] ValueError),
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSettings {
        /// The setting.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An allotment response of the other scheme was given to a consumer.
    #[error("allotment uses the wrong scheme (expected {expected:?})")]
    WrongScheme {
        /// The scheme the consumer handles.
        expected: AllotmentScheme,
    },
}

/// Why an incoming message was not acted on. Every ignored message is
/// counted; none changes state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// The message is about another host than this host protocol's.
    #[error("message about {got}, this is {expected}")]
    OtherHost {
        /// This machine's host id.
        expected: HostId,
        /// The host named in the message.
        got: HostId,
    },
    /// The frame's sender may not speak for the host or unit the message
    /// names (only a host may report its own table; only a group leader may
    /// forward other hosts' heartbeats).
    #[error("sender {sender} may not send this message for {claimed}")]
    SenderMismatch {
        /// The authenticated sender of the frame.
        sender: SenderId,
        /// The identity the message claims.
        claimed: SenderId,
    },
    /// A unit answered about a unit id that is not its own.
    #[error("{from} answered as {claimed}")]
    UnitMismatch {
        /// The unit the message came from.
        from: UnitId,
        /// The unit the message names.
        claimed: UnitId,
    },
    /// The host is not in the cache (no heartbeat seen yet, aged out or
    /// departed); its heartbeats will bring it back.
    #[error("{0} is not in the cache")]
    UnknownHost(HostId),
    /// A heartbeat of a host that said goodbye, from before the goodbye
    /// (delayed or duplicated).
    #[error("{0} said goodbye; late heartbeat ignored")]
    Departed(HostId),
    /// A row change or snapshot not newer than the cached table (late,
    /// duplicated or reordered).
    #[error("{host}: generation {generation} is not newer than the cached {cached}")]
    StaleGeneration {
        /// The host.
        host: HostId,
        /// The message's generation.
        generation: u64,
        /// The cached generation.
        cached: u64,
    },
    /// A row in the message has an application id that cannot be encoded
    /// (only possible for messages built in-process, never for decoded ones).
    #[error("invalid row: {0}")]
    InvalidRow(#[source] ValueError),
    /// A postulate answer from a unit this host does not report to.
    #[error("{0} is not one of this host's units")]
    UnknownUnit(UnitId),
    /// This state machine does not handle this message type.
    #[error("{0} is not handled by this state machine")]
    NotForThisMachine(MessageKind),
}
