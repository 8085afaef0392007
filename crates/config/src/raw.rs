//! The schema as written: owns the field names of every table, which of them are required,
//! their defaults' absence, and the keyword sets of enum fields. Produces a tree of
//! [`Field`]s with locations; cross-field and cross-reference rules live in `validate`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml::Spanned;
use toml::de::DeTable;

use crate::decode::{Field, Keyword, Kw, Node, Span};
use crate::diagnostics::{Sink, codes};
use crate::model::{AttachPoint, Delivery, Protocol, Role};

impl Keyword for Role {
    const WHAT: &'static str = "role";
    const ALL: &'static [(&'static str, Self)] = &[
        ("forwarder", Role::Forwarder),
        ("classifier", Role::Classifier),
        ("router", Role::Router),
        ("session-store", Role::SessionStore),
        ("health-cache", Role::HealthCache),
    ];
}

impl Keyword for Protocol {
    const WHAT: &'static str = "protocol";
    const ALL: &'static [(&'static str, Self)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
}

impl Keyword for AttachPoint {
    const WHAT: &'static str = "attach point";
    const ALL: &'static [(&'static str, Self)] = &[
        ("xdp", AttachPoint::Xdp),
        ("tc", AttachPoint::Tc),
        ("xdp+tc", AttachPoint::XdpAndTc),
    ];
}

impl Keyword for Delivery {
    const WHAT: &'static str = "delivery";
    const ALL: &'static [(&'static str, Self)] = &[
        ("nat", Delivery::Nat),
        ("half-nat", Delivery::HalfNat),
        ("tunnel", Delivery::Tunnel),
    ];
}

/// `services[].mode` before its settings are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeKind {
    Packet,
    Request,
    Migrate,
}

impl Keyword for ModeKind {
    const WHAT: &'static str = "mode";
    const ALL: &'static [(&'static str, Self)] = &[
        ("packet", ModeKind::Packet),
        ("request", ModeKind::Request),
        ("migrate", ModeKind::Migrate),
    ];
}

/// `services[].affinity.kind` before its settings are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AffinityKind {
    None,
    ClientIp,
    FourTuple,
    Cookie,
    AppCookie,
    TlsSession,
    Header,
}

impl Keyword for AffinityKind {
    const WHAT: &'static str = "affinity kind";
    const ALL: &'static [(&'static str, Self)] = &[
        ("none", AffinityKind::None),
        ("client-ip", AffinityKind::ClientIp),
        ("four-tuple", AffinityKind::FourTuple),
        ("cookie", AffinityKind::Cookie),
        ("app-cookie", AffinityKind::AppCookie),
        ("tls-session", AffinityKind::TlsSession),
        ("header", AffinityKind::Header),
    ];
}

/// `health_checks[].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckKind {
    Tcp,
    Http,
    Exec,
}

impl Keyword for CheckKind {
    const WHAT: &'static str = "check kind";
    const ALL: &'static [(&'static str, Self)] = &[
        ("tcp", CheckKind::Tcp),
        ("http", CheckKind::Http),
        ("exec", CheckKind::Exec),
    ];
}

/// `listeners[].protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Http,
    Https,
    H2c,
}

impl Keyword for ListenerKind {
    const WHAT: &'static str = "listener protocol";
    const ALL: &'static [(&'static str, Self)] = &[
        ("http", ListenerKind::Http),
        ("https", ListenerKind::Https),
        ("h2c", ListenerKind::H2c),
    ];
}

/// Where one table was written.
#[derive(Debug, Clone)]
pub(crate) struct At {
    /// Header span (or inline table span).
    pub(crate) span: Span,
    /// Field path, e.g. `pools[0].hosts[2]`.
    pub(crate) path: String,
}

impl At {
    fn of(node: &Node<'_, '_>) -> Self {
        Self {
            span: node.span.clone(),
            path: node.path.clone(),
        }
    }

