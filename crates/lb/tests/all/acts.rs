//! Operators' acts on a unit's admin API reach the real host agent (in process, on
//! loopback): drain, disable, undrain and capacity, for a whole host or one service;
//! bad requests change nothing; a host that refuses acts, one never heard from and one
//! whose agent stopped each get their own answer.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_agent::api::client::{ApiTarget, request};
use switchyard_agent::daemon::{Agent, AgentOptions};
use switchyard_lb::admin::api::{HostRow, HostsResponse};
use switchyard_lb::{RunningUnit, UnitOptions};

use crate::harness::{
    CLUSTER, SECRET, Scrape, WAIT, eventually, free_udp_port, get_json, loopback0, raw,
};

/// A configuration: unit `lb-1` (health cache) at `control`; services `web` and `api` on
/// pool `shop` of hosts web-1 (id 1), web-2 (id 2) and web-3 (id 3, no agent runs for it).
fn config_text(control: SocketAddr, agent: &str) -> String {
    format!(
        r#"[cluster]
id = "{CLUSTER}"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 100
address = "{ip}"
control_port = {port}
roles = ["forwarder", "classifier", "health-cache"]

[health]
heartbeat_interval = "100ms"
host_dead_after = "5s"
postulate_interval = "100ms"

[agent]
{agent}

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "shop"

[[services]]
name = "api"
vip = "198.51.100.11:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "shop"

[[pools]]
name = "shop"

[[pools.hosts]]
id = 1
name = "web-1"
address = "127.0.0.1:18081"
app = "shop"

[[pools.hosts]]
id = 2
name = "web-2"
address = "127.0.0.1:18082"
app = "shop"

[[pools.hosts]]
id = 3
name = "web-3"
address = "127.0.0.1:18083"
app = "shop"
"#,
        ip = control.ip(),
        port = control.port(),
    )
}

/// A unit and an agent for web-1 and web-2, on loopback (services `web` and `api`).
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) unit: RunningUnit,
    agent: Option<Agent>,
    agent_api: ApiTarget,
}

