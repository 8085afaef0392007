//! The forwarder's BPF programs driven through BPF_PROG_TEST_RUN on crafted frames, both the XDP
//! and the tc entry point, inside a namespace lab where `bpf_fib_lookup` resolves (permanent
//! neighbour entries): every rewrite is compared byte for byte with a frame built independently
//! by `packet::FrameSpec`, and checksums are verified by full recomputation. Needs root.

mod common;

use std::time::Duration;

use common::*;
use switchyard_forwarder::packet::{ETH_LEN, FrameSpec, tcp_flags, verify_checksums};
use switchyard_forwarder::{
    Dataplane, Error, Event, Flow, Hook, Protocol, Route, Settings, Vip, tc_action, xdp_action,
};

const VPORT: u16 = 80;
const CPORT: u16 = 40000;
const HPORT: u16 = 8080;
const NPORT: u16 = 20001;
/// Shortest frame BPF_PROG_TEST_RUN accepts for a tc program on this kernel (6.18).
const TC_TEST_RUN_MIN: usize = 54;

fn dataplane(settings: Settings) -> Dataplane {
    let mut dp = Dataplane::load(settings).expect("load the data plane");
    for (addr, proto) in [
        (VIP4, Protocol::Tcp),
        (VIP4, Protocol::Udp),
        (VIP6, Protocol::Tcp),
        (VIP6, Protocol::Udp),
    ] {
        dp.add_vip(Vip {
            proto,
            addr: sa(addr, VPORT),
        })
        .expect("add VIP");
    }
    dp
}

fn flow(proto: Protocol, v6: bool) -> Flow {
    let (c, v) = if v6 { (CLIENT6, VIP6) } else { (CLIENT4, VIP4) };
    Flow {
        proto,
        client: sa(c, CPORT),
        vip: sa(v, VPORT),
    }
}

fn spec(proto: Protocol) -> fn(std::net::SocketAddr, std::net::SocketAddr) -> FrameSpec {
    match proto {
        Protocol::Tcp => FrameSpec::tcp,
        Protocol::Udp => FrameSpec::udp,
    }
}

/// Runs `input` through both programs on `ifindex` and checks actions and output frames.
fn expect_both(dp: &Dataplane, input: &[u8], ifindex: u32, xdp: u32, tc: u32, out: &[u8]) {
    let x = dp.run_xdp(input, ifindex).expect("xdp test run");
    assert_eq!(x.action, xdp, "XDP action");
    assert_eq!(x.frame, out, "XDP output frame");
    let t = dp.run_tc(input, ifindex).expect("tc test run");
    assert_eq!(t.action, tc, "tc action");
    assert_eq!(t.frame, out, "tc output frame");
}

/// Both programs leave `input` alone (pass, unchanged).
fn expect_untouched(dp: &Dataplane, input: &[u8], ifindex: u32) {
    expect_both(dp, input, ifindex, xdp_action::PASS, tc_action::OK, input);
}

