//! The life of a route under real traffic, on real processes in namespaces: one all-in-one
//! unit (`switchyard lb`: forwarder on tc, classifier, health cache; full NAT) in front of
//! three hosts running the echo server (support/echo.rs), with short route lifetimes
//! (`fin_linger` 1 s, `udp_idle_timeout` 2 s, `tcp_idle_timeout` 3 s):
//!
//! - a half-closed connection keeps its route: the client sends FIN first, the host keeps
//!   sending for about three times `fin_linger` and only then closes; the client receives
//!   every line and a clean end, and only after both FINs does the route go away;
//! - a UDP pseudo-connection's route expires when idle (the classifier counts it); the next
//!   datagram from the same client port is a new pseudo-connection and is answered again;
//! - an idle TCP connection's route expires too;
//! - a client that resets its connection and opens the same 4-tuple again at once (its SYN
//!   hits the lingering route) keeps a working connection after the RST linger (1 s) ran
//!   out: the forwarder reports the SYN and the classifier keeps the route.
//!
//! No timed assertions: waits poll with generous deadlines. Needs root (skipped otherwise).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::cluster::{Cluster, ClusterSpec, PacketSpec, SERVICE, UDP_SERVICE, UDP_VIP, VIP};
use support::line_conn::{LineConn, host_of};
use support::wait;

/// Connect and answer time limit (a lost SYN is retransmitted after 1 s and 3 s).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Lines the host sends after the client's FIN, and the time between them: 6 × 500 ms is
/// three times the FIN linger.
const TRICKLE: (u32, u64) = (6, 500);

fn report(cluster: &Cluster) -> String {
    match cluster.unit_flows(0) {
        Ok(flows) => format!(
            "lb-1 /v1/flows:\n  forwarder: {:?}\n  classifier: {:?}",
            flows.forwarder.map(|f| (f.flows, f.agent, f.tc, f.vips)),
            flows.classifier.map(|c| (c.connections, c.events))
        ),
        Err(e) => format!("lb-1: /v1/flows: {e}"),
    }
}

/// Routes installed for `service` and one classifier counter, from `/v1/flows`.
fn flows_and_counter(
    cluster: &Cluster,
    service: &str,
    counter: &str,
) -> Result<(u64, u64), String> {
    let flows = cluster.unit_flows(0)?;
    let forwarder = flows.forwarder.ok_or("no forwarder")?;
    let classifier = flows.classifier.ok_or("no classifier")?;
    let routes = forwarder
        .vips
        .iter()
        .find(|v| v.service == service)
        .map(|v| v.flows)
        .ok_or_else(|| format!("no VIP of {service}"))?;
    let count = classifier.events.get(counter).copied().unwrap_or(0);
    Ok((routes, count))
}

/// New connections the classifier counted for `vip`.
fn new_connections(cluster: &Cluster, vip: SocketAddr) -> Result<u64, String> {
    let classifier = cluster.unit_flows(0)?.classifier.ok_or("no classifier")?;
    Ok(classifier
        .endpoints
        .iter()
        .filter(|e| e.vip == vip)
        .map(|e| e.new_connections)
        .sum())
}

