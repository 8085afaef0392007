//! Sealing and opening frames: [`Codec`] (stateless) and [`Receiver`]
//! (codec plus replay state).
//!
//! Opening runs the checks in a fixed order, cheapest and least trusting
//! first: header ([`Header::parse`]), frame length against the buffer,
//! authentication tag, payload decoding, and — in [`Receiver::accept`] —
//! replay protection. Nothing unauthenticated reaches a decoder or the
//! replay state.

use crate::auth::MacKey;
use crate::encoding::Writer;
use crate::error::{EncodeError, WireError};
use crate::frame::{HEADER_LEN, Header, MAX_PAYLOAD, TAG_LEN};
use crate::message::Message;
use crate::replay::ReplayGuard;
use crate::types::SenderId;

/// An opened frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Sender id from the (authenticated) header.
    pub sender: SenderId,
    /// Sender's sequence number.
    pub sequence: u64,
    /// The message.
    pub message: Message,
}

/// Seals and opens frames with a cluster's MAC key. Stateless: replay
/// protection is [`Receiver`]'s job.
#[derive(Debug, Clone)]
pub struct Codec {
    key: MacKey,
    max_payload: usize,
}

impl Codec {
    /// A codec accepting payloads up to [`MAX_PAYLOAD`].
    pub fn new(key: MacKey) -> Self {
        Self {
            key,
            max_payload: MAX_PAYLOAD,
        }
    }

    /// Lowers the payload limit (capped at [`MAX_PAYLOAD`]); UDP users set
    /// [`crate::frame::MAX_UDP_PAYLOAD`]. Applies to sealing and opening.
    pub fn with_max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload.min(MAX_PAYLOAD);
        self
    }

    /// The payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Seals `message` into a new frame.
    pub fn seal(
        &self,
        sender: SenderId,
        sequence: u64,
        message: &Message,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut frame = Vec::new();
        self.seal_into(sender, sequence, message, &mut frame)?;
        Ok(frame)
    }

    /// Appends a sealed frame to `out` (reusing its allocation). On error
    /// `out` is left as it was.
    pub fn seal_into(
        &self,
        sender: SenderId,
        sequence: u64,
        message: &Message,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let mut w = Writer::with_buffer(std::mem::take(out));
        w.raw(&[0; HEADER_LEN]);
        message.encode_payload_into(&mut w);
        let (mut buf, error) = w.into_parts();
        let name = message.kind().name();
        let payload_len = buf.len() - start - HEADER_LEN;
        let result = match error {
            Some(error) => Err(EncodeError::Invalid {
                message: name,
                error,
            }),
            None => match u32::try_from(payload_len) {
                Ok(len) if payload_len <= self.max_payload => Ok(len),
                _ => Err(EncodeError::PayloadTooLong {
                    message: name,
                    len: payload_len,
                    max: self.max_payload,
                }),
            },
        };
        match result {
            Ok(payload_len) => {
                let header = Header {
                    kind: message.kind(),
                    payload_len,
                    sender,
                    sequence,
                };
                buf[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
                let tag = self.key.tag(&buf[start..]);
                buf.extend_from_slice(&tag);
                *out = buf;
                Ok(())
            }
            Err(e) => {
                buf.truncate(start);
                *out = buf;
                Err(e)
            }
        }
    }

    /// Total length of the frame starting with `header` (at least its first
    /// [`HEADER_LEN`] bytes), for stream reassembly. Applies every header
    /// check, including this codec's payload limit.
    pub fn frame_len(&self, header: &[u8]) -> Result<usize, WireError> {
        crate::frame::frame_len(header, self.max_payload)
    }

    /// Opens one frame: `frame` must be exactly one whole frame.
    pub fn open(&self, frame: &[u8]) -> Result<Envelope, WireError> {
        let (header, payload) = self.authenticate(frame)?;
        Ok(Envelope {
            sender: header.sender,
            sequence: header.sequence,
            message: Message::decode_payload(header.kind, payload)?,
        })
    }

    /// Checks the header and the tag; returns the header and the payload.
    fn authenticate<'a>(&self, frame: &'a [u8]) -> Result<(Header, &'a [u8]), WireError> {
        let header = Header::parse(frame, self.max_payload)?;
        let len = header.frame_len();
        if frame.len() < len {
            return Err(WireError::Truncated {
                needed: len,
                got: frame.len(),
            });
        }
        if frame.len() > len {
            return Err(WireError::LengthMismatch {
                expected: len,
                got: frame.len(),
            });
        }
        let (signed, tag) = frame.split_at(len - TAG_LEN);
        if !self.key.verify(signed, tag) {
            return Err(WireError::BadTag);
        }
        Ok((header, &signed[HEADER_LEN..]))
    }
}

