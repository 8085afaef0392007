//! Typed errors of the wire protocol.
//!
//! Owns every error a caller can see: [`WireError`] (opening a frame),
//! [`DecodeError`] (a payload that authenticated but does not parse),
//! [`ValueError`] (a value that violates a protocol invariant, found by a
//! constructor or while encoding), [`EncodeError`] (sealing failed) and
//! [`KeyError`] (bad key material). Nothing here panics, and every Display
//! message is meant to be read by an operator in a log line.

use crate::types::SenderId;

/// What exactly was wrong with a field. Shared by [`ValueError`] and
/// [`DecodeError`] so that the encoder and the decoder report a broken
/// invariant in the same words.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The input ended inside the field.
    Truncated {
        /// Bytes the field needs (at least).
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// An enum, option or boolean tag that this version does not define.
    InvalidTag(u8),
    /// A string that is not valid UTF-8.
    InvalidUtf8,
    /// A number outside its allowed range.
    OutOfRange {
        /// The offending value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Two addresses that must share an address family do not.
    MixedAddressFamilies,
    /// A string or byte blob longer than its limit.
    TooLong {
        /// Length found.
        len: u64,
        /// Maximum allowed length.
        max: u64,
    },
    /// A list with more elements than its limit.
    TooMany {
        /// Element count found.
        count: u64,
        /// Maximum allowed count.
        max: u64,
    },
    /// Fields that are individually fine but contradict each other.
    Inconsistent(&'static str),
    /// The payload continues after the message ended.
    TrailingBytes(usize),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated { needed, remaining } => {
                write!(
                    f,
                    "truncated: needs {needed} bytes but only {remaining} remain"
                )
            }
            Self::InvalidTag(tag) => write!(f, "invalid tag {tag}"),
            Self::InvalidUtf8 => f.write_str("not valid UTF-8"),
            Self::OutOfRange { value, min, max } => {
                write!(
                    f,
                    "value {value} is outside the allowed range {min}..={max}"
                )
            }
            Self::MixedAddressFamilies => f.write_str("mixes IPv4 and IPv6 addresses"),
            Self::TooLong { len, max } => write!(f, "length {len} exceeds the maximum {max}"),
            Self::TooMany { count, max } => {
                write!(f, "{count} elements exceed the maximum {max}")
            }
            Self::Inconsistent(what) => f.write_str(what),
            Self::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
        }
    }
}

/// A value violates a protocol invariant (raised by constructors and by the
/// encoder, which refuses to emit anything the decoder would reject).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
#[non_exhaustive]
pub struct ValueError {
    /// The field, as `Type.field`.
    pub field: &'static str,
    /// What was wrong with it.
    pub problem: Problem,
}

impl ValueError {
    /// A new error for `field`.
    pub fn new(field: &'static str, problem: Problem) -> Self {
        Self { field, problem }
    }

    /// Checks `min <= value <= max`.
    pub fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), Self> {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(Self::new(field, Problem::OutOfRange { value, min, max }))
        }
    }
}

/// An authenticated payload that is not a valid message of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {message} payload: {field}: {problem}")]
#[non_exhaustive]
pub struct DecodeError {
    /// The message (or other top-level value) being decoded.
    pub message: &'static str,
    /// The field, as `Type.field`.
    pub field: &'static str,
    /// What was wrong with it.
    pub problem: Problem,
}

/// A message could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message violates a protocol invariant; nothing was emitted.
    #[error("cannot encode {message}: {error}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// The broken invariant.
        error: ValueError,
    },
    /// The encoded payload is larger than the codec allows.
    #[error("cannot encode {message}: payload of {len} bytes exceeds the maximum {max}")]
    PayloadTooLong {
        /// The message type.
        message: &'static str,
        /// Encoded payload length.
        len: usize,
        /// The codec's limit.
        max: usize,
    },
}

/// Key material was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The cluster secret is too short to be a real secret.
    #[error("cluster secret is {len} bytes; at least {min} bytes are required")]
    SecretTooShort {
        /// Length supplied.
        len: usize,
        /// Minimum length.
        min: usize,
    },
}

/// Why a frame was not accepted. Variants are listed in the order the
/// checks run: header, authentication, payload, replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the header or than the frame it announces.
    #[error("frame truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The frame does not start with `SWYD`.
    #[error("bad magic {found:02x?}: not a switchyard frame")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks version {v})", v = crate::frame::VERSION)]
    UnsupportedVersion(u8),
    /// A message type code this build does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownMessageType(u8),
    /// Flags are reserved and must be zero in version 1.
    #[error("reserved header flags 0x{0:04x} are set; version 1 requires 0")]
    ReservedFlags(u16),
    /// The announced payload is larger than the receiver accepts.
    #[error("payload length {len} exceeds the maximum {max}")]
    PayloadTooLong {
        /// Announced payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The buffer is longer than the frame its header announces.
    #[error("frame length mismatch: header announces {expected} bytes, buffer holds {got}")]
    LengthMismatch {
        /// Frame length from the header.
        expected: usize,
        /// Buffer length.
        got: usize,
    },
    /// The authentication tag does not match: wrong cluster secret or
    /// cluster id, or the frame was corrupted or forged.
    #[error("authentication failed: wrong cluster secret or id, or a corrupted or forged frame")]
    BadTag,
    /// An authentic frame whose payload does not decode.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// This sequence number from this sender was already accepted.
    #[error("replayed frame: sequence {sequence} from sender {sender} was already accepted")]
    Replayed {
        /// The sender.
        sender: SenderId,
        /// The repeated sequence number.
        sequence: u64,
    },
    /// The sequence number is older than the replay window.
    #[error(
        "stale frame: sequence {sequence} from sender {sender} is behind the replay window (newest {newest})"
    )]
    Stale {
        /// The sender.
        sender: SenderId,
        /// The rejected sequence number.
        sequence: u64,
        /// The newest sequence number accepted from that sender.
        newest: u64,
    },
    /// Replay state is full; a new sender cannot be tracked.
    #[error("too many senders: replay state already tracks its maximum of {max}")]
    TooManySenders {
        /// The configured maximum.
        max: usize,
    },
}