    /// Field path of `key` in this table.
    pub(crate) fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

/// The whole document.
#[derive(Debug)]
pub(crate) struct RawConfig {
    pub(crate) cluster: Option<RawCluster>,
    pub(crate) services: Vec<RawService>,
    pub(crate) pools: Vec<RawPool>,
    pub(crate) health_checks: Vec<RawHealthCheck>,
    pub(crate) listeners: Vec<RawListener>,
    pub(crate) certificates: Vec<RawCertificate>,
    pub(crate) health: Option<RawHealth>,
    pub(crate) agent: Option<RawAgent>,
    pub(crate) host_groups: Vec<RawHostGroup>,
    pub(crate) classifier: Option<RawClassifier>,
    pub(crate) router: Option<RawRouter>,
    pub(crate) sessions: Option<crate::sessions::RawSessions>,
}

#[derive(Debug)]
pub(crate) struct RawCluster {
    pub(crate) at: At,
    pub(crate) id: Field<String>,
    pub(crate) secret_file: Field<String>,
    pub(crate) units: Vec<RawUnit>,
    /// Whether `units` was written (possibly empty).
    pub(crate) units_written: bool,
}

#[derive(Debug)]
pub(crate) struct RawUnit {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) id: Field<u32>,
    pub(crate) address: Field<IpAddr>,
    pub(crate) roles: Field<Vec<Spanned<Kw<Role>>>>,
    pub(crate) classifier: Field<String>,
    pub(crate) control_port: Field<u16>,
    pub(crate) admin: Field<SocketAddr>,
    pub(crate) forwarder: Option<RawForwarder>,
}

/// `[cluster.units.forwarder]`: the unit's packet path (forwarder and classifier side).
#[derive(Debug)]
pub(crate) struct RawForwarder {
    pub(crate) at: At,
    pub(crate) interfaces: Field<Vec<Spanned<String>>>,
    pub(crate) attach: Field<Kw<AttachPoint>>,
    pub(crate) max_flows: Field<u32>,
    pub(crate) nat_sources: Field<Vec<Spanned<IpAddr>>>,
    pub(crate) nat_ports: Field<String>,
    pub(crate) plumbing_port: Field<u16>,
}

/// `[classifier]`: route lifetimes.
#[derive(Debug)]
pub(crate) struct RawClassifier {
    pub(crate) at: At,
    pub(crate) tcp_idle_timeout: Field<Duration>,
    pub(crate) udp_idle_timeout: Field<Duration>,
    pub(crate) fin_linger: Field<Duration>,
    pub(crate) rst_linger: Field<Duration>,
}

/// `services[].firewall`.
#[derive(Debug)]
pub(crate) struct RawFirewall {
    pub(crate) at: At,
    pub(crate) allow: Field<Vec<Spanned<String>>>,
    pub(crate) deny: Field<Vec<Spanned<String>>>,
    pub(crate) new_connections_per_second: Field<u32>,
    pub(crate) burst: Field<u32>,
}

#[derive(Debug)]
pub(crate) struct RawService {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) vip: Field<SocketAddr>,
    pub(crate) protocol: Field<Kw<Protocol>>,
    pub(crate) mode: Field<Kw<ModeKind>>,
    pub(crate) delivery: Field<Kw<Delivery>>,
    pub(crate) pool: Field<String>,
    pub(crate) listener: Field<String>,
    pub(crate) affinity: Option<RawAffinity>,
    pub(crate) firewall: Option<RawFirewall>,
    pub(crate) routes: Vec<RawRoute>,
}

/// `[router]`: request limits of the request router.
#[derive(Debug)]
pub(crate) struct RawRouter {
    pub(crate) at: At,
    pub(crate) max_header_bytes: Field<u32>,
    pub(crate) max_headers: Field<u32>,
    pub(crate) header_read_timeout: Field<Duration>,
    pub(crate) max_body_bytes: Field<u32>,
    pub(crate) max_requests_per_client: Field<u32>,
    pub(crate) request_id_header: Field<String>,
    pub(crate) upstream: Option<RawUpstream>,
}

/// `[router.upstream]`: how the request router talks to hosts.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    pub(crate) at: At,
    pub(crate) connect_timeout: Field<Duration>,
    pub(crate) request_timeout: Field<Duration>,
    pub(crate) idle_timeout: Field<Duration>,
    pub(crate) max_connections_per_host: Field<u32>,
    pub(crate) retries: Field<u32>,
    pub(crate) http2: Field<bool>,
    pub(crate) outlier_errors: Field<u32>,
    pub(crate) outlier_ejection: Field<Duration>,
}

