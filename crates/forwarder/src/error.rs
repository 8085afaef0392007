//! The forwarder data plane's typed errors.

use std::io;

/// What can go wrong loading, attaching or driving the data plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The BPF object could not be loaded (verifier rejection, missing privileges, …).
    #[error("loading the forwarder BPF program: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded, attached or run.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The routing table (or its reply table) is full: the route was not installed. The
    /// classifier counts this and still serves the connection another way.
    #[error("the routing table is full ({max_routes} entries)")]
    TableFull {
        /// The configured capacity.
        max_routes: u32,
    },
    /// All VIP slots are used.
    #[error("no free VIP slot (at most {max_vips})")]
    TooManyVips {
        /// The configured capacity.
        max_vips: u32,
    },
    /// The `nat_sources` map is full.
    #[error("too many NAT source addresses (at most {max})")]
    TooManyNatSources {
        /// Its capacity.
        max: usize,
    },
    /// The route's VIP is not configured on this forwarder.
    #[error("{0} is not a configured VIP")]
    UnknownVip(String),
    /// Client, VIP, host and NAT source must all be IPv4 or all IPv6.
    #[error("addresses of different families in one route")]
    FamilyMismatch,
    /// A full-NAT route needs a NAT source address.
    #[error("a full-NAT route needs a NAT source address")]
    MissingNatSource,
    /// The data plane cannot apply this delivery mode yet.
    #[error("delivery mode {0} is not supported by this data plane yet")]
    UnsupportedMode(&'static str),
    /// Firewall rules that cannot be applied (a prefix of the wrong family or too long, a rate
    /// or burst out of range).
    #[error("invalid firewall rules: {0}")]
    InvalidFirewall(String),
    /// The firewall prefix table is full: the VIP keeps its previous rules.
    #[error("the firewall prefix table is full ({max_rules} prefixes over all VIPs)")]
    FirewallFull {
        /// The configured capacity.
        max_rules: u32,
    },
    /// The flow's forward or reply key is already used by the other direction of another
    /// route (a host that is also a client of the VIP through the same addresses and ports).
    #[error("route key conflict: {0}")]
    RouteConflict(String),
    /// A map named in the program is missing (a build mismatch).
    #[error("the BPF object has no map or program named {0}")]
    Missing(&'static str),
    /// The ring buffer reader was already taken.
    #[error("the event reader was already taken")]
    EventsTaken,
    /// An I/O error (polling the ring buffer, reading the clock).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn map(what: &'static str, source: aya::maps::MapError) -> Error {
        Error::Map {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(what: impl Into<String>, source: aya::programs::ProgramError) -> Error {
        Error::Program {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// True if a map update failed because the map is full (`E2BIG`; `ENOSPC` for LPM tries).
pub(crate) fn is_map_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)))
}

/// True if a map lookup or delete failed because the key is absent.
pub(crate) fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound | aya::maps::MapError::ElementNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
