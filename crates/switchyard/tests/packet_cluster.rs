//! Packet-level load balancing end to end, on real processes in namespaces: `switchyard lb`
//! with the forwarder (tc attach), classifier and health-cache roles, three hosts running a
//! small HTTP server with their agents (health set through the agents' local API), and a
//! client opening one TCP connection per request to the VIP through the router.
//!
//! - all-in-one, full NAT: 200 connections all succeed and reach every host; after host 0 is
//!   drained, 100 more never reach it;
//! - all-in-one, half NAT (hosts route the client prefix back through the unit): the same
//!   200;
//! - separate units (`lb-1` forwarder + health cache, `lb-2` classifier only, route plumbing
//!   and allotments over UDP): the same 200.
//!
//! Zero failures are asserted: a failed connect, a reset or a wrong answer fails the test.
//! Checksums: offloads stay on (locally generated CHECKSUM_PARTIAL packets); the forwarder
//! completes the checksum of a frame it reinjects. Needs root (skipped otherwise).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec, PacketSpec, VIP};
use support::wait;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn start(what: &str, packet: PacketSpec) -> Option<Cluster> {
    let split = packet.split;
    let spec = ClusterSpec {
        lb_units: if split { 2 } else { 1 },
        hosts: 3,
        app_servers: true,
        agents: true,
        packet: Some(packet),
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start(what, spec)?;
    for k in 0..3 {
        cluster.set_status(k, Some("healthy"), Some(10), None);
    }
    for k in 0..3 {
        cluster.wait_rows(
            "every host healthy at the units",
            k,
            Duration::from_secs(10),
            |r| r.health == "healthy",
        );
    }
    Some(cluster)
}

/// One HTTP request per connection from client 0 to the VIP, `n` times, in sequence. Returns
/// the failures (empty when every connection answered 200).
fn requests(cluster: &Cluster, n: usize) -> Vec<String> {
    let started = Instant::now();
    let failures = cluster
        .topo()
        .client(0)
        .ns()
        .enter(|| {
            let mut failures = Vec::new();
            for i in 0..n {
                if let Err(e) = one_request(VIP) {
                    failures.push(format!("connection {i}: {e}"));
                    // Bounded: a broken path fails fast instead of timing out n times.
                    if failures.len() >= 5 {
                        break;
                    }
                }
            }
            failures
        })
        .expect("enter the client namespace");
    eprintln!(
        "{n} connections in {:?}, {} failed",
        started.elapsed(),
        failures.len()
    );
    failures
}

fn one_request(vip: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("answer {text:?}")))
    }
}

fn served(cluster: &mut Cluster) -> Vec<u64> {
    (0..3).map(|k| cluster.app(k).served()).collect()
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[track_caller]
fn assert_all_served(cluster: &mut Cluster, n: usize) -> Vec<u64> {
    let before = served(cluster);
    let failures = requests(cluster, n);
    assert!(
        failures.is_empty(),
        "{} of {n} connections failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        cluster.dump_with_logs()
    );
    // A server counts an answer after writing it, so the client may finish first.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let per_host = delta(&served(cluster), &before);
        let total = per_host.iter().sum::<u64>();
        if total == n as u64 || Instant::now() >= deadline {
            eprintln!("per host: {per_host:?}");
            assert_eq!(total, n as u64, "answers per host {per_host:?}");
            return per_host;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report_flows(cluster: &Cluster, j: usize) {
    match cluster.unit_flows(j) {
        Ok(flows) => eprintln!(
            "lb-{}: forwarder {:?}\nclassifier {:?}",
            j + 1,
            flows.forwarder.map(|f| (f.flows, f.vips, f.agent)),
            flows.classifier.map(|c| c.events)
        ),
        Err(e) => eprintln!("lb-{}: /v1/flows: {e}", j + 1),
    }
}

/// Waits until unit `j`'s classifier has admitted `n` connections (its counters are
/// published every 200 ms).
#[track_caller]
fn classified(cluster: &Cluster, j: usize, n: u64) {
    wait::wait_until(
        "the classifier counted every new connection",
        Duration::from_secs(3),
        || {
            let c = cluster.unit_flows(j)?.classifier.ok_or("no classifier")?;
            let got = c.events.get("new_connections").copied().unwrap_or(0);
            if got == n {
                Ok(())
            } else {
                Err(format!("{got} new connections: {:?}", c.events))
            }
        },
    );
}

#[test]
fn all_in_one_full_nat_spreads_and_respects_drain() {
    let Some(mut cluster) = start("packet all-in-one NAT", PacketSpec::all_in_one("nat")) else {
        return;
    };
    let per_host = assert_all_served(&mut cluster, 200);
    assert!(
        per_host.iter().all(|n| *n > 0),
        "every host got connections: {per_host:?}"
    );
    report_flows(&cluster, 0);
    let flows = cluster.unit_flows(0).expect("/v1/flows");
    let forwarder = flows.forwarder.expect("the forwarder runs");
    let vip = forwarder.vips.first().expect("one VIP");
    assert!(vip.misses >= 200, "every SYN missed once: {vip:?}");
    assert!(vip.packets > 0 && vip.reply_packets > 0, "{vip:?}");
    classified(&cluster, 0, 200);

    cluster.directive(0, "drain");
    cluster.wait_rows(
        "host 0 draining at the unit",
        0,
        Duration::from_secs(10),
        |r| r.current == "draining",
    );
    // The classifier notices the change within its 200 ms watch.
    std::thread::sleep(Duration::from_millis(500));
    let per_host = assert_all_served(&mut cluster, 100);
    assert_eq!(
        per_host[0], 0,
        "the drained host got new connections: {per_host:?}"
    );
    assert!(per_host[1] > 0 && per_host[2] > 0, "{per_host:?}");
}

#[test]
fn all_in_one_half_nat_spreads() {
    let Some(mut cluster) = start(
        "packet all-in-one half NAT",
        PacketSpec::all_in_one("half-nat"),
    ) else {
        return;
    };
    // Half NAT: the harness routes the hosts' answers to the client via the unit.
    let per_host = assert_all_served(&mut cluster, 200);
    assert!(
        per_host.iter().all(|n| *n > 0),
        "every host got connections: {per_host:?}"
    );
    report_flows(&cluster, 0);
}

#[test]
fn separate_forwarder_and_classifier_units_spread() {
    let Some(mut cluster) = start("packet split units", PacketSpec::split("nat")) else {
        return;
    };
    let per_host = assert_all_served(&mut cluster, 200);
    assert!(
        per_host.iter().all(|n| *n > 0),
        "every host got connections: {per_host:?}"
    );
    report_flows(&cluster, 0);
    report_flows(&cluster, 1);
    let forwarder = cluster
        .unit_flows(0)
        .expect("/v1/flows")
        .forwarder
        .expect("lb-1 forwards");
    assert!(
        forwarder.agent["reinjected"] >= 200,
        "the first packets were reinjected from the pending buffer: {:?}",
        forwarder.agent
    );
    classified(&cluster, 1, 200);
}
