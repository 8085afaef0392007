//! The frame header: layout, constants and the checks that run before
//! authentication.
//!
//! Every message of every family travels in the same frame, as a UDP
//! datagram or length-delimited on a TCP stream:
//!
//! ```text
//!  0       4   5   6       8               12              16                              24
//!  +-------+---+---+-------+---------------+---------------+-------------------------------+
//!  | SWYD  |ver|typ| flags |  payload len  |   sender id   |        sequence number        |
//!  +-------+---+---+-------+---------------+---------------+-------------------------------+
//!  | payload (payload len bytes) ...                                                       |
//!  +---------------------------------------------------------------------------------------+
//!  | HMAC-SHA256 tag over header and payload (32 bytes)                                    |
//!  +---------------------------------------------------------------------------------------+
//! ```
//!
//! All integers are big-endian. Version 1 requires the flags to be zero.

use crate::error::WireError;
use crate::message::MessageKind;
use crate::types::SenderId;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SWYD";
/// Protocol version spoken by this crate.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Authentication tag length in bytes (full HMAC-SHA256 output).
pub const TAG_LEN: usize = 32;
/// Bytes a frame adds around its payload.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest payload any codec accepts (16 MiB). Codecs may set a lower limit;
/// UDP users typically use [`MAX_UDP_PAYLOAD`].
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Payload limit for frames sent as single UDP datagrams.
pub const MAX_UDP_PAYLOAD: usize = 65_000;

/// A parsed and checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub kind: MessageKind,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Sender (a host id or unit id).
    pub sender: SenderId,
    /// Sender's sequence number.
    pub sequence: u64,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `bytes` (more may follow)
    /// and checks, in order: magic, version, known message type, zero
    /// flags, payload length within `max_payload`. Nothing is authenticated
    /// yet, so callers must not act on the header beyond sizing the frame.
    pub fn parse(bytes: &[u8], max_payload: usize) -> Result<Self, WireError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        };
        let [
            m0,
            m1,
            m2,
            m3,
            version,
            kind,
            f0,
            f1,
            l0,
            l1,
            l2,
            l3,
            s0,
            s1,
            s2,
            s3,
            q @ ..,
        ] = *h;
        let magic = [m0, m1, m2, m3];
        if magic != MAGIC {
            return Err(WireError::BadMagic { found: magic });
        }
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let kind = MessageKind::from_code(kind).ok_or(WireError::UnknownMessageType(kind))?;
        let flags = u16::from_be_bytes([f0, f1]);
        if flags != 0 {
            return Err(WireError::ReservedFlags(flags));
        }
        let payload_len = u32::from_be_bytes([l0, l1, l2, l3]);
        let max = max_payload.min(MAX_PAYLOAD);
        // u32 always fits usize on the platforms switchyard supports; if it
        // did not, the length would certainly exceed the maximum.
        let len = usize::try_from(payload_len).unwrap_or(usize::MAX);
        if len > max {
            return Err(WireError::PayloadTooLong { len, max });
        }
        Ok(Self {
            kind,
            payload_len,
            sender: SenderId(u32::from_be_bytes([s0, s1, s2, s3])),
            sequence: u64::from_be_bytes(q),
        })
    }

    /// The header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.kind.code();
        // out[6..8]: flags, zero in version 1.
        out[8..12].copy_from_slice(&self.payload_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.sender.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_be_bytes());
        out
    }

    /// Length of the whole frame: header, payload and tag.
    pub fn frame_len(&self) -> usize {
        // `parse` bounded payload_len by MAX_PAYLOAD, so this cannot overflow.
        FRAME_OVERHEAD + self.payload_len as usize
    }
}

/// Total length of the frame whose first [`HEADER_LEN`] bytes are `header`,
/// for reassembling frames from a byte stream. Runs every header check of
/// [`Header::parse`], so a stream carrying junk or an oversized frame can be
/// dropped before buffering it.
pub fn frame_len(header: &[u8], max_payload: usize) -> Result<usize, WireError> {
    Header::parse(header, max_payload).map(|h| h.frame_len())
}
