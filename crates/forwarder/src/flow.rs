//! The forwarder's vocabulary as Rust values: a [`Flow`] (client ↔ VIP connection), a [`Route`]
//! (where and how its packets are delivered: [`DeliveryMode`]), and their translation into the
//! raw map entries of [`crate::layout`] — the forward entry (client → VIP) and the reply entry
//! (host → client), both keyed in the one `routes` map.
//!
//! Pure functions only: no maps, no syscalls, so the classifier and the plumbing protocol can use
//! them anywhere and they are tested without root.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::Error;
use crate::layout::{
    FAMILY_V4, FAMILY_V6, FlowKey, MODE_HALF_NAT, MODE_NAT, MODE_TUNNEL, ROUTE_REPLY,
    ROUTE_SET_DST, ROUTE_SET_SRC, RouteValue, VipKey,
};

/// Transport protocol of a flow or VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol with IP protocol number `n`, if supported.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A service endpoint owned by the forwarder: protocol, address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Address and port.
    pub addr: SocketAddr,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, self.addr)
    }
}

/// A connection as the client sees it: client endpoint → VIP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The VIP's address and port.
    pub vip: SocketAddr,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.client, self.vip)
    }
}

/// How a routed flow's packets reach the host (patent FIG. 4 and FIG. 38).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Full NAT: the host sees a forwarder-owned source address; replies return through the
    /// forwarder, which translates them back.
    Nat,
    /// Half NAT: the host sees the client's address and must route replies via the forwarder.
    HalfNat,
    /// Flow-id tunnel (reserved: the map entry carries it, the data plane does not apply it yet).
    Tunnel {
        /// The 32-bit flow id that replaces the TCP/UDP ports.
        flow_id: u32,
    },
}

/// Where and how a flow is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The delivery mode.
    pub mode: DeliveryMode,
    /// The host's address and port.
    pub host: SocketAddr,
    /// Full NAT: the source address and port the host sees (a forwarder-owned address; the
    /// caller allocates the port). `None` for the other modes.
    pub nat_source: Option<SocketAddr>,
}

impl Route {
    /// A full-NAT route to `host`, with `nat_source` as the source the host sees.
    pub fn full_nat(host: SocketAddr, nat_source: SocketAddr) -> Route {
        Route {
            mode: DeliveryMode::Nat,
            host,
            nat_source: Some(nat_source),
        }
    }

    /// A half-NAT route to `host`.
    pub fn half_nat(host: SocketAddr) -> Route {
        Route {
            mode: DeliveryMode::HalfNat,
            host,
            nat_source: None,
        }
    }
}