/// `[[services.routes]]`: one routing rule of a request-mode service.
#[derive(Debug)]
pub(crate) struct RawRoute {
    pub(crate) at: At,
    pub(crate) host: Field<String>,
    pub(crate) path: Field<String>,
    pub(crate) path_prefix: Field<String>,
    pub(crate) path_regex: Field<String>,
    pub(crate) methods: Field<Vec<Spanned<String>>>,
    pub(crate) headers: Vec<RawHeaderPair>,
    pub(crate) pool: Field<String>,
    pub(crate) rewrite_prefix: Field<String>,
    pub(crate) add_headers: Vec<RawHeaderPair>,
    pub(crate) remove_headers: Field<Vec<Spanned<String>>>,
    pub(crate) max_body_bytes: Field<u32>,
    pub(crate) cache: Option<RawRouteCache>,
}

/// `cache = { … }` on a route: the route's response cache.
#[derive(Debug)]
pub(crate) struct RawRouteCache {
    pub(crate) at: At,
    pub(crate) max_bytes: Field<i64>,
    pub(crate) max_object_bytes: Field<i64>,
    pub(crate) default_ttl: Field<Duration>,
}

/// `{ name = "…", value = "…" }` in a route's `headers` or `add_headers`.
#[derive(Debug)]
pub(crate) struct RawHeaderPair {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) value: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawAffinity {
    pub(crate) at: At,
    pub(crate) kind: Field<Kw<AffinityKind>>,
    pub(crate) timeout: Field<Duration>,
    pub(crate) cookie: Field<String>,
    pub(crate) header: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawPool {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) health_check: Field<String>,
    pub(crate) hosts: Vec<RawHost>,
    pub(crate) hosts_written: bool,
}

#[derive(Debug)]
pub(crate) struct RawHost {
    pub(crate) at: At,
    pub(crate) id: Field<u32>,
    pub(crate) name: Field<String>,
    pub(crate) address: Field<SocketAddr>,
    pub(crate) app: Field<String>,
    pub(crate) capacity: Field<u8>,
    pub(crate) systemd_unit: Field<String>,
    pub(crate) pidfile: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawHealthCheck {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) kind: Field<Kw<CheckKind>>,
    pub(crate) interval: Field<Duration>,
    pub(crate) timeout: Field<Duration>,
    pub(crate) rise: Field<u32>,
    pub(crate) fall: Field<u32>,
    pub(crate) path: Field<String>,
    pub(crate) expect_status: Field<u16>,
    pub(crate) body_contains: Field<String>,
    pub(crate) command: Field<Vec<Spanned<String>>>,
}

/// `[health]`: timing of the health and load protocol.
#[derive(Debug)]
pub(crate) struct RawHealth {
    pub(crate) at: At,
    pub(crate) heartbeat_interval: Field<Duration>,
    pub(crate) host_dead_after: Field<Duration>,
    pub(crate) load_interval: Field<Duration>,
    pub(crate) postulate_delay: Field<Duration>,
    pub(crate) postulate_interval: Field<Duration>,
    pub(crate) unit_give_up_after: Field<Duration>,
    pub(crate) token_validity: Field<Duration>,
    pub(crate) percentage_duration: Field<Duration>,
    pub(crate) load_hysteresis: Field<u8>,
    pub(crate) load_smoothing: Field<f64>,
}

/// `[agent]`: process-level settings of `switchyard agent`.
#[derive(Debug)]
pub(crate) struct RawAgent {
    pub(crate) at: At,
    pub(crate) listen: Field<SocketAddr>,
    pub(crate) api: Field<SocketAddr>,
    pub(crate) socket: Field<String>,
    pub(crate) unit_acts: Field<bool>,
}

/// `[[host_groups]]`.
#[derive(Debug)]
pub(crate) struct RawHostGroup {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) hosts: Field<Vec<Spanned<String>>>,
    pub(crate) gossip_port: Field<u16>,
}

#[derive(Debug)]
pub(crate) struct RawListener {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) address: Field<SocketAddr>,
    pub(crate) protocol: Field<Kw<ListenerKind>>,
    pub(crate) certificates: Field<Vec<Spanned<String>>>,
}

#[derive(Debug)]
pub(crate) struct RawCertificate {
    pub(crate) at: At,
    pub(crate) name: Field<String>,
    pub(crate) cert_file: Field<String>,
    pub(crate) key_file: Field<String>,
    pub(crate) server_names: Field<Vec<Spanned<String>>>,
}

