//! One request's way through the router: limits, routing, forwarding headers, host
//! choice with affinity, attempts and retries, upgrades, the response body that returns
//! the host connection to its pool, and the access log line.
//!
//! Per request this path allocates only what hyper needs (the request's future, the
//! header map sent to the host, a generated request id): labels, forwarding values and
//! header names are computed once per route, per connection or per configuration, and
//! the access-log record is only built when the access log is on.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
use crate::metrics::{HostLabel, RejectLabels, RequestLabels, RouteLabels};
use crate::rules::Decision;
use crate::upstream::{BoxError, Lease, UpstreamBody};
use crate::{Inner, ListenerConfig, RouterConfig};

/// The target of the access log lines.
const ACCESS_LOG: &str = "switchyard_router::access";

/// One accepted client connection, with the configuration its next request uses.
#[derive(Debug, Clone)]
pub(crate) struct ConnCtx {
    pub(crate) inner: Arc<Inner>,
    /// The router configuration (limits, cookie key) this request reads.
    pub(crate) config: Arc<RouterConfig>,
    /// The listener's name (its rules are looked up again after a reload).
    pub(crate) name: Arc<str>,
    pub(crate) listener: Arc<ListenerConfig>,
    client: Arc<Client>,
}

/// What a connection knows about its client, worked out once when it is accepted.
#[derive(Debug)]
struct Client {
    peer: SocketAddr,
    tls: bool,
    /// `X-Forwarded-For` for a request that has none: the client's address.
    forwarded_for: HeaderValue,
    /// `Forwarded` without its host part: `for=…;proto=…`.
    forwarded: String,
    /// The last `Forwarded` value built, with the `Host` it names (a connection's
    /// requests usually name one host).
    forwarded_with_host: Mutex<Option<(HeaderValue, HeaderValue)>>,
    /// Requests in flight from the client's address, over all its connections.
    in_flight: Arc<InFlight>,
}

impl ConnCtx {
    pub(crate) fn new(
        inner: Arc<Inner>,
        config: Arc<RouterConfig>,
        name: Arc<str>,
        listener: Arc<ListenerConfig>,
        peer: SocketAddr,
        tls: bool,
    ) -> Self {
        let ip = peer.ip();
        let proto = if tls { "https" } else { "http" };
        let node = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        let in_flight = inner.clients.register(ip);
        let client = Client {
            peer,
            tls,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded: format!("for={node};proto={proto}"),
            forwarded_with_host: Mutex::new(None),
            in_flight,
        };
        Self {
            inner,
            config,
            name,
            listener,
            client: Arc::new(client),
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.client.peer
    }

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

    /// The `Forwarded` value for a request whose `Host` is `host`.
    fn forwarded(&self, host: Option<&HeaderValue>) -> Option<HeaderValue> {
        // Only a host made of these characters is repeated in `Forwarded`.
        let host = host.filter(|h| {
            h.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(b))
        });
        let Some(host) = host else {
            return HeaderValue::from_str(&self.client.forwarded).ok();
        };
        let mut last = lock(&self.client.forwarded_with_host);
        if let Some((h, value)) = last.as_ref()
            && h == host
        {
            return Some(value.clone());
        }
        let mut text = String::with_capacity(self.client.forwarded.len() + 6 + host.len());
        text.push_str(&self.client.forwarded);
        text.push_str(";host=");
        text.push_str(host.to_str().ok()?);
        let value = HeaderValue::from_maybe_shared(Bytes::from(text)).ok()?;
        *last = Some((host.clone(), value.clone()));
        Some(value)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
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

/// Requests in flight per client address: one counter per address that has an open
/// connection or a request in flight, shared by its connections.
#[derive(Debug, Default)]
pub(crate) struct Clients(Arc<Mutex<HashMap<IpAddr, Weak<InFlight>>>>);

impl Clients {
    /// The counter of `ip` (once per connection).
    fn register(&self, ip: IpAddr) -> Arc<InFlight> {
        let mut map = lock(&self.0);
        if let Some(existing) = map.get(&ip).and_then(Weak::upgrade) {
            return existing;
        }
        let counter = Arc::new(InFlight {
            ip,
            n: AtomicU32::new(0),
            map: Arc::downgrade(&self.0),
        });
        map.insert(ip, Arc::downgrade(&counter));
        counter
    }
}

/// One client address's requests in flight.
#[derive(Debug)]
struct InFlight {
    ip: IpAddr,
    n: AtomicU32,
    map: Weak<Mutex<HashMap<IpAddr, Weak<InFlight>>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The last connection and request of this address are gone. A new connection
        // may have put a fresh counter in since: keep that one.
        if let Some(map) = self.map.upgrade() {
            let mut map = lock(&map);
            if map.get(&self.ip).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.ip);
            }
        }
    }
}

