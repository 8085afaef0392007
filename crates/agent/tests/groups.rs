//! Host groups in the agent daemon, in-process on loopback: three agents (hosts on
//! 127.0.0.1, .2 and .3, same agent and gossip ports) in one `[[host_groups]]`, and a real
//! LB-unit side (a `ConsolidatedCache` on a `UdpEndpoint`). The lowest-id host leads and
//! sends the unit consolidated heartbeats holding all three; when it crashes (its tasks are
//! aborted: no goodbye, no leaving the group) the others stay alive at the unit, the
//! next-lowest leads, and the crashed host ages out. The local API shows the group.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_agent::api::client::{ApiTarget, request};
use switchyard_agent::daemon::{Agent, AgentOptions};
use switchyard_health::{CacheSettings, ConsolidatedCache};
use switchyard_transport::UdpEndpoint;
use switchyard_wire::{Codec, HostId, MacKey, Message, SenderId, UnitId};
use tokio::task::JoinHandle;

const SECRET: &str = "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f\n";
const CLUSTER: &str = "group-test";
const UNIT: u32 = 100;
const HOST_DEAD_AFTER: Duration = Duration::from_secs(3);

fn host_ip(k: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, k))
}

/// A UDP port free on 127.0.0.1, .2 and .3 (and not `other`), as far as can be told.
fn free_port(other: u16) -> u16 {
    for _ in 0..50 {
        let first = UdpSocket::bind((host_ip(1), 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if port == other {
            continue;
        }
        let rest: Vec<_> = (2..=3)
            .map(|k| UdpSocket::bind((host_ip(k), port)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no UDP port free on 127.0.0.1-3");
}

/// Hosts web-1..3 (ids 1..3) on 127.0.0.1..3 in group `rack`, one unit at `unit`.
fn config_text(unit: SocketAddr, agent_port: u16, gossip_port: u16) -> String {
    format!(
        r#"
[cluster]
id = "{CLUSTER}"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = {UNIT}
address = "{ip}"
roles = ["forwarder", "classifier", "health-cache"]
control_port = {port}

[health]
heartbeat_interval = "200ms"
host_dead_after = "3s"
postulate_interval = "100ms"
postulate_delay = "50ms"
load_smoothing = 0.5

[agent]
listen = "0.0.0.0:{agent_port}"

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[pools]]
name = "web"

[[pools.hosts]]
id = 1
name = "web-1"
address = "127.0.0.1:18080"
app = "shop"

[[pools.hosts]]
id = 2
name = "web-2"
address = "127.0.0.2:18080"
app = "shop"

[[pools.hosts]]
id = 3
name = "web-3"
address = "127.0.0.3:18080"
app = "shop"

[[host_groups]]
name = "rack"
hosts = ["web-3", "web-1", "web-2"]
gossip_port = {gossip_port}
"#,
        ip = unit.ip(),
        port = unit.port(),
    )
}

/// What the unit saw of consolidated heartbeats: when, from which leader, for which hosts.
type Consolidated = Vec<(Instant, u32, Vec<u32>)>;

/// The unit side: a consolidated cache on a real UDP endpoint. Replies go to the address a
/// host's heartbeats advertise (members' heartbeats arrive through the leader), else to
/// the datagram's source.
struct Unit {
    addr: SocketAddr,
    cache: Arc<Mutex<ConsolidatedCache>>,
    consolidated: Arc<Mutex<Consolidated>>,
    task: JoinHandle<()>,
}

impl Unit {
    async fn start() -> Self {
        let secret =
            switchyard_config::ClusterSecret::from_file_contents(SECRET.as_bytes()).unwrap();
        let key = MacKey::derive(secret.as_bytes(), CLUSTER).unwrap();
        let mut endpoint = UdpEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Codec::new(key),
            SenderId(UNIT),
        )
        .await
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let mut settings = CacheSettings::new(UnitId(UNIT));
        settings.host_dead_after = HOST_DEAD_AFTER;
        let cache = Arc::new(Mutex::new(
            ConsolidatedCache::new(settings, Instant::now()).unwrap(),
        ));
        let consolidated = Arc::new(Mutex::new(Vec::new()));
        let (shared, seen) = (Arc::clone(&cache), Arc::clone(&consolidated));
        let task = tokio::spawn(async move {
            let mut sources: BTreeMap<SenderId, SocketAddr> = BTreeMap::new();
            loop {
                let deadline = shared.lock().unwrap().poll_timeout();
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    received = endpoint.recv() => {
                        let Ok(received) = received else { continue };
                        let Ok(envelope) = received.result else { continue };
                        sources.insert(envelope.sender, received.from);
                        if let Message::ConsolidatedHeartbeat(c) = &envelope.message {
                            let hosts = c.heartbeats.iter().map(|hb| hb.host.0).collect();
                            seen.lock().unwrap().push((Instant::now(), c.leader.0, hosts));
                        }
                        let _ = shared.lock().unwrap().handle(Instant::now(), envelope.sender, &envelope.message);
                    }
                    () = sleep => shared.lock().unwrap().handle_timeout(Instant::now()),
                }
                let mut out = Vec::new();
                {
                    let mut cache = shared.lock().unwrap();
                    while let Some(t) = cache.poll_transmit() {
                        let advertised = cache.host(HostId(t.to.0)).and_then(|h| h.address);
                        out.push((advertised.or_else(|| sources.get(&t.to).copied()), t));
                    }
                }
                for (to, t) in out {
                    if let Some(to) = to {
                        let _ = endpoint.send(to, &t.message).await;
                    }
                }
            }
        });
        Self {
            addr,
            cache,
            consolidated,
            task,
        }
    }

    /// Hosts alive at the unit now, by id.
    fn alive(&self) -> Vec<u32> {
        let cache = self.cache.lock().unwrap();
        let now = Instant::now();
        cache
            .hosts()
            .map(|h| h.host)
            .filter(|h| cache.is_alive(*h, now))
            .map(|h| h.0)
            .collect()
    }

    /// Whether the unit received, after `since`, a consolidated heartbeat from `leader`
    /// holding exactly `hosts`.
    fn consolidated_since(&self, since: Instant, leader: u32, hosts: &[u32]) -> bool {
        self.consolidated
            .lock()
            .unwrap()
            .iter()
            .any(|(at, l, h)| *at >= since && *l == leader && h == hosts)
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_agent(
    config: &switchyard_config::Config,
    dir: &std::path::Path,
    k: u8,
    agent_port: u16,
) -> Agent {
    let options = AgentOptions {
        hosts: vec![format!("web-{k}")],
        listen: Some(SocketAddr::new(host_ip(k), agent_port)),
        api: Some("127.0.0.1:0".parse().unwrap()),
        socket: Some(dir.join(format!("web-{k}.sock"))),
        ..AgentOptions::default()
    };
    Agent::start(config, options)
        .await
        .unwrap_or_else(|e| panic!("web-{k}: {e:#}"))
}

async fn hosts_json(agent: &Agent) -> Value {
    let response = request(&ApiTarget::Tcp(agent.api_addr()), "GET", "/v1/hosts", None)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    serde_json::from_str(&response.body).unwrap()
}

/// Waits up to `limit` for `done`, checking `invariant` (which must hold throughout) at
/// every step.
async fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    mut invariant: impl FnMut(),
) {
    let deadline = Instant::now() + limit;
    loop {
        invariant();
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_consolidates_and_its_crash_is_survived() {
    let unit = Unit::start().await;
    let agent_port = free_port(0);
    let gossip_port = free_port(agent_port);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.key"), SECRET).unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, config_text(unit.addr, agent_port, gossip_port)).unwrap();
    let config = switchyard_config::load_file(&file).unwrap_or_else(|d| panic!("{d}"));

    let started = Instant::now();
    let web1 = start_agent(&config, dir.path(), 1, agent_port).await;
    let web2 = start_agent(&config, dir.path(), 2, agent_port).await;
    let web3 = start_agent(&config, dir.path(), 3, agent_port).await;

    // web-1 (lowest id) leads; the unit gets its consolidated heartbeats holding all three.
    wait_for(
        Duration::from_secs(6),
        "a consolidated heartbeat of web-1 holding hosts 1, 2 and 3",
        || unit.consolidated_since(started, 1, &[1, 2, 3]),
        || {},
    )
    .await;
    wait_for(
        Duration::from_secs(3),
        "all three hosts alive at the unit",
        || unit.alive() == [1, 2, 3],
        || {},
    )
    .await;
    let hosts = hosts_json(&web2).await;
    let group = &hosts[0]["group"];
    assert_eq!(group["name"], "rack", "{hosts:#}");
    assert_eq!(group["leader"], "web-1", "{hosts:#}");
    assert_eq!(group["leader_id"], 1, "{hosts:#}");
    assert_eq!(group["mode"], "member", "{hosts:#}");
    assert_eq!(
        group["members"],
        serde_json::json!(["web-1", "web-2", "web-3"])
    );
    assert_eq!(
        group["configured"],
        serde_json::json!(["web-1", "web-2", "web-3"])
    );
    assert_eq!(hosts_json(&web1).await[0]["group"]["mode"], "lead");
    let counters = request(
        &ApiTarget::Tcp(web1.api_addr()),
        "GET",
        "/v1/counters",
        None,
    )
    .await
    .unwrap();
    let counters: Value = serde_json::from_str(&counters.body).unwrap();
    let group = &counters["hosts"][0]["group"];
    assert!(
        group["consolidated_heartbeats_sent"].as_u64().unwrap() > 0,
        "{counters:#}"
    );
    assert!(
        group["member_heartbeats_received"].as_u64().unwrap() > 0,
        "{counters:#}"
    );
    assert!(
        group["gossip_received"].as_u64().unwrap() > 0,
        "{counters:#}"
    );
    let metrics = request(&ApiTarget::Tcp(web2.api_addr()), "GET", "/metrics", None)
        .await
        .unwrap();
    assert!(
        metrics.body.contains(
            "switchyard_agent_group_members{host=\"2\",host_name=\"web-2\",group=\"rack\"} 3"
        ),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains(
            "switchyard_agent_group_heartbeats_to_leader_total{host=\"2\",host_name=\"web-2\""
        ),
        "{}",
        metrics.body
    );

    // web-1 crashes: no goodbye, no leaving the group.
    web1.abort().await;
    let crashed = Instant::now();
    // web-2 takes over; web-2 and web-3 never age out meanwhile.
    let stay_alive = || {
        let alive = unit.alive();
        assert!(
            alive.contains(&2) && alive.contains(&3),
            "a surviving member aged out at the unit {:?} after the crash: alive {alive:?}",
            crashed.elapsed()
        );
    };
    wait_for(
        Duration::from_secs(5),
        "a consolidated heartbeat of web-2 holding hosts 2 and 3",
        || unit.consolidated_since(crashed, 2, &[2, 3]),
        stay_alive,
    )
    .await;
    let hosts = hosts_json(&web3).await;
    assert_eq!(hosts[0]["group"]["leader"], "web-2", "{hosts:#}");
    assert_eq!(
        hosts[0]["group"]["members"],
        serde_json::json!(["web-2", "web-3"])
    );
    assert_eq!(hosts_json(&web2).await[0]["group"]["mode"], "lead");
    // The crashed host ages out host_dead_after after its last heartbeat.
    wait_for(
        HOST_DEAD_AFTER + Duration::from_secs(2),
        "web-1 to age out at the unit",
        || !unit.alive().contains(&1),
        stay_alive,
    )
    .await;
    assert_eq!(unit.alive(), [2, 3]);
    // A little longer: the survivors stay alive well past host_dead_after.
    let until = Instant::now() + Duration::from_millis(500);
    wait_for(
        Duration::from_secs(1),
        "time to pass",
        || Instant::now() >= until,
        stay_alive,
    )
    .await;

    web2.shutdown().await;
    web3.shutdown().await;
}
