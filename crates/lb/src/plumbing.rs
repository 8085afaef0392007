//! Route plumbing between the forwarder and classifier roles: the vocabulary both sides share
//! and the conversions between the wire protocol's flows and routes
//! ([`switchyard_wire::plumbing`]) and the data plane's ([`switchyard_forwarder`]).
//!
//! - In one unit (all-in-one) the forwarder hands misses, final packets and idle flows to the
//!   classifier thread as [`ClassifierInput`]s over a bounded channel, and the classifier
//!   drives the data plane directly through [`crate::forwarder_role::ForwarderHandle`].
//! - Between units, the same inputs travel as authenticated `Miss` / `FinalPacket`
//!   datagrams to the classifier unit's plumbing port (`forwarder.plumbing_port`, default
//!   9173, not the health control port: the two protocols have different senders, rates and
//!   trust rules), and routes come back as `AddRoute` / `DeleteRoute` from that unit only.
//!
//! Also the small packet helpers the plumbing needs: parsing a missed IP packet into its flow
//! and TCP flags, and completing a captured frame's transport checksum before reinjection
//! (tc sees locally generated packets with only the pseudo-header sum in the checksum field;
//! the XDP reinjection path would send that on unchanged).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use switchyard_classifier::{FinalReason, MissPacket, Side, TcpFlags, Transport};
use switchyard_forwarder::packet::transport_checksum;
use switchyard_forwarder::{self as fwd, WireFlow};
use switchyard_wire::plumbing::{Delivery, Route};
use switchyard_wire::{FlowTuple, Protocol, UnitId};

/// Ethernet header length.
const ETH_LEN: usize = 14;

/// Which forwarder an input came from, so the classifier's actions go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The unit's own forwarder.
    Local,
    /// A forwarder unit, reached at its plumbing address.
    Remote {
        /// The unit.
        unit: UnitId,
        /// Its plumbing address.
        addr: SocketAddr,
    },
}

/// What a forwarder tells its classifier.
#[derive(Debug)]
pub enum ClassifierInput {
    /// A packet without a route.
    Miss {
        /// From which forwarder.
        origin: Origin,
        /// The packet.
        packet: MissPacket,
    },
    /// A FIN or RST of a routed flow (client → VIP direction).
    Final {
        /// From which forwarder.
        origin: Origin,
        /// The flow.
        flow: FlowTuple,
        /// FIN or RST.
        reason: FinalReason,
        /// Which side sent it.
        side: Side,
    },
    /// A SYN (no ACK) on a routed flow: the client opens the same 4-tuple again, so the
    /// route must outlive its linger.
    Reopen {
        /// From which forwarder.
        origin: Origin,
        /// The flow.
        flow: FlowTuple,
    },
    /// A packet to one of the unit's NAT sources without a route: the reply of a full-NAT
    /// flow the forwarder's table could not hold (all-in-one only). The classifier maps it to
    /// its flow and sends it along the reverse route (slow path).
    ReplyMiss {
        /// The packet as seen on the wire (host → NAT source).
        wire: WireFlow,
        /// TCP flags (0 for UDP).
        tcp_flags: u8,
        /// The interface it arrived on.
        ingress_ifindex: u32,
        /// The whole frame (empty if it was captured only in part).
        frame: Vec<u8>,
    },
    /// Flows without a packet for at least `idle_for`.
    Idle {
        /// From which forwarder.
        origin: Origin,
        /// How long they have been idle at least.
        idle_for: Duration,
        /// The flows.
        flows: Vec<FlowTuple>,
    },
}

/// The wire protocol number of a data-plane protocol.
pub fn wire_protocol(p: fwd::Protocol) -> Protocol {
    match p {
        fwd::Protocol::Tcp => Protocol::Tcp,
        fwd::Protocol::Udp => Protocol::Udp,
    }
}

/// The data-plane protocol of a wire protocol.
pub fn dataplane_protocol(p: Protocol) -> fwd::Protocol {
    match p {
        Protocol::Tcp => fwd::Protocol::Tcp,
        Protocol::Udp => fwd::Protocol::Udp,
    }
}

/// The flow (client → VIP) of a packet seen in that direction.
pub fn flow_tuple(w: &WireFlow) -> Option<FlowTuple> {
    FlowTuple::new(wire_protocol(w.proto), w.src, w.dst).ok()
}

/// The data plane's flow of a wire flow.
pub fn dataplane_flow(f: &FlowTuple) -> fwd::Flow {
    fwd::Flow {
        proto: dataplane_protocol(f.protocol()),
        client: f.client(),
        vip: f.vip(),
    }
}

/// The data plane's route of a plumbed route.
pub fn dataplane_route(r: &Route) -> fwd::Route {
    match r.delivery {
        Delivery::Nat { source } => fwd::Route::full_nat(r.target, source),
        Delivery::HalfNat => fwd::Route::half_nat(r.target),
        Delivery::Tunnel { flow_id } => fwd::Route {
            mode: fwd::DeliveryMode::Tunnel { flow_id },
            host: r.target,
            nat_source: None,
        },
    }
}

/// The key of a route's reply direction: packets from the host to whoever the host sees.
pub fn reply_key(r: &Route) -> (Protocol, SocketAddr, SocketAddr) {
    (
        r.flow.protocol(),
        r.target,
        switchyard_classifier::host_sees(r),
    )
}

/// The transport of a missed packet, from the data plane's protocol and TCP flags.
pub fn transport(proto: Protocol, tcp_flags: u8) -> Transport {
    match proto {
        Protocol::Tcp => Transport::Tcp(TcpFlags::from_bits(tcp_flags)),
        Protocol::Udp => Transport::Udp,
    }
}

