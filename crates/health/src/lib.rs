//! Sans-I/O core of switchyard's health and load infrastructure (spec FIGS.
//! 13A–18, 30): the state machines of the host side and of the
//! load-balancing-unit side of the health and load protocol, the postulate
//! (drain) handshake, the consolidated cache and token/percentage
//! allotments.
//!
//! This crate owns protocol *meaning*: what a heartbeat, row change or
//! postulate does to a table. It owns no sockets, reads no clock and spawns
//! no threads: every input carries `now`, and the machines return messages
//! through `poll_transmit()` and deadlines through `poll_timeout()`, in the
//! style of `quinn-proto`. Bytes, authentication and replay protection
//! belong to `switchyard-wire`; sockets, timers, checks and the local API to
//! the daemons (`switchyard-agent`, `switchyard lb`).
//!
//! Layout:
//! - [`table`] (rows keyed by [`AppKey`], generation) and [`digest`] (the
//!   content check both sides compute identically);
//! - [`load`]: load smoothing with hysteresis;
//! - [`host`]: [`HostProtocol`], one per host identity, with
//!   [`handshake`] for the drain handshake;
//! - [`cache`]: [`ConsolidatedCache`], one per LB unit;
//! - [`allotment`]: allotments and their consumers;
//! - [`datagram`]: splitting messages to fit one datagram;
//! - [`settings`], [`counters`], [`error`].
//!
//! # Driving the machines
//!
//! A daemon owns one machine and a UDP socket. After every input (a
//! datagram opened by `switchyard_wire::Receiver`, a local change, a timer)
//! it drains `poll_transmit()`, seals each message with the codec and sends
//! it to the destination's address, then sleeps until the next datagram or
//! `poll_timeout()`, whichever comes first, and calls `handle_timeout(now)`
//! when the deadline passes.
//!
//! # Example: a host and a unit exchange a heartbeat
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use switchyard_health::{CacheSettings, ConsolidatedCache, HostProtocol, HostSettings, ServiceKey};
//! use switchyard_wire::health::{AppStatus, Health};
//! use switchyard_wire::{AppId, HostId, Protocol, SenderId, UnitId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let (host_id, unit_id) = (HostId(1), UnitId(100));
//! let mut host = HostProtocol::new(HostSettings::new(host_id, vec![unit_id]), now)?;
//! let mut unit = ConsolidatedCache::new(CacheSettings::new(unit_id), now)?;
//!
//! let app = AppId {
//!     vip: SocketAddr::from(([10, 0, 0, 1], 80)),
//!     protocol: Protocol::Tcp,
//!     endpoint: SocketAddr::from(([192, 168, 1, 2], 8080)),
//!     info: String::new(),
//! };
//! host.handle_timeout(now); // the first heartbeat is due at once
//! host.set_app(now, app.clone(), AppStatus::new(Health::Healthy, 20, 50)?)?;
//!
//! // Deliver everything both ways until quiet (a daemon would use sockets).
//! loop {
//!     let mut quiet = true;
//!     while let Some(t) = host.poll_transmit() {
//!         assert_eq!(t.to, unit_id);
//!         // Daemons log and count ignored messages rather than fail.
//!         unit.handle(now, SenderId::from(host_id), &t.message)?;
//!         quiet = false;
//!     }
//!     while let Some(t) = unit.poll_transmit() {
//!         assert_eq!(t.to, SenderId::from(host_id));
//!         host.handle(now, unit_id, &t.message)?;
//!         quiet = false;
//!     }
//!     if quiet {
//!         break;
//!     }
//! }
//!
//! // The heartbeat made the unit fetch a snapshot; the caches agree.
//! let cached = unit.host(host_id).expect("known host");
//! assert!(cached.in_sync);
//! assert_eq!(cached.table.digest(), host.published().digest());
//! let endpoints = unit.endpoints(&ServiceKey::of_app(&app));
//! assert_eq!(endpoints.len(), 1);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod allotment;
pub mod cache;
pub mod counters;
pub mod datagram;
pub mod digest;
pub mod error;
pub mod handshake;
pub mod host;
pub mod load;
pub mod settings;
pub mod table;

use std::time::Duration;

use switchyard_wire::Message;

pub use allotment::{
    AllotmentPolicy, AllotmentSource, Endpoint, PercentageAllotment, TokenAllotment,
};
pub use cache::{CachedEndpoint, ConsolidatedCache, HostView, ServiceKey};
pub use counters::{CacheCounters, HostCounters, MessageCounts};
pub use digest::DIGEST_SEED;
pub use error::{HealthError, Ignored};
pub use handshake::HandshakeView;
pub use host::{HostProtocol, RowView};
pub use load::LoadSmoother;
pub use settings::{CacheSettings, HostSettings, SmootherSettings};
pub use table::{AppKey, Table};

/// A message for a peer: what `poll_transmit()` returns. `A` is the peer's
/// id ([`switchyard_wire::UnitId`] for a host machine,
/// [`switchyard_wire::SenderId`] for a unit's cache); the daemon maps it to
/// an address and seals the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<A> {
    /// The destination.
    pub to: A,
    /// The message.
    pub message: Message,
}

/// Whole milliseconds of `d`, saturating at `u64::MAX` (for APIs, logs and
/// wire fields in milliseconds; narrow with `u32::try_from(..)` where a
/// field is 32 bits).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(switchyard_health::millis(Duration::from_micros(2_500)), 2);
/// assert_eq!(switchyard_health::millis(Duration::MAX), u64::MAX);
/// ```
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
