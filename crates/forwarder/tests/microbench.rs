//! Micro-benchmark (not an assertion): per-packet cost of the forwarder's programs measured with
//! BPF_PROG_TEST_RUN `repeat`, against a bare XDP_TX program in the same run. Needs root.
//!
//! ```text
//! cargo test --release -p switchyard-forwarder --test microbench -- --ignored --nocapture
//! ```

mod common;

use common::*;
use switchyard_forwarder::packet::FrameSpec;
use switchyard_forwarder::{Baseline, Dataplane, Flow, Protocol, Route, Settings, Vip};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

fn best(mut f: impl FnMut() -> f64) -> f64 {
    (0..ROUNDS).map(|_| f()).fold(f64::INFINITY, f64::min)
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
            dp.add_vip(Vip {
                proto: Protocol::Tcp,
                addr: sa(VIP4, 80),
            })
            .expect("vip");
            let flow = Flow {
                proto: Protocol::Tcp,
                client: sa(CLIENT4, 40000),
                vip: sa(VIP4, 80),
            };
            dp.add_route(&flow, &Route::full_nat(sa(HOST4, 8080), sa(BACK4, 20001)))
                .expect("route");
            // 100,000 other routes, so the lookup is not in a trivially small table.
            for p in 1..=100_000u32 {
                let [_, _, hi, lo] = p.to_be_bytes();
                let other = Flow {
                    client: std::net::SocketAddr::new(
                        std::net::Ipv4Addr::new(198, 18, 2 + hi % 200, lo).into(),
                        u16::try_from(1024 + p % 60000).unwrap_or(1024),
                    ),
                    ..flow
                };
                let _ = dp.add_route(&other, &Route::half_nat(sa(HOST4, 8080)));
            }
            let hit = FrameSpec::tcp(flow.client, flow.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .payload(&[0x61; 64])
                .build();
            let pass = FrameSpec::tcp(flow.client, sa(FRONT4, 22))
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            let baseline = Baseline::load().expect("baseline");
            let ns = |d: std::time::Duration| d.as_nanos() as f64;
            let bare = best(|| ns(baseline.run(&hit, front, REPEAT).expect("bare").duration));
            let xdp_hit = best(|| {
                ns(dp
                    .run_xdp_repeat(&hit, front, REPEAT)
                    .expect("xdp")
                    .duration)
            });
            let xdp_pass = best(|| {
                ns(dp
                    .run_xdp_repeat(&pass, front, REPEAT)
                    .expect("xdp")
                    .duration)
            });
            println!("routes installed: {}", dp.routes().expect("walk").len());
            println!("bare XDP_TX (swap MACs)     : {bare:6.1} ns/packet");
            println!(
                "forwarder XDP hit (full NAT): {xdp_hit:6.1} ns/packet  ({:.2}x bare)",
                xdp_hit / bare
            );
            println!(
                "forwarder XDP non-VIP pass  : {xdp_pass:6.1} ns/packet  ({:.2}x bare)",
                xdp_pass / bare
            );
        })
        .expect("enter lb");
}
