//! Shared by the router role's loopback tests: a small HTTP application, a unit with only
//! the `router` role in front of it, and blocking HTTP helpers.
#![allow(dead_code, reason = "each test binary uses its own part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use switchyard_lb::{RunningUnit, UnitOptions};

pub const SECRET: &str = "switchyard router role tests: not a production secret";
/// Longest any socket operation of a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a state the tests wait for (generous: a loaded machine is slow).
pub const WAIT: Duration = Duration::from_secs(10);

/// A gate the application's `/gate` requests wait on until it opens.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + WAIT;
        while !*open && Instant::now() < deadline {
            open = self
                .cond
                .wait_timeout(open, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
}

/// The application behind the router: `GET /static/…` answers `version N` (N counts the
/// requests it served there) with `Cache-Control: max-age=60`; `GET /gate` waits for the
/// gate, then answers `opened`. One thread per connection, keep-alive.
pub struct App {
    pub addr: SocketAddr,
    pub statics: Arc<AtomicU64>,
    pub waiting: Arc<AtomicU64>,
    pub gate: Arc<Gate>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<thread::JoinHandle<()>>,
}

impl App {
    /// The application whose other paths answer `hello`.
    pub fn start() -> Self {
        Self::named("hello")
    }

    /// The application whose other paths answer `name`.
    pub fn named(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the application");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let statics = Arc::new(AtomicU64::new(0));
        let waiting = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, w, g, st) = (statics.clone(), waiting.clone(), gate.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, w, g, st) = (s.clone(), w.clone(), g.clone(), st.clone());
                        conns.push(thread::spawn(move || serve(conn, name, &s, &w, &g, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Self {
            addr,
            statics,
            waiting,
            gate,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.gate.open();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    name: &str,
    statics: &AtomicU64,
    waiting: &AtomicU64,
    gate: &Gate,
    stop: &AtomicBool,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        let mut line = String::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    if request_line.is_empty() {
                        request_line = line.clone();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        let (body, extra) = if path.starts_with("/static/") {
            let n = statics.fetch_add(1, Ordering::Relaxed) + 1;
            (format!("version {n}"), "Cache-Control: max-age=60\r\n")
        } else if path == "/gate" {
            waiting.fetch_add(1, Ordering::Relaxed);
            gate.wait();
            ("opened".to_owned(), "")
        } else {
            (name.to_owned(), "")
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A free loopback port (bound and released; the unit binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What the configuration holds besides the base (one http listener, the application as
/// the only host of pool `web`, a response cache on `/static/`).
#[derive(Default, Clone)]
pub struct Extra {
    /// A route `/moved/` to pool `other` with this host.
    pub moved_to: Option<SocketAddr>,
    /// A second listener (service `web-2`, pool `web`) at this address.
    pub second_listener: Option<SocketAddr>,
    /// Text appended as is (for broken files).
    pub raw: &'static str,
}

pub fn config_text(
    listener: SocketAddr,
    app: SocketAddr,
    per_client: u32,
    extra: &Extra,
) -> String {
    let mut text = format!(
        r#"[cluster]
id = "router-role-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["router"]

[router]
max_requests_per_client = {per_client}

[[listeners]]
name = "web-http"
address = "{listener}"
protocol = "http"

[[services]]
name = "web"
vip = "{listener}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"

[[services.routes]]
path_prefix = "/static/"
pool = "web"
cache = {{ max_bytes = 1048576 }}
"#
    );
    if extra.moved_to.is_some() {
        text.push_str("\n[[services.routes]]\npath_prefix = \"/moved/\"\npool = \"other\"\n");
    }
    text.push_str(&format!(
        "\n[[pools]]\nname = \"web\"\n\n[[pools.hosts]]\nid = 101\nname = \"web-1\"\naddress = \"{app}\"\napp = \"web\"\n"
    ));
    if let Some(other) = extra.moved_to {
        text.push_str(&format!(
            "\n[[pools]]\nname = \"other\"\n\n[[pools.hosts]]\nid = 201\nname = \"other-1\"\naddress = \"{other}\"\napp = \"other\"\n"
        ));
    }
    if let Some(second) = extra.second_listener {
        text.push_str(&format!(
            "\n[[listeners]]\nname = \"web-2\"\naddress = \"{second}\"\nprotocol = \"http\"\n\n[[services]]\nname = \"web-2\"\nvip = \"{second}\"\nprotocol = \"tcp\"\nmode = \"request\"\nlistener = \"web-2\"\npool = \"web\"\n"
        ));
    }
    text.push_str(extra.raw);
    text
}

/// A unit with the router role only, from [`config_text`].
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    pub unit: Option<RunningUnit>,
    pub listener: SocketAddr,
    pub app: SocketAddr,
    pub per_client: u32,
    pub admin: SocketAddr,
}

impl Fixture {
    pub fn start(app: &App, per_client: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cluster.key"), SECRET).expect("secret");
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            config_text(listener, app.addr, per_client, &Extra::default()),
        )
        .expect("config");
        let config = switchyard_config::load_file(&path).expect("valid configuration");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let options = UnitOptions {
            unit: "lb-1".to_owned(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            control: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        };
        let unit = runtime
            .block_on(RunningUnit::start(&config, options))
            .expect("unit starts");
        let admin = unit.admin_addr();
        Self {
            dir,
            runtime,
            unit: Some(unit),
            listener,
            app: app.addr,
            per_client,
            admin,
        }
    }

    /// Rewrites the configuration file (a reload reads it).
    pub fn rewrite(&self, extra: &Extra) {
        let text = config_text(self.listener, self.app, self.per_client, extra);
        std::fs::write(self.dir.path().join("cluster.toml"), text).expect("rewrite config");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(unit) = self.unit.take() {
            self.runtime.block_on(unit.shutdown());
        }
    }
}

/// Status and body of one response read from `conn` (Content-Length bodies only).
pub fn read_response(conn: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).expect("read a response");
        assert!(n > 0, "connection closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            return (status, body);
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn
}

/// One request on its own connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut conn = connect(addr);
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: www.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).expect("send");
    read_response(&mut conn)
}

/// An admin request (the admin API wants a loopback `Host`).
pub fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut conn = connect(addr);
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let doc = serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
    (status, doc)
}