#[test]
fn rewrites_are_byte_exact_in_every_mode_family_and_protocol() {
    if !have_root("rewrites_are_byte_exact") {
        return;
    }
    let Some(lab) = lab("forwarder test_run rewrites") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let back = ifindex("back");
            let mut dp = dataplane(Settings::default());
            for v6 in [false, true] {
                let (host, back_addr) = if v6 { (HOST6, BACK6) } else { (HOST4, BACK4) };
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    for full in [true, false] {
                        let f = flow(proto, v6);
                        let route = if full {
                            Route::full_nat(sa(host, HPORT), sa(back_addr, NPORT))
                        } else {
                            Route::half_nat(sa(host, HPORT))
                        };
                        dp.add_route(&f, &route).expect("add route");
                        let what = format!("{f} full_nat={full}");

                        // Client -> VIP, arriving on front, leaves on back toward the host.
                        let build = spec(proto);
                        let input = build(f.client, f.vip)
                            .macs(CLIENT_MAC, FRONT_MAC)
                            .flags(tcp_flags::ACK | tcp_flags::PSH)
                            .payload(b"GET / HTTP/1.1\r\n\r\n")
                            .build();
                        let seen_src = if full { sa(back_addr, NPORT) } else { f.client };
                        let expected = build(seen_src, sa(host, HPORT))
                            .macs(BACK_MAC, HOST_MAC)
                            .ttl(63)
                            .flags(tcp_flags::ACK | tcp_flags::PSH)
                            .payload(b"GET / HTTP/1.1\r\n\r\n")
                            .build();
                        verify_checksums(&expected).expect("expected frame is valid");
                        let x = dp.run_xdp(&input, front).expect("xdp");
                        assert_eq!(x.action, xdp_action::REDIRECT, "{what}");
                        assert_eq!(x.frame, expected, "XDP forward {what}");
                        verify_checksums(&x.frame).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let t = dp.run_tc(&input, front).expect("tc");
                        assert_eq!(t.action, tc_action::REDIRECT, "{what}");
                        assert_eq!(t.frame, expected, "tc forward {what}");

                        // Host -> (NAT source | client), arriving on back, back to the client.
                        let reply_in = build(sa(host, HPORT), seen_src)
                            .macs(HOST_MAC, BACK_MAC)
                            .flags(tcp_flags::ACK)
                            .payload(b"HTTP/1.1 200 OK\r\n\r\n")
                            .build();
                        let reply_out = build(f.vip, f.client)
                            .macs(FRONT_MAC, CLIENT_MAC)
                            .ttl(63)
                            .flags(tcp_flags::ACK)
                            .payload(b"HTTP/1.1 200 OK\r\n\r\n")
                            .build();
                        expect_both(
                            &dp,
                            &reply_in,
                            back,
                            xdp_action::REDIRECT,
                            tc_action::REDIRECT,
                            &reply_out,
                        );
                        verify_checksums(&reply_out).expect("valid");
                        assert!(dp.delete_route(&f).expect("delete"));
                        // Without the route the reply is no longer translated.
                        expect_untouched(&dp, &reply_in, back);
                    }
                }
            }
            let c = dp.counters(Hook::Xdp).expect("counters");
            assert_eq!(c.hit_packets, 8);
            assert_eq!(c.reply_packets, 8);
            assert_eq!(c.redirected, 16);
            let t = dp.counters(Hook::Tc).expect("counters");
            assert_eq!(t.hit_packets, 8);
            assert_eq!(t.reply_packets, 8);
            let s = dp
                .vip_stats(&Vip {
                    proto: Protocol::Tcp,
                    addr: sa(VIP4, VPORT),
                })
                .expect("stats")
                .expect("configured");
            assert_eq!(s.packets, 4, "2 routes x 2 programs");
            assert_eq!(s.reply_packets, 4);
        })
        .expect("enter lb");
}

#[test]
fn udp_zero_checksum_stays_zero_and_ipv4_options_are_kept() {
    if !have_root("udp_zero_checksum") {
        return;
    }
    let Some(lab) = lab("forwarder test_run udp0 options") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let f = flow(Protocol::Udp, false);
            let route = Route::full_nat(sa(HOST4, HPORT), sa(BACK4, NPORT));
            dp.add_route(&f, &route).expect("add");
            let input = FrameSpec::udp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .udp_zero_checksum()
                .build();
            let expected = FrameSpec::udp(sa(BACK4, NPORT), sa(HOST4, HPORT))
                .macs(BACK_MAC, HOST_MAC)
                .ttl(63)
                .udp_zero_checksum()
                .build();
            expect_both(
                &dp,
                &input,
                front,
                xdp_action::REDIRECT,
                tc_action::REDIRECT,
                &expected,
            );
            let udp_csum_at = ETH_LEN + 20 + 6;
            assert_eq!(&expected[udp_csum_at..udp_csum_at + 2], &[0, 0]);

            // IPv4 options (NOP NOP NOP NOP, record route with room for one address):
            // the transport header is found after them and they are carried unchanged.
            let tf = flow(Protocol::Tcp, false);
            dp.add_route(&tf, &route).expect("add");
            let opts = [1, 1, 1, 1, 7, 7, 4, 0, 0, 0, 0, 0];
            let input = FrameSpec::tcp(tf.client, tf.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .ipv4_options(&opts)
                .build();
            let expected = FrameSpec::tcp(sa(BACK4, NPORT), sa(HOST4, HPORT))
                .macs(BACK_MAC, HOST_MAC)
                .ttl(63)
                .ipv4_options(&opts)
                .build();
            expect_both(
                &dp,
                &input,
                front,
                xdp_action::REDIRECT,
                tc_action::REDIRECT,
                &expected,
            );
            verify_checksums(&expected).expect("valid");
        })
        .expect("enter lb");
}

