//! The agent's local API: HTTP/1.1 with JSON bodies, served on a loopback TCP address and
//! on a Unix socket (never elsewhere: it is unauthenticated, so who can reach it is the
//! protection). Applications report their own health, load and capacity and add or remove
//! rows; operators drain, undrain and disable rows or whole hosts.
//!
//! Routes (every path under `/v1` answers JSON; errors are `{"error": "..."}` with 400 for
//! bad input, 403 for a request from a web page (an `Origin` header, or, over TCP, a `Host`
//! that is not `localhost` or a loopback address), 404 for an unknown host or row, 409 for a
//! conflict, 415 for a POST, PUT or DELETE without `Content-Type: application/json`, 503
//! while shutting down; see [`switchyard_transport::local_http`]):
//!
//! | Method and path | What |
//! |---|---|
//! | `GET /v1/hosts` | every host with its rows |
//! | `GET /v1/hosts/{host}` | one host |
//! | `GET /v1/hosts/{host}/apps/{app}` | one row |
//! | `POST /v1/hosts/{host}/apps` | add a row ([`model::NewRow`]; at most [`validate::MAX_API_ROWS_PER_HOST`] per host) |
//! | `DELETE /v1/hosts/{host}/apps/{app}` | remove a row added through the API |
//! | `PUT /v1/hosts/{host}/apps/{app}/status` | the application's report ([`model::StatusUpdate`]) |
//! | `POST /v1/hosts/{host}/apps/{app}/{drain,undrain,disable}` | set one row's target |
//! | `POST /v1/hosts/{host}/{drain,undrain,disable}` | set every row's target |
//! | `GET /v1/counters` | transport, protocol and agent counters |
//! | `POST /v1/sessions`, `POST /v1/sessions/down` (or `DELETE /v1/sessions`), `GET /v1/sessions` | session up, down, the hosts' session tables (module `sessions`) |
//! | `GET /metrics` | the same counters in the OpenMetrics text format (module `metrics`) |
//!
//! The handlers hold no state of their own: each request becomes a command to the host's
//! driver task (`crate::daemon`), which owns the table, so API changes and protocol events
//! are applied in one order.

pub mod client;
mod metrics;
pub mod model;
mod serve;
mod sessions;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use switchyard_transport::local_http::{self, RequestHeaders};
use tokio::sync::oneshot;

pub use serve::{bind_tcp, bind_unix, serve_tcp, serve_unix};

use crate::daemon::HostHandle;
use crate::daemon::host::{Command, HostCounters};
use model::{DirectiveCommand, ErrorJson, HostJson, NewRow, RowJson, StatusUpdate};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: no such host or row.
    #[error("{0}")]
    NotFound(String),
    /// 400: malformed JSON or a value out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 403: a request from a web page (cross-site or DNS rebinding).
    #[error("{0}")]
    Forbidden(String),
    /// 409: the request conflicts with the table (duplicate name, configured row, row
    /// limit).
    #[error("{0}")]
    Conflict(String),
    /// 415: a state-changing request without `Content-Type: application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the agent is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: should not happen.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorJson {
            error: self.to_string(),
        };
        json_response(status, &body)
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec_pretty(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}\n"),
        )
            .into_response(),
    }
}

/// A JSON 200 response.
#[derive(Debug)]
struct Json<T>(T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

/// The API's shared state: the hosts' drivers.
#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    hosts: Arc<[HostHandle]>,
    sessions: Arc<[crate::sessions::SessionHost]>,
    /// The process's metrics registry (one for every listener).
    metrics: Arc<metrics::AgentMetrics>,
}

impl ApiState {
    pub(crate) fn new(
        hosts: Arc<[HostHandle]>,
        sessions: Arc<[crate::sessions::SessionHost]>,
    ) -> Self {
        Self {
            hosts,
            sessions,
            metrics: Arc::new(metrics::AgentMetrics::new()),
        }
    }

    fn host(&self, name: &str) -> Result<&HostHandle, ApiError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            ApiError::NotFound(format!(
                "this agent does not report for a host named {name:?} (it reports for {known:?})"
            ))
        })
    }
}

