//! Issue 4's capacity rule under real traffic: "when the table is full, new connections are
//! still served and the event is counted, never silently mis-routed". A forwarder that holds
//! only 8 routes, three hosts running the echo server; in each shape:
//!
//! - 40 long-lived connections are opened one after another (most find the table full) and
//!   keep exchanging lines with the same host; then 200 short connections (4 at a time) come
//!   and go while the long-lived ones stay open; then the long-lived ones finish cleanly;
//! - every connection succeeds with zero resets and zero failures.
//!
//! Shapes and what is counted:
//! - all-in-one, full NAT: `/v1/flows` shows at most 8 installed routes, table-full events
//!   (forwarder agent and classifier), slow-path deliveries in both directions (client →
//!   host frames and the hosts' replies to the NAT source), no slow-path frame dropped;
//! - all-in-one, half NAT: the same, and every connection that found the table full was
//!   switched to full NAT (`half_nat_overflow`), since the host's direct replies to the
//!   client could not be caught without a route;
//! - split units (full NAT): the forwarder unit keeps the routes it could not install and
//!   sends those flows' packets itself (`slow_path_sent`, `reply_misses`), and drops them
//!   when the classifier deletes them after the connections ended (`overflow_routes` 0);
//! - split units, half NAT: the forwarder refuses each half-NAT route that does not fit
//!   (`RouteRefused`), the classifier answers with a full-NAT route for the new connection
//!   (`half_nat_overflow`), which the forwarder then serves as above.
//!
//! No timed assertions. Needs root (skipped otherwise).

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec, PacketSpec, SERVICE, VIP};
use support::line_conn::LineConn;
use support::wait;
use switchyard_testbed::Netns;

/// Connect and answer time limit (a lost SYN is retransmitted after 1 s and 3 s).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The forwarder's routing table capacity.
const MAX_FLOWS: u32 = 8;
const LONG_LIVED: usize = 40;
const SHORT: usize = 200;

/// What the clients observed.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    resets: u64,
    errors: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: &str, e: &std::io::Error) {
        self.failed += 1;
        if matches!(
            e.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        ) {
            self.resets += 1;
        }
        if self.errors.len() < 8 {
            self.errors.push(format!("{what}: {e} ({:?})", e.kind()));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.resets += other.resets;
        for e in other.errors {
            if self.errors.len() < 8 {
                self.errors.push(e);
            }
        }
    }
}

/// `n` short connections (one exchange, then close), `threads` at a time.
fn short_connections(ns: &Netns, n: usize, threads: usize) -> Tally {
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
                        match LineConn::open(VIP, format!("s{i}"), TIMEOUT)
                            .and_then(LineConn::finish)
                        {
                            Ok(_) => tally.ok += 1,
                            Err(e) => tally.fail(&format!("short connection {i}"), &e),
                        }
                    }
                    total.lock().expect("tally").merge(tally);
                });
            }
        });
    })
    .expect("enter the client namespace");
    total.into_inner().expect("tally")
}

fn report(cluster: &Cluster) -> String {
    match cluster.unit_flows(0) {
        Ok(flows) => format!(
            "lb-1 /v1/flows:\n  forwarder: {:?}\n  classifier: {:?}",
            flows
                .forwarder
                .map(|f| (f.flows, f.max_flows, f.agent, f.tc, f.vips)),
            flows.classifier.map(|c| (c.connections, c.events))
        ),
        Err(e) => format!("lb-1: /v1/flows: {e}"),
    }
}

#[track_caller]
fn assert_clean(cluster: &Cluster, what: &str, tally: &Tally, n: u64) {
    eprintln!(
        "{what}: {} of {n} answered, {} failed, {} resets",
        tally.ok, tally.failed, tally.resets
    );
    assert!(
        tally.failed == 0 && tally.resets == 0 && tally.ok == n,
        "{what}: {} of {n} failed ({} resets): {:?}\n{}\n{}",
        tally.failed,
        tally.resets,
        tally.errors,
        report(cluster),
        cluster.dump_with_logs()
    );
}

