//! Session affinity through the distributed atom manager on the packet path (spec FIG. 26:
//! the session reference first, then health and load), on real processes in namespaces:
//! three all-in-one units (forwarder, classifier, health cache, session store) behind the
//! router's ECMP route, three hosts running the echo server, service `web` with client-IP
//! affinity.
//!
//! - An application on host 3 (the host with the least spare capacity, which balancing alone
//!   would rarely pick) reports a client-IP session for client 0 through its agent; once every
//!   unit finds it, 60 new connections of client 0 — spread over the units by the router —
//!   all reach host 3, and the classifiers count session hits;
//! - client 1, with no session, is balanced, and the units record its choice in the store,
//!   so its later connections reach one host whichever unit takes them;
//! - (FIG. 28) a long-lived connection whose packets move to another unit (the router's route
//!   for the VIP changes) keeps working: that unit finds the route in the DAM and installs it.
//!
//! No timed assertions: waits poll with generous deadlines. Needs root (skipped otherwise).

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use support::cluster::{Cluster, ClusterSpec, PacketSpec, SERVICE, VIP};
use support::line_conn::LineConn;
use support::wait::wait_until;
use switchyard_lb::admin::sessions::{SessionLookup, SessionsSummary};
use switchyard_session_client::Session;

const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 60;

/// Connections from client `i`, each one exchange; the answering hosts, counted.
fn connections(c: &Cluster, i: usize, n: usize, tag: &str) -> BTreeMap<String, u64> {
    let ns = c.topo().client(i).ns().clone();
    let mut hosts = BTreeMap::new();
    for k in 0..n {
        let host = ns
            .enter(|| {
                LineConn::open(VIP, format!("{tag}{k}"), TIMEOUT).and_then(|conn| {
                    let host = conn.host.clone();
                    conn.finish().map(|_| host)
                })
            })
            .expect("enter the client namespace")
            .unwrap_or_else(|e| panic!("{tag} connection {k}: {e}\n{}", c.dump_with_logs()));
        *hosts.entry(host).or_default() += 1;
    }
    hosts
}

