//! Real TCP through the router, commands and processes inside namespaces, and the address guard.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_testbed::{Error, Topology, require_testbed};

use crate::{echo_roundtrip, echo_server};

/// A TCP server in a host namespace echoes a client's payload across the router, over IPv4 and
/// IPv6; the server sees the client's real address (routed, not translated).
#[test]
fn tcp_client_to_host_through_router_v4_and_v6() {
    let tb = require_testbed!("network namespaces (root)");
    let topo = Topology::builder()
        .clients(1)
        .lb_units(1)
        .hosts(1)
        .build(&tb)
        .unwrap();
    let (client, host) = (topo.client(0), topo.host(0));
    for (ip, port) in [(host.v4(), 7001), (host.v6(), 7002)] {
        let addr = SocketAddr::new(ip, port);
        let server = echo_server(host.ns(), addr, 2);
        client
            .ns()
            .wait_for_tcp(addr, Duration::from_secs(5))
            .unwrap();
        let payload = format!("hello {addr} from {}", client.v4())
            .repeat(50)
            .into_bytes();
        let back = echo_roundtrip(client.ns(), addr, &payload).unwrap();
        assert_eq!(back, payload, "echo over {addr}");
        server.join().unwrap();
    }
    // The path really crosses the router: the client's route to the host uses the router.
    let route = client
        .ns()
        .run(["ip", "route", "get", &host.v4().to_string()])
        .unwrap();
    let router_ip = topo.router_client_iface(0).v4().to_string();
    assert!(route.contains(&format!("via {router_ip}")), "{route}");
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<switchyard_testbed::Testbed>();
    check::<switchyard_testbed::Netns>();
    check::<switchyard_testbed::Process>();
    check::<switchyard_testbed::Topology>();
    check::<switchyard_testbed::Fault>();
}

/// `run` executes inside the namespace and reports stderr on failure; `spawn` captures output
/// and carries the testbed marker.
#[test]
fn commands_and_processes_run_inside_the_namespace() {
    let tb = require_testbed!("network namespaces (root)");
    let a = tb.namespace("a").unwrap();
    let b = tb.namespace("b").unwrap();
    let link = tb.link(&a, "eth0", &b, "eth1").unwrap();
    a.add_addr("eth0", "198.18.7.1/24").unwrap();
    a.add_addr("eth0", "fd53:7900:0:7::1/64").unwrap();
    assert_eq!(link.b().ifname(), "eth1");

    let addrs = a.run(["ip", "-br", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        addrs.contains("198.18.7.1/24") && addrs.contains("fd53:7900:0:7::1/64"),
        "{addrs}"
    );
    assert!(!addrs.contains("tentative"), "DAD must be off: {addrs}");
    // Namespace b has no such address: the command really ran elsewhere.
    assert!(!b.run(["ip", "-br", "addr"]).unwrap().contains("198.18.7.1"));

    let err = a.run(["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
    assert!(
        matches!(err, Error::Command { ref stderr, .. } if stderr == "oops"),
        "{err}"
    );
    let slow = a
        .command(["sleep", "5"])
        .timeout(Duration::from_millis(100))
        .run();
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
    assert_eq!(a.command(["cat"]).input("fed").run().unwrap(), "fed");

    a.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(a.sysctl_value("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(b.sysctl_value("net.ipv4.ip_forward").unwrap(), "0");

    let p = a
        .spawn([
            "sh",
            "-c",
            "echo out; echo err >&2; echo marker=$SWITCHYARD_TESTBED; ip -br addr; sleep 30",
        ])
        .unwrap();
    p.wait_for_output("marker=", Duration::from_secs(5))
        .unwrap();
    p.wait_for_output("198.18.7.1", Duration::from_secs(5))
        .unwrap();
    let out = p.stdout().unwrap();
    assert!(out.starts_with("out\n"), "{out}");
    assert!(out.contains(&format!("marker={}\n", tb.name())), "{out}");
    assert_eq!(p.stderr().unwrap(), "err\n");
    assert!(p.stdout_path().starts_with(tb.log_dir()));
    assert!(p.is_running());
}

/// Addresses and routes outside the test ranges never reach the kernel.
#[test]
fn addresses_and_routes_outside_the_test_ranges_are_refused() {
    let tb = require_testbed!("network namespaces (root)");
    let a = tb.namespace("a").unwrap();
    let b = tb.namespace("b").unwrap();
    tb.link(&a, "eth0", &b, "eth0").unwrap();
    a.add_addr("eth0", "198.18.9.1/24").unwrap();
    for bad in ["10.0.0.1/8", "192.168.1.1/24", "2001:db8::1/64"] {
        assert!(
            matches!(a.add_addr("eth0", bad), Err(Error::OutsideTestRange(_))),
            "{bad}"
        );
    }
    let gw: std::net::IpAddr = "198.18.9.2".parse().unwrap();
    assert!(matches!(
        a.add_route("0.0.0.0/0", gw),
        Err(Error::OutsideTestRange(_))
    ));
    assert!(matches!(
        a.add_route("8.8.8.8", gw),
        Err(Error::OutsideTestRange(_))
    ));
    let routes = a.run(["ip", "route"]).unwrap();
    assert!(!routes.contains("default"), "{routes}");
    assert!(tb.namespace("a").is_err(), "roles are unique per testbed");
}
