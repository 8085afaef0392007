//! The validated configuration: owns the typed model every switchyard role reads
//! ([`Config`] and its parts) and its lookups. Values here are already checked: names are
//! unique, references resolve, ranges hold. Building it is `validate`'s job, not this module's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::ClusterSecret;

/// A whole, validated switchyard configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file this was loaded from (as the caller named it).
    pub source: PathBuf,
    /// Cluster identity, secret and load balancing units.
    pub cluster: Cluster,
    /// Virtual services, in file order.
    pub services: Vec<Service>,
    /// Host pools, in file order.
    pub pools: Vec<Pool>,
    /// Health checks, in file order.
    pub health_checks: Vec<HealthCheck>,
    /// Request-router listeners, in file order.
    pub listeners: Vec<Listener>,
    /// TLS certificates, in file order.
    pub certificates: Vec<Certificate>,
    /// Timing of the health and load protocol (`[health]`, all defaults when absent).
    pub health: HealthSettings,
    /// Process-level settings of `switchyard agent` (`[agent]`, all defaults when absent).
    pub agent: AgentSettings,
    /// Host groups that elect a leader to consolidate heartbeats, in file order; usually
    /// none.
    pub host_groups: Vec<HostGroup>,
    /// Route lifetimes of the classifier role (`[classifier]`, all defaults when absent).
    pub classifier: ClassifierSettings,
    /// Per-service firewalls (`services[].firewall`), by service name; services without one
    /// are absent.
    pub firewalls: BTreeMap<String, Firewall>,
    /// Settings of the request router role (`[router]`, all defaults when absent).
    pub router: crate::router::RouterSettings,
    /// Routing rules of request-mode services (`services[].routes`), by service name;
    /// services without rules are absent.
    pub routes: BTreeMap<String, Vec<crate::router::Route>>,
    /// Session tracking and the DAM (`[sessions]`, all defaults when absent).
    pub sessions: crate::sessions::SessionSettings,
}

