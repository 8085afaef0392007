//! Packet-level load balancing under real traffic (issue 4's test list), on real processes in
//! namespaces: `switchyard lb` (forwarder, classifier, health cache), three hosts running an
//! echo server that names the host in every answer (support/echo.rs) with their agents, and
//! clients opening TCP connections and UDP pseudo-connections to the VIPs through the router.
//! Weights are set through the agents' local API (capacity and load per row), so the expected
//! split comes from spare capacity = capacity × (100 − load), as the allotments compute it.
//!
//! - `spread_by_weight_ipv4_ipv6_udp`: 10,000 IPv4 TCP connections, 10,000 IPv6 ones and 300
//!   UDP pseudo-connections (3 exchanges each, one client port each) all succeed and spread
//!   60/30/10 within ±3 points (TCP) / ±5 points (UDP);
//! - `split_units_spread_by_weight`: the same with separate forwarder and classifier units
//!   (3,000 TCP, 150 UDP);
//! - `xdp_attach_spreads`: the spread with the forwarder attached at XDP (`xdp+tc`, then
//!   `xdp` alone), 2,000 connections each;
//! - `long_lived_connections_keep_their_host_through_weight_change_drain_and_failure`: 12
//!   long-lived connections keep exchanging data with the same host while weights change, a
//!   host drains and another fails; new connections avoid the drained and the failed host;
//!   the long-lived ones then finish cleanly;
//! - `firewall_prefixes_and_rate_limit_drop_what_they_should_and_nothing_else`: an allowed
//!   client, a denied one, one outside the allow list, and a per-source new-connection rate
//!   limit (burst, then dropped SYNs) that leaves other sources and established flows alone;
//!   the per-VIP drop counters in `/v1/flows` match.
//!
//! Every client-observed error is counted; resets (ECONNRESET, ECONNREFUSED, EPIPE,
//! ECONNABORTED) are asserted to be zero everywhere, failures too (except the SYNs the
//! firewall is meant to drop, which must time out, never reset). No timed assertions: waits
//! poll with generous deadlines, durations are printed. Needs root (skipped otherwise).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{
    Cluster, ClusterSpec, PacketSpec, SERVICE, SERVICE6, UDP_SERVICE, UDP_VIP, VIP, VIP6,
};
use support::line_conn::{LineConn, host_of};
use support::wait;
use switchyard_testbed::Netns;

/// Connect and answer time limit of a connection that must succeed (a lost SYN is
/// retransmitted after 1 s and 3 s, so it still succeeds).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Client threads opening connections in parallel.
const CLIENT_THREADS: usize = 8;
/// The spread's tolerance for TCP, in percentage points of the total.
const TCP_TOLERANCE: f64 = 3.0;
/// The spread's tolerance for UDP (fewer pseudo-connections), in percentage points.
const UDP_TOLERANCE: f64 = 5.0;
/// Capacity and load of hosts 0, 1, 2: spare capacity 6000, 3000, 1000, so 60/30/10 %.
const WEIGHTS: [(u8, u8); 3] = [(60, 0), (50, 40), (40, 75)];

// ---- client side -------------------------------------------------------------------------

/// What the clients observed.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Connections (or pseudo-connections) answered, by host name.
    hosts: BTreeMap<String, u64>,
    /// Connections that failed (any reason), with the first few errors.
    failed: u64,
    errors: Vec<String>,
    /// Failures that were resets seen by the client (ECONNRESET, ECONNREFUSED, EPIPE,
    /// ECONNABORTED).
    resets: u64,
    /// Failures that were time-outs (connect or answer).
    timeouts: u64,
}

impl Tally {
    fn ok(&mut self, host: &str) {
        *self.hosts.entry(host.to_owned()).or_default() += 1;
    }

