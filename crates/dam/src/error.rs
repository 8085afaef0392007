//! Typed errors: [`DamError`] for misuse of the local API (invalid
//! settings, oversized keys or data) and [`Ignored`] for incoming messages
//! the machine did not act on. Nothing that came from the network panics or
//! fails the machine; it is reported as an [`Ignored`] reason and counted.

use switchyard_wire::{MessageKind, UnitId};

/// An error of the local (in-process) API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DamError {
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSettings {
        /// The setting.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The key is longer than the wire allows.
    #[error("atom key of {len} bytes exceeds {max}")]
    KeyTooLong {
        /// Key length.
        len: usize,
        /// `switchyard_wire::dam::MAX_ATOM_KEY_LEN`.
        max: usize,
    },
    /// The data is longer than the wire allows.
    #[error("atom data of {len} bytes exceeds {max}")]
    DataTooLong {
        /// Data length.
        len: usize,
        /// `switchyard_wire::dam::MAX_ATOM_DATA_LEN`.
        max: usize,
    },
    /// A time to live of zero: the atom would expire before anyone saw it.
    #[error("time to live must not be zero")]
    ZeroTtl,
}

/// Why an incoming message was not acted on. Every ignored message is
/// counted; none changes state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// Not a DAM message.
    #[error("{0} is not a DAM message")]
    NotDam(MessageKind),
    /// A `ReturnAtom` for no pending push or query, about a key this unit
    /// does not hold (late answer to a finished query, or a duplicate).
    #[error("no pending call {0}")]
    UnknownCall(u64),
    /// A `ReturnAtom` from a unit the call was not sent to.
    #[error("call {call_id} was not sent to {from}")]
    WrongResponder {
        /// The call.
        call_id: u64,
        /// Who answered.
        from: UnitId,
    },
    /// A `ReturnAtom` about another key than its call's.
    #[error("call {0} answered about another key")]
    KeyMismatch(u64),
    /// A message claiming to come from this unit itself.
    #[error("message claims to come from this unit")]
    FromSelf,
    /// A `DeleteAtom` for a key this unit holds no live copy of.
    #[error("nothing to delete")]
    NothingToDelete,
}
