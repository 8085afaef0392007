//! The slow path (`sy_xdp_slow`, [`Dataplane::run_slow`] / `deliver_with_route`) and the NAT
//! source reply misses, through BPF_PROG_TEST_RUN in the namespace lab of `test_run.rs`: a frame
//! sent along a route that is *not* installed is rewritten byte for byte like the fast path
//! would, in both directions, every mode, family and protocol; anything else is dropped, never
//! passed or sent elsewhere. Needs root.

mod common;

use std::time::Duration;

use common::*;
use switchyard_forwarder::packet::{FrameSpec, tcp_flags, verify_checksums};
use switchyard_forwarder::{
    Dataplane, Event, Flow, Hook, Protocol, Route, Settings, SlowOutcome, Vip, tc_action,
    xdp_action,
};

const VPORT: u16 = 80;
const CPORT: u16 = 40000;
const HPORT: u16 = 8080;
const NPORT: u16 = 20001;

fn dataplane() -> Dataplane {
    let mut dp = Dataplane::load(Settings::default()).expect("load the data plane");
    for addr in [VIP4, VIP6] {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            dp.add_vip(Vip {
                proto,
                addr: sa(addr, VPORT),
            })
            .expect("add VIP");
        }
    }
    dp
}

fn spec(proto: Protocol) -> fn(std::net::SocketAddr, std::net::SocketAddr) -> FrameSpec {
    match proto {
        Protocol::Tcp => FrameSpec::tcp,
        Protocol::Udp => FrameSpec::udp,
    }
}

#[test]
fn slow_path_rewrites_are_byte_exact_without_installing_the_route() {
    if !have_root("slow_path_rewrites") {
        return;
    }
    let Some(lab) = lab("forwarder slow path rewrites") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let back = ifindex("back");
            let mut dp = dataplane();
            let mut runs = 0u64;
            for v6 in [false, true] {
                let (client, vip, host, back_addr) = if v6 {
                    (CLIENT6, VIP6, HOST6, BACK6)
                } else {
                    (CLIENT4, VIP4, HOST4, BACK4)
                };
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    for full in [true, false] {
                        let f = Flow {
                            proto,
                            client: sa(client, CPORT),
                            vip: sa(vip, VPORT),
                        };
                        let route = if full {
                            Route::full_nat(sa(host, HPORT), sa(back_addr, NPORT))
                        } else {
                            Route::half_nat(sa(host, HPORT))
                        };
                        let what = format!("{f} full_nat={full}");
                        let build = spec(proto);
                        let seen_src = if full { sa(back_addr, NPORT) } else { f.client };

                        // Forward: client -> VIP on front, out on back toward the host.
                        let input = build(f.client, f.vip)
                            .macs(CLIENT_MAC, FRONT_MAC)
                            .flags(tcp_flags::SYN)
                            .payload(b"hello")
                            .build();
                        let expected = build(seen_src, sa(host, HPORT))
                            .macs(BACK_MAC, HOST_MAC)
                            .ttl(63)
                            .flags(tcp_flags::SYN)
                            .payload(b"hello")
                            .build();
                        let (r, outcome) = dp.run_slow(&input, front, &f, &route).expect("run");
                        runs += 1;
                        assert_eq!(outcome, SlowOutcome::Sent, "{what}");
                        assert_eq!(r.action, xdp_action::REDIRECT, "{what}");
                        assert_eq!(r.frame, expected, "slow forward {what}");
                        verify_checksums(&r.frame).unwrap_or_else(|e| panic!("{what}: {e}"));

                        // Reply: host -> NAT source (or client) on back, out on front.
                        let reply_in = build(sa(host, HPORT), seen_src)
                            .macs(HOST_MAC, BACK_MAC)
                            .flags(tcp_flags::SYN | tcp_flags::ACK)
                            .payload(b"world!")
                            .build();
                        let reply_out = build(f.vip, f.client)
                            .macs(FRONT_MAC, CLIENT_MAC)
                            .ttl(63)
                            .flags(tcp_flags::SYN | tcp_flags::ACK)
                            .payload(b"world!")
                            .build();
                        let (r, outcome) = dp.run_slow(&reply_in, back, &f, &route).expect("run");
                        runs += 1;
                        assert_eq!(outcome, SlowOutcome::Sent, "{what}");
                        assert_eq!(r.action, xdp_action::REDIRECT, "{what}");
                        assert_eq!(r.frame, reply_out, "slow reply {what}");
                        verify_checksums(&r.frame).unwrap_or_else(|e| panic!("{what}: {e}"));

                        // Nothing was installed: the fast path still misses the forward frame
                        // and leaves the reply alone.
                        assert!(dp.route(&f).expect("route").is_none(), "{what}");
                        assert_eq!(
                            dp.run_xdp(&input, front).expect("xdp").action,
                            xdp_action::DROP,
                            "{what}: a miss"
                        );
                        let passed = dp.run_xdp(&reply_in, back).expect("xdp");
                        assert_eq!(passed.action, xdp_action::PASS, "{what}");
                        assert_eq!(passed.frame, reply_in, "{what}");
                    }
                }
            }
            assert!(dp.routes().expect("routes").is_empty());
            let c = dp.counters(Hook::Slow).expect("counters");
            assert_eq!(c.rx, runs);
            assert_eq!(c.slow_sent, runs);
            assert_eq!(c.slow_refused, 0);
            assert_eq!(c.hit_packets, runs / 2);
            assert_eq!(c.reply_packets, runs / 2);
            assert_eq!(dp.counters(Hook::Xdp).expect("c").hit_packets, 0);
        })
        .expect("enter lb");
}