/// Holds one of a client's concurrent request slots.
#[derive(Debug)]
struct ClientSlot(Arc<InFlight>);

impl ClientSlot {
    fn take(counter: &Arc<InFlight>, limit: u32) -> Option<Self> {
        if counter.n.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<RouterBody> {
    let inner = &ctx.inner;
    let start = Instant::now();
    let mut log = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| {
        Box::new(AccessLog {
            method: req.method().clone(),
            host: String::new(),
            path: req.uri().path().to_owned(),
            status: 0,
            pool: String::new(),
            host_id: None,
            start,
            peer: ctx.client.peer,
            request_id: String::new(),
        })
    });
    let mut host_id = None;
    let (resp, route, slot) = route_request(&ctx, req, &mut host_id, log.as_deref_mut()).await;
    let status = resp.status().as_u16();
    inner.metrics.totals.response(status);
    let labels = RequestLabels {
        route,
        host: HostLabel(host_id.map(|h| h.0)),
        status,
    };
    inner.metrics.requests.get_or_create(&labels).inc();
    inner
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: labels.route,
        })
        .observe(start.elapsed().as_secs_f64());
    if let Some(log) = log.as_deref_mut() {
        log.status = status;
        log.host_id = host_id;
    }
    let (parts, mut body) = resp.into_parts();
    body.log = log;
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
fn request_host(req: &Request<Incoming>) -> Option<Cow<'_, str>> {
    let host = match req.uri().authority() {
        Some(a) => a.host(),
        None => {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            match plain_host(value) {
                Some(host) => host,
                None => {
                    let auth: hyper::http::uri::Authority = value.parse().ok()?;
                    return Some(Cow::Owned(auth.host().to_ascii_lowercase()));
                }
            }
        }
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// The host of a `Host` value of the common form `name[:port]` (letters, digits, `.`,
/// `-`), without parsing it as an authority; `None` for anything else.
fn plain_host(value: &str) -> Option<&str> {
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    (host_ok && port_ok).then_some(host)
}

/// The length of `uri` as text (what `uri.to_string().len()` gives), without building it.
fn uri_len(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
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
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Routes and answers one request: the response, the route label for metrics and the
/// client slot the request holds until its response body is done.
async fn route_request(
    ctx: &ConnCtx,
    req: Request<Incoming>,
    host_id: &mut Option<HostId>,
    mut log: Option<&mut AccessLog>,
) -> (Response<RouterBody>, Arc<str>, Option<ClientSlot>) {
    let inner = &ctx.inner;
    let settings = &ctx.config.settings;
    let none = || inner.metrics.no_route.clone();
    let Some(slot) = ClientSlot::take(&ctx.client.in_flight, settings.max_requests_per_client)
    else {
        return (
            reject(
                ctx,
                "client-concurrency",
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests\n",
            ),
            none(),
            None,
        );
    };
    let headers = req.headers();
    let head_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri_len(req.uri());
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
            none(),
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
            none(),
            Some(slot),
        );
    };
    let request_id_header = &ctx.config.request_id_header;
    let request_id = match req.headers().get(request_id_header) {
        Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
        _ => new_request_id(inner),
    };
    if let Some(log) = log.as_deref_mut() {
        log.host = host.clone().into_owned();
        log.request_id = request_id.to_str().unwrap_or("").to_owned();
    }
    let path = req.uri().path();
    let Some(decision) = ctx
        .listener
        .rules
        .decide(req.method(), &host, path, req.headers())
    else {
        return (
            local(StatusCode::NOT_FOUND, "no route\n"),
            none(),
            Some(slot),
        );
    };
    let label = decision.label().clone();
    if let Some(log) = log {
        log.pool = decision.pool().to_owned();
    }
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
    let cache = decision.route.and_then(|r| r.cache.as_ref());
    let method = req.method().clone();
    let mut store_for: Option<(String, HeaderMap)> = None;
    let mut invalidate: Option<String> = None;
    if let Some(c) = cache {
        let target = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
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
                resp.headers_mut()
                    .insert(request_id_header.clone(), request_id);
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
        Affinity::Cookie { name, .. } => Some(name.as_str()),
        _ => None,
    };
    let mut resp = forward(ctx, req, decision, &request_id, limit, host_id).await;
    if let (Some(c), Some(key)) = (cache, invalidate)
        && (resp.status().is_success() || resp.status().is_redirection())
    {
        let removed = c.invalidate_key(&key);
        cache_removed(inner, &label, c, removed);
    }
    if let (Some(c), Some((key, request_headers))) = (cache, store_for) {
        let (parts, body) = resp.into_parts();
        let host_headers = without_cookie(&parts.headers, affinity_cookie);
        resp = if c.wants(parts.status, &host_headers) {
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
            Response::from_parts(parts, RouterBody::local(bytes))
        } else {
            Response::from_parts(parts, body)
        };
    }
    resp.headers_mut()
        .insert(request_id_header.clone(), request_id);
    (resp, label, Some(slot))
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The response headers as the host sent them: without the router's own affinity cookie
/// (`headers` themselves when the service has none).
fn without_cookie<'h>(headers: &'h HeaderMap, cookie: Option<&str>) -> Cow<'h, HeaderMap> {
    let Some(name) = cookie else {
        return Cow::Borrowed(headers);
    };
    let prefix = format!("{name}=");
    let mut out = headers.clone();
    out.remove(header::SET_COOKIE);
    for v in headers.get_all(header::SET_COOKIE) {
        if !v.as_bytes().starts_with(prefix.as_bytes()) {
            out.append(header::SET_COOKIE, v.clone());
        }
    }
    Cow::Owned(out)
}

