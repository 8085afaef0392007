//! The request router as a role of `switchyard lb`, end to end on real processes in
//! namespaces: one unit with the health-cache and router roles, three hosts running a small
//! keep-alive HTTP application that names itself in every answer, their agents probing it
//! with an HTTP check, and a client sending requests to the router's listener on the VIP.
//!
//! - requests spread over every healthy host; a host drained through its agent gets no new
//!   client but keeps the requests whose affinity cookie names it;
//! - a host whose application stops is marked down from its health and gets no request,
//!   while every request still succeeds (retried on another host before the health cache
//!   knows); it comes back when the application does.
//!
//! Needs root (skipped otherwise; fails under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::cluster::{Cluster, ClusterSpec, HttpCheck, ROUTER_COOKIE, ROUTER_VIP};
use support::http::{self, Answer, Client, NamedApp};
use support::wait::wait_until;

// ---- the client -------------------------------------------------------------------------

/// `n` requests from client 0 ([`http::requests`] in its namespace).
fn requests(
    cluster: &Cluster,
    n: usize,
    keep_alive: bool,
    cookie: Option<&str>,
) -> Result<BTreeMap<String, usize>, Vec<String>> {
    cluster
        .topo()
        .client(0)
        .ns()
        .enter(|| http::requests(ROUTER_VIP, n, keep_alive, cookie))
        .expect("enter the client namespace")
}

/// A fresh request's answer (no cookie): its host and the cookie the router set.
fn fresh(cluster: &Cluster) -> Answer {
    cluster
        .topo()
        .client(0)
        .ns()
        .enter(|| Client::connect(ROUTER_VIP).and_then(|mut c| c.get("/fresh", None)))
        .expect("enter the client namespace")
        .expect("a fresh request answers")
}

// ---- helpers ------------------------------------------------------------------------------

fn start(what: &str) -> Option<(Cluster, Vec<NamedApp>)> {
    let spec = ClusterSpec {
        lb_units: 1,
        hosts: 3,
        http_check: Some(HttpCheck::default()),
        agents: true,
        router: true,
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start(what, spec)?;
    let apps = (0..3)
        .map(|k| {
            NamedApp::start(
                Some(cluster.topo().host(k).ns()),
                cluster.endpoint(k),
                &cluster.host_name(k),
            )
        })
        .collect();
    wait_states(&cluster, "every host active at the router", &["active"; 3]);
    Some((cluster, apps))
}

/// The router's view of pool `web`: (name, state) per host.
fn states(cluster: &Cluster) -> Result<Vec<(String, String)>, String> {
    let view = cluster.unit_router(0)?;
    let pools = view["pools"].as_array().ok_or("no pools")?;
    let web = pools
        .iter()
        .find(|p| p["name"] == "web")
        .ok_or_else(|| format!("no pool web in {view}"))?;
    Ok(web["backends"]
        .as_array()
        .ok_or("no backends")?
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("?").to_owned(),
                b["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect())
}

#[track_caller]
fn wait_states(cluster: &Cluster, what: &str, want: &[&str]) {
    wait_until(what, Duration::from_secs(15), || {
        let now = states(cluster)?;
        let got: Vec<&str> = now.iter().map(|(_, s)| s.as_str()).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn requests_spread_and_a_drained_host_keeps_only_its_affinitized_requests() {
    let Some((cluster, apps)) = start("router spread and drain") else {
        return;
    };
    let spread = requests(&cluster, 300, false, None).unwrap_or_else(|f| panic!("{f:?}"));
    eprintln!("new connections: {spread:?}");
    for k in 0..3 {
        let n = spread.get(&cluster.host_name(k)).copied().unwrap_or(0);
        assert!(n >= 30, "host {k} got {n} of 300: {spread:?}");
    }
    let kept = requests(&cluster, 200, true, None).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(kept.values().sum::<usize>(), 200, "keep-alive: {kept:?}");
    assert!(
        kept.len() >= 2,
        "keep-alive requests are balanced too: {kept:?}"
    );

    // A cookie for web-1, from the router itself.
    let cookie = (0..200)
        .map(|_| fresh(&cluster))
        .find(|a| a.body == cluster.host_name(0))
        .and_then(|a| a.set_cookie)
        .expect("a fresh request to web-1 gets an affinity cookie");
    assert!(
        cookie.starts_with(&format!("{ROUTER_COOKIE}=v1.101.")),
        "{cookie}"
    );
    let held = requests(&cluster, 50, false, Some(&cookie)).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(held.get("web-1"), Some(&50), "cookie holds: {held:?}");

    cluster.directive(0, "drain");
    wait_states(
        &cluster,
        "web-1 draining at the router",
        &["draining", "active", "active"],
    );
    let before = apps[0].served();
    let fresh_ones = requests(&cluster, 200, false, None).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(
        fresh_ones.get("web-1"),
        None,
        "new clients avoid web-1: {fresh_ones:?}"
    );
    assert_eq!(apps[0].served(), before, "web-1 served no new client");
    let affine = requests(&cluster, 100, true, Some(&cookie)).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(
        affine.get("web-1"),
        Some(&100),
        "affinitized requests stay: {affine:?}"
    );
    let affine = requests(&cluster, 50, false, Some(&cookie)).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(
        affine.get("web-1"),
        Some(&50),
        "on new connections too: {affine:?}"
    );

    cluster.directive(0, "undrain");
    wait_states(&cluster, "web-1 active again", &["active"; 3]);
    let view = cluster.unit_router(0).expect("/v1/router");
    assert_eq!(view["source"], "local-cache", "{view}");
    assert_eq!(
        view["listeners"][0]["address"],
        ROUTER_VIP.to_string(),
        "{view}"
    );
    let requests_total = view["counters"]["requests"].as_u64().unwrap_or(0);
    assert!(requests_total >= 900, "{view}");
}

#[test]
fn a_failed_host_stops_getting_requests_and_none_fails() {
    let Some((cluster, mut apps)) = start("router failed host") else {
        return;
    };
    apps[2].stop();
    // Before the health cache knows: connect failures are retried on another host.
    let during = requests(&cluster, 100, false, None).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(during.values().sum::<usize>(), 100, "{during:?}");
    assert_eq!(during.get("web-3"), None, "{during:?}");
    wait_states(
        &cluster,
        "web-3 down at the router",
        &["active", "active", "down"],
    );
    let after = requests(&cluster, 200, false, None).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(after.values().sum::<usize>(), 200, "{after:?}");
    assert!(
        after.contains_key("web-1") && after.contains_key("web-2"),
        "{after:?}"
    );

    apps[2] = NamedApp::start(
        Some(cluster.topo().host(2).ns()),
        cluster.endpoint(2),
        &cluster.host_name(2),
    );
    wait_states(&cluster, "web-3 back", &["active"; 3]);
    // Back in rotation unless outlier detection still holds it out; either way no failure.
    let back = requests(&cluster, 100, false, None).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(back.values().sum::<usize>(), 100, "{back:?}");
}
