//! Sans-I/O core of switchyard's distributed atom manager (DAM, spec FIGS.
//! 20–24 and 26–31): a distributed in-memory table of *atoms* — key (a
//! session id or a flow), data (the host holding the session), metadata
//! (adding unit, version, zombie flag, expiry) — spread over the LB units,
//! with the spec's four calls: add, delete, query and return atom.
//!
//! This crate owns what the calls *mean* for the table: placement,
//! replication, caching, zombies, collisions and re-replication after
//! membership changes. It owns no sockets, reads no clock and spawns no
//! threads: every input carries `now`, and [`Dam`] returns messages through
//! [`Dam::poll_transmit`], answers through [`Dam::poll_event`] and deadlines
//! through [`Dam::poll_timeout`], like `switchyard-health`. Bytes, the MAC
//! and replay protection belong to `switchyard-wire`; membership and failure
//! detection to a SWIM library (foca) in the daemon, which passes the live
//! set to [`Dam::set_members`]; sockets and timers to the LB daemon.
//!
//! # The protocol
//!
//! - **Placement** ([`placement`]): the owners of a key are the first
//!   `level + 1` live units (all of them for [`Replication::Full`]) ranked
//!   by rendezvous hashing, `xxh3_64_with_seed(key ‖ u32_be(unit),
//!   PLACEMENT_SEED)`. Owners hold the durable copies.
//! - **Add**: the adding unit writes the atom with a fresh version (see
//!   [`version`]), keeps a copy and pushes it (`AddAtom`) to every other
//!   owner. A non-owner adder holds its copy as a *handoff* until the owners
//!   acknowledge, then keeps it as a cache entry.
//! - **Push acknowledgement**: the receiver of an `AddAtom` merges it and
//!   answers with a `ReturnAtom` carrying the same call id and the state it
//!   now holds. Unacknowledged pushes are retried with exponential backoff
//!   while the target is live and still an owner; the number of pushes
//!   pending is the *replication lag*.
//! - **Collisions**: states of a key are totally ordered (version, then
//!   zombie over live, then adder, expiry, data); every copy keeps the
//!   greatest it has seen, so duplicates and reordering never bring back an
//!   older state, and a zombie is never undone by a copy of what it deleted.
//! - **Delete**: the holder turns its copy into a zombie (new version,
//!   expiry `now + max(zombie_for, min_zombie)`) and pushes it to the
//!   owners; a `DeleteAtom` goes to the other live units so their cache
//!   entries become zombies too. A unit without a copy forwards `DeleteAtom`
//!   to every live unit and the owners write the zombie. Zombies answer
//!   queries (flagged) until they expire, then vanish everywhere.
//! - **Query**: a local copy (owned or handoff, zombies included, or a
//!   live cache entry) answers at once; a cached zombie is only a hint (the
//!   key may have been added again elsewhere), so the owners are asked and
//!   it answers only if they cannot. Otherwise `QueryAtom` goes to the
//!   owners, then to every other live
//!   unit, each stage for `query_attempts` rounds of `query_timeout`. The
//!   first answer with the atom resolves the query and is cached (bounded
//!   LRU with a time to live); a query nobody answers with the atom
//!   resolves as not found. Concurrent queries for a key share one call.
//! - **Membership**: after [`Dam::set_members`] the unit re-evaluates every
//!   held atom in paced batches (`pace_scan` per `pace_interval`): it pushes
//!   the atom to owners that joined (or rejoined) since its last
//!   evaluation, to every owner if the unit that was delivering the atom
//!   left, and hands off (then caches) atoms it no longer owns. A dead
//!   unit's atoms thus regain their level from the surviving copies, and a
//!   joining unit receives its share. Pushes are paced too (`pace_pushes`
//!   per batch).
//! - **Clocks**: `Instant` for everything local; atom expiries are Unix
//!   milliseconds on the wire, mapped through the Unix time given to
//!   [`Dam::new`] (see [`version`]).
//!
//! # Driving the machine
//!
//! The daemon owns one [`Dam`] per unit and a reliable stream to every other
//! unit. After every input (a message opened by `switchyard_wire::Receiver`,
//! a local call, a membership change from SWIM, a timer) it drains
//! `poll_transmit()` and `poll_event()`, and sleeps until the next input or
//! `poll_timeout()`, calling `handle_timeout(now)` when that passes.
//!
//! # Example: two units, one atom
//!
//! ```
//! use std::time::Instant;
//!
//! use switchyard_dam::{Dam, DamSettings, Holding, QueryResult, Replication};
//! use switchyard_wire::UnitId;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let unix_ms = 1_700_000_000_000; // read once from the wall clock
//! let settings = DamSettings { replication: Replication::Level(1), ..DamSettings::default() };
//! let (a, b) = (UnitId(1), UnitId(2));
//! let mut units = [
//!     Dam::new(a, settings.clone(), now, unix_ms)?,
//!     Dam::new(b, settings, now, unix_ms)?,
//! ];
//! for unit in &mut units {
//!     unit.set_members(now, &[a, b]);
//! }
//! units[0].add(now, b"client 192.0.2.7".to_vec(), b"host 3".to_vec(), None)?;
//!
//! // Deliver everything until quiet (a daemon would use its streams).
//! loop {
//!     let mut quiet = true;
//!     for i in 0..2 {
//!         while let Some(t) = units[i].poll_transmit() {
//!             let from = units[i].id();
//!             let to = usize::from(t.to == b);
//!             // Daemons log and count ignored messages rather than fail.
//!             units[to].handle(now, from, &t.message)?;
//!             quiet = false;
//!         }
//!     }
//!     if quiet {
//!         break;
//!     }
//! }
//!
//! // Level 1 with two units: both own the atom.
//! match units[1].query(now, b"client 192.0.2.7") {
//!     QueryResult::Hit { atom, holding } => {
//!         assert_eq!(atom.data, b"host 3");
//!         assert_eq!(holding, Holding::Owned);
//!     }
//!     QueryResult::Pending(_) => unreachable!("replicated"),
//! }
//! assert_eq!(units[0].replication_lag(), 0);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod counters;
pub mod error;
pub mod machine;
pub mod placement;
pub mod settings;
pub mod table;
pub mod version;

pub use counters::{DamCounters, MessageCounts};
pub use error::{DamError, Ignored};
pub use machine::{Dam, DamEvent, DeleteOutcome, QueryId, QueryResult, Transmit};
pub use placement::{PLACEMENT_SEED, Replication};
pub use settings::DamSettings;
pub use table::{Holding, footprint};
pub use version::{compare, outranks};
