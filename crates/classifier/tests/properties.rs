//! Property test: random event sequences against a model forwarder table.
//! Invariants after every step:
//! - no two live routes (in the forwarder or the inventory) share a
//!   (NAT source, port, endpoint, protocol);
//! - the forwarder holds only routes the inventory knows, identical to them
//!   (never a mis-route);
//! - NAT ports in use = full-NAT connections in the inventory.
//!
//! At the end, once every flow is retired, no port stays allocated.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use common::*;
use proptest::prelude::*;
use switchyard_classifier::{
    Action, Classifier, FinalReason, PlumbFailure, PortRange, Settings, Side, TcpFlags, host_sees,
};
use switchyard_wire::health::DirectiveState;
use switchyard_wire::plumbing::{Delivery, Route};
use switchyard_wire::{FlowTuple, Protocol};

const VIP: &str = "198.19.0.10:80";

#[derive(Debug, Clone)]
enum Op {
    Syn(u8),
    Ack(u8),
    FinMiss(u8),
    Udp(u8),
    Final(u8, bool, bool),
    IdleAll(bool),
    Advance(u16),
    FailNextPlumb,
    Drain(u32, bool),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Syn),
        2 => any::<u8>().prop_map(Op::Ack),
        1 => any::<u8>().prop_map(Op::FinMiss),
        3 => any::<u8>().prop_map(Op::Udp),
        3 => (any::<u8>(), any::<bool>(), any::<bool>()).prop_map(|(c, u, r)| Op::Final(c, u, r)),
        1 => any::<bool>().prop_map(Op::IdleAll),
        3 => (0u16..15_000).prop_map(Op::Advance),
        1 => Just(Op::FailNextPlumb),
        1 => (1u32..=2, any::<bool>()).prop_map(|(h, d)| Op::Drain(h, d)),
        2 => Just(Op::Timeout),
    ]
}

/// 12 clients (3 addresses × 4 ports): collisions are frequent.
fn client_flow(c: u8, protocol: Protocol) -> FlowTuple {
    let c = u32::from(c) % 12;
    flow(
        protocol,
        &format!("192.0.2.{}:{}", 1 + c / 4, 1000 + c % 4),
        VIP,
    )
}

struct World {
    c: Classifier,
    rows: Rows,
    forwarder: HashMap<FlowTuple, Route>,
    fail_next: bool,
    now: Instant,
}

impl World {
    fn execute(&mut self) {
        while let Some(a) = self.c.poll_action() {
            match a {
                Action::PlumbRoute(r) => {
                    if std::mem::take(&mut self.fail_next) {
                        self.c
                            .on_plumb_failed(self.now, &r.flow, PlumbFailure::TableFull);
                    } else {
                        self.forwarder.insert(r.flow, r);
                    }
                }
                Action::DeleteRoute(f) => {
                    self.forwarder.remove(&f);
                }
                Action::Deliver(d) => {
                    // Delivered with the inventory's route.
                    let known = self.c.inventory().get(&d.route.flow).map(|c| c.route);
                    assert_eq!(known, Some(d.route));
                }
                // This world has no session store (`session_lookups` is off).
                Action::LookupSession { .. } | Action::RecordSession { .. } => {
                    panic!("session action without a session store: {a:?}")
                }
            }
        }
    }

    fn check(&self) {
        let mut tuples = HashSet::new();
        for r in self.forwarder.values() {
            let conn = self.c.inventory().get(&r.flow);
            assert_eq!(
                conn.map(|c| c.route),
                Some(*r),
                "forwarder route unknown or stale"
            );
            if let Delivery::Nat { source } = r.delivery {
                assert!(
                    tuples.insert((source, r.target, r.flow.protocol())),
                    "two forwarder routes share {source} → {}",
                    r.target
                );
            }
        }
        let mut tuples = HashSet::new();
        let mut nat = 0;
        for (_, conn) in self.c.inventory().iter() {
            if let Some(source) = conn.nat_source() {
                nat += 1;
                assert!(tuples.insert((source, conn.route.target, conn.route.flow.protocol())));
                assert!(
                    PortRange::new(20000, 20003)
                        .unwrap()
                        .contains(source.port())
                );
            }
            assert_eq!(
                self.c.inventory().flow_of_reply(
                    conn.route.flow.protocol(),
                    conn.route.target,
                    host_sees(&conn.route)
                ),
                Some(conn.route.flow)
            );
        }
        assert_eq!(self.c.nat_ports_in_use(), nat);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nat_tuples_stay_unique_and_ports_are_freed(ops in prop::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut rows = Rows::default();
        for p in [Protocol::Tcp, Protocol::Udp] {
            rows.add(sa(VIP), p, 1, "10.1.0.1:8080", 50, 0);
            rows.add(sa(VIP), p, 2, "10.1.0.2:8080", 50, 0);
        }
        let mut c = Classifier::new(Settings::default()).unwrap();
        // Four ports: exhaustion happens.
        let range = PortRange::new(20000, 20003).unwrap();
        for p in [Protocol::Tcp, Protocol::Udp] {
            c.set_service(nat_service(VIP, p, &["10.1.255.1"], range)).unwrap();
        }
        let mut w = World { c, rows, forwarder: HashMap::new(), fail_next: false, now: t0 };
        for op in ops {
            let now = w.now;
            match op {
                Op::Syn(k) => w.c.on_miss(now, &mut w.rows, syn(client_flow(k, Protocol::Tcp))),
                Op::Ack(k) => w.c.on_miss(now, &mut w.rows, ack(client_flow(k, Protocol::Tcp))),
                Op::FinMiss(k) => w.c.on_miss(now, &mut w.rows, tcp(client_flow(k, Protocol::Tcp), TcpFlags::FIN | TcpFlags::ACK)),
                Op::Udp(k) => w.c.on_miss(now, &mut w.rows, udp(client_flow(k, Protocol::Udp))),
                Op::Final(k, udp_flow, rst) => {
                    let f = client_flow(k, if udp_flow { Protocol::Udp } else { Protocol::Tcp });
                    if rst {
                        w.c.on_final(now, &f, FinalReason::Rst, Side::Client);
                    } else {
                        w.c.on_final(now, &f, FinalReason::Fin, Side::Client);
                        w.c.on_final(now, &f, FinalReason::Fin, Side::Host);
                    }
                }
                Op::IdleAll(long) => {
                    let flows: Vec<FlowTuple> = w.forwarder.keys().copied().collect();
                    w.c.on_idle(now, if long { secs(900) } else { secs(30) }, &flows);
                }
                Op::Advance(m) => w.now += ms(u64::from(m)),
                Op::FailNextPlumb => w.fail_next = true,
                Op::Drain(h, d) => {
                    w.rows.set_target(h, if d { DirectiveState::Draining } else { DirectiveState::Active });
                    w.c.refresh_allotments();
                }
                Op::Timeout => w.c.handle_timeout(now),
            }
            w.execute();
            w.check();
        }
        // Retire everything: finals, then time.
        let flows: Vec<FlowTuple> = w.c.inventory().iter().map(|(f, _)| *f).collect();
        for f in &flows {
            w.c.on_final(w.now, f, FinalReason::Rst, Side::Client);
        }
        w.now += secs(3600);
        w.c.handle_timeout(w.now);
        w.execute();
        w.check();
        prop_assert!(w.c.inventory().is_empty());
        prop_assert_eq!(w.c.nat_ports_in_use(), 0);
        prop_assert!(w.forwarder.is_empty());
    }
}