/// Starts a cluster whose forwarder holds [`MAX_FLOWS`] routes and runs the traffic: the
/// long-lived connections, the short ones beside them, then the long-lived ones finish.
/// Asserts every connection succeeded without a reset. `None` when skipped.
fn run_full_table(what: &str, packet: PacketSpec) -> Option<Cluster> {
    let spec = ClusterSpec {
        lb_units: if packet.split { 2 } else { 1 },
        hosts: 3,
        echo_servers: true,
        packet: Some(packet),
        max_flows: Some(MAX_FLOWS),
        // Routes of finished connections go soon, so the end state is quick to see.
        extra_toml: "\n[classifier]\nfin_linger = \"1s\"\n".to_owned(),
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start(what, spec)?;
    for k in 0..3 {
        cluster.set_service_status(k, SERVICE, Some("healthy"), Some(0), Some(50));
    }
    let ns = cluster.topo().client(0).ns().clone();
    // The first connection waits for the allotments (refused SYNs time out; never reset).
    let mut warmup = Tally::default();
    wait::wait_until(
        "a first connection to the VIP is answered",
        Duration::from_secs(20),
        || {
            let r = ns
                .enter(|| LineConn::open(VIP, "w".to_owned(), TIMEOUT).and_then(LineConn::finish))
                .expect("enter the client namespace");
            match r {
                Ok(_) => Ok(()),
                Err(e) => {
                    warmup.fail("warm-up", &e);
                    Err(e.to_string())
                }
            }
        },
    );
    assert_eq!(
        warmup.resets, 0,
        "resets while warming up: {:?}",
        warmup.errors
    );

    // Long-lived connections, more than the table holds.
    let started = Instant::now();
    let mut long = Vec::new();
    let mut long_tally = Tally::default();
    for i in 0..LONG_LIVED {
        match ns
            .enter(|| LineConn::open(VIP, format!("l{i}"), TIMEOUT))
            .expect("enter the client namespace")
        {
            Ok(c) => {
                long_tally.ok += 1;
                long.push(c);
            }
            Err(e) => long_tally.fail(&format!("long-lived {i} open"), &e),
        }
    }
    assert_clean(
        &cluster,
        "long-lived opened",
        &long_tally,
        LONG_LIVED as u64,
    );
    let mut long_tally = Tally::default();
    eprintln!(
        "{LONG_LIVED} long-lived connections open after {:?}",
        started.elapsed()
    );
    for round in 0..3 {
        for c in &mut long {
            match c.exchange() {
                Ok(()) => long_tally.ok += 1,
                Err(e) => long_tally.fail(&format!("{} round {round}", c.name), &e),
            }
        }
    }
    assert_clean(
        &cluster,
        "long-lived exchanges",
        &long_tally,
        3 * LONG_LIVED as u64,
    );

    // Short connections while the long-lived ones hold the table (and beyond).
    let started = Instant::now();
    let short = short_connections(&ns, SHORT, 4);
    eprintln!("{SHORT} short connections in {:?}", started.elapsed());
    assert_clean(&cluster, "short connections", &short, SHORT as u64);

    // The long-lived ones are still with their hosts, then finish cleanly.
    let mut done = Tally::default();
    for c in long {
        let name = c.name.clone();
        match c.finish() {
            Ok(_) => done.ok += 1,
            Err(e) => done.fail(&format!("{name} finish"), &e),
        }
    }
    assert_clean(&cluster, "long-lived finished", &done, LONG_LIVED as u64);
    Some(cluster)
}

/// The all-in-one unit's counters once its classifier caught up: table full, slow-path
/// deliveries both ways, nothing dropped or refused.
fn assert_classifier_slow_path(cluster: &Cluster) -> BTreeMap<String, u64> {
    let flows = wait::wait_until(
        "the unit published its slow-path counters",
        Duration::from_secs(5),
        || {
            let flows = cluster.unit_flows(0)?;
            let f = flows.forwarder.clone().ok_or("no forwarder")?;
            let c = flows.classifier.clone().ok_or("no classifier")?;
            let ev = |k: &str| c.events.get(k).copied().unwrap_or(0);
            let ag = |k: &str| f.agent.get(k).copied().unwrap_or(0);
            // The classifier publishes every 200 ms: wait until it caught up with the
            // forwarder's live counters (every slow-path frame sent, every reply miss known).
            if ev("table_full") == 0
                || ev("slow_path_replies") == 0
                || ag("slow_path_sent") != ev("slow_path_delivered")
                || ag("reply_misses") != ev("slow_path_replies") + ev("reply_misses_unknown")
            {
                return Err(report(cluster));
            }
            Ok(flows)
        },
    )
    .0;
    eprintln!("{}", report(cluster));
    let f = flows.forwarder.expect("forwarder");
    let c = flows.classifier.expect("classifier");
    let ev = |k: &str| c.events.get(k).copied().unwrap_or(0);
    let ag = |k: &str| f.agent.get(k).copied().unwrap_or(0);
    assert_eq!(f.max_flows, MAX_FLOWS);
    assert!(f.flows <= u64::from(MAX_FLOWS), "{} routes", f.flows);
    // At least the long-lived connections beyond the table's size hit a full table.
    let beyond = (LONG_LIVED - MAX_FLOWS as usize) as u64;
    assert!(ag("table_full") >= beyond, "{:?}", f.agent);
    assert!(ev("table_full") >= beyond, "{:?}", c.events);
    assert!(ev("slow_path_delivered") > ev("slow_path_replies"));
    assert_eq!(ev("slow_path_dropped"), 0, "{:?}", c.events);
    assert_eq!(ev("slow_path_failed"), 0, "{:?}", c.events);
    assert_eq!(ev("reply_misses_unknown"), 0, "{:?}", c.events);
    assert_eq!(ag("slow_path_failed"), 0, "{:?}", f.agent);
    assert_eq!(
        f.tc.get("nat_misses").copied().unwrap_or(0),
        ag("reply_misses")
    );
    c.events
}

#[test]
fn a_full_table_still_serves_new_connections_on_the_slow_path() {
    let Some(cluster) = run_full_table("packet table full", PacketSpec::all_in_one("nat")) else {
        return;
    };
    let events = assert_classifier_slow_path(&cluster);
    assert_eq!(events.get("half_nat_overflow").copied(), Some(0));
}

#[test]
fn half_nat_connections_beyond_a_full_table_are_served_with_full_nat() {
    let Some(cluster) = run_full_table(
        "packet table full, half NAT",
        PacketSpec::all_in_one("half-nat"),
    ) else {
        return;
    };
    let events = assert_classifier_slow_path(&cluster);
    // Every new connection that found the table full switched to full NAT.
    let beyond = (LONG_LIVED - MAX_FLOWS as usize) as u64;
    let overflow = events.get("half_nat_overflow").copied().unwrap_or(0);
    assert!(overflow >= beyond, "{events:?}");
    assert_eq!(
        overflow,
        events.get("table_full").copied().unwrap_or(0),
        "only new connections overflowed (none lost an installed route)"
    );
}

/// A split forwarder's counters once every connection ended and its overflow routes were
/// deleted: at least the connections beyond the table found it full, the overflow flows'
/// packets went out on the slow path in both directions, nothing failed.
fn assert_split_overflow(cluster: &Cluster) -> BTreeMap<String, u64> {
    let beyond = (LONG_LIVED - MAX_FLOWS as usize) as u64;
    // The forwarder unit (lb-1) kept the routes it could not install and sent those flows'
    // packets itself; once every connection ended, the classifier (lb-2) deleted them.
    let (agent, _) = wait::wait_until(
        "lb-1 sent the overflow flows' packets and dropped their routes when they ended",
        Duration::from_secs(20),
        || {
            let f = cluster.unit_flows(0)?.forwarder.ok_or("no forwarder")?;
            let ag = |k: &str| f.agent.get(k).copied().unwrap_or(0);
            if ag("table_full") < beyond
                || ag("slow_path_sent") == 0
                || ag("reply_misses") == 0
                || ag("overflow_routes") != 0
                || f.flows != 0
            {
                return Err(format!("{} routes, agent {:?}", f.flows, f.agent));
            }
            Ok(f.agent)
        },
    );
    eprintln!("lb-1 agent: {agent:?}");
    let ag = |k: &str| agent.get(k).copied().unwrap_or(0);
    assert_eq!(ag("slow_path_failed"), 0, "{agent:?}");
    assert_eq!(ag("reply_misses_unknown"), 0, "{agent:?}");
    agent
}

#[test]
fn a_split_forwarder_serves_what_its_table_cannot_hold() {
    let Some(cluster) = run_full_table("packet table full, split units", PacketSpec::split("nat"))
    else {
        return;
    };
    let agent = assert_split_overflow(&cluster);
    assert_eq!(agent.get("overflow_half_nat_refused").copied(), Some(0));
    let c = cluster
        .unit_flows(1)
        .expect("lb-2 flows")
        .classifier
        .expect("lb-2 classifier");
    assert_eq!(
        c.events.get("slow_path_dropped").copied(),
        Some(0),
        "{:?}",
        c.events
    );
}

#[test]
fn a_split_forwarder_refuses_half_nat_on_a_full_table_and_the_classifier_switches_to_full_nat() {
    let Some(cluster) = run_full_table(
        "packet table full, split units, half NAT",
        PacketSpec::split("half-nat"),
    ) else {
        return;
    };
    let agent = assert_split_overflow(&cluster);
    let beyond = (LONG_LIVED - MAX_FLOWS as usize) as u64;
    // Every half-NAT route that did not fit was refused (its replies could not be caught);
    // the classifier answered with a full-NAT route for each new connection.
    let refused = agent.get("overflow_half_nat_refused").copied().unwrap_or(0);
    assert!(refused >= beyond, "{agent:?}");
    let c = cluster
        .unit_flows(1)
        .expect("lb-2 flows")
        .classifier
        .expect("lb-2 classifier");
    let overflow = c.events.get("half_nat_overflow").copied().unwrap_or(0);
    assert_eq!(overflow, refused, "{:?}", c.events);
}
