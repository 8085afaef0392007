//! One request's way through the router: limits, routing, forwarding headers, host
//! choice with affinity, attempts and retries, upgrades, the response body that returns
//! the host connection to its pool, and the access log line.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::Service;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use switchyard_config::{Affinity, HostId};
use tokio::time::Instant;

use crate::backends::{Placement, choose};
use crate::cache::ResponseCache;
use crate::metrics::Totals;
use crate::metrics::{RejectLabels, RequestLabels, RouteLabels};
use crate::rules::Decision;
use crate::upstream::{BoxError, Lease, UpstreamBody};
use crate::{Inner, ListenerConfig, RouterConfig};

/// One accepted client connection, with the configuration its next request uses.
#[derive(Debug, Clone)]
pub(crate) struct ConnCtx {
    pub(crate) inner: Arc<Inner>,
    /// The router configuration (limits, cookie key) this request reads.
    pub(crate) config: Arc<RouterConfig>,
    /// The listener's name (its rules are looked up again after a reload).
    pub(crate) name: Arc<str>,
    pub(crate) listener: Arc<ListenerConfig>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
}

impl ConnCtx {
    /// This context for the next request: the same one while the configuration is the
    /// one it was made with, else one with the reloaded configuration and the listener's
    /// new rules (a listener the new configuration dropped keeps its old rules while its
    /// connections drain).
    fn current(self: &Arc<Self>) -> Arc<Self> {
        // A guard, not a new Arc: the common case (no reload) touches no reference count.
        let current = self.inner.config.load();
        if Arc::ptr_eq(&current, &self.config) {
            return self.clone();
        }
        let config = arc_swap::Guard::into_inner(current);
        let listener = config
            .listeners
            .get(&*self.name)
            .cloned()
            .unwrap_or_else(|| self.listener.clone());
        Arc::new(Self {
            config,
            listener,
            ..(**self).clone()
        })
    }
}

/// The hyper service of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnService(Arc<ConnCtx>);

pub(crate) fn service(ctx: Arc<ConnCtx>) -> ConnService {
    ConnService(ctx)
}

impl Service<Request<Incoming>> for ConnService {
    type Response = Response<RouterBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let ctx = self.0.current();
        Box::pin(async move { Ok(handle(ctx, req).await) })
    }
}

/// What the access log line says about a request.
#[derive(Debug)]
struct AccessLog {
    method: Method,
    host: String,
    path: String,
    status: u16,
    pool: String,
    host_id: Option<HostId>,
    start: Instant,
    peer: SocketAddr,
    request_id: String,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn local(status: StatusCode, text: &'static str) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::local(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Holds one of a client's concurrent request slots.
#[derive(Debug)]
struct ClientSlot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(inner: &Arc<Inner>, ip: IpAddr, limit: u32) -> Option<Self> {
        let mut clients = inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = clients.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Self {
            inner: inner.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = clients.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<RouterBody> {
    let inner = &ctx.inner;
    let start = Instant::now();
    let mut log = AccessLog {
        method: req.method().clone(),
        host: String::new(),
        path: req.uri().path().to_owned(),
        status: 0,
        pool: String::new(),
        host_id: None,
        start,
        peer: ctx.peer,
        request_id: String::new(),
    };
    let (resp, route_label, slot) = route_request(&ctx, req, &mut log).await;
    log.status = resp.status().as_u16();
    inner.metrics.totals.response(log.status);
    inner
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route_label.clone(),
            host: log
                .host_id
                .map_or_else(|| "none".to_owned(), |h| h.0.to_string()),
            status: log.status,
        })
        .inc();
    inner
        .metrics
        .latency
        .get_or_create(&RouteLabels { route: route_label })
        .observe(start.elapsed().as_secs_f64());
    let (parts, mut body) = resp.into_parts();
    body.log = Some(log);
    body.slot = slot;
    Response::from_parts(parts, body)
}

fn reject(
    ctx: &ConnCtx,
    reason: &'static str,
    status: StatusCode,
    text: &'static str,
) -> Response<RouterBody> {
    ctx.inner
        .metrics
        .rejected
        .get_or_create(&RejectLabels { reason })
        .inc();
    crate::metrics::Totals::add(&ctx.inner.metrics.totals.rejected);
    local(status, text)
}

/// The request's authority without port, lower case.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            let auth: hyper::http::uri::Authority = value.parse().ok()?;
            auth.host().to_owned()
        }
    };
    Some(raw.to_ascii_lowercase())
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

