//! `/metrics` of a unit running five roles (health cache, session store, request router,
//! classifier; the forwarder is configured without interfaces, so it does not load),
//! read by an OpenMetrics parser: each role's families exist with their type and labels,
//! and the counters move with the traffic the test sends (heartbeats from a host, HTTP
//! requests through the router and its response cache, DAM calls).

use std::net::SocketAddr;
use std::time::Duration;

use openmetrics_parser::OpenMetricsType::{Counter, Gauge, Histogram};
use switchyard_lb::RunningUnit;
use switchyard_wire::{AppId, HostId, Protocol, SessionId};

use crate::harness::*;
#[path = "../router_support/mod.rs"]
mod router_support;
use router_support::{App, free_port, request};

fn config(
    dir: &std::path::Path,
    listener: SocketAddr,
    app: SocketAddr,
) -> switchyard_config::Config {
    let sessions_port = free_udp_port();
    std::fs::write(dir.join("cluster.key"), SECRET).expect("secret");
    let path = dir.join("cluster.toml");
    let text = format!(
        r#"[cluster]
id = "{CLUSTER}"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["forwarder", "classifier", "health-cache", "session-store", "router"]

[health]
heartbeat_interval = "100ms"
host_dead_after = "5s"

[sessions]
port = {sessions_port}

[[listeners]]
name = "www-http"
address = "{listener}"
protocol = "http"

[[services]]
name = "web"
vip = "{VIP}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "www"
vip = "{listener}"
protocol = "tcp"
mode = "request"
listener = "www-http"
pool = "web"

[[services.routes]]
path_prefix = "/static/"
pool = "web"
cache = {{ max_bytes = 1048576 }}

[[pools]]
name = "web"

[[pools.hosts]]
id = 101
name = "web-1"
address = "{app}"
app = "www"
"#
    );
    std::fs::write(&path, text).expect("config");
    switchyard_config::load_file(&path).unwrap_or_else(|d| panic!("test config rejected:\n{d}"))
}

async fn http_get(listener: SocketAddr, path: &'static str) -> u16 {
    tokio::task::spawn_blocking(move || request(listener, "GET", path, None).0)
        .await
        .expect("request thread")
}