#[test]
fn slow_path_drops_what_it_cannot_send_along_the_route() {
    if !have_root("slow_path_drops") {
        return;
    }
    let Some(lab) = lab("forwarder slow path refusals") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane();
            let f = Flow {
                proto: Protocol::Tcp,
                client: sa(CLIENT4, CPORT),
                vip: sa(VIP4, VPORT),
            };
            let route = Route::full_nat(sa(HOST4, HPORT), sa(BACK4, NPORT));
            let mut expect = |frame: &[u8], route: &Route, want: SlowOutcome| {
                let (r, outcome) = dp.run_slow(frame, front, &f, route).expect("run");
                assert_eq!(outcome, want);
                assert_eq!(r.action, xdp_action::DROP, "{want:?}");
                assert_eq!(r.frame, frame, "{want:?}: untouched");
            };
            // Another flow's frame (other client port): never sent along this route.
            let other = FrameSpec::tcp(sa(CLIENT4, CPORT + 1), f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            expect(&other, &route, SlowOutcome::WrongFlow);
            // The same ports over UDP: another flow too.
            let udp = FrameSpec::udp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            expect(&udp, &route, SlowOutcome::WrongFlow);
            // TTL 1.
            let ttl1 = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .ttl(1)
                .build();
            expect(&ttl1, &route, SlowOutcome::TtlExpired);
            // A truncated frame.
            let good = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            expect(&good[..40], &route, SlowOutcome::Unparsed);
            // A host without a neighbour entry: dropped (a pass would come back as a miss).
            let unresolved = Route::full_nat(sa("198.18.200.101", HPORT), sa(BACK4, NPORT));
            expect(&good, &unresolved, SlowOutcome::NoNeighbour);
            // No route to the host at all.
            let unroutable = Route::full_nat(sa("198.19.77.1", HPORT), sa(BACK4, NPORT));
            expect(&good, &unroutable, SlowOutcome::FibFailed);
            let c = dp.counters(Hook::Slow).expect("counters");
            assert_eq!(c.slow_refused, 6);
            assert_eq!(c.slow_sent, 0);
            assert_eq!(c.hit_packets, 0);
        })
        .expect("enter lb");
}

#[test]
fn packets_to_a_nat_source_without_route_are_reported_and_dropped() {
    if !have_root("nat_source_reply_misses") {
        return;
    }
    let Some(lab) = lab("forwarder NAT source reply misses") else {
        return;
    };
    lab.lb
        .enter(|| {
            let back = ifindex("back");
            let mut dp = dataplane();
            let mut events = dp.take_events().expect("events");
            let reply = |to: u16| {
                FrameSpec::tcp(sa(HOST4, HPORT), sa(BACK4, to))
                    .macs(HOST_MAC, BACK_MAC)
                    .flags(tcp_flags::SYN | tcp_flags::ACK)
                    .build()
            };
            // Not declared: passes untouched, as any non-VIP traffic.
            let r = dp.run_xdp(&reply(NPORT), back).expect("xdp");
            assert_eq!((r.action, &r.frame), (xdp_action::PASS, &reply(NPORT)));

            dp.set_nat_source(ip(BACK4), 20000, 32767).expect("set");
            for (hook, action, drop) in [
                (
                    Hook::Xdp,
                    dp.run_xdp(&reply(NPORT), back).expect("xdp").action,
                    xdp_action::DROP,
                ),
                (
                    Hook::Tc,
                    dp.run_tc(&reply(NPORT), back).expect("tc").action,
                    tc_action::SHOT,
                ),
            ] {
                assert_eq!(action, drop, "{hook:?}");
                let ev = events
                    .next_timeout(Duration::from_secs(1))
                    .expect("read")
                    .expect("an event");
                let Event::ReplyMiss(m) = ev else {
                    panic!("expected a reply miss, got {ev:?}")
                };
                assert_eq!(m.flow.src, sa(HOST4, HPORT));
                assert_eq!(m.flow.dst, sa(BACK4, NPORT));
                assert_eq!(m.hook, hook);
                assert_eq!(m.ifindex, back);
                assert_eq!(m.frame, reply(NPORT));
                assert_eq!(m.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
            }
            // Outside the port range, or another address: untouched.
            for frame in [
                reply(19999),
                reply(32768),
                FrameSpec::tcp(sa(HOST4, HPORT), sa(FRONT4, NPORT))
                    .macs(HOST_MAC, BACK_MAC)
                    .build(),
            ] {
                let r = dp.run_xdp(&frame, back).expect("xdp");
                assert_eq!((r.action, &r.frame), (xdp_action::PASS, &frame));
            }
            // A routed flow's reply is translated, not reported.
            let f = Flow {
                proto: Protocol::Tcp,
                client: sa(CLIENT4, CPORT),
                vip: sa(VIP4, VPORT),
            };
            dp.add_route(&f, &Route::full_nat(sa(HOST4, HPORT), sa(BACK4, NPORT)))
                .expect("add");
            assert_eq!(
                dp.run_xdp(&reply(NPORT), back).expect("xdp").action,
                xdp_action::REDIRECT
            );
            assert!(dp.remove_nat_source(ip(BACK4)).expect("remove"));
            assert!(!dp.remove_nat_source(ip(BACK4)).expect("remove"));
            assert!(dp.delete_route(&f).expect("delete"));
            let r = dp.run_xdp(&reply(NPORT), back).expect("xdp");
            assert_eq!(r.action, xdp_action::PASS);
            assert!(events.try_next().is_none());
            assert_eq!(dp.counters(Hook::Xdp).expect("c").nat_misses, 1);
            assert_eq!(dp.counters(Hook::Tc).expect("c").nat_misses, 1);
        })
        .expect("enter lb");
}
