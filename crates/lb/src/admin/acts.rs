//! Operators' acts on hosts: `POST /v1/hosts/{host}/drain`, `/undrain`, `/disable` and
//! `PUT /v1/hosts/{host}/capacity`. `{host}` is a configured host's name or id.
//!
//! A directive and a capacity belong to the host: the unit relays the act to the host's
//! agent ([`crate::host_acts`]), which carries it out as its local API would; the
//! postulate handshake then moves every unit to the new directive, so the answer says the
//! host took the act and `/v1/hosts` shows the target at once and the current state when
//! every unit holds it.
//!
//! Bodies (JSON; every act's body is optional except capacity's):
//!
//! - `{}` or no body: every application of the host;
//! - `{"service": "web"}`: only the host's applications of that configured service;
//! - capacity: `{"capacity": 40}` (0 to 99), with an optional `"service"`.
//!
//! Answers: 200 with [`ActView`]; 400 for a bad body; 404 for an unknown host, or a
//! service the host has no application of; 409 when the host refuses acts from units
//! (`[agent] unit_acts = false`); 503 without the health-cache role or when the host was
//! never heard from; 504 when the host did not answer.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};
use switchyard_wire::health::{Act, ActOutcome, DirectiveState, MAX_CAPACITY};
use switchyard_wire::{AppId, HostId, Protocol};

use super::AdminState;
use super::routes::{ApiError, health_role};
use crate::host_acts::ActError;

/// The act routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/hosts/{host}/drain", post(drain))
        .route("/v1/hosts/{host}/undrain", post(undrain))
        .route("/v1/hosts/{host}/disable", post(disable))
        .route("/v1/hosts/{host}/capacity", put(capacity))
}

/// The answer to an act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActView {
    /// Host id.
    pub id: u32,
    /// Host name.
    pub host: String,
    /// `drain`, `undrain`, `disable` or `capacity`.
    pub act: String,
    /// The target directive set (`draining`, `active`, `inactive`), for directive acts.
    pub target: Option<String>,
    /// The capacity set, for the capacity act.
    pub capacity: Option<u8>,
    /// The service the act was limited to, if any.
    pub service: Option<String>,
    /// Applications the host applied the act to.
    pub rows: u32,
    /// What happens next.
    pub note: String,
}

/// An act's optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActBody {
    service: Option<String>,
    capacity: Option<i64>,
}

async fn drain(
    State(state): State<AdminState>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Json<ActView>, ApiError> {
    directive(&state, &host, &body, "drain", DirectiveState::Draining).await
}

async fn undrain(
    State(state): State<AdminState>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Json<ActView>, ApiError> {
    directive(&state, &host, &body, "undrain", DirectiveState::Active).await
}

async fn disable(
    State(state): State<AdminState>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Json<ActView>, ApiError> {
    directive(&state, &host, &body, "disable", DirectiveState::Inactive).await
}

async fn capacity(
    State(state): State<AdminState>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Json<ActView>, ApiError> {
    let parsed = parse_body(&body)?;
    let value = match parsed.capacity {
        None => {
            return Err(bad_request(format!(
                "the body must give the capacity: {{\"capacity\": N}} with N from 0 to {MAX_CAPACITY}"
            )));
        }
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|c| *c <= MAX_CAPACITY)
            .ok_or_else(|| {
                bad_request(format!(
                    "capacity {v} is out of range: expected 0 to {MAX_CAPACITY}"
                ))
            })?,
    };
    let (id, name) = find_host(&state, &host)?;
    let rows = relay(
        &state,
        id,
        &name,
        parsed.service.as_deref(),
        Act::Capacity(value),
    )
    .await?;
    Ok(Json(ActView {
        id: id.0,
        host: name,
        act: "capacity".to_owned(),
        target: None,
        capacity: Some(value),
        service: parsed.service,
        rows,
        note: "the host reports the new capacity; allotments follow it at once".to_owned(),
    }))
}

async fn directive(
    state: &AdminState,
    host: &str,
    body: &[u8],
    act: &str,
    target: DirectiveState,
) -> Result<Json<ActView>, ApiError> {
    let parsed = parse_body(body)?;
    if parsed.capacity.is_some() {
        return Err(bad_request(format!(
            "\"capacity\" does not belong to {act}; set it with PUT /v1/hosts/{host}/capacity"
        )));
    }
    let (id, name) = find_host(state, host)?;
    let rows = relay(
        state,
        id,
        &name,
        parsed.service.as_deref(),
        Act::Target(target),
    )
    .await?;
    Ok(Json(ActView {
        id: id.0,
        host: name,
        act: act.to_owned(),
        target: Some(target.as_str().to_owned()),
        capacity: None,
        service: parsed.service,
        rows,
        note: "target set on the host; the current directive follows when every unit holds it (see /v1/hosts)".to_owned(),
    }))
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// Reads an optional JSON body (empty is `{}`).
fn parse_body(body: &[u8]) -> Result<ActBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "the body is not a valid act ({e}); expected nothing, {{}}, {{\"service\": \"name\"}}, or for capacity {{\"capacity\": N}}"
        ))
    })
}

