//! `/v1/sessions`: applications report sessions up and down (spec FIG. 21's session
//! establishment and termination notifications); `GET` lists each host's table and channel.
//!
//! | Method and path | What |
//! |---|---|
//! | `POST /v1/sessions` | session up ([`SessionReport`]); 201 when new, 200 when already known |
//! | `POST /v1/sessions/down`, `DELETE /v1/sessions` | session down ([`SessionReport`]); 404 when unknown |
//! | `GET /v1/sessions` | every host's sessions and channel ([`HostSessions`]) |

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use switchyard_session_client::{HostSessions, SessionReport};
use tokio::sync::oneshot;

use super::{ApiError, ApiState, Json, json_response, parse, unavailable};
use crate::sessions::{ReportError, SessionCommand, SessionHost};

#[derive(Debug, Serialize)]
struct Reported {
    host: String,
    key: String,
    changed: bool,
}

async fn ask<T>(
    host: &SessionHost,
    command: impl FnOnce(oneshot::Sender<T>) -> SessionCommand,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    host.commands
        .send(command(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn host<'s>(state: &'s ApiState, name: Option<&str>) -> Result<&'s SessionHost, ApiError> {
    match name {
        Some(name) => state
            .sessions
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "this agent does not report for a host named {name:?}"
                ))
            }),
        None => match &state.sessions[..] {
            [only] => Ok(only),
            [] => Err(ApiError::Unavailable("no host".to_owned())),
            _ => Err(ApiError::BadRequest(
                "this agent reports for several hosts: name one with \"host\"".to_owned(),
            )),
        },
    }
}

fn report_error(error: ReportError) -> ApiError {
    match error {
        ReportError::Unknown => ApiError::NotFound(error.to_string()),
        ReportError::Full => ApiError::Conflict(error.to_string()),
    }
}

pub(super) async fn up(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let report: SessionReport = parse(&body)?;
    let host = host(&state, report.host.as_deref())?;
    let session = report
        .session
        .to_wire()
        .map_err(|e| ApiError::BadRequest(format!("session: {e}")))?;
    let app = match report.app {
        None => None,
        Some(name) => match host.apps.get(&name) {
            Some(app) => Some((name, app.clone())),
            None => {
                let known: Vec<&String> = host.apps.keys().collect();
                return Err(ApiError::BadRequest(format!(
                    "app {name:?} is not a service of host {} (its services: {known:?})",
                    host.name
                )));
            }
        },
    };
    let key = crate::sessions::hex_key(&session.key());
    let changed = ask(host, |tx| SessionCommand::Up(session, app, tx))
        .await?
        .map_err(report_error)?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &Reported {
            host: host.name.clone(),
            key,
            changed,
        },
    ))
}

pub(super) async fn down(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let report: SessionReport = parse(&body)?;
    if report.app.is_some() {
        return Err(ApiError::BadRequest(
            "a session down names no app".to_owned(),
        ));
    }
    let host = host(&state, report.host.as_deref())?;
    let session = report
        .session
        .to_wire()
        .map_err(|e| ApiError::BadRequest(format!("session: {e}")))?;
    let key = crate::sessions::hex_key(&session.key());
    ask(host, |tx| SessionCommand::Down(session, tx))
        .await?
        .map_err(report_error)?;
    Ok(json_response(
        StatusCode::OK,
        &Reported {
            host: host.name.clone(),
            key,
            changed: true,
        },
    ))
}

pub(super) async fn list(
    State(state): State<ApiState>,
) -> Result<Json<Vec<HostSessions>>, ApiError> {
    let mut out = Vec::with_capacity(state.sessions.len());
    for host in state.sessions.iter() {
        out.push(ask(host, SessionCommand::View).await?);
    }
    Ok(Json(out))
}
