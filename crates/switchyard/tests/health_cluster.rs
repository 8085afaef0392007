//! Health and load with real processes (issue 3, "Tests"): `switchyard lb` in two LB unit
//! namespaces, `switchyard agent` in three host namespaces, one configuration, the
//! authenticated UDP protocol over a real bridge, faults from nftables. Each test builds
//! its own testbed (root only; skipped otherwise, failed under `CI=true`) and polls with
//! deadlines; on failure the cluster's state and the processes' logs are printed.
//!
//! Timings (see `support::cluster::ClusterSpec`): heartbeat 200 ms, host_dead_after 2 s,
//! load_interval 500 ms, postulate_interval 200 ms, unit_give_up_after 30 s.

// Units and hosts are addressed by index everywhere (unit j, host k), also next to the
// per-unit snapshots taken before an action.
#![allow(clippy::needless_range_loop)]

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use switchyard_health::TokenAllotment;
use switchyard_lb::admin::api::CountersResponse;
use switchyard_testbed::{Netns, Proto};
use switchyard_wire::health::Goodbye;
use switchyard_wire::{Codec, HEADER_LEN, HostId, MacKey, Message, SenderId};

use support::cluster::{
    CLUSTER_ID, CONTROL_PORT, Cluster, ClusterSpec, HttpCheck, RowView, token_response,
};
use support::wait::{hold_for, wait_until};

const SETTLE: Duration = Duration::from_secs(20);

fn start(what: &str, spec: ClusterSpec) -> Option<Cluster> {
    let cluster = Cluster::start(what, spec)?;
    let took = cluster.wait_converged(SETTLE);
    eprintln!(
        "cluster up; caches converged {:.2} s after the last agent was ready",
        took.as_secs_f64()
    );
    Some(cluster)
}

fn with_http_check() -> ClusterSpec {
    ClusterSpec {
        http_check: Some(HttpCheck::default()),
        app_servers: true,
        ..ClusterSpec::default()
    }
}

