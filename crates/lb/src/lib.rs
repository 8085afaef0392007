//! A switchyard load-balancing unit (`switchyard lb`): the composition of
//! the roles the configuration gives one unit, and its admin API.
//!
//! A unit runs some of the roles of spec FIG. 1/31: forwarder, classifier,
//! request router, session store and the consolidated health and load
//! cache. Each role lives in its own crate (or module, for the roles that
//! are only wiring); this crate owns no protocol logic, only sockets,
//! timers, shared state, logging and the admin HTTP API. Today it runs:
//!
//! - the **health-cache role** ([`health_service`]): a
//!   [`switchyard_health::ConsolidatedCache`] driven over an authenticated
//!   UDP endpoint ([`switchyard_transport::UdpEndpoint`]) on the unit's
//!   control address, answering host agents (snapshot requests, postulate
//!   answers) and other units (allotment requests), plus the in-process
//!   allotment API for the classifier and request router
//!   ([`HealthCacheHandle`]);
//! - the **admin API** ([`admin`]): JSON on loopback — `/v1/hosts`,
//!   `/v1/services`, `/v1/allotments`, `/v1/counters` — and OpenMetrics text
//!   on `/metrics` ([`admin::metrics`]); [`admin::client`] is the small HTTP client
//!   `switchyard ctl` and tests use.
//!
//! Roles the unit is configured for but that are not built yet are logged
//! and skipped; a unit without the health-cache role runs only the admin
//! API. [`unit::RunningUnit`] starts everything and stops it on request.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_lb::{RunningUnit, UnitOptions};
//! let config = switchyard_config::load_file("examples/all-in-one.toml".as_ref())
//!     .map_err(|d| anyhow::anyhow!("{d}"))?;
//! let unit = RunningUnit::start(&config, UnitOptions::new("lb-1")).await?;
//! if let Some(health) = unit.health() {
//!     // The classifier would ask for allotments here.
//!     let _ = health.hosts_count();
//! }
//! unit.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod allotment_client;
pub mod classifier_role;
pub mod forwarder_role;
pub mod health_service;
pub mod host_acts;
mod observe;
mod overflow;
pub mod packet_roles;
pub mod plumbing;
pub mod route_atoms;
pub mod router_remote;
pub mod router_role;
pub mod router_sessions;
mod session_members;
pub mod session_role;
pub mod trust;
pub mod unit;

pub use health_service::{
    HealthCacheHandle, HealthCounters, HealthServiceSettings, ServiceCounters,
};
pub use session_role::{SessionLocation, SessionStoreHandle};
pub use unit::{RunningUnit, UnitError, UnitOptions};
