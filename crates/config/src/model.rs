//! The validated configuration: owns the typed model every switchyard role reads
//! ([`Config`] and its parts) and its lookups. Values here are already checked: names are
//! unique, references resolve, ranges hold. Building it is `validate`'s job, not this module's.

use std::fmt;
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

    /// One line for logs and `check-config`, e.g.
    /// `cluster demo: 1 unit, 2 services, 1 pool (3 hosts), 1 check, 1 listener`.
    /// Certificates are mentioned only when there are some.
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

/// Numeric id of a load balancing unit, unique in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(pub u32);

/// Numeric id of a host (an application endpoint), unique in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u32);

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

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
}

impl Unit {
    /// Whether this unit runs `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
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

/// IP protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
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
}

/// A health check.
#[derive(Debug, Clone)]
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
