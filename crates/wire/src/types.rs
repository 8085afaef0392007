//! Value types shared by several protocol families: identifiers, the
//! transport [`Protocol`], the client/VIP [`FlowTuple`] and the application
//! identifier [`AppId`].

use std::net::SocketAddr;

use crate::encoding::{Reader, Wire, Writer, wire_enum};
use crate::error::{DecodeError, Problem, ValueError};

/// Maximum length of [`AppId::info`] in bytes.
pub const MAX_APP_INFO_LEN: usize = 1024;

/// A host (a server running applications), chosen at configuration time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u32);

/// A load balancing unit (forwarder, classifier, health and load cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId(pub u32);

/// The sender of a frame: a host id or a unit id, carried in the frame
/// header. Replay protection is kept per sender id, so hosts and units must
/// draw their ids from disjoint ranges within a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SenderId(pub u32);

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {}", self.0)
    }
}

impl std::fmt::Display for UnitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unit {}", self.0)
    }
}

impl std::fmt::Display for SenderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<HostId> for SenderId {
    fn from(id: HostId) -> Self {
        Self(id.0)
    }
}

impl From<UnitId> for SenderId {
    fn from(id: UnitId) -> Self {
        Self(id.0)
    }
}

impl Wire for HostId {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u32("HostId").map(Self)
    }
}

impl Wire for UnitId {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u32("UnitId").map(Self)
    }
}

wire_enum! {
    /// Transport protocol of a flow. Tags are the IP protocol numbers.
    pub enum Protocol {
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
    }
}

impl Protocol {
    /// Stable lowercase name for logs, APIs and configuration: `"tcp"` or
    /// `"udp"`.
    ///
    /// ```
    /// use switchyard_wire::Protocol;
    /// assert_eq!((Protocol::Tcp.as_str(), Protocol::Udp.as_str()), ("tcp", "udp"));
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One client flow to a virtual service: protocol, client address:port and
/// VIP address:port. Both addresses always share an address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    protocol: Protocol,
    client: SocketAddr,
    vip: SocketAddr,
}

impl FlowTuple {
    /// A flow tuple; fails if `client` and `vip` mix IPv4 and IPv6.
    pub fn new(
        protocol: Protocol,
        client: SocketAddr,
        vip: SocketAddr,
    ) -> Result<Self, ValueError> {
        check_same_family("FlowTuple", &client, &vip)?;
        Ok(Self {
            protocol,
            client,
            vip,
        })
    }

    /// Transport protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Client address and port.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// Virtual service address and port.
    pub fn vip(&self) -> SocketAddr {
        self.vip
    }
}

/// Fails with [`Problem::MixedAddressFamilies`] unless `a` and `b` are both
/// IPv4 or both IPv6.
pub(crate) fn check_same_family(
    field: &'static str,
    a: &SocketAddr,
    b: &SocketAddr,
) -> Result<(), ValueError> {
    if a.is_ipv4() == b.is_ipv4() {
        Ok(())
    } else {
        Err(ValueError::new(field, Problem::MixedAddressFamilies))
    }
}

impl Wire for FlowTuple {
    fn encode(&self, w: &mut Writer) {
        self.protocol.encode(w);
        w.socket_addr(&self.client);
        w.socket_addr(&self.vip);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let protocol = Protocol::decode(r)?;
        let client = r.socket_addr("FlowTuple.client")?;
        let vip = r.socket_addr("FlowTuple.vip")?;
        r.check(Self::new(protocol, client, vip))
    }
}

/// Identifies one application endpoint behind a virtual service: the VIP
/// and protocol clients use, the physical endpoint that serves them, and
/// protocol-specific detail (for example an HTTP URL prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppId {
    /// Virtual service address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Physical address and port of the application on its host.
    pub endpoint: SocketAddr,
    /// Protocol-specific detail, at most [`MAX_APP_INFO_LEN`] bytes.
    pub info: String,
}

impl Wire for AppId {
    fn encode(&self, w: &mut Writer) {
        w.socket_addr(&self.vip);
        self.protocol.encode(w);
        w.socket_addr(&self.endpoint);
        w.string("AppId.info", &self.info, MAX_APP_INFO_LEN);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            vip: r.socket_addr("AppId.vip")?,
            protocol: Protocol::decode(r)?,
            endpoint: r.socket_addr("AppId.endpoint")?,
            info: r.string("AppId.info", MAX_APP_INFO_LEN)?,
        })
    }
}