/// Parses an IP packet (from the IP header on, as a `Miss` carries it) into its flow and
/// transport. `None` for anything but a whole first fragment of IPv4/IPv6 (no extension
/// headers) TCP/UDP.
pub fn parse_ip_packet(p: &[u8]) -> Option<(FlowTuple, Transport)> {
    let version = p.first()? >> 4;
    let (proto, src, dst, l4) = match version {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
            if frag & 0x3fff != 0 {
                return None;
            }
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (
                *p.get(9)?,
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                p.get(ihl..)?,
            )
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            (
                *p.get(6)?,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                p.get(40..)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    let (protocol, transport) = match proto {
        6 => (
            Protocol::Tcp,
            Transport::Tcp(TcpFlags::from_bits(*l4.get(13)?)),
        ),
        17 => {
            if l4.len() < 8 {
                return None;
            }
            (Protocol::Udp, Transport::Udp)
        }
        _ => return None,
    };
    let flow = FlowTuple::new(
        protocol,
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
    )
    .ok()?;
    Some((flow, transport))
}

/// Recomputes the TCP/UDP checksum of an Ethernet frame in place (IPv4 without fragments,
/// IPv6 without extension headers). Returns false, leaving the frame as it was, when the
/// frame is not one of those or is truncated.
pub fn complete_transport_checksum(frame: &mut [u8]) -> bool {
    let Some(ip) = frame.get(ETH_LEN..) else {
        return false;
    };
    let Some(&first) = ip.first() else {
        return false;
    };
    let (proto, src, dst, l4_off, l4_len): (u8, Vec<u8>, Vec<u8>, usize, usize) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = ip
                .get(2..4)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            if ihl < 20 || total < ihl || ip.len() < total {
                return false;
            }
            let (Some(src), Some(dst), Some(&proto)) = (ip.get(12..16), ip.get(16..20), ip.get(9))
            else {
                return false;
            };
            (proto, src.to_vec(), dst.to_vec(), ihl, total - ihl)
        }
        6 => {
            let payload = ip
                .get(4..6)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            if ip.len() < 40 + payload {
                return false;
            }
            let (Some(src), Some(dst), Some(&proto)) = (ip.get(8..24), ip.get(24..40), ip.get(6))
            else {
                return false;
            };
            (proto, src.to_vec(), dst.to_vec(), 40, payload)
        }
        _ => return false,
    };
    let csum_at = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let start = ETH_LEN + l4_off;
    let Some(segment) = frame.get_mut(start..start + l4_len) else {
        return false;
    };
    if segment.len() < csum_at + 2 {
        return false;
    }
    if proto == 17 && segment[csum_at..csum_at + 2] == [0, 0] && src.len() == 4 {
        // IPv4 UDP without a checksum stays without one.
        return true;
    }
    segment[csum_at] = 0;
    segment[csum_at + 1] = 0;
    let len = u32::try_from(l4_len).unwrap_or(u32::MAX);
    let mut sum = transport_checksum(&src, &dst, proto, len, segment);
    if proto == 17 && sum == 0 {
        sum = 0xffff;
    }
    segment[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_forwarder::packet::{FrameSpec, verify_checksums};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_missed_packet_parses_into_its_flow_and_flags() {
        for (c, v) in [
            ("198.18.1.2:40000", "198.19.0.10:80"),
            ("[fd53:7900:0:1::2]:40000", "[fd53:7900:ff::10]:80"),
        ] {
            let frame = FrameSpec::tcp(sa(c), sa(v)).build();
            let (flow, t) = parse_ip_packet(&frame[ETH_LEN..]).expect("parses");
            assert_eq!((flow.client(), flow.vip()), (sa(c), sa(v)));
            assert_eq!(t, Transport::Tcp(TcpFlags::from_bits(TcpFlags::SYN)));
            let udp = FrameSpec::udp(sa(c), sa(v)).build();
            let (flow, t) = parse_ip_packet(&udp[ETH_LEN..]).expect("parses");
            assert_eq!(flow.protocol(), Protocol::Udp);
            assert_eq!(t, Transport::Udp);
            assert!(parse_ip_packet(&frame[ETH_LEN..ETH_LEN + 22]).is_none());
        }
        assert!(parse_ip_packet(&[]).is_none());
        assert!(parse_ip_packet(&[0x45; 19]).is_none());
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        for (c, v) in [
            ("198.18.1.2:40000", "198.19.0.10:80"),
            ("[fd53:7900:0:1::2]:40000", "[fd53:7900:ff::10]:80"),
        ] {
            for mut frame in [
                FrameSpec::tcp(sa(c), sa(v)).payload(b"hello").build(),
                FrameSpec::udp(sa(c), sa(v)).build(),
            ] {
                let good = frame.clone();
                let at = frame.len() - 1;
                // Spoil the transport checksum the way CHECKSUM_PARTIAL leaves it.
                let l4 = if c.starts_with('[') {
                    ETH_LEN + 40
                } else {
                    ETH_LEN + 20
                };
                let off = if frame[if c.starts_with('[') {
                    ETH_LEN + 6
                } else {
                    ETH_LEN + 9
                }] == 6
                {
                    16
                } else {
                    6
                };
                frame[l4 + off] ^= 0x5a;
                assert!(verify_checksums(&frame).is_err());
                assert!(complete_transport_checksum(&mut frame));
                assert_eq!(frame, good, "byte {at}");
                assert!(verify_checksums(&frame).is_ok());
            }
        }
        assert!(!complete_transport_checksum(&mut [0u8; 20]));
    }
}