async fn route_request(
    ctx: &ConnCtx,
    req: Request<Incoming>,
    log: &mut AccessLog,
) -> (Response<RouterBody>, String, Option<ClientSlot>) {
    let inner = &ctx.inner;
    let settings = &ctx.config.settings;
    let Some(slot) = ClientSlot::take(inner, ctx.peer.ip(), settings.max_requests_per_client)
    else {
        return (
            reject(
                ctx,
                "client-concurrency",
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests\n",
            ),
            "none".to_owned(),
            None,
        );
    };
    let headers = req.headers();
    let head_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().to_string().len();
    if headers.len() > settings.max_headers as usize
        || head_bytes > settings.max_header_bytes as usize
    {
        return (
            reject(
                ctx,
                "header-size",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large\n",
            ),
            "none".to_owned(),
            Some(slot),
        );
    }
    let Some(host) = request_host(&req) else {
        return (
            reject(
                ctx,
                "malformed",
                StatusCode::BAD_REQUEST,
                "bad request: no valid host\n",
            ),
            "none".to_owned(),
            Some(slot),
        );
    };
    log.host = host.clone();
    let request_id = match req.headers().get(&settings.request_id_header) {
        Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
        _ => new_request_id(inner),
    };
    log.request_id = request_id.to_str().unwrap_or("").to_owned();
    let path = req.uri().path().to_owned();
    let Some(decision) = ctx
        .listener
        .rules
        .decide(req.method(), &host, &path, req.headers())
    else {
        return (
            local(StatusCode::NOT_FOUND, "no route\n"),
            "none".to_owned(),
            Some(slot),
        );
    };
    let label = decision.label();
    log.pool = decision.pool().to_owned();
    let limit = decision
        .route
        .and_then(|r| r.max_body_bytes)
        .unwrap_or(settings.max_body_bytes);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return (
            reject(
                ctx,
                "body-size",
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large\n",
            ),
            label,
            Some(slot),
        );
    }
    let cache = decision.route.and_then(|r| r.cache.clone());
    let method = req.method().clone();
    let mut store_for: Option<(String, HeaderMap)> = None;
    let mut invalidate: Option<String> = None;
    if let Some(c) = &cache {
        let target = req
            .uri()
            .path_and_query()
            .map_or(path.as_str(), |pq| pq.as_str());
        let key = crate::cache::key(&host, target);
        if ResponseCache::applies(&method, req.headers()) {
            if ResponseCache::may_serve(req.headers())
                && let Some(hit) = c.lookup(&key, req.headers(), Instant::now())
            {
                Totals::add(&inner.metrics.totals.cache_hits);
                inner
                    .metrics
                    .cache_hits
                    .get_or_create(&RouteLabels {
                        route: label.clone(),
                    })
                    .inc();
                let body = if method == Method::HEAD {
                    Bytes::new()
                } else {
                    hit.body
                };
                let mut resp = Response::new(RouterBody::local(body));
                *resp.status_mut() = hit.status;
                *resp.headers_mut() = hit.headers;
                if let Ok(name) = HeaderName::from_bytes(settings.request_id_header.as_bytes()) {
                    resp.headers_mut().insert(name, request_id);
                }
                return (resp, label, Some(slot));
            }
            Totals::add(&inner.metrics.totals.cache_misses);
            inner
                .metrics
                .cache_misses
                .get_or_create(&RouteLabels {
                    route: label.clone(),
                })
                .inc();
            if method == Method::GET {
                store_for = Some((key, req.headers().clone()));
            }
        } else if !is_safe(&method) {
            invalidate = Some(key);
        }
    }
    let affinity_cookie = match &decision.service.affinity {
        Affinity::Cookie { name, .. } => Some(name.clone()),
        _ => None,
    };
    let resp = forward(ctx, req, decision, &path, &request_id, limit, log).await;
    let mut resp = resp;
    if let (Some(c), Some(key)) = (&cache, invalidate)
        && (resp.status().is_success() || resp.status().is_redirection())
    {
        let removed = c.invalidate_key(&key);
        cache_removed(inner, &label, c, removed);
    }
    if let (Some(c), Some((key, request_headers))) = (&cache, store_for) {
        let host_headers = without_cookie(resp.headers(), affinity_cookie.as_deref());
        if c.wants(resp.status(), &host_headers) {
            let (parts, body) = resp.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return (
                        local(StatusCode::BAD_GATEWAY, "bad gateway\n"),
                        label,
                        Some(slot),
                    );
                }
            };
            let stored = c.store(
                &key,
                &request_headers,
                parts.status,
                &host_headers,
                bytes.clone(),
                Instant::now(),
            );
            if stored.stored {
                let labels = RouteLabels {
                    route: label.clone(),
                };
                inner.metrics.cache_stores.get_or_create(&labels).inc();
                inner
                    .metrics
                    .cache_evictions
                    .get_or_create(&labels)
                    .inc_by(stored.evicted);
                inner
                    .metrics
                    .cache_bytes
                    .get_or_create(&labels)
                    .set(i64::try_from(c.bytes()).unwrap_or(i64::MAX));
            }
            resp = Response::from_parts(parts, RouterBody::local(bytes));
        }
    }
    if let Ok(name) = HeaderName::from_bytes(settings.request_id_header.as_bytes()) {
        resp.headers_mut().insert(name, request_id);
    }
    (resp, label, Some(slot))
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The response headers as the host sent them: without the router's own affinity cookie.
fn without_cookie(headers: &HeaderMap, cookie: Option<&str>) -> HeaderMap {
    let Some(name) = cookie else {
        return headers.clone();
    };
    let prefix = format!("{name}=");
    let mut out = headers.clone();
    out.remove(header::SET_COOKIE);
    for v in headers.get_all(header::SET_COOKIE) {
        if !v.as_bytes().starts_with(prefix.as_bytes()) {
            out.append(header::SET_COOKIE, v.clone());
        }
    }
    out
}

