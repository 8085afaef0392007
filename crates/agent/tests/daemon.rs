//! The agent daemon in-process on loopback: its local API over TCP and the Unix socket
//! (listing, adding, updating and removing rows, every kind of bad input), health checks and
//! a pid-file service manager driving rows, counters and metrics, and the postulate
//! handshake against a real LB-unit side: a `ConsolidatedCache` driven by a `UdpEndpoint`
//! on 127.0.0.1, i.e. the unit's real state machine over real UDP.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};
use serde_json::{Value, json};
use switchyard_agent::StatusOptions;
use switchyard_agent::api::client::{ApiResponse, ApiTarget, request};
use switchyard_agent::daemon::{Agent, AgentLimits, AgentOptions};
use switchyard_health::{CacheSettings, ConsolidatedCache};
use switchyard_transport::UdpEndpoint;
use switchyard_wire::health::DirectiveState;
use switchyard_wire::{Codec, HostId, MacKey, SenderId, UnitId};
use tokio::task::JoinHandle;

const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e\n";
const CLUSTER: &str = "agent-test";
const UNIT: u32 = 100;

/// A configuration with one health-cache unit at `unit`, hosts `web-1` (id 1) and `web-2`
/// (id 2) behind service `web`, and `extra` appended.
fn config_text(unit: SocketAddr, give_up: &str, extra: &str) -> String {
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
heartbeat_interval = "100ms"
host_dead_after = "1s"
postulate_interval = "100ms"
unit_give_up_after = "{give_up}"

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
capacity = 40

[[pools.hosts]]
id = 2
name = "web-2"
address = "127.0.0.1:18081"
app = "shop"
{extra}
"#,
        ip = unit.ip(),
        port = unit.port(),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    agent: Option<Agent>,
    tcp: ApiTarget,
    unix: ApiTarget,
}

impl Fixture {
    async fn start(text: &str, hosts: &[&str]) -> Self {
        Self::start_with(text, hosts, AgentLimits::default()).await
    }

