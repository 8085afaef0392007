//! Authenticated control-message endpoints for switchyard daemons.
//!
//! `switchyard-wire` owns the frame format and is sans-I/O; this crate is the thin I/O shell
//! every daemon shares: a tokio UDP socket that seals outgoing [`Message`]s with the cluster key
//! and a fresh sequence number, and opens incoming datagrams through a [`Receiver`] (tag, payload,
//! replay window), counting what it sent, received and rejected and why. It knows nothing about
//! what the messages mean: the health, plumbing and session crates do.
//!
//! [`Message`]: switchyard_wire::Message
//! [`Receiver`]: switchyard_wire::Receiver

mod counters;
mod udp;

pub use counters::{RejectReason, TransportCounters, TransportSnapshot};
pub use udp::{Received, SendError, UdpEndpoint, sequencer_from_clock};