/// Reads the document, reporting every unknown field, type error and missing field.
pub(crate) fn read(root: &DeTable<'_>, sink: &mut Sink) -> RawConfig {
    let root = Node::root(root);
    root.check_fields(
        sink,
        "the configuration",
        &[
            "cluster",
            "services",
            "pools",
            "health_checks",
            "listeners",
            "tls",
            "certificates",
            "health",
            "agent",
            "host_groups",
            "classifier",
            "router",
            "sessions",
        ],
    );
    let cluster = match root.table(sink, "cluster") {
        Some(node) => Some(read_cluster(&node, sink)),
        None => {
            if !root.has("cluster") {
                sink.error(
                    codes::MISSING_FIELD,
                    &(0..0),
                    "cluster",
                    "the configuration has no [cluster] table",
                    Some("add a [cluster] table with `id`, `secret_file` and at least one [[cluster.units]]".to_owned()),
                );
            }
            None
        }
    };
    let mut certificate_nodes = Vec::new();
    if let Some(tls) = root.table(sink, "tls") {
        tls.check_fields(sink, "[tls]", &["certificates"]);
        certificate_nodes.extend(tls.tables(sink, "certificates"));
    }
    if !certificate_nodes.is_empty()
        && let Some(span) = root.value_span("certificates")
    {
        sink.error(
            codes::CONFLICTING_SETTINGS,
            &span,
            "certificates",
            "certificates are defined both as [[certificates]] and as [[tls.certificates]]",
            Some("keep one of the two spellings".to_owned()),
        );
    }
    certificate_nodes.extend(root.tables(sink, "certificates"));
    RawConfig {
        cluster,
        services: root
            .tables(sink, "services")
            .iter()
            .map(|n| read_service(n, sink))
            .collect(),
        pools: root
            .tables(sink, "pools")
            .iter()
            .map(|n| read_pool(n, sink))
            .collect(),
        health_checks: root
            .tables(sink, "health_checks")
            .iter()
            .map(|n| read_health_check(n, sink))
            .collect(),
        listeners: root
            .tables(sink, "listeners")
            .iter()
            .map(|n| read_listener(n, sink))
            .collect(),
        certificates: certificate_nodes
            .iter()
            .map(|n| read_certificate(n, sink))
            .collect(),
        health: root.table(sink, "health").map(|n| read_health(&n, sink)),
        agent: root.table(sink, "agent").map(|n| read_agent(&n, sink)),
        host_groups: root
            .tables(sink, "host_groups")
            .iter()
            .map(|n| read_host_group(n, sink))
            .collect(),
        classifier: root
            .table(sink, "classifier")
            .map(|n| read_classifier(&n, sink)),
        router: root.table(sink, "router").map(|n| read_router(&n, sink)),
        sessions: root
            .table(sink, "sessions")
            .map(|n| crate::sessions::read(&n, sink)),
    }
}

fn read_router(node: &Node<'_, '_>, sink: &mut Sink) -> RawRouter {
    node.check_fields(
        sink,
        "[router]",
        &[
            "max_header_bytes",
            "max_headers",
            "header_read_timeout",
            "max_body_bytes",
            "max_requests_per_client",
            "request_id_header",
            "upstream",
        ],
    );
    RawRouter {
        at: At::of(node),
        max_header_bytes: node.integer(sink, "max_header_bytes", 1024, 1024 * 1024),
        max_headers: node.integer(sink, "max_headers", 1, 10_000),
        header_read_timeout: node.optional(sink, "header_read_timeout"),
        max_body_bytes: node.integer(sink, "max_body_bytes", 0, u32::MAX),
        max_requests_per_client: node.integer(sink, "max_requests_per_client", 1, u32::MAX),
        request_id_header: node.optional(sink, "request_id_header"),
        upstream: node
            .table(sink, "upstream")
            .map(|n| read_upstream(&n, sink)),
    }
}

