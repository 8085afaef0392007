//! Host groups with real processes (issue 3, FIG. 16): `switchyard lb` in two LB unit
//! namespaces, `switchyard agent` in three host namespaces that form one `[[host_groups]]`,
//! over the testbed's backend bridge (the cluster harness in `support/`). The lowest-id
//! host leads and sends the group's heartbeats to both units; when its agent is killed
//! (SIGKILL: no goodbye, no leaving the group) the other two stay listed and alive at both
//! units while the next-lowest takes over, and the killed host ages out after
//! `host_dead_after`.
//!
//! Needs root (skipped otherwise, failed under `CI=true`); the testbed tears everything
//! down on drop, and a failure prints the cluster's state and logs.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec};
use support::wait::wait_until;

const HOST_DEAD_AFTER: Duration = Duration::from_secs(3);

/// Units lb-1, lb-2; hosts web-1..3 (ids 101..103), all three in group `rack` (listed out
/// of id order on purpose).
fn spec() -> ClusterSpec {
    ClusterSpec {
        host_dead_after: HOST_DEAD_AFTER,
        postulate_delay: Some(Duration::from_millis(100)),
        extra_toml: r#"
[[host_groups]]
name = "rack"
hosts = ["web-2", "web-3", "web-1"]
gossip_port = 9172
"#
        .to_owned(),
        ..ClusterSpec::default()
    }
}

/// The hosts unit `j` lists alive, by name.
fn alive_names(c: &Cluster, j: usize) -> Result<Vec<String>, String> {
    Ok(c.try_unit_hosts(j)?
        .hosts
        .iter()
        .filter(|h| h.alive)
        .map(|h| h.name.clone().unwrap_or_else(|| format!("#{}", h.id)))
        .collect())
}

/// Messages of type `kind` each unit's cache received.
fn received(c: &Cluster, kind: &str) -> Vec<u64> {
    (0..2)
        .map(|j| {
            c.unit_counters(j)
                .cache
                .received
                .get(kind)
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn leader_crash_keeps_members_alive_at_both_units() {
    let Some(mut c) = Cluster::start("host groups: 3 agents in a group, 2 LB units", spec()) else {
        return;
    };

    // Both units list all three hosts alive; web-1 (lowest id) leads.
    let (_, took) = wait_until(
        "all three hosts are alive at both units and web-1 leads the group",
        Duration::from_secs(20),
        || {
            let views: Vec<_> = (0..2).map(|j| alive_names(&c, j)).collect();
            let all_alive = views
                .iter()
                .all(|v| v.as_ref().is_ok_and(|v| v == &["web-1", "web-2", "web-3"]));
            let led = (1..3).all(|a| c.agent_log(a).contains("host group leader is now web-1"));
            if all_alive && led {
                Ok(())
            } else {
                Err(format!(
                    "units see {views:?}; web-2 and web-3 follow web-1: {led}"
                ))
            }
        },
    );
    eprintln!(
        "group formed and all three hosts alive at both units {:.2} s after the agents were ready",
        took.as_secs_f64()
    );
    // The consolidated heartbeats keep every unit's cache equal to the hosts' tables.
    c.wait_converged(Duration::from_secs(10));

    // The units hear the group through its leader only: consolidated heartbeats keep
    // coming, plain ones stop.
    std::thread::sleep(Duration::from_millis(300));
    let plain = received(&c, "Heartbeat");
    let took = consolidated_keep_coming(&c, "while web-1 leads");
    eprintln!("3 more consolidated heartbeats at both units within {took:.2?}");
    assert_eq!(
        plain,
        received(&c, "Heartbeat"),
        "plain heartbeats still reach the units"
    );

    // SIGKILL web-1's agent: the leader is gone without a word.
    c.kill_agent(0);
    let killed = Instant::now();
    // web-2 and web-3 stay listed and alive at both units throughout; web-1 disappears
    // after host_dead_after, and web-2 takes the lead.
    let mut gone = [None, None];
    wait_until(
        "web-1 ages out at both units and web-2 leads, the survivors alive throughout",
        HOST_DEAD_AFTER + Duration::from_secs(10),
        || {
            for (j, seen) in gone.iter_mut().enumerate() {
                let listed = c.try_unit_hosts(j)?;
                let alive = alive_names(&c, j)?;
                assert!(
                    alive.iter().any(|h| h == "web-2") && alive.iter().any(|h| h == "web-3"),
                    "lb-{} lost a surviving member {:?} after the leader was killed: {alive:?}",
                    j + 1,
                    killed.elapsed(),
                );
                if seen.is_none() && !listed.hosts.iter().any(|h| h.id == 101) {
                    *seen = Some(killed.elapsed());
                }
            }
            let took_over = c.agent_log(2).contains("host group leader is now web-2");
            if gone.iter().all(Option::is_some) && took_over {
                Ok(())
            } else {
                Err(format!(
                    "after {:?}: web-1 gone at the units {gone:?}, web-3 follows web-2: {took_over}",
                    killed.elapsed()
                ))
            }
        },
    );
    eprintln!("leader killed: web-2 leads, web-1 gone at (lb-1, lb-2) after {gone:?}");
    for (j, at) in gone.iter().enumerate() {
        let at = at.unwrap_or_default();
        // Not before its last heartbeat could have aged out.
        assert!(
            at + Duration::from_millis(300) >= HOST_DEAD_AFTER,
            "lb-{} dropped web-1 after only {at:?}",
            j + 1
        );
    }
    // web-2 consolidates now, and the survivors stay alive past host_dead_after at both
    // units.
    let took = consolidated_keep_coming(&c, "after the takeover");
    eprintln!("3 more consolidated heartbeats at both units within {took:.2?} after the takeover");
    for j in 0..2 {
        let alive = alive_names(&c, j).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alive, ["web-2", "web-3"], "lb-{}", j + 1);
    }
    c.wait_converged(Duration::from_secs(10));
}

/// Waits (at most 10 s) until both units received 3 more consolidated heartbeats than
/// now; returns how long that took.
fn consolidated_keep_coming(c: &Cluster, when: &str) -> Duration {
    let start = received(c, "ConsolidatedHeartbeat");
    let (_, took) = wait_until(
        &format!("3 more consolidated heartbeats at both units {when}"),
        Duration::from_secs(10),
        || {
            let now = received(c, "ConsolidatedHeartbeat");
            if (0..2).all(|j| now[j] >= start[j] + 3) {
                Ok(())
            } else {
                Err(format!("consolidated heartbeats {start:?} -> {now:?}"))
            }
        },
    );
    took
}