    fn fail(&mut self, what: &str, e: &std::io::Error) {
        self.failed += 1;
        if is_reset(e) {
            self.resets += 1;
        }
        if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            self.timeouts += 1;
        }
        if self.errors.len() < 8 {
            self.errors.push(format!("{what}: {e} ({:?})", e.kind()));
        }
    }

    fn merge(&mut self, other: Tally) {
        for (h, n) in other.hosts {
            *self.hosts.entry(h).or_default() += n;
        }
        self.failed += other.failed;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        for e in other.errors {
            if self.errors.len() < 8 {
                self.errors.push(e);
            }
        }
    }

    fn answered(&self) -> u64 {
        self.hosts.values().sum()
    }

    fn count(&self, host: &str) -> u64 {
        self.hosts.get(host).copied().unwrap_or(0)
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// One short connection: connect, one line there and back, close (our FIN first, then the
/// server's), read to the end. Returns the host that answered.
fn one_connection(
    vip: SocketAddr,
    tag: &str,
    connect_timeout: Duration,
) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&vip, connect_timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream).write_all(format!("{tag}\n").as_bytes())?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let host = host_of(&answer, tag)?;
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} bytes after the answer",
            rest.len()
        )));
    }
    Ok(host)
}

/// `n` short connections to `vip` from `ns`, `threads` at a time.
fn connections(
    ns: &Netns,
    vip: SocketAddr,
    n: usize,
    threads: usize,
    connect_timeout: Duration,
) -> (Tally, Duration) {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Tally::default());
    ns.enter(|| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut tally = Tally::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let tag = format!("c{i}");
                        match one_connection(vip, &tag, connect_timeout) {
                            Ok(host) => tally.ok(&host),
                            Err(e) => tally.fail(&format!("connection {i} to {vip}"), &e),
                        }
                    }
                    total.lock().expect("tally").merge(tally);
                });
            }
        });
    })
    .expect("enter the client namespace");
    let tally = total.into_inner().expect("tally");
    (tally, started.elapsed())
}

/// `n` UDP pseudo-connections to `vip` from `ns`: each from its own socket (client port),
/// `exchanges` datagrams there and back, all answered by one host.
fn udp_flows(ns: &Netns, vip: SocketAddr, n: usize, exchanges: usize) -> (Tally, Duration) {
    let started = Instant::now();
    let tally = ns
        .enter(|| {
            let mut tally = Tally::default();
            // Every socket stays open until the end, so each flow has its own client port
            // (a closed socket's port may be handed out again, and the same 4-tuple is the
            // same pseudo-connection while its route lives).
            let mut open = Vec::with_capacity(n);
            for i in 0..n {
                match udp_flow(vip, i, exchanges) {
                    Ok((host, socket)) => {
                        tally.ok(&host);
                        open.push(socket);
                    }
                    Err(e) => tally.fail(&format!("udp flow {i}"), &e),
                }
            }
            tally
        })
        .expect("enter the client namespace");
    (tally, started.elapsed())
}

fn udp_flow(vip: SocketAddr, i: usize, exchanges: usize) -> std::io::Result<(String, UdpSocket)> {
    let socket = UdpSocket::bind(SocketAddr::new(
        if vip.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        },
        0,
    ))?;
    socket.connect(vip)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut first: Option<String> = None;
    let mut buf = [0u8; 256];
    for m in 0..exchanges {
        let tag = format!("u{i}-{m}");
        socket.send(tag.as_bytes())?;
        let len = socket.recv(&mut buf)?;
        let answer = format!("{}\n", String::from_utf8_lossy(&buf[..len]));
        let host = host_of(&answer, &tag)?;
        match &first {
            None => first = Some(host),
            Some(h) if *h == host => {}
            Some(h) => {
                return Err(std::io::Error::other(format!(
                    "pseudo-connection {i} moved from {h} to {host}"
                )));
            }
        }
    }
    let host = first.ok_or_else(|| std::io::Error::other("no exchange"))?;
    Ok((host, socket))
}

/// Opens long-lived connection `index` to `vip` from the namespace `ns`.
fn open_long_lived(ns: &Netns, vip: SocketAddr, index: usize) -> std::io::Result<LineConn> {
    ns.enter(|| LineConn::open(vip, format!("l{index}"), TIMEOUT))
        .expect("enter the client namespace")
}

/// Long-lived connections exchanging data on a background thread until stopped.
struct Chatter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<LineConn>, Tally)>,
}

impl Chatter {
    fn start(mut conns: Vec<LineConn>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut tally = Tally::default();
            while !flag.load(Ordering::Relaxed) {
                for c in &mut conns {
                    match c.exchange() {
                        Ok(()) => tally.ok(&c.host),
                        Err(e) => tally.fail(&format!("long-lived {} to {}", c.name, c.host), &e),
                    }
                }
                // Bounded: a broken connection fails every round; stop early.
                if tally.failed > 50 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (conns, tally)
        });
        Self { stop, thread }
    }

    fn stop(self) -> (Vec<LineConn>, Tally) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("chatter thread")
    }
}