/// An application's check fails → both units show it failing within 2 s (and give it no
/// tokens); it recovers → healthy again at both.
#[test]
fn check_failure_reaches_both_units_within_two_seconds_and_recovers() {
    let Some(mut c) = Cluster::start(
        "health cluster: an HTTP check fails and recovers",
        with_http_check(),
    ) else {
        return;
    };
    for k in 0..3 {
        c.wait_rows(
            &format!("{} healthy at both units", c.host_name(k)),
            k,
            SETTLE,
            |r| r.health == "healthy",
        );
    }
    c.wait_converged(SETTLE);

    c.app(1).stop();
    let stopped = Instant::now();
    c.wait_rows(
        "web-2 failing at both units",
        1,
        Duration::from_secs(10),
        |r| r.health == "failing" && r.tokens == 0,
    );
    // How fast is measured by the benchmark (docs/BENCHMARKS.md); here it is shown.
    let took = stopped.elapsed();
    eprintln!("failure reached both units in {:.2} s", took.as_secs_f64());
    let agent = c.agent_row(1).expect("web-2's row at its agent");
    assert_eq!(support::cluster::name(&agent.health), "failing");
    for k in [0, 2] {
        for j in 0..2 {
            let row = c.unit_row(j, k).expect("unit answers").expect("row cached");
            assert_eq!(
                row.health,
                "healthy",
                "{} at {}",
                c.host_name(k),
                c.unit_name(j)
            );
        }
    }

    c.app(1).restart();
    let restarted = Instant::now();
    c.wait_rows(
        "web-2 healthy again at both units",
        1,
        Duration::from_secs(10),
        |r| r.health == "healthy" && r.tokens > 0,
    );
    eprintln!(
        "recovery reached both units in {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    c.wait_converged(SETTLE);
}

/// An operator drains a host → both units show target = current = draining after the
/// handshake. With one unit cut off, a drain's current stays active (the agent shows it
/// waiting for that unit) until the unit is reachable again; then the handshake completes.
#[test]
fn drain_handshake_completes_and_waits_for_a_cut_off_unit() {
    let Some(c) = start("health cluster: drain handshake", ClusterSpec::default()) else {
        return;
    };

    c.directive(0, "drain");
    let (_, took) = wait_until(
        "web-1's drain handshake completes at its agent",
        SETTLE,
        || {
            let row = c.agent_row(0)?;
            match (&row.directive.current, &row.handshake) {
                (Some(current), None) if support::cluster::name(current) == "draining" => Ok(()),
                _ => Err(format!(
                    "{} handshake {:?}",
                    RowView::of_agent(&row),
                    row.handshake
                )),
            }
        },
    );
    eprintln!("drain handshake completed in {:.2} s", took.as_secs_f64());
    c.wait_rows(
        "web-1 draining/draining at both units",
        0,
        Duration::from_secs(5),
        |r| r.target == "draining" && r.current == "draining" && r.handshake == "complete",
    );
    // The operator's view: `switchyard ctl hosts` on each unit.
    for j in 0..2 {
        let table = c.ctl_hosts(j, false).expect("ctl hosts");
        let line = table
            .lines()
            .find(|l| l.starts_with("web-1 "))
            .unwrap_or_else(|| {
                panic!("no web-1 line in ctl hosts of {}:\n{table}", c.unit_name(j))
            });
        assert!(
            line.contains("draining/draining") && line.contains("complete"),
            "{}: {line}",
            c.unit_name(j)
        );
        let json = c.ctl_hosts_json(j).expect("ctl hosts --json");
        assert_eq!(json.unit.name, c.unit_name(j));
        assert_eq!(json.hosts.len(), 3, "{json:?}");
    }

    // Cut lb-2 off: every control datagram to or from its port is dropped in its namespace.
    let cut = c
        .topo()
        .lb_unit(1)
        .ns()
        .block_port(Proto::Udp, CONTROL_PORT)
        .expect("block the control port on lb-2");
    c.directive(1, "drain");
    wait_until(
        "lb-1 holds web-2's new target, pending",
        Duration::from_secs(5),
        || match c.unit_row(0, 1)? {
            Some(r) if r.target == "draining" && r.current == "active" => Ok(()),
            Some(r) => Err(RowView::of_unit(&r).to_string()),
            None => Err("lb-1 has no row of web-2".to_owned()),
        },
    );
    hold_for(
        "web-2's current stays active while lb-2 is cut off",
        Duration::from_secs(3),
        || {
            let row = c.agent_row(1)?;
            let current = row.directive.current.as_ref().map(support::cluster::name);
            let waiting = row
                .handshake
                .as_ref()
                .map(|h| h.waiting.clone())
                .unwrap_or_default();
            if current.as_deref() != Some("active") || !waiting.contains(&"lb-2".to_owned()) {
                return Err(format!(
                    "agent shows {} handshake {:?}",
                    RowView::of_agent(&row),
                    row.handshake
                ));
            }
            match c.unit_row(0, 1)? {
                Some(r) if r.current == "active" && r.handshake == "pending" => Ok(()),
                Some(r) => Err(format!("lb-1 shows {}", RowView::of_unit(&r))),
                None => Err("lb-1 has no row of web-2".to_owned()),
            }
        },
    );
    let table = c.ctl_hosts(0, false).expect("ctl hosts on lb-1");
    let line = table
        .lines()
        .find(|l| l.starts_with("web-2 "))
        .unwrap_or_else(|| panic!("no web-2 line in ctl hosts:\n{table}"));
    assert!(
        line.contains("draining/active") && line.contains("pending"),
        "lb-1 shows the pending handshake: {line}"
    );
    let handshake = c
        .agent_row(1)
        .expect("web-2's row")
        .handshake
        .expect("a handshake is pending");
    assert_eq!(handshake.agreed, vec!["lb-1".to_owned()], "{handshake:?}");
    assert_eq!(handshake.waiting, vec!["lb-2".to_owned()], "{handshake:?}");
    assert!(handshake.given_up.is_empty(), "{handshake:?}");

    cut.clear().expect("reconnect lb-2");
    let reconnected = Instant::now();
    wait_until(
        "web-2's handshake completes once lb-2 is reachable",
        SETTLE,
        || {
            let row = c.agent_row(1)?;
            match (&row.directive.current, &row.handshake) {
                (Some(current), None) if support::cluster::name(current) == "draining" => Ok(()),
                _ => Err(format!(
                    "{} handshake {:?}",
                    RowView::of_agent(&row),
                    row.handshake
                )),
            }
        },
    );
    eprintln!(
        "handshake completed {:.2} s after lb-2 was reachable again",
        reconnected.elapsed().as_secs_f64()
    );
    c.wait_rows(
        "web-2 draining/draining at both units",
        1,
        Duration::from_secs(10),
        |r| r.target == "draining" && r.current == "draining",
    );
    c.wait_converged(SETTLE);

    // An operator at lb-2 drains web-3 and sets its capacity through the unit: lb-2
    // relays the acts to web-3's agent, and the handshake brings both units along.
    let out = c
        .ctl(1, &["drain", &c.host_name(2), "--via-unit"])
        .expect("ctl drain --via-unit on lb-2");
    assert!(
        out.contains("drain relayed by the unit") && out.contains("target draining"),
        "{out}"
    );
    c.wait_rows(
        "web-3 draining/draining at both units (an act through lb-2)",
        2,
        SETTLE,
        |r| r.target == "draining" && r.current == "draining",
    );
    let out = c
        .ctl(1, &["capacity", &c.host_name(2), "17", "--via-unit"])
        .expect("ctl capacity --via-unit on lb-2");
    assert!(out.contains("capacity 17"), "{out}");
    c.wait_rows("web-3's capacity 17 at both units", 2, SETTLE, |r| {
        r.capacity == 17
    });
    let row = c.agent_row(2).expect("web-3's row at its agent");
    assert_eq!(RowView::of_agent(&row).capacity, 17, "{row:?}");
    // And lb-1 undrains web-1.
    c.ctl(0, &["undrain", &c.host_name(0), "--via-unit"])
        .expect("ctl undrain --via-unit on lb-1");
    c.wait_rows("web-1 active again at both units", 0, SETTLE, |r| {
        r.target == "active" && r.current == "active"
    });
    // An unknown host is refused with the unit's message.
    let error = c
        .ctl(0, &["drain", "no-such-host", "--via-unit"])
        .expect_err("an unknown host");
    assert!(
        error.contains("404") && error.contains("no configured host"),
        "{error}"
    );
}

/// 30 % of the control datagrams dropped at random (in the switch, both directions) while health,
/// load, capacity and a directive keep changing → once the loss stops, every unit's cache
/// converges to the hosts' tables.
#[test]
fn caches_converge_after_random_loss() {
    let Some(c) = start("health cluster: 30% loss", ClusterSpec::default()) else {
        return;
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("loss test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let loss = c.switch_loss(30);
    let lossy = Instant::now();
    // Datagrams queued before the loss was installed may still be in flight: let them
    // land, then count between two reads taken under the loss.
    std::thread::sleep(c.spec().heartbeat_interval * 2);
    let received_before: u64 = (0..2).map(|j| c.unit_counters(j).transport.received).sum();
    let sent_before = c.agents_sent().expect("agent counters");
    for step in 0..40 {
        let k = rng.random_range(0..3);
        match rng.random_range(0..4) {
            0 => c.set_status(
                k,
                Some(if rng.random_bool(0.5) {
                    "healthy"
                } else {
                    "failing"
                }),
                None,
                None,
            ),
            1 | 2 => c.set_status(k, None, Some(rng.random_range(0..=100)), None),
            _ => c.set_status(k, None, None, Some(rng.random_range(1..=99))),
        }
        if step == 10 {
            c.directive(2, "drain");
        }
        if step == 25 {
            c.directive(0, "disable");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = c.agents_sent().expect("agent counters") - sent_before;
    // What was sent by the read above lands (or is dropped) while the loss is still on.
    std::thread::sleep(c.spec().heartbeat_interval);
    let received: u64 = (0..2)
        .map(|j| c.unit_counters(j).transport.received)
        .sum::<u64>()
        - received_before;
    let dropped = loss.dropped();
    loss.clear();
    // The loss was real: about 30% of what the agents sent never reached a unit.
    let delivered = received as f64 / sent as f64;
    eprintln!(
        "during the loss the units received {received} of {sent} datagrams ({:.0}%); the switch dropped {dropped} in both directions",
        delivered * 100.0
    );
    assert!(
        (0.5..0.85).contains(&delivered),
        "the units received {received} of the {sent} datagrams the agents sent during the loss"
    );
    eprintln!("lossy phase lasted {:.1} s", lossy.elapsed().as_secs_f64());
    let took = c.wait_converged(SETTLE);
    eprintln!(
        "caches converged {:.2} s after the loss stopped",
        took.as_secs_f64()
    );

    let rows = c.expected_tables().expect("settled tables");
    let web3 = &rows[&c.host_id(2)][0];
    assert_eq!(
        (web3.target.as_str(), web3.current.as_str()),
        ("draining", "draining")
    );
    let web1 = &rows[&c.host_id(0)][0];
    assert_eq!(
        (web1.target.as_str(), web1.current.as_str()),
        ("inactive", "inactive")
    );
}

/// An LB unit restarted empty → its cache is rebuilt from the hosts' table snapshots within
/// a few heartbeat intervals, without any operator action.
#[test]
fn restarted_unit_rebuilds_its_cache_from_snapshots() {
    let Some(mut c) = start("health cluster: unit restart", ClusterSpec::default()) else {
        return;
    };
    for (k, load) in [(0, 15), (1, 45), (2, 75)] {
        c.set_status(k, Some("healthy"), Some(load), Some(30 + 10 * k as u8));
    }
    c.directive(1, "drain");
    c.wait_converged(SETTLE);

    let status = c.stop_lb(1);
    assert!(status.success(), "lb-2 exited with {status} on SIGTERM");
    c.start_lb(1);
    let took = c.wait_converged(SETTLE);
    let heartbeat = c.spec().heartbeat_interval;
    eprintln!(
        "restarted lb-2 rebuilt its cache {:.2} s after it was ready ({:.1} heartbeat intervals)",
        took.as_secs_f64(),
        took.as_secs_f64() / heartbeat.as_secs_f64()
    );
    let counters = c.unit_counters(1);
    assert!(
        counters.cache.snapshots_completed >= 3,
        "lb-2 resynchronised {} hosts from snapshots: {:?}",
        counters.cache.snapshots_completed,
        counters.cache
    );
    let row = c
        .unit_row(1, 1)
        .expect("lb-2 answers")
        .expect("web-2 cached");
    assert_eq!(
        (row.target.as_str(), row.current.as_str()),
        ("draining", "draining")
    );
}

/// Agent stopped cleanly (SIGTERM) → its host is cleared at both units at once (a goodbye,
/// well before host_dead_after); agent killed (SIGKILL) → its host stays until it ages out
/// after host_dead_after.
#[test]
fn goodbye_clears_at_once_and_a_killed_agent_ages_out() {
    // A long host_dead_after: the goodbye's quarantine of the old generation outlasts an
    // agent restart by far, even on a loaded machine.
    let spec = ClusterSpec {
        host_dead_after: Duration::from_secs(10),
        ..ClusterSpec::default()
    };
    let Some(mut c) = start("health cluster: goodbye and age-out", spec) else {
        return;
    };
    let dead_after = c.spec().host_dead_after;
    let heartbeat = c.spec().heartbeat_interval;
    let before: Vec<CountersResponse> = (0..2).map(|j| c.unit_counters(j)).collect();

    let stopping = Instant::now();
    let status = c.stop_agent(0);
    assert!(
        status.success(),
        "web-1's agent exited with {status} on SIGTERM"
    );
    // Cleared by the goodbye: checked by the counters below, not by the clock.
    wait_until("both units cleared web-1", dead_after * 2, || {
        for j in 0..2 {
            if c.unit_has_host(j, 0)? {
                return Err(format!("{} still holds web-1", c.unit_name(j)));
            }
        }
        Ok(())
    });
    let took = stopping.elapsed();
    eprintln!(
        "goodbye cleared web-1 at both units {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    assert_counter_delta(&c, &before, "goodbyes", |u| u.cache.goodbyes, 1);
    assert_counter_delta(&c, &before, "age-outs", |u| u.cache.age_outs, 0);

    // web-1's agent restarts at once: its new generation is not held up by the goodbye's
    // quarantine of the old one (host_dead_after).
    let restarting = Instant::now();
    c.restart_agent(0);
    c.wait_converged(SETTLE);
    eprintln!(
        "web-1 back in every cache {:.2} s after its restart began",
        restarting.elapsed().as_secs_f64()
    );
    // Ordering, not speed: back while the goodbye's quarantine (host_dead_after from the
    // goodbye) still ran, so the new generation was taken without waiting for it.
    assert!(
        stopping.elapsed() < dead_after,
        "web-1 reappeared {:.2} s after its goodbye, only once the quarantine of {:.1} s could have ended",
        stopping.elapsed().as_secs_f64(),
        dead_after.as_secs_f64()
    );
    let before: Vec<CountersResponse> = (0..2).map(|j| c.unit_counters(j)).collect();

    let killed = Instant::now();
    c.kill_agent(1);
    hold_for(
        "web-2 stays cached after its agent was killed (no goodbye)",
        dead_after / 2,
        || {
            for j in 0..2 {
                if !c.unit_has_host(j, 1)? {
                    return Err(format!("{} dropped web-2 already", c.unit_name(j)));
                }
            }
            Ok(())
        },
    );
    wait_until("both units aged web-2 out", dead_after * 3, || {
        for j in 0..2 {
            if c.unit_has_host(j, 1)? {
                return Err(format!("{} still holds web-2", c.unit_name(j)));
            }
        }
        Ok(())
    });
    let took = killed.elapsed();
    eprintln!("web-2 aged out {:.2} s after SIGKILL", took.as_secs_f64());
    assert!(
        took + heartbeat >= dead_after,
        "web-2 vanished {:.2} s after SIGKILL, before host_dead_after",
        took.as_secs_f64()
    );
    assert_counter_delta(&c, &before, "age-outs", |u| u.cache.age_outs, 1);
    assert_counter_delta(&c, &before, "goodbyes", |u| u.cache.goodbyes, 0);
    // web-3 is untouched.
    c.wait_converged(SETTLE);

    // web-2's agent comes back (a host restart: a new table generation) and is taken at
    // once.
    let restarting = Instant::now();
    c.restart_agent(1);
    let took = c.wait_converged(SETTLE);
    eprintln!(
        "web-2 back in every cache {:.2} s after its agent was ready",
        took.as_secs_f64()
    );
    eprintln!(
        "web-2 back {:.2} s after its restart began",
        restarting.elapsed().as_secs_f64()
    );
}

/// Forged, corrupted, truncated, random, stale and replayed datagrams at a unit's control
/// port are counted by reason and ignored: the units' caches stay exactly as they were.
#[test]
fn bogus_datagrams_are_counted_and_ignored() {
    let Some(c) = start("health cluster: bogus datagrams", ClusterSpec::default()) else {
        return;
    };
    let web1 = HostId(c.host_id(0));
    let key = MacKey::derive(c.secret(), CLUSTER_ID).expect("cluster key");
    let good = Codec::new(key);
    let forger = Codec::new(
        MacKey::derive(
            b"not the cluster secret, but long enough to be one",
            CLUSTER_ID,
        )
        .expect("forger key"),
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let goodbye = |host: HostId| Message::from(Goodbye { host });
    let mut rng = StdRng::seed_from_u64(now);

    // (datagram, what it is); every one would clear web-1 if a unit acted on it.
    let mut bad_tag = Vec::new();
    bad_tag.push(
        forger
            .seal(SenderId::from(web1), now, &goodbye(web1))
            .expect("seal"),
    );
    let valid = good
        .seal(
            SenderId::from(web1),
            now + 1_000_000_000_000,
            &goodbye(web1),
        )
        .expect("seal");
    let mut flipped = valid.clone();
    flipped[HEADER_LEN] ^= 0x01; // payload
    bad_tag.push(flipped);
    let mut flipped = valid.clone();
    *flipped.last_mut().expect("tag") ^= 0x80; // tag
    bad_tag.push(flipped);
    let mut random_body = valid.clone();
    rng.fill_bytes(&mut random_body[HEADER_LEN..]);
    bad_tag.push(random_body);

    let mut framing = vec![valid[..valid.len() - 7].to_vec(), valid[..10].to_vec()];
    for _ in 0..20 {
        let mut junk = vec![0u8; rng.random_range(1..300)];
        rng.fill_bytes(&mut junk);
        junk[0] = 0; // never the magic
        framing.push(junk);
    }
    // Sealed with the real key but with a sequence number far behind web-1's agent (which
    // starts at the Unix time in nanoseconds): an old captured goodbye.
    let stale = vec![
        good.seal(SenderId::from(web1), 1, &goodbye(web1))
            .expect("seal"),
    ];
    // Authentic, harmless (a goodbye for a host nobody knows), then replayed twice.
    let stranger = good
        .seal(SenderId(4242), now, &goodbye(HostId(4242)))
        .expect("seal");
    // Authentic, but a sender the configuration does not have, speaking for web-1.
    let impostor = good
        .seal(SenderId(4243), now, &goodbye(web1))
        .expect("seal");

    let tables_before = c.expected_tables().expect("settled tables");
    let generations = |j: usize| -> BTreeMap<u32, u64> {
        c.unit_hosts(j)
            .hosts
            .iter()
            .map(|h| (h.id, h.generation))
            .collect()
    };
    let gens_before: Vec<_> = (0..2).map(generations).collect();
    let before: Vec<CountersResponse> = (0..2).map(|j| c.unit_counters(j)).collect();

    // lb-1 gets them from the client namespace, lb-2 from web-1's own namespace.
    let senders: [&Netns; 2] = [c.topo().client(0).ns(), c.topo().host(0).ns()];
    for j in 0..2 {
        let socket = senders[j]
            .enter(|| UdpSocket::bind("0.0.0.0:0"))
            .expect("enter")
            .expect("bind a UDP socket");
        let to: SocketAddr = c.control_addr(j);
        let send = |d: &[u8]| {
            socket.send_to(d, to).expect("send a datagram");
        };
        for d in bad_tag.iter().chain(&framing).chain(&stale) {
            send(d);
        }
        send(&stranger);
        send(&impostor);
        send(&stranger);
        send(&stranger);
    }

    let expect = [
        ("bad-tag", bad_tag.len() as u64),
        ("framing", framing.len() as u64),
        ("stale", stale.len() as u64),
        ("replayed", 2),
    ];
    for j in 0..2 {
        let unit = c.unit_name(j);
        let delta = |now: &CountersResponse, reason: &str| {
            now.transport.rejected.get(reason).copied().unwrap_or(0)
                - before[j]
                    .transport
                    .rejected
                    .get(reason)
                    .copied()
                    .unwrap_or(0)
        };
        let ignored = |now: &CountersResponse, reason: &str| {
            now.service.ignored.get(reason).copied().unwrap_or(0)
                - before[j].service.ignored.get(reason).copied().unwrap_or(0)
        };
        let (after, _) = wait_until(
            &format!("{unit} counted every bogus datagram"),
            Duration::from_secs(10),
            || {
                let now = c.try_unit_counters(j)?;
                let counted: Vec<(&str, u64)> =
                    expect.iter().map(|(r, _)| (*r, delta(&now, r))).collect();
                let done = expect
                    .iter()
                    .zip(&counted)
                    .all(|((_, want), (_, got))| got >= want)
                    && ignored(&now, "unknown-host") >= 1
                    && ignored(&now, "unknown-sender") >= 1;
                if done {
                    Ok(now)
                } else {
                    Err(format!(
                        "{unit}: rejected so far {counted:?}, ignored {:?}",
                        now.service.ignored
                    ))
                }
            },
        );
        for (reason, want) in expect {
            assert_eq!(delta(&after, reason), want, "{unit}: rejected as {reason}");
        }
        assert_eq!(
            after.transport.rejected_total - before[j].transport.rejected_total,
            expect.iter().map(|(_, n)| n).sum::<u64>(),
            "{unit}: rejected in all: {:?}",
            after.transport.rejected
        );
        assert_eq!(
            ignored(&after, "unknown-host"),
            1,
            "{unit}: {:?}",
            after.service.ignored
        );
        assert_eq!(
            ignored(&after, "unknown-sender"),
            1,
            "{unit}: {:?}",
            after.service.ignored
        );
        assert_eq!(
            after.cache.goodbyes, before[j].cache.goodbyes,
            "{unit} acted on a goodbye"
        );
    }

    // State intact: the same hosts, generations and rows, still equal to the hosts' tables.
    for j in 0..2 {
        assert_eq!(
            generations(j),
            gens_before[j],
            "{}: host generations changed",
            c.unit_name(j)
        );
        c.compare_unit(j, &tables_before)
            .unwrap_or_else(|e| panic!("state changed: {e}"));
    }
    c.converged().expect("caches still equal the hosts' tables");
}

/// Loads 20 %, 50 %, 80 % at equal capacity → 10,000 token draws (allotments of 100 from
/// both units' `/v1/allotments`, spent with `TokenAllotment`) split within 2 points of
/// 0.8 : 0.5 : 0.2 normalised; a draining endpoint gets none.
#[test]
fn token_allotments_follow_spare_capacity_and_skip_draining() {
    let Some(c) = start("health cluster: allotments", ClusterSpec::default()) else {
        return;
    };
    for (k, load) in [(0, 20), (1, 50), (2, 80)] {
        c.set_status(k, Some("healthy"), Some(load), None);
    }
    for (k, load) in [(0, 20), (1, 50), (2, 80)] {
        c.wait_rows(
            &format!("{} healthy at {load}% at both units", c.host_name(k)),
            k,
            SETTLE,
            |r| r.health == "healthy" && r.load == load && r.capacity == 50,
        );
    }

    let draws = |total: u32| -> BTreeMap<u32, u32> {
        let mut counts = BTreeMap::new();
        let mut drawn = 0;
        let mut round = 0;
        while drawn < total {
            let view = c
                .unit_allotment(round % 2, 100)
                .unwrap_or_else(|e| panic!("allotment: {e}"));
            round += 1;
            let response = token_response(&view);
            let mut tokens =
                TokenAllotment::new(&response, Instant::now()).expect("token allotment");
            while drawn < total {
                let Some(endpoint) = tokens.draw(Instant::now()) else {
                    break;
                };
                *counts.entry(endpoint.host.0).or_default() += 1;
                drawn += 1;
            }
            assert!(
                round < 10 * total as usize,
                "allotments keep coming back empty: {view:?}"
            );
        }
        counts
    };
    let check = |counts: &BTreeMap<u32, u32>, weights: &[(u32, f64)]| {
        let total: u32 = counts.values().sum();
        let sum: f64 = weights.iter().map(|(_, w)| w).sum();
        for (host, weight) in weights {
            let share = f64::from(counts.get(host).copied().unwrap_or(0)) / f64::from(total);
            let want = weight / sum;
            assert!(
                (share - want).abs() <= 0.02,
                "host {host} got {:.2}% of {total} draws, expected {:.2}% ± 2 points: {counts:?}",
                share * 100.0,
                want * 100.0
            );
        }
    };
    let counts = draws(10_000);
    eprintln!("10,000 draws: {counts:?}");
    check(&counts, &[(101, 0.8), (102, 0.5), (103, 0.2)]);

    c.directive(0, "drain");
    wait_until(
        "both units allot web-1 nothing once it drains",
        Duration::from_secs(5),
        || {
            for j in 0..2 {
                let view = c.unit_allotment(j, 100)?;
                if view
                    .entries
                    .iter()
                    .any(|e| e.host == 101 && e.tokens.unwrap_or(0) > 0)
                {
                    return Err(format!("{} still allots web-1: {view:?}", c.unit_name(j)));
                }
            }
            Ok(())
        },
    );
    let counts = draws(2_000);
    eprintln!("2,000 draws with web-1 draining: {counts:?}");
    assert_eq!(
        counts.get(&101),
        None,
        "draining web-1 got tokens: {counts:?}"
    );
    check(&counts, &[(102, 0.5), (103, 0.2)]);
}

/// Spec FIG. 17A: one agent in a separate namespace reports for web-1 and web-2, probing
/// their applications from outside; each keeps its own identity at the units, a failure is
/// seen, and a clean stop clears both hosts.
#[test]
fn proxy_agent_reports_for_two_hosts_from_outside() {
    let spec = ClusterSpec {
        agents: false,
        ..with_http_check()
    };
    let Some(mut c) = Cluster::start("health cluster: proxy agent", spec) else {
        return;
    };
    let outside = c.topo().client(0).ns().clone();
    let proxy = c.start_agent(&outside, &["web-1", "web-2"]);
    let own = c.topo().host(2).ns().clone();
    c.start_agent(&own, &["web-3"]);
    for k in 0..3 {
        c.wait_rows(
            &format!("{} healthy at both units", c.host_name(k)),
            k,
            SETTLE,
            |r| r.health == "healthy",
        );
    }
    c.wait_converged(SETTLE);
    for j in 0..2 {
        let hosts = c.unit_hosts(j);
        let names: Vec<_> = hosts.hosts.iter().map(|h| (h.id, h.name.clone())).collect();
        assert_eq!(
            names,
            vec![
                (101, Some("web-1".to_owned())),
                (102, Some("web-2".to_owned())),
                (103, Some("web-3".to_owned()))
            ],
            "{}",
            c.unit_name(j)
        );
    }

    c.app(0).stop();
    let stopped = Instant::now();
    c.wait_rows(
        "web-1 failing at both units",
        0,
        Duration::from_secs(10),
        |r| r.health == "failing",
    );
    eprintln!(
        "proxy-probed failure reached both units in {:.2} s",
        stopped.elapsed().as_secs_f64()
    );
    for j in 0..2 {
        let row = c
            .unit_row(j, 1)
            .expect("unit answers")
            .expect("web-2 cached");
        assert_eq!(row.health, "healthy", "web-2 at {}", c.unit_name(j));
    }
    c.app(0).restart();
    c.wait_rows(
        "web-1 healthy again at both units",
        0,
        Duration::from_secs(10),
        |r| r.health == "healthy",
    );

    let before: Vec<CountersResponse> = (0..2).map(|j| c.unit_counters(j)).collect();
    let stopping = Instant::now();
    let status = c.stop_agent(proxy);
    assert!(status.success(), "the proxy agent exited with {status}");
    wait_until(
        "both units cleared web-1 and web-2",
        Duration::from_secs(10),
        || {
            for j in 0..2 {
                for k in 0..2 {
                    if c.unit_has_host(j, k)? {
                        return Err(format!("{} still holds {}", c.unit_name(j), c.host_name(k)));
                    }
                }
            }
            Ok(())
        },
    );
    eprintln!(
        "the proxy's goodbyes cleared both hosts {:.2} s after SIGTERM",
        stopping.elapsed().as_secs_f64()
    );
    // Cleared by a goodbye per host, not by ageing out.
    assert_counter_delta(&c, &before, "goodbyes", |u| u.cache.goodbyes, 2);
    assert_counter_delta(&c, &before, "age-outs", |u| u.cache.age_outs, 0);
    c.wait_converged(SETTLE);
}

/// Asserts that a counter of every unit changed by exactly `by` since `before` (one
/// snapshot per unit, in unit order).
#[track_caller]
fn assert_counter_delta(
    c: &Cluster,
    before: &[CountersResponse],
    what: &str,
    field: impl Fn(&CountersResponse) -> u64,
    by: u64,
) {
    for (j, b) in before.iter().enumerate() {
        let after = c.unit_counters(j);
        assert_eq!(
            field(&after),
            field(b) + by,
            "{what} at {}: {} before, {} now, expected +{by}",
            c.unit_name(j),
            field(b),
            field(&after)
        );
    }
}