#[test]
fn misses_are_reported_with_the_frame_and_dropped() {
    if !have_root("misses_are_reported") {
        return;
    }
    let Some(lab) = lab("forwarder test_run misses") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let mut events = dp.take_events().expect("events");
            for v6 in [false, true] {
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    let f = flow(proto, v6);
                    let input = spec(proto)(f.client, f.vip)
                        .macs(CLIENT_MAC, FRONT_MAC)
                        .build();
                    for (hook, r, drop) in [
                        (
                            Hook::Xdp,
                            dp.run_xdp(&input, front).expect("xdp"),
                            xdp_action::DROP,
                        ),
                        (
                            Hook::Tc,
                            dp.run_tc(&input, front).expect("tc"),
                            tc_action::SHOT,
                        ),
                    ] {
                        assert_eq!(r.action, drop, "{f} {hook:?}");
                        let ev = events
                            .next_timeout(Duration::from_secs(1))
                            .expect("read")
                            .expect("a miss event");
                        let Event::Miss(m) = ev else {
                            panic!("expected a miss, got {ev:?}")
                        };
                        assert_eq!(m.flow.src, f.client);
                        assert_eq!(m.flow.dst, f.vip);
                        assert_eq!(m.flow.proto, proto);
                        assert_eq!(m.hook, hook);
                        assert_eq!(m.ifindex, front);
                        assert_eq!(m.frame, input, "the whole frame is captured");
                        assert_eq!(m.len as usize, input.len());
                        if proto == Protocol::Tcp {
                            assert_eq!(m.tcp_flags, tcp_flags::SYN);
                        }
                    }
                }
            }
            assert!(events.try_next().is_none());
            assert_eq!(dp.counters(Hook::Xdp).expect("c").misses, 4);
            assert_eq!(dp.counters(Hook::Tc).expect("c").misses, 4);
            let s = dp
                .vip_stats(&Vip {
                    proto: Protocol::Udp,
                    addr: sa(VIP6, VPORT),
                })
                .expect("stats")
                .expect("configured");
            assert_eq!(s.misses, 2);

            // A full-size frame is captured whole (1514 bytes).
            let f = flow(Protocol::Tcp, false);
            let big = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .payload(&[0x5a; 1460])
                .build();
            assert_eq!(big.len(), 1514);
            assert_eq!(
                dp.run_xdp(&big, front).expect("xdp").action,
                xdp_action::DROP
            );
            let Some(Event::Miss(m)) = events.next_timeout(Duration::from_secs(1)).expect("read")
            else {
                panic!("expected a miss")
            };
            assert_eq!(m.frame, big);
        })
        .expect("enter lb");
}

#[test]
fn final_packets_are_reported_and_still_forwarded() {
    if !have_root("final_packets") {
        return;
    }
    let Some(lab) = lab("forwarder test_run finals") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let back = ifindex("back");
            let mut dp = dataplane(Settings::default());
            let mut events = dp.take_events().expect("events");
            let f = flow(Protocol::Tcp, false);
            dp.add_route(&f, &Route::full_nat(sa(HOST4, HPORT), sa(BACK4, NPORT)))
                .expect("add");
            for flags in [tcp_flags::FIN | tcp_flags::ACK, tcp_flags::RST] {
                let input = FrameSpec::tcp(f.client, f.vip)
                    .macs(CLIENT_MAC, FRONT_MAC)
                    .flags(flags)
                    .build();
                let expected = FrameSpec::tcp(sa(BACK4, NPORT), sa(HOST4, HPORT))
                    .macs(BACK_MAC, HOST_MAC)
                    .ttl(63)
                    .flags(flags)
                    .build();
                expect_both(
                    &dp,
                    &input,
                    front,
                    xdp_action::REDIRECT,
                    tc_action::REDIRECT,
                    &expected,
                );
                for hook in [Hook::Xdp, Hook::Tc] {
                    let Some(Event::Final(fin)) =
                        events.next_timeout(Duration::from_secs(1)).expect("read")
                    else {
                        panic!("expected a final event")
                    };
                    assert_eq!(fin.hook, hook);
                    assert_eq!(fin.tcp_flags, flags);
                    assert_eq!((fin.flow.src, fin.flow.dst), (f.client, f.vip));
                }
            }
            // A FIN from the host side is reported with the host-side tuple.
            let reply = FrameSpec::tcp(sa(HOST4, HPORT), sa(BACK4, NPORT))
                .macs(HOST_MAC, BACK_MAC)
                .flags(tcp_flags::FIN | tcp_flags::ACK)
                .build();
            assert_eq!(
                dp.run_xdp(&reply, back).expect("xdp").action,
                xdp_action::REDIRECT
            );
            let Some(Event::Final(fin)) =
                events.next_timeout(Duration::from_secs(1)).expect("read")
            else {
                panic!("expected a final event")
            };
            assert_eq!(
                (fin.flow.src, fin.flow.dst),
                (sa(HOST4, HPORT), sa(BACK4, NPORT))
            );
            assert_eq!(dp.counters(Hook::Xdp).expect("c").finals, 3);
        })
        .expect("enter lb");
}

