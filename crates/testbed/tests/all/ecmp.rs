//! The router's multipath route spreads flows over the LB units, and a downed next hop drops
//! out of the spread until its link comes back.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use switchyard_testbed::{Netns, Topology, require_testbed};

use crate::PATIENCE;

const PORT: u16 = 8080;

/// Answers every connection to `addr` (bound inside `ns`) with the namespace's role, until
/// `stop` is set (or 30 s pass).
fn name_server(ns: &Netns, addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let listener = ns.enter(|| TcpListener::bind(addr)).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    let name = ns.role().to_owned();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.write_all(name.as_bytes());
                }
                Err(_) => thread::sleep(Duration::from_millis(1)),
            }
        }
    })
}

/// Opens `flows` connections (each from a fresh source port) from `client` to `addr` and counts
/// which LB unit answered each.
fn spread(client: &Netns, addr: SocketAddr, flows: usize) -> HashMap<String, usize> {
    client
        .enter(|| {
            let mut counts = HashMap::new();
            for _ in 0..flows {
                let mut conn = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
                conn.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut name = String::new();
                conn.read_to_string(&mut name).unwrap();
                *counts.entry(name).or_insert(0) += 1;
            }
            counts
        })
        .unwrap()
}

fn assert_both_substantial(counts: &HashMap<String, usize>, flows: usize, what: &str) {
    for lb in ["lb0", "lb1"] {
        let n = counts.get(lb).copied().unwrap_or(0);
        assert!(
            n * 10 >= flows,
            "{what}: {lb} served {n} of {flows} flows: {counts:?}"
        );
    }
}

#[test]
fn ecmp_spreads_flows_over_both_lb_units_and_fails_over() {
    let tb = require_testbed!("network namespaces (root)");
    let topo = Topology::builder()
        .clients(1)
        .lb_units(2)
        .hosts(0)
        .vip_on_lb_units(true)
        .build(&tb)
        .unwrap();
    let vip = topo.vip();
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = topo
        .lb_units()
        .iter()
        .flat_map(|lb| {
            [
                name_server(lb.ns(), vip.v4_socket(PORT), Arc::clone(&stop)),
                name_server(lb.ns(), vip.v6_socket(PORT), Arc::clone(&stop)),
            ]
        })
        .collect();
    let client = topo.client(0).ns();

    const FLOWS: usize = 80;
    for addr in [vip.v4_socket(PORT), vip.v6_socket(PORT)] {
        let counts = spread(client, addr, FLOWS);
        assert_eq!(counts.values().sum::<usize>(), FLOWS);
        assert_both_substantial(&counts, FLOWS, &format!("ECMP to {addr}"));
    }

    // lb1's link to the router goes down: every flow lands on lb0.
    let link = topo.lb_unit(1).primary().link();
    link.set_down().unwrap();
    for addr in [vip.v4_socket(PORT), vip.v6_socket(PORT)] {
        let counts = spread(client, addr, 30);
        assert_eq!(
            counts.get("lb0"),
            Some(&30),
            "{addr} with lb1 down: {counts:?}"
        );
    }
    // Back up: lb1 takes flows again.
    link.set_up().unwrap();
    for addr in [vip.v4_socket(PORT), vip.v6_socket(PORT)] {
        let counts = spread(client, addr, FLOWS);
        assert_both_substantial(&counts, FLOWS, &format!("ECMP to {addr} after link up"));
    }

    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}
