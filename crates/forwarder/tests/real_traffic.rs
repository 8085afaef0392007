//! The data plane on real interfaces: the testbed topology client0 → router → lb0 → host0, the
//! forwarder attached to lb0's front (`eth0`) and back (`eth1`) interfaces, a route inserted by
//! hand, and a real TCP connection from the client to the VIP served by a server on host0.
//! Also the reinjection prototype: a SYN that missed is re-run through the XDP program in
//! live-frames mode after its route is plumbed. Needs root.
//!
//! Checksums: the XDP cases turn tx checksum offload off on the client's and the host's
//! interfaces (`ethtool -K eth0 tx off`), because on veth locally generated packets carry
//! CHECKSUM_PARTIAL, which an XDP program cannot see (real NICs deliver full checksums). The tc
//! cases keep offload on: the tc program updates checksums with the kernel helpers, which
//! handle CHECKSUM_PARTIAL.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::have_root;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use switchyard_forwarder::{
    AttachMode, Dataplane, Event, Flow, Hook, Protocol, Route, Settings, Vip,
};
use switchyard_testbed::{Testbed, Topology};

const VPORT: u16 = 80;
const HPORT: u16 = 8080;
const NAT_PORT: u16 = 20001;

struct Setup {
    _tb: Testbed,
    topo: Topology,
}

fn topology(what: &str, xdp: bool) -> Option<Setup> {
    let tb = switchyard_testbed::require(what)?;
    let topo = Topology::builder()
        .clients(1)
        .lb_units(1)
        .hosts(1)
        .build(&tb)
        .expect("topology");
    // XDP_REDIRECT into a veth needs NAPI on the receiving peer: GRO on the peers of lb0's
    // interfaces (router side and switch side).
    topo.router()
        .ns()
        .run(["ethtool", "-K", "lb0", "gro", "on"])
        .expect("gro on");
    topo.switch()
        .run(["ethtool", "-K", "lb0", "gro", "on"])
        .expect("gro on");
    if xdp {
        for ns in [topo.client(0).ns(), topo.host(0).ns()] {
            ns.run(["ethtool", "-K", "eth0", "tx", "off"])
                .expect("tx checksum offload off");
        }
    }
    Some(Setup { _tb: tb, topo })
}

/// An echo server on host0 that first sends the peer address it sees, one line.
fn serve(setup: &Setup, connections: usize) -> thread::JoinHandle<Vec<SocketAddr>> {
    let addr = SocketAddr::new(setup.topo.host(0).v4(), HPORT);
    let listener = setup
        .topo
        .host(0)
        .ns()
        .enter(|| TcpListener::bind(addr))
        .expect("enter")
        .expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut peers = Vec::new();
        while peers.len() < connections && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut c, peer)) => {
                    peers.push(peer);
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.write_all(format!("{peer}\n").as_bytes());
                    let mut buf = [0u8; 64];
                    if let Ok(n) = c.read(&mut buf) {
                        let _ = c.write_all(&buf[..n]);
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        peers
    })
}

/// Connects from `client` (a fixed source port) to `vip` inside the client namespace, with a
/// connect timeout.
fn connect_from(
    setup: &Setup,
    client: SocketAddrV4,
    vip: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    setup
        .topo
        .client(0)
        .ns()
        .enter(|| -> std::io::Result<TcpStream> {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::empty(),
                None,
            )?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            let tv = TimeVal::new(
                i64::try_from(timeout.as_secs()).unwrap_or(5),
                i64::from(timeout.subsec_micros()),
            );
            setsockopt(&fd, sockopt::SendTimeout, &tv)?;
            setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
            bind(fd.as_raw_fd(), &SockaddrIn::from(client))?;
            connect(fd.as_raw_fd(), &SockaddrIn::from(vip))?;
            Ok(TcpStream::from(fd))
        })
        .expect("enter client")
}

