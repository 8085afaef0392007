//! Host groups with real processes (issue 3, FIG. 16): `switchyard lb` in two LB unit
//! namespaces, `switchyard agent` in three host namespaces that form one `[[host_groups]]`,
//! over the testbed's backend bridge. The lowest-id host leads and sends the group's
//! heartbeats to both units; when its agent is killed (SIGKILL: no goodbye, no leaving the
//! group) the other two stay listed and alive at both units while the next-lowest takes
//! over, and the killed host ages out after `host_dead_after`.
//!
//! Needs root (skipped otherwise, failed under `CI=true`); the testbed tears everything
//! down on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_testbed::{Netns, Process, Topology, require_testbed};

const SECRET: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a\n";
const HOST_DEAD_AFTER: Duration = Duration::from_secs(3);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Units lb-1, lb-2 (ids 1, 2) at 198.18.200.10+j; hosts web-1..3 (ids 101..103) at
/// 198.18.200.100+k, all three in group `rack` (listed out of id order on purpose).
fn config_text() -> String {
    let mut text = String::from(
        r#"[cluster]
id = "groups"
secret_file = "cluster.key"
"#,
    );
    for j in 0..2 {
        text.push_str(&format!(
            r#"
[[cluster.units]]
name = "lb-{n}"
id = {n}
address = "198.18.200.{ip}"
roles = ["forwarder", "classifier", "health-cache"]
"#,
            n = j + 1,
            ip = 10 + j
        ));
    }
    text.push_str(
        r#"
[health]
heartbeat_interval = "200ms"
host_dead_after = "3s"
load_interval = "500ms"
postulate_interval = "200ms"
postulate_delay = "100ms"

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[pools]]
name = "web"
"#,
    );
    for k in 0..3 {
        text.push_str(&format!(
            r#"
[[pools.hosts]]
id = {id}
name = "web-{n}"
address = "198.18.200.{ip}:8080"
app = "shop"
"#,
            id = 101 + k,
            n = k + 1,
            ip = 100 + k
        ));
    }
    text.push_str(
        r#"
[[host_groups]]
name = "rack"
hosts = ["web-2", "web-3", "web-1"]
gossip_port = 9172
"#,
    );
    text
}

/// One host as a unit lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    alive: bool,
}

/// What unit `ns` lists, via `switchyard ctl hosts --json` inside its namespace.
fn unit_hosts(ns: &Netns) -> Result<Vec<Listed>, String> {
    let out = ns
        .output([BIN, "ctl", "--unit", "127.0.0.1:9180", "hosts", "--json"])
        .map_err(|e| format!("cannot run ctl: {e}"))?;
    if !out.status.success() {
        return Err(format!("ctl failed ({}): {}", out.status, out.stderr));
    }
    let value: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("ctl printed no JSON ({e}): {}", out.stdout))?;
    let hosts = value["hosts"]
        .as_array()
        .ok_or_else(|| format!("no hosts array: {value}"))?;
    Ok(hosts
        .iter()
        .map(|h| Listed {
            name: h["name"].as_str().unwrap_or("?").to_owned(),
            alive: h["alive"].as_bool().unwrap_or(false),
        })
        .collect())
}

/// Messages of type `kind` the cache of unit `ns` received (its admin API's
/// `/v1/counters`, fetched from inside its namespace).
fn received(ns: &Netns, kind: &str) -> u64 {
    let body = ns
        .enter(|| -> std::io::Result<String> {
            let mut conn = TcpStream::connect("127.0.0.1:9180")?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(
                b"GET /v1/counters HTTP/1.1\r\nHost: unit\r\nConnection: close\r\n\r\n",
            )?;
            let mut response = String::new();
            conn.read_to_string(&mut response)?;
            Ok(response)
        })
        .expect("enter the unit's namespace")
        .expect("GET /v1/counters");
    let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let value: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("counters are not JSON ({e}): {body}"));
    value["cache"]["received"][kind].as_u64().unwrap_or(0)
}

fn alive_names(listed: &[Listed]) -> Vec<&str> {
    listed
        .iter()
        .filter(|h| h.alive)
        .map(|h| h.name.as_str())
        .collect()
}