fn read_upstream(node: &Node<'_, '_>, sink: &mut Sink) -> RawUpstream {
    node.check_fields(
        sink,
        "[router.upstream]",
        &[
            "connect_timeout",
            "request_timeout",
            "idle_timeout",
            "max_connections_per_host",
            "retries",
            "http2",
            "outlier_errors",
            "outlier_ejection",
        ],
    );
    RawUpstream {
        at: At::of(node),
        connect_timeout: node.optional(sink, "connect_timeout"),
        request_timeout: node.optional(sink, "request_timeout"),
        idle_timeout: node.optional(sink, "idle_timeout"),
        max_connections_per_host: node.integer(sink, "max_connections_per_host", 1, 100_000),
        retries: node.integer(sink, "retries", 0, 10),
        http2: node.optional(sink, "http2"),
        outlier_errors: node.integer(sink, "outlier_errors", 1, 1_000_000),
        outlier_ejection: node.optional(sink, "outlier_ejection"),
    }
}

fn read_route(node: &Node<'_, '_>, sink: &mut Sink) -> RawRoute {
    const WHAT: &str = "route";
    node.check_fields(
        sink,
        WHAT,
        &[
            "host",
            "path",
            "path_prefix",
            "path_regex",
            "methods",
            "headers",
            "pool",
            "rewrite_prefix",
            "add_headers",
            "remove_headers",
            "max_body_bytes",
            "cache",
        ],
    );
    let pairs = |key: &str, sink: &mut Sink| -> Vec<RawHeaderPair> {
        node.tables(sink, key)
            .iter()
            .map(|h| {
                h.check_fields(sink, "header", &["name", "value"]);
                RawHeaderPair {
                    at: At::of(h),
                    name: h.required(sink, "header", "name"),
                    value: h.optional(sink, "value"),
                }
            })
            .collect()
    };
    RawRoute {
        at: At::of(node),
        host: node.optional(sink, "host"),
        path: node.optional(sink, "path"),
        path_prefix: node.optional(sink, "path_prefix"),
        path_regex: node.optional(sink, "path_regex"),
        methods: node.optional(sink, "methods"),
        headers: pairs("headers", sink),
        pool: node.required(sink, WHAT, "pool"),
        rewrite_prefix: node.optional(sink, "rewrite_prefix"),
        add_headers: pairs("add_headers", sink),
        remove_headers: node.optional(sink, "remove_headers"),
        max_body_bytes: node.integer(sink, "max_body_bytes", 0, u32::MAX),
        cache: node.table(sink, "cache").map(|c| {
            c.check_fields(
                sink,
                "cache",
                &["max_bytes", "max_object_bytes", "default_ttl"],
            );
            RawRouteCache {
                at: At::of(&c),
                max_bytes: c.integer(sink, "max_bytes", 1024, 1 << 40),
                max_object_bytes: c.integer(sink, "max_object_bytes", 1, 1 << 40),
                default_ttl: c.optional(sink, "default_ttl"),
            }
        }),
    }
}

fn read_cluster(node: &Node<'_, '_>, sink: &mut Sink) -> RawCluster {
    const WHAT: &str = "[cluster]";
    node.check_fields(sink, WHAT, &["id", "secret_file", "units"]);
    let units_written = node.has("units");
    if !units_written {
        node.missing(sink, WHAT, "units");
    }
    RawCluster {
        at: At::of(node),
        id: node.required(sink, WHAT, "id"),
        secret_file: node.required(sink, WHAT, "secret_file"),
        units: node
            .tables(sink, "units")
            .iter()
            .map(|n| read_unit(n, sink))
            .collect(),
        units_written,
    }
}

fn read_unit(node: &Node<'_, '_>, sink: &mut Sink) -> RawUnit {
    const WHAT: &str = "unit";
    node.check_fields(
        sink,
        WHAT,
        &[
            "name",
            "id",
            "address",
            "roles",
            "classifier",
            "control_port",
            "admin",
            "forwarder",
        ],
    );
    let id = node.integer(sink, "id", 0, u32::MAX);
    if !id.is_written() {
        node.missing(sink, WHAT, "id");
    }
    RawUnit {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        id,
        address: node.required(sink, WHAT, "address"),
        roles: node.required(sink, WHAT, "roles"),
        classifier: node.optional(sink, "classifier"),
        control_port: node.integer(sink, "control_port", 1, u16::MAX),
        admin: node.optional(sink, "admin"),
        forwarder: node
            .table(sink, "forwarder")
            .map(|n| read_forwarder(&n, sink)),
    }
}

