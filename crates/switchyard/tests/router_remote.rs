//! A router-only unit fed by a health-cache unit over UDP, end to end on real processes on
//! loopback (no namespaces, no root): `switchyard lb` as `lb-1` (health-cache role only) and
//! as `lb-2` (router role only), three `switchyard agent`s probing three keep-alive HTTP
//! applications that name themselves, and a client sending requests to lb-2's listener.
//!
//! lb-2 asks lb-1 for affinity allotments (`AffinityAllotmentRequest`) every quarter
//! `percentage_duration` (1 s here) and builds its backends from the answers:
//!
//! - requests spread by the allotment: a host whose capacity drops to a tenth gets about a
//!   tenth of the others' share;
//! - a host drained through its agent gets no new client, while a client whose affinity
//!   cookie names it keeps reaching it (it is listed as draining, not left out);
//! - a host whose application stops (its agent's check fails) or whose agent dies (it ages
//!   out of lb-1's cache) is down and gets no request;
//! - when lb-1 stops, lb-2 keeps the last allotments through the grace period (two more
//!   durations), then falls back to the static configuration with a warning, serving every
//!   request; when lb-1 is back, lb-2 follows its allotments again.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cluster::block_on;
use support::http::{Client, NamedApp, requests};
use support::local::{Proc, field, free_tcp_port, free_udp_port};
use support::scrape::Scrape;
use support::wait::{hold_for, wait_until};
use switchyard_agent::api::client::{ApiTarget, request};

const SECRET: &str = "switchyard router remote tests: not a production secret";
const COOKIE: &str = "SYID";
const READY: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(15);
const HOSTS: usize = 3;

/// The configuration: lb-1 (health cache, control at `control`), lb-2 (router, listener at
/// `listener`), pool `web` of the applications at `apps` (`web-1`…, ids 101…, capacity 50,
/// HTTP check every 250 ms).
fn config_text(control: u16, listener: u16, apps: &[std::net::SocketAddr]) -> String {
    let mut text = format!(
        r#"[cluster]
id = "router-remote-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["health-cache"]
control_port = {control}

[[cluster.units]]
name = "lb-2"
id = 2
address = "127.0.0.2"
roles = ["router"]

[health]
heartbeat_interval = "100ms"
host_dead_after = "1s"
percentage_duration = "1s"

[[listeners]]
name = "web-http"
address = "127.0.0.1:{listener}"
protocol = "http"

[[services]]
name = "web-http"
vip = "127.0.0.1:{listener}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"
affinity = {{ kind = "cookie", cookie = "{COOKIE}", timeout = "10m" }}

[[pools]]
name = "web"
health_check = "app-http"

[[health_checks]]
name = "app-http"
kind = "http"
path = "/healthz"
expect_status = 200
body_contains = "ok"
interval = "250ms"
timeout = "200ms"
rise = 2
fall = 2
"#
    );
    for (k, app) in apps.iter().enumerate() {
        text.push_str(&format!(
            "\n[[pools.hosts]]\nid = {}\nname = \"web-{}\"\naddress = \"{app}\"\napp = \"shop\"\ncapacity = 50\n",
            101 + k,
            k + 1
        ));
    }
    text
}

/// A pool host at lb-2: name, state, weight.
type Backend = (String, String, u64);

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    listener: std::net::SocketAddr,
    apps: Vec<NamedApp>,
    agents: Vec<Proc>,
    health: Option<Proc>,
    router: Proc,
    router_admin: std::net::SocketAddr,
}

fn start_lb(config: &Path, unit: &str) -> (Proc, std::net::SocketAddr) {
    let mut lb = Proc::spawn(
        unit,
        [
            "lb".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--unit".as_ref(),
            unit.as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    );
    let ready = lb.wait_for_line("lb ready", 0, READY);
    let admin = field(&ready, "admin");
    (lb, admin)
}

fn agent_socket(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("agent-{k}.sock"))
}

fn start_agent(dir: &Path, config: &Path, k: usize) -> Proc {
    let host = format!("web-{}", k + 1);
    let socket = agent_socket(dir, k);
    let mut agent = Proc::spawn(
        &format!("agent of {host}"),
        [
            "agent".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--host".as_ref(),
            host.as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--api".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
        ],
    );
    agent.wait_for_line("agent ready", 0, READY);
    agent
}