fn lookup(c: &Cluster, j: usize, ip: IpAddr) -> Result<SessionLookup, String> {
    let r = c.unit_get(j, &format!("/v1/sessions?client_ip={ip}"))?;
    if r.status != 200 {
        return Err(format!("unit {j}: {} {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("unit {j}: {e}"))
}

/// A classifier counter of unit `j`.
fn classifier_event(c: &Cluster, j: usize, name: &str) -> u64 {
    c.unit_flows(j)
        .ok()
        .and_then(|f| f.classifier)
        .and_then(|cl| cl.events.get(name).copied())
        .unwrap_or(0)
}

#[test]
fn new_connections_follow_the_clients_session_whichever_unit_classifies_them() {
    let spec = ClusterSpec {
        clients: 2,
        lb_units: 3,
        hosts: 3,
        echo_servers: true,
        sessions: true,
        packet: Some(PacketSpec::all_in_one("nat")),
        affinity: Some(r#"{ kind = "client-ip", timeout = "10m" }"#.to_owned()),
        extra_toml: "\n[sessions]\nresend_interval = \"200ms\"\nkeepalive_interval = \"300ms\"\n\
                     rebind_after = \"1500ms\"\n"
            .to_owned(),
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start("packet sessions", spec) else {
        return;
    };
    // Spare capacity 80, 15, 5 parts: balancing alone sends few connections to web-3.
    for (k, capacity) in [(0, 80), (1, 15), (2, 5)] {
        cluster.set_service_status(k, SERVICE, Some("healthy"), Some(0), Some(capacity));
    }
    wait_until(
        "3 session-store members at every unit",
        Duration::from_secs(30),
        || {
            for j in 0..3 {
                let r = cluster.unit_get(j, "/v1/sessions/summary")?;
                let s: SessionsSummary =
                    serde_json::from_slice(&r.body).map_err(|e| format!("unit {j}: {e}"))?;
                if s.members.len() != 3 {
                    return Err(format!("unit {j}: {:?}", s.members));
                }
            }
            Ok(())
        },
    );
    // Every unit serves (allotments arrived), shown by client 1 only: client 0 must reach
    // the units without local affinity bindings.
    wait_until(
        "every unit serves new connections",
        Duration::from_secs(20),
        || {
            connections(&cluster, 1, 6, "warm");
            for j in 0..3 {
                if cluster
                    .unit_flows(j)?
                    .classifier
                    .is_none_or(|c| c.events.get("new_connections").copied().unwrap_or(0) == 0)
                {
                    return Err(format!("unit {j} has classified nothing yet"));
                }
            }
            Ok(())
        },
    );

    // The application on host 3 reports client 0's session.
    let client0 = cluster.topo().client(0).v4();
    let body = serde_json::json!({ "session": Session::ClientIp { ip: client0 } }).to_string();
    let r = cluster
        .agent_request(2, "POST", "/v1/sessions", Some(&body))
        .expect("agent API");
    assert!(
        r.status == 201 || r.status == 200,
        "{} {}",
        r.status,
        r.body
    );
    wait_until(
        "every unit finds client 0's session on web-3",
        Duration::from_secs(20),
        || {
            for j in 0..3 {
                let l = lookup(&cluster, j, client0)?;
                if !l.found || l.host_name.as_deref() != Some("web-3") {
                    return Err(format!("unit {j}: {l:?}"));
                }
            }
            Ok(())
        },
    );

    let hits_before: u64 = (0..3)
        .map(|j| classifier_event(&cluster, j, "session_hits"))
        .sum();
    let new_before: Vec<u64> = (0..3)
        .map(|j| classifier_event(&cluster, j, "new_connections"))
        .collect();
    let hosts = connections(&cluster, 0, CONNECTIONS, "s");
    eprintln!("client 0 with a session on web-3: {hosts:?}");
    assert_eq!(
        hosts.get("web-3").copied(),
        Some(CONNECTIONS as u64),
        "every connection of client 0 reached its session's host: {hosts:?}"
    );
    // Published every 200 ms: wait for the counts.
    let (units, _) = wait_until(
        "the units counted the connections and their session hits",
        Duration::from_secs(5),
        || {
            let new: Vec<u64> = (0..3)
                .map(|j| classifier_event(&cluster, j, "new_connections") - new_before[j])
                .collect();
            let hits: u64 = (0..3)
                .map(|j| classifier_event(&cluster, j, "session_hits"))
                .sum::<u64>()
                - hits_before;
            if new.iter().sum::<u64>() < CONNECTIONS as u64 || hits == 0 {
                return Err(format!(
                    "new connections per unit {new:?}, session hits {hits}"
                ));
            }
            Ok(new)
        },
    );
    eprintln!("client 0's connections per unit: {units:?}");
    assert!(
        units.iter().filter(|n| **n > 0).count() >= 2,
        "the router spread client 0's connections over the units: {units:?}"
    );

    // Client 1 has no reported session: the units record their choices, so its later
    // connections reach one host whichever unit takes them.
    let client1 = cluster.topo().client(1).v4();
    wait_until(
        "every unit finds one host for client 1 in the store",
        Duration::from_secs(20),
        || {
            let hosts: Vec<Option<String>> = (0..3)
                .map(|j| lookup(&cluster, j, client1).map(|l| l.host_name))
                .collect::<Result<_, _>>()?;
            if hosts[0].is_some() && hosts.iter().all(|h| *h == hosts[0]) {
                Ok(())
            } else {
                Err(format!("{hosts:?}"))
            }
        },
    );
    let hosts = connections(&cluster, 1, 30, "b");
    eprintln!("client 1 balanced once, then recorded: {hosts:?}");
    assert_eq!(hosts.len(), 1, "client 1 stuck to one host: {hosts:?}");
}

/// Spec FIG. 28: routes are atoms too. A long-lived connection classified by one unit moves
/// to another unit's forwarder (the router's route for the VIP changes, as an LB-aware switch
/// would after a forwarder's death); that unit's classifier finds the route in the DAM,
/// installs it and delivers: the connection keeps its host.
#[test]
fn a_connection_that_moves_to_another_unit_keeps_its_route_from_the_dam() {
    let spec = ClusterSpec {
        clients: 1,
        lb_units: 3,
        hosts: 3,
        echo_servers: true,
        sessions: true,
        packet: Some(PacketSpec::all_in_one("nat")),
        extra_toml: "\n[classifier]\nfin_linger = \"1s\"\n\n[sessions]\n\
                     resend_interval = \"200ms\"\nkeepalive_interval = \"300ms\"\n\
                     rebind_after = \"1500ms\"\n"
            .to_owned(),
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start("packet route atoms", spec) else {
        return;
    };
    for k in 0..3 {
        cluster.set_service_status(k, SERVICE, Some("healthy"), Some(0), Some(50));
    }
    let ns = cluster.topo().client(0).ns().clone();
    wait_until("the VIP serves", Duration::from_secs(20), || {
        ns.enter(|| LineConn::open(VIP, "w".to_owned(), TIMEOUT).and_then(LineConn::finish))
            .expect("enter")
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let web_flows = |j: usize| -> Result<u64, String> {
        let f = cluster.unit_flows(j)?.forwarder.ok_or("no forwarder")?;
        Ok(f.vips
            .iter()
            .find(|v| v.service == SERVICE)
            .map_or(0, |v| v.flows))
    };
    wait_until("warm-up routes retired", Duration::from_secs(15), || {
        let n: u64 = (0..3)
            .map(web_flows)
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .sum();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} routes"))
        }
    });

    let mut conn = ns
        .enter(|| LineConn::open(VIP, "moving".to_owned(), TIMEOUT))
        .expect("enter")
        .expect("open the long-lived connection");
    let (owner, _) = wait_until(
        "one unit routes the connection",
        Duration::from_secs(5),
        || {
            let flows: Vec<u64> = (0..3).map(web_flows).collect::<Result<_, _>>()?;
            match flows.iter().position(|n| *n == 1) {
                Some(j) if flows.iter().sum::<u64>() == 1 => Ok(j),
                _ => Err(format!("{flows:?}")),
            }
        },
    );
    let other = (owner + 1) % 3;
    // The router now sends the VIP to `other` only.
    let via = cluster
        .topo()
        .lb_unit(other)
        .iface("eth0")
        .expect("LB units have eth0")
        .v4();
    cluster
        .topo()
        .router()
        .ns()
        .run([
            "ip",
            "route",
            "replace",
            &VIP.ip().to_string(),
            "via",
            &via.to_string(),
        ])
        .expect("move the VIP");
    eprintln!(
        "connection classified by lb-{}, moved to lb-{}",
        owner + 1,
        other + 1
    );
    // The first packet at `other` may find the route only in the owners' copies: it is
    // fetched then, and TCP's retransmission finds it.
    for _ in 0..3 {
        conn.exchange().unwrap_or_else(|e| {
            panic!(
                "the moved connection broke: {e}\nlb-{} /v1/flows: {:?}\n{}",
                other + 1,
                cluster
                    .unit_flows(other)
                    .map(|f| f.classifier.map(|c| c.events)),
                cluster.dump_with_logs()
            )
        });
    }
    // Published every 200 ms.
    wait_until(
        "the other unit adopted the route from the DAM and installed it",
        Duration::from_secs(5),
        || {
            let adopted = classifier_event(&cluster, other, "mid_connection_from_lookup");
            let installed = web_flows(other)?;
            if adopted >= 1 && installed == 1 {
                Ok(())
            } else {
                Err(format!(
                    "adopted {adopted}, routes {installed}, events {:?}",
                    cluster
                        .unit_flows(other)
                        .map(|f| f.classifier.map(|c| c.events))
                ))
            }
        },
    );
    conn.finish().expect("the connection ends cleanly");
}
