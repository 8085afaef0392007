//! TCP- and UDP-level routes as DAM atoms (spec FIG. 28): with the session-store role, the
//! classifier records every route it plumbs under its flow's `SessionId::FourTuple` key (data:
//! the wire encoding of the `Route`) and deletes it when the route is retired (a zombie for
//! `[sessions.zombie] four_tuple`). A classifier that gets a mid-connection miss for a flow it
//! does not know — its packets moved to this unit's forwarder — finds the route there
//! ([`DamRouteLookup`]), installs it and delivers the packet, so the connection keeps its host.
//! A late packet of a connection that ended finds the route's zombie and still reaches the old
//! host, on a route that lingers for the FIN linger.
//!
//! The lookup is synchronous (the classifier machine's `RouteLookup` seam): a route this unit
//! holds (a copy or a cache entry) answers at once; otherwise the owners are asked in the
//! background and the answer is cached, so the flow's next packet (a TCP retransmission)
//! finds it.

use std::time::Instant;

use switchyard_classifier::{FoundRoute, RouteLookup};
use switchyard_wire::plumbing::Route;
use switchyard_wire::{FlowTuple, Reader, SessionId, Wire, Writer};

use crate::SessionStoreHandle;

/// The atom key of `flow`'s route.
pub fn key(flow: &FlowTuple) -> Vec<u8> {
    SessionId::FourTuple(*flow).key()
}

/// The atom data of `route`.
pub fn encode(route: &Route) -> Option<Vec<u8>> {
    let mut w = Writer::new();
    route.encode(&mut w);
    w.finish().ok()
}

/// The route in atom data; `None` for data that is not exactly one route.
pub fn decode(data: &[u8]) -> Option<Route> {
    let mut r = Reader::new(data, "route atom");
    let route = Route::decode(&mut r).ok()?;
    r.finish().ok()?;
    Some(route)
}

/// [`RouteLookup`] over this unit's portion of the DAM.
#[derive(Debug, Clone)]
pub struct DamRouteLookup(pub SessionStoreHandle);

impl RouteLookup for DamRouteLookup {
    fn lookup(&mut self, _now: Instant, flow: &FlowTuple) -> Option<FoundRoute> {
        let atom = self.0.try_lookup(&key(flow))?;
        Some(FoundRoute {
            route: decode(&atom.data)?,
            // A deleted route (the connection ended) serves only late packets.
            ended: atom.meta.zombie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_wire::plumbing::Delivery;
    use switchyard_wire::{HostId, Protocol};

    #[test]
    fn routes_round_trip_and_garbage_is_refused() {
        let flow = FlowTuple::new(
            Protocol::Tcp,
            "192.0.2.1:1000".parse().expect("addr"),
            "198.19.0.10:80".parse().expect("addr"),
        )
        .expect("flow");
        let route = Route {
            flow,
            host: HostId(101),
            target: "198.18.200.100:8080".parse().expect("addr"),
            delivery: Delivery::Nat {
                source: "198.18.200.10:20001".parse().expect("addr"),
            },
            idle_timeout_ms: 900_000,
        };
        let data = encode(&route).expect("encodes");
        assert_eq!(decode(&data), Some(route));
        assert_eq!(decode(&data[..data.len() - 1]), None);
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(decode(&[]), None);
        assert_ne!(key(&flow), SessionId::ClientIp(flow.client().ip()).key());
    }
}
