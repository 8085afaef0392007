//! The request router end to end: real backends on loopback, the router on ephemeral
//! ports, real clients (hyper and curl).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, Echo, H1Client, RunningRouter, curl, load, pool, raw_exchange};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use switchyard_config::HostId;
use switchyard_router::{Backends, HostState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn http_service(listener: &str, pool: &str, extra: &str) -> String {
    format!(
        r#"[[listeners]]
name = "{listener}"
address = "127.0.0.1:18080"
protocol = "http"

[[services]]
name = "web"
vip = "127.0.0.1:18080"
protocol = "tcp"
mode = "request"
listener = "{listener}"
pool = "{pool}"
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_and_adds_forwarding_headers() {
    let www = Backend::start("www-1").await;
    let api = Backend::start("api-1").await;
    let toml = format!(
        "{}\n{}\n{}",
        http_service(
            "public",
            "www",
            r#"
[[services.routes]]
host = "api.test"
pool = "api"

[[services.routes]]
path_prefix = "/api/"
rewrite_prefix = "/v1/"
pool = "api"
add_headers = [{ name = "X-Added", value = "yes" }]
remove_headers = ["X-Secret"]

[[services.routes]]
path_regex = "^/items/[0-9]+$"
methods = ["DELETE"]
pool = "api"
"#
        ),
        pool("www", 1, &[&www]),
        pool("api", 10, &[&api]),
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let mut client = H1Client::connect(router.addr("public")).await;

    let (status, headers, body) = client.get("www.test", "/index.html?q=1").await;
    assert_eq!(status, StatusCode::OK);
    let echo = Echo::parse(&body);
    assert_eq!(echo.host, "www-1");
    assert_eq!(echo.path, "/index.html?q=1");
    assert_eq!(echo.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo.headers["x-forwarded-proto"], "http");
    assert_eq!(echo.headers["x-forwarded-host"], "www.test");
    assert_eq!(
        echo.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=www.test"
    );
    let id = echo.headers["x-request-id"].clone();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(headers["x-request-id"], id.as_str());

    let (_, _, body) = client.get("API.test:8080", "/").await;
    assert_eq!(Echo::parse(&body).host, "api-1");

    let req = Request::get("/api/users?x=2")
        .header("host", "www.test")
        .header("x-secret", "s")
        .header("x-request-id", "client-id-7")
        .header("x-forwarded-for", "192.0.2.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, headers, body) = client.send(req).await;
    let echo = Echo::parse(&body);
    assert_eq!(echo.host, "api-1");
    assert_eq!(echo.path, "/v1/users?x=2");
    assert_eq!(echo.headers["x-added"], "yes");
    assert!(!echo.headers.contains_key("x-secret"));
    assert_eq!(echo.headers["x-request-id"], "client-id-7");
    assert_eq!(headers["x-request-id"], "client-id-7");
    assert_eq!(echo.headers["x-forwarded-for"], "192.0.2.9, 127.0.0.1");

    let del = |path: &str| {
        Request::delete(path)
            .header("host", "www.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (_, _, body) = client.send(del("/items/42")).await;
    assert_eq!(Echo::parse(&body).host, "api-1");
    let (_, _, body) = client.send(del("/items/x42")).await;
    assert_eq!(Echo::parse(&body).host, "www-1");
    let (_, _, body) = client.get("www.test", "/items/42").await;
    assert_eq!(Echo::parse(&body).host, "www-1");

    let metrics = router.metrics();
    assert!(
        metrics.contains(
            r#"switchyard_router_requests_total{route="web#0",host="10",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"switchyard_router_requests_total{route="web",host="1",status="200"} 3"#),
        "{metrics}"
    );
}

/// The per-request metric lookups use labels shared with the routing rules and run on
/// every worker thread: the counts per route, host and status, the latency histogram per
/// route and the totals still add up when the clients are spread over the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_per_route_host_and_status_over_every_worker() {
    let www = Backend::start("www-1").await;
    let api = Backend::start("api-1").await;
    let toml = format!(
        "{}\n{}\n{}",
        http_service(
            "public",
            "www",
            r#"
[[services.routes]]
host = "api.test"
pool = "api"
"#
        ),
        pool("www", 1, &[&www]),
        pool("api", 10, &[&api]),
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start_with_workers(&cfg.config, 3).await;
    let addr = router.addr("public");
    // Open at once: each new connection goes to the least loaded worker.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(H1Client::connect(addr).await);
    }
    for client in &mut clients {
        for path in ["/a", "/b"] {
            let (status, _, body) = client.get("www.test", path).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(Echo::parse(&body).host, "www-1");
        }
        let (status, _, body) = client.get("API.test", "/x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(Echo::parse(&body).host, "api-1");
    }
    let answer = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let metrics = router.metrics();
    for line in [
        r#"switchyard_router_requests_total{route="web",host="1",status="200"} 6"#,
        r#"switchyard_router_requests_total{route="web#0",host="10",status="200"} 3"#,
        r#"switchyard_router_requests_total{route="none",host="none",status="400"} 1"#,
        r#"switchyard_router_request_duration_seconds_count{route="web"} 6"#,
        r#"switchyard_router_request_duration_seconds_count{route="web#0"} 3"#,
        r#"switchyard_router_rejected_total{reason="malformed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let totals = router.router.counters();
    assert_eq!(totals.requests, 10);
    assert_eq!(totals.responses_2xx, 9);
    assert_eq!(totals.responses_4xx, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_reaches_the_host() {
    let www = Backend::start("www-1").await;
    let toml = format!(
        r#"[[listeners]]
name = "inner"
address = "127.0.0.1:18081"
protocol = "h2c"

[[services]]
name = "web"
vip = "127.0.0.1:18081"
protocol = "tcp"
mode = "request"
listener = "inner"
pool = "www"

{}"#,
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let url = format!("http://h2.test:{}/x", router.addr("inner").port());
    let resolve = format!("h2.test:{}:127.0.0.1", router.addr("inner").port());
    let (out, err) = curl(&[
        "--http2-prior-knowledge",
        "--resolve",
        &resolve,
        "-w",
        "\nversion=%{http_version} status=%{http_code}",
        &url,
    ])
    .await;
    assert!(out.ends_with("version=2 status=200"), "{out}\n{err}");
    let echo = Echo::parse(&out);
    assert_eq!(echo.host, "www-1");
    assert_eq!(echo.path, "/x");
    assert_eq!(
        echo.headers["host"],
        format!("h2.test:{}", router.addr("inner").port())
    );
    assert_eq!(echo.headers["x-forwarded-proto"], "http");
}

struct Pki {
    ca_pem: String,
    leaves: Vec<(String, String, String)>,
}

/// A CA and one leaf per name (leaf CN = the name), PEM.
fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchyard test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaves = names
        .iter()
        .map(|name| {
            let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, *name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (name.to_string(), cert.pem(), key.serialize_pem())
        })
        .collect();
    Pki {
        ca_pem: ca.pem(),
        leaves,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_picks_the_certificate_by_sni_and_negotiates_h2_and_http1() {
    let www = Backend::start("www-1").await;
    let pki = pki(&["www.test", "api.test"]);
    let files: Vec<(String, String)> = pki
        .leaves
        .iter()
        .flat_map(|(n, c, k)| {
            [
                (format!("{n}.cert.pem"), c.clone()),
                (format!("{n}.key.pem"), k.clone()),
            ]
        })
        .chain([("ca.pem".to_owned(), pki.ca_pem.clone())])
        .collect();
    let file_refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let toml = format!(
        r#"[[listeners]]
name = "tls"
address = "127.0.0.1:18443"
protocol = "https"
certificates = ["www", "api"]

[[services]]
name = "web"
vip = "127.0.0.1:18443"
protocol = "tcp"
mode = "request"
listener = "tls"
pool = "www"

[[tls.certificates]]
name = "www"
cert_file = "www.test.cert.pem"
key_file = "www.test.key.pem"
server_names = ["www.test"]

[[tls.certificates]]
name = "api"
cert_file = "api.test.cert.pem"
key_file = "api.test.key.pem"
server_names = ["api.test"]

{}"#,
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &file_refs);
    let router = RunningRouter::start(&cfg.config).await;
    let port = router.addr("tls").port();
    let ca = cfg.dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    for (name, version_flag, want_version) in [
        ("www.test", "--http2", "2"),
        ("api.test", "--http2", "2"),
        ("api.test", "--http1.1", "1.1"),
    ] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/secure");
        let (out, err) = curl(&[
            "-v",
            version_flag,
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-w",
            "\nversion=%{http_version} status=%{http_code}",
            &url,
        ])
        .await;
        assert!(
            out.ends_with(&format!("version={want_version} status=200")),
            "{name}: {out}\n{err}"
        );
        assert!(
            err.contains(&format!("subject: CN={name}")),
            "{name}: {err}"
        );
        let echo = Echo::parse(&out);
        assert_eq!(echo.host, "www-1");
        assert_eq!(echo.headers["x-forwarded-proto"], "https");
        assert!(echo.headers["forwarded"].contains("proto=https"));
    }
}

fn cookie_config(www: &[&Backend], extra: &str) -> String {
    format!(
        "{}\n{}",
        http_service(
            "public",
            "www",
            &format!(
                "affinity = {{ kind = \"cookie\", cookie = \"SY\", timeout = \"1h\" }}\n{extra}"
            )
        ),
        pool("www", 1, www)
    )
}

fn set_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    let v = headers.get("set-cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_holds_and_a_draining_host_keeps_only_its_sessions() {
    let a = Backend::start("h1").await;
    let b = Backend::start("h2").await;
    let c = Backend::start("h3").await;
    let cfg = load(&cookie_config(&[&a, &b, &c], ""), &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let mut client = H1Client::connect(router.addr("public")).await;

    let (_, headers, body) = client.get("www.test", "/").await;
    let first = Echo::parse(&body).host;
    let cookie = set_cookie(&headers).expect("a new client gets the affinity cookie");
    assert!(cookie.starts_with("SY=v1."), "{cookie}");
    let with_cookie = |path: &str| {
        Request::get(path)
            .header("host", "www.test")
            .header("cookie", format!("other=1; {cookie}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for i in 0..1000 {
        let (status, headers, body) = client.send(with_cookie(&format!("/r{i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(Echo::parse(&body).host, first, "request {i}");
        assert!(
            headers.get("set-cookie").is_none(),
            "request {i} got a new cookie"
        );
    }

    // A forged cookie is ignored: balanced afresh and replaced.
    let forged = Request::get("/")
        .header("host", "www.test")
        .header("cookie", "SY=v1.2.00000000000000000000000000000000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = client.send(forged).await;
    assert_eq!(status, StatusCode::OK);
    assert!(set_cookie(&headers).is_some());

    // Drain the affinitized host: its cookie holders stay, new clients never reach it.
    let drained: u32 = match first.as_str() {
        "h1" => 1,
        "h2" => 2,
        _ => 3,
    };
    let mut next: Backends = (**router.backends.load()).clone();
    assert!(next.set_state(HostId(drained), HostState::Draining));
    router.backends.store(Arc::new(next));
    for i in 0..200 {
        let (_, _, body) = client.send(with_cookie(&format!("/d{i}"))).await;
        assert_eq!(Echo::parse(&body).host, first, "affinitized request {i}");
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..200 {
        let (_, headers, body) = client.get("www.test", &format!("/n{i}")).await;
        let host = Echo::parse(&body).host;
        assert_ne!(host, first, "new request {i} went to the draining host");
        assert!(set_cookie(&headers).is_some());
        *seen.entry(host).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "both active hosts take new clients: {seen:?}"
    );

    // Down: even cookie holders move.
    let mut next: Backends = (**router.backends.load()).clone();
    next.set_state(HostId(drained), HostState::Down);
    router.backends.store(Arc::new(next));
    let (_, headers, body) = client.send(with_cookie("/down")).await;
    assert_ne!(Echo::parse(&body).host, first);
    assert!(set_cookie(&headers).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_avoided_and_idempotent_requests_are_retried() {
    let live = Backend::start("live").await;
    // A stopped host: it listened once, its port now refuses connections.
    let dead = Backend::start("dead").await;
    let dead_addr = dead.addr;
    drop(dead);
    tokio::task::yield_now().await;
    let toml = format!(
        r#"{}
[router.upstream]
retries = 1
outlier_errors = 3
outlier_ejection = "1h"

[[pools]]
name = "www"

[[pools.hosts]]
id = 1
name = "live"
address = "{}"
app = "a"

[[pools.hosts]]
id = 2
name = "dead"
address = "{dead_addr}"
app = "a"
"#,
        http_service("public", "www", ""),
        live.addr
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let mut client = H1Client::connect(router.addr("public")).await;
    for i in 0..40 {
        let (status, _, body) = client.get("www.test", &format!("/{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(Echo::parse(&body).host, "live");
    }
    // A POST with a body is not replayed, but a connect failure sent nothing: still fine.
    let post = Request::post("/p")
        .header("host", "www.test")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let (status, _, body) = client.send(post).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("body-bytes=3"));
    assert_eq!(router.router.ejected_hosts(), vec![HostId(2)]);
    let metrics = router.metrics();
    assert!(
        metrics.contains(r#"switchyard_router_outlier_ejections_total{host="2"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_router_retries_total{route=\"web\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_client_connections_share_a_few_host_connections() {
    let www = Backend::start_with_delay("www-1", Duration::from_millis(2)).await;
    let toml = format!(
        "{}\n[router]\nmax_requests_per_client = 1000\n\n[router.upstream]\nmax_connections_per_host = 4\n\n{}",
        http_service("public", "www", ""),
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let addr = router.addr("public");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        tasks.spawn(async move {
            let mut client = H1Client::connect(addr).await;
            let (status, _, body) = client.get("www.test", &format!("/c{i}")).await;
            (status, Echo::parse(&body).host)
        });
    }
    let mut ok = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), tasks.join_next())
        .await
        .expect("all clients finish within 60 s")
    {
        let (status, host) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(host, "www-1");
        ok += 1;
    }
    assert_eq!(ok, 500);
    let accepted = www.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&accepted),
        "the host accepted {accepted} connections"
    );
}

/// Idle host connections are kept per worker thread, the cap per host over all workers:
/// at the cap, a request on one worker borrows the idle connection another worker opened
/// instead of waiting for one of its own (which would never come: a 504 after the
/// request timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_worker_borrows_another_workers_idle_host_connection() {
    let www = Backend::start("www-1").await;
    let toml = format!(
        "{}\n[router.upstream]\nmax_connections_per_host = 1\nrequest_timeout = \"3s\"\n\n{}",
        http_service("public", "www", ""),
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start_with_workers(&cfg.config, 2).await;
    let addr = router.addr("public");
    // Both open at once: the second goes to the other (less loaded) worker.
    let mut first = H1Client::connect(addr).await;
    let mut second = H1Client::connect(addr).await;
    for round in 0..3 {
        for client in [&mut first, &mut second] {
            let (status, _, body) = client.get("www.test", &format!("/r{round}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(Echo::parse(&body).host, "www-1");
        }
    }
    assert_eq!(www.accepted.load(Ordering::SeqCst), 1);
}

fn limits_config(www: &Backend) -> String {
    format!(
        r#"{}
[router]
max_header_bytes = 8192
max_headers = 20
header_read_timeout = "300ms"
max_body_bytes = 1000

{}"#,
        http_service(
            "public",
            "www",
            r#"
[[services.routes]]
path_prefix = "/big/"
max_body_bytes = 5000
pool = "www"
"#
        ),
        pool("www", 1, &[www])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_limits_answer_with_the_right_status() {
    let www = Backend::start("www-1").await;
    let cfg = load(&limits_config(&www), &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let addr = router.addr("public");
    let limit = Duration::from_secs(10);

    // Slowloris: half a request head, then silence; the router gives up on it.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: www.test\r\nX-Slow: ")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the router kept a slow client's connection open"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: www.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = raw_exchange(addr, big.as_bytes(), limit).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: www.test\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw_exchange(addr, many.as_bytes(), limit).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: www.test\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: www.test\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let resp = raw_exchange(addr, garbage, limit).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{garbage:?}: {resp}");
    }

    let mut client = H1Client::connect(addr).await;
    let post = |path: &str, n: usize| {
        Request::post(path)
            .header("host", "www.test")
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let (status, _, body) = client.send(post("/small", 1001)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let mut client = H1Client::connect(addr).await;
    let (status, _, body) = client.send(post("/small", 1000)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("body-bytes=1000"));
    let (status, _, _) = client.send(post("/big/x", 4000)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = client.send(post("/big/x", 5001)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The router still serves after all of that.
    let mut client = H1Client::connect(addr).await;
    let (status, _, _) = client.get("www.test", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_through_both_ways() {
    let www = Backend::start("www-1").await;
    let toml = format!(
        "{}\n{}",
        http_service("public", "www", ""),
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let mut stream = tokio::net::TcpStream::connect(router.addr("public"))
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: www.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed before the end of the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"second message", &[0u8, 255, 13, 10]] {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_hosts_multiplexes_many_clients_on_one_connection() {
    let www = Backend::start_with_delay("www-1", Duration::from_millis(2)).await;
    let toml = format!(
        "{}\n[router.upstream]\nhttp2 = true\n\n{}",
        http_service("public", "www", ""),
        pool("www", 1, &[&www])
    );
    let cfg = load(&toml, &[]);
    let router = RunningRouter::start(&cfg.config).await;
    let addr = router.addr("public");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        tasks.spawn(async move {
            let mut client = H1Client::connect(addr).await;
            let (status, _, body) = client.get("www.test", &format!("/m{i}")).await;
            (status, Echo::parse(&body))
        });
    }
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), tasks.join_next())
        .await
        .expect("all clients finish within 60 s")
    {
        let (status, echo) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo.host, "www-1");
        assert_eq!(echo.headers["x-forwarded-proto"], "http");
    }
    assert_eq!(www.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_rules_and_limits_for_the_next_request_on_open_connections() {
    let www = Backend::start("www-1").await;
    let api = Backend::start("api-1").await;
    let pools = format!("{}\n{}", pool("www", 1, &[&www]), pool("api", 10, &[&api]));
    let before = load(
        &format!("{}\n{pools}", http_service("public", "www", "")),
        &[],
    );
    let router = RunningRouter::start(&before.config).await;
    let mut client = H1Client::connect(router.addr("public")).await;
    let (_, _, body) = client.get("www.test", "/api/x").await;
    assert_eq!(Echo::parse(&body).host, "www-1");

    let after = load(
        &format!(
            "[router]\nmax_headers = 5\n\n{}\n{pools}",
            http_service(
                "public",
                "www",
                "\n[[services.routes]]\npath_prefix = \"/api/\"\npool = \"api\"\n"
            )
        ),
        &[],
    );
    router.router.reload(
        switchyard_router::RouterConfig::from_config(&after.config).expect("router config"),
    );
    // The connection opened before the reload gets the new route and the new limit.
    let (status, _, body) = client.get("www.test", "/api/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Echo::parse(&body).host, "api-1");
    let mut req = Request::get("/").header("host", "www.test");
    for i in 0..6 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let (status, _, _) = client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // New connections too.
    let mut fresh = H1Client::connect(router.addr("public")).await;
    let (_, _, body) = fresh.get("www.test", "/api/y").await;
    assert_eq!(Echo::parse(&body).host, "api-1");
    let (_, _, body) = fresh.get("www.test", "/other").await;
    assert_eq!(Echo::parse(&body).host, "www-1");
}