fn spawn_ready(ns: &Netns, args: &[&str], ready: &str) -> Process {
    let process = ns
        .spawn(args)
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    process
        .wait_for_output(ready, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{args:?} did not start: {e}"));
    process
}

fn logs(processes: &[(&str, &Process)]) -> String {
    processes
        .iter()
        .map(|(name, p)| {
            let log = p.stderr().unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {name}:\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_files(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("cluster.key"), SECRET).expect("write the secret");
    let config = dir.join("cluster.toml");
    std::fs::write(&config, config_text()).expect("write the configuration");
    config
}

#[test]
fn leader_crash_keeps_members_alive_at_both_units() {
    let tb = require_testbed!("host groups: 3 agents in a group, 2 LB units");
    let topo = Topology::builder()
        .lb_units(2)
        .hosts(3)
        .build(&tb)
        .expect("build the topology");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_files(dir.path());
    let config = config.to_str().expect("UTF-8 path");

    let units: Vec<Process> = (0..2)
        .map(|j| {
            let unit = format!("lb-{}", j + 1);
            spawn_ready(
                topo.lb_unit(j).ns(),
                &[BIN, "lb", "--config", config, "--unit", &unit],
                "lb ready",
            )
        })
        .collect();
    let mut agents: Vec<Option<Process>> = (0..3)
        .map(|k| {
            let host = format!("web-{}", k + 1);
            let socket = dir.path().join(format!("{host}.sock"));
            let socket = socket.to_str().expect("UTF-8 path");
            Some(spawn_ready(
                topo.host(k).ns(),
                &[
                    BIN, "agent", "--config", config, "--host", &host, "--socket", socket,
                ],
                "agent ready",
            ))
        })
        .collect();
    let dump = |agents: &[Option<Process>]| {
        let mut all: Vec<(String, &Process)> = units
            .iter()
            .enumerate()
            .map(|(j, p)| (format!("lb-{}", j + 1), p))
            .collect();
        for (k, p) in agents.iter().enumerate() {
            if let Some(p) = p {
                all.push((format!("web-{}", k + 1), p));
            }
        }
        let refs: Vec<(&str, &Process)> = all.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        logs(&refs)
    };

    // Both units list all three hosts alive; web-1 (lowest id) leads.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(8);
    loop {
        let views: Vec<Result<Vec<Listed>, String>> =
            (0..2).map(|j| unit_hosts(topo.lb_unit(j).ns())).collect();
        let all_alive = views.iter().all(|v| {
            v.as_ref()
                .is_ok_and(|v| alive_names(v) == ["web-1", "web-2", "web-3"])
        });
        let led = agents.iter().skip(1).flatten().all(|p| {
            p.stderr()
                .is_ok_and(|log| log.contains("host group leader is now web-1"))
        });
        if all_alive && led {
            eprintln!(
                "group formed and all three hosts alive at both units {:.2} s after the agents were ready",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not form: units see {views:?}\n{}",
            dump(&agents)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The units hear the group through its leader only: consolidated heartbeats keep
    // coming, plain ones stop.
    let count = |kind: &str| -> Vec<u64> {
        (0..2)
            .map(|j| received(topo.lb_unit(j).ns(), kind))
            .collect()
    };
    std::thread::sleep(Duration::from_millis(300));
    let (plain, consolidated) = (count("Heartbeat"), count("ConsolidatedHeartbeat"));
    std::thread::sleep(Duration::from_secs(1));
    let (plain_after, consolidated_after) = (count("Heartbeat"), count("ConsolidatedHeartbeat"));
    assert_eq!(
        plain,
        plain_after,
        "plain heartbeats still reach the units\n{}",
        dump(&agents)
    );
    for j in 0..2 {
        // 1 s at 200 ms: about 5 consolidated heartbeats per unit.
        assert!(
            consolidated_after[j] >= consolidated[j] + 3,
            "lb-{}: consolidated heartbeats {} -> {}\n{}",
            j + 1,
            consolidated[j],
            consolidated_after[j],
            dump(&agents)
        );
    }

    // SIGKILL web-1's agent: the leader is gone without a word.
    let leader = agents[0].take().expect("web-1 runs");
    leader.kill().expect("kill web-1's agent");
    let killed = Instant::now();
    // web-2 and web-3 stay listed and alive at both units throughout; web-1 disappears
    // after host_dead_after, and web-2 takes the lead.
    let deadline = killed + HOST_DEAD_AFTER + Duration::from_secs(4);
    let mut gone = [None, None];
    loop {
        for (j, seen) in gone.iter_mut().enumerate() {
            let listed = unit_hosts(topo.lb_unit(j).ns())
                .unwrap_or_else(|e| panic!("lb-{}: {e}\n{}", j + 1, dump(&agents)));
            let alive = alive_names(&listed);
            assert!(
                alive.contains(&"web-2") && alive.contains(&"web-3"),
                "lb-{} lost a surviving member {:?} after the leader was killed: {listed:?}\n{}",
                j + 1,
                killed.elapsed(),
                dump(&agents)
            );
            if seen.is_none() && !listed.iter().any(|h| h.name == "web-1") {
                *seen = Some(killed.elapsed());
            }
        }
        let took_over = agents[2]
            .as_ref()
            .and_then(|p| p.stderr().ok())
            .is_some_and(|log| log.contains("host group leader is now web-2"));
        if gone.iter().all(Option::is_some) && took_over {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {:?}: web-1 gone at the units {gone:?}, web-3 follows web-2: {took_over}\n{}",
            killed.elapsed(),
            dump(&agents)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let consolidated = count("ConsolidatedHeartbeat");
    std::thread::sleep(Duration::from_secs(1));
    let consolidated_after = count("ConsolidatedHeartbeat");
    for j in 0..2 {
        assert!(
            consolidated_after[j] >= consolidated[j] + 3,
            "lb-{}: consolidated heartbeats after the takeover {} -> {}\n{}",
            j + 1,
            consolidated[j],
            consolidated_after[j],
            dump(&agents)
        );
    }
    for j in 0..2 {
        let listed = unit_hosts(topo.lb_unit(j).ns()).expect("ctl");
        assert_eq!(alive_names(&listed), ["web-2", "web-3"], "lb-{}", j + 1);
    }
    drop(agents);
    drop(units);
}
