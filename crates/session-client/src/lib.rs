//! Session reports for applications on a switchyard host (spec FIGS. 20–21): the JSON model
//! of the host agent's session API ([`Session`], [`SessionReport`], [`SessionList`]) and
//! [`SessionClient`], a small blocking HTTP/1.1 client over the agent's loopback TCP address
//! or its Unix socket.
//!
//! An application calls [`SessionClient::up`] when it opens a session a later connection
//! should come back to (a TLS session, a cookie, a logged-in user, ...), and
//! [`SessionClient::down`] when it closes it. The agent keeps the host's session table — the
//! authoritative one — and tells its bound LB unit.
//!
//! ```no_run
//! use switchyard_session_client::{Session, SessionClient};
//!
//! # fn main() -> Result<(), switchyard_session_client::ClientError> {
//! let agent = SessionClient::unix("/run/switchyard/agent.sock");
//! let cookie = Session::HttpCookie { name: "sid".into(), value: "b7595cc9".into() };
//! agent.up(&cookie, Some("web"))?;
//! // ... the session ends:
//! agent.down(&cookie)?;
//! # Ok(())
//! # }
//! ```
//!
//! This crate owns no daemon logic; it depends only on `switchyard-wire` (for the canonical
//! session id and its limits) and serde.

#![forbid(unsafe_code)]

mod client;
mod model;

pub use client::{ClientError, SessionClient};
pub use model::{
    ChannelView, HostSessions, InvalidSession, Session, SessionEntry, SessionList, SessionReport,
};