fn read_forwarder(node: &Node<'_, '_>, sink: &mut Sink) -> RawForwarder {
    node.check_fields(
        sink,
        "forwarder settings",
        &[
            "interfaces",
            "attach",
            "max_flows",
            "nat_sources",
            "nat_ports",
            "plumbing_port",
        ],
    );
    RawForwarder {
        at: At::of(node),
        interfaces: node.optional(sink, "interfaces"),
        attach: node.optional(sink, "attach"),
        max_flows: node.integer(sink, "max_flows", 1, u32::MAX),
        nat_sources: node.optional(sink, "nat_sources"),
        nat_ports: node.optional(sink, "nat_ports"),
        plumbing_port: node.integer(sink, "plumbing_port", 1, u16::MAX),
    }
}

fn read_classifier(node: &Node<'_, '_>, sink: &mut Sink) -> RawClassifier {
    node.check_fields(
        sink,
        "[classifier]",
        &[
            "tcp_idle_timeout",
            "udp_idle_timeout",
            "fin_linger",
            "rst_linger",
        ],
    );
    RawClassifier {
        at: At::of(node),
        tcp_idle_timeout: node.optional(sink, "tcp_idle_timeout"),
        udp_idle_timeout: node.optional(sink, "udp_idle_timeout"),
        fin_linger: node.optional(sink, "fin_linger"),
        rst_linger: node.optional(sink, "rst_linger"),
    }
}

fn read_service(node: &Node<'_, '_>, sink: &mut Sink) -> RawService {
    const WHAT: &str = "service";
    node.check_fields(
        sink,
        WHAT,
        &[
            "name", "vip", "protocol", "mode", "delivery", "pool", "listener", "affinity",
            "firewall", "routes",
        ],
    );
    let firewall = node.table(sink, "firewall").map(|f| {
        f.check_fields(
            sink,
            "firewall",
            &["allow", "deny", "new_connections_per_second", "burst"],
        );
        RawFirewall {
            at: At::of(&f),
            allow: f.optional(sink, "allow"),
            deny: f.optional(sink, "deny"),
            new_connections_per_second: f.integer(sink, "new_connections_per_second", 1, u32::MAX),
            burst: f.integer(sink, "burst", 1, u32::MAX),
        }
    });
    let affinity = node.table(sink, "affinity").map(|a| {
        const WHAT: &str = "affinity";
        a.check_fields(sink, WHAT, &["kind", "timeout", "cookie", "header"]);
        RawAffinity {
            at: At::of(&a),
            kind: a.required(sink, WHAT, "kind"),
            timeout: a.optional(sink, "timeout"),
            cookie: a.optional(sink, "cookie"),
            header: a.optional(sink, "header"),
        }
    });
    RawService {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        vip: node.required(sink, WHAT, "vip"),
        protocol: node.required(sink, WHAT, "protocol"),
        mode: node.required(sink, WHAT, "mode"),
        delivery: node.optional(sink, "delivery"),
        pool: node.required(sink, WHAT, "pool"),
        listener: node.optional(sink, "listener"),
        affinity,
        firewall,
        routes: node
            .tables(sink, "routes")
            .iter()
            .map(|n| read_route(n, sink))
            .collect(),
    }
}

fn read_pool(node: &Node<'_, '_>, sink: &mut Sink) -> RawPool {
    const WHAT: &str = "pool";
    node.check_fields(sink, WHAT, &["name", "health_check", "hosts"]);
    let hosts_written = node.has("hosts");
    RawPool {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        health_check: node.optional(sink, "health_check"),
        hosts: node
            .tables(sink, "hosts")
            .iter()
            .map(|n| read_host(n, sink))
            .collect(),
        hosts_written,
    }
}

fn read_host(node: &Node<'_, '_>, sink: &mut Sink) -> RawHost {
    const WHAT: &str = "host";
    node.check_fields(
        sink,
        WHAT,
        &[
            "id",
            "name",
            "address",
            "app",
            "capacity",
            "systemd_unit",
            "pidfile",
        ],
    );
    let id = node.integer(sink, "id", 0, u32::MAX);
    if !id.is_written() {
        node.missing(sink, WHAT, "id");
    }
    RawHost {
        at: At::of(node),
        id,
        name: node.required(sink, WHAT, "name"),
        address: node.required(sink, WHAT, "address"),
        app: node.required(sink, WHAT, "app"),
        capacity: node.integer(sink, "capacity", 0, 99),
        systemd_unit: node.optional(sink, "systemd_unit"),
        pidfile: node.optional(sink, "pidfile"),
    }
}

