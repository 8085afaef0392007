//! The request router's part of the validated model: owns [`RouterSettings`] (`[router]`:
//! request limits and upstream behaviour) and the per-service routing rules ([`Route`],
//! `services[].routes`). Built by `validate`; read by the router role.

use std::time::Duration;

/// Defaults of the `[router]` and `[router.upstream]` tables.
pub mod router_defaults {
    use std::time::Duration;

    /// Largest request head (request line and headers) accepted, in bytes.
    pub const MAX_HEADER_BYTES: u32 = 64 * 1024;
    /// Most request headers accepted.
    pub const MAX_HEADERS: u32 = 100;
    /// Time a client has to send a complete request head.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Largest request body accepted, unless a route says otherwise (10 MiB).
    pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
    /// Requests one client IP address may have in flight at once.
    pub const MAX_REQUESTS_PER_CLIENT: u32 = 256;
    /// The header that carries the request id.
    pub const REQUEST_ID_HEADER: &str = "x-request-id";
    /// Time to open a TCP connection to a host.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Time a host has to send the response head.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Idle pooled connections to a host are closed after this long.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// Most connections the router opens to one host at once.
    pub const MAX_CONNECTIONS_PER_HOST: u32 = 32;
    /// Further attempts on other hosts after a failed one.
    pub const RETRIES: u32 = 2;
    /// Consecutive errors or timeouts that take a host out of rotation locally.
    pub const OUTLIER_ERRORS: u32 = 5;
    /// How long such a host stays out of rotation.
    pub const OUTLIER_EJECTION: Duration = Duration::from_secs(30);
}

/// Settings of the request router role (`[router]`, all defaults when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// Largest request head (request line and headers) accepted, in bytes; larger → 431.
    pub max_header_bytes: u32,
    /// Most request headers accepted; more → 431.
    pub max_headers: u32,
    /// Time a client has to send a complete request head; slower → 408 and close.
    pub header_read_timeout: Duration,
    /// Largest request body accepted where the route sets no limit; larger → 413.
    pub max_body_bytes: u64,
    /// Requests one client IP address may have in flight at once; more → 429.
    pub max_requests_per_client: u32,
    /// The request id header, lower case: kept when the client sent one, else generated.
    pub request_id_header: String,
    /// How the router talks to hosts.
    pub upstream: UpstreamSettings,
}

impl Default for RouterSettings {
    fn default() -> Self {
        use router_defaults as d;
        Self {
            max_header_bytes: d::MAX_HEADER_BYTES,
            max_headers: d::MAX_HEADERS,
            header_read_timeout: d::HEADER_READ_TIMEOUT,
            max_body_bytes: d::MAX_BODY_BYTES,
            max_requests_per_client: d::MAX_REQUESTS_PER_CLIENT,
            request_id_header: d::REQUEST_ID_HEADER.to_owned(),
            upstream: UpstreamSettings::default(),
        }
    }
}

/// How the request router talks to hosts (`[router.upstream]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Time to open a TCP connection to a host.
    pub connect_timeout: Duration,
    /// Time a host has to send the response head.
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open to one host at once; requests beyond wait for one.
    pub max_connections_per_host: u32,
    /// Further attempts on other hosts: after a connect failure always, after a failure
    /// mid-request only for idempotent methods.
    pub retries: u32,
    /// Speak HTTP/2 (prior knowledge) to hosts, multiplexing requests on each connection.
    pub http2: bool,
    /// Consecutive errors or timeouts that take a host out of rotation locally.
    pub outlier_errors: u32,
    /// How long such a host stays out of rotation.
    pub outlier_ejection: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        use router_defaults as d;
        Self {
            connect_timeout: d::CONNECT_TIMEOUT,
            request_timeout: d::REQUEST_TIMEOUT,
            idle_timeout: d::IDLE_TIMEOUT,
            max_connections_per_host: d::MAX_CONNECTIONS_PER_HOST,
            retries: d::RETRIES,
            http2: false,
            outlier_errors: d::OUTLIER_ERRORS,
            outlier_ejection: d::OUTLIER_EJECTION,
        }
    }
}

/// One routing rule of a request-mode service (`[[services.routes]]`). A request matches
/// when every condition written matches; the first matching rule of the listener's
/// services, in file order, decides the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host (authority without port), lower case: exact, or `*.example.com` for any
    /// subdomain.
    pub host: Option<String>,
    /// Path condition.
    pub path: Option<PathMatch>,
    /// Methods, upper case; empty matches every method.
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    pub headers: Vec<HeaderMatch>,
    /// The pool that serves matching requests.
    pub pool: String,
    /// Replaces the matched `path_prefix` before forwarding (`"/"` strips it).
    pub rewrite_prefix: Option<String>,
    /// Headers set on the forwarded request (name lower case, value).
    pub add_headers: Vec<(String, String)>,
    /// Headers removed from the forwarded request, lower case.
    pub remove_headers: Vec<String>,
    /// Largest request body on this route; `None` takes `[router].max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// The route's response cache, when enabled (`cache = { … }`).
    pub cache: Option<RouteCache>,
}

/// A route's shared response cache (`cache = { max_bytes, max_object_bytes, default_ttl }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// Bytes of stored responses (bodies and headers) at most; least recently used ones are
    /// evicted beyond it (1024..=2^40).
    pub max_bytes: u64,
    /// Largest single response stored (default: an eighth of `max_bytes`, at most
    /// `max_bytes`).
    pub max_object_bytes: u64,
    /// Freshness of cacheable responses that carry no `max-age`/`s-maxage`; `None` (the
    /// default) stores only responses with explicit freshness.
    pub default_ttl: Option<Duration>,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path (without query) equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// The path matches this regular expression (Rust `regex` syntax; checked to compile).
    Regex(String),
}

/// A header condition of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lower case.
    pub name: String,
    /// Exact value required; `None` only requires the header to be present.
    pub value: Option<String>,
}
