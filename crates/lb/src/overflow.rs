//! Overflow routes of a split forwarder: routes its remote classifier plumbed that the data
//! plane's table could not hold. The classifier on another unit cannot send this unit's
//! frames itself, so the forwarder agent keeps such routes in memory and sends every packet
//! of those flows along them on the slow path (`deliver_with_route`): the client's packets
//! arrive as misses, the host's replies as reply misses at the NAT source. Final packets
//! seen there and idle flows are reported to the classifier like those of installed routes;
//! its `DeleteRoute` removes them. Plain data, no I/O: the agent drives it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_classifier::Side;
use switchyard_wire::plumbing::Route;
use switchyard_wire::{FlowTuple, Protocol};

use crate::plumbing::reply_key;

/// One overflow route and the last time a packet of its flow was sent.
#[derive(Debug, Clone, Copy)]
struct Entry {
    route: Route,
    last: Instant,
}

/// The overflow routes, by flow and by reply key.
#[derive(Debug, Default)]
pub struct Overflow {
    routes: HashMap<FlowTuple, Entry>,
    replies: HashMap<(Protocol, SocketAddr, SocketAddr), FlowTuple>,
}

impl Overflow {
    /// Keeps `route` (replacing the flow's previous one).
    pub fn insert(&mut self, route: Route, now: Instant) {
        self.remove(&route.flow);
        self.replies.insert(reply_key(&route), route.flow);
        self.routes.insert(route.flow, Entry { route, last: now });
    }

    /// Forgets `flow`'s route; true if there was one.
    pub fn remove(&mut self, flow: &FlowTuple) -> bool {
        let Some(old) = self.routes.remove(flow) else {
            return false;
        };
        let key = reply_key(&old.route);
        if self.replies.get(&key) == Some(flow) {
            self.replies.remove(&key);
        }
        true
    }

    /// The route of a client packet of `flow`, marking the flow active.
    pub fn forward(&mut self, flow: &FlowTuple, now: Instant) -> Option<Route> {
        let e = self.routes.get_mut(flow)?;
        e.last = now;
        Some(e.route)
    }

    /// The flow and route of a host packet `src` → `dst`, marking the flow active.
    pub fn reply(
        &mut self,
        protocol: Protocol,
        src: SocketAddr,
        dst: SocketAddr,
        now: Instant,
    ) -> Option<(FlowTuple, Side, Route)> {
        let key = (protocol, SocketAddr::new(src.ip(), src.port()), dst);
        let flow = *self.replies.get(&key)?;
        let e = self.routes.get_mut(&flow)?;
        e.last = now;
        Some((flow, Side::Host, e.route))
    }

    /// Flows with no packet for at least `timeout(flow)`.
    pub fn idle(&self, now: Instant, timeout: impl Fn(&FlowTuple) -> Duration) -> Vec<FlowTuple> {
        self.routes
            .iter()
            .filter(|(flow, e)| now.saturating_duration_since(e.last) >= timeout(flow))
            .map(|(flow, _)| *flow)
            .collect()
    }

    /// Up to `n` routes, for another try at installing them.
    pub fn some_routes(&self, n: usize) -> Vec<Route> {
        self.routes.values().take(n).map(|e| e.route).collect()
    }

    /// Number of overflow routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_wire::HostId;
    use switchyard_wire::plumbing::Delivery;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn route(client: &str, nat: &str) -> Route {
        Route {
            flow: FlowTuple::new(Protocol::Tcp, sa(client), sa("198.19.0.10:80")).expect("flow"),
            host: HostId(101),
            target: sa("198.18.200.100:8080"),
            delivery: Delivery::Nat { source: sa(nat) },
            idle_timeout_ms: 0,
        }
    }

    #[test]
    fn routes_are_found_both_ways_until_removed_and_go_idle() {
        let t0 = Instant::now();
        let mut o = Overflow::default();
        let r = route("192.0.2.1:1000", "198.18.200.10:20000");
        o.insert(r, t0);
        assert_eq!(o.forward(&r.flow, t0), Some(r));
        let reply = o.reply(
            Protocol::Tcp,
            sa("198.18.200.100:8080"),
            sa("198.18.200.10:20000"),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(reply, Some((r.flow, Side::Host, r)));
        assert_eq!(
            o.reply(
                Protocol::Udp,
                sa("198.18.200.100:8080"),
                sa("198.18.200.10:20000"),
                t0
            ),
            None
        );
        let timeout = |_: &FlowTuple| Duration::from_secs(10);
        assert!(o.idle(t0 + Duration::from_secs(14), timeout).is_empty());
        assert_eq!(o.idle(t0 + Duration::from_secs(15), timeout), vec![r.flow]);

        // Replacing the flow's route moves its reply key.
        let r2 = route("192.0.2.1:1000", "198.18.200.10:20001");
        o.insert(r2, t0);
        assert_eq!(o.len(), 1);
        assert!(
            o.reply(
                Protocol::Tcp,
                sa("198.18.200.100:8080"),
                sa("198.18.200.10:20000"),
                t0
            )
            .is_none()
        );
        assert!(o.remove(&r.flow));
        assert!(!o.remove(&r.flow));
        assert!(o.is_empty());
        assert_eq!(o.forward(&r.flow, t0), None);
    }
}