impl Config {
    /// The unit called `name`.
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.cluster.units.iter().find(|u| u.name == name)
    }

    /// The unit with id `id`.
    pub fn unit_by_id(&self, id: UnitId) -> Option<&Unit> {
        self.cluster.units.iter().find(|u| u.id == id)
    }

    /// The units that have `role`.
    pub fn units_with_role(&self, role: Role) -> impl Iterator<Item = &Unit> {
        self.cluster.units.iter().filter(move |u| u.has_role(role))
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pool a service sends to (always present in a validated configuration).
    pub fn pool_of(&self, service: &Service) -> Option<&Pool> {
        self.pool(&service.pool)
    }

    /// The host with id `id`, with the pool it belongs to.
    pub fn host(&self, id: HostId) -> Option<(&Pool, &Host)> {
        self.pools
            .iter()
            .find_map(|p| p.hosts.iter().find(|h| h.id == id).map(|h| (p, h)))
    }

    /// The health check called `name`.
    pub fn health_check(&self, name: &str) -> Option<&HealthCheck> {
        self.health_checks.iter().find(|c| c.name == name)
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The certificate called `name`.
    pub fn certificate(&self, name: &str) -> Option<&Certificate> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// Timing of the health and load protocol.
    pub fn health_settings(&self) -> &HealthSettings {
        &self.health
    }

    /// Settings of the `switchyard agent` process.
    pub fn agent_settings(&self) -> &AgentSettings {
        &self.agent
    }

    /// Route lifetimes of the classifier role.
    pub fn classifier_settings(&self) -> &ClassifierSettings {
        &self.classifier
    }

    /// The firewall of `service`, if it has one.
    pub fn firewall(&self, service: &Service) -> Option<&Firewall> {
        self.firewalls.get(&service.name)
    }

    /// The routing rules of `service`, in file order; empty when it has none.
    pub fn routes(&self, service: &Service) -> &[crate::router::Route] {
        self.routes.get(&service.name).map_or(&[], Vec::as_slice)
    }

    /// The request-mode services that accept connections at the listener `name`, in file
    /// order.
    pub fn services_of_listener<'c>(
        &'c self,
        name: &'c str,
    ) -> impl Iterator<Item = &'c Service> + 'c {
        self.services.iter().filter(
            move |s| matches!(&s.mode, ServiceMode::Request { listener } if listener == name),
        )
    }

    /// The unit that classifies the new connections `forwarder` sees: itself when it has
    /// the classifier role, else the unit its `classifier` names.
    pub fn classifier_of<'c>(&'c self, forwarder: &'c Unit) -> Option<&'c Unit> {
        if forwarder.has_role(Role::Classifier) {
            return Some(forwarder);
        }
        forwarder.classifier.as_deref().and_then(|n| self.unit(n))
    }

    /// The host called `name`, with the pool it belongs to.
    pub fn host_by_name(&self, name: &str) -> Option<(&Pool, &Host)> {
        self.pools
            .iter()
            .find_map(|p| p.hosts.iter().find(|h| h.name == name).map(|h| (p, h)))
    }

    /// Every service that `host` serves, with the host's pool: the services whose pool, or
    /// one of whose routes' pools, holds the host, in file order.
    pub fn services_of_host<'c>(
        &'c self,
        host: &'c Host,
    ) -> impl Iterator<Item = (&'c Service, &'c Pool, &'c Host)> + 'c {
        self.services.iter().filter_map(move |service| {
            // The service's own pool first, then the pools its routes send to.
            let pools = std::iter::once(service.pool.as_str())
                .chain(self.routes(service).iter().map(|r| r.pool.as_str()));
            pools
                .filter_map(|name| self.pool(name))
                .find(|pool| pool.hosts.iter().any(|h| h.id == host.id))
                .map(|pool| (service, pool, host))
        })
    }

    /// The rows the host agent of host `host_name` owns: one per service whose pool, or one
    /// of whose routes' pools, holds the host, in service order, each with that pool's
    /// health check and the host's capacity and service manager. Empty if there is no such
    /// host or no service sends to its pool.
    pub fn agent_apps(&self, host_name: &str) -> Vec<AgentApp> {
        let Some((_, host)) = self.host_by_name(host_name) else {
            return Vec::new();
        };
        self.services_of_host(host)
            .map(|(service, pool, host)| AgentApp {
                host: host.id,
                host_name: host.name.clone(),
                service: service.name.clone(),
                vip: service.vip,
                protocol: service.protocol,
                endpoint: host.address,
                app: host.app.clone(),
                capacity: host.capacity,
                health_check: pool
                    .health_check
                    .as_deref()
                    .and_then(|name| self.health_check(name))
                    .cloned(),
                service_manager: host.service_manager.clone(),
            })
            .collect()
    }

    /// The host group called `name`.
    pub fn host_group(&self, name: &str) -> Option<&HostGroup> {
        self.host_groups.iter().find(|g| g.name == name)
    }

    /// The host group the host called `host_name` belongs to, if any.
    pub fn host_group_of(&self, host_name: &str) -> Option<&HostGroup> {
        self.host_groups
            .iter()
            .find(|g| g.hosts.iter().any(|h| h == host_name))
    }

    /// One line for logs and `check-config`, e.g.
    /// `cluster demo: 1 unit, 2 services, 1 pool (3 hosts), 1 check, 1 listener`.
    /// Certificates and host groups are mentioned only when there are some.
    pub fn summary(&self) -> String {
        let hosts: usize = self.pools.iter().map(|p| p.hosts.len()).sum();
        let mut line = format!(
            "cluster {}: {}, {}, {} ({}), {}, {}",
            self.cluster.id,
            counted(self.cluster.units.len(), "unit", "units"),
            counted(self.services.len(), "service", "services"),
            counted(self.pools.len(), "pool", "pools"),
            counted(hosts, "host", "hosts"),
            counted(self.health_checks.len(), "check", "checks"),
            counted(self.listeners.len(), "listener", "listeners"),
        );
        if !self.certificates.is_empty() {
            line.push_str(", ");
            line.push_str(&counted(
                self.certificates.len(),
                "certificate",
                "certificates",
            ));
        }
        if !self.host_groups.is_empty() {
            line.push_str(", ");
            line.push_str(&counted(
                self.host_groups.len(),
                "host group",
                "host groups",
            ));
        }
        line
    }
}

fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Cluster-wide settings.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Cluster name; control messages of other clusters are ignored.
    pub id: String,
    /// Where the secret was read from (resolved against the configuration's directory).
    pub secret_file: PathBuf,
    /// Key authenticating all control traffic.
    pub secret: ClusterSecret,
    /// The load balancing units, in file order.
    pub units: Vec<Unit>,
}

// Unit and host ids, and the transport protocol, are the wire protocol's own types: hosts and
// units sign control messages with these ids, so configuration and protocol share one type.
pub use switchyard_wire::{HostId, Protocol, UnitId};

/// A load balancing unit: one machine (or process) running some of the roles.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Unit name, unique in the cluster.
    pub name: String,
    /// Unit id, unique in the cluster.
    pub id: UnitId,
    /// Control-plane address other units and hosts reach it at.
    pub address: IpAddr,
    /// Roles it runs, in the order written; never empty, no duplicates.
    pub roles: Vec<Role>,
    /// For a unit that forwards but does not classify: the unit that classifies for it.
    pub classifier: Option<String>,
    /// UDP port of the health and load protocol on this unit (default 9170).
    pub control_port: u16,
    /// Address of the unit's admin HTTP API (default `127.0.0.1:9180`).
    pub admin: SocketAddr,
    /// Its packet path: interfaces, attach point, table size, NAT sources, plumbing port
    /// (`[cluster.units.forwarder]`; defaults with no interfaces when absent).
    pub forwarder: ForwarderSettings,
}

/// Where the forwarder's BPF program is attached on each interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachPoint {
    /// XDP (native, generic as a logged fallback): fastest per packet, but on veth it turns
    /// GRO/TSO off on the peer, which costs bulk TCP about two thirds of its throughput.
    Xdp,
    /// tc ingress: sees GRO/GSO packets and keeps offloads; the default.
    Tc,
    /// XDP as the fast path with tc behind it.
    XdpAndTc,
}

/// An inclusive port range, `first` ≤ `last`, never including 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpan {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortSpan {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A unit's packet path (`[cluster.units.forwarder]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderSettings {
    /// Interfaces the forwarder attaches to (VIP traffic in, host traffic out and back);
    /// empty when the table is absent, and then the forwarder role does not start.
    pub interfaces: Vec<String>,
    /// Where to attach (default tc).
    pub attach: AttachPoint,
    /// Capacity of the routing table (default 1,000,000 flows).
    pub max_flows: u32,
    /// Full-NAT source addresses, on the unit that classifies; they must route to the
    /// forwarder(s) it classifies for.
    pub nat_sources: Vec<IpAddr>,
    /// Full-NAT source ports (default 20000-32767); keep it outside the unit's ephemeral
    /// range.
    pub nat_ports: PortSpan,
    /// UDP port of route plumbing (misses, final packets, add/delete route) between
    /// forwarder and classifier units (default 9173).
    pub plumbing_port: u16,
}

impl Default for ForwarderSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            attach: AttachPoint::Tc,
            max_flows: 1_000_000,
            nat_sources: Vec::new(),
            nat_ports: PortSpan {
                first: 20_000,
                last: 32_767,
            },
            plumbing_port: 9173,
        }
    }
}

impl Unit {
    /// Where route plumbing reaches this unit (UDP).
    pub fn plumbing_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.forwarder.plumbing_port)
    }
}

