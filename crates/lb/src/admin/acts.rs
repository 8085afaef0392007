//! The directive acts a unit does not perform: `POST /v1/hosts/{host}/drain`,
//! `/undrain`, `/disable` and `PUT /v1/hosts/{host}/capacity` answer 501 with where to do
//! them instead.
//!
//! A directive and a capacity belong to the host: its agent sets them and runs the
//! postulate handshake with every unit, and the health protocol has no message by which a
//! unit could tell a host to change them. The agent's local API (on the host's machine,
//! `switchyard ctl drain|undrain|disable|capacity` there) is where they change; every unit
//! then shows the result.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{post, put};

use super::AdminState;
use super::routes::ApiError;

/// The act routes, each answering 501.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/hosts/{host}/drain", post(drain))
        .route("/v1/hosts/{host}/undrain", post(undrain))
        .route("/v1/hosts/{host}/disable", post(disable))
        .route("/v1/hosts/{host}/capacity", put(capacity))
}

fn elsewhere(host: &str, command: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "a unit cannot {command} host {host:?}: directives and capacity belong to the host and change through its agent; on {host}'s machine run `switchyard ctl {command} {host}` (or POST/PUT its agent's local API), and every unit follows"
        ),
    )
}

async fn drain(Path(host): Path<String>) -> ApiError {
    elsewhere(&host, "drain")
}

async fn undrain(Path(host): Path<String>) -> ApiError {
    elsewhere(&host, "undrain")
}

async fn disable(Path(host): Path<String>) -> ApiError {
    elsewhere(&host, "disable")
}

async fn capacity(Path(host): Path<String>) -> ApiError {
    elsewhere(&host, "capacity")
}
