//! The response cache of a route, through the real router on loopback with a host whose
//! answers carry the caching headers the path asks for, and count every request it serves.
//!
//! - `/fresh/*`: `Cache-Control: max-age=60`; `/vary/*`: the same with
//!   `Vary: Accept-Language`; `/nostore/*`: `no-store, max-age=60`; `/private/*`:
//!   `private, max-age=60`; anything else: no caching headers.
//! - Each answer's body is `n=<requests served so far>`, so a cached answer repeats it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_router::Invalidation;
use tokio::net::TcpListener;

use common::{H1Client, RunningRouter};

struct CachingHost {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CachingHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CachingHost {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(counter.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, served, task }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

async fn answer(
    counter: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    let path = req.uri().path().to_owned();
    let lang = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let _ = req.into_body().collect().await?;
    let mut resp = Response::new(Full::new(Bytes::from(format!("n={n} lang={lang}"))));
    let h = resp.headers_mut();
    let cc = if path.starts_with("/fresh/") {
        Some("max-age=60")
    } else if path.starts_with("/vary/") {
        h.insert("vary", "Accept-Language".parse().unwrap());
        Some("max-age=60")
    } else if path.starts_with("/nostore/") {
        Some("no-store, max-age=60")
    } else if path.starts_with("/private/") {
        Some("private, max-age=60")
    } else {
        None
    };
    if let Some(cc) = cc {
        h.insert("cache-control", cc.parse().unwrap());
    }
    Ok(resp)
}

async fn setup(host: &CachingHost) -> (common::TestConfig, RunningRouter) {
    let toml = format!(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"
protocol = "http"

[[services]]
name = "s"
vip = "127.0.0.1:8080"
protocol = "tcp"
mode = "request"
listener = "web"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = {{ max_bytes = 1048576, max_object_bytes = 65536 }}

[[pools]]
name = "p"

[[pools.hosts]]
id = 1
name = "h1"
address = "{}"
app = "a"
"#,
        host.addr
    );
    let config = common::load(&toml, &[]);
    let router = RunningRouter::start(&config.config).await;
    (config, router)
}

async fn get(
    client: &mut H1Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (hyper::HeaderMap, String) {
    let mut req = Request::get(path).header("host", "www.test");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let (status, headers, body) = client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(status, 200, "{path}: {body}");
    (headers, body)
}

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache_with_its_age() {
    let host = CachingHost::start().await;
    let (_config, router) = setup(&host).await;
    let mut c = H1Client::connect(router.addr("web")).await;
    let (h1, first) = get(&mut c, "/fresh/a", &[]).await;
    assert!(h1.get("age").is_none(), "a miss has no Age");
    let (h2, second) = get(&mut c, "/fresh/a", &[]).await;
    assert_eq!(first, second, "the second answer is the stored one");
    assert_eq!(host.served(), 1);
    let age: u64 = h2
        .get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a hit carries Age");
    assert!(age < 60, "age {age}");
    assert!(h2.get("x-request-id").is_some());
    // Another path, and a request that refuses stored answers, go to the host.
    let (_, other) = get(&mut c, "/fresh/b", &[]).await;
    assert_ne!(other, first);
    let (_, forced) = get(&mut c, "/fresh/a", &[("cache-control", "no-cache")]).await;
    assert_ne!(forced, first);
    assert_eq!(host.served(), 3);
    // HEAD is answered from the stored GET.
    let req = Request::head("/fresh/b")
        .header("host", "www.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = c.send(req).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, ""));
    assert_eq!(host.served(), 3);
    // Responses without freshness are not stored.
    get(&mut c, "/plain", &[]).await;
    get(&mut c, "/plain", &[]).await;
    assert_eq!(host.served(), 5);
    let metrics = router.metrics();
    assert!(
        metrics.contains("switchyard_router_cache_hits_total{route=\"s#0\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_router_cache_stores_total{route=\"s#0\"} 3"),
        "{metrics}"
    );
    let counters = router.router.counters();
    assert_eq!((counters.cache_hits, counters.cache_misses), (2, 5));
}

#[tokio::test]
async fn vary_keeps_one_variant_per_request_header_value() {
    let host = CachingHost::start().await;
    let (_config, router) = setup(&host).await;
    let mut c = H1Client::connect(router.addr("web")).await;
    let (_, en) = get(&mut c, "/vary/x", &[("accept-language", "en")]).await;
    let (_, de) = get(&mut c, "/vary/x", &[("accept-language", "de")]).await;
    assert!(
        en.contains("lang=en") && de.contains("lang=de"),
        "{en} {de}"
    );
    assert_eq!(host.served(), 2);
    let (_, en2) = get(&mut c, "/vary/x", &[("accept-language", "en")]).await;
    let (_, de2) = get(&mut c, "/vary/x", &[("accept-language", "de")]).await;
    assert_eq!((en2, de2), (en, de));
    assert_eq!(host.served(), 2);
    let (_, none) = get(&mut c, "/vary/x", &[]).await;
    assert!(none.contains("lang=-"), "{none}");
    assert_eq!(host.served(), 3);
}

#[tokio::test]
async fn no_store_and_private_responses_are_never_stored() {
    let host = CachingHost::start().await;
    let (_config, router) = setup(&host).await;
    let mut c = H1Client::connect(router.addr("web")).await;
    for path in ["/nostore/a", "/private/a"] {
        let (_, a) = get(&mut c, path, &[]).await;
        let (h, b) = get(&mut c, path, &[]).await;
        assert_ne!(a, b, "{path} answered twice by the host");
        assert!(h.get("age").is_none());
    }
    assert_eq!(host.served(), 4);
    // A request with no-store bypasses the cache, and does not fill it either.
    get(&mut c, "/fresh/z", &[("cache-control", "no-store")]).await;
    get(&mut c, "/fresh/z", &[]).await;
    assert_eq!(host.served(), 6);
    assert_eq!(router.router.caches()[0].entries, 1);
}

#[tokio::test]
async fn invalidation_by_route_by_host_prefix_and_by_unsafe_requests() {
    let host = CachingHost::start().await;
    let (_config, router) = setup(&host).await;
    let mut c = H1Client::connect(router.addr("web")).await;
    for p in ["/fresh/a", "/fresh/b", "/vary/c"] {
        get(&mut c, p, &[]).await;
    }
    assert_eq!(host.served(), 3);
    let removed = router
        .router
        .invalidate(&Invalidation::Host {
            host: "WWW.test".into(),
            path_prefix: "/fresh/".into(),
        })
        .unwrap();
    assert_eq!(removed, 2);
    get(&mut c, "/vary/c", &[]).await;
    assert_eq!(host.served(), 3, "/vary/c is still stored");
    get(&mut c, "/fresh/a", &[]).await;
    assert_eq!(host.served(), 4, "/fresh/a was invalidated");
    let removed = router
        .router
        .invalidate(&Invalidation::Route {
            route: "s#0".into(),
            prefix: None,
        })
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(router.router.caches()[0].bytes, 0);
    assert!(
        router
            .router
            .invalidate(&Invalidation::Route {
                route: "s".into(),
                prefix: None
            })
            .is_err(),
        "the service's fallback has no cache"
    );
    // A successful POST to a stored target invalidates it (RFC 9111 section 4.4).
    get(&mut c, "/fresh/p", &[]).await;
    get(&mut c, "/fresh/p", &[]).await;
    assert_eq!(host.served(), 5, "the second GET was a hit");
    let req = Request::post("/fresh/p")
        .header("host", "www.test")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let (status, _, _) = c.send(req).await;
    assert_eq!(status, 200);
    get(&mut c, "/fresh/p", &[]).await;
    assert_eq!(
        host.served(),
        7,
        "the POST and the GET after it reached the host"
    );
    let metrics = router.metrics();
    assert!(
        metrics.contains("switchyard_router_cache_invalidations_total{route=\"s#0\"} 5"),
        "{metrics}"
    );
}
