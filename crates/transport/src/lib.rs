//! Authenticated control-message endpoints for switchyard daemons.
//!
//! `switchyard-wire` owns the frame format and is sans-I/O; this crate is the thin I/O shell
//! every daemon shares: a tokio UDP socket that seals outgoing [`Message`]s with the cluster key
//! and a fresh sequence number, and opens incoming datagrams through a [`Receiver`] (tag, payload,
//! replay window), counting what it sent, received and rejected and why. It knows nothing about
//! what the messages mean: the health, plumbing and session crates do.
//!
//! Also shared by the daemons: [`cluster_codec`] (the cluster key from the configuration)
//! [`Throttle`] (at most one log line per period about repeated network complaints),
//! [`local_http`], the request rules of the daemons' loopback HTTP APIs, and [`metrics`],
//! the exposition of their `GET /metrics`.
//!
//! [`Message`]: switchyard_wire::Message
//! [`Receiver`]: switchyard_wire::Receiver

mod codec;
mod counters;
pub mod local_http;
pub mod metrics;
mod throttle;
mod udp;

pub use codec::cluster_codec;

pub use counters::{RejectReason, TransportCounters, TransportSnapshot};
pub use throttle::Throttle;
pub use udp::{Received, SendError, UdpEndpoint, sequencer_from_clock};
