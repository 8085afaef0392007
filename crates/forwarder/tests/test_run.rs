//! The forwarder's BPF programs driven through BPF_PROG_TEST_RUN on crafted frames, both the XDP
//! and the tc entry point, inside a namespace lab where `bpf_fib_lookup` resolves (permanent
//! neighbour entries): every rewrite is compared byte for byte with a frame built independently
//! by `packet::FrameSpec`, and checksums are verified by full recomputation. Needs root.

mod common;

use std::time::Duration;

use common::*;
use switchyard_forwarder::packet::{ETH_LEN, FrameSpec, tcp_flags, verify_checksums};
use switchyard_forwarder::{
    Dataplane, Error, Event, FirewallRules, Flow, Hook, Prefix, Protocol, Route, Settings, Vip,
    tc_action, xdp_action,
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
            // Per host endpoint: both directions of every route to it, in both programs.
            let hosts = dp.host_stats().expect("host stats");
            let endpoints: Vec<_> = hosts.iter().map(|(e, _)| *e).collect();
            assert_eq!(endpoints.len(), 2, "{hosts:?}");
            assert!(endpoints.contains(&sa(HOST4, HPORT)) && endpoints.contains(&sa(HOST6, HPORT)));
            for (endpoint, h) in &hosts {
                assert_eq!(
                    (h.packets, h.reply_packets),
                    (8, 8),
                    "{endpoint}: 4 routes x 2 programs"
                );
            }
            let sum = |pick: fn(&switchyard_forwarder::HostStats) -> u64| {
                hosts.iter().map(|(_, h)| pick(h)).sum::<u64>()
            };
            assert_eq!(sum(|h| h.bytes), c.hit_bytes + t.hit_bytes);
            assert_eq!(sum(|h| h.reply_bytes), c.reply_bytes + t.reply_bytes);
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

            // A SYN from the client on the route (the 4-tuple opened again) is forwarded
            // and reported as a reopen; the host's SYN-ACK and plain ACKs are not reported.
            let syn = FrameSpec::tcp(f.client, f.vip)
                .macs(CLIENT_MAC, FRONT_MAC)
                .flags(tcp_flags::SYN)
                .build();
            let x = dp.run_xdp(&syn, front).expect("xdp");
            assert_eq!(x.action, xdp_action::REDIRECT, "forwarded along the route");
            let Some(Event::Reopen(r)) = events.next_timeout(Duration::from_secs(1)).expect("read")
            else {
                panic!("expected a reopen event")
            };
            assert_eq!(
                (r.flow.src, r.flow.dst, r.tcp_flags),
                (f.client, f.vip, tcp_flags::SYN)
            );
            for (frame, ifindex) in [
                (
                    FrameSpec::tcp(sa(HOST4, HPORT), sa(BACK4, NPORT))
                        .macs(HOST_MAC, BACK_MAC)
                        .flags(tcp_flags::SYN | tcp_flags::ACK)
                        .build(),
                    back,
                ),
                (
                    FrameSpec::tcp(f.client, f.vip)
                        .macs(CLIENT_MAC, FRONT_MAC)
                        .flags(tcp_flags::ACK)
                        .build(),
                    front,
                ),
            ] {
                assert_eq!(
                    dp.run_xdp(&frame, ifindex).expect("xdp").action,
                    xdp_action::REDIRECT
                );
            }
            assert_eq!(
                events
                    .next_timeout(Duration::from_millis(200))
                    .expect("read"),
                None,
                "no event for a SYN-ACK or an ACK"
            );
            let c = dp.counters(Hook::Xdp).expect("c");
            assert_eq!((c.reopens, c.finals), (1, 3));
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

#[test]
fn routes_whose_replies_collide_are_refused() {
    if !have_root("route_conflicts") {
        return;
    }
    let mut dp = dataplane(Settings::default());
    let other = Vip {
        proto: Protocol::Tcp,
        addr: sa(VIP4, 81),
    };
    dp.add_vip(other).expect("vip");
    let a = Flow {
        proto: Protocol::Tcp,
        client: sa(CLIENT4, 7000),
        vip: sa(VIP4, VPORT),
    };
    let b = Flow {
        vip: other.addr,
        ..a
    };
    let host = Route::half_nat(sa(HOST4, HPORT));
    dp.add_route(&a, &host).expect("first");
    // Same client endpoint, same host endpoint: the host's replies would be ambiguous.
    assert!(matches!(
        dp.add_route(&b, &host),
        Err(Error::RouteConflict(_))
    ));
    assert_eq!(dp.route(&b).expect("get"), None, "nothing installed");
    dp.add_route(&a, &host)
        .expect("re-installing the same route is fine");
    dp.add_route(&b, &Route::half_nat(sa(HOST4, HPORT + 1)))
        .expect("another host port");
    // The reply direction of a route is not a route of its own.
    let reply_side = Flow {
        proto: Protocol::Tcp,
        client: sa(HOST4, HPORT),
        vip: a.client,
    };
    assert_eq!(dp.route(&reply_side).expect("get"), None);
    assert!(!dp.delete_route(&reply_side).expect("delete"));
    assert_eq!(dp.routes().expect("walk").len(), 2);
}

// ---- firewall -------------------------------------------------------------------------------

/// What the XDP program did with one frame, read from its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Handed to the classifier (miss event, dropped).
    Miss,
    Denied,
    NotAllowed,
    RateLimited,
    /// A route hit, forwarded.
    Forwarded,
    /// Not for a VIP: untouched.
    Passed,
}

