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
//! With two units that also run the session-store role (affinity through the DAM):
//!
//! - `app-cookie`: a host's application reports its session cookie through its agent's
//!   session API; requests carrying the cookie reach that host through both units' routers,
//!   also once it drains, while other requests avoid it;
//! - `client-ip`: the router records each client's host in the DAM; the same client reaches
//!   the same host through both routers and keeps it while it drains, a new client does not
//!   get it.
//!
//! Needs root (skipped otherwise; fails under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::cluster::{Cluster, ClusterSpec, HttpCheck, ROUTER_COOKIE, ROUTER_VIP};
use support::http::{self, Answer, Client, NamedApp};
use support::scrape::Scrape;
use support::wait::wait_until;
use switchyard_session_client::{Session, SessionClient};
/// `n` requests from client 0 ([`http::requests`] in its namespace).
fn requests(
    cluster: &Cluster,
    n: usize,
    keep_alive: bool,
    cookie: Option<&str>,
) -> Result<BTreeMap<String, usize>, Vec<String>> {
    requests_from(cluster, 0, n, keep_alive, cookie)
}

/// [`requests`] from client `client`.
fn requests_from(
    cluster: &Cluster,
    client: usize,
    n: usize,
    keep_alive: bool,
    cookie: Option<&str>,
) -> Result<BTreeMap<String, usize>, Vec<String>> {
    cluster
        .topo()
        .client(client)
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
    start_with(
        what,
        ClusterSpec {
            lb_units: 1,
            hosts: 3,
            http_check: Some(HttpCheck::default()),
            agents: true,
            router: true,
            ..ClusterSpec::default()
        },
    )
}

/// Starts `spec` (3 hosts) with a [`NamedApp`] on every host and waits until every unit's
/// router has every host active.
fn start_with(what: &str, spec: ClusterSpec) -> Option<(Cluster, Vec<NamedApp>)> {
    let units = spec.lb_units;
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
    for j in 0..units {
        wait_states_at(
            &cluster,
            j,
            "every host active at the router",
            &["active"; 3],
        );
    }
    Some((cluster, apps))
}

/// Unit `j`'s router's view of pool `web`: (name, state) per host.
fn states_at(cluster: &Cluster, j: usize) -> Result<Vec<(String, String)>, String> {
    let view = cluster.unit_router(j)?;
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
    wait_states_at(cluster, 0, what, want);
}

