//! Test support: an allotment source built from real health rows (the same
//! `allot` function the consolidated cache uses), packet builders and an
//! action collector. Simulated time only.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchyard_classifier::{
    Action, AffinitySpec, Classifier, Deliver, DeliverySpec, MissPacket, NatSpec, PortRange,
    ServiceSpec, TcpFlags, Transport,
};
use switchyard_health::AllotmentSource;
use switchyard_health::allotment::{AllotmentPolicy, allot};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentResponse};
use switchyard_wire::health::{AppStatus, Directive, DirectiveState, Health, Row};
use switchyard_wire::plumbing::Route;
use switchyard_wire::{AppId, FlowTuple, HostId, Protocol};

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Endpoints of services, as a consolidated cache would hold them.
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<(HostId, Row)>,
    pub policy: AllotmentPolicy,
    pub requests: u64,
}

impl Rows {
    pub fn add(
        &mut self,
        vip: SocketAddr,
        protocol: Protocol,
        host: u32,
        endpoint: &str,
        capacity: u8,
        load: u8,
    ) {
        self.rows.push((
            HostId(host),
            Row {
                app: AppId {
                    vip,
                    protocol,
                    endpoint: sa(endpoint),
                    info: String::new(),
                },
                status: AppStatus::new(Health::Healthy, load, capacity).unwrap(),
                directive: Directive {
                    target: DirectiveState::Active,
                    current: DirectiveState::Active,
                },
            },
        ));
    }

    pub fn set_target(&mut self, host: u32, target: DirectiveState) {
        for (h, r) in &mut self.rows {
            if h.0 == host {
                r.directive.target = target;
            }
        }
    }

    pub fn set_health(&mut self, host: u32, health: Health) {
        for (h, r) in &mut self.rows {
            if h.0 == host {
                r.status = AppStatus::new(health, r.status.load(), r.status.capacity()).unwrap();
            }
        }
    }
}

impl AllotmentSource for Rows {
    fn allot(&mut self, request: &AllotmentRequest, _now: Instant) -> AllotmentResponse {
        self.requests += 1;
        let matching = self
            .rows
            .iter()
            .filter(|(_, r)| r.app.vip == request.vip && r.app.protocol == request.protocol)
            .map(|(h, r)| (*h, r));
        allot(request, matching, &self.policy)
    }
}

pub fn nat_service(
    vip: &str,
    protocol: Protocol,
    sources: &[&str],
    ports: PortRange,
) -> ServiceSpec {
    ServiceSpec {
        vip: sa(vip),
        protocol,
        delivery: DeliverySpec::Nat(NatSpec {
            sources: sources.iter().map(|s| ip(s)).collect(),
            ports,
        }),
        affinity: AffinitySpec::None,
        allotment_info: String::new(),
    }
}

pub fn half_nat_service(vip: &str, protocol: Protocol) -> ServiceSpec {
    ServiceSpec {
        vip: sa(vip),
        protocol,
        delivery: DeliverySpec::HalfNat { overflow: None },
        affinity: AffinitySpec::None,
        allotment_info: String::new(),
    }
}

pub fn flow(protocol: Protocol, client: &str, vip: &str) -> FlowTuple {
    FlowTuple::new(protocol, sa(client), sa(vip)).unwrap()
}

pub fn tcp(flow: FlowTuple, flags: u8) -> MissPacket {
    MissPacket {
        flow,
        transport: Transport::Tcp(TcpFlags::from_bits(flags)),
        ingress_ifindex: 7,
        frame: vec![0xab; 60],
    }
}

pub fn syn(flow: FlowTuple) -> MissPacket {
    tcp(flow, TcpFlags::SYN)
}

pub fn ack(flow: FlowTuple) -> MissPacket {
    tcp(flow, TcpFlags::ACK)
}

pub fn udp(flow: FlowTuple) -> MissPacket {
    MissPacket {
        flow,
        transport: Transport::Udp,
        ingress_ifindex: 7,
        frame: vec![0xcd; 60],
    }
}

pub fn drain(c: &mut Classifier) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

/// Asserts the actions are exactly "plumb, then deliver" of one route, and
/// returns it.
pub fn plumb_then_deliver(actions: &[Action]) -> (Route, Deliver) {
    match actions {
        [Action::PlumbRoute(r), Action::Deliver(d)] => {
            assert_eq!(d.route, *r);
            (*r, d.clone())
        }
        other => panic!("expected plumb then deliver, got {other:?}"),
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Counts admitted connections per endpoint from a list of actions.
pub fn per_target(actions: &[Action]) -> HashMap<SocketAddr, u64> {
    let mut m = HashMap::new();
    for a in actions {
        if let Action::PlumbRoute(r) = a {
            *m.entry(r.target).or_default() += 1;
        }
    }
    m
}