fn fate_of(dp: &Dataplane, frame: &[u8], ifindex: u32) -> Fate {
    let before = dp.counters(Hook::Xdp).expect("counters");
    let r = dp.run_xdp(frame, ifindex).expect("xdp");
    let after = dp.counters(Hook::Xdp).expect("counters");
    let fate = if after.misses > before.misses {
        Fate::Miss
    } else if after.fw_denied > before.fw_denied {
        Fate::Denied
    } else if after.fw_not_allowed > before.fw_not_allowed {
        Fate::NotAllowed
    } else if after.fw_rate_limited > before.fw_rate_limited {
        Fate::RateLimited
    } else if after.hit_packets > before.hit_packets {
        Fate::Forwarded
    } else {
        assert_eq!(after.passed, before.passed + 1, "{after:?}");
        Fate::Passed
    };
    let action = match fate {
        Fate::Forwarded => xdp_action::REDIRECT,
        Fate::Passed => xdp_action::PASS,
        _ => xdp_action::DROP,
    };
    assert_eq!(r.action, action, "{fate:?}");
    if fate == Fate::Passed {
        assert_eq!(r.frame, frame, "passed untouched");
    }
    fate
}

fn syn(proto: Protocol, client: std::net::SocketAddr, vip: std::net::SocketAddr) -> Vec<u8> {
    spec(proto)(client, vip)
        .macs(CLIENT_MAC, FRONT_MAC)
        .flags(tcp_flags::SYN)
        .build()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn vip(addr: &str, proto: Protocol) -> Vip {
    Vip {
        proto,
        addr: sa(addr, VPORT),
    }
}

#[test]
fn firewall_prefixes_drop_what_they_should_and_nothing_else() {
    if !have_root("firewall_prefixes") {
        return;
    }
    let Some(lab) = lab("forwarder test_run firewall prefixes") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let tcp4 = vip(VIP4, Protocol::Tcp);
            let udp4 = vip(VIP4, Protocol::Udp);
            let tcp6 = vip(VIP6, Protocol::Tcp);
            // Allow 198.18/16 except 198.18.5/24, but 198.18.5.128/25 again.
            let rules4 = FirewallRules {
                allow: vec![prefix("198.18.0.0/16"), prefix("198.18.5.128/25")],
                deny: vec![prefix("198.18.5.0/24")],
                new_conn_rate: None,
            };
            dp.set_firewall(&tcp4, &rules4).expect("set");
            dp.set_firewall(&udp4, &rules4).expect("set");
            assert_eq!(dp.firewall(&tcp4), Some(&rules4));
            // IPv6: a deny list only.
            dp.set_firewall(
                &tcp6,
                &FirewallRules {
                    deny: vec![prefix("fd53:7900:0:9::/64")],
                    ..FirewallRules::default()
                },
            )
            .expect("set v6");
            let v4 = sa(VIP4, VPORT);
            let v6 = sa(VIP6, VPORT);
            let t = Protocol::Tcp;
            let cases = [
                (syn(t, sa("198.18.1.2", 1000), v4), Fate::Miss, "allowed"),
                (
                    syn(t, sa("198.18.5.7", 1000), v4),
                    Fate::Denied,
                    "deny inside allow",
                ),
                (
                    syn(t, sa("198.18.5.200", 1000), v4),
                    Fate::Miss,
                    "allow inside deny",
                ),
                (
                    syn(t, sa("198.19.7.7", 1000), v4),
                    Fate::NotAllowed,
                    "outside the allow list",
                ),
                (
                    syn(Protocol::Udp, sa("198.18.5.7", 1000), v4),
                    Fate::Denied,
                    "UDP datagrams are new connections",
                ),
                (
                    syn(t, sa("fd53:7900:0:1::2", 1000), v6),
                    Fate::Miss,
                    "v6 allowed",
                ),
                (
                    syn(t, sa("fd53:7900:0:9::5", 1000), v6),
                    Fate::Denied,
                    "v6 denied",
                ),
                (
                    syn(Protocol::Udp, sa("fd53:7900:0:9::5", 1000), v6),
                    Fate::Miss,
                    "a VIP without rules is unaffected",
                ),
                (
                    syn(t, sa("198.18.5.7", 1000), sa(VIP4, 81)),
                    Fate::Passed,
                    "not a VIP",
                ),
            ];
            for (frame, want, what) in &cases {
                assert_eq!(fate_of(&dp, frame, front), *want, "{what}");
            }
            // Only new connections are checked: a mid-connection segment without a route goes
            // to the classifier, which decides.
            let ack = FrameSpec::tcp(sa("198.18.5.7", 1001), v4)
                .macs(CLIENT_MAC, FRONT_MAC)
                .flags(tcp_flags::ACK)
                .build();
            assert_eq!(fate_of(&dp, &ack, front), Fate::Miss, "ACK without a route");
            // Established flows are never re-checked, whatever their flags.
            let est = Flow {
                proto: t,
                client: sa("198.18.5.7", 1002),
                vip: v4,
            };
            dp.add_route(&est, &Route::half_nat(sa(HOST4, HPORT)))
                .expect("route");
            for flags in [
                tcp_flags::SYN,
                tcp_flags::ACK,
                tcp_flags::ACK | tcp_flags::PSH,
            ] {
                let f = FrameSpec::tcp(est.client, est.vip)
                    .macs(CLIENT_MAC, FRONT_MAC)
                    .flags(flags)
                    .build();
                assert_eq!(fate_of(&dp, &f, front), Fate::Forwarded, "flags {flags:#x}");
            }
            // tc enforces the same rules.
            let denied = syn(t, sa("198.18.5.7", 1000), v4);
            assert_eq!(
                dp.run_tc(&denied, front).expect("tc").action,
                tc_action::SHOT
            );
            assert_eq!(dp.counters(Hook::Tc).expect("c").fw_denied, 1);
            assert_eq!(dp.counters(Hook::Tc).expect("c").misses, 0);

            let x = dp.counters(Hook::Xdp).expect("counters");
            assert_eq!(
                (x.fw_denied, x.fw_not_allowed, x.fw_rate_limited),
                (3, 1, 0)
            );
            let s4 = dp.vip_stats(&tcp4).expect("stats").expect("vip");
            assert_eq!(
                (s4.fw_denied, s4.fw_not_allowed),
                (2, 1),
                "XDP 1 + tc 1 denied"
            );
            assert_eq!(s4.misses, 3);
            assert_eq!(dp.vip_stats(&udp4).expect("s").expect("v").fw_denied, 1);
            assert_eq!(dp.vip_stats(&tcp6).expect("s").expect("v").fw_denied, 1);

            // Replacing the rules: the old deny is gone, the new one applies.
            dp.set_firewall(
                &tcp4,
                &FirewallRules {
                    deny: vec![prefix("198.18.1.0/24")],
                    ..FirewallRules::default()
                },
            )
            .expect("replace");
            assert_eq!(fate_of(&dp, &cases[1].0, front), Fate::Miss);
            assert_eq!(
                fate_of(&dp, &cases[3].0, front),
                Fate::Miss,
                "no allow list now"
            );
            assert_eq!(fate_of(&dp, &cases[0].0, front), Fate::Denied);
            // Cleared: everything is a plain miss again.
            assert!(dp.clear_firewall(&tcp4).expect("clear"));
            assert!(!dp.clear_firewall(&tcp4).expect("clear again"));
            assert_eq!(dp.firewall(&tcp4), None);
            for i in [0, 1, 3] {
                assert_eq!(fate_of(&dp, &cases[i].0, front), Fate::Miss);
            }

            // Invalid rules are refused and leave the VIP's rules alone.
            let before = dp.firewall(&tcp6).cloned();
            for bad in [
                FirewallRules {
                    deny: vec![prefix("198.18.0.0/16")],
                    ..FirewallRules::default()
                },
                FirewallRules {
                    new_conn_rate: Some((0, 10)),
                    ..FirewallRules::default()
                },
            ] {
                assert!(matches!(
                    dp.set_firewall(&tcp6, &bad),
                    Err(Error::InvalidFirewall(_))
                ));
            }
            assert_eq!(dp.firewall(&tcp6).cloned(), before);
            assert_eq!(fate_of(&dp, &cases[6].0, front), Fate::Denied);
            assert!(matches!(
                dp.set_firewall(
                    &Vip {
                        proto: Protocol::Tcp,
                        addr: sa(VIP4, 443)
                    },
                    &rules4
                ),
                Err(Error::UnknownVip(_))
            ));
        })
        .expect("enter lb");
}

