//! Micro-benchmark (not an assertion): per-packet cost of the forwarder's XDP program measured
//! with BPF_PROG_TEST_RUN `repeat`, against a bare XDP_TX program in the same run. Needs root.
//!
//! ```text
//! cargo test --release -p switchyard-forwarder --test microbench -- --ignored --nocapture
//! ```
//!
//! BPF_PROG_TEST_RUN does not restore the frame between repetitions: every run sees the previous
//! run's output. A forwarded frame is rewritten (and its TTL decremented), so a plain "route hit"
//! frame would be a hit once and then measure whatever the rewritten frame is. The hit
//! benchmark therefore installs two full-NAT routes that rewrite into each other (P1 → P2 →
//! P1 …, both real FIB lookups with resolved neighbours) and runs `REPEAT` = 60 repetitions per
//! call from TTL 64, so every repetition is a hit; the counters are checked afterwards. Each
//! figure is the mean over `CALLS` calls, best of `ROUNDS` rounds; the bare program runs the same
//! way on the same frame.

mod common;

use std::net::SocketAddr;

use common::*;
use switchyard_forwarder::packet::FrameSpec;
use switchyard_forwarder::{
    Baseline, Dataplane, FirewallRules, Flow, Hook, Prefix, Protocol, Route, Settings, Vip,
};

/// Repetitions per call: all hits from TTL 64 (the program passes TTL ≤ 1).
const REPEAT: u32 = 60;
const CALLS: usize = 200;
const ROUNDS: usize = 5;

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..ROUNDS).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// Mean ns per run over `CALLS` calls of `REPEAT` runs each.
fn mean(mut run: impl FnMut() -> std::time::Duration) -> f64 {
    let total: f64 = (0..CALLS).map(|_| run().as_nanos() as f64).sum();
    total / CALLS as f64
}

fn tcp(proto: Protocol, client: SocketAddr, vip: SocketAddr) -> Flow {
    Flow { proto, client, vip }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn per_packet_cost() {
    if !have_root("per_packet_cost") {
        return;
    }
    let Some(lab) = lab("forwarder microbench") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = Dataplane::load(Settings::default()).expect("load");
            // P1 = BACK:20001 -> HOST:8080, rewritten to P2 = FRONT:80 -> CLIENT:40000 and back.
            let p1 = tcp(Protocol::Tcp, sa(BACK4, 20001), sa(HOST4, 8080));
            let p2 = tcp(Protocol::Tcp, sa(FRONT4, 80), sa(CLIENT4, 40000));
            let p1v6 = tcp(Protocol::Tcp, sa(BACK6, 20001), sa(HOST6, 8080));
            let p2v6 = tcp(Protocol::Tcp, sa(FRONT6, 80), sa(CLIENT6, 40000));
            for (a, b) in [(p1, p2), (p1v6, p2v6)] {
                for f in [a, b] {
                    dp.add_vip(f.vip_endpoint()).expect("vip");
                }
                dp.add_route(&a, &Route::full_nat(b.vip, b.client))
                    .expect("route");
                dp.add_route(&b, &Route::full_nat(a.vip, a.client))
                    .expect("route");
            }
            // A firewall on the VIP costs nothing on hits (checked only for new connections).
            dp.set_firewall(
                &p1.vip_endpoint(),
                &FirewallRules {
                    allow: vec![Prefix::new(ip(BACK4), 24).expect("prefix")],
                    deny: vec![Prefix::new(ip("198.18.9.0"), 24).expect("prefix")],
                    new_conn_rate: Some((1000, 100)),
                },
            )
            .expect("firewall");
            // 100,000 other routes, so the lookup is not in a trivially small table.
            let vip = Vip {
                proto: Protocol::Tcp,
                addr: sa(VIP4, 80),
            };
            dp.add_vip(vip).expect("vip");
            for p in 1..=100_000u32 {
                let [_, _, hi, lo] = p.to_be_bytes();
                let other = Flow {
                    proto: Protocol::Tcp,
                    client: SocketAddr::new(
                        std::net::Ipv4Addr::new(198, 18, 2 + hi % 200, lo).into(),
                        u16::try_from(1024 + p % 60000).unwrap_or(1024),
                    ),
                    vip: vip.addr,
                };
                let _ = dp.add_route(&other, &Route::half_nat(sa(HOST4, 8080)));
            }
            let frame = |f: Flow| {
                FrameSpec::tcp(f.client, f.vip)
                    .macs(CLIENT_MAC, FRONT_MAC)
                    .payload(&[0x61; 64])
                    .build()
            };
            let hit = frame(p1);
            let hit6 = frame(p1v6);
            let pass = FrameSpec::tcp(sa(CLIENT4, 40000), sa(FRONT4, 22))
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            let baseline = Baseline::load().expect("baseline");
            let before = dp.counters(Hook::Xdp).expect("counters").hit_packets;
            let bare = best(|| mean(|| baseline.run(&hit, front, REPEAT).expect("bare").duration));
            let xdp_hit = best(|| {
                mean(|| {
                    dp.run_xdp_repeat(&hit, front, REPEAT)
                        .expect("xdp")
                        .duration
                })
            });
            let xdp_hit6 = best(|| {
                mean(|| {
                    dp.run_xdp_repeat(&hit6, front, REPEAT)
                        .expect("xdp")
                        .duration
                })
            });
            let xdp_pass = best(|| {
                mean(|| {
                    dp.run_xdp_repeat(&pass, front, REPEAT)
                        .expect("xdp")
                        .duration
                })
            });
            let hits = dp.counters(Hook::Xdp).expect("counters").hit_packets - before;
            let runs = (2 * ROUNDS * CALLS) as u64 * u64::from(REPEAT);
            assert_eq!(hits, runs, "every hit-benchmark run must be a route hit");
            println!("routes installed: {}", dp.routes().expect("walk").len());
            println!(
                "{hits} hit runs, all hits; {REPEAT} runs per call, {CALLS} calls, best of {ROUNDS}"
            );
            println!("bare XDP_TX (swap MACs)          : {bare:6.1} ns/packet");
            for (what, v) in [
                ("forwarder XDP hit, full NAT IPv4", xdp_hit),
                ("forwarder XDP hit, full NAT IPv6", xdp_hit6),
                ("forwarder XDP non-VIP pass      ", xdp_pass),
            ] {
                println!("{what} : {v:6.1} ns/packet  ({:.2}x bare)", v / bare);
            }
        })
        .expect("enter lb");
}