/// A valid VIP frame truncated at every length, IPv4 header variations, fragments, IPv6
/// extension headers, VLAN tags, non-IP and TTL 1: never rewritten, always passed untouched.
#[test]
fn odd_frames_are_never_rewritten() {
    if !have_root("odd_frames") {
        return;
    }
    let Some(lab) = lab("forwarder test_run odd frames") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            for v6 in [false, true] {
                for proto in [Protocol::Tcp, Protocol::Udp] {
                    let f = flow(proto, v6);
                    let route = Route::half_nat(sa(if v6 { HOST6 } else { HOST4 }, HPORT));
                    dp.add_route(&f, &route).expect("add");
                    let full = spec(proto)(f.client, f.vip)
                        .macs(CLIENT_MAC, FRONT_MAC)
                        .payload(b"abcdefgh")
                        .build();
                    // Every truncation (the kernel needs at least an Ethernet header).
                    for len in ETH_LEN..full.len() {
                        let cut = &full[..len];
                        let x = dp.run_xdp(cut, front).expect("xdp");
                        assert_eq!(x.action, xdp_action::PASS, "{f} cut at {len}");
                        assert_eq!(x.frame, cut, "{f} cut at {len}");
                        // The kernel's skb test run refuses frames under 54 bytes (EINVAL);
                        // XDP above covers those boundaries.
                        let t = match dp.run_tc(cut, front) {
                            Ok(t) => t,
                            Err(e) if len < TC_TEST_RUN_MIN => {
                                let _ = e;
                                continue;
                            }
                            Err(e) => panic!("tc on {f} cut at {len}: {e}"),
                        };
                        assert_eq!(t.action, tc_action::OK, "{f} cut at {len}");
                        assert_eq!(t.frame, cut, "{f} cut at {len}");
                    }
                    // TTL 1: left to the stack (ICMP time exceeded).
                    let ttl1 = spec(proto)(f.client, f.vip)
                        .macs(CLIENT_MAC, FRONT_MAC)
                        .ttl(1)
                        .build();
                    expect_untouched(&dp, &ttl1, front);
                    // VLAN tag in front of a routed flow's packet.
                    let mut vlan = full.clone();
                    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
                    expect_untouched(&dp, &vlan, front);
                    // Non-IP ethertype.
                    let mut other = full.clone();
                    other[12] = 0x88;
                    other[13] = 0xb5;
                    expect_untouched(&dp, &other, front);
                }
            }
            let f = flow(Protocol::Tcp, false);
            let good = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            let ip = ETH_LEN;
            // IHL below 5, IHL beyond the total length, total length beyond the frame.
            for (at, value) in [(ip, 0x44u8), (ip, 0x4f), (ip + 3, 0xff), (ip, 0x55)] {
                let mut bad = good.clone();
                bad[at] = value;
                expect_untouched(&dp, &bad, front);
            }
            // Fragments: more-fragments set, or a non-zero offset.
            for (hi, lo) in [(0x20u8, 0u8), (0x00, 0x10), (0x20, 0x01)] {
                let mut frag = good.clone();
                frag[ip + 6] = hi;
                frag[ip + 7] = lo;
                expect_untouched(&dp, &frag, front);
            }
            // IPv6 with a destination-options header before TCP.
            let f6 = flow(Protocol::Tcp, true);
            let mut ext = FrameSpec::tcp(f6.client, f6.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            let l4 = ext.split_off(ETH_LEN + 40);
            ext[ETH_LEN + 6] = 60; // next header: destination options
            let plen = u16::try_from(l4.len() + 8).expect("small");
            ext[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&plen.to_be_bytes());
            ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next TCP, len 0, PadN
            ext.extend_from_slice(&l4);
            expect_untouched(&dp, &ext, front);
            // TCP data offset below 5 or beyond the segment.
            for doff in [0x40u8, 0xf0] {
                let mut bad = good.clone();
                bad[ETH_LEN + 20 + 12] = doff;
                expect_untouched(&dp, &bad, front);
            }

            let x = dp.counters(Hook::Xdp).expect("counters");
            assert_eq!(x.hit_packets, 0, "nothing was forwarded: {x:?}");
            assert_eq!(x.fragments, 3);
            assert_eq!(x.ipv6_ext, 1);
            assert_eq!(x.vlan, 4);
            assert_eq!(x.non_ip, 4);
            assert_eq!(x.ttl_expired, 4);
            assert!(x.malformed > 100, "{x:?}");
            assert_eq!(x.misses, 0);
            assert_eq!(dp.counters(Hook::Tc).expect("counters").hit_packets, 0);
        })
        .expect("enter lb");
}