// ---- cluster side ------------------------------------------------------------------------

/// The services a cluster serves, by row name, with their VIPs.
fn services(spec: &ClusterSpec) -> Vec<&'static str> {
    let mut s = vec![SERVICE];
    if spec.udp {
        s.push(UDP_SERVICE);
    }
    if spec.ipv6 {
        s.push(SERVICE6);
    }
    s
}

/// Starts a cluster with echo servers, makes every row healthy with `weights[k]` (capacity,
/// load) and waits until every health-cache unit shows exactly that.
fn start(what: &str, mut spec: ClusterSpec, weights: [(u8, u8); 3]) -> Option<Cluster> {
    spec.echo_servers = true;
    spec.hosts = 3;
    let cluster = Cluster::start(what, spec)?;
    let started = Instant::now();
    let services = services(cluster.spec());
    for (k, &(capacity, load)) in weights.iter().enumerate() {
        for service in &services {
            cluster.set_service_status(k, service, Some("healthy"), Some(load), Some(capacity));
        }
    }
    let expected_rows = 3 * services.len();
    let units: Vec<usize> = (0..cluster.spec().lb_units)
        .filter(|j| cluster.unit_runs_health(*j))
        .collect();
    wait::wait_until(
        "every row healthy with its weight at every health-cache unit",
        Duration::from_secs(15),
        || {
            for &j in &units {
                let hosts = cluster.try_unit_hosts(j)?;
                let mut rows = 0;
                for h in &hosts.hosts {
                    // Hosts web-N (101+k) and web6-N (201+k) of host namespace k.
                    let k = (h.id % 100) as usize - 1;
                    let (capacity, load) = weights[k];
                    for r in &h.rows {
                        if r.health != "healthy" || r.load != load || r.capacity != capacity {
                            return Err(format!(
                                "lb-{}: {:?} {} {}/{} health={} load={} cap={}",
                                j + 1,
                                h.name,
                                r.vip,
                                r.protocol,
                                r.endpoint,
                                r.health,
                                r.load,
                                r.capacity
                            ));
                        }
                        rows += 1;
                    }
                }
                if rows != expected_rows {
                    return Err(format!("lb-{}: {rows} of {expected_rows} rows", j + 1));
                }
            }
            Ok(())
        },
    );
    eprintln!(
        "{what}: rows healthy and weighted after {:?}",
        started.elapsed()
    );
    Some(cluster)
}

/// Waits until one connection to `vip` from client 0 succeeds: a classifier whose allotments
/// come over UDP has had none while no host was healthy, and until its next refresh new
/// connections are refused (dropped SYNs, so the client would retransmit). Connect time-outs
/// are expected while waiting; resets are not.
fn wait_serving(cluster: &Cluster, vip: SocketAddr) -> Tally {
    let ns = cluster.topo().client(0).ns().clone();
    let mut warmup = Tally::default();
    let (_, took) = wait::wait_until(
        &format!("a first connection to {vip} is answered"),
        Duration::from_secs(20),
        || {
            let (t, _) = connections(&ns, vip, 1, 1, Duration::from_millis(500));
            let done = t.answered() == 1;
            let last = format!("{:?}", t.errors);
            warmup.merge(t);
            if done { Ok(()) } else { Err(last) }
        },
    );
    eprintln!("{vip}: first connection answered after {took:?}");
    assert_eq!(
        warmup.resets, 0,
        "resets while waiting: {:?}",
        warmup.errors
    );
    warmup
}

/// `Ok` when `tally` spreads like `weights` within `tolerance` points.
fn check_spread(
    tally: &Tally,
    weights: [(u8, u8); 3],
    tolerance: f64,
    names: impl Fn(usize) -> String,
) -> Result<Vec<(String, f64, f64)>, String> {
    let spare: Vec<f64> = weights
        .iter()
        .map(|(c, l)| f64::from(*c) * f64::from(100 - *l))
        .collect();
    let sum: f64 = spare.iter().sum();
    let total = tally.answered() as f64;
    let mut shares = Vec::new();
    for (k, spare) in spare.iter().enumerate() {
        let name = names(k);
        let expected = 100.0 * spare / sum;
        let got = 100.0 * tally.count(&name) as f64 / total;
        shares.push((name, expected, got));
    }
    if shares.iter().all(|(_, e, g)| (e - g).abs() <= tolerance) {
        Ok(shares)
    } else {
        Err(format!(
            "shares (host, expected %, got %) {shares:.1?} beyond ±{tolerance} points"
        ))
    }
}