/// Sends a command to a host's driver and waits for the answer.
async fn ask<T>(
    host: &HostHandle,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    host.commands
        .send(command(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn unavailable() -> ApiError {
    ApiError::Unavailable("the agent is shutting down".to_owned())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Which listener a router serves: the `Host` check applies to TCP only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The loopback TCP address, reachable by a browser's pages.
    Tcp,
    /// The Unix socket, which no browser can open: DNS rebinding cannot reach it, so any
    /// `Host` is fine there (curl's `--unix-socket … http://agent/…` sends `Host: agent`).
    Unix,
}

/// The router of the local API over `state`, for `listener`.
pub(crate) fn router(state: ApiState, listener: Listener) -> Router {
    Router::new()
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{host}", get(show_host))
        .route("/v1/hosts/{host}/apps", post(add_row))
        .route(
            "/v1/hosts/{host}/apps/{app}",
            get(show_row).delete(remove_row),
        )
        .route("/v1/hosts/{host}/apps/{app}/status", put(report_status))
        .route("/v1/hosts/{host}/apps/{app}/{command}", post(row_command))
        .route("/v1/hosts/{host}/{command}", post(host_command))
        .route("/v1/counters", get(counters))
        .route(
            "/v1/sessions",
            get(sessions::list)
                .post(sessions::up)
                .delete(sessions::down),
        )
        .route("/v1/sessions/down", post(sessions::down))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(listener, local_only))
        .with_state(state)
}

/// Refuses requests from web pages and state changes without the JSON content type
/// ([`switchyard_transport::local_http`]) before any handler runs.
async fn local_only(
    State(listener): State<Listener>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = request.headers();
    let headers = RequestHeaders {
        host: match listener {
            Listener::Tcp => h.get(header::HOST).map(|v| v.as_bytes()),
            Listener::Unix => None,
        },
        origin: h.get(header::ORIGIN).map(|v| v.as_bytes()),
        content_type: h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
    };
    match local_http::check(request.method().as_str(), headers) {
        Ok(()) => next.run(request).await,
        Err(refusal) if refusal.status == 415 => {
            ApiError::UnsupportedMediaType(refusal.message).into_response()
        }
        Err(refusal) => ApiError::Forbidden(refusal.message).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see docs/AGENT.md for the local API".to_owned())
}

async fn list_hosts(State(state): State<ApiState>) -> Result<Json<Vec<HostJson>>, ApiError> {
    let mut out = Vec::with_capacity(state.hosts.len());
    for host in state.hosts.iter() {
        out.push(ask(host, Command::View).await?);
    }
    Ok(Json(out))
}

async fn show_host(
    State(state): State<ApiState>,
    Path(host): Path<String>,
) -> Result<Json<HostJson>, ApiError> {
    let host = state.host(&host)?;
    Ok(Json(ask(host, Command::View).await?))
}

async fn show_row(
    State(state): State<ApiState>,
    Path((host, app)): Path<(String, String)>,
) -> Result<Json<RowJson>, ApiError> {
    let host = state.host(&host)?;
    Ok(Json(ask(host, |tx| Command::Row(app, tx)).await??))
}

async fn add_row(
    State(state): State<ApiState>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let host = state.host(&host)?;
    let row = validate::new_row(parse::<NewRow>(&body)?)?;
    let json = ask(host, |tx| Command::Add(row, tx)).await??;
    Ok(json_response(StatusCode::CREATED, &json))
}

async fn remove_row(
    State(state): State<ApiState>,
    Path((host, app)): Path<(String, String)>,
) -> Result<Json<RowJson>, ApiError> {
    let host = state.host(&host)?;
    Ok(Json(ask(host, |tx| Command::Remove(app, tx)).await??))
}

async fn report_status(
    State(state): State<ApiState>,
    Path((host, app)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<RowJson>, ApiError> {
    let host = state.host(&host)?;
    let update = validate::status_update(parse::<StatusUpdate>(&body)?)?;
    Ok(Json(
        ask(host, |tx| Command::Status(app, update, tx)).await??,
    ))
}

async fn row_command(
    State(state): State<ApiState>,
    Path((host, app, command)): Path<(String, String, String)>,
) -> Result<Json<RowJson>, ApiError> {
    let command: DirectiveCommand = command.parse().map_err(ApiError::NotFound)?;
    let host = state.host(&host)?;
    let mut rows = ask(host, |tx| Command::Target(Some(app), command.target(), tx)).await??;
    rows.pop()
        .map(Json)
        .ok_or_else(|| ApiError::Internal("no row in the answer".to_owned()))
}

async fn host_command(
    State(state): State<ApiState>,
    Path((host, command)): Path<(String, String)>,
) -> Result<Json<Vec<RowJson>>, ApiError> {
    let command: DirectiveCommand = command.parse().map_err(ApiError::NotFound)?;
    let host = state.host(&host)?;
    Ok(Json(
        ask(host, |tx| Command::Target(None, command.target(), tx)).await??,
    ))
}

/// Counters of every host, gathered from the drivers and the transport.
async fn gather(state: &ApiState) -> Result<Vec<(HostHandle, HostCounters)>, ApiError> {
    let mut out = Vec::with_capacity(state.hosts.len());
    for host in state.hosts.iter() {
        out.push((host.clone(), ask(host, Command::Counters).await?));
    }
    Ok(out)
}

async fn counters(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let gathered = gather(&state).await?;
    Ok(Json(metrics::counters_json(&gathered)))
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let gathered = gather(&state).await?;
    let body = state
        .metrics
        .scrape(gathered)
        .await
        .map_err(|_| ApiError::Internal("cannot encode the metrics".to_owned()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            switchyard_transport::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}