/// Counts responses removed from a route's cache and updates its size gauge.
pub(crate) fn cache_removed(inner: &Inner, route: &str, cache: &ResponseCache, removed: u64) {
    let labels = RouteLabels {
        route: route.to_owned(),
    };
    inner
        .metrics
        .cache_invalidations
        .get_or_create(&labels)
        .inc_by(removed);
    inner
        .metrics
        .cache_bytes
        .get_or_create(&labels)
        .set(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
}

fn new_request_id(inner: &Inner) -> HeaderValue {
    let a = inner.random();
    let b = inner.random();
    let text = format!("{a:016x}{b:016x}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The headers to send to the host.
fn upstream_headers(
    ctx: &ConnCtx,
    req: &hyper::http::request::Parts,
    decision: Decision<'_>,
    request_id: &HeaderValue,
    upgrade: bool,
) -> HeaderMap {
    let settings = &ctx.config.settings;
    let mut headers = req.headers.clone();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    if upgrade && let Some(u) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    if !headers.contains_key(header::HOST)
        && let Some(a) = req.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let client = ctx.peer.ip();
    let proto = if ctx.tls { "https" } else { "http" };
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(h) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", h);
    }
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    if let Some(h) = headers.get(header::HOST).and_then(|v| v.to_str().ok())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        forwarded.push_str(";host=");
        forwarded.push_str(h);
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {forwarded}"),
        None => forwarded,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Ok(name) = HeaderName::from_bytes(settings.request_id_header.as_bytes()) {
        headers.insert(name, request_id.clone());
    }
    if let Some(route) = decision.route {
        for name in &route.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &route.add_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers
}

/// Where the request should land, from the service's affinity (and the session directory,
/// when the router has one: `session_directory` explains).
async fn placement<'k>(
    ctx: &ConnCtx,
    headers: &'k HeaderMap,
    affinity: &Affinity,
    client_ip: &'k [u8],
    pool: &str,
) -> (Placement<'k>, Option<String>) {
    use crate::session_directory::{Directory, cookie_session, header_session};
    let inner = &ctx.inner;
    let random = inner.random();
    let directory = inner.sessions.as_deref().map(|directory| Directory {
        directory,
        metrics: &inner.metrics.sessions,
    });
    let hosts = (&*inner.backends, pool);
    let excluded = |id| inner.upstreams.is_ejected(id);
    let cookie = |name: &str| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|v| crate::affinity::find_cookie(v.as_bytes(), name))
    };
    match affinity {
        Affinity::Cookie { name, .. } => {
            let held = cookie(name).and_then(|v| ctx.config.cookie_key.decode(v));
            match held {
                Some(host) => (
                    Placement::Cookie {
                        host: HostId(host),
                        random,
                    },
                    Some(name.clone()),
                ),
                None => (Placement::Any { random }, Some(name.clone())),
            }
        }
        Affinity::AppCookie { name, .. } => {
            match (
                directory,
                cookie(name).and_then(|v| cookie_session(name, v)),
            ) {
                (Some(d), Some(session)) => (d.app_cookie(&session, random).await, None),
                _ => (Placement::Any { random }, None),
            }
        }
        Affinity::ClientIp { timeout } => match directory {
            Some(d) => {
                let session = switchyard_wire::SessionId::ClientIp(ctx.peer.ip());
                let p = d.hashed(&session, client_ip, *timeout, hosts, &excluded);
                (p.await, None)
            }
            None => (Placement::Hash(client_ip), None),
        },
        Affinity::FourTuple { .. } => (Placement::Hash(client_ip), None),
        Affinity::Header { name, timeout } => match headers.get(name.as_str()) {
            Some(v) => match (directory, header_session(name, v.as_bytes())) {
                (Some(d), Some(session)) => {
                    let p = d.hashed(&session, v.as_bytes(), *timeout, hosts, &excluded);
                    (p.await, None)
                }
                _ => (Placement::Hash(v.as_bytes()), None),
            },
            None => (Placement::Any { random }, None),
        },
        Affinity::None | Affinity::TlsSession { .. } => (Placement::Any { random }, None),
    }
}