fn report_flows(cluster: &Cluster, j: usize) -> String {
    match cluster.unit_flows(j) {
        Ok(flows) => format!(
            "lb-{} /v1/flows:\n  forwarder: {:?}\n  classifier: {:?}",
            j + 1,
            flows
                .forwarder
                .map(|f| (f.attach, f.flows, f.vips, f.hosts, f.agent, f.xdp, f.tc)),
            flows
                .classifier
                .map(|c| (c.connections, c.events, c.endpoints))
        ),
        Err(e) => format!("lb-{}: /v1/flows: {e}", j + 1),
    }
}

fn report_all(cluster: &Cluster) -> String {
    (0..cluster.spec().lb_units)
        .map(|j| report_flows(cluster, j))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that a run had no failure at all and spreads like `weights`.
#[track_caller]
fn assert_spread(
    cluster: &Cluster,
    what: &str,
    tally: &Tally,
    n: usize,
    took: Duration,
    tolerance: f64,
    names: impl Fn(usize) -> String,
) {
    let rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "{what}: {n} in {took:.2?} ({rate:.0}/s), answered {}, failed {}, resets {}, by host {:?}",
        tally.answered(),
        tally.failed,
        tally.resets,
        tally.hosts
    );
    assert!(
        tally.failed == 0 && tally.answered() == n as u64,
        "{what}: {} of {n} failed ({} resets, {} time-outs): {:?}\n{}\n{}",
        tally.failed,
        tally.resets,
        tally.timeouts,
        tally.errors,
        report_all(cluster),
        cluster.dump_with_logs()
    );
    match check_spread(tally, WEIGHTS, tolerance, names) {
        Ok(shares) => {
            eprintln!("{what}: shares (host, expected %, got %) {shares:.1?} within ±{tolerance}")
        }
        Err(e) => panic!("{what}: {e}\n{}", report_all(cluster)),
    }
}