/// A configured host by name or id.
fn find_host(state: &AdminState, host: &str) -> Result<(HostId, String), ApiError> {
    let health = health_role(state)?;
    let names = health.configured_host_names();
    let by_id = host
        .parse::<u32>()
        .ok()
        .and_then(|n| names.get_key_value(&HostId(n)));
    by_id
        .or_else(|| names.iter().find(|(_, name)| name.as_str() == host))
        .map(|(id, name)| (*id, name.clone()))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no configured host is named or numbered {host:?}; see /v1/hosts"),
            )
        })
}

/// Sends `act` for the host's applications of `service` (every application when `None`);
/// the number of applications the host applied it to.
async fn relay(
    state: &AdminState,
    id: HostId,
    name: &str,
    service: Option<&str>,
    act: Act,
) -> Result<u32, ApiError> {
    let health = health_role(state)?;
    let apps: Vec<Option<AppId>> = match service {
        None => vec![None],
        Some(service) => {
            let (vip, protocol) = service_key(state, service)?;
            let apps: Vec<Option<AppId>> = health.read(|cache, _| {
                cache
                    .host(id)
                    .map(|view| {
                        view.table
                            .rows()
                            .filter(|row| row.app.vip == vip && row.app.protocol == protocol)
                            .map(|row| Some(row.app.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            if apps.is_empty() {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!(
                        "host {name} has no application of service {service} in this unit's cache; see /v1/hosts"
                    ),
                ));
            }
            apps
        }
    };
    let mut rows = 0u32;
    for app in apps {
        let reply = health.act(id, app, act).await.map_err(|e| act_error(&e))?;
        match reply.outcome {
            ActOutcome::Applied => rows += u32::from(reply.rows),
            ActOutcome::NoSuchApp => {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!(
                        "host {name} has no such application (its table changed?); see /v1/hosts"
                    ),
                ));
            }
            ActOutcome::Refused => {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "host {name} refuses acts from units ([agent] unit_acts = false in its configuration); on its machine run `switchyard ctl {} {name}`",
                        act_command(act)
                    ),
                ));
            }
        }
    }
    tracing::info!(host = %name, act = act.as_str(), rows, "act relayed to the host");
    Ok(rows)
}

fn act_command(act: Act) -> &'static str {
    match act {
        Act::Target(DirectiveState::Active) => "undrain",
        Act::Target(DirectiveState::Draining) => "drain",
        Act::Target(DirectiveState::Inactive) => "disable",
        Act::Capacity(_) => "capacity",
    }
}

fn service_key(state: &AdminState, service: &str) -> Result<(SocketAddr, Protocol), ApiError> {
    state
        .services
        .iter()
        .find(|(_, _, name)| name == service)
        .map(|(vip, protocol, _)| (*vip, *protocol))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no configured service is named {service:?}; see /v1/services"),
            )
        })
}

fn act_error(error: &ActError) -> ApiError {
    let status = match error {
        ActError::UnknownHost(_) => StatusCode::NOT_FOUND,
        ActError::NoAnswer { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, error.to_string())
}