#[test]
fn firewall_rate_limit_passes_the_burst_then_refills() {
    if !have_root("firewall_rate_limit") {
        return;
    }
    let Some(lab) = lab("forwarder test_run firewall rate") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let tcp4 = vip(VIP4, Protocol::Tcp);
            // 2 new connections per second per source, bursts of 3.
            dp.set_firewall(
                &tcp4,
                &FirewallRules {
                    new_conn_rate: Some((2, 3)),
                    ..FirewallRules::default()
                },
            )
            .expect("set");
            let v4 = sa(VIP4, VPORT);
            let a = |port| syn(Protocol::Tcp, sa(CLIENT4, port), v4);
            let b = syn(Protocol::Tcp, sa("198.18.1.3", 1), v4);
            let fates = |dp: &Dataplane, frames: &[Vec<u8>]| -> Vec<Fate> {
                frames.iter().map(|f| fate_of(dp, f, front)).collect()
            };
            use Fate::{Miss, RateLimited};
            assert_eq!(
                fates(&dp, &[a(1), a(2), a(3), a(4), a(5)]),
                [Miss, Miss, Miss, RateLimited, RateLimited],
                "the burst passes, then drops"
            );
            assert_eq!(
                fate_of(&dp, &b, front),
                Miss,
                "another source has its own bucket"
            );
            assert_eq!(
                fate_of(&dp, &syn(Protocol::Udp, sa(CLIENT4, 6), v4), front),
                Miss,
                "the UDP VIP has no limit"
            );
            // An established flow of the limited source is unaffected.
            let est = Flow {
                proto: Protocol::Tcp,
                client: sa(CLIENT4, 9),
                vip: v4,
            };
            dp.add_route(&est, &Route::half_nat(sa(HOST4, HPORT)))
                .expect("route");
            assert_eq!(fate_of(&dp, &a(9), front), Fate::Forwarded);

            // 600 ms at 2/s: 1.2 tokens, so one passes and the next drops.
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(
                fates(&dp, &[a(10), a(11)]),
                [Miss, RateLimited],
                "partial refill"
            );
            // 1.6 s more: the bucket is full again (capped at the burst of 3).
            std::thread::sleep(Duration::from_millis(1600));
            assert_eq!(
                fates(&dp, &[a(12), a(13), a(14), a(15)]),
                [Miss, Miss, Miss, RateLimited],
                "full refill, capped at the burst"
            );
            let s = dp.vip_stats(&tcp4).expect("stats").expect("vip");
            assert_eq!(s.fw_rate_limited, 4);
            assert_eq!((s.fw_denied, s.fw_not_allowed), (0, 0));
            assert_eq!(dp.counters(Hook::Xdp).expect("c").fw_rate_limited, 4);
            // Clearing the firewall lifts the limit.
            assert!(dp.clear_firewall(&tcp4).expect("clear"));
            assert_eq!(fates(&dp, &[a(16), a(17), a(18), a(19)]), [Miss; 4]);
        })
        .expect("enter lb");
}