fn read_health_check(node: &Node<'_, '_>, sink: &mut Sink) -> RawHealthCheck {
    const WHAT: &str = "health check";
    node.check_fields(
        sink,
        WHAT,
        &[
            "name",
            "kind",
            "interval",
            "timeout",
            "rise",
            "fall",
            "path",
            "expect_status",
            "body_contains",
            "command",
        ],
    );
    RawHealthCheck {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        kind: node.required(sink, WHAT, "kind"),
        interval: node.optional(sink, "interval"),
        timeout: node.optional(sink, "timeout"),
        rise: node.integer(sink, "rise", 1, u32::MAX),
        fall: node.integer(sink, "fall", 1, u32::MAX),
        path: node.optional(sink, "path"),
        expect_status: node.integer(sink, "expect_status", 100, 599),
        body_contains: node.optional(sink, "body_contains"),
        command: node.optional(sink, "command"),
    }
}

fn read_health(node: &Node<'_, '_>, sink: &mut Sink) -> RawHealth {
    node.check_fields(
        sink,
        "[health]",
        &[
            "heartbeat_interval",
            "host_dead_after",
            "load_interval",
            "postulate_delay",
            "postulate_interval",
            "unit_give_up_after",
            "token_validity",
            "percentage_duration",
            "load_hysteresis",
            "load_smoothing",
        ],
    );
    RawHealth {
        at: At::of(node),
        heartbeat_interval: node.optional(sink, "heartbeat_interval"),
        host_dead_after: node.optional(sink, "host_dead_after"),
        load_interval: node.optional(sink, "load_interval"),
        postulate_delay: node.optional(sink, "postulate_delay"),
        postulate_interval: node.optional(sink, "postulate_interval"),
        unit_give_up_after: node.optional(sink, "unit_give_up_after"),
        token_validity: node.optional(sink, "token_validity"),
        percentage_duration: node.optional(sink, "percentage_duration"),
        load_hysteresis: node.integer(sink, "load_hysteresis", 0, 50),
        load_smoothing: node.optional(sink, "load_smoothing"),
    }
}

fn read_agent(node: &Node<'_, '_>, sink: &mut Sink) -> RawAgent {
    node.check_fields(sink, "[agent]", &["listen", "api", "socket", "unit_acts"]);
    RawAgent {
        at: At::of(node),
        listen: node.optional(sink, "listen"),
        api: node.optional(sink, "api"),
        socket: node.optional(sink, "socket"),
        unit_acts: node.optional(sink, "unit_acts"),
    }
}

fn read_host_group(node: &Node<'_, '_>, sink: &mut Sink) -> RawHostGroup {
    const WHAT: &str = "host group";
    node.check_fields(sink, WHAT, &["name", "hosts", "gossip_port"]);
    RawHostGroup {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        hosts: node.required(sink, WHAT, "hosts"),
        gossip_port: node.integer(sink, "gossip_port", 1, u16::MAX),
    }
}

fn read_listener(node: &Node<'_, '_>, sink: &mut Sink) -> RawListener {
    const WHAT: &str = "listener";
    node.check_fields(sink, WHAT, &["name", "address", "protocol", "certificates"]);
    RawListener {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        address: node.required(sink, WHAT, "address"),
        protocol: node.required(sink, WHAT, "protocol"),
        certificates: node.optional(sink, "certificates"),
    }
}

fn read_certificate(node: &Node<'_, '_>, sink: &mut Sink) -> RawCertificate {
    const WHAT: &str = "certificate";
    node.check_fields(
        sink,
        WHAT,
        &["name", "cert_file", "key_file", "server_names"],
    );
    RawCertificate {
        at: At::of(node),
        name: node.required(sink, WHAT, "name"),
        cert_file: node.required(sink, WHAT, "cert_file"),
        key_file: node.required(sink, WHAT, "key_file"),
        server_names: node.required(sink, WHAT, "server_names"),
    }
}
