//! The switchyard wire protocol: one authenticated frame format and the
//! messages of every control protocol (health and load, allotments, session
//! tracking, DAM, route plumbing, connection migration, encapsulation
//! mapping).
//!
//! This crate is sans-I/O: it owns bytes and rules, never sockets, clocks
//! or threads. Daemons move frames over UDP datagrams or length-delimited
//! TCP streams (see [`Codec::frame_len`]) and pass in sequence numbers.
//! It must not grow policy: what a message *means* for a table, a route or
//! a session belongs to the crates that implement those parts.
//!
//! Layout, by concern:
//! - [`frame`]: header layout and limits; [`auth`]: MAC key and tags;
//!   [`replay`]: sequence numbers and replay protection; [`codec`]:
//!   sealing and opening frames.
//! - [`encoding`]: the payload encoding rules ([`Reader`], [`Writer`],
//!   [`Wire`]); [`types`]: shared value types; [`message`]: type codes and
//!   the [`Message`] enum.
//! - One module per protocol family: [`health`], [`allotment`],
//!   [`session`], [`dam`], [`plumbing`], [`migration`], [`encap`].
//!
//! Every decoder is total (a typed error, never a panic or an unbounded
//! allocation) and fuzzed (`fuzz/`, `scripts/fuzz-smoke.sh`).
//!
//! # Example
//!
//! ```
//! use switchyard_wire::{
//!     Codec, HostId, MacKey, Message, Receiver, ReplayGuard, SenderId, Sequencer,
//!     frame::MAX_UDP_PAYLOAD, health::Goodbye,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = MacKey::derive(b"a cluster secret of at least 32 bytes", "prod-east")?;
//! let codec = Codec::new(key).with_max_payload(MAX_UDP_PAYLOAD);
//!
//! // Sender: daemons start at the current Unix time in nanoseconds.
//! let mut seq = Sequencer::new(1_700_000_000_000_000_000);
//! let host = HostId(7);
//! let msg = Message::from(Goodbye { host });
//! let frame = codec.seal(SenderId::from(host), seq.next_sequence(), &msg)?;
//!
//! // Receiver: authenticate, decode, and accept each frame once.
//! let mut rx = Receiver::new(codec, ReplayGuard::default());
//! let envelope = rx.accept(&frame)?;
//! assert_eq!(envelope.message, msg);
//! assert!(rx.accept(&frame).is_err()); // replayed
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod allotment;
pub mod auth;
pub mod codec;
pub mod dam;
pub mod encap;
pub mod encoding;
pub mod error;
pub mod frame;
pub mod health;
pub mod message;
pub mod migration;
pub mod plumbing;
pub mod replay;
pub mod session;
pub mod types;

pub use auth::MacKey;
pub use codec::{Codec, Envelope, Receiver};
pub use encoding::{Reader, Wire, Writer};
pub use error::{DecodeError, EncodeError, KeyError, Problem, ValueError, WireError};
pub use frame::{HEADER_LEN, Header, MAX_PAYLOAD, TAG_LEN};
pub use message::{Family, Message, MessageKind};
pub use replay::{ReplayGuard, Sequencer};
pub use session::SessionId;
pub use types::{AppId, FlowTuple, HostId, Protocol, SenderId, UnitId};