#[test]
fn firewall_table_full_keeps_the_previous_rules() {
    if !have_root("firewall_table_full") {
        return;
    }
    let Some(lab) = lab("forwarder test_run firewall full") else {
        return;
    };
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings {
                max_firewall_rules: 4,
                ..Settings::default()
            });
            let tcp4 = vip(VIP4, Protocol::Tcp);
            let deny = |n: u8| FirewallRules {
                deny: (0..n)
                    .map(|i| prefix(&format!("198.18.{i}.0/24")))
                    .collect(),
                ..FirewallRules::default()
            };
            dp.set_firewall(&tcp4, &deny(2)).expect("fits");
            // Old and new prefixes coexist during a replacement: 2 + 3 > 4.
            assert!(matches!(
                dp.set_firewall(&tcp4, &deny(3)),
                Err(Error::FirewallFull { max_rules: 4 })
            ));
            assert_eq!(dp.firewall(&tcp4), Some(&deny(2)));
            let v4 = sa(VIP4, VPORT);
            assert_eq!(
                fate_of(&dp, &syn(Protocol::Tcp, sa("198.18.1.2", 1), v4), front),
                Fate::Denied
            );
            assert_eq!(
                fate_of(&dp, &syn(Protocol::Tcp, sa("198.18.2.2", 1), v4), front),
                Fate::Miss,
                "the refused rules are not half applied"
            );
            dp.set_firewall(&tcp4, &deny(1)).expect("2 + 1 fits");
            dp.set_firewall(&tcp4, &deny(3)).expect("1 + 3 fits");
            // Removing the VIP removes its prefixes.
            assert!(dp.remove_vip(tcp4).expect("remove"));
            dp.add_vip(tcp4).expect("re-add");
            assert_eq!(dp.firewall(&tcp4), None);
            dp.set_firewall(&tcp4, &deny(4))
                .expect("the table is empty again");
        })
        .expect("enter lb");
}

