//! Handlers of the admin API. Each one reads the cache in one short
//! critical section (through [`HealthCacheHandle::read`]) and builds its
//! document outside the lock where it can.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use switchyard_health::allotment::{allot as compute_allotment, spare_capacity};
use switchyard_health::{AllotmentPolicy, ServiceKey, millis};
use switchyard_transport::local_http::{self, RequestHeaders};
use switchyard_wire::allotment::{Allotment, AllotmentRequest, AllotmentScheme};
use switchyard_wire::health::Row;
use switchyard_wire::types::MAX_APP_INFO_LEN;
use switchyard_wire::{HostId, Protocol};

use super::AdminState;
use super::api::{
    AllotmentEntry, AllotmentView, CacheCountersView, CountersResponse, ErrorBody, HostEntry,
    HostRow, HostsResponse, ServiceCountersView, ServiceEndpoint, ServiceEntry, ServicesResponse,
    StateView, TransportCountersView,
};
use crate::HealthCacheHandle;
use crate::health_service::HealthCounters;

/// Tokens of the fresh allotment `/v1/hosts` shows per endpoint.
const DISPLAY_TOKENS: u32 = 100;

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/hosts", get(hosts))
        .route("/v1/services", get(services))
        .route("/v1/allotments", get(allotments))
        .route("/v1/counters", get(counters))
        .route("/metrics", get(metrics))
        .route("/v1/flows", get(super::flows::flows))
        .merge(crate::router_role::admin_routes())
        .merge(super::sessions::routes())
        .merge(super::dashboard::routes())
        .merge(super::acts::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            local_only,
        ))
        .with_state(state)
}

/// Refuses requests from web pages (an `Origin` header, or a `Host` that is not
/// `localhost` or a loopback address) before any handler runs
/// ([`switchyard_transport::local_http`]); with a bearer token, requests without it
/// instead ([`super::auth`]).
async fn local_only(
    State(state): State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &state.token {
        return match super::auth::check(token, &request) {
            Ok(()) => next.run(request).await,
            Err((status, message)) => {
                let mut response = ApiError(status, message).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer realm=\"switchyard admin\""),
                    );
                }
                response
            }
        };
    }
    let h = request.headers();
    let headers = RequestHeaders {
        host: h.get(header::HOST).map(|v| v.as_bytes()),
        origin: h.get(header::ORIGIN).map(|v| v.as_bytes()),
        content_type: h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
    };
    match local_http::check(request.method().as_str(), headers) {
        Ok(()) => next.run(request).await,
        Err(refusal) => ApiError(
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN),
            refusal.message,
        )
        .into_response(),
    }
}

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such route; try /v1/hosts, /v1/services, /v1/allotments, /v1/counters or /metrics"
            .to_owned(),
    )
}

pub(super) fn health_role(state: &AdminState) -> Result<&HealthCacheHandle, ApiError> {
    state.health.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unit {} does not run the health-cache role; ask a unit that does",
                state.unit.name
            ),
        )
    })
}

fn service_name(state: &AdminState, vip: SocketAddr, protocol: Protocol) -> Option<String> {
    state
        .services
        .iter()
        .find(|(v, p, _)| *v == vip && *p == protocol)
        .map(|(_, _, name)| name.clone())
}

/// One cached host, copied out of the cache so `/v1/hosts` computes outside its lock.
struct HostCopy {
    id: HostId,
    name: Option<String>,
    address: Option<SocketAddr>,
    last_heartbeat_ms: u64,
    alive: bool,
    generation: u64,
    in_sync: bool,
    baseline: bool,
    rows: Vec<Row>,
}