/// A [`Codec`] plus [`ReplayGuard`]: accepts each authentic frame once.
#[derive(Debug, Clone)]
pub struct Receiver {
    codec: Codec,
    replay: ReplayGuard,
}

impl Receiver {
    /// A receiver with the given replay state.
    pub fn new(codec: Codec, replay: ReplayGuard) -> Self {
        Self { codec, replay }
    }

    /// Opens `frame` and accepts it unless it is a replay, stale, or from
    /// one sender too many. A frame that fails for any reason leaves the
    /// replay state untouched.
    pub fn accept(&mut self, frame: &[u8]) -> Result<Envelope, WireError> {
        let (header, payload) = self.codec.authenticate(frame)?;
        // Reject replays before spending time decoding them; record only
        // once the payload decoded.
        self.replay.check(header.sender, header.sequence)?;
        let message = Message::decode_payload(header.kind, payload)?;
        self.replay.accept(header.sender, header.sequence)?;
        Ok(Envelope {
            sender: header.sender,
            sequence: header.sequence,
            message,
        })
    }

    /// The codec (e.g. to seal replies or size stream frames).
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The replay state (e.g. to forget a sender that said goodbye).
    pub fn replay_mut(&mut self) -> &mut ReplayGuard {
        &mut self.replay
    }

    /// The replay state.
    pub fn replay(&self) -> &ReplayGuard {
        &self.replay
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::error::Problem;
    use crate::message::MessageKind;

    fn codec() -> Codec {
        Codec::new(MacKey::derive(&[1; 32], "unit-test").unwrap())
    }

    /// An authentic frame around an arbitrary payload (only the crate can
    /// build one: the public API refuses to seal invalid payloads).
    fn authentic(codec: &Codec, kind: MessageKind, seq: u64, payload: &[u8]) -> Vec<u8> {
        let header = Header {
            kind,
            payload_len: u32::try_from(payload.len()).unwrap(),
            sender: SenderId(3),
            sequence: seq,
        };
        let mut frame = header.to_bytes().to_vec();
        frame.extend_from_slice(payload);
        let tag = codec.key.tag(&frame);
        frame.extend_from_slice(&tag);
        frame
    }

    #[test]
    fn authentic_but_malformed_payloads() {
        let codec = codec();
        // Goodbye with a trailing byte.
        let frame = authentic(&codec, MessageKind::Goodbye, 1, &[0, 0, 0, 1, 0]);
        match codec.open(&frame) {
            Err(WireError::Malformed(e)) => {
                assert_eq!(e.message, "Goodbye");
                assert_eq!(e.problem, Problem::TrailingBytes(1));
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        // Goodbye with a short payload.
        let frame = authentic(&codec, MessageKind::Goodbye, 1, &[0, 0]);
        assert!(matches!(codec.open(&frame), Err(WireError::Malformed(_))));
    }

    #[test]
    fn malformed_frames_do_not_consume_sequences() {
        let codec = codec();
        let mut rx = Receiver::new(codec.clone(), ReplayGuard::default());
        let bad = authentic(&codec, MessageKind::Goodbye, 10, &[0]);
        assert!(matches!(rx.accept(&bad), Err(WireError::Malformed(_))));
        assert!(rx.replay().is_empty());
        let good = authentic(&codec, MessageKind::Goodbye, 10, &[0, 0, 0, 3]);
        assert!(rx.accept(&good).is_ok());
        assert_eq!(rx.replay().newest(SenderId(3)), Some(10));
        // A replay is refused before its payload is decoded.
        let replayed_junk = authentic(&codec, MessageKind::Goodbye, 10, &[0xff]);
        assert!(matches!(
            rx.accept(&replayed_junk),
            Err(WireError::Replayed { .. })
        ));
    }

    #[test]
    fn empty_payload_frames() {
        let codec = codec();
        let frame = authentic(&codec, MessageKind::EncapMapping, 1, &[]);
        assert_eq!(frame.len(), crate::frame::FRAME_OVERHEAD);
        assert!(matches!(codec.open(&frame), Err(WireError::Malformed(_))));
    }
}