/// Route lifetimes of the classifier role (`[classifier]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierSettings {
    /// Routes of TCP flows idle this long are deleted (default 15 min).
    pub tcp_idle_timeout: Duration,
    /// Routes of UDP flows idle this long are deleted (default 30 s).
    pub udp_idle_timeout: Duration,
    /// How long a route stays after a FIN (default 10 s).
    pub fin_linger: Duration,
    /// How long a route stays after an RST (default 2 s).
    pub rst_linger: Duration,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            tcp_idle_timeout: Duration::from_secs(15 * 60),
            udp_idle_timeout: Duration::from_secs(30),
            fin_linger: Duration::from_secs(10),
            rst_linger: Duration::from_secs(2),
        }
    }
}

/// An address prefix, e.g. `198.18.0.0/15`; host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length (0–32 for IPv4, 0–128 for IPv6).
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A packet service's firewall, enforced by the forwarder: sources in `deny` are dropped;
/// when `allow` is not empty only sources in it pass; each source may open at most
/// `new_connections_per_second` new connections (a token bucket of `burst`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Firewall {
    /// Source prefixes allowed (empty: all).
    pub allow: Vec<Prefix>,
    /// Source prefixes denied (checked first).
    pub deny: Vec<Prefix>,
    /// New connections per second per source address, if limited.
    pub new_connections_per_second: Option<u32>,
    /// Bucket size of the limit (default: the rate).
    pub burst: Option<u32>,
}

impl Unit {
    /// Whether this unit runs `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Where host agents send health and load messages to this unit: its control-plane
    /// address and control port.
    pub fn control_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.control_port)
    }
}

/// What a load balancing unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Owns VIPs; forwards packets along its routing table, misses go to its classifier.
    Forwarder,
    /// Picks a host for each new connection and plumbs the route into forwarders.
    Classifier,
    /// Terminates HTTP/TLS and routes each request.
    Router,
    /// Holds a share of the distributed session table.
    SessionStore,
    /// Holds the consolidated health and load cache.
    HealthCache,
}

/// How packets reach a host after the forwarder picked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Destination NAT both ways; replies come back through the forwarder.
    Nat,
    /// Destination NAT on the way in; hosts reply to the client directly.
    HalfNat,
    /// Zero-overhead tunnel; the host restores the original 4-tuple and replies directly.
    Tunnel,
}

/// How a service is balanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceMode {
    /// Per-connection, packet level: forwarder and classifier.
    Packet {
        /// How packets reach the host.
        delivery: Delivery,
    },
    /// Per-request: a request router terminates the connection at `listener`.
    Request {
        /// Name of the listener that accepts the service's connections.
        listener: String,
    },
    /// The classifier reads the first bytes, picks a host, then migrates the live TCP
    /// connection to it.
    Migrate {
        /// How later packets reach the host.
        delivery: Delivery,
    },
}

/// A virtual service: a VIP, how to balance it, and the pool behind it.
#[derive(Debug, Clone)]
pub struct Service {
    /// Service name, unique.
    pub name: String,
    /// Virtual IP and port clients connect to.
    pub vip: SocketAddr,
    /// IP protocol.
    pub protocol: Protocol,
    /// Balancing mode and its mode-specific settings.
    pub mode: ServiceMode,
    /// Name of the pool of hosts that serve it.
    pub pool: String,
    /// Session affinity.
    pub affinity: Affinity,
}

