//! The unit's admin HTTP API (axum, JSON), bound to the unit's `admin`
//! address. Without a bearer token it binds loopback only (anyone who can
//! reach it can read the cluster's state); with one ([`auth`], `switchyard lb
//! --admin-token-file`) it may bind any address and every request must carry
//! `Authorization: Bearer <token>` (401 otherwise).
//!
//! Routes:
//! - `GET /v1/hosts`: every cached host with its rows (health, load,
//!   capacity, directive target/current, handshake state — `pending` while
//!   target ≠ current —, tokens in a fresh, uncounted 100-token allotment)
//!   and heartbeat age;
//! - `GET /v1/services`: the cache by application: service → endpoints;
//! - `GET /v1/allotments?vip=IP:PORT&protocol=tcp|udp&info=…&tokens=N&scheme=tokens|percentages`:
//!   shows the allotment the cache would issue now for that request (a preview: not
//!   counted as an allotment; the classifier's in-process handle issues counted ones);
//! - `GET /v1/counters`: transport, cache and service counters;
//! - `GET /metrics`: every role's metrics in the OpenMetrics text format ([`metrics`]).
//! - `GET /v1/sessions?key=HEX|client_ip=IP|cookie=NAME=VALUE|…`: where a session is
//!   held (looked up through this unit's DAM portion) and `GET /v1/sessions/summary`:
//!   membership, counters and atoms per host ([`sessions`]);
//! - `POST /v1/hosts/{host}/drain|undrain|disable`, `PUT /v1/hosts/{host}/capacity`:
//!   the act, relayed to the host's agent, which owns its directives ([`acts`]);
//! - `GET /v1/router`, `POST /v1/cache/invalidate`, `POST /v1/reload`: the router role
//!   ([`crate::router_role`]);
//! - `GET /` and `GET /dashboard`: the live dashboard ([`dashboard`]), a page with
//!   its script and style compiled in that polls the JSON routes every second;
//! - `GET /v1/flows?top=N`: the forwarder's flows per VIP and host, its
//!   counters, the classifier's counters and the N most recently active
//!   routes ([`flows`]); `/v1/counters` carries the packet roles' counters too.
//!
//! docs/openapi.json describes every route; `tests/all/openapi.rs` checks it against
//! the server (a route added here needs its entry there).
//!
//! Errors are JSON `{"error": "..."}` ([`api::ErrorBody`]): 400 for bad
//! query parameters, 403 for a request from a web page (an `Origin` header,
//! or a `Host` that is not `localhost` or a loopback address: see
//! [`switchyard_transport::local_http`]), 404 for unknown routes, 503 when
//! the unit does not run the health-cache role. [`client`] is the matching HTTP client.

mod acts;
pub mod api;
pub mod auth;
pub mod client;
mod dashboard;
pub mod flows;
pub mod metrics;
mod routes;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_wire::Protocol;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::HealthCacheHandle;
use crate::unit::UnitError;

/// What the admin API serves.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The unit, as documents show it.
    pub unit: api::UnitInfo,
    /// The health-cache role, if the unit runs it.
    pub health: Option<HealthCacheHandle>,
    /// Configured services: VIP, protocol and name.
    pub services: Arc<Vec<(SocketAddr, Protocol, String)>>,
    /// The forwarder and classifier roles, if the unit runs them.
    pub packet: PacketState,
    /// The router role, if the unit runs it.
    pub router: Option<crate::router_role::RouterHandle>,
    /// The session-store role, if the unit runs it.
    pub sessions: Option<crate::SessionStoreHandle>,
    /// The bearer token every request must carry, if the unit has one ([`auth`]).
    pub token: Option<auth::AdminToken>,
    /// The unit's metrics: every role's families ([`metrics::registry`]).
    pub metrics: Arc<prometheus_client::registry::Registry>,
}

pub use flows::PacketState;

/// Refuses an admin address that is not loopback.
pub fn check_loopback(addr: SocketAddr) -> Result<(), UnitError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(UnitError::AdminNotLoopback(addr))
    }
}

/// Binds the admin API's listener (loopback only).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, UnitError> {
    bind_with_token(addr, None).await
}

/// Binds the admin API's listener: any address with a bearer token, else loopback only.
pub async fn bind_with_token(
    addr: SocketAddr,
    token: Option<&auth::AdminToken>,
) -> Result<TcpListener, UnitError> {
    if token.is_none() {
        check_loopback(addr)?;
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| UnitError::AdminBind { addr, source })
}

/// The router with every route.
pub fn router(state: AdminState) -> axum::Router {
    routes::router(state)
}

/// Serves the admin API on `listener` until `shutdown` turns `true` (or its
/// sender is dropped); in-flight requests finish first.
pub fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "admin API stopped with an error");
        }
    })
}