async fn hosts(State(state): State<AdminState>) -> Result<Json<HostsResponse>, ApiError> {
    let health = health_role(&state)?;
    let names = health.configured_host_names();
    // The lock is held only to copy the hosts out.
    let (copies, policy) = health.read(|cache, now| {
        let copies: Vec<HostCopy> = cache
            .hosts()
            .map(|view| HostCopy {
                id: view.host,
                name: view.name.map(str::to_owned),
                address: view.address,
                last_heartbeat_ms: millis(now.saturating_duration_since(view.last_heartbeat)),
                alive: cache.is_alive(view.host, now),
                generation: view.generation,
                in_sync: view.in_sync,
                baseline: view.baseline,
                rows: view.table.rows().cloned().collect(),
            })
            .collect();
        (copies, cache.settings().allotment)
    });
    let tokens = display_tokens(&copies, &policy);
    let hosts = copies
        .iter()
        .map(|h| HostEntry {
            id: h.id.0,
            name: h.name.clone().or_else(|| names.get(&h.id).cloned()),
            address: h.address,
            last_heartbeat_ms: h.last_heartbeat_ms,
            alive: h.alive,
            generation: h.generation,
            in_sync: h.in_sync,
            baseline: h.baseline,
            rows: h
                .rows
                .iter()
                .map(|row| {
                    let d = row.directive;
                    let key = (ServiceKey::of_app(&row.app), h.id, row.app.endpoint);
                    HostRow {
                        vip: row.app.vip,
                        protocol: row.app.protocol.as_str().to_owned(),
                        endpoint: row.app.endpoint,
                        info: row.app.info.clone(),
                        health: row.status.health().as_str().to_owned(),
                        load: row.status.load(),
                        capacity: row.status.capacity(),
                        target: d.target.as_str().to_owned(),
                        current: d.current.as_str().to_owned(),
                        handshake: if d.target == d.current {
                            "complete"
                        } else {
                            "pending"
                        }
                        .to_owned(),
                        tokens: tokens.get(&key).copied().unwrap_or(0),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Json(HostsResponse {
        unit: state.unit.clone(),
        hosts,
    }))
}

/// The tokens of one fresh [`DISPLAY_TOKENS`]-token allotment per service, by service,
/// host and endpoint: what the cache would issue now (the same endpoints in the same
/// order: alive hosts by id, rows in table order), not counted as an allotment.
fn display_tokens(
    hosts: &[HostCopy],
    policy: &AllotmentPolicy,
) -> HashMap<(ServiceKey, HostId, SocketAddr), u32> {
    let mut by_service: BTreeMap<ServiceKey, Vec<(HostId, &Row)>> = BTreeMap::new();
    for host in hosts.iter().filter(|h| h.alive) {
        for row in &host.rows {
            by_service
                .entry(ServiceKey::of_app(&row.app))
                .or_default()
                .push((host.id, row));
        }
    }
    let mut tokens = HashMap::new();
    for (service, endpoints) in by_service {
        let request = AllotmentRequest {
            request_id: 0,
            vip: service.vip,
            protocol: service.protocol,
            info: service.info.clone(),
            scheme: AllotmentScheme::Tokens,
            wanted_tokens: DISPLAY_TOKENS,
        };
        let response = compute_allotment(&request, endpoints, policy);
        if let Allotment::Tokens { entries, .. } = response.allotment {
            for g in entries {
                tokens.insert((service.clone(), g.host, g.endpoint), g.tokens);
            }
        }
    }
    tokens
}

async fn services(State(state): State<AdminState>) -> Result<Json<ServicesResponse>, ApiError> {
    let health = health_role(&state)?;
    let names = health.configured_host_names();
    let services = health.read(|cache, now| {
        cache
            .services()
            .map(|service| {
                let endpoints = cache
                    .endpoints(service)
                    .into_iter()
                    .map(|e| ServiceEndpoint {
                        host: e.host.0,
                        host_name: cache
                            .host(e.host)
                            .and_then(|v| v.name.map(str::to_owned))
                            .or_else(|| names.get(&e.host).cloned()),
                        endpoint: e.row.app.endpoint,
                        alive: cache.is_alive(e.host, now),
                        health: e.row.status.health().as_str().to_owned(),
                        load: e.row.status.load(),
                        capacity: e.row.status.capacity(),
                        target: e.row.directive.target.as_str().to_owned(),
                        current: e.row.directive.current.as_str().to_owned(),
                        spare_capacity: spare_capacity(e.row),
                    })
                    .collect();
                ServiceEntry {
                    name: service_name(&state, service.vip, service.protocol),
                    vip: service.vip,
                    protocol: service.protocol.as_str().to_owned(),
                    info: service.info.clone(),
                    endpoints,
                }
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(ServicesResponse {
        unit: state.unit.clone(),
        services,
    }))
}

/// Query of `/v1/allotments`; every value is parsed by hand for clear
/// messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllotmentQuery {
    vip: Option<String>,
    protocol: Option<String>,
    info: Option<String>,
    tokens: Option<String>,
    scheme: Option<String>,
}

/// A validated allotment query.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParsedAllotmentQuery {
    service: ServiceKey,
    scheme: AllotmentScheme,
    tokens: u32,
}

pub(super) fn parse_allotment_query(q: AllotmentQuery) -> Result<ParsedAllotmentQuery, ApiError> {
    let vip = q.vip.ok_or_else(|| {
        bad_request("missing query parameter vip (the virtual service's IP:PORT, e.g. vip=198.51.100.10:80)")
    })?;
    let vip: SocketAddr = vip.parse().map_err(|_| {
        bad_request(format!(
            "vip: {vip:?} is not an IP:PORT address (IPv6 as [addr]:port)"
        ))
    })?;
    let protocol = match q.protocol.as_deref().unwrap_or("tcp") {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(bad_request(format!(
                "protocol: {other:?} is neither tcp nor udp"
            )));
        }
    };
    let scheme = match q.scheme.as_deref().unwrap_or("tokens") {
        "tokens" => AllotmentScheme::Tokens,
        "percentages" => AllotmentScheme::Percentages,
        other => {
            return Err(bad_request(format!(
                "scheme: {other:?} is neither tokens nor percentages"
            )));
        }
    };
    let tokens = match (&q.tokens, scheme) {
        (None, _) => 0,
        (Some(_), AllotmentScheme::Percentages) => {
            return Err(bad_request(
                "tokens applies to scheme=tokens only; percentage allotments always share 100%",
            ));
        }
        (Some(t), _) => t.parse::<u32>().map_err(|_| {
            bad_request(format!(
                "tokens: {t:?} is not a whole number from 0 to {} (0 asks for the default)",
                u32::MAX
            ))
        })?,
    };
    let info = q.info.unwrap_or_default();
    if info.len() > MAX_APP_INFO_LEN {
        return Err(bad_request(format!(
            "info: {} bytes, at most {MAX_APP_INFO_LEN} allowed",
            info.len()
        )));
    }
    Ok(ParsedAllotmentQuery {
        service: ServiceKey::new(vip, protocol, info),
        scheme,
        tokens,
    })
}

async fn allotments(
    State(state): State<AdminState>,
    query: Result<Query<AllotmentQuery>, QueryRejection>,
) -> Result<Json<AllotmentView>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        bad_request(format!(
            "bad query: {}; parameters are vip, protocol, info, tokens and scheme",
            rejection.body_text()
        ))
    })?;
    let parsed = parse_allotment_query(query)?;
    let health = health_role(&state)?;
    // A display: what the cache would issue now, not counted as an allotment.
    let response = health.preview(&parsed.service, parsed.scheme, parsed.tokens);
    let names = health.configured_host_names();
    let host_name = |host: switchyard_wire::HostId| {
        health.host_name(host).or_else(|| names.get(&host).cloned())
    };
    let (scheme, valid_for_ms, duration_ms, entries) = match &response.allotment {
        Allotment::Tokens {
            entries,
            valid_for_ms,
        } => (
            "tokens",
            Some(*valid_for_ms),
            None,
            entries
                .iter()
                .map(|g| AllotmentEntry {
                    host: g.host.0,
                    host_name: host_name(g.host),
                    endpoint: g.endpoint,
                    tokens: Some(g.tokens),
                    basis_points: None,
                })
                .collect(),
        ),
        Allotment::Percentages {
            entries,
            duration_ms,
        } => (
            "percentages",
            None,
            Some(*duration_ms),
            entries
                .iter()
                .map(|g| AllotmentEntry {
                    host: g.host.0,
                    host_name: host_name(g.host),
                    endpoint: g.endpoint,
                    tokens: None,
                    basis_points: Some(g.basis_points),
                })
                .collect(),
        ),
    };
    Ok(Json(AllotmentView {
        request_id: response.request_id,
        vip: response.vip,
        protocol: response.protocol.as_str().to_owned(),
        info: response.info.clone(),
        scheme: scheme.to_owned(),
        valid_for_ms,
        duration_ms,
        entries,
    }))
}

/// The counters as the JSON document shows them.
pub(super) fn counters_view(
    c: &HealthCounters,
) -> (
    TransportCountersView,
    CacheCountersView,
    ServiceCountersView,
    StateView,
) {
    let t = &c.transport;
    let transport = TransportCountersView {
        sent: t.sent,
        sent_bytes: t.sent_bytes,
        send_errors: t.send_errors,
        received: t.received,
        received_bytes: t.received_bytes,
        rejected: t
            .rejected
            .iter()
            .map(|(r, n)| (r.label().to_owned(), *n))
            .collect(),
        rejected_total: t.rejected_total(),
    };
    let k = &c.cache;
    let cache = CacheCountersView {
        received: k
            .received
            .iter()
            .map(|(kind, n)| (kind.name().to_owned(), n))
            .collect(),
        sent: k
            .sent
            .iter()
            .map(|(kind, n)| (kind.name().to_owned(), n))
            .collect(),
        ignored: k.ignored,
        stale_row_changes: k.stale_row_changes,
        snapshots_requested: k.snapshots_requested,
        snapshots_completed: k.snapshots_completed,
        partial_snapshots_dropped: k.partial_snapshots_dropped,
        age_outs: k.age_outs,
        goodbyes: k.goodbyes,
        generation_resets: k.generation_resets,
        postulate_replies: k.postulate_replies,
        allotments: k.allotments,
    };
    let service = ServiceCountersView {
        ignored: c
            .service
            .ignored
            .iter()
            .map(|(r, n)| ((*r).to_owned(), *n))
            .collect(),
        unroutable: c.service.unroutable,
        receive_errors: c.service.receive_errors,
    };
    let state = StateView {
        hosts: c.hosts,
        hosts_in_sync: c.hosts_in_sync,
        endpoints: c.endpoints,
        services: c.services,
    };
    (transport, cache, service, state)
}

async fn counters(State(state): State<AdminState>) -> Result<Json<CountersResponse>, ApiError> {
    let health = health_role(&state)?;
    let (transport, cache, service, sizes) = counters_view(&health.counters());
    let (forwarder, classifier) = super::flows::counters(&state.packet);
    Ok(Json(CountersResponse {
        unit: state.unit.clone(),
        transport,
        cache,
        service,
        state: sizes,
        forwarder,
        classifier,
    }))
}

/// `GET /metrics`: the unit's registry in the OpenMetrics text format. Collectors read the
/// data plane's maps and take the roles' locks, so the encoding runs on a blocking thread.
async fn metrics(State(state): State<AdminState>) -> Response {
    let registry = state.metrics.clone();
    let encoded =
        tokio::task::spawn_blocking(move || switchyard_transport::metrics::encode(&registry)).await;
    match encoded {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                switchyard_transport::metrics::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        _ => ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics".to_owned(),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> AllotmentQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        AllotmentQuery {
            vip: get("vip"),
            protocol: get("protocol"),
            info: get("info"),
            tokens: get("tokens"),
            scheme: get("scheme"),
        }
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match parse_allotment_query(query(pairs)) {
            Err(ApiError(status, message)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                message
            }
            Ok(parsed) => panic!("accepted {parsed:?}"),
        }
    }

    #[test]
    fn allotment_queries_are_validated_with_clear_messages() {
        let ok = parse_allotment_query(query(&[("vip", "10.0.0.1:80")])).expect("valid");
        assert_eq!(ok.scheme, AllotmentScheme::Tokens);
        assert_eq!(ok.tokens, 0);
        assert_eq!(ok.service.protocol, Protocol::Tcp);
        let ok = parse_allotment_query(query(&[
            ("vip", "[2001:db8::1]:53"),
            ("protocol", "udp"),
            ("scheme", "percentages"),
            ("info", "/api"),
        ]))
        .expect("valid");
        assert_eq!(ok.scheme, AllotmentScheme::Percentages);
        assert_eq!(ok.service.info, "/api");

        assert!(error(&[]).contains("missing query parameter vip"));
        assert!(error(&[("vip", "10.0.0.1")]).contains("not an IP:PORT"));
        assert!(
            error(&[("vip", "10.0.0.1:80"), ("protocol", "sctp")]).contains("neither tcp nor udp")
        );
        assert!(
            error(&[("vip", "10.0.0.1:80"), ("scheme", "x")])
                .contains("neither tokens nor percentages")
        );
        assert!(error(&[("vip", "10.0.0.1:80"), ("tokens", "-1")]).contains("not a whole number"));
        assert!(
            error(&[
                ("vip", "10.0.0.1:80"),
                ("tokens", "5"),
                ("scheme", "percentages")
            ])
            .contains("scheme=tokens only")
        );
        let long = "x".repeat(MAX_APP_INFO_LEN + 1);
        assert!(error(&[("vip", "10.0.0.1:80"), ("info", &long)]).contains("at most"));
    }
}