/// Counts responses removed from a route's cache and updates its size gauge.
pub(crate) fn cache_removed(inner: &Inner, route: &str, cache: &ResponseCache, removed: u64) {
    let labels = RouteLabels {
        route: Arc::from(route),
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

/// A new request id: 32 hexadecimal digits.
fn new_request_id(inner: &Inner) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    let (a, b) = (inner.random(), inner.random());
    for (i, digit) in text.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let shift = 60 - 4 * (i % 16);
        *digit = HEX[((word >> shift) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Turns the client's request headers into the ones sent to the host, in place.
fn upstream_headers(
    ctx: &ConnCtx,
    req: &mut hyper::http::request::Parts,
    decision: Decision<'_>,
    request_id: &HeaderValue,
    upgrade: bool,
) {
    let headers = &mut req.headers;
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
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
    let proto = if ctx.client.tls { "https" } else { "http" };
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", ctx.client.peer.ip())).ok(),
        None => Some(ctx.client.forwarded_for.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let host = headers.get(header::HOST).cloned();
    if let Some(h) = &host {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
    let forwarded = ctx.forwarded(host.as_ref());
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) => forwarded.and_then(|f| {
            HeaderValue::from_str(&format!("{prior}, {}", f.to_str().unwrap_or_default())).ok()
        }),
        None => forwarded,
    };
    if let Some(v) = forwarded {
        headers.insert(header::FORWARDED, v);
    }
    headers.insert(ctx.config.request_id_header.clone(), request_id.clone());
    if let Some(route) = decision.route {
        for name in &route.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &route.add_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How the request asks to be placed, owning what it hashes.
enum PlacementKey {
    Any {
        random: u64,
    },
    Cookie {
        host: HostId,
        random: u64,
    },
    ClientIp,
    Header(HeaderValue),
    /// The session directory puts the client's session on `host`; else the client IP's hash.
    ClientIpSession {
        host: HostId,
    },
    /// The session directory puts the header value's session on `host`; else its hash.
    HeaderSession {
        host: HostId,
        value: HeaderValue,
    },
}

impl PlacementKey {
    fn placement<'k>(&'k self, client_ip: &'k [u8]) -> Placement<'k> {
        match self {
            Self::Any { random } => Placement::Any { random: *random },
            Self::Cookie { host, random } => Placement::Cookie {
                host: *host,
                random: *random,
            },
            Self::ClientIp => Placement::Hash(client_ip),
            Self::Header(v) => Placement::Hash(v.as_bytes()),
            Self::ClientIpSession { host } => Placement::Session {
                host: *host,
                key: client_ip,
            },
            Self::HeaderSession { host, value } => Placement::Session {
                host: *host,
                key: value.as_bytes(),
            },
        }
    }

    /// The owned form of what the session directory placed.
    fn of(placement: Placement<'_>, hashed: Self) -> Self {
        match (placement, hashed) {
            (Placement::Session { host, .. }, Self::ClientIp) => Self::ClientIpSession { host },
            (Placement::Session { host, .. }, Self::Header(value)) => {
                Self::HeaderSession { host, value }
            }
            (Placement::Cookie { host, random }, _) => Self::Cookie { host, random },
            (Placement::Any { random }, _) => Self::Any { random },
            (_, hashed) => hashed,
        }
    }
}

/// Where the request should land, from the service's affinity (and the session directory,
/// when the router has one: `session_directory` explains), and the affinity cookie's name.
async fn placement<'a>(
    ctx: &ConnCtx,
    headers: &HeaderMap,
    affinity: &'a Affinity,
    client_ip: &[u8],
    pool: &str,
) -> (PlacementKey, Option<&'a str>) {
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
                    PlacementKey::Cookie {
                        host: HostId(host),
                        random,
                    },
                    Some(name.as_str()),
                ),
                None => (PlacementKey::Any { random }, Some(name.as_str())),
            }
        }
        Affinity::AppCookie { name, .. } => {
            match (
                directory,
                cookie(name).and_then(|v| cookie_session(name, v)),
            ) {
                (Some(d), Some(session)) => {
                    let placed = d.app_cookie(&session, random).await;
                    (PlacementKey::of(placed, PlacementKey::Any { random }), None)
                }
                _ => (PlacementKey::Any { random }, None),
            }
        }
        Affinity::ClientIp { timeout } => match directory {
            Some(d) => {
                let session = switchyard_wire::SessionId::ClientIp(ctx.client.peer.ip());
                let placed = d
                    .hashed(&session, client_ip, *timeout, hosts, &excluded)
                    .await;
                (PlacementKey::of(placed, PlacementKey::ClientIp), None)
            }
            None => (PlacementKey::ClientIp, None),
        },
        Affinity::FourTuple { .. } => (PlacementKey::ClientIp, None),
        Affinity::Header { name, timeout } => match headers.get(name.as_str()) {
            Some(v) => match (directory, header_session(name, v.as_bytes())) {
                (Some(d), Some(session)) => {
                    let placed = d
                        .hashed(&session, v.as_bytes(), *timeout, hosts, &excluded)
                        .await;
                    (
                        PlacementKey::of(placed, PlacementKey::Header(v.clone())),
                        None,
                    )
                }
                _ => (PlacementKey::Header(v.clone()), None),
            },
            None => (PlacementKey::Any { random }, None),
        },
        Affinity::None | Affinity::TlsSession { .. } => (PlacementKey::Any { random }, None),
    }
}

/// The request target sent to the host: origin form (the route's rewrite applied), or
/// absolute form to `address` over HTTP/2.
fn upstream_uri(uri: &Uri, rewritten: Option<&str>, http2_to: Option<SocketAddr>) -> Option<Uri> {
    if rewritten.is_none()
        && http2_to.is_none()
        && uri.scheme().is_none()
        && uri.authority().is_none()
    {
        // Already origin form: share it.
        return Some(uri.clone());
    }
    let path = rewritten.unwrap_or(uri.path());
    let mut text = match http2_to {
        Some(address) => format!("http://{address}{path}"),
        None => path.to_owned(),
    };
    if let Some(q) = uri.query() {
        text.push('?');
        text.push_str(q);
    }
    text.parse().ok()
}

async fn forward(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    decision: Decision<'_>,
    request_id: &HeaderValue,
    limit: u64,
    host_id: &mut Option<HostId>,
) -> Response<RouterBody> {
    let inner = &ctx.inner;
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    let mut ip_bytes = [0u8; 16];
    let ip_bytes: &[u8] = match ctx.client.peer.ip() {
        IpAddr::V4(ip) => {
            ip_bytes[..4].copy_from_slice(&ip.octets());
            &ip_bytes[..4]
        }
        IpAddr::V6(ip) => {
            ip_bytes = ip.octets();
            &ip_bytes
        }
    };
    let (key, cookie_name) = placement(
        ctx,
        &parts.headers,
        &decision.service.affinity,
        ip_bytes,
        decision.pool(),
    )
    .await;
    upstream_headers(ctx, &mut parts, decision, request_id, upgrade);
    let mut headers = std::mem::take(&mut parts.headers);
    let rewritten = decision.route.and_then(|r| r.rewrite(parts.uri.path()));
    let method = parts.method;
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
    let placement = key.placement(ip_bytes);
    let http2 = inner.upstreams.settings.http2 && !upgrade;
    // HTTP/1.1: the same target for every attempt.
    let h1_uri = if http2 {
        None
    } else {
        match upstream_uri(&parts.uri, rewritten.as_deref(), None) {
            Some(uri) => Some(uri),
            None => return local(StatusCode::BAD_REQUEST, "bad request: invalid path\n"),
        }
    };
    let attempts = 1 + inner.upstreams.settings.retries;
    let retry_allowed = empty_body && is_idempotent(&method);
    // Hosts that failed this request; allocated only when one does.
    let mut tried: Vec<HostId> = Vec::new();
    let mut last_error = (StatusCode::SERVICE_UNAVAILABLE, "no host available\n");
    for attempt in 0..attempts {
        if let Some(previous) = *host_id
            && attempt > 0
        {
            tried.push(previous);
        }
        let backends = inner.backends.load();
        let hosts = backends.pool(decision.pool());
        let Some(host) = choose(hosts, placement, &|id| {
            tried.contains(&id) || inner.upstreams.is_ejected(id)
        }) else {
            break;
        };
        let (chosen, address) = (host.id, host.address);
        drop(backends);
        *host_id = Some(chosen);
        if attempt > 0 {
            crate::metrics::Totals::add(&inner.metrics.totals.retries);
            inner
                .metrics
                .retries
                .get_or_create(&RouteLabels {
                    route: decision.label().clone(),
                })
                .inc();
        }
        let mut lease = match inner.upstreams.lease(chosen, address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(host = chosen.0, error = %e, "connect failed");
                inner.upstreams.report(chosen, false);
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
        let uri = match &h1_uri {
            Some(uri) => uri.clone(),
            None => match upstream_uri(&parts.uri, rewritten.as_deref(), Some(address)) {
                Some(uri) => uri,
                None => return local(StatusCode::BAD_REQUEST, "bad request: invalid path\n"),
            },
        };
        let mut upstream_req = Request::new(request_body);
        *upstream_req.method_mut() = method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // A later attempt needs the headers again only if this one may be retried.
        *upstream_req.headers_mut() = if retry_allowed && attempt + 1 < attempts {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if http2 {
            upstream_req.headers_mut().remove(header::HOST);
        }
        let outcome = tokio::time::timeout(
            inner.upstreams.settings.request_timeout,
            lease.send(upstream_req),
        )
        .await;
        match outcome {
            Ok(Ok(mut resp)) => {
                inner.upstreams.report(chosen, true);
                let set_cookie = cookie_name.and_then(|name| {
                    let keep =
                        matches!(placement, Placement::Cookie { host, .. } if host == chosen);
                    (!keep).then(|| set_cookie_value(ctx, name, chosen, &decision.service.affinity))
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
                tracing::debug!(host = chosen.0, error = %e, "request to host failed");
                inner.upstreams.report(chosen, false);
                last_error = (StatusCode::BAD_GATEWAY, "bad gateway\n");
                if !retry_allowed {
                    break;
                }
            }
            Err(_) => {
                drop(lease);
                inner.upstreams.report(chosen, false);
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
    let secure = if ctx.client.tls { "; Secure" } else { "" };
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
    log: Option<Box<AccessLog>>,
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
