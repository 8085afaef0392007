//! Route plumbing protocol (message types `0x5_`, spec FIGS. 27 to 29).
//!
//! Classifiers plumb routes into forwarders ([`AddRoute`], [`DeleteRoute`]);
//! forwarders hand packets without a route to their classifier ([`Miss`])
//! and report the final packet of a flow ([`FinalPacket`]) so the
//! classifier's connection inventory can retire it.

use std::net::SocketAddr;

use crate::encoding::{Reader, Wire, Writer, wire_enum};
use crate::error::{DecodeError, Problem};
use crate::types::{FlowTuple, HostId};

/// Maximum size of a packet carried in a [`Miss`] (an IP datagram).
pub const MAX_PACKET_LEN: usize = 65_535;

const UNBOUNDED: usize = usize::MAX;

/// Installs routes in a forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRoute {
    /// Routes to add or replace (keyed by flow).
    pub routes: Vec<Route>,
}

/// Where a forwarder sends the packets of one flow, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The flow.
    pub flow: FlowTuple,
    /// The host serving it.
    pub host: HostId,
    /// Host address and port packets are delivered to.
    pub target: SocketAddr,
    /// How packets are rewritten for delivery.
    pub delivery: Delivery,
    /// Remove the route after this much inactivity (0: never).
    pub idle_timeout_ms: u32,
}

/// Packet delivery method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Full NAT: the source becomes `source`, the destination the target.
    Nat {
        /// Forwarder address and port used as the new source.
        source: SocketAddr,
    },
    /// Half NAT: only the destination is rewritten.
    HalfNat,
    /// Flow-id encapsulation (FIG. 38): the ports carry `flow_id`.
    Tunnel {
        /// The flow id.
        flow_id: u32,
    },
}

/// Removes routes from a forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRoute {
    /// Flows whose routes to remove.
    pub flows: Vec<FlowTuple>,
}

/// A packet the forwarder had no route for, handed to its classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// Where the packet arrived.
    pub ingress: Ingress,
    /// The packet, from the IP header on (at most [`MAX_PACKET_LEN`]).
    pub packet: Vec<u8>,
}

/// Interface and queue a packet arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ingress {
    /// Interface index.
    pub ifindex: u32,
    /// Receive queue.
    pub queue: u32,
}

wire_enum! {
    /// Why a flow ended.
    pub enum FinalReason {
        /// A FIN was seen from the client (or, from older forwarders, from
        /// either side).
        Fin = 0,
        /// An RST was seen.
        Rst = 1,
        /// The route timed out.
        IdleTimeout = 2,
        /// A FIN was seen from the host (reply direction).
        HostFin = 3,
        /// Not an end: a SYN (no ACK) from the client on a routed flow, which opens the
        /// same 4-tuple again (after an RST, or reusing its port while the route lingers);
        /// the classifier keeps the route for the new connection.
        Reopened = 4,
    }
}

wire_enum! {
    /// Why a forwarder did not install a route.
    pub enum RefusalReason {
        /// Its routing table is full.
        TableFull = 0,
    }
}

/// A forwarder could not install the route of `flow` and did not keep it for its own slow
/// path (a half-NAT route on a full table: the host's replies to the client could not be
/// caught). The classifier may answer with another route for the flow (e.g. full NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefused {
    /// The flow.
    pub flow: FlowTuple,
    /// Why.
    pub reason: RefusalReason,
}

impl Wire for RouteRefused {
    fn encode(&self, w: &mut Writer) {
        self.flow.encode(w);
        self.reason.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            flow: FlowTuple::decode(r)?,
            reason: RefusalReason::decode(r)?,
        })
    }
}

/// A forwarder saw the end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalPacket {
    /// The flow.
    pub flow: FlowTuple,
    /// Why it ended.
    pub reason: FinalReason,
}

impl Wire for Delivery {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Nat { source } => {
                w.u8(0);
                w.socket_addr(source);
            }
            Self::HalfNat => w.u8(1),
            Self::Tunnel { flow_id } => {
                w.u8(2);
                w.u32(*flow_id);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("Delivery")? {
            0 => Ok(Self::Nat {
                source: r.socket_addr("Delivery.source")?,
            }),
            1 => Ok(Self::HalfNat),
            2 => Ok(Self::Tunnel {
                flow_id: r.u32("Delivery.flow_id")?,
            }),
            tag => Err(r.error("Delivery", Problem::InvalidTag(tag))),
        }
    }
}

impl Wire for Route {
    fn encode(&self, w: &mut Writer) {
        self.flow.encode(w);
        self.host.encode(w);
        w.socket_addr(&self.target);
        self.delivery.encode(w);
        w.u32(self.idle_timeout_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            flow: FlowTuple::decode(r)?,
            host: HostId::decode(r)?,
            target: r.socket_addr("Route.target")?,
            delivery: Delivery::decode(r)?,
            idle_timeout_ms: r.u32("Route.idle_timeout_ms")?,
        })
    }
}

impl Wire for AddRoute {
    fn encode(&self, w: &mut Writer) {
        w.list_of("AddRoute.routes", &self.routes, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            routes: r.list_of("AddRoute.routes", UNBOUNDED)?,
        })
    }
}

impl Wire for DeleteRoute {
    fn encode(&self, w: &mut Writer) {
        w.list_of("DeleteRoute.flows", &self.flows, UNBOUNDED);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            flows: r.list_of("DeleteRoute.flows", UNBOUNDED)?,
        })
    }
}

impl Wire for Ingress {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.ifindex);
        w.u32(self.queue);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ifindex: r.u32("Ingress.ifindex")?,
            queue: r.u32("Ingress.queue")?,
        })
    }
}

impl Wire for Miss {
    fn encode(&self, w: &mut Writer) {
        self.ingress.encode(w);
        w.blob("Miss.packet", &self.packet, MAX_PACKET_LEN);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ingress: Ingress::decode(r)?,
            packet: r.blob("Miss.packet", MAX_PACKET_LEN)?,
        })
    }
}

impl Wire for FinalPacket {
    fn encode(&self, w: &mut Writer) {
        self.flow.encode(w);
        self.reason.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            flow: FlowTuple::decode(r)?,
            reason: FinalReason::decode(r)?,
        })
    }
}