    async fn start_with(text: &str, hosts: &[&str], limits: AgentLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.key"), SECRET).unwrap();
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, text).unwrap();
        let config = switchyard_config::load_file(&file).unwrap_or_else(|d| panic!("{d}"));
        let socket = dir.path().join("run").join("agent.sock");
        let options = AgentOptions {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            api: Some("127.0.0.1:0".parse().unwrap()),
            socket: Some(socket.clone()),
            status: StatusOptions {
                service_poll: Duration::from_millis(50),
                ..StatusOptions::default()
            },
        };
        let agent = Agent::start_with_limits(&config, options, limits)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        Self {
            tcp: ApiTarget::Tcp(agent.api_addr()),
            unix: ApiTarget::Unix(socket),
            dir,
            agent: Some(agent),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> ApiResponse {
        let body = body.map(|b| b.to_string());
        request(&self.tcp, method, path, body.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    async fn row(&self, host: &str, app: &str) -> Value {
        self.get(&format!("/v1/hosts/{host}/apps/{app}")).await
    }

    /// Polls row `app` until `pred` holds (at most `within`).
    async fn wait_row(
        &self,
        host: &str,
        app: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let row = self.row(host, app).await;
            if pred(&row) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "row never reached the state: {row:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/v1/counters` until `pred` holds for the first host (at most 10 s).
    async fn wait_counters(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counters = self.get("/v1/counters").await;
            if pred(&counters["hosts"][0]) {
                return counters;
            }
            assert!(
                Instant::now() < deadline,
                "counters never reached the state: {counters:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("agent.sock")
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
    }
}

/// The unit side: a consolidated cache on a real UDP endpoint, replying to each host at the
/// datagram's source address.
struct Unit {
    addr: SocketAddr,
    cache: Arc<Mutex<ConsolidatedCache>>,
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
        let cache = Arc::new(Mutex::new(
            ConsolidatedCache::new(CacheSettings::new(UnitId(UNIT)), Instant::now()).unwrap(),
        ));
        let shared = Arc::clone(&cache);
        let task = tokio::spawn(async move {
            let mut hosts: BTreeMap<SenderId, SocketAddr> = BTreeMap::new();
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
                        hosts.insert(envelope.sender, received.from);
                        let _ = shared.lock().unwrap().handle(Instant::now(), envelope.sender, &envelope.message);
                    }
                    () = sleep => shared.lock().unwrap().handle_timeout(Instant::now()),
                }
                let mut out = Vec::new();
                {
                    let mut cache = shared.lock().unwrap();
                    while let Some(t) = cache.poll_transmit() {
                        out.push(t);
                    }
                }
                for t in out {
                    if let Some(to) = hosts.get(&t.to) {
                        let _ = endpoint.send(*to, &t.message).await;
                    }
                }
            }
        });
        Self { addr, cache, task }
    }

    /// The cached directive and whether the host is in sync, for host `host`'s only row.
    fn cached(&self, host: u32) -> Option<(bool, Vec<DirectiveState>)> {
        let cache = self.cache.lock().unwrap();
        let view = cache.host(HostId(host))?;
        Some((
            view.in_sync,
            view.table.rows().map(|r| r.directive.current).collect(),
        ))
    }

    async fn wait_in_sync(&self, host: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .cached(host)
            .is_some_and(|(s, rows)| s && !rows.is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "host {host} never in sync at the unit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP port nobody answers on (bound and never read while the test runs).
fn silent_unit() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// The fields of every row that requests must not change when they fail.
fn state_of(hosts: &Value) -> Vec<Value> {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["rows"].as_array().unwrap().clone())
        .map(|r| {
            json!([
                r["name"],
                r["present"],
                r["health"],
                r["load"],
                r["capacity"],
                r["directive"],
                r["endpoint"]
            ])
        })
        .collect()
}

#[tokio::test]
async fn rows_are_listed_over_tcp_and_the_unix_socket() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let socket_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(f.socket()).unwrap().permissions(),
    );
    assert_eq!(socket_mode & 0o777, 0o660);
    for target in [&f.tcp, &f.unix] {
        let r = request(target, "GET", "/v1/hosts", None).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let hosts = r.json();
        assert_eq!(hosts.as_array().unwrap().len(), 1);
        let host = &hosts[0];
        assert_eq!(host["name"], "web-1");
        assert_eq!(host["id"], 1);
        assert_eq!(host["units"][0]["name"], "lb-1");
        let row = &host["rows"][0];
        assert_eq!(row["name"], "web");
        assert_eq!(row["origin"], "config");
        assert_eq!(row["present"], true);
        assert_eq!(row["vip"], "198.51.100.10:80");
        assert_eq!(row["endpoint"], "127.0.0.1:18080");
        assert_eq!(row["info"], "shop");
        assert_eq!(row["health"], "unknown", "no check, no report yet");
        assert_eq!(row["capacity"], 40);
        assert_eq!(
            row["directive"],
            json!({"target": "active", "current": "active"})
        );
    }
    let host = f.get("/v1/hosts/web-1").await;
    assert_eq!(host["rows"][0]["name"], "web");
    let row = f.row("web-1", "web").await;
    assert_eq!(row["name"], "web");
    f.stop().await;
}

#[tokio::test]
async fn applications_add_update_and_remove_rows() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let r = f
        .call(
            "POST",
            "/v1/hosts/web-1/apps",
            Some(
                json!({"name": "api", "vip": "198.51.100.10:8080", "protocol": "tcp",
                        "endpoint": "127.0.0.1:18090", "info": "/api", "capacity": 30}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let row = r.json();
    assert_eq!(row["origin"], "api");
    assert_eq!(row["present"], true);
    assert_eq!(row["health"], "unknown");
    assert_eq!(row["capacity"], 30);
    assert_eq!(row["published"], true, "published before the answer");

    let r = f
        .call(
            "PUT",
            "/v1/hosts/web-1/apps/api/status",
            Some(json!({"health": "healthy", "load": 60, "capacity": 70})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = r.json();
    assert_eq!(row["health"], "healthy");
    assert_eq!(row["capacity"], 70);
    assert_eq!(row["load"], 60, "the first load sample is taken as is");
    // A small move stays within the hysteresis.
    let r = f
        .call(
            "PUT",
            "/v1/hosts/web-1/apps/api/status",
            Some(json!({"load": 62})),
        )
        .await;
    assert_eq!(r.json()["load"], 60);
    // The configured row's application can report too.
    let r = f
        .call(
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(json!({"health": "failing"})),
        )
        .await;
    assert_eq!(r.json()["health"], "failing");

    let hosts = f.get("/v1/hosts").await;
    let names: Vec<&str> = hosts[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "api"]);
    assert_eq!(hosts[0]["published_rows"], 2);

    let r = f.call("DELETE", "/v1/hosts/web-1/apps/api", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["present"], false);
    let r = f.call("GET", "/v1/hosts/web-1/apps/api", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(f.get("/v1/hosts").await[0]["published_rows"], 1);
    // The name is free again.
    let r = f
        .call(
            "POST",
            "/v1/hosts/web-1/apps",
            Some(
                json!({"name": "api", "vip": "198.51.100.10:8080", "protocol": "udp",
                        "endpoint": "127.0.0.1:18090", "health": "healthy", "load": 10}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["capacity"], 50, "default capacity");
    assert_eq!(r.json()["protocol"], "udp");
    f.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let add = json!({"name": "api", "vip": "198.51.100.10:8080", "protocol": "tcp",
                     "endpoint": "127.0.0.1:18090"});
    assert_eq!(
        f.call("POST", "/v1/hosts/web-1/apps", Some(add.clone()))
            .await
            .status,
        201
    );
    let before = state_of(&f.get("/v1/hosts").await);

    let long_info = json!({"name": "x", "vip": "10.0.0.1:80", "protocol": "tcp",
                           "endpoint": "127.0.0.1:1", "info": "i".repeat(2000)})
    .to_string();
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("GET", "/v1/hosts/nope", None, 404, "nope"),
        ("GET", "/v1/hosts/web-1/apps/nope", None, 404, "nope"),
        ("GET", "/v1/nothing/here", None, 404, "route"),
        (
            "PUT",
            "/v1/hosts/nope/apps/web/status",
            Some(r#"{"health":"healthy"}"#),
            404,
            "nope",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/nope/status",
            Some(r#"{"health":"healthy"}"#),
            404,
            "nope",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"load": 101}"#),
            400,
            "load 101",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"load": -1}"#),
            400,
            "load -1",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"capacity": 100}"#),
            400,
            "capacity 100",
        ),
        // Nothing applies when one field is bad.
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"health":"healthy","capacity": 100}"#),
            400,
            "capacity",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"health":"great"}"#),
            400,
            "unknown variant",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some(r#"{"helth":"healthy"}"#),
            400,
            "unknown field",
        ),
        (
            "PUT",
            "/v1/hosts/web-1/apps/web/status",
            Some("{not json"),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(r#"{"name":"x"}"#),
            400,
            "missing field",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(r#"{"name":"x","vip":"nope","protocol":"tcp","endpoint":"127.0.0.1:1"}"#),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(r#"{"name":"x","vip":"10.0.0.1:80","protocol":"sctp","endpoint":"127.0.0.1:1"}"#),
            400,
            "unknown variant",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(
                r#"{"name":"x","vip":"10.0.0.1:80","protocol":"tcp","endpoint":"127.0.0.1:1","capacity":100}"#,
            ),
            400,
            "capacity 100",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(r#"{"name":"","vip":"10.0.0.1:80","protocol":"tcp","endpoint":"127.0.0.1:1"}"#),
            400,
            "name",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(&long_info),
            400,
            "info",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(r#"{"name":"web","vip":"10.0.0.1:80","protocol":"tcp","endpoint":"127.0.0.1:1"}"#),
            409,
            "already has a row named",
        ),
        (
            "POST",
            "/v1/hosts/web-1/apps",
            Some(
                r#"{"name":"other","vip":"198.51.100.10:8080","protocol":"tcp","endpoint":"127.0.0.1:18090"}"#,
            ),
            409,
            "already has this vip",
        ),
        (
            "DELETE",
            "/v1/hosts/web-1/apps/web",
            None,
            409,
            "configuration",
        ),
        ("DELETE", "/v1/hosts/web-1/apps/nope", None, 404, "nope"),
        (
            "POST",
            "/v1/hosts/web-1/apps/web/explode",
            None,
            404,
            "unknown command",
        ),
        (
            "POST",
            "/v1/hosts/web-1/explode",
            None,
            404,
            "unknown command",
        ),
        ("POST", "/v1/hosts/nope/drain", None, 404, "nope"),
        ("POST", "/v1/hosts/web-1/apps/nope/drain", None, 404, "nope"),
    ];
    for (method, path, body, status, needle) in cases {
        let r = request(&f.unix, method, path, body).await.unwrap();
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.contains(needle),
            "{method} {path}: error {error:?} lacks {needle:?}"
        );
    }
    assert_eq!(state_of(&f.get("/v1/hosts").await), before);
    f.stop().await;
}

#[tokio::test]
async fn a_drain_becomes_current_once_the_unit_agrees() {
    let unit = Unit::start().await;
    let f = Fixture::start(&config_text(unit.addr, "60s", ""), &["web-1", "web-2"]).await;
    unit.wait_in_sync(1).await;
    unit.wait_in_sync(2).await;
    assert_eq!(unit.cached(1).unwrap().1, [DirectiveState::Active]);

    let r = f.call("POST", "/v1/hosts/web-1/apps/web/drain", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = r.json();
    assert_eq!(
        row["directive"],
        json!({"target": "draining", "current": "active"})
    );
    assert_eq!(row["handshake"]["target"], "draining");
    assert_eq!(row["handshake"]["waiting"], json!(["lb-1"]));

    let row = f
        .wait_row("web-1", "web", Duration::from_secs(10), |r| {
            r["directive"]["current"] == "draining"
        })
        .await;
    assert_eq!(row["directive"]["target"], "draining");
    assert_eq!(row["handshake"], Value::Null, "handshake done");
    // The unit holds the new current state too, and web-2 was not touched.
    let deadline = Instant::now() + Duration::from_secs(2);
    while unit.cached(1).unwrap().1 != [DirectiveState::Draining] {
        assert!(Instant::now() < deadline, "unit never saw current draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.row("web-2", "web").await["directive"]["current"],
        "active"
    );

    // A whole host: disable web-2, then undrain web-1.
    let r = f.call("POST", "/v1/hosts/web-2/disable", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()[0]["directive"],
        json!({"target": "inactive", "current": "active"})
    );
    f.wait_row("web-2", "web", Duration::from_secs(10), |r| {
        r["directive"]["current"] == "inactive"
    })
    .await;
    f.call("POST", "/v1/hosts/web-1/undrain", None).await;
    f.wait_row("web-1", "web", Duration::from_secs(10), |r| {
        r["directive"]["current"] == "active"
    })
    .await;

    let counters = f.get("/v1/counters").await;
    let web1 = &counters["hosts"][0];
    assert_eq!(web1["host"], "web-1");
    assert!(
        web1["protocol"]["handshakes_completed"].as_u64().unwrap() >= 2,
        "{web1:#}"
    );
    assert!(
        web1["protocol"]["snapshots_served"].as_u64().unwrap() >= 1,
        "{web1:#}"
    );
    assert!(
        web1["transport"]["received"].as_u64().unwrap() >= 1,
        "{web1:#}"
    );
    assert_eq!(web1["protocol"]["units_given_up"], 0);

    // Shutdown says goodbye: the unit clears both hosts at once.
    f.stop().await;
    let start = Instant::now();
    while unit.cached(1).is_some() || unit.cached(2).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "hosts not cleared by goodbye"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("hosts cleared {:?} after shutdown", start.elapsed());
    // Cleared by the goodbyes, not by ageing out.
    let counters = unit.cache.lock().unwrap().counters().clone();
    assert_eq!(counters.goodbyes, 2);
    assert_eq!(counters.age_outs, 0);
}

#[tokio::test]
async fn a_drain_with_every_unit_silent_is_blocked_not_completed() {
    // Give-up time shorter than the wait: a lone silent unit must not be given up (nobody
    // else answers), so the handshake reports itself blocked and current never moves.
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "1s", ""), &["web-1"]).await;
    let r = f.call("POST", "/v1/hosts/web-1/drain", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = f
        .wait_row("web-1", "web", Duration::from_secs(15), |r| {
            assert_eq!(
                r["directive"],
                json!({"target": "draining", "current": "active"})
            );
            r["handshake"]["blocked"] == json!(true)
        })
        .await;
    assert_eq!(row["handshake"]["given_up"], json!([]));
    assert_eq!(row["handshake"]["agreed"], json!([]));
    let counters = f.call("GET", "/v1/counters", None).await;
    assert!(
        counters.body.contains("\"handshakes_blocked\":"),
        "{}",
        counters.body
    );
    f.stop().await;
}

#[tokio::test]
async fn a_drain_stays_pending_while_a_unit_is_silent() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let r = f.call("POST", "/v1/hosts/web-1/drain", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()[0]["directive"],
        json!({"target": "draining", "current": "active"})
    );
    // Rounds are resent while the unit stays silent, and current never moves.
    let start = Instant::now();
    let row = f
        .wait_row("web-1", "web", Duration::from_secs(10), |r| {
            assert_eq!(
                r["directive"],
                json!({"target": "draining", "current": "active"})
            );
            r["handshake"]["round"].as_u64().unwrap_or(0) >= 3
        })
        .await;
    println!("round 3 after {:?}", start.elapsed());
    let handshake = &row["handshake"];
    assert_eq!(handshake["waiting"], json!(["lb-1"]));
    assert_eq!(handshake["agreed"], json!([]));
    assert_eq!(handshake["given_up"], json!([]));
    f.stop().await;
}

#[tokio::test]
async fn checks_and_the_service_manager_drive_rows() {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let (_silent, unit) = silent_unit();
    // A second service with a tcp check on the listener, and web-2 managed by a pid file.
    let extra = format!(
        r#"pidfile = "app.pid"

[[health_checks]]
name = "tcp"
kind = "tcp"
interval = "100ms"
timeout = "50ms"
rise = 1
fall = 1

[[services]]
name = "checked"
vip = "198.51.100.11:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "checked"

[[pools]]
name = "checked"
health_check = "tcp"

[[pools.hosts]]
id = 3
name = "app-3"
address = "{app_addr}"
app = "shop"
"#
    );
    let text = config_text(unit, "60s", &extra);
    let f = Fixture::start(&text, &["app-3", "web-2"]).await;

    // The check probes the listener: healthy; once it is gone: failing.
    let row = f
        .wait_row("app-3", "checked", Duration::from_secs(10), |r| {
            r["health"] == "healthy"
        })
        .await;
    assert_eq!(row["check"]["health"], "healthy");
    drop(app);
    let row = f
        .wait_row("app-3", "checked", Duration::from_secs(10), |r| {
            r["health"] == "failing"
        })
        .await;
    assert!(!row["check"]["detail"].as_str().unwrap().is_empty());

    // No pid file: web-2's row is absent, with the reason.
    let row = f
        .wait_row("web-2", "web", Duration::from_secs(10), |r| {
            r["service"]["state"] == "down"
        })
        .await;
    assert_eq!(row["present"], false);
    assert_eq!(row["directive"]["current"], Value::Null);
    // An operator's drain while it is down is remembered.
    let r = f.call("POST", "/v1/hosts/web-2/apps/web/drain", None).await;
    assert_eq!(
        r.json()["directive"],
        json!({"target": "draining", "current": null})
    );
    // The process runs: the row appears (still draining).
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(f.dir.path().join("app.pid"), format!("{}\n", child.id())).unwrap();
    let row = f
        .wait_row("web-2", "web", Duration::from_secs(10), |r| {
            r["present"] == true
        })
        .await;
    assert_eq!(row["service"]["state"], "up");
    assert_eq!(row["directive"]["target"], "draining");
    assert_eq!(row["directive"]["current"], "active");
    assert_eq!(f.get("/v1/hosts/web-2").await["published_rows"], 1);
    // It dies: the row goes again.
    child.kill().unwrap();
    child.wait().unwrap();
    f.wait_row("web-2", "web", Duration::from_secs(10), |r| {
        r["present"] == false
    })
    .await;
    assert_eq!(f.get("/v1/hosts/web-2").await["published_rows"], 0);
    f.stop().await;
}

#[tokio::test]
async fn counters_and_metrics_are_exposed() {
    let (silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let start = Instant::now();
    f.wait_counters(|host| {
        host["protocol"]["heartbeats_sent"].as_u64().unwrap() >= 2
            && host["transport"]["sent"].as_u64().unwrap() >= 2
    })
    .await;
    println!("two heartbeats after {:?}", start.elapsed());
    // A forged datagram at the agent's endpoint is counted and changes nothing.
    let listen = f.get("/v1/hosts/web-1").await["listen"]
        .as_str()
        .unwrap()
        .parse::<SocketAddr>()
        .unwrap();
    silent.send_to(b"SYnot a frame at all", listen).unwrap();
    let counters = f
        .wait_counters(|host| host["transport"]["rejected_total"].as_u64().unwrap() >= 1)
        .await;
    let host = &counters["hosts"][0];
    assert!(
        host["protocol"]["heartbeats_sent"].as_u64().unwrap() >= 2,
        "{host:#}"
    );
    assert!(host["transport"]["sent"].as_u64().unwrap() >= 2, "{host:#}");
    assert_eq!(host["transport"]["rejected_total"], 1, "{host:#}");
    assert_eq!(host["agent"]["rows"], 1);

    // The same through /metrics, read by an OpenMetrics parser.
    let r = f.call("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let metrics = openmetrics_parser::openmetrics::parse_openmetrics(&r.body)
        .unwrap_or_else(|e| panic!("not OpenMetrics ({e:?}):\n{}", r.body));
    let web1 = [("host", "1"), ("host_name", "web-1")];
    let family = |name: &str, kind: OpenMetricsType, labels: &[&str]| {
        let family = metrics
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no {name}:\n{}", r.body));
        assert_eq!(family.family_type, kind, "{name}");
        assert_eq!(family.get_label_names(), labels, "{name}");
        family
    };
    // The sum of the samples of `name` whose labels include `want`.
    let value = |name: &str, kind: OpenMetricsType, labels: &[&str], want: &[(&str, &str)]| {
        family(name, kind, labels)
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().expect("labels");
                want.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|s| match &s.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(n) => n.as_f64(),
                other => panic!("{name}: {other:?}"),
            })
            .sum::<f64>()
    };
    let host = ["host", "host_name"];
    assert!(
        value(
            "switchyard_agent_heartbeats_sent",
            OpenMetricsType::Counter,
            &host,
            &web1
        ) >= 2.0
    );
    assert_eq!(
        value(
            "switchyard_agent_rows",
            OpenMetricsType::Gauge,
            &host,
            &web1
        ),
        1.0
    );
    let rejected = ["host", "host_name", "reason"];
    assert_eq!(
        value(
            "switchyard_agent_transport_rejected",
            OpenMetricsType::Counter,
            &rejected,
            &web1
        ),
        1.0
    );
    let by_kind = ["host", "host_name", "kind"];
    assert!(
        value(
            "switchyard_agent_messages_sent",
            OpenMetricsType::Counter,
            &by_kind,
            &[("host", "1"), ("kind", "heartbeat")]
        ) >= 2.0
    );
    // Every kind has its series from the start.
    assert_eq!(
        value(
            "switchyard_agent_messages_received",
            OpenMetricsType::Counter,
            &by_kind,
            &[("host", "1"), ("kind", "postulate_wrong")]
        ),
        0.0
    );
    family(
        "switchyard_agent_handshakes_completed",
        OpenMetricsType::Counter,
        &host,
    );
    family(
        "switchyard_agent_transport_sent_bytes",
        OpenMetricsType::Counter,
        &host,
    );
    f.stop().await;
}

#[tokio::test]
async fn shutdown_removes_the_socket_and_a_stale_socket_is_replaced() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let socket = f.socket();
    assert!(socket.exists());
    let dir = f.dir.path().to_owned();
    // A second agent on the same socket is refused while the first runs.
    let config = {
        let file = dir.join("switchyard.toml");
        switchyard_config::load_file(&file).unwrap()
    };
    let second = Agent::start(
        &config,
        AgentOptions {
            hosts: vec!["web-1".into()],
            listen: Some("127.0.0.1:0".parse().unwrap()),
            api: Some("127.0.0.1:0".parse().unwrap()),
            socket: Some(socket.clone()),
            status: StatusOptions::default(),
        },
    )
    .await;
    assert!(format!("{:#}", second.unwrap_err()).contains("in use"));
    let Fixture {
        dir: _dir, agent, ..
    } = f;
    agent.unwrap().shutdown().await;
    assert!(!socket.exists(), "socket removed on shutdown");

    // A stale socket (nobody listening) is replaced; anything else is not.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let listener = switchyard_agent::api::bind_unix(&socket).unwrap();
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "a file").unwrap();
    let e = switchyard_agent::api::bind_unix(&socket).unwrap_err();
    assert!(format!("{e:#}").contains("not a socket"), "{e:#}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "a file");
}

#[tokio::test]
async fn start_refuses_unknown_hosts_and_a_non_loopback_api() {
    let (_silent, unit) = silent_unit();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.key"), SECRET).unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, config_text(unit, "60s", "")).unwrap();
    let config = switchyard_config::load_file(&file).unwrap();
    let options = |hosts: &[&str], api: &str| AgentOptions {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        api: Some(api.parse().unwrap()),
        socket: Some(dir.path().join("a.sock")),
        status: StatusOptions::default(),
    };
    let e = Agent::start(&config, options(&["nope"], "127.0.0.1:0"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("no host named \"nope\""), "{e:#}");
    let e = Agent::start(&config, options(&["web-1", "web-1"], "127.0.0.1:0"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("twice"), "{e:#}");
    let e = Agent::start(&config, options(&["web-1"], "0.0.0.0:0"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("not a loopback address"), "{e:#}");
    let e = Agent::start(&config, options(&[], "127.0.0.1:0"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("--host"), "{e:#}");
    assert!(!Path::new(&dir.path().join("a.sock")).exists());
}

/// A request the API must refuse: TCP only, method, path, headers, status, message part.
type Refused<'a> = (bool, &'a str, &'a str, Vec<&'a str>, u16, &'a str);

/// One raw HTTP/1.1 exchange with exactly `headers`: the status and the body as JSON.
async fn raw(target: &ApiTarget, method: &str, path: &str, headers: &[&str]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    let mut answer = Vec::new();
    match target {
        ApiTarget::Tcp(addr) => {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(text.as_bytes()).await.unwrap();
            s.read_to_end(&mut answer).await.unwrap();
        }
        ApiTarget::Unix(path) => {
            let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
            s.write_all(text.as_bytes()).await.unwrap();
            s.read_to_end(&mut answer).await.unwrap();
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_refuses_web_pages_and_untyped_changes() {
    let (_silent, unit) = silent_unit();
    let f = Fixture::start(&config_text(unit, "60s", ""), &["web-1"]).await;
    let before = state_of(&f.get("/v1/hosts").await);
    let port = match &f.tcp {
        ApiTarget::Tcp(addr) => addr.port(),
        ApiTarget::Unix(_) => unreachable!(),
    };
    let json = "Content-Type: application/json";
    let local = "Host: localhost";
    let drain = "/v1/hosts/web-1/drain";
    let evil_host = format!("Host: evil.example:{port}");
    // (TCP only, method, path, headers, status, message)
    let refused: [Refused<'_>; 6] = [
        // A state change without the JSON type, body or not, over either transport.
        (
            false,
            "POST",
            drain,
            vec![local],
            415,
            "Content-Type: application/json",
        ),
        (
            false,
            "DELETE",
            "/v1/hosts/web-1/apps/web",
            vec![local, "Content-Type: text/plain"],
            415,
            "Content-Type",
        ),
        // A web page's request: an Origin header, even on a read.
        (
            false,
            "POST",
            drain,
            vec![local, json, "Origin: https://evil.example"],
            403,
            "Origin",
        ),
        (
            false,
            "GET",
            "/v1/hosts",
            vec![local, "Origin: null"],
            403,
            "web pages",
        ),
        // DNS rebinding: a name that is not localhost (browsers cannot open the socket).
        (
            true,
            "POST",
            drain,
            vec![&evil_host, json],
            403,
            "evil.example",
        ),
        (
            true,
            "GET",
            "/v1/counters",
            vec!["Host: 192.0.2.1"],
            403,
            "loopback",
        ),
    ];
    for target in [&f.tcp, &f.unix] {
        let tcp = matches!(target, ApiTarget::Tcp(_));
        for (tcp_only, method, path, headers, status, message) in &refused {
            if *tcp_only && !tcp {
                continue;
            }
            let (got, body) = raw(target, method, path, headers).await;
            assert_eq!(got, *status, "{method} {path} {headers:?}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(message),
                "{method} {path}: {error:?} lacks {message:?}"
            );
        }
    }
    assert_eq!(
        state_of(&f.get("/v1/hosts").await),
        before,
        "a refused request changed state"
    );

    // What curl sends works: over TCP with the loopback address or localhost, over the
    // socket with Host: localhost or none at all.
    let loopback = format!("Host: 127.0.0.1:{port}");
    let (status, body) = raw(&f.tcp, "POST", drain, &[&loopback, json]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["directive"]["target"], "draining");
    let (status, body) = raw(&f.unix, "POST", "/v1/hosts/web-1/undrain", &[local, json]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["directive"]["target"], "active");
    let (status, body) = raw(&f.unix, "GET", "/v1/hosts", &[]).await;
    assert_eq!(status, 200, "{body}");
    // curl --unix-socket $SOCK http://agent/... sends Host: agent.
    let (status, body) = raw(&f.unix, "GET", "/v1/hosts", &["Host: agent"]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw(&f.tcp, "GET", "/v1/hosts", &["Host: [::1]:9181"]).await;
    assert_eq!(status, 200);
    f.stop().await;
}

#[tokio::test]
async fn rows_added_through_the_api_are_capped_per_host() {
    let (_silent, unit) = silent_unit();
    let limits = AgentLimits {
        api_rows_per_host: 2,
    };
    let f = Fixture::start_with(&config_text(unit, "60s", ""), &["web-1"], limits).await;
    let row = |name: &str, port: u16| {
        json!({
            "name": name,
            "vip": "198.51.100.20:80",
            "protocol": "tcp",
            "endpoint": format!("127.0.0.1:{port}"),
        })
    };
    // The configured row does not count.
    for (name, port) in [("a", 19001), ("b", 19002)] {
        let r = f
            .call("POST", "/v1/hosts/web-1/apps", Some(row(name, port)))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let before = state_of(&f.get("/v1/hosts").await);
    let r = f
        .call("POST", "/v1/hosts/web-1/apps", Some(row("c", 19003)))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("2 rows added through the API"), "{error}");
    assert_eq!(state_of(&f.get("/v1/hosts").await), before);
    // Removing one makes room again.
    let r = f.call("DELETE", "/v1/hosts/web-1/apps/a", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f
        .call("POST", "/v1/hosts/web-1/apps", Some(row("c", 19003)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        switchyard_agent::api::validate::MAX_API_ROWS_PER_HOST,
        4096,
        "docs/AGENT.md states the default limit"
    );
    f.stop().await;
}