#[test]
fn non_vip_traffic_passes_untouched() {
    if !have_root("non_vip_traffic") {
        return;
    }
    let Some(lab) = lab("forwarder test_run non-VIP") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let f = flow(Protocol::Tcp, false);
            dp.add_route(&f, &Route::half_nat(sa(HOST4, HPORT)))
                .expect("add");
            for frame in [
                // Another port of the VIP address, another address, another protocol's port.
                FrameSpec::tcp(f.client, sa(VIP4, 81)).build(),
                FrameSpec::tcp(f.client, sa(FRONT4, VPORT)).build(),
                FrameSpec::udp(sa(CLIENT6, 5), sa(FRONT6, 53)).build(),
                FrameSpec::tcp(sa(HOST4, HPORT), sa(CLIENT4, 1)).build(),
            ] {
                expect_untouched(&dp, &frame, front);
            }
            assert_eq!(dp.counters(Hook::Xdp).expect("c").passed, 4);
        })
        .expect("enter lb");
}

#[test]
fn unresolved_neighbours_pass_on_xdp_and_use_redirect_neigh_on_tc() {
    if !have_root("unresolved_neighbours") {
        return;
    }
    let Some(lab) = lab("forwarder test_run no neighbour") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let f = flow(Protocol::Tcp, false);
            // 198.18.200.77 is on the back segment but has no neighbour entry.
            dp.add_route(&f, &Route::half_nat(sa("198.18.200.77", HPORT)))
                .expect("add");
            let input = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .build();
            let x = dp.run_xdp(&input, front).expect("xdp");
            assert_eq!(x.action, xdp_action::PASS);
            assert_eq!(x.frame, input, "XDP leaves it for tc");
            let t = dp.run_tc(&input, front).expect("tc");
            assert_eq!(t.action, tc_action::REDIRECT);
            // L3/L4 rewritten, L2 left for bpf_redirect_neigh to fill in.
            let mut expected = FrameSpec::tcp(f.client, sa("198.18.200.77", HPORT))
                .ttl(63)
                .build();
            expected[..12].copy_from_slice(&input[..12]);
            assert_eq!(t.frame, expected);
            assert_eq!(dp.counters(Hook::Xdp).expect("c").fib_no_neigh, 1);
            assert_eq!(dp.counters(Hook::Tc).expect("c").fib_no_neigh, 1);
        })
        .expect("enter lb");
}

#[test]
fn route_table_api() {
    if !have_root("route_table_api") {
        return;
    }
    let mut dp = dataplane(Settings {
        max_routes: 4,
        ..Settings::default()
    });
    let f = |port| Flow {
        proto: Protocol::Tcp,
        client: sa(CLIENT4, port),
        vip: sa(VIP4, VPORT),
    };
    let route = |port| Route::full_nat(sa(HOST4, HPORT), sa(BACK4, port));
    for p in 1..=4 {
        dp.add_route(&f(p), &route(p)).expect("fits");
    }
    // Re-installing the same route works when full; a different route needs a free reply
    // slot (its reply key changes), and on failure the old route stays intact.
    dp.add_route(&f(1), &route(1)).expect("same route again");
    assert!(matches!(
        dp.add_route(&f(1), &route(11)),
        Err(Error::TableFull { max_routes: 4 })
    ));
    assert_eq!(
        dp.route(&f(1)).expect("get").expect("present").route,
        route(1)
    );
    assert!(matches!(
        dp.add_route(&f(5), &route(5)),
        Err(Error::TableFull { max_routes: 4 })
    ));
    assert_eq!(dp.routes().expect("walk").len(), 4);
    assert!(dp.delete_route(&f(2)).expect("delete"));
    assert!(!dp.delete_route(&f(2)).expect("delete again"));
    dp.add_route(&f(5), &route(5)).expect("room again");

    let unknown = Flow {
        vip: sa(VIP4, 443),
        ..f(9)
    };
    assert!(matches!(
        dp.add_route(&unknown, &route(9)),
        Err(Error::UnknownVip(_))
    ));
    let idle = dp.idle_flows(Duration::from_secs(3600)).expect("idle");
    assert!(idle.is_empty(), "just installed");
    let idle = dp.idle_flows(Duration::ZERO).expect("idle");
    assert_eq!(idle.len(), 4);
    assert!(
        dp.remove_vip(Vip {
            proto: Protocol::Tcp,
            addr: sa(VIP4, VPORT)
        })
        .expect("remove")
    );
}
