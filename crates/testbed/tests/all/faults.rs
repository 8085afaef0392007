//! Fault injection: random loss, port blocking, clearing, link down/up, killing processes.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use switchyard_testbed::{Proto, Signal, Topology, require_testbed};

use crate::{echo_roundtrip, echo_server, udp_delivered};

#[test]
fn packet_loss_and_port_blocks_drop_and_clear() {
    let tb = require_testbed!("network namespaces and nftables (root)");
    let topo = Topology::builder()
        .clients(1)
        .lb_units(0)
        .hosts(1)
        .build(&tb)
        .unwrap();
    let (client, host, router) = (topo.client(0).ns(), topo.host(0).ns(), topo.router().ns());
    let at = |port| SocketAddr::new(topo.host(0).v4(), port);

    assert_eq!(
        udp_delivered(client, host, at(9000), 1000),
        1000,
        "no fault: all arrive"
    );

    let loss = router.drop_percent(50).unwrap();
    let got = udp_delivered(client, host, at(9000), 1000);
    assert!(
        (300..=700).contains(&got),
        "50% loss in the router delivered {got} of 1000"
    );
    loss.clear().unwrap();
    assert_eq!(
        udp_delivered(client, host, at(9000), 200),
        200,
        "loss cleared"
    );

    // Per-interface loss on a link (judged once, at end a: the router's side).
    let link_loss = topo.client(0).primary().link().drop_percent(100).unwrap();
    assert_eq!(
        udp_delivered(client, host, at(9000), 100),
        0,
        "100% loss on the client link"
    );
    link_loss.clear().unwrap();
    link_loss.clear().unwrap(); // clearing twice is fine

    let blocked = host.block_port(Proto::Udp, 9001).unwrap();
    assert_eq!(
        udp_delivered(client, host, at(9001), 100),
        0,
        "port 9001 blocked"
    );
    assert_eq!(
        udp_delivered(client, host, at(9002), 100),
        100,
        "port 9002 unaffected"
    );
    let tcp_blocked = host.block_port(Proto::Tcp, 7000).unwrap();
    let _server = echo_server(host, at(7000), 1);
    let refused = client
        .enter(|| std::net::TcpStream::connect_timeout(&at(7000), Duration::from_millis(300)));
    assert!(refused.unwrap().is_err(), "TCP port 7000 blocked");
    assert!(
        blocked.describe().contains("block udp port 9001"),
        "{}",
        blocked.describe()
    );

    host.clear_faults().unwrap();
    host.clear_faults().unwrap(); // idempotent
    assert_eq!(
        udp_delivered(client, host, at(9001), 100),
        100,
        "faults cleared"
    );
    assert_eq!(
        echo_roundtrip(client, at(7000), b"open again").unwrap(),
        b"open again"
    );
    tcp_blocked.clear().unwrap(); // already gone with the table: not an error
}

#[test]
fn link_down_stops_traffic_and_link_up_restores_it() {
    let tb = require_testbed!("network namespaces (root)");
    let topo = Topology::builder()
        .clients(1)
        .lb_units(0)
        .hosts(1)
        .build(&tb)
        .unwrap();
    let (client, host) = (topo.client(0).ns(), topo.host(0).ns());
    let link = topo.client(0).primary().link();
    for ip in [topo.host(0).v4(), topo.host(0).v6()] {
        let to = SocketAddr::new(ip, 9100);
        assert_eq!(udp_delivered(client, host, to, 100), 100, "{ip} before");
        link.set_down().unwrap();
        assert_eq!(
            udp_delivered(client, host, to, 100),
            0,
            "{ip} with the link down"
        );
        link.set_up().unwrap();
        assert_eq!(
            udp_delivered(client, host, to, 100),
            100,
            "{ip} after link up"
        );
    }
    // TCP over both families works again too (routes were restored on both ends).
    for (ip, port) in [(topo.host(0).v4(), 7100), (topo.host(0).v6(), 7101)] {
        let addr = SocketAddr::new(ip, port);
        let _server = echo_server(host, addr, 1);
        assert_eq!(echo_roundtrip(client, addr, b"back").unwrap(), b"back");
    }
    // One end by name: downing the host's interface cuts the path as well.
    host.set_link_down("eth0").unwrap();
    let to = SocketAddr::new(topo.host(0).v4(), 9101);
    assert_eq!(udp_delivered(client, host, to, 50), 0);
    host.set_link_up("eth0").unwrap();
    assert_eq!(udp_delivered(client, host, to, 50), 50);
}

#[test]
fn spawned_processes_can_be_killed_signalled_and_terminated() {
    let tb = require_testbed!("network namespaces (root)");
    let ns = tb.namespace("host").unwrap();

    let crashed = ns.spawn(["sleep", "30"]).unwrap();
    assert!(crashed.is_running());
    let status = crashed.kill().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(!crashed.is_running());
    assert_eq!(
        crashed.kill().unwrap().signal(),
        Some(9),
        "killing twice reports the status"
    );
    assert!(
        crashed.signal(Signal::SIGTERM).is_err(),
        "no signals after exit"
    );

    let frozen = ns.spawn(["sleep", "30"]).unwrap();
    frozen.signal(Signal::SIGSTOP).unwrap();
    // A stopped process still terminates: SIGTERM is followed by SIGCONT.
    assert_eq!(frozen.terminate().unwrap().signal(), Some(15));

    let quick = ns.spawn(["sh", "-c", "exit 7"]).unwrap();
    let status = quick.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(status.code(), Some(7));

    let failing = ns
        .spawn(["sh", "-c", "echo bad config >&2; exit 1"])
        .unwrap();
    let err = failing
        .wait_for_output("listening", Duration::from_secs(5))
        .unwrap_err();
    assert!(err.to_string().contains("bad config"), "{err}");
}
