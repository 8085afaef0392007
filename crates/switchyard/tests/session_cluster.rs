//! Session tracking with real processes (issue 5): three `switchyard lb` units with the
//! session-store role in their namespaces, `switchyard agent` on two hosts; sessions are
//! reported through the agents' local API (as an application would) and looked up through
//! every unit's admin API. Each test builds its own testbed (root only; skipped otherwise,
//! failed under `CI=true`) and polls with deadlines; nothing asserts wall-clock timing, the
//! measured times are printed.
//!
//! Timings: resend 200 ms, keepalive 300 ms, rebind after 1.5 s; the units' membership
//! (foca) declares a dead unit down within about 1.5 s.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use switchyard_dam::Replication;
use switchyard_lb::admin::sessions::{SessionLookup, SessionsSummary};
use switchyard_session_client::{HostSessions, Session};
use switchyard_wire::UnitId;

use support::cluster::{Cluster, ClusterSpec};
use support::wait::wait_until;

const SETTLE: Duration = Duration::from_secs(30);
/// Sessions per host.
const PER_HOST: usize = 20;

fn spec(sessions_toml: &str) -> ClusterSpec {
    ClusterSpec {
        lb_units: 3,
        hosts: 2,
        sessions: true,
        extra_toml: format!(
            "\n[sessions]\nresend_interval = \"200ms\"\nkeepalive_interval = \"300ms\"\nrebind_after = \"1500ms\"\n{sessions_toml}"
        ),
        ..ClusterSpec::default()
    }
}

/// Session `i` of host `k`: client IPs for host 0, cookies for host 1.
fn session(k: usize, i: usize) -> Session {
    if k == 0 {
        Session::ClientIp {
            ip: IpAddr::from([198, 51, 100, u8::try_from(i + 1).expect("small")]),
        }
    } else {
        Session::HttpCookie {
            name: "SID".into(),
            value: format!("s-{i:04}"),
        }
    }
}

fn query(s: &Session) -> String {
    match s {
        Session::ClientIp { ip } => format!("client_ip={ip}"),
        Session::HttpCookie { name, value } => format!("cookie={name}%3D{value}"),
        other => panic!("no query for {other:?}"),
    }
}

fn key(s: &Session) -> Vec<u8> {
    s.to_wire().expect("valid session").key()
}

fn summary(c: &Cluster, j: usize) -> Result<SessionsSummary, String> {
    let r = c.unit_get(j, "/v1/sessions/summary")?;
    serde_json::from_slice(&r.body).map_err(|e| format!("summary of unit {j}: {e}: {}", r.text()))
}