#[test]
fn next_hops_are_cached_keep_the_mtu_check_and_follow_neighbour_changes() {
    if !have_root("next_hops_are_cached") {
        return;
    }
    let Some(lab) = lab("forwarder test_run next-hop cache") else {
        return;
    };
    let new_mac: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa2];
    lab.lb
        .enter(|| {
            let front = ifindex("front");
            let mut dp = dataplane(Settings::default());
            let f = flow(Protocol::Tcp, false);
            dp.add_route(&f, &Route::half_nat(sa(HOST4, HPORT)))
                .expect("add route");
            let frame = |payload: &[u8]| {
                FrameSpec::tcp(f.client, f.vip)
                    .macs(CLIENT_MAC, FRONT_MAC)
                    .flags(tcp_flags::ACK)
                    .payload(payload)
                    .build()
            };
            let expected = |payload: &[u8], dmac: [u8; 6]| {
                FrameSpec::tcp(f.client, sa(HOST4, HPORT))
                    .macs(BACK_MAC, dmac)
                    .ttl(63)
                    .flags(tcp_flags::ACK)
                    .payload(payload)
                    .build()
            };
            let small = frame(b"hello");
            // The first packet resolves the next hop, later ones reuse it (a stall longer
            // than the cache lifetime between two runs would resolve it again: bounded retry).
            let mut cached = 0;
            for _ in 0..20 {
                let x = dp.run_xdp(&small, front).expect("xdp");
                assert_eq!(x.action, xdp_action::REDIRECT);
                assert_eq!(
                    x.frame,
                    expected(b"hello", HOST_MAC),
                    "cached output is exact"
                );
                cached = dp.counters(Hook::Xdp).expect("c").next_hop_cached;
                if cached > 0 {
                    break;
                }
            }
            assert!(cached > 0, "the route's next hop was never reused");
            let t = dp.run_tc(&small, front).expect("tc");
            assert_eq!(
                t.frame,
                expected(b"hello", HOST_MAC),
                "tc on the cached hop"
            );

            // A packet longer than any the FIB accepted on this hop is checked again: with the
            // egress MTU lowered it is dropped, not sent along the cache.
            lab.lb
                .run(["ip", "link", "set", "back", "mtu", "1000"])
                .expect("lower MTU");
            let big_payload = vec![0x5a; 1100];
            let big = frame(&big_payload);
            let before = dp.counters(Hook::Xdp).expect("c");
            let x = dp.run_xdp(&big, front).expect("xdp");
            assert_eq!(x.action, xdp_action::DROP, "too big for the egress MTU");
            let after = dp.counters(Hook::Xdp).expect("c");
            assert_eq!(after.fib_frag_needed, before.fib_frag_needed + 1);
            lab.lb
                .run(["ip", "link", "set", "back", "mtu", "1500"])
                .expect("restore MTU");
            let x = dp.run_xdp(&big, front).expect("xdp");
            assert_eq!(x.frame, expected(&big_payload, HOST_MAC), "fits again");

            // The host's MAC changes (say, a replaced machine keeps its address): packets
            // follow within the cache lifetime (≤ 1 s at HZ ≥ 250; bounded wait of 10 s).
            let mac = new_mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            lab.lb
                .run([
                    "ip",
                    "neigh",
                    "replace",
                    HOST4,
                    "lladdr",
                    &mac,
                    "dev",
                    "back",
                    "nud",
                    "permanent",
                ])
                .expect("new neighbour");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut followed = false;
            while std::time::Instant::now() < deadline {
                let x = dp.run_xdp(&small, front).expect("xdp");
                if x.frame == expected(b"hello", new_mac) {
                    followed = true;
                    break;
                }
                assert_eq!(x.frame, expected(b"hello", HOST_MAC), "old or new MAC only");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert!(
                followed,
                "the cached next hop never picked up the new neighbour"
            );

            // Re-installing a route starts without a cached hop.
            assert!(dp.delete_route(&f).expect("delete"));
            dp.add_route(&f, &Route::half_nat(sa(HOST4, HPORT)))
                .expect("add route");
            let before = dp.counters(Hook::Xdp).expect("c").next_hop_cached;
            dp.run_xdp(&small, front).expect("xdp");
            assert_eq!(dp.counters(Hook::Xdp).expect("c").next_hop_cached, before);
        })
        .expect("enter lb");
}