impl Cluster {
    /// Starts both; `agent_settings` goes into `[agent]`.
    pub(crate) async fn start(agent_settings: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cluster.key"), SECRET).expect("secret");
        // The agent sends to the configured control address: pick a free port for it.
        let control = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let path = dir.path().join("cluster.toml");
        let socket = dir.path().join("agent.sock");
        let agent_settings = format!("socket = \"{}\"\n{agent_settings}", socket.display());
        std::fs::write(&path, config_text(control, &agent_settings)).expect("config");
        let config = switchyard_config::load_file(&path)
            .unwrap_or_else(|d| panic!("test config rejected:\n{d}"));
        let unit = RunningUnit::start(
            &config,
            UnitOptions {
                unit: "lb-1".to_owned(),
                admin: Some(loopback0()),
                control: None,
            },
        )
        .await
        .expect("unit starts");
        let agent = Agent::start(
            &config,
            AgentOptions {
                hosts: vec!["web-1".to_owned(), "web-2".to_owned()],
                listen: Some(loopback0()),
                api: Some(loopback0()),
                socket: Some(socket),
                status: Default::default(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("agent starts: {e:#}"));
        let agent_api = ApiTarget::Tcp(agent.api_addr());
        let cluster = Self {
            dir,
            unit,
            agent: Some(agent),
            agent_api,
        };
        eventually(WAIT, "both hosts cached with two rows each", || async {
            let doc = cluster.hosts().await;
            (doc.hosts.len() == 2 && doc.hosts.iter().all(|h| h.rows.len() == 2)).then_some(())
        })
        .await;
        cluster
    }

    async fn hosts(&self) -> HostsResponse {
        get_json(&self.unit, "/v1/hosts").await
    }

    /// Host `id`'s row of `vip` at the unit.
    async fn row(&self, id: u32, vip: &str) -> HostRow {
        let doc = self.hosts().await;
        let host = doc.hosts.iter().find(|h| h.id == id).expect("host cached");
        host.rows
            .iter()
            .find(|r| r.vip.to_string() == vip)
            .cloned()
            .expect("row cached")
    }

    async fn act(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let target = ApiTarget::Tcp(self.unit.admin_addr());
        let r = request(&target, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        let json = r.json();
        (r.status, json)
    }

    /// The agent's own view of a row.
    async fn agent_row(&self, host: &str, service: &str) -> Value {
        let r = request(
            &self.agent_api,
            "GET",
            &format!("/v1/hosts/{host}/apps/{service}"),
            None,
        )
        .await
        .expect("agent API");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Waits until host `id`'s row of `vip` satisfies `pred` at the unit.
    async fn wait_row(&self, what: &str, id: u32, vip: &str, pred: impl Fn(&HostRow) -> bool) {
        eventually(WAIT, what, || async {
            let row = self.row(id, vip).await;
            pred(&row).then_some(())
        })
        .await;
    }

    pub(crate) async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        self.unit.shutdown().await;
        drop(self.dir);
    }
}

const WEB: &str = "198.51.100.10:80";
const API: &str = "198.51.100.11:80";

fn directive(row: &HostRow) -> (&str, &str) {
    (row.target.as_str(), row.current.as_str())
}

#[tokio::test]
async fn drain_disable_undrain_and_capacity_reach_the_host_through_the_unit() {
    let c = Cluster::start("").await;

    // Drain all of web-1 (by name, no body).
    let (status, body) = c.act("POST", "/v1/hosts/web-1/drain", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["host"], &body["id"], &body["target"], &body["rows"]),
        (&json!("web-1"), &json!(1), &json!("draining"), &json!(2))
    );
    for vip in [WEB, API] {
        c.wait_row("web-1 drained at the unit", 1, vip, |r| {
            directive(r) == ("draining", "draining")
        })
        .await;
    }
    let agent_row = c.agent_row("web-1", "web").await;
    assert_eq!(
        agent_row["directive"],
        json!({"target": "draining", "current": "draining"})
    );
    assert_eq!(directive(&c.row(2, WEB).await), ("active", "active"));

    // Disable only web-2's `api` application (by id, with a service).
    let (status, body) = c
        .act("POST", "/v1/hosts/2/disable", Some(r#"{"service": "api"}"#))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["rows"], &body["service"]),
        (&json!(1), &json!("api"))
    );
    c.wait_row("web-2's api disabled", 2, API, |r| {
        directive(r) == ("inactive", "inactive")
    })
    .await;
    assert_eq!(directive(&c.row(2, WEB).await), ("active", "active"));

    // Capacity of web-2.
    let (status, body) = c
        .act(
            "PUT",
            "/v1/hosts/web-2/capacity",
            Some(r#"{"capacity": 7}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["capacity"], 7);
    for vip in [WEB, API] {
        c.wait_row("web-2's capacity 7", 2, vip, |r| r.capacity == 7)
            .await;
    }

    // Undrain web-1 as the dashboard does: a POST from the page the unit served, with its
    // origin. Another origin is refused.
    let admin = c.unit.admin_addr();
    let (host, own) = (format!("Host: {admin}"), format!("Origin: http://{admin}"));
    let json = "Content-Type: application/json";
    let path = "/v1/hosts/web-1/undrain";
    let (status, _, body) = raw(
        &c.unit,
        "POST",
        path,
        &[&host, json, "Origin: http://localhost:1"],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = raw(&c.unit, "POST", path, &[&host, json, &own]).await;
    assert_eq!(status, 200, "{body}");
    c.wait_row("web-1 active again", 1, WEB, |r| {
        directive(r) == ("active", "active")
    })
    .await;

    // Bad requests get a clear error and change nothing.
    let before = c.hosts().await;
    for (method, path, body, want, says) in [
        (
            "PUT",
            "/v1/hosts/web-2/capacity",
            Some(r#"{"capacity": 100}"#),
            400,
            "out of range",
        ),
        (
            "PUT",
            "/v1/hosts/web-2/capacity",
            Some(r#"{"capacity": -1}"#),
            400,
            "out of range",
        ),
        (
            "PUT",
            "/v1/hosts/web-2/capacity",
            Some("{}"),
            400,
            "must give the capacity",
        ),
        (
            "PUT",
            "/v1/hosts/web-2/capacity",
            Some(r#"{"capacity": "7"}"#),
            400,
            "not a valid act",
        ),
        (
            "POST",
            "/v1/hosts/web-2/drain",
            Some(r#"{"capacity": 5}"#),
            400,
            "does not belong",
        ),
        (
            "POST",
            "/v1/hosts/web-2/drain",
            Some(r#"{"hosts": 1}"#),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/v1/hosts/web-2/drain",
            Some("drain!"),
            400,
            "not a valid act",
        ),
        (
            "POST",
            "/v1/hosts/web-9/drain",
            None,
            404,
            "no configured host",
        ),
        (
            "POST",
            "/v1/hosts/99/drain",
            None,
            404,
            "no configured host",
        ),
        (
            "POST",
            "/v1/hosts/web-2/drain",
            Some(r#"{"service": "mail"}"#),
            404,
            "no configured service",
        ),
        (
            "POST",
            "/v1/hosts/web-3/drain",
            None,
            503,
            "has not been heard from",
        ),
    ] {
        let (status, answer) = c.act(method, path, body).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path} {body:?}: {error}");
    }
    // Give a wrongly applied act time to show, then compare.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = c.hosts().await;
    let rows = |doc: &HostsResponse| -> Vec<(u32, String, String, u8)> {
        doc.hosts
            .iter()
            .flat_map(|h| {
                h.rows
                    .iter()
                    .map(move |r| (h.id, r.vip.to_string(), r.target.clone(), r.capacity))
            })
            .collect()
    };
    assert_eq!(rows(&before), rows(&after));

    // The agent counted the acts it carried out (drain, disable, capacity, undrain).
    let metrics = request(&c.agent_api, "GET", "/metrics", None)
        .await
        .expect("agent metrics");
    let metrics = Scrape::parse(metrics.body);
    assert_eq!(
        metrics.value("switchyard_agent_unit_acts", &[("host_name", "web-1")]),
        Some(2.0),
        "web-1 took a drain and an undrain:\n{}",
        metrics.text
    );

    // The agent stops: the unit says it got no answer (or, once the goodbye cleared the
    // host, that it does not know where the host is).
    let mut c = c;
    if let Some(agent) = c.agent.take() {
        agent.shutdown().await;
    }
    let (status, answer) = c.act("POST", "/v1/hosts/web-1/drain", None).await;
    assert!(
        status == 504 || status == 503,
        "a stopped agent: {status} {answer}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_host_that_takes_no_acts_from_units_answers_409_and_keeps_its_directive() {
    let c = Cluster::start("unit_acts = false").await;
    let (status, body) = c.act("POST", "/v1/hosts/web-1/drain", None).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unit_acts = false") && error.contains("switchyard ctl drain web-1"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(directive(&c.row(1, WEB).await), ("active", "active"));
    let agent_row = c.agent_row("web-1", "web").await;
    assert_eq!(agent_row["directive"]["target"], "active");
    c.stop().await;
}