async fn router_ready(unit: &RunningUnit) {
    eventually(WAIT, "the router's host to be active", || async {
        let view: serde_json::Value = get_json(unit, "/v1/router").await;
        (view["pools"][0]["backends"][0]["state"] == "active").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_with_every_role_exposes_each_roles_families() {
    let app = App::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(dir.path(), listener, app.addr);
    let unit = RunningUnit::start(&config, options())
        .await
        .expect("unit starts");

    // Before any traffic: every family is there, counters at zero.
    let before = scrape(&unit).await;
    let info = before.family("switchyard_lb_info", Gauge, &["id", "roles"]);
    assert_eq!(info.iter_samples().count(), 1);
    assert_eq!(
        before.value(
            "switchyard_lb_info",
            &[
                ("unit", "lb-1"),
                (
                    "roles",
                    "forwarder,classifier,health-cache,session-store,router"
                )
            ]
        ),
        Some(1.0)
    );
    before.family("switchyard_classifier_misses", Counter, &[]);
    before.family(
        "switchyard_classifier_new_connections",
        Counter,
        &["service", "vip"],
    );
    assert_eq!(
        before.value(
            "switchyard_classifier_new_connections",
            &[("service", "web"), ("vip", "198.51.100.10:80/tcp")]
        ),
        Some(0.0),
        "a configured packet service has its series before its first connection"
    );
    before.family("switchyard_classifier_rejected", Counter, &["reason"]);
    before.family("switchyard_classifier_routes_deleted", Counter, &["reason"]);
    before.family("switchyard_classifier_connections", Gauge, &[]);
    assert!(
        !before
            .families
            .families
            .contains_key("switchyard_forwarder_flows"),
        "the forwarder did not load"
    );

    // Traffic: a host heartbeats its row, which makes it the router's backend.
    let host = TestHost::start(101, unit.control_addr().expect("health role")).await;
    let row = AppId {
        vip: listener,
        protocol: Protocol::Tcp,
        endpoint: app.addr,
        info: "www".to_owned(),
    };
    host.set(row, healthy(10, 50)).await;
    wait_for_hosts(&unit, &[101], 1).await;
    router_ready(&unit).await;
    assert_eq!(http_get(listener, "/static/a").await, 200, "a cache miss");
    assert_eq!(http_get(listener, "/static/a").await, 200, "a cache hit");
    assert_eq!(http_get(listener, "/other").await, 200);
    // DAM calls through the session store: an add, a local query.
    let store = unit.sessions().expect("session-store role");
    let key = SessionId::ClientIp("198.51.100.7".parse().expect("ip")).key();
    store.record(&key, HostId(101), Some(Duration::from_secs(60)));
    assert!(store.lookup(&key).await.is_some());

    let after = scrape(&unit).await;
    // Health cache: messages by kind, the transport, the cache's size.
    after.family("switchyard_health_messages_received", Counter, &["kind"]);
    after.family("switchyard_health_messages_sent", Counter, &["kind"]);
    after.family("switchyard_health_transport_rejected", Counter, &["reason"]);
    after.family("switchyard_health_postulate_replies", Counter, &[]);
    after.family("switchyard_health_transport_received_bytes", Counter, &[]);
    let heartbeats = |s: &Scrape| {
        s.value(
            "switchyard_health_messages_received",
            &[("kind", "heartbeat")],
        )
        .unwrap_or(0.0)
    };
    assert!(heartbeats(&after) > heartbeats(&before), "{}", after.text);
    assert!(
        after
            .value("switchyard_health_transport_received_bytes", &[])
            .is_some_and(|b| b > 0.0)
    );
    assert_eq!(after.value("switchyard_health_hosts", &[]), Some(1.0));

    // Router: requests by route, host and status; latency histogram; the cache.
    after.family(
        "switchyard_router_requests",
        Counter,
        &["route", "host", "status"],
    );
    after.family(
        "switchyard_router_request_duration_seconds",
        Histogram,
        &["route"],
    );
    assert_eq!(
        after.value(
            "switchyard_router_requests",
            &[("route", "www#0"), ("status", "200")]
        ),
        Some(2.0),
        "{}",
        after.text
    );
    assert_eq!(
        after.value("switchyard_router_requests", &[("host", "101")]),
        Some(2.0),
        "the miss and /other reached host 101; the hit did not"
    );
    assert!(
        after
            .value("switchyard_router_request_duration_seconds", &[])
            .is_some_and(|n| n >= 3.0),
        "{}",
        after.text
    );
    after.family("switchyard_router_cache_hits", Counter, &["route"]);
    after.family("switchyard_router_cache_misses", Counter, &["route"]);
    assert_eq!(
        after.value("switchyard_router_cache_hits", &[("route", "www#0")]),
        Some(1.0)
    );
    assert_eq!(
        after.value("switchyard_router_cache_misses", &[("route", "www#0")]),
        Some(1.0)
    );
    after.family("switchyard_router_backends", Gauge, &["pool", "state"]);

    // Session store: DAM operations and replication, sessions per host.
    for (name, kind, labels) in [
        ("switchyard_dam_adds", Counter, &[][..]),
        ("switchyard_dam_local_hits", Counter, &[]),
        ("switchyard_dam_pushes_sent", Counter, &[]),
        ("switchyard_dam_pushes_pending", Gauge, &[]),
        ("switchyard_dam_replication_copies", Gauge, &[]),
        ("switchyard_dam_memory_bytes", Gauge, &[]),
        ("switchyard_dam_messages_sent", Counter, &["kind"]),
        ("switchyard_sessions_atoms", Gauge, &["host", "host_name"]),
        ("switchyard_sessions_ups", Counter, &[]),
        (
            "switchyard_sessions_transport_rejected",
            Counter,
            &["reason"],
        ),
    ] {
        after.family(name, kind, labels);
    }
    assert_eq!(after.value("switchyard_dam_adds", &[]), Some(1.0));
    assert_eq!(after.value("switchyard_dam_local_hits", &[]), Some(1.0));
    assert_eq!(after.value("switchyard_dam_members", &[]), Some(1.0));
    assert_eq!(
        after.value("switchyard_dam_replication_copies", &[]),
        Some(1.0)
    );
    assert_eq!(
        after.value(
            "switchyard_sessions_atoms",
            &[("host", "101"), ("host_name", "web-1")]
        ),
        Some(1.0)
    );
    assert!(
        after
            .value("switchyard_dam_memory_bytes", &[])
            .is_some_and(|b| b > 0.0)
    );

    host.kill();
    unit.shutdown().await;
}
