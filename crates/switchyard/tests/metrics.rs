//! Every process's `/metrics` and the example Grafana dashboard (`deploy/grafana/switchyard.json`).
//!
//! - `the_dashboard_is_grafana_json_over_a_datasource_variable` (no root): the file's
//!   schema, variables and panels, and the PromQL reading that finds its metric names;
//! - `every_role_and_agent_exports_its_families_and_the_dashboard_reads_only_them` (root;
//!   namespaces): two units with every role (forwarder, classifier, health cache, session
//!   store, request router) and two hosts with agents; HTTP through the packet VIP and
//!   through the router. Each unit's and agent's `/metrics` is parsed by an OpenMetrics
//!   parser; the families of every group exist with their type and labels, and counters
//!   moved with the traffic. Every metric name the dashboard's queries and variables use
//!   exists in these live scrapes, so the dashboard cannot rot.
//!
//! No timed assertions: waits poll with generous deadlines.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use openmetrics_parser::OpenMetricsType;
use support::cluster::{Cluster, ClusterSpec, PacketSpec, ROUTER_SERVICE, ROUTER_VIP, VIP};
use support::scrape::Scrape;
use support::wait::wait_until;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/switchyard.json"
);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections through each path.
const REQUESTS: usize = 20;

// ---- reading PromQL -----------------------------------------------------------------------

/// Words that are PromQL, not metric names, when not followed by `(`.
const KEYWORDS: [&str; 12] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
];
/// Words whose parenthesised list names labels.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// `expr` without string literals, label matchers (`{…}`) and ranges (`[…]`).
fn strip_selectors(expr: &str) -> String {
    let mut out = String::new();
    let (mut braces, mut brackets) = (0u32, 0u32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            _ if braces == 0 && brackets == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text: Vec<char> = strip_selectors(expr).chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_digit() || (c == '.' && text.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number, exponent included (1e-9).
            while i < text.len()
                && (text[i].is_ascii_alphanumeric()
                    || text[i] == '.'
                    || (matches!(text[i], '+' | '-') && matches!(text[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$') {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len()
            && (text[i].is_ascii_alphanumeric() || matches!(text[i], '_' | ':' | '$'))
        {
            i += 1;
        }
        let word: String = text[start..i].iter().collect();
        let mut next = i;
        while next < text.len() && text[next].is_whitespace() {
            next += 1;
        }
        // An aggregation may put its `by (…)`/`without (…)` before its parenthesis.
        let rest: String = text[next..].iter().collect();
        let modified = ["by", "without"].iter().any(|m| {
            rest.strip_prefix(m)
                .is_some_and(|r| r.trim_start().starts_with('('))
        });
        if modified {
            continue;
        }
        if text.get(next) == Some(&'(') {
            if LABEL_LISTS.contains(&word.as_str()) {
                // Skip the label list.
                while i < text.len() && text[i] != ')' {
                    i += 1;
                }
            }
            continue;
        }
        if word.starts_with('$') || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
}

/// The metric a variable query reads: `label_values(METRIC…, label)`, or a PromQL query.
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    match query.trim().strip_prefix("label_values(") {
        Some(args) => {
            let metric = strip_selectors(args);
            match metric.split_once(',') {
                Some((selector, _)) => metric_names(selector),
                // label_values(label): no metric.
                None => BTreeSet::new(),
            }
        }
        None => metric_names(query),
    }
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(DASHBOARD)
        .unwrap_or_else(|e| panic!("cannot read {DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every query of the dashboard's panels (with the panel's title).
fn panel_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        d["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            out.push((
                title,
                t["expr"].as_str().expect("a target's expr").to_owned(),
            ));
        }
    }
    out
}

/// Every metric name the dashboard reads, with where.
fn dashboard_metric_names(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (title, expr) in panel_queries(d) {
        out.extend(metric_names(&expr).into_iter().map(|n| (n, title.clone())));
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        if v["type"] == "query" {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("a variable query");
            let name = format!("variable {}", v["name"]);
            out.extend(
                variable_metric_names(query)
                    .into_iter()
                    .map(|n| (n, name.clone())),
            );
        }
    }
    out
}

#[test]
fn the_dashboard_is_grafana_json_over_a_datasource_variable() {
    // The reading of PromQL itself.
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{unit=~"$unit", x="b{c}"}[$__rate_interval])))"#
        ),
        BTreeSet::from(["a_bucket".to_owned()])
    );
    assert_eq!(
        metric_names("max without (instance) (g) + sum(b) by (x)"),
        BTreeSet::from(["b".to_owned(), "g".to_owned()])
    );
    assert_eq!(metric_names("count(up)"), BTreeSet::from(["up".to_owned()]));
    assert_eq!(
        metric_names(
            "sum(rate(x_total[5m])) / (sum(rate(x_total[5m])) + 1e-9) * on(instance) group_left(unit) y_info"
        ),
        BTreeSet::from(["x_total".to_owned(), "y_info".to_owned()])
    );
    assert_eq!(
        variable_metric_names(r#"label_values(m{unit=~"$unit"}, vip)"#),
        BTreeSet::from(["m".to_owned()])
    );

    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 37),
        "Grafana 10 dashboards have schemaVersion 37 or later"
    );
    assert_eq!(d["uid"], "switchyard");
    let vars = d["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["unit", "vip", "host"] {
        assert_eq!(var(name)["type"], "query", "{name}");
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}", "{name}");
    }
    let panels = d["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let queries = panel_queries(&d);
    for (title, expr) in &queries {
        if expr.contains("rate(") {
            assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
        }
    }
    let all: String = queries.iter().map(|(_, e)| e.as_str()).collect();
    for wanted in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "switchyard_router_cache_hits_total",
        "switchyard_classifier_new_connections_total",
        "switchyard_forwarder_host_bytes_total",
        "switchyard_dam_pushes_pending",
        "switchyard_agent_handshakes_completed_total",
    ] {
        assert!(all.contains(wanted), "no query uses {wanted}");
    }
    let names = dashboard_metric_names(&d);
    assert!(
        names.iter().all(|(n, _)| n.starts_with("switchyard_")),
        "{names:?}"
    );
}