/// Session affinity of a service: which clients stick to which host, and for how long
/// after their last activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// Every new connection is balanced afresh.
    None,
    /// By client IP address.
    ClientIp {
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
    /// By the full TCP/UDP 4-tuple.
    FourTuple {
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
    /// By an HTTP cookie.
    Cookie {
        /// Cookie name.
        name: String,
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
    /// By the application's own session cookie (request mode): the host that reported the
    /// cookie's session through session tracking, looked up in the DAM by the router.
    AppCookie {
        /// Cookie name (e.g. `JSESSIONID`).
        name: String,
        /// Accepted like the other kinds' timeouts; the router records nothing for
        /// application cookies, so the binding lasts as long as the host's reported session
        /// (until its session down and zombie time).
        timeout: Duration,
    },
    /// By TLS session id or ticket.
    TlsSession {
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
    /// By the value of an HTTP request header.
    Header {
        /// Header name.
        name: String,
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
}

impl Affinity {
    /// The idle timeout, for every kind but `None`.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Self::None => None,
            Self::ClientIp { timeout }
            | Self::FourTuple { timeout }
            | Self::Cookie { timeout, .. }
            | Self::AppCookie { timeout, .. }
            | Self::TlsSession { timeout }
            | Self::Header { timeout, .. } => Some(*timeout),
        }
    }
}

/// A pool of hosts that serve one or more services.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Pool name, unique.
    pub name: String,
    /// Name of the health check run against its hosts, if any.
    pub health_check: Option<String>,
    /// Hosts, in file order; never empty.
    pub hosts: Vec<Host>,
}

/// One application endpoint.
#[derive(Debug, Clone)]
pub struct Host {
    /// Host id, unique in the configuration.
    pub id: HostId,
    /// Host name, unique in the configuration.
    pub name: String,
    /// Where the application listens.
    pub address: SocketAddr,
    /// Application id, as the host agent reports it.
    pub app: String,
    /// Relative capacity, 0..=99 (0 takes no new load).
    pub capacity: u8,
    /// When set, the host's rows exist only while the service manager says the application
    /// runs.
    pub service_manager: Option<ServiceManager>,
}

/// What tells the host agent whether a host's application runs: Linux's counterpart of the
/// spec's control manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceManager {
    /// A systemd unit; the application runs while the unit is active or reloading.
    Systemd {
        /// Unit name, e.g. `nginx.service`.
        unit: String,
    },
    /// A pid file; the application runs while the process it names is alive.
    Pidfile {
        /// The pid file (resolved against the configuration's directory).
        path: PathBuf,
    },
}

/// One row a host agent owns: the application endpoint of one host behind one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentApp {
    /// The host (the sender id of the agent's messages).
    pub host: HostId,
    /// The host's name.
    pub host_name: String,
    /// The service's name.
    pub service: String,
    /// The service's virtual address and port.
    pub vip: SocketAddr,
    /// The service's protocol.
    pub protocol: Protocol,
    /// Where the application listens on the host.
    pub endpoint: SocketAddr,
    /// Application id (protocol-specific detail of the row's identifier).
    pub app: String,
    /// Relative capacity, 0..=99.
    pub capacity: u8,
    /// The check the agent runs against `endpoint`, if the pool has one.
    pub health_check: Option<HealthCheck>,
    /// The service manager that decides whether the row exists, if the host has one.
    pub service_manager: Option<ServiceManager>,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Check name, unique.
    pub name: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take; always below `interval`.
    pub timeout: Duration,
    /// Consecutive successes that mark a host healthy (≥ 1).
    pub rise: u32,
    /// Consecutive failures that mark a host unhealthy (≥ 1).
    pub fall: u32,
    /// What a probe does.
    pub probe: Probe,
}

/// What one health probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Open a TCP connection to the host's address.
    Tcp,
    /// Send `GET path` and expect a status (and optionally a body fragment).
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Expected status code, 100..=599.
        expect_status: u16,
        /// Text the response body must contain.
        body_contains: Option<String>,
    },
    /// Run a command; exit status 0 means healthy.
    Exec {
        /// Program and arguments; never empty.
        command: Vec<String>,
    },
}

/// A request-router listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Listener name, unique.
    pub name: String,
    /// Address it accepts connections on.
    pub address: SocketAddr,
    /// Protocol spoken on it.
    pub protocol: ListenerProtocol,
}