/// The 16-byte map form of an address and its family.
pub(crate) fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    let mut b = [0; 16];
    match ip {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// The address in a 16-byte map field of `family`.
pub(crate) fn addr_from(b: [u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The wire key of packets from `src` to `dst`.
pub(crate) fn wire_key(proto: Protocol, src: SocketAddr, dst: SocketAddr) -> FlowKey {
    let (saddr, family) = addr_bytes(src.ip());
    let (daddr, _) = addr_bytes(dst.ip());
    FlowKey {
        saddr,
        daddr,
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        proto: proto.number(),
        family,
        pad: [0; 2],
    }
}

impl Vip {
    pub(crate) fn key(&self) -> VipKey {
        let (addr, family) = addr_bytes(self.addr.ip());
        VipKey {
            addr,
            port: self.addr.port().to_be(),
            proto: self.proto.number(),
            family,
        }
    }
}

impl Flow {
    /// The key of this flow's client → VIP packets (`routes`).
    pub fn key(&self) -> FlowKey {
        wire_key(self.proto, self.client, self.vip)
    }

    /// The flow of a `routes` key, if it is well formed.
    pub fn from_key(k: &FlowKey) -> Option<Flow> {
        let proto = Protocol::from_number(k.proto)?;
        let client = SocketAddr::new(addr_from(k.saddr, k.family)?, u16::from_be(k.sport));
        let vip = SocketAddr::new(addr_from(k.daddr, k.family)?, u16::from_be(k.dport));
        Some(Flow { proto, client, vip })
    }

    /// The VIP this flow is addressed to.
    pub fn vip_endpoint(&self) -> Vip {
        Vip {
            proto: self.proto,
            addr: self.vip,
        }
    }
}

/// The two map entries that implement a route: (forward key, value), (reply key, value).
pub(crate) struct RouteEntries {
    pub forward: (FlowKey, RouteValue),
    pub reply: (FlowKey, RouteValue),
}

/// Translates `route` for `flow` into map entries, checking that it can be applied.
pub(crate) fn route_entries(
    flow: &Flow,
    route: &Route,
    vip_id: u16,
    host_slot: u16,
) -> Result<RouteEntries, Error> {
    if !same_family(flow.client, flow.vip) || !same_family(flow.vip, route.host) {
        return Err(Error::FamilyMismatch);
    }
    let (mode, set_src, host_sees) = match route.mode {
        DeliveryMode::Nat => {
            let nat = route.nat_source.ok_or(Error::MissingNatSource)?;
            if !same_family(nat, route.host) {
                return Err(Error::FamilyMismatch);
            }
            (MODE_NAT, true, nat)
        }
        DeliveryMode::HalfNat => (MODE_HALF_NAT, false, flow.client),
        DeliveryMode::Tunnel { .. } => return Err(Error::UnsupportedMode("tunnel")),
    };

    // Forward: dst := host; full NAT also src := NAT source.
    let (host_addr, _) = addr_bytes(route.host.ip());
    let (src_addr, _) = addr_bytes(host_sees.ip());
    let forward = RouteValue {
        new_daddr: host_addr,
        new_dport: route.host.port().to_be(),
        new_saddr: if set_src { src_addr } else { [0; 16] },
        new_sport: if set_src { host_sees.port().to_be() } else { 0 },
        mode,
        flags: ROUTE_SET_DST | if set_src { ROUTE_SET_SRC } else { 0 },
        vip_id,
        host_slot,
        ..RouteValue::default()
    };

    // Reply (host -> whoever the host saw): src := VIP; full NAT also dst := client.
    let (vip_addr, _) = addr_bytes(flow.vip.ip());
    let (client_addr, _) = addr_bytes(flow.client.ip());
    let reply = RouteValue {
        new_saddr: vip_addr,
        new_sport: flow.vip.port().to_be(),
        new_daddr: if set_src { client_addr } else { [0; 16] },
        new_dport: if set_src {
            flow.client.port().to_be()
        } else {
            0
        },
        mode,
        flags: ROUTE_REPLY | ROUTE_SET_SRC | if set_src { ROUTE_SET_DST } else { 0 },
        vip_id,
        host_slot,
        ..RouteValue::default()
    };
    Ok(RouteEntries {
        forward: (flow.key(), forward),
        reply: (wire_key(flow.proto, route.host, host_sees), reply),
    })
}

/// The route a forward entry encodes.
pub(crate) fn route_from_value(v: &RouteValue, family: u8) -> Option<Route> {
    let host = SocketAddr::new(addr_from(v.new_daddr, family)?, u16::from_be(v.new_dport));
    match v.mode {
        MODE_NAT => Some(Route::full_nat(
            host,
            SocketAddr::new(addr_from(v.new_saddr, family)?, u16::from_be(v.new_sport)),
        )),
        MODE_HALF_NAT => Some(Route::half_nat(host)),
        MODE_TUNNEL => Some(Route {
            mode: DeliveryMode::Tunnel { flow_id: v.flow_id },
            host,
            nat_source: None,
        }),
        _ => None,
    }
}

/// The reply-direction key of an installed forward entry.
pub(crate) fn reply_key_of(flow: &Flow, v: &RouteValue) -> Option<FlowKey> {
    let route = route_from_value(v, flow.key().family)?;
    let host_sees = match route.mode {
        DeliveryMode::Nat => route.nat_source?,
        _ => flow.client,
    };
    Some(wire_key(flow.proto, route.host, host_sees))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn full_nat_entries_swap_both_ends() {
        let flow = Flow {
            proto: Protocol::Tcp,
            client: sa("198.18.1.2:40000"),
            vip: sa("198.19.0.10:80"),
        };
        let route = Route::full_nat(sa("198.18.200.100:8080"), sa("198.18.200.10:20001"));
        let e = route_entries(&flow, &route, 3, 1).expect("valid");
        assert_eq!(Flow::from_key(&e.forward.0), Some(flow));
        assert_eq!(route_from_value(&e.forward.1, FAMILY_V4), Some(route));
        assert_eq!(e.forward.1.flags, ROUTE_SET_DST | ROUTE_SET_SRC);
        // The host replies from itself to the NAT source.
        assert_eq!(
            e.reply.0,
            wire_key(
                Protocol::Tcp,
                sa("198.18.200.100:8080"),
                sa("198.18.200.10:20001")
            )
        );
        assert_eq!(e.reply.1.new_saddr[..4], [198, 19, 0, 10]);
        assert_eq!(u16::from_be(e.reply.1.new_dport), 40000);
        assert_eq!(Some(e.reply.0), reply_key_of(&flow, &e.forward.1));
        assert_eq!(e.reply.1.vip_id, 3);
    }

    #[test]
    fn half_nat_keeps_the_client_address() {
        let flow = Flow {
            proto: Protocol::Udp,
            client: sa("[fd53:7900:0:1::2]:5000"),
            vip: sa("[fd53:7900:ff::10]:53"),
        };
        let route = Route::half_nat(sa("[fd53:7900:0:200::101]:5353"));
        let e = route_entries(&flow, &route, 0, 1).expect("valid");
        assert_eq!(e.forward.1.flags, ROUTE_SET_DST);
        assert_eq!(e.reply.1.flags, ROUTE_REPLY | ROUTE_SET_SRC);
        assert_eq!(
            e.reply.0,
            wire_key(Protocol::Udp, route.host, flow.client),
            "the host answers the client directly"
        );
        assert_eq!(route_from_value(&e.forward.1, FAMILY_V6), Some(route));
    }

    #[test]
    fn invalid_routes_are_typed_errors() {
        let flow = Flow {
            proto: Protocol::Tcp,
            client: sa("198.18.1.2:1"),
            vip: sa("198.19.0.10:80"),
        };
        let v6 = Route::half_nat(sa("[fd53:7900::1]:80"));
        assert!(matches!(
            route_entries(&flow, &v6, 0, 1),
            Err(Error::FamilyMismatch)
        ));
        let no_nat = Route {
            mode: DeliveryMode::Nat,
            host: sa("198.18.200.100:80"),
            nat_source: None,
        };
        assert!(matches!(
            route_entries(&flow, &no_nat, 0, 1),
            Err(Error::MissingNatSource)
        ));
        let tunnel = Route {
            mode: DeliveryMode::Tunnel { flow_id: 7 },
            host: sa("198.18.200.100:80"),
            nat_source: None,
        };
        assert!(matches!(
            route_entries(&flow, &tunnel, 0, 1),
            Err(Error::UnsupportedMode(_))
        ));
    }
}