/// A TCP connection to `vip` from the fixed client port `port` (SO_REUSEADDR, so the port can
/// be used again right after an RST), in the calling thread's namespace.
fn connect_from(port: u16, vip: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let SocketAddr::V4(vip) = vip else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // connect() gives up after the send timeout instead of the kernel's two minutes.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(vip))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// One line there and back on `stream`; returns the answering host.
fn line_exchange(stream: &TcpStream, tag: &str) -> std::io::Result<String> {
    let mut s = stream;
    s.write_all(format!("{tag}\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    host_of(&answer, tag)
}

/// One UDP exchange on `socket`; returns the answering host.
fn udp_exchange(socket: &UdpSocket, tag: &str) -> std::io::Result<String> {
    socket.send(tag.as_bytes())?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf)?;
    let answer = format!("{}\n", String::from_utf8_lossy(&buf[..n]));
    host_of(&answer, tag)
}

#[test]
fn half_closed_connections_keep_their_route_and_idle_routes_expire() {
    let spec = ClusterSpec {
        lb_units: 1,
        hosts: 3,
        echo_servers: true,
        udp: true,
        packet: Some(PacketSpec::all_in_one("nat")),
        extra_toml: "\n[classifier]\nfin_linger = \"1s\"\nrst_linger = \"1s\"\n\
                     udp_idle_timeout = \"2s\"\ntcp_idle_timeout = \"3s\"\n"
            .to_owned(),
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start("packet route lifecycle", spec) else {
        return;
    };
    for k in 0..3 {
        for service in [SERVICE, UDP_SERVICE] {
            cluster.set_service_status(k, service, Some("healthy"), Some(0), Some(50));
        }
    }
    let ns = cluster.topo().client(0).ns().clone();
    wait::wait_until(
        "a first connection to the VIP is answered",
        Duration::from_secs(20),
        || {
            ns.enter(|| LineConn::open(VIP, "w".to_owned(), TIMEOUT).and_then(LineConn::finish))
                .expect("enter the client namespace")
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    wait::wait_until("the warm-up route is gone", Duration::from_secs(15), || {
        match flows_and_counter(&cluster, SERVICE, "routes_deleted_final")? {
            (0, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // ---- a half-closed connection ----------------------------------------------------------
    let (_, finals_before) =
        flows_and_counter(&cluster, SERVICE, "routes_deleted_final").expect("flows");
    let received = ns
        .enter(|| -> std::io::Result<(String, Vec<String>)> {
            let stream = TcpStream::connect_timeout(&VIP, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let tag = format!("trickle {} {}", TRICKLE.0, TRICKLE.1);
            (&stream).write_all(format!("{tag}\n").as_bytes())?;
            let mut answer = String::new();
            reader.read_line(&mut answer)?;
            let host = host_of(&answer, &tag)?;
            // Our FIN first; the host goes on sending on its half.
            stream.shutdown(Shutdown::Write)?;
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    break;
                }
                lines.push(line);
            }
            Ok((host, lines))
        })
        .expect("enter the client namespace");
    let (host, lines) = received.unwrap_or_else(|e| {
        panic!(
            "the half-closed connection broke: {e}\n{}\n{}",
            report(&cluster),
            cluster.dump_with_logs()
        )
    });
    let expected: Vec<String> = (0..TRICKLE.0)
        .map(|i| format!("{host} tick-{i}\n"))
        .collect();
    assert_eq!(
        lines,
        expected,
        "every line sent after the client's FIN arrives, then the host's FIN\n{}",
        report(&cluster)
    );
    eprintln!(
        "half-close: {} lines from {host} after the client's FIN",
        lines.len()
    );
    let (_, took) = wait::wait_until(
        "the route goes once both sides sent FIN",
        Duration::from_secs(15),
        || match flows_and_counter(&cluster, SERVICE, "routes_deleted_final")? {
            (0, n) if n > finals_before => Ok(()),
            other => Err(format!("(routes, routes_deleted_final) = {other:?}")),
        },
    );
    eprintln!("half-close: route deleted {took:?} after the last FIN");

    // ---- UDP idle expiry ---------------------------------------------------------------------
    let socket = ns
        .enter(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(UDP_VIP)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            Ok(s)
        })
        .expect("enter the client namespace")
        .expect("UDP socket");
    let first = udp_exchange(&socket, "u-1").expect("first datagram answered");
    let (_, idle_before) =
        flows_and_counter(&cluster, UDP_SERVICE, "routes_deleted_idle").expect("flows");
    // The classifier publishes its per-endpoint counts every 200 ms.
    wait::wait_until(
        "the classifier counted the UDP pseudo-connection",
        Duration::from_secs(5),
        || match new_connections(&cluster, UDP_VIP)? {
            1 => Ok(()),
            n => Err(format!("{n} new connections")),
        },
    );
    let (_, took) = wait::wait_until(
        "the idle UDP route expires",
        Duration::from_secs(20),
        || match flows_and_counter(&cluster, UDP_SERVICE, "routes_deleted_idle")? {
            (0, n) if n > idle_before => Ok(()),
            other => Err(format!("(routes, routes_deleted_idle) = {other:?}")),
        },
    );
    eprintln!("UDP: idle route deleted {took:?} after the exchange (host {first})");
    // The same client port again: a new pseudo-connection, classified and answered.
    udp_exchange(&socket, "u-2").expect("datagram after expiry answered");
    wait::wait_until(
        "the classifier counted a second UDP pseudo-connection",
        Duration::from_secs(5),
        || match new_connections(&cluster, UDP_VIP)? {
            2 => Ok(()),
            n => Err(format!("{n} new connections")),
        },
    );

    // ---- TCP idle expiry ---------------------------------------------------------------------
    let (_, idle_before) =
        flows_and_counter(&cluster, SERVICE, "routes_deleted_idle").expect("flows");
    let conn = ns
        .enter(|| LineConn::open(VIP, "idle".to_owned(), TIMEOUT))
        .expect("enter the client namespace")
        .expect("idle connection opened");
    let (_, took) = wait::wait_until(
        "the idle TCP route expires",
        Duration::from_secs(20),
        || match flows_and_counter(&cluster, SERVICE, "routes_deleted_idle")? {
            (0, n) if n > idle_before => Ok(()),
            other => Err(format!("(routes, routes_deleted_idle) = {other:?}")),
        },
    );
    eprintln!("TCP: idle route deleted {took:?} after the exchange");
    drop(conn);

    // ---- the same 4-tuple again right after an RST ---------------------------------------------
    const PORT: u16 = 47_001;
    let result = ns
        .enter(|| -> std::io::Result<(String, String, String)> {
            let first = connect_from(PORT, VIP)?;
            let h1 = line_exchange(&first, "before-rst")?;
            // Close with an RST (linger 0): the route lingers for rst_linger.
            nix::sys::socket::setsockopt(
                &first,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )?;
            drop(first);
            let again = connect_from(PORT, VIP)?;
            let h2 = line_exchange(&again, "reopened")?;
            // Well past the RST linger: the route must still be there.
            std::thread::sleep(Duration::from_secs(3));
            let h3 = line_exchange(&again, "after-linger")?;
            Ok((h1, h2, h3))
        })
        .expect("enter the client namespace");
    let (h1, h2, h3) = result.unwrap_or_else(|e| {
        panic!(
            "the reopened connection broke: {e}\n{}\n{}",
            report(&cluster),
            cluster.dump_with_logs()
        )
    });
    assert_eq!(
        (&h2, &h3),
        (&h1, &h1),
        "same 4-tuple, same route, same host"
    );
    let flows = cluster.unit_flows(0).expect("flows");
    let reopened = flows
        .classifier
        .and_then(|c| c.events.get("reopened").copied())
        .unwrap_or(0);
    assert!(reopened >= 1, "{}", report(&cluster));
}
