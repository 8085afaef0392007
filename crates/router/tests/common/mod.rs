//! Real components for the router tests: backends (small hyper servers on loopback that
//! say which host they are and echo the request), a configuration written to a temporary
//! directory, the router on ephemeral ports, and raw/hyper/curl clients. Every task and
//! process started here ends when its guard drops.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_router::{Backends, Router, RouterConfig, SessionDirectory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend host: answers every request with `host=NAME`, the method and path, then
/// every request header as `name: value` lines. `Upgrade: echo` gets a 101 and an echo.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        Self::start_with_delay(name, Duration::ZERO).await
    }

    pub async fn start_with_delay(name: &str, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let host = name.to_owned();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let host = host.clone();
                conns.spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| answer(host.clone(), delay, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            accepted,
            task,
        }
    }
}

async fn answer(
    host: String,
    delay: Duration,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return Ok(resp);
    }
    let mut text = format!("host={host}\nmethod={}\npath={}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        text.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("?")));
    }
    let body = req.into_body().collect().await?.to_bytes();
    text.push_str(&format!("body-bytes={}\n", body.len()));
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert("x-backend", host.parse().unwrap());
    Ok(resp)
}

/// A parsed backend answer.
#[derive(Debug, Clone)]
pub struct Echo {
    pub host: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Echo {
    pub fn parse(text: &str) -> Self {
        let mut echo = Echo {
            host: String::new(),
            path: String::new(),
            headers: HashMap::new(),
        };
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("host=") {
                echo.host = h.to_owned();
            } else if let Some(p) = line.strip_prefix("path=") {
                echo.path = p.to_owned();
            } else if let Some((n, v)) = line.split_once(": ") {
                echo.headers.insert(n.to_owned(), v.to_owned());
            }
        }
        echo
    }
}

/// The cluster part every test configuration starts with.
pub const CLUSTER: &str = r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 60000
address = "127.0.0.1"
roles = ["router", "session-store", "health-cache"]
"#;

/// A configuration in a temporary directory (kept alive as long as this is).
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub config: switchyard_config::Config,
}

pub fn load(toml: &str, files: &[(&str, &str)]) -> TestConfig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.key"),
        format!("{}\n", "4b".repeat(32)),
    )
    .unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let path = dir.path().join("router.toml");
    let text = format!("{CLUSTER}\n{toml}");
    std::fs::write(&path, &text).unwrap();
    let config = switchyard_config::load_file(&path).unwrap_or_else(|d| panic!("{d}\n{text}"));
    TestConfig { dir, config }
}

/// A pool table with the given backends (ids start at `first_id`).
pub fn pool(name: &str, first_id: u32, backends: &[&Backend]) -> String {
    let mut out = format!("[[pools]]\nname = \"{name}\"\n");
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!(
            "\n[[pools.hosts]]\nid = {}\nname = \"{}\"\naddress = \"{}\"\napp = \"a\"\n",
            first_id + i as u32,
            b.name,
            b.addr
        ));
    }
    out
}

/// The router serving every listener of a configuration on ephemeral loopback ports.
pub struct RunningRouter {
    pub router: Router,
    pub backends: Arc<ArcSwap<Backends>>,
    pub addrs: HashMap<String, SocketAddr>,
    pub registry: prometheus_client::registry::Registry,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        self.router.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RunningRouter {
    pub async fn start(config: &switchyard_config::Config) -> Self {
        Self::start_with(RouterConfig::from_config(config).unwrap(), config, None).await
    }

    /// With `workers` worker threads.
    pub async fn start_with_workers(config: &switchyard_config::Config, workers: usize) -> Self {
        let router_config = RouterConfig::from_config(config)
            .unwrap()
            .with_worker_threads(workers);
        Self::start_with(router_config, config, None).await
    }

    /// Like [`RunningRouter::start`], with `sessions` as the router's session directory.
    pub async fn start_with_sessions(
        config: &switchyard_config::Config,
        sessions: Arc<dyn SessionDirectory>,
    ) -> Self {
        let router_config = RouterConfig::from_config(config).unwrap();
        Self::start_with(router_config, config, Some(sessions)).await
    }

    async fn start_with(
        router_config: RouterConfig,
        config: &switchyard_config::Config,
        sessions: Option<Arc<dyn SessionDirectory>>,
    ) -> Self {
        let backends = Arc::new(ArcSwap::from_pointee(Backends::from_config(config)));
        let mut registry = prometheus_client::registry::Registry::default();
        let router = match sessions {
            Some(s) => Router::with_session_directory(
                router_config.clone(),
                backends.clone(),
                &mut registry,
                s,
            ),
            None => Router::new(router_config.clone(), backends.clone(), &mut registry),
        };
        let mut addrs = HashMap::new();
        let mut tasks = Vec::new();
        for name in router_config.listener_names() {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(name.to_owned(), listener.local_addr().unwrap());
            let serve = router.serve(name, listener);
            tasks.push(tokio::spawn(async move {
                serve.await.unwrap();
            }));
        }
        Self {
            router,
            backends,
            addrs,
            registry,
            tasks,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    pub fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

/// One HTTP/1.1 connection from a hyper client.
pub struct H1Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for H1Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H1Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { sender, task }
    }

    /// Sends a request; returns status, headers and body text.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, hyper::HeaderMap, String) {
        self.sender.ready().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req))
            .await
            .expect("response within 20 s")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    pub async fn get(&mut self, host: &str, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}

/// Writes raw bytes and reads until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs curl (bounded by --max-time) and returns (stdout, stderr).
pub async fn curl(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