/// Protocol of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 in clear text.
    Http,
    /// HTTP/1.1 and HTTP/2 over TLS; the certificate is chosen by SNI.
    Https {
        /// Names of the certificates offered; never empty.
        certificates: Vec<String>,
    },
    /// HTTP/2 in clear text (prior knowledge).
    H2c,
}

/// A TLS certificate chain and its key.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Certificate name, unique.
    pub name: String,
    /// PEM file with the certificate chain (resolved against the configuration's directory).
    pub cert_file: PathBuf,
    /// PEM file with the private key (resolved against the configuration's directory).
    pub key_file: PathBuf,
    /// SNI names it is offered for; `*.example.com` wildcards allowed; never empty.
    pub server_names: Vec<String>,
}

/// Timing of the health and load protocol (`[health]`), shared by host agents and LB units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// Time between a host's heartbeats.
    pub heartbeat_interval: Duration,
    /// A host that sent no heartbeat for this long ages out (≥ 2 × `heartbeat_interval`).
    pub host_dead_after: Duration,
    /// Least time between two updates that only change load.
    pub load_interval: Duration,
    /// Time between publishing a directive change and the first postulate (≤
    /// `postulate_interval`; when not written, 200 ms or `postulate_interval` if shorter).
    pub postulate_delay: Duration,
    /// Time between retries of an unanswered directive postulate.
    pub postulate_interval: Duration,
    /// A unit that answers no postulate for this long stops holding up the handshake
    /// (longer than `postulate_interval`).
    pub unit_give_up_after: Duration,
    /// How long a token allotment may be used.
    pub token_validity: Duration,
    /// How long a percentage allotment holds.
    pub percentage_duration: Duration,
    /// Load changes smaller than this many percent points are not reported (0..=50).
    pub load_hysteresis: u8,
    /// Weight of a new load sample in the exponentially weighted moving average of a row's
    /// load, in (0, 1]; 1 publishes raw samples.
    pub load_smoothing: f64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        use crate::validate::health_defaults as d;
        Self {
            heartbeat_interval: d::HEARTBEAT_INTERVAL,
            host_dead_after: d::HOST_DEAD_AFTER,
            load_interval: d::LOAD_INTERVAL,
            postulate_delay: d::POSTULATE_DELAY,
            postulate_interval: d::POSTULATE_INTERVAL,
            unit_give_up_after: d::UNIT_GIVE_UP_AFTER,
            token_validity: d::TOKEN_VALIDITY,
            percentage_duration: d::PERCENTAGE_DURATION,
            load_hysteresis: d::LOAD_HYSTERESIS,
            load_smoothing: d::LOAD_SMOOTHING,
        }
    }
}

/// Process-level settings of `switchyard agent` (`[agent]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// UDP address the agent receives LB units' messages on.
    pub listen: SocketAddr,
    /// Loopback address of the agent's local HTTP API.
    pub api: SocketAddr,
    /// Unix socket of the agent's local API (resolved against the configuration's
    /// directory).
    pub socket: PathBuf,
    /// Whether LB units may drain, undrain, disable and set the capacity of this
    /// machine's hosts (`unit_acts`, default true): an operator's act on a unit's admin
    /// API reaches the host as an authenticated `DirectiveRequest`. When false, only the
    /// local API changes directives and capacity.
    pub unit_acts: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        use crate::validate::{DEFAULT_AGENT_API, DEFAULT_AGENT_LISTEN, DEFAULT_AGENT_SOCKET};
        Self {
            listen: DEFAULT_AGENT_LISTEN,
            api: DEFAULT_AGENT_API,
            socket: PathBuf::from(DEFAULT_AGENT_SOCKET),
            unit_acts: true,
        }
    }
}

/// Hosts that elect a leader among themselves; the leader sends their consolidated
/// heartbeats to the LB units (spec FIG. 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    /// Group name, unique.
    pub name: String,
    /// Names of the member hosts, in file order; at least 2, each in no other group.
    pub hosts: Vec<String>,
    /// UDP port the members' agents gossip membership on.
    pub gossip_port: u16,
}