fn web(k: usize) -> String {
    format!("web-{}", k + 1)
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn spread_by_weight_ipv4_ipv6_udp() {
    let spec = ClusterSpec {
        lb_units: 1,
        packet: Some(PacketSpec::all_in_one("nat")),
        ipv6: true,
        udp: true,
        ..ClusterSpec::default()
    };
    let Some(cluster) = start("packet spread by weight", spec, WEIGHTS) else {
        return;
    };
    let ns = cluster.topo().client(0).ns().clone();
    let warm = wait_serving(&cluster, VIP);

    let n = 10_000;
    let (tally, took) = connections(&ns, VIP, n, CLIENT_THREADS, TIMEOUT);
    assert_spread(&cluster, "IPv4 TCP", &tally, n, took, TCP_TOLERANCE, web);

    let n6 = 10_000;
    let warm6 = wait_serving(&cluster, VIP6);
    let (tally6, took6) = connections(&ns, VIP6, n6, CLIENT_THREADS, TIMEOUT);
    // The IPv6 hosts share the namespaces and echo servers of web-N: answers name web-N.
    assert_spread(&cluster, "IPv6 TCP", &tally6, n6, took6, TCP_TOLERANCE, web);

    let nu = 300;
    let (udp, tooku) = udp_flows(&ns, UDP_VIP, nu, 3);
    assert_spread(&cluster, "UDP", &udp, nu, tooku, UDP_TOLERANCE, web);

    eprintln!("{}", report_flows(&cluster, 0));
    // Per-VIP counters and the classifier's per-endpoint counts (published every 200 ms).
    wait::wait_until(
        "the unit counted every first packet and new connection",
        Duration::from_secs(5),
        || {
            let flows = cluster.unit_flows(0)?;
            let forwarder = flows.forwarder.ok_or("no forwarder")?;
            let classifier = flows.classifier.ok_or("no classifier")?;
            for (service, vip, wanted) in [
                (SERVICE, VIP, n as u64 + warm.answered()),
                (SERVICE6, VIP6, n6 as u64 + warm6.answered()),
                (UDP_SERVICE, UDP_VIP, nu as u64),
            ] {
                let v = forwarder
                    .vips
                    .iter()
                    .find(|v| v.service == service)
                    .ok_or_else(|| format!("no VIP of {service}: {:?}", forwarder.vips))?;
                let new: u64 = classifier
                    .endpoints
                    .iter()
                    .filter(|e| e.vip == vip)
                    .map(|e| e.new_connections)
                    .sum();
                if v.misses < wanted || v.reply_packets == 0 || new != wanted {
                    return Err(format!(
                        "{service}: {wanted} connections, classifier counted {new}: {v:?}"
                    ));
                }
            }
            if forwarder.agent.get("table_full").copied().unwrap_or(0) != 0 {
                return Err(format!("table full: {:?}", forwarder.agent));
            }
            Ok(())
        },
    );
}

#[test]
fn split_units_spread_by_weight() {
    let spec = ClusterSpec {
        lb_units: 2,
        packet: Some(PacketSpec::split("nat")),
        udp: true,
        ..ClusterSpec::default()
    };
    let Some(cluster) = start("packet split spread", spec, WEIGHTS) else {
        return;
    };
    let ns = cluster.topo().client(0).ns().clone();
    wait_serving(&cluster, VIP);
    let n = 3_000;
    let (tally, took) = connections(&ns, VIP, n, CLIENT_THREADS, TIMEOUT);
    assert_spread(
        &cluster,
        "split IPv4 TCP",
        &tally,
        n,
        took,
        TCP_TOLERANCE,
        web,
    );
    let nu = 150;
    let (udp, tooku) = udp_flows(&ns, UDP_VIP, nu, 3);
    assert_spread(&cluster, "split UDP", &udp, nu, tooku, UDP_TOLERANCE, web);
    eprintln!("{}", report_all(&cluster));
    // The first packets were reinjected by lb-1 from its pending buffer once lb-2's routes
    // arrived; lb-2 counted the connections (counters published every 200 ms).
    wait::wait_until(
        "lb-1 reinjected and lb-2 classified every first packet",
        Duration::from_secs(5),
        || {
            let forwarder = cluster.unit_flows(0)?.forwarder.ok_or("lb-1 forwards")?;
            let classifier = cluster.unit_flows(1)?.classifier.ok_or("lb-2 classifies")?;
            let reinjected = forwarder.agent.get("reinjected").copied().unwrap_or(0);
            let new = classifier
                .events
                .get("new_connections")
                .copied()
                .unwrap_or(0);
            if reinjected >= (n + nu) as u64 && new >= (n + nu) as u64 {
                Ok(())
            } else {
                Err(format!(
                    "lb-1 agent {:?}; lb-2 {:?}",
                    forwarder.agent, classifier.events
                ))
            }
        },
    );
}

/// XDP on veth: frames the forwarder redirects reach the next namespace only with GRO on the
/// receiving peer (the harness turns it on), and the XDP program needs full checksums, so
/// the client and the hosts send without checksum offload (`ethtool -K eth0 tx off`, as the
/// forwarder's own XDP tests do).
#[test]
fn xdp_attach_spreads() {
    for attach in ["xdp+tc", "xdp"] {
        let spec = ClusterSpec {
            lb_units: 1,
            packet: Some(PacketSpec {
                attach,
                ..PacketSpec::all_in_one("nat")
            }),
            ..ClusterSpec::default()
        };
        let what = format!("packet spread via {attach}");
        let Some(cluster) = start(&what, spec, WEIGHTS) else {
            return;
        };
        let topo = cluster.topo();
        let mut offload_off = vec![topo.client(0).ns().clone()];
        offload_off.extend((0..3).map(|k| topo.host(k).ns().clone()));
        for ns in &offload_off {
            ns.run(["ethtool", "-K", "eth0", "tx", "off"])
                .expect("tx checksum offload off");
        }
        let ns = topo.client(0).ns().clone();
        wait_serving(&cluster, VIP);
        let n = 2_000;
        let (tally, took) = connections(&ns, VIP, n, CLIENT_THREADS, TIMEOUT);
        assert_spread(&cluster, &what, &tally, n, took, TCP_TOLERANCE, web);
        let flows = cluster.unit_flows(0).expect("/v1/flows");
        let forwarder = flows.forwarder.expect("the forwarder runs");
        eprintln!("{}", report_flows(&cluster, 0));
        assert_eq!(forwarder.attach, attach);
        let xdp_hits = forwarder.xdp.get("hit_packets").copied().unwrap_or(0);
        assert!(
            xdp_hits >= n as u64,
            "{attach}: the XDP program forwarded the routed packets: xdp {:?} tc {:?}",
            forwarder.xdp,
            forwarder.tc
        );
    }
}

/// Waits until `probes` consecutive new connections (in one batch) avoid every host of
/// `avoid`: the classifier has taken in the change. Probe connections must all succeed.
fn wait_avoided(cluster: &Cluster, what: &str, avoid: &[String], all: &mut Tally) {
    let ns = cluster.topo().client(0).ns().clone();
    let (_, took) = wait::wait_until(what, Duration::from_secs(15), || {
        let (t, _) = connections(&ns, VIP, 20, 2, TIMEOUT);
        let landed: Vec<(&String, u64)> = avoid.iter().map(|h| (h, t.count(h))).collect();
        let clean = t.failed == 0 && landed.iter().all(|(_, n)| *n == 0);
        let seen = format!("probe batch {:?}, errors {:?}", t.hosts, t.errors);
        all.merge(t);
        if clean { Ok(()) } else { Err(seen) }
    });
    eprintln!("{what}: after {took:?}");
}

#[test]
fn long_lived_connections_keep_their_host_through_weight_change_drain_and_failure() {
    let spec = ClusterSpec {
        lb_units: 1,
        packet: Some(PacketSpec::all_in_one("nat")),
        ..ClusterSpec::default()
    };
    let even = [(50, 10); 3];
    let Some(cluster) = start("packet long-lived connections", spec, even) else {
        return;
    };
    let ns = cluster.topo().client(0).ns().clone();
    let mut all = wait_serving(&cluster, VIP);

    // Long-lived connections over every host (tokens go to the host with most left, so 12
    // connections at even weights land 4 per host).
    let mut conns = Vec::new();
    for i in 0..12 {
        conns.push(open_long_lived(&ns, VIP, i).unwrap_or_else(|e| {
            panic!(
                "long-lived connection {i}: {e}\n{}",
                cluster.dump_with_logs()
            )
        }));
    }
    let on = |conns: &[LineConn], host: &str| conns.iter().filter(|c| c.host == host).count();
    let placement: Vec<usize> = (0..3).map(|k| on(&conns, &web(k))).collect();
    eprintln!("long-lived connections per host: {placement:?}");
    assert!(placement.iter().all(|n| *n > 0), "{placement:?}");
    let chatter = Chatter::start(conns);

    // 1. Weights change under the connections: host 0 gets most new connections. (Capacity,
    // not load: the agent smooths load samples, so a load change reaches the units over
    // several samples.)
    for (k, capacity) in [(0, 90), (1, 10), (2, 10)] {
        cluster.set_status(k, None, None, Some(capacity));
        cluster.wait_rows(
            "the new capacity at the unit",
            k,
            Duration::from_secs(10),
            |r| r.capacity == capacity,
        );
    }
    // Spare 8100 : 900 : 900. Wait until new connections follow (the classifier drops
    // its allotment when host tables change), then measure.
    let ns2 = ns.clone();
    let (_, took) = wait::wait_until(
        "new connections follow the new weights",
        Duration::from_secs(15),
        || {
            let (t, _) = connections(&ns2, VIP, 50, 2, TIMEOUT);
            let share = t.count(&web(0)) as f64 / 50.0;
            let seen = format!("{:?} errors {:?}", t.hosts, t.errors);
            let failed = t.failed;
            all.merge(t);
            if failed == 0 && share >= 0.7 {
                Ok(())
            } else {
                Err(seen)
            }
        },
    );
    eprintln!("new weights in effect after {took:?}");
    let (t, _) = connections(&ns, VIP, 300, 4, TIMEOUT);
    eprintln!("300 new connections at the new weights: {:?}", t.hosts);
    let share0 = t.count(&web(0)) as f64 / 300.0;
    assert!(
        (share0 - 0.818).abs() <= 0.05 && t.failed == 0,
        "new connections at 8100:900:900 spare capacity: {:?} {:?}",
        t.hosts,
        t.errors
    );
    all.merge(t);

    // 2. Drain host 1: no new connections, its long-lived ones carry on.
    cluster.directive(1, "drain");
    cluster.wait_rows("host 1 draining", 1, Duration::from_secs(10), |r| {
        r.current == "draining"
    });
    wait_avoided(
        &cluster,
        "new connections avoid the draining host",
        &[web(1)],
        &mut all,
    );
    let (t, took) = connections(&ns, VIP, 300, 4, TIMEOUT);
    eprintln!(
        "300 new connections with host 1 draining in {took:?}: {:?}",
        t.hosts
    );
    assert_eq!(
        t.count(&web(1)),
        0,
        "the draining host got new connections: {:?}",
        t.hosts
    );
    assert_eq!(t.failed, 0, "{:?}", t.errors);
    all.merge(t);

    // 3. Host 2 fails its check: no new connections either, its long-lived ones carry on.
    cluster.set_status(2, Some("failing"), None, None);
    cluster.wait_rows("host 2 failing", 2, Duration::from_secs(10), |r| {
        r.health == "failing"
    });
    wait_avoided(
        &cluster,
        "new connections avoid the draining and the failed host",
        &[web(1), web(2)],
        &mut all,
    );
    let (t, took) = connections(&ns, VIP, 300, 4, TIMEOUT);
    eprintln!(
        "300 new connections with host 1 draining, host 2 failed in {took:?}: {:?}",
        t.hosts
    );
    assert_eq!(
        t.count(&web(0)),
        300,
        "only host 0 takes new connections: {:?} {:?}",
        t.hosts,
        t.errors
    );
    all.merge(t);

    // The long-lived connections kept their hosts all along and now finish cleanly.
    let (conns, chat) = chatter.stop();
    eprintln!(
        "long-lived exchanges by host: {:?}, failures {}",
        chat.hosts, chat.failed
    );
    assert_eq!(
        chat.failed,
        0,
        "long-lived exchanges failed: {:?}\n{}",
        chat.errors,
        report_flows(&cluster, 0)
    );
    assert!(
        chat.hosts.len() == 3,
        "exchanges on every host's connections: {:?}",
        chat.hosts
    );
    all.merge(chat);
    let mut finished = Tally::default();
    for c in conns {
        let (i, host) = (c.name.clone(), c.host.clone());
        match c.finish() {
            Ok(n) => {
                assert!(n >= 3, "connection {i} exchanged {n} times");
                finished.ok(&host);
            }
            Err(e) => finished.fail(&format!("finishing long-lived {i} to {host}"), &e),
        }
    }
    eprintln!(
        "long-lived connections finished by host: {:?}",
        finished.hosts
    );
    assert_eq!(finished.failed, 0, "{:?}", finished.errors);
    all.merge(finished);
    eprintln!("{}", report_flows(&cluster, 0));
    assert_eq!(all.resets, 0, "client-observed resets: {:?}", all.errors);
    assert_eq!(all.failed, 0, "client-observed failures: {:?}", all.errors);
    eprintln!(
        "client-observed: {} answered, {} resets",
        all.answered(),
        all.resets
    );
}

/// Connect time limit where the firewall drops the SYN: shorter than the first SYN
/// retransmission (1 s), so each attempt sends exactly one SYN.
const DROPPED: Duration = Duration::from_millis(300);

#[test]
fn firewall_prefixes_and_rate_limit_drop_what_they_should_and_nothing_else() {
    // Clients: 0 = 198.18.1.2 (allowed, rate-limited like everyone), 1 = 198.18.2.2 (denied:
    // its /32 inside an allowed /24), 2 = 198.18.3.2 (outside the allow list), 3 = 198.18.4.2
    // (allowed: the rate limit's bystander).
    let rate = 1;
    let burst = 20;
    let spec = ClusterSpec {
        clients: 4,
        lb_units: 1,
        packet: Some(PacketSpec::all_in_one("nat")),
        firewall: Some(format!(
            r#"{{ allow = ["198.18.1.0/24", "198.18.2.0/24", "198.18.4.0/24"], deny = ["198.18.2.2/32"], new_connections_per_second = {rate}, burst = {burst} }}"#
        )),
        ..ClusterSpec::default()
    };
    let Some(cluster) = start("packet firewall", spec, WEIGHTS) else {
        return;
    };
    let client = |i: usize| cluster.topo().client(i).ns().clone();
    let vip_counters = || {
        let f = cluster
            .unit_flows(0)
            .expect("/v1/flows")
            .forwarder
            .expect("forwarder");
        let v = f
            .vips
            .into_iter()
            .find(|v| v.service == SERVICE)
            .expect("web VIP");
        (v.fw_denied, v.fw_not_allowed, v.fw_rate_limited)
    };
    assert_eq!(vip_counters(), (0, 0, 0));

    // Denied and not-allowed sources: every SYN dropped (time-outs, never resets).
    for (i, what) in [(1, "denied"), (2, "not allowed")] {
        let (t, took) = connections(&client(i), VIP, 5, 1, DROPPED);
        eprintln!("client {i} ({what}): {t:?} in {took:?}");
        assert_eq!(
            (t.answered(), t.timeouts, t.resets),
            (0, 5, 0),
            "client {i} ({what}): {:?}",
            t.errors
        );
    }
    let (denied, not_allowed, limited) = vip_counters();
    eprintln!(
        "after the blocked clients: denied {denied}, not allowed {not_allowed}, rate limited {limited}"
    );
    assert!(
        denied >= 5 && not_allowed >= 5 && limited == 0,
        "{}",
        report_flows(&cluster, 0)
    );

    // Client 0: one long-lived connection (a token), then attempts in a row: the rest of the
    // burst passes, then SYNs are dropped but for the bucket's refill (1/s).
    let mut long = open_long_lived(&client(0), VIP, 0).expect("long-lived connection");
    let attempts = 40;
    let started = Instant::now();
    let outcomes: Vec<Result<String, std::io::Error>> = client(0)
        .enter(|| {
            (0..attempts)
                .map(|i| one_connection(VIP, &format!("r{i}"), DROPPED))
                .collect()
        })
        .expect("enter the client namespace");
    let took = started.elapsed();
    long.exchange()
        .expect("the established connection is unaffected by the limit");
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    let first_drop = outcomes.iter().position(Result::is_err);
    let timeouts = outcomes
        .iter()
        .filter(|o| {
            o.as_ref()
                .is_err_and(|e| matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
        })
        .count();
    let others: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .filter(|e| !matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
        .map(|e| format!("{e} ({:?})", e.kind()))
        .collect();
    // Refill allowance: `rate` per second of the run, plus one for a partly filled token.
    let refill = (took.as_secs_f64() * f64::from(rate)).ceil() as usize + 1;
    eprintln!(
        "client 0: {attempts} attempts in {took:?}: {passed} passed, {timeouts} dropped, first drop at #{first_drop:?}, refill allowance {refill}"
    );
    assert!(
        others.is_empty(),
        "only dropped SYNs (time-outs), no resets: {others:?}"
    );
    assert!(
        first_drop.is_some_and(|i| i >= burst - 1),
        "the burst (less the long-lived connection's token) passes, then SYNs are dropped: first drop at {first_drop:?}"
    );
    assert!(
        passed <= burst - 1 + refill,
        "{passed} passed: more than the burst and the refill"
    );
    assert!(timeouts >= 5, "{timeouts} dropped");

    // The bystander (client 3) is not limited by client 0's bucket: 10 quick connections.
    let (t, took) = connections(&client(3), VIP, 10, 1, TIMEOUT);
    eprintln!("client 3: {:?} in {took:?}", t.hosts);
    assert_eq!((t.answered(), t.failed), (10, 0), "{:?}", t.errors);

    long.exchange().expect("still unaffected");
    let exchanges = long
        .finish()
        .expect("the long-lived connection finishes cleanly");
    let (denied2, not_allowed2, limited2) = vip_counters();
    eprintln!(
        "firewall drops: denied {denied2}, not allowed {not_allowed2}, rate limited {limited2}; long-lived exchanges {exchanges}\n{}",
        report_flows(&cluster, 0)
    );
    assert_eq!(
        (denied2, not_allowed2),
        (denied, not_allowed),
        "no other source was blocked"
    );
    assert!(
        limited2 >= timeouts as u64,
        "every dropped SYN of client 0 counted: {limited2} < {timeouts}"
    );
}