impl Setup {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cluster.key"), SECRET).expect("secret");
        let apps: Vec<NamedApp> = (0..HOSTS)
            .map(|k| {
                NamedApp::start(
                    None,
                    "127.0.0.1:0".parse().expect("addr"),
                    &format!("web-{}", k + 1),
                )
            })
            .collect();
        let addrs: Vec<_> = apps.iter().map(NamedApp::addr).collect();
        let listener_port = free_tcp_port();
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, config_text(free_udp_port(), listener_port, &addrs))
            .expect("config");
        let (health, _) = start_lb(&config, "lb-1");
        let agents = (0..HOSTS)
            .map(|k| start_agent(dir.path(), &config, k))
            .collect();
        let (router, router_admin) = start_lb(&config, "lb-2");
        Self {
            listener: std::net::SocketAddr::from(([127, 0, 0, 1], listener_port)),
            dir,
            config,
            apps,
            agents,
            health: Some(health),
            router,
            router_admin,
        }
    }

    /// lb-2's `GET /v1/router`.
    fn view(&self) -> Result<serde_json::Value, String> {
        block_on(switchyard_lb::admin::client::get_json::<serde_json::Value>(
            self.router_admin,
            "/v1/router",
            Duration::from_secs(3),
        ))
        .map_err(|e| format!("GET /v1/router: {e}"))
    }

    /// lb-2's `/metrics`.
    fn metrics(&self) -> Scrape {
        let r = block_on(switchyard_lb::admin::client::get(
            self.router_admin,
            "/metrics",
            Duration::from_secs(3),
        ))
        .expect("GET /metrics");
        Scrape::parse("lb-2", r.status, r.content_type.as_deref(), r.text())
    }

    /// lb-2's `switchyard_router_backend_source` of `source` (1 for the current one).
    fn backend_source(&self, source: &str) -> f64 {
        self.metrics().value(
            "switchyard_router_backend_source",
            &[("unit", "lb-2"), ("source", source)],
        )
    }

    /// lb-2's source and pool `web` as (name, state, weight) per host.
    fn backends(&self) -> Result<(String, Vec<Backend>), String> {
        let view = self.view()?;
        let web = view["pools"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "web"))
            .ok_or_else(|| format!("no pool web in {view}"))?;
        let hosts = web["backends"]
            .as_array()
            .ok_or("no backends")?
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap_or("?").to_owned(),
                    b["state"].as_str().unwrap_or("?").to_owned(),
                    b["weight"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        Ok((view["source"].as_str().unwrap_or("?").to_owned(), hosts))
    }

    /// Waits until lb-2 takes its backends from `source` with these states.
    #[track_caller]
    fn wait_states(&self, what: &str, source: &str, want: [&str; HOSTS]) -> Vec<Backend> {
        wait_until(what, WAIT, || {
            let (got_source, hosts) = self.backends()?;
            let states: Vec<&str> = hosts.iter().map(|(_, s, _)| s.as_str()).collect();
            if got_source == source && states == want {
                Ok(hosts)
            } else {
                Err(format!("source {got_source}: {hosts:?}"))
            }
        })
        .0
    }

    /// A request to host `k`'s agent's local API that must answer 2xx.
    #[track_caller]
    fn agent(&self, k: usize, method: &str, path: &str, body: Option<&str>) {
        let target = ApiTarget::Unix(agent_socket(self.dir.path(), k));
        let answer = block_on(request(&target, method, path, body))
            .unwrap_or_else(|e| panic!("agent {k}: {method} {path}: {e:#}"));
        assert!(
            (200..300).contains(&answer.status),
            "agent {k}: {method} {path} answered {}: {}",
            answer.status,
            answer.body
        );
    }

    #[track_caller]
    fn requests(
        &self,
        n: usize,
        keep_alive: bool,
        cookie: Option<&str>,
    ) -> BTreeMap<String, usize> {
        requests(self.listener, n, keep_alive, cookie)
            .unwrap_or_else(|f| panic!("requests failed: {f:?}\nlb-2 log:\n{}", self.router.log()))
    }
}