async fn forward(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    decision: Decision<'_>,
    path: &str,
    request_id: &HeaderValue,
    limit: u64,
    log: &mut AccessLog,
) -> Response<RouterBody> {
    let inner = &ctx.inner;
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let headers = upstream_headers(ctx, &parts, decision, request_id, upgrade);
    let forwarded_path = decision
        .route
        .and_then(|r| r.rewrite(path))
        .unwrap_or_else(|| path.to_owned());
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{forwarded_path}?{q}"),
        None => forwarded_path,
    };
    let method = parts.method.clone();
    let empty_body = incoming.is_end_stream();
    // The body can be sent once; a request without one can be rebuilt for any attempt.
    let over_limit = Arc::new(AtomicBool::new(false));
    let mut body: Option<UpstreamBody> = if empty_body {
        None
    } else {
        let flag = over_limit.clone();
        Some(
            Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX))
                .map_err(move |e: BoxError| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        flag.store(true, Ordering::Relaxed);
                    }
                    e
                })
                .boxed(),
        )
    };
    let ip_bytes = match ctx.peer.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let (placement, cookie_name) = placement(
        ctx,
        &parts.headers,
        &decision.service.affinity,
        &ip_bytes,
        decision.pool(),
    )
    .await;
    let http2 = inner.upstreams.settings.http2 && !upgrade;
    let attempts = 1 + inner.upstreams.settings.retries;
    let mut tried: Vec<HostId> = Vec::new();
    let mut last_error = (StatusCode::SERVICE_UNAVAILABLE, "no host available\n");
    for attempt in 0..attempts {
        let backends = inner.backends.load();
        let hosts = backends.pool(decision.pool());
        let Some(host) = choose(hosts, placement, &|id| {
            tried.contains(&id) || inner.upstreams.is_ejected(id)
        }) else {
            break;
        };
        let (host_id, address) = (host.id, host.address);
        drop(backends);
        tried.push(host_id);
        log.host_id = Some(host_id);
        if attempt > 0 {
            crate::metrics::Totals::add(&inner.metrics.totals.retries);
            inner
                .metrics
                .retries
                .get_or_create(&RouteLabels {
                    route: decision.label(),
                })
                .inc();
        }
        let mut lease = match inner.upstreams.lease(host_id, address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(host = host_id.0, error = %e, "connect failed");
                inner.upstreams.report(host_id, false);
                last_error = (StatusCode::BAD_GATEWAY, "bad gateway\n");
                continue;
            }
        };
        let request_body = match body.take() {
            Some(b) => b,
            None if empty_body => Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
            // The body went to an earlier attempt; it cannot be sent again.
            None => break,
        };
        let uri = if http2 {
            format!("http://{address}{path_and_query}")
        } else {
            path_and_query.clone()
        };
        let Ok(uri) = uri.parse::<Uri>() else {
            return local(StatusCode::BAD_REQUEST, "bad request: invalid path\n");
        };
        let mut upstream_req = Request::new(request_body);
        *upstream_req.method_mut() = method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *upstream_req.headers_mut() = headers.clone();
        if http2 {
            upstream_req.headers_mut().remove(header::HOST);
        }
        let outcome = tokio::time::timeout(
            inner.upstreams.settings.request_timeout,
            lease.send(upstream_req),
        )
        .await;
        let retry_allowed = empty_body && is_idempotent(&method);
        match outcome {
            Ok(Ok(mut resp)) => {
                inner.upstreams.report(host_id, true);
                let set_cookie = cookie_name.and_then(|name| {
                    let keep =
                        matches!(placement, Placement::Cookie { host, .. } if host == host_id);
                    (!keep)
                        .then(|| set_cookie_value(ctx, &name, host_id, &decision.service.affinity))
                });
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_upgrade) = client_upgrade
                {
                    let host_upgrade = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        let (Ok(client), Ok(host)) = (client_upgrade.await, host_upgrade.await)
                        else {
                            return;
                        };
                        let _lease = lease;
                        let mut client = TokioIo::new(client);
                        let mut host = TokioIo::new(host);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut host).await;
                    });
                    let (parts, _) = resp.into_parts();
                    return Response::from_parts(parts, RouterBody::local(Bytes::new()));
                }
                let (mut parts, incoming) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(v) = set_cookie.flatten() {
                    parts.headers.append(header::SET_COOKIE, v);
                }
                return Response::from_parts(parts, RouterBody::upstream(incoming, lease));
            }
            Ok(Err(e)) => {
                drop(lease);
                if over_limit.load(Ordering::Relaxed) {
                    return reject(
                        ctx,
                        "body-size",
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload too large\n",
                    );
                }
                tracing::debug!(host = host_id.0, error = %e, "request to host failed");
                inner.upstreams.report(host_id, false);
                last_error = (StatusCode::BAD_GATEWAY, "bad gateway\n");
                if !retry_allowed {
                    break;
                }
            }
            Err(_) => {
                drop(lease);
                inner.upstreams.report(host_id, false);
                last_error = (StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
                if !retry_allowed {
                    break;
                }
            }
        }
    }
    local(last_error.0, last_error.1)
}