fn lookup(c: &Cluster, j: usize, s: &Session) -> Result<SessionLookup, String> {
    let r = c.unit_get(j, &format!("/v1/sessions?{}", query(s)))?;
    if r.status != 200 {
        return Err(format!("lookup at unit {j}: {} {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("lookup at unit {j}: {e}"))
}

fn agent_sessions(c: &Cluster, k: usize) -> Result<HostSessions, String> {
    let r = c.agent_request(k, "GET", "/v1/sessions", None)?;
    let mut list: Vec<HostSessions> =
        serde_json::from_str(&r.body).map_err(|e| format!("agent {k}: {e}: {}", r.body))?;
    list.pop().ok_or_else(|| format!("agent {k}: no host"))
}

fn report(c: &Cluster, k: usize, path: &str, s: &Session) {
    let body = serde_json::json!({ "session": s }).to_string();
    let r = c
        .agent_request(k, "POST", path, Some(&body))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        r.status == 200 || r.status == 201,
        "{path} {body}: {} {}",
        r.status,
        r.body
    );
}

fn wait_members(c: &Cluster, units: &[usize], n: usize) -> Duration {
    wait_until("session-store membership", SETTLE, || {
        for &j in units {
            let s = summary(c, j)?;
            if s.members.len() != n {
                return Err(format!("unit {j} sees {:?}", s.members));
            }
        }
        Ok(())
    })
    .1
}

fn wait_in_sync(c: &Cluster) {
    wait_until("every host's channel acknowledged", SETTLE, || {
        for k in 0..2 {
            let h = agent_sessions(c, k)?;
            if !h.channel.in_sync || h.channel.unacked != 0 {
                return Err(format!("host {k}: {:?}", h.channel));
            }
        }
        Ok(())
    });
}

fn start(what: &str, sessions_toml: &str) -> Option<Cluster> {
    let c = Cluster::start(what, spec(sessions_toml))?;
    let took = wait_members(&c, &[0, 1, 2], 3);
    eprintln!(
        "membership of 3 units formed {:.2} s after start",
        took.as_secs_f64()
    );
    Some(c)
}

fn report_all(c: &Cluster) -> Vec<(usize, Session)> {
    let mut all = Vec::new();
    for k in 0..2 {
        for i in 0..PER_HOST {
            let s = session(k, i);
            report(c, k, "/v1/sessions", &s);
            all.push((k, s));
        }
    }
    wait_in_sync(c);
    all
}

/// Every session is found from `units`, on its host.
fn all_found(c: &Cluster, units: &[usize], all: &[(usize, Session)]) -> Result<(), String> {
    for &j in units {
        for (k, s) in all {
            let l = lookup(c, j, s)?;
            let want = c.host_id(*k);
            if !l.found || l.host != Some(want) || l.zombie {
                return Err(format!("unit {j}: {s:?}: {l:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn sessions_are_found_everywhere_cached_deleted_and_survive_unit_failures() {
    let Some(mut c) = start(
        "session_cluster::replicated",
        "replication = 1\n[sessions.zombie]\nclient_ip = \"3s\"\n",
    ) else {
        return;
    };
    let all = report_all(&c);

    // A key this unit neither owns nor added: found through its owners, then cached.
    let units: Vec<UnitId> = (1..=3).map(UnitId).collect();
    let bound: Vec<u32> = (0..2)
        .map(|k| {
            agent_sessions(&c, k)
                .expect("agent")
                .channel
                .unit_id
                .expect("bound")
        })
        .collect();
    let (s, j) = all
        .iter()
        .find_map(|(k, s)| {
            let owners = switchyard_dam::placement::owners(&key(s), &units, Replication::Level(1));
            let j = (1..=3u32).find(|u| !owners.contains(&UnitId(*u)) && *u != bound[*k])?;
            Some((s.clone(), usize::try_from(j - 1).ok()?))
        })
        .expect("some key is neither owned nor added by some unit");
    let before = summary(&c, j).expect("summary");
    let first = lookup(&c, j, &s).expect("lookup");
    let second = lookup(&c, j, &s).expect("lookup");
    let after = summary(&c, j).expect("summary");
    assert!(
        first.found && first.holding.as_deref() == Some("remote"),
        "{first:?}"
    );
    assert!(
        second.found && second.holding.as_deref() == Some("cached"),
        "{second:?}"
    );
    assert_eq!(
        after.dam["remote_queries"],
        before.dam["remote_queries"] + 1
    );
    assert_eq!(after.dam["remote_found"], before.dam["remote_found"] + 1);
    assert_eq!(after.dam["cache_hits"], before.dam["cache_hits"] + 1);
    eprintln!(
        "unit {j}: {s:?} found at its owners {:?} in {} µs, then in its cache in {} µs",
        first.owners, first.lookup_us, second.lookup_us
    );

    // Found from every unit.
    let (_, took) = wait_until("every session found from every unit", SETTLE, || {
        all_found(&c, &[0, 1, 2], &all)
    });
    eprintln!(
        "{} sessions found from all 3 units ({:.2} s)",
        all.len(),
        took.as_secs_f64()
    );

    // Delete → zombie → expires.
    let gone = session(0, 0);
    report(&c, 0, "/v1/sessions/down", &gone);
    let (_, took) = wait_until("the deleted session is a zombie", SETTLE, || {
        let l = lookup(&c, 1, &gone)?;
        if l.found && l.zombie {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    eprintln!("zombie visible after {:.2} s", took.as_secs_f64());
    let (_, took) = wait_until("the zombie expires", SETTLE, || {
        for j in 0..3 {
            let l = lookup(&c, j, &gone)?;
            if l.found {
                return Err(format!("unit {j}: {l:?}"));
            }
        }
        Ok(())
    });
    eprintln!(
        "zombie gone after {:.2} s more (zombie time 3 s)",
        took.as_secs_f64()
    );
    let live: Vec<(usize, Session)> = all.iter().filter(|(_, s)| *s != gone).cloned().collect();

    // Kill the unit host 0 is bound to: no session lost, level 1 restored on the survivors.
    let bound = agent_sessions(&c, 0)
        .expect("agent")
        .channel
        .unit_id
        .expect("bound");
    let victim = usize::try_from(bound - 1).expect("unit index");
    let survivors: Vec<usize> = (0..3).filter(|j| *j != victim).collect();
    let killed = Instant::now();
    c.kill_lb(victim);
    wait_members(&c, &survivors, 2);
    let detected = killed.elapsed();
    let expected: BTreeMap<u32, u64> = [
        (c.host_id(0), PER_HOST as u64 - 1),
        (c.host_id(1), PER_HOST as u64),
    ]
    .into();
    wait_until(
        "level 1 restored: both survivors own every live atom",
        SETTLE,
        || {
            for &j in &survivors {
                let s = summary(&c, j)?;
                let per_host: BTreeMap<u32, u64> =
                    s.hosts.iter().map(|h| (h.id, h.atoms)).collect();
                if per_host != expected
                    || s.dam["pushes_pending"] != 0
                    || s.dam["rebalance_pending"] != 0
                {
                    return Err(format!(
                        "unit {j}: {per_host:?}, lag {}",
                        s.dam["pushes_pending"]
                    ));
                }
            }
            Ok(())
        },
    );
    eprintln!(
        "unit {victim} killed: membership changed after {:.2} s, level 1 restored {:.2} s after the kill",
        detected.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    wait_until("host 0 rebound and in sync", SETTLE, || {
        let h = agent_sessions(&c, 0)?;
        if h.channel.rebinds >= 1 && h.channel.in_sync && h.channel.unit_id != Some(bound) {
            Ok(())
        } else {
            Err(format!("{:?}", h.channel))
        }
    });
    wait_until("every session found from the survivors", SETTLE, || {
        all_found(&c, &survivors, &live)
    });

    // Restart it; then restart the unit host 1 is bound to: host 1 reconnects (or rebinds)
    // and resyncs; nothing is lost.
    c.start_lb(victim);
    wait_members(&c, &[0, 1, 2], 3);
    let before = agent_sessions(&c, 1).expect("agent").channel;
    let j1 = usize::try_from(before.unit_id.expect("bound") - 1).expect("unit index");
    c.kill_lb(j1);
    c.start_lb(j1);
    let (_, took) = wait_until("host 1 resynced after its unit restarted", SETTLE, || {
        let h = agent_sessions(&c, 1)?;
        if h.channel.resyncs > before.resyncs && h.channel.in_sync && h.channel.unacked == 0 {
            Ok(h)
        } else {
            Err(format!("{:?}", h.channel))
        }
    });
    let after = agent_sessions(&c, 1).expect("agent").channel;
    eprintln!(
        "host 1's unit restarted: resynced in {:.2} s (resync requests {} → {}, rebinds {} → {})",
        took.as_secs_f64(),
        before.resync_requests,
        after.resync_requests,
        before.rebinds,
        after.rebinds
    );
    wait_members(&c, &[0, 1, 2], 3);
    wait_until(
        "every session found from every unit after the restarts",
        SETTLE,
        || all_found(&c, &[0, 1, 2], &live),
    );
}

#[test]
fn level_zero_loses_exactly_the_dead_units_atoms() {
    let Some(mut c) = start(
        "session_cluster::level0",
        "replication = 0\ncache_ttl = \"2s\"\n",
    ) else {
        return;
    };
    let all = report_all(&c);
    // Every atom is owned exactly once (adders' copies end as short-lived cache entries).
    wait_until("every atom owned once", SETTLE, || {
        let mut total = 0;
        for j in 0..3 {
            let s = summary(&c, j)?;
            total += s.dam["atoms_owned"];
            if s.dam["pushes_pending"] != 0 {
                return Err(format!("unit {j} lag {}", s.dam["pushes_pending"]));
            }
        }
        if total == all.len() as u64 {
            Ok(())
        } else {
            Err(format!("{total} owned"))
        }
    });
    // Kill a unit no host is bound to (a bound unit's hosts would resync to another).
    let bound: BTreeSet<u32> = (0..2)
        .map(|k| {
            agent_sessions(&c, k)
                .expect("agent")
                .channel
                .unit_id
                .expect("bound")
        })
        .collect();
    let victim = (0..3)
        .find(|j| !bound.contains(&(*j as u32 + 1)))
        .expect("an unbound unit");
    let units: Vec<UnitId> = (1..=3).map(UnitId).collect();
    let lost: BTreeSet<Vec<u8>> = all
        .iter()
        .map(|(_, s)| key(s))
        .filter(|k| {
            switchyard_dam::placement::owners(k, &units, Replication::Level(0))
                == [UnitId(victim as u32 + 1)]
        })
        .collect();
    assert!(
        !lost.is_empty(),
        "the placement gives the victim some of {} keys",
        all.len()
    );
    c.kill_lb(victim);
    let survivors: Vec<usize> = (0..3).filter(|j| *j != victim).collect();
    wait_members(&c, &survivors, 2);
    // Cache entries (hints, not copies) expire after cache_ttl.
    wait_until("the survivors' caches expired", SETTLE, || {
        for &j in &survivors {
            let s = summary(&c, j)?;
            if s.dam["atoms_cached"] != 0 {
                return Err(format!("unit {j}: {} cached", s.dam["atoms_cached"]));
            }
        }
        Ok(())
    });
    let j = survivors[0];
    let mut found = 0;
    for (k, s) in &all {
        let l = lookup(&c, j, s).expect("lookup");
        let is_lost = lost.contains(&key(s));
        assert_eq!(l.found, !is_lost, "{s:?} (lost: {is_lost}): {l:?}");
        if l.found {
            assert_eq!(l.host, Some(c.host_id(*k)));
            found += 1;
        }
    }
    eprintln!(
        "level 0: unit {victim} killed; {} of {} sessions lost, exactly those it owned; {found} found",
        lost.len(),
        all.len()
    );
}
