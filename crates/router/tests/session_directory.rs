//! Affinity through a session directory shared by two routers (an in-memory directory
//! standing in for the DAM; the real one is exercised by the `switchyard` cluster test
//! `router_cluster.rs`): real backends on loopback, two routers on ephemeral ports, real
//! clients.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, Echo, H1Client, RunningRouter, load, pool};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use switchyard_config::HostId;
use switchyard_router::{Backends, HostState, LookupFuture, SessionDirectory, SessionEntry};
use switchyard_wire::SessionId;

/// Sessions by key, shared by every router holding it; every record is kept.
#[derive(Debug, Default)]
struct Shared {
    entries: Mutex<HashMap<Vec<u8>, SessionEntry>>,
    records: Mutex<Vec<(SessionId, HostId, Duration)>>,
}

impl Shared {
    fn put(&self, session: &SessionId, host: u32) {
        self.entries.lock().unwrap().insert(
            session.key(),
            SessionEntry {
                host: HostId(host),
                zombie: false,
                expires_in: None,
            },
        );
    }
}

impl SessionDirectory for Shared {
    fn lookup<'a>(&'a self, session: &'a SessionId) -> LookupFuture<'a> {
        Box::pin(async move { self.entries.lock().unwrap().get(&session.key()).copied() })
    }

    fn record(&self, session: &SessionId, host: HostId, ttl: Duration) {
        self.records
            .lock()
            .unwrap()
            .push((session.clone(), host, ttl));
        self.entries.lock().unwrap().insert(
            session.key(),
            SessionEntry {
                host,
                zombie: false,
                expires_in: Some(ttl),
            },
        );
    }
}

fn config(backends: &[&Backend], affinity: &str) -> common::TestConfig {
    load(
        &format!(
            r#"[[listeners]]
name = "public"
address = "127.0.0.1:18080"
protocol = "http"

[[services]]
name = "web"
vip = "127.0.0.1:18080"
protocol = "tcp"
mode = "request"
listener = "public"
pool = "www"
affinity = {affinity}

{}"#,
            pool("www", 1, backends)
        ),
        &[],
    )
}

fn get(header: (&str, &str)) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("host", "www.test")
        .header(header.0, header.1)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `n` requests alternating between the routers, each with `header`: answers per host.
async fn alternate(
    clients: &mut [H1Client; 2],
    n: usize,
    header: (&str, &str),
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let (status, _, body) = clients[i % 2].send(get(header)).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        *seen.entry(Echo::parse(&body).host).or_insert(0) += 1;
    }
    seen
}

fn set_state(router: &RunningRouter, host: u32, state: HostState) {
    let mut next: Backends = (**router.backends.load()).clone();
    assert!(next.set_state(HostId(host), state));
    router.backends.store(Arc::new(next));
}

fn host_id(name: &str) -> u32 {
    name.trim_start_matches('h').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_affinity_is_recorded_once_and_shared_and_keeps_a_draining_host() {
    let hosts = [
        Backend::start("h1").await,
        Backend::start("h2").await,
        Backend::start("h3").await,
    ];
    let cfg = config(
        &hosts.iter().collect::<Vec<_>>(),
        r#"{ kind = "header", header = "X-Tenant", timeout = "10m" }"#,
    );
    let shared = Arc::new(Shared::default());
    let a = RunningRouter::start_with_sessions(&cfg.config, shared.clone()).await;
    let b = RunningRouter::start_with_sessions(&cfg.config, shared.clone()).await;
    let mut clients = [
        H1Client::connect(a.addr("public")).await,
        H1Client::connect(b.addr("public")).await,
    ];

    let first = alternate(&mut clients, 20, ("X-Tenant", "acme")).await;
    assert_eq!(first.len(), 1, "one host for the tenant: {first:?}");
    let host = host_id(first.keys().next().unwrap());
    let records = shared.records.lock().unwrap().clone();
    assert_eq!(
        records,
        vec![(
            SessionId::Custom {
                kind: "http-header:x-tenant".into(),
                id: b"acme".to_vec(),
            },
            HostId(host),
            Duration::from_secs(600),
        )],
        "recorded once, by the first router, with the affinity timeout"
    );

    for router in [&a, &b] {
        set_state(router, host, HostState::Draining);
    }
    let kept = alternate(&mut clients, 20, ("X-Tenant", "acme")).await;
    assert_eq!(kept.get(&format!("h{host}")), Some(&20), "{kept:?}");
    for tenant in 0..20 {
        let value = format!("tenant-{tenant}");
        let other = alternate(&mut clients, 2, ("X-Tenant", &value)).await;
        assert_eq!(other.len(), 1, "{value} sticks: {other:?}");
        assert!(
            !other.contains_key(&format!("h{host}")),
            "new {value} got the draining host"
        );
    }

    for router in [&a, &b] {
        let text = router.metrics();
        assert!(
            text.contains("switchyard_router_session_lookups_total{result=\"hit\"}"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_router_session_records_total"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_cookie_follows_the_reported_session_and_nothing_is_recorded() {
    let hosts = [Backend::start("h1").await, Backend::start("h2").await];
    let cfg = config(
        &hosts.iter().collect::<Vec<_>>(),
        r#"{ kind = "app-cookie", cookie = "JSESSIONID" }"#,
    );
    let shared = Arc::new(Shared::default());
    shared.put(
        &SessionId::HttpCookie {
            name: "JSESSIONID".into(),
            value: "c0ffee".into(),
        },
        2,
    );
    let a = RunningRouter::start_with_sessions(&cfg.config, shared.clone()).await;
    let b = RunningRouter::start_with_sessions(&cfg.config, shared.clone()).await;
    for router in [&a, &b] {
        set_state(router, 2, HostState::Draining);
    }
    let mut clients = [
        H1Client::connect(a.addr("public")).await,
        H1Client::connect(b.addr("public")).await,
    ];
    let held = alternate(&mut clients, 20, ("cookie", "lang=en; JSESSIONID=c0ffee")).await;
    assert_eq!(held.get("h2"), Some(&20), "{held:?}");
    let unknown = alternate(&mut clients, 20, ("cookie", "JSESSIONID=unknown")).await;
    assert_eq!(unknown.get("h1"), Some(&20), "{unknown:?}");
    assert!(shared.records.lock().unwrap().is_empty());

    // Without a directory the application cookie means nothing.
    let plain = RunningRouter::start(&cfg.config).await;
    set_state(&plain, 2, HostState::Draining);
    let mut client = H1Client::connect(plain.addr("public")).await;
    let (_, _, body) = client.send(get(("cookie", "JSESSIONID=c0ffee"))).await;
    assert_eq!(Echo::parse(&body).host, "h1");
}