fn set_cookie_value(
    ctx: &ConnCtx,
    name: &str,
    host: HostId,
    affinity: &Affinity,
) -> Option<HeaderValue> {
    let value = ctx.config.cookie_key.encode(host.0);
    let max_age = affinity.timeout().map_or(0, |t| t.as_secs());
    let secure = if ctx.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// The body of every response the router sends: a local text, or a host's body that
/// returns the host connection to its pool when read to the end. Dropping it writes the
/// access log line.
#[derive(Debug)]
pub(crate) struct RouterBody {
    kind: Kind,
    lease: Option<Lease>,
    log: Option<AccessLog>,
    slot: Option<ClientSlot>,
    bytes: u64,
}

#[derive(Debug)]
enum Kind {
    Local(Option<Bytes>),
    Upstream(Incoming),
}

impl RouterBody {
    fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
            lease: None,
            log: None,
            slot: None,
            bytes: 0,
        }
    }

    fn upstream(body: Incoming, lease: Lease) -> Self {
        Self {
            kind: Kind::Upstream(body),
            lease: Some(lease),
            log: None,
            slot: None,
            bytes: 0,
        }
    }

    fn finished(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Local(bytes) => {
                let frame = bytes.take().map(|b| {
                    this.bytes += b.len() as u64;
                    Ok(Frame::data(b))
                });
                Poll::Ready(frame)
            }
            Kind::Upstream(incoming) => {
                let polled = Pin::new(incoming).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            this.bytes += data.len() as u64;
                        }
                        if let Kind::Upstream(i) = &this.kind
                            && i.is_end_stream()
                        {
                            this.finished();
                        }
                    }
                    Poll::Ready(None) => this.finished(),
                    Poll::Ready(Some(Err(_))) => this.lease = None,
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(b) => b.is_none(),
            Kind::Upstream(i) => i.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
            Kind::Upstream(i) => i.size_hint(),
        }
    }
}

impl Drop for RouterBody {
    fn drop(&mut self) {
        if let Kind::Upstream(i) = &self.kind
            && i.is_end_stream()
        {
            self.finished();
        }
        if let Some(log) = self.log.take() {
            tracing::info!(
                target: "switchyard_router::access",
                method = %log.method,
                host = %log.host,
                path = %log.path,
                status = log.status,
                pool = %log.pool,
                host_id = log.host_id.map(|h| h.0),
                duration_ms = log.start.elapsed().as_secs_f64() * 1000.0,
                bytes = self.bytes,
                client = %log.peer,
                request_id = %log.request_id,
                "request"
            );
        }
    }
}