fn exchange(mut s: TcpStream) -> String {
    let mut got = Vec::new();
    s.write_all(b"ping\n").expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 128];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"ping\n") {
                    break;
                }
            }
            Err(e) => {
                eprintln!(
                    "read from the VIP: {e}; got {:?}",
                    String::from_utf8_lossy(&got)
                );
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn v4(a: std::net::IpAddr) -> Ipv4Addr {
    match a {
        std::net::IpAddr::V4(v) => v,
        std::net::IpAddr::V6(_) => panic!("expected IPv4"),
    }
}

/// Loads the data plane inside lb0 and attaches it to both interfaces.
fn forwarder(setup: &Setup, mode: AttachMode) -> Dataplane {
    setup
        .topo
        .lb_unit(0)
        .ns()
        .enter(|| {
            let mut dp = Dataplane::load(Settings {
                max_routes: 1024,
                ..Settings::default()
            })
            .expect("load");
            dp.add_vip(Vip {
                proto: Protocol::Tcp,
                addr: SocketAddr::new(setup.topo.vip().v4.into(), VPORT),
            })
            .expect("vip");
            dp.attach("eth0", mode).expect("attach front");
            dp.attach("eth1", mode).expect("attach back");
            dp
        })
        .expect("enter lb0")
}

fn full_nat_connection(mode: AttachMode, xdp: bool, what: &str) {
    let Some(setup) = topology(what, xdp) else {
        return;
    };
    let topo = &setup.topo;
    let server = serve(&setup, 1);
    let mut dp = forwarder(&setup, mode);
    let client = SocketAddrV4::new(v4(topo.client(0).v4()), 41000);
    let vip = SocketAddrV4::new(topo.vip().v4, VPORT);
    let lb_back = topo.lb_unit(0).interfaces()[1].v4();
    let nat = SocketAddr::new(lb_back, NAT_PORT);
    let flow = Flow {
        proto: Protocol::Tcp,
        client: client.into(),
        vip: vip.into(),
    };
    dp.add_route(
        &flow,
        &Route::full_nat(SocketAddr::new(topo.host(0).v4(), HPORT), nat),
    )
    .expect("route");

    let stream =
        connect_from(&setup, client, vip, Duration::from_secs(5)).expect("connect to the VIP");
    let got = exchange(stream);
    assert_eq!(
        got,
        format!("{nat}\nping\n"),
        "the host saw the NAT source and echoed"
    );
    let peers = server.join().expect("server");
    assert_eq!(peers, vec![nat]);

    let hook = if xdp { Hook::Xdp } else { Hook::Tc };
    let c = dp.counters(hook).expect("counters");
    assert!(c.hit_packets >= 3, "{c:?}");
    assert!(c.reply_packets >= 2, "{c:?}");
    let info = dp.route(&flow).expect("get").expect("still routed");
    assert!(info.last_seen_ns > 0);
    eprintln!("{what}: {hook:?} counters {c:?}");
    if mode == AttachMode::XdpAndTc {
        eprintln!(
            "tc behind XDP: {:?}",
            dp.counters(Hook::Tc).expect("counters")
        );
    }
}

#[test]
fn full_nat_tcp_connection_through_tc() {
    if !have_root("full_nat_tcp_connection_through_tc") {
        return;
    }
    full_nat_connection(AttachMode::Tc, false, "forwarder full NAT via tc");
}

#[test]
fn full_nat_tcp_connection_through_xdp() {
    if !have_root("full_nat_tcp_connection_through_xdp") {
        return;
    }
    full_nat_connection(AttachMode::XdpAndTc, true, "forwarder full NAT via XDP");
}

#[test]
fn half_nat_tcp_connection_through_tc() {
    if !have_root("half_nat_tcp_connection_through_tc") {
        return;
    }
    let Some(setup) = topology("forwarder half NAT via tc", false) else {
        return;
    };
    let topo = &setup.topo;
    // Half NAT: the host routes replies to the client prefix via the forwarder.
    let lb_back = topo.lb_unit(0).interfaces()[1].v4();
    topo.host(0)
        .ns()
        .add_route("198.18.1.0/24", lb_back)
        .expect("host route via the forwarder");
    let server = serve(&setup, 1);
    let mut dp = forwarder(&setup, AttachMode::Tc);
    let client = SocketAddrV4::new(v4(topo.client(0).v4()), 41001);
    let vip = SocketAddrV4::new(topo.vip().v4, VPORT);
    let flow = Flow {
        proto: Protocol::Tcp,
        client: client.into(),
        vip: vip.into(),
    };
    dp.add_route(
        &flow,
        &Route::half_nat(SocketAddr::new(topo.host(0).v4(), HPORT)),
    )
    .expect("route");
    let stream =
        connect_from(&setup, client, vip, Duration::from_secs(5)).expect("connect to the VIP");
    let got = exchange(stream);
    assert_eq!(
        got,
        format!("{client}\nping\n"),
        "the host saw the client itself"
    );
    assert_eq!(
        server.join().expect("server"),
        vec![SocketAddr::from(client)]
    );
    let c = dp.counters(Hook::Tc).expect("counters");
    assert!(
        c.reply_packets >= 2,
        "replies came back through the forwarder: {c:?}"
    );
}

/// The "default route" end to end: the client's SYN misses, the event carries the frame, the
/// test plays classifier (installs a full-NAT route) and reinjects the frame with
/// BPF_PROG_TEST_RUN live frames. The connection must be established well before the client's
/// first SYN retransmission (1 s), which proves the reinjected SYN reached the host.
#[test]
fn missed_syn_is_reinjected_after_plumbing() {
    if !have_root("missed_syn_is_reinjected_after_plumbing") {
        return;
    }
    let Some(setup) = topology("forwarder reinjection", true) else {
        return;
    };
    let topo = &setup.topo;
    let lb = topo.lb_unit(0).ns();
    // Resolve the host's and the router's neighbour entries so XDP can forward on its own.
    lb.run(["ping", "-c", "1", "-W", "2", "198.18.200.100"])
        .expect("ping host");
    lb.run(["ping", "-c", "1", "-W", "2", "198.18.101.1"])
        .expect("ping router");
    let server = serve(&setup, 1);
    let mut dp = forwarder(&setup, AttachMode::Xdp);
    let mut events = dp.take_events().expect("events");
    let client = SocketAddrV4::new(v4(topo.client(0).v4()), 41002);
    let vip = SocketAddrV4::new(topo.vip().v4, VPORT);
    let started = Instant::now();
    let connecting = {
        let setup_ref = &setup;
        thread::scope(|s| {
            let h = s.spawn(move || connect_from(setup_ref, client, vip, Duration::from_secs(5)));
            let Some(Event::Miss(miss)) = events
                .next_timeout(Duration::from_secs(3))
                .expect("read events")
            else {
                panic!("expected a miss event for the SYN")
            };
            let missed_at = started.elapsed();
            assert_eq!(miss.flow.src, SocketAddr::from(client));
            let flow = Flow {
                proto: Protocol::Tcp,
                client: miss.flow.src,
                vip: miss.flow.dst,
            };
            let nat = SocketAddr::new(topo.lb_unit(0).interfaces()[1].v4(), NAT_PORT);
            dp.add_route(
                &flow,
                &Route::full_nat(SocketAddr::new(topo.host(0).v4(), HPORT), nat),
            )
            .expect("plumb");
            lb.enter(|| dp.reinject(&miss.frame, miss.ifindex))
                .expect("enter lb0")
                .expect("reinject");
            let c = dp.counters(Hook::Xdp).expect("counters");
            let stream = h.join().expect("client thread");
            (stream, missed_at, started.elapsed(), c)
        })
    };
    let (stream, missed_at, connected_at, c) = connecting;
    let stream = stream.expect("connected");
    eprintln!(
        "reinjection: miss after {missed_at:?}, connected after {connected_at:?}; XDP counters {c:?}"
    );
    assert_eq!(c.misses, 1, "{c:?}");
    // The reinjected SYN, and by the time the counters are read perhaps the client's ACK.
    assert!(
        c.hit_packets >= 1,
        "the reinjected SYN was forwarded: {c:?}"
    );
    assert!(
        connected_at < Duration::from_millis(900),
        "connected after {connected_at:?}: the SYN retransmission did it, not the reinjection"
    );
    let got = exchange(stream);
    assert!(got.ends_with("ping\n"), "{got:?}");
    server.join().expect("server");
}