#[track_caller]
fn wait_states_at(cluster: &Cluster, j: usize, what: &str, want: &[&str]) {
    wait_until(what, Duration::from_secs(15), || {
        let now = states_at(cluster, j)?;
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

// ---- session affinity through the DAM ------------------------------------------------------

/// Two units with the health-cache, router and session-store roles, three hosts, two
/// clients; the request-mode service's affinity is `affinity`.
fn start_shared(what: &str, affinity: &str) -> Option<(Cluster, Vec<NamedApp>)> {
    start_with(
        what,
        ClusterSpec {
            lb_units: 2,
            clients: 2,
            hosts: 3,
            http_check: Some(HttpCheck::default()),
            agents: true,
            router: true,
            router_affinity: Some(affinity.to_owned()),
            sessions: true,
            ..ClusterSpec::default()
        },
    )
}

/// Requests unit `j`'s router answered so far.
fn unit_requests(cluster: &Cluster, j: usize) -> u64 {
    cluster
        .unit_router(j)
        .map(|v| v["counters"]["requests"].as_u64().unwrap_or(0))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Unit `j`'s `switchyard_router_session_lookups` with `result`, and its session records.
fn session_metrics(cluster: &Cluster, j: usize, result: &str) -> (u64, u64) {
    let scrape = Scrape::unit(cluster, j);
    (
        scrape.value("switchyard_router_session_lookups", &[("result", result)]) as u64,
        scrape.value("switchyard_router_session_records", &[]) as u64,
    )
}

/// `n` requests from `client` on new connections (which the network spreads over both
/// units by their ports), with `cookie`: the answers per host name, and how many each
/// unit's router answered.
fn through_both_units(
    cluster: &Cluster,
    client: usize,
    n: usize,
    cookie: Option<&str>,
) -> (BTreeMap<String, usize>, [u64; 2]) {
    let before = [unit_requests(cluster, 0), unit_requests(cluster, 1)];
    let answers =
        requests_from(cluster, client, n, false, cookie).unwrap_or_else(|f| panic!("{f:?}"));
    let after = [unit_requests(cluster, 0), unit_requests(cluster, 1)];
    let per_unit = [after[0] - before[0], after[1] - before[1]];
    assert!(
        per_unit.iter().all(|&u| u > 0),
        "both routers answer some of the {n} connections: {per_unit:?}"
    );
    (answers, per_unit)
}

/// Waits until every unit's router shows `want` for pool `web`.
#[track_caller]
fn wait_states_everywhere(cluster: &Cluster, what: &str, want: &[&str]) {
    for j in 0..cluster.spec().lb_units {
        wait_states_at(cluster, j, what, want);
    }
}

#[test]
fn an_application_session_cookie_reaches_its_host_through_every_router_even_draining() {
    let Some((cluster, apps)) = start_shared(
        "router app-cookie affinity through the DAM",
        r#"{ kind = "app-cookie", cookie = "JSESSIONID", timeout = "10m" }"#,
    ) else {
        return;
    };
    // web-2's application opens a session and reports it through its agent's session API.
    let k = 1;
    let value = format!("app-{:x}", std::process::id());
    let session = Session::HttpCookie {
        name: "JSESSIONID".into(),
        value: value.clone(),
    };
    SessionClient::unix(cluster.agent(k).socket.clone())
        .up(&session, None)
        .unwrap_or_else(|e| panic!("session up through the agent: {e}"));
    for j in 0..2 {
        wait_until(
            "both units find the reported session",
            Duration::from_secs(15),
            || {
                let r =
                    cluster.unit_get(j, &format!("/v1/sessions?cookie=JSESSIONID%3D{value}"))?;
                let found: serde_json::Value =
                    serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                if found["host"] == cluster.host_id(k) {
                    Ok(())
                } else {
                    Err(format!("unit {j}: {found}"))
                }
            },
        );
    }
    let cookie = format!("theme=dark; JSESSIONID={value}");
    let (held, per_unit) = through_both_units(&cluster, 0, 40, Some(&cookie));
    eprintln!("with the session cookie: {held:?}, per unit {per_unit:?}");
    assert_eq!(held.get("web-2"), Some(&40), "{held:?}");

    cluster.directive(k, "drain");
    wait_states_everywhere(
        &cluster,
        "web-2 draining at both routers",
        &["active", "draining", "active"],
    );
    let (held, per_unit) = through_both_units(&cluster, 0, 40, Some(&cookie));
    eprintln!("draining, with the session cookie: {held:?}, per unit {per_unit:?}");
    assert_eq!(
        held.get("web-2"),
        Some(&40),
        "the session stays on its draining host: {held:?}"
    );
    let before = apps[k].served();
    let unknown = "JSESSIONID=never-reported";
    let (others, _) = through_both_units(&cluster, 0, 40, Some(unknown));
    let (fresh_ones, _) = through_both_units(&cluster, 1, 40, None);
    eprintln!("draining, unknown session: {others:?}; no cookie: {fresh_ones:?}");
    assert_eq!(others.get("web-2"), None, "{others:?}");
    assert_eq!(fresh_ones.get("web-2"), None, "{fresh_ones:?}");
    assert_eq!(apps[k].served(), before, "web-2 served nothing new");
    for j in 0..2 {
        let (hits, records) = session_metrics(&cluster, j, "hit");
        let (misses, _) = session_metrics(&cluster, j, "miss");
        assert!(
            hits > 0 && misses > 0,
            "unit {j}: {hits} hits, {misses} misses"
        );
        assert_eq!(records, 0, "unit {j}: the router records no app cookie");
    }
}

#[test]
fn client_ip_affinity_is_shared_through_the_dam_and_keeps_a_draining_host() {
    let Some((cluster, apps)) = start_shared(
        "router client-ip affinity through the DAM",
        r#"{ kind = "client-ip", timeout = "10m" }"#,
    ) else {
        return;
    };
    let (first, per_unit) = through_both_units(&cluster, 0, 40, None);
    eprintln!("client 0: {first:?}, per unit {per_unit:?}");
    assert_eq!(first.len(), 1, "one host for the client: {first:?}");
    let (name, _) = first.iter().next().expect("one host");
    let k = (0..3)
        .find(|&k| cluster.host_name(k) == *name)
        .expect("a known host");
    // Recorded in the DAM, so both units know it.
    let client = cluster.topo().client(0).v4();
    for j in 0..2 {
        wait_until(
            "both units find the client",
            Duration::from_secs(15),
            || {
                let r = cluster.unit_get(j, &format!("/v1/sessions?client_ip={client}"))?;
                let found: serde_json::Value =
                    serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                if found["host"] == cluster.host_id(k) {
                    Ok(())
                } else {
                    Err(format!("unit {j}: {found}"))
                }
            },
        );
    }

    cluster.directive(k, "drain");
    let mut want = ["active"; 3];
    want[k] = "draining";
    wait_states_everywhere(
        &cluster,
        "the client's host draining at both routers",
        &want,
    );
    let (kept, per_unit) = through_both_units(&cluster, 0, 40, None);
    eprintln!("client 0 while {name} drains: {kept:?}, per unit {per_unit:?}");
    assert_eq!(
        kept.get(name.as_str()),
        Some(&40),
        "the client keeps its draining host: {kept:?}"
    );
    let before = apps[k].served();
    let (new_client, _) = through_both_units(&cluster, 1, 40, None);
    eprintln!("client 1 while {name} drains: {new_client:?}");
    assert_eq!(new_client.get(name.as_str()), None, "{new_client:?}");
    assert_eq!(
        new_client.len(),
        1,
        "the new client sticks too: {new_client:?}"
    );
    assert_eq!(apps[k].served(), before, "{name} served no new client");
    for j in 0..2 {
        let (hits, records) = session_metrics(&cluster, j, "hit");
        let (timeouts, _) = session_metrics(&cluster, j, "timeout");
        assert!(hits > 0, "unit {j}: no lookup hit");
        eprintln!("unit {j}: {hits} hits, {records} records, {timeouts} timeouts");
    }
    let records: u64 = (0..2).map(|j| session_metrics(&cluster, j, "hit").1).sum();
    assert!(records >= 2, "each client was recorded: {records}");
}