// ---- the live scrapes ---------------------------------------------------------------------

/// `n` HTTP requests, one connection each, from client 0 to `addr`; all must answer 200.
fn http(c: &Cluster, addr: SocketAddr, path: &str, n: usize) {
    let ns = c.topo().client(0).ns().clone();
    ns.enter(|| {
        for i in 0..n {
            let answer = (|| {
                let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
                s.set_read_timeout(Some(TIMEOUT))?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n"
                )?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer)?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
            })();
            match answer {
                Ok(text) if text.starts_with("HTTP/1.1 200") => {}
                other => panic!(
                    "request {i} to {addr}{path}: {other:?}\n{}",
                    c.dump_with_logs()
                ),
            }
        }
    })
    .expect("enter the client namespace");
}

#[test]
fn every_role_and_agent_exports_its_families_and_the_dashboard_reads_only_them() {
    let spec = ClusterSpec {
        lb_units: 2,
        hosts: 2,
        app_servers: true,
        agents: true,
        router: true,
        sessions: true,
        packet: Some(PacketSpec::all_in_one("nat")),
        // Client-IP affinity: the classifiers record their choices in the session store.
        affinity: Some(r#"{ kind = "client-ip", timeout = "10m" }"#.to_owned()),
        // A response cache on the router's service (this TOML follows its [[services]]).
        extra_toml: "\n[[services.routes]]\npath_prefix = \"/static/\"\npool = \"web\"\n\
                     cache = { max_bytes = 1048576 }\n"
            .to_owned(),
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start("metrics", spec) else {
        return;
    };
    for k in 0..2 {
        cluster.set_status(k, Some("healthy"), Some(10), None);
        cluster.set_service_status(k, ROUTER_SERVICE, Some("healthy"), Some(10), None);
        cluster.wait_rows(
            "every host healthy at the units",
            k,
            Duration::from_secs(10),
            |r| r.health == "healthy",
        );
    }
    for j in 0..2 {
        wait_until("the router's hosts active", Duration::from_secs(10), || {
            let view = cluster.unit_router(j)?;
            let backends = view["pools"][0]["backends"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !backends.is_empty() && backends.iter().all(|b| b["state"] == "active") {
                Ok(())
            } else {
                Err(format!("unit {j}: {view}"))
            }
        });
    }
    let units_before: Vec<Scrape> = (0..2).map(|j| Scrape::unit(&cluster, j)).collect();
    let agent_before = Scrape::agent(&cluster, 0);

    http(&cluster, VIP, "/", REQUESTS);
    http(&cluster, ROUTER_VIP, "/static/a", REQUESTS);
    http(&cluster, ROUTER_VIP, "/", REQUESTS);
    // Heartbeats go on meanwhile; let a few more pass.
    std::thread::sleep(Duration::from_millis(600));

    let units: Vec<Scrape> = (0..2).map(|j| Scrape::unit(&cluster, j)).collect();
    let agents: Vec<Scrape> = (0..2).map(|a| Scrape::agent(&cluster, a)).collect();
    let sum = |scrapes: &[Scrape], name: &str, labels: &[(&str, &str)]| -> f64 {
        scrapes.iter().map(|s| s.value(name, labels)).sum()
    };
    use OpenMetricsType::{Counter, Gauge, Histogram};
    for (j, s) in units.iter().enumerate() {
        let unit = format!("lb-{}", j + 1);
        assert_eq!(
            s.value("switchyard_lb_info", &[("unit", unit.as_str())]),
            1.0,
            "{}",
            s.text
        );
        for (name, kind, labels) in [
            ("switchyard_lb_info", Gauge, &["unit", "id", "roles"][..]),
            // Packets and bytes per VIP and per host.
            (
                "switchyard_forwarder_vip_packets",
                Counter,
                &["unit", "service", "vip"],
            ),
            (
                "switchyard_forwarder_vip_bytes",
                Counter,
                &["unit", "service", "vip"],
            ),
            (
                "switchyard_forwarder_host_packets",
                Counter,
                &["unit", "host", "endpoint"],
            ),
            (
                "switchyard_forwarder_host_bytes",
                Counter,
                &["unit", "host", "endpoint"],
            ),
            ("switchyard_forwarder_routes_plumbed", Counter, &["unit"]),
            // The classifier: misses, new connections, routes retired.
            ("switchyard_classifier_misses", Counter, &["unit"]),
            (
                "switchyard_classifier_new_connections",
                Counter,
                &["unit", "service", "vip"],
            ),
            (
                "switchyard_classifier_routes_deleted",
                Counter,
                &["unit", "reason"],
            ),
            // The health protocol.
            (
                "switchyard_health_messages_received",
                Counter,
                &["unit", "kind"],
            ),
            ("switchyard_health_postulate_replies", Counter, &["unit"]),
            // The DAM: operations, replication lag and copies.
            ("switchyard_dam_adds", Counter, &["unit"]),
            ("switchyard_dam_pushes_acked", Counter, &["unit"]),
            ("switchyard_dam_pushes_pending", Gauge, &["unit"]),
            ("switchyard_dam_replication_copies", Gauge, &["unit"]),
            (
                "switchyard_dam_messages_received",
                Counter,
                &["unit", "kind"],
            ),
            // The router: requests, latency, its response cache.
            (
                "switchyard_router_requests",
                Counter,
                &["unit", "route", "host", "status"],
            ),
            (
                "switchyard_router_request_duration_seconds",
                Histogram,
                &["unit", "route"],
            ),
            ("switchyard_router_cache_hits", Counter, &["unit", "route"]),
            (
                "switchyard_router_cache_misses",
                Counter,
                &["unit", "route"],
            ),
        ] {
            s.family(name, kind, labels);
        }
        let heartbeats = |s: &Scrape| {
            s.value(
                "switchyard_health_messages_received",
                &[("kind", "heartbeat")],
            )
        };
        assert!(
            heartbeats(s) > heartbeats(&units_before[j]),
            "unit {j}: heartbeats keep coming"
        );
        assert_eq!(s.value("switchyard_dam_members", &[]), 2.0, "{}", s.text);
        assert_eq!(
            s.value("switchyard_dam_replication_copies", &[]),
            2.0,
            "{}",
            s.text
        );
    }
    let vip = [("vip", "198.19.0.10:80/tcp")];
    let grew = |name: &str, labels: &[(&str, &str)]| {
        (sum(&units_before, name, labels), sum(&units, name, labels))
    };
    let (before, after) = grew("switchyard_classifier_new_connections", &vip);
    assert!(
        after - before >= REQUESTS as f64,
        "new connections {before} → {after}"
    );
    let (before, after) = grew("switchyard_classifier_misses", &[]);
    assert!(
        after - before >= REQUESTS as f64,
        "classifier misses {before} → {after}"
    );
    let (before, after) = grew("switchyard_forwarder_routes_plumbed", &[]);
    assert!(
        after - before >= REQUESTS as f64,
        "routes plumbed {before} → {after}"
    );
    let (before, after) = grew("switchyard_forwarder_vip_packets", &vip);
    assert!(
        after - before >= 3.0 * REQUESTS as f64,
        "VIP packets {before} → {after}"
    );
    let (before, after) = grew("switchyard_forwarder_host_reply_bytes", &[]);
    assert!(after > before, "hosts answered over the packet path");
    // Per host and per VIP count the same packets (one VIP here).
    for s in &units {
        for (host, vip) in [
            (
                "switchyard_forwarder_host_packets",
                "switchyard_forwarder_vip_packets",
            ),
            (
                "switchyard_forwarder_host_bytes",
                "switchyard_forwarder_vip_bytes",
            ),
            (
                "switchyard_forwarder_host_reply_packets",
                "switchyard_forwarder_vip_reply_packets",
            ),
            (
                "switchyard_forwarder_host_reply_bytes",
                "switchyard_forwarder_vip_reply_bytes",
            ),
        ] {
            assert_eq!(s.value(host, &[]), s.value(vip, &[]), "{}: {host}", s.what);
        }
    }
    assert!(
        sum(&units, "switchyard_dam_adds", &[]) >= 1.0,
        "the classifiers recorded sessions"
    );
    let route = [("route", "web-http#0")];
    let (before, after) = grew("switchyard_router_requests", &route);
    assert_eq!(
        after - before,
        REQUESTS as f64,
        "router requests on the cached route"
    );
    let (before, after) = grew("switchyard_router_request_duration_seconds", &[]);
    assert!(
        after - before >= 2.0 * REQUESTS as f64,
        "latency observations {before} → {after}"
    );
    let (before, after) = grew("switchyard_router_cache_misses", &route);
    assert!(after > before, "cache misses {before} → {after}");

    for (a, s) in agents.iter().enumerate() {
        let host = cluster.host_id(a).to_string();
        let name = cluster.host_name(a);
        let labels = [("host", host.as_str()), ("host_name", name.as_str())];
        for (family, kind, names) in [
            (
                "switchyard_agent_messages_sent",
                Counter,
                &["host", "host_name", "kind"][..],
            ),
            (
                "switchyard_agent_messages_received",
                Counter,
                &["host", "host_name", "kind"],
            ),
            (
                "switchyard_agent_handshakes_completed",
                Counter,
                &["host", "host_name"],
            ),
            (
                "switchyard_agent_transport_sent_bytes",
                Counter,
                &["host", "host_name"],
            ),
            (
                "switchyard_agent_transport_rejected",
                Counter,
                &["host", "host_name", "reason"],
            ),
            ("switchyard_agent_rows", Gauge, &["host", "host_name"]),
        ] {
            s.family(family, kind, names);
        }
        assert_eq!(s.value("switchyard_agent_rows", &labels), 2.0, "{}", s.text);
    }
    let heartbeats =
        |s: &Scrape| s.value("switchyard_agent_messages_sent", &[("kind", "heartbeat")]);
    assert!(heartbeats(&agents[0]) > heartbeats(&agent_before));

    // Every metric the dashboard reads exists in these scrapes.
    let mut live = BTreeSet::new();
    for s in units.iter().chain(&agents) {
        live.extend(s.sample_names());
    }
    let missing: Vec<_> = dashboard_metric_names(&dashboard())
        .into_iter()
        .filter(|(name, _)| !live.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics no process exports: {missing:?}"
    );
}
