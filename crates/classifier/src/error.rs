//! Typed errors of the local API (configuring services and settings).
//! Packet-path inputs never fail: what cannot be acted on is counted
//! ([`crate::Counters`]) and dropped.

use std::net::{IpAddr, SocketAddr};

/// A service or setting the classifier cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The port range is empty or includes port 0.
    #[error("invalid NAT port range {first}-{last}")]
    InvalidPortRange {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// Full NAT without source addresses.
    #[error("service {service}: full NAT needs at least one source address")]
    MissingNatSources {
        /// The service.
        service: String,
    },
    /// Two services use one NAT source address with different port ranges
    /// (ports are allocated per source address, across services).
    #[error("NAT source {source_addr} is used with two different port ranges")]
    ConflictingPortRange {
        /// The source address.
        source_addr: IpAddr,
    },
    /// The VIP cannot be a service address.
    #[error("invalid VIP {0}")]
    InvalidVip(SocketAddr),
    /// A feature of the configuration this classifier does not implement.
    #[error("service {service}: {what} is not supported by the packet classifier")]
    Unsupported {
        /// The service.
        service: String,
        /// What.
        what: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}