#[test]
fn a_router_only_unit_follows_a_health_cache_units_allotments_and_falls_back() {
    let mut s = Setup::start();
    // Equal hosts: equal shares of 10 000 basis points.
    wait_until(
        "lb-2 follows lb-1's allotment: every host active with a third",
        WAIT,
        || {
            let (source, hosts) = s.backends()?;
            let thirds = hosts
                .iter()
                .all(|(_, state, w)| state == "active" && (3000..=3400).contains(w));
            (source == "remote-allotment" && thirds)
                .then_some(())
                .ok_or(format!("source {source}: {hosts:?}"))
        },
    );
    let view = s.view().expect("view");
    assert_eq!(view["remote"]["status"], "fresh", "{view}");
    documented(&view);
    for (source, value) in [
        ("remote-allotment", 1.0),
        ("static", 0.0),
        ("local-cache", 0.0),
    ] {
        assert_eq!(s.backend_source(source), value, "{source}");
    }
    assert_eq!(
        view["remote"]["units"][0],
        format!("127.0.0.1:{}", config_control(&s.config)),
        "{view}"
    );

    // Spread by the allotment: web-3's capacity drops to a tenth.
    s.agent(
        2,
        "PUT",
        "/v1/hosts/web-3/apps/web-http/status",
        Some(r#"{"capacity": 5}"#),
    );
    wait_until("web-3's share shrinks at lb-2", WAIT, || {
        let (_, hosts) = s.backends()?;
        (hosts[2].2 < 1000 && hosts[0].2 > 4000)
            .then_some(())
            .ok_or(format!("{hosts:?}"))
    });
    let spread = s.requests(400, false, None);
    eprintln!("spread with web-3 at a tenth: {spread:?}");
    let got = |m: &BTreeMap<String, usize>, h: &str| m.get(h).copied().unwrap_or(0);
    assert!(
        got(&spread, "web-1") >= 120 && got(&spread, "web-2") >= 120,
        "{spread:?}"
    );
    assert!(got(&spread, "web-3") <= 60, "{spread:?}");
    s.agent(
        2,
        "PUT",
        "/v1/hosts/web-3/apps/web-http/status",
        Some(r#"{"capacity": 50}"#),
    );

    // A cookie for web-1, from the router itself.
    let cookie = (0..300)
        .find_map(|_| {
            let a = Client::connect(s.listener)
                .and_then(|mut c| c.get("/fresh", None))
                .expect("a fresh request answers");
            (a.body == "web-1").then_some(a.set_cookie).flatten()
        })
        .expect("a fresh request to web-1 gets an affinity cookie");
    assert!(cookie.starts_with(&format!("{COOKIE}=v1.101.")), "{cookie}");

    // Drained through its agent: no new client, its affinitized ones stay.
    s.agent(0, "POST", "/v1/hosts/web-1/drain", None);
    s.wait_states(
        "web-1 draining at lb-2",
        "remote-allotment",
        ["draining", "active", "active"],
    );
    let before = s.apps[0].served();
    let fresh = s.requests(200, false, None);
    assert_eq!(
        got(&fresh, "web-1"),
        0,
        "new clients avoid web-1: {fresh:?}"
    );
    assert_eq!(s.apps[0].served(), before, "web-1 served no new client");
    let affine = s.requests(50, true, Some(&cookie));
    assert_eq!(
        got(&affine, "web-1"),
        50,
        "affinitized requests stay: {affine:?}"
    );
    let affine = s.requests(50, false, Some(&cookie));
    assert_eq!(
        got(&affine, "web-1"),
        50,
        "on new connections too: {affine:?}"
    );
    s.agent(0, "POST", "/v1/hosts/web-1/undrain", None);
    s.wait_states("web-1 active again", "remote-allotment", ["active"; HOSTS]);

    // A failed application: its agent's check fails, lb-1 allots it nothing, lb-2 has it
    // down.
    s.apps[2].stop();
    s.wait_states(
        "web-3 down at lb-2 (its check fails)",
        "remote-allotment",
        ["active", "active", "down"],
    );
    let after = s.requests(200, false, None);
    assert_eq!(got(&after, "web-3"), 0, "{after:?}");
    assert_eq!(after.values().sum::<usize>(), 200, "{after:?}");
    // A dead agent: its host ages out of lb-1's cache.
    s.agents[1].kill();
    s.wait_states(
        "web-2 down at lb-2 (its agent died)",
        "remote-allotment",
        ["active", "down", "down"],
    );
    let before = s.apps[1].served();
    let only = s.requests(100, false, None);
    assert_eq!(only.get("web-1"), Some(&100), "{only:?}");
    assert_eq!(s.apps[1].served(), before, "web-2 got nothing");

    // lb-1 stops: the last allotment holds through the grace period, then the static
    // configuration (every host active; web-3's refused connections are retried on
    // another host).
    let mark = s.router.log_len();
    let status = s.health.as_mut().expect("lb-1 runs").terminate();
    assert!(status.success(), "lb-1 exit: {status}");
    s.router
        .wait_for_line("keeping the last allotments", mark, WAIT);
    hold_for(
        "the last allotment while stale",
        Duration::from_millis(500),
        || {
            let view = s.view()?;
            let (source, hosts) = s.backends()?;
            let states: Vec<&str> = hosts.iter().map(|(_, st, _)| st.as_str()).collect();
            if view["remote"]["status"] == "lost" {
                // The grace period may end during this check on a slow machine.
                return Ok(());
            }
            (source == "remote-allotment" && states == ["active", "down", "down"])
                .then_some(())
                .ok_or(format!("source {source}: {hosts:?} ({})", view["remote"]))
        },
    );
    s.router
        .wait_for_line("router backends from the static configuration", mark, WAIT);
    let hosts = s.wait_states(
        "lb-2 on the static configuration",
        "static",
        ["active"; HOSTS],
    );
    assert!(
        hosts.iter().all(|h| h.2 == 50),
        "capacity as weight: {hosts:?}"
    );
    assert_eq!(s.view().expect("view")["remote"]["status"], "lost");
    assert!(s.backend_source("static") == 1.0, "the metric follows");
    let static_ones = s.requests(100, false, None);
    assert_eq!(static_ones.values().sum::<usize>(), 100, "{static_ones:?}");

    // lb-1 is back: lb-2 follows it again (web-2's agent is still dead, web-3's
    // application still stopped).
    let (health, _) = start_lb(&s.config, "lb-1");
    s.health = Some(health);
    s.wait_states(
        "lb-2 follows lb-1 again",
        "remote-allotment",
        ["active", "down", "down"],
    );
    s.router
        .wait_for_line("a health-cache unit answers again", mark, WAIT);
    let counters = &s.view().expect("view")["remote"]["counters"];
    assert!(
        counters["responses"].as_u64().unwrap_or(0) > 10,
        "{counters}"
    );
    assert_eq!(counters["refused"], 0, "{counters}");
}

/// lb-1's control port, from the configuration file.
fn config_control(config: &Path) -> u16 {
    let config = switchyard_config::load_file(config).expect("valid configuration");
    config.unit("lb-1").expect("lb-1").control_port
}

/// `view`'s `source` and `remote` are as docs/openapi.json describes them: a documented
/// source, and exactly the documented fields of `remote` and its counters.
fn documented(view: &serde_json::Value) {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/openapi.json")).expect("openapi.json");
    let schemas = &doc["components"]["schemas"];
    let sources = &schemas["RouterView"]["properties"]["source"]["enum"];
    assert!(
        sources
            .as_array()
            .is_some_and(|e| e.contains(&view["source"])),
        "source {} not in {sources}",
        view["source"]
    );
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    let remote = &schemas["RouterRemote"];
    assert_eq!(keys(&view["remote"]), keys(&remote["properties"]), "{view}");
    assert_eq!(
        keys(&view["remote"]["counters"]),
        keys(&remote["properties"]["counters"]["properties"]),
        "{view}"
    );
    let statuses = &remote["properties"]["status"]["enum"];
    assert!(
        statuses
            .as_array()
            .is_some_and(|e| e.contains(&view["remote"]["status"])),
        "{statuses}"
    );
}
