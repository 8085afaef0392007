//! The request-routing benchmark of issue 6, on real processes in one testbed topology:
//!
//! ```text
//!  client0 ── router ── lb0 (proxy on the VIP) ── switch ── host0 (nginx :8080, :8443 TLS)
//!                                                      ├── host1 (nginx)
//!                                                      └── host2 (nginx)
//! ```
//!
//! Every configuration ([`Proxy`]) is measured on the same topology, one after the other,
//! and the whole sequence is repeated ([`Options::repeats`]) so that every configuration
//! sees the machine's background load about equally; the report gives the median of the
//! repeats:
//!
//! - [`Proxy::Direct`]: no proxy, the client talks to the hosts' nginx (through the
//!   router; one hop less than through `lb0`);
//! - [`Proxy::Switchyard`]: `switchyard lb` with the `router` role only (static backends)
//!   in `lb0`: an http listener on VIP:80 and an https listener on VIP:443 with an ECDSA
//!   P-256 certificate generated at run time (`openssl`), access log off;
//! - [`Proxy::Haproxy`]: HAProxy `mode http` (keep-alive and connection reuse to the
//!   servers, the defaults), `ssl crt` on VIP:443;
//! - [`Proxy::Nginx`]: nginx as a reverse proxy: `proxy_pass` to an `upstream` with
//!   `keepalive 64`, HTTP/1.1 and `Connection ""` to the servers, `ssl` on VIP:443.
//!
//! Every proxy balances round robin (switchyard: weighted random, equal weights) over the
//! three hosts, terminates TLS itself and talks plain HTTP to the hosts, logs nothing per
//! request, and runs on the machine's two cores (switchyard: a router worker thread per
//! core; HAProxy: `nbthread` = cores; nginx: `worker_processes auto`).
//!
//! Load: three `wrk` processes in the client namespace, one thread and
//! [`Options::connections`] connections each; direct, each one targets one host, through a
//! proxy all three target the VIP. New connections: `Connection: close` (one request per
//! TCP connection). Full TLS handshakes: `openssl s_time -new` processes (a new session
//! for every connection, then one `GET /1k` with `Connection: close`; wrk would resume
//! TLS 1.2 sessions, which is not what is measured here). CPU per request: user + system time of every process in the
//! benchmark's namespaces plus the machine's softirq time, over the window, divided by the
//! requests. Memory per idle client connection: see [`IdleMemory`].
//!
//! Nothing here asserts a speed: the report says what was measured.

use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchyard_testbed::{Netns, Process, Testbed, Topology};

pub use crate::bed::Sample;
/// The VIP (the topology's default IPv4 VIP), on `lb0`'s loopback.
pub use crate::bed::VIP;
use crate::bed::{
    self, Bench, HOSTS, Metric as _, SETTLE, Sequence, WEB_PORT, Web, cell, columns, row,
};
use crate::procfs::rss_bytes;

/// Plain HTTP on the VIP.
const HTTP_PORT: u16 = 80;
/// HTTPS on the VIP.
const HTTPS_PORT: u16 = 443;
/// nginx's TLS port on every host (the direct TLS measurement).
const WEB_TLS_PORT: u16 = 8443;
/// The certificate's name (clients send no SNI: they connect to addresses).
const SERVER_NAME: &str = "bench.switchyard.test";
/// The cluster key of the throw-away benchmark cluster.
const SECRET: &str = "switchyard router benchmark cluster: not a production secret";
/// Longest a single idle-connection exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy configuration on the shared topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proxy {
    /// No proxy: the client talks to the hosts (the limit).
    Direct,
    /// `switchyard lb` with the router role.
    Switchyard,
    /// HAProxy, `mode http`.
    Haproxy,
    /// nginx, `proxy_pass` with keep-alive upstreams.
    Nginx,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Switchyard => "switchyard",
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
        })
    }
}

impl std::str::FromStr for Proxy {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "direct" => Self::Direct,
            "switchyard" | "router" => Self::Switchyard,
            "haproxy" => Self::Haproxy,
            "nginx" => Self::Nginx,
            other => bail!("unknown configuration {other:?} (direct, switchyard, haproxy, nginx)"),
        })
    }
}

/// What is measured with wrk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Keep-alive requests of a 1 KiB file.
    KeepAlive1k,
    /// Keep-alive requests of a 64 KiB file.
    KeepAlive64k,
    /// One request (1 KiB) per TCP connection.
    NewConnections,
    /// One request (1 KiB) per TLS connection (a full handshake each).
    TlsHandshakes,
}

impl Metric {
    /// Every metric, in measuring order.
    pub const ALL: [Metric; 4] = [
        Self::KeepAlive1k,
        Self::KeepAlive64k,
        Self::NewConnections,
        Self::TlsHandshakes,
    ];

    fn short(self) -> &'static str {
        match self {
            Self::KeepAlive1k => "keep-alive 1 KiB",
            Self::KeepAlive64k => "keep-alive 64 KiB",
            Self::NewConnections => "new connection",
            Self::TlsHandshakes => "TLS handshake",
        }
    }
}

impl bed::Metric for Metric {
    fn label(self) -> &'static str {
        match self {
            Self::KeepAlive1k => "keep-alive 1 KiB (req/s)",
            Self::KeepAlive64k => "keep-alive 64 KiB (req/s)",
            Self::NewConnections => "new connections (conn/s)",
            Self::TlsHandshakes => "full TLS handshakes (conn/s)",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `switchyard` binary under test.
    pub switchyard: PathBuf,
    /// Length of each measurement.
    pub window: Duration,
    /// How many times the whole sequence of configurations runs.
    pub repeats: usize,
    /// Connections of each of the three wrk processes.
    pub connections: usize,
    /// Idle keep-alive client connections opened for the memory figure.
    pub idle_connections: usize,
    /// Configurations, in order.
    pub configs: Vec<Proxy>,
    /// Metrics, in order.
    pub metrics: Vec<Metric>,
}

impl Options {
    /// The full run of `bench/router.sh`.
    pub fn full(switchyard: PathBuf) -> Self {
        Self {
            switchyard,
            window: Duration::from_secs(10),
            repeats: 3,
            connections: 16,
            idle_connections: 2000,
            configs: vec![
                Proxy::Direct,
                Proxy::Switchyard,
                Proxy::Haproxy,
                Proxy::Nginx,
            ],
            metrics: Metric::ALL.to_vec(),
        }
    }

    /// `bench/router.sh --quick`: the same shape, 2 s windows, one repeat.
    pub fn quick(switchyard: PathBuf) -> Self {
        Self {
            window: Duration::from_secs(2),
            repeats: 1,
            idle_connections: 500,
            ..Self::full(switchyard)
        }
    }
}

/// Memory per idle client connection: the proxy's VmRSS (all its processes) before and
/// after opening [`Options::idle_connections`] keep-alive connections, each of which made
/// one 1 KiB request and then stays open and idle. User space only (kernel socket buffers
/// are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IdleMemory {
    /// Connections held open.
    pub connections: usize,
    /// VmRSS before, bytes.
    pub rss_before: u64,
    /// VmRSS with the connections open, bytes.
    pub rss_after: u64,
}

impl IdleMemory {
    /// Bytes per connection.
    pub fn per_connection(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.connections.max(1) as f64
    }
}

/// Results of one configuration (memory per idle connection: every repeat's).
pub type ConfigResult = bed::ConfigResult<Proxy, Metric, Vec<IdleMemory>>;

impl ConfigResult {
    /// The median memory figure (by per-connection bytes).
    pub fn median_memory(&self) -> Option<IdleMemory> {
        let mut v = self.memory.clone();
        v.sort_by(|a, b| a.per_connection().total_cmp(&b.per_connection()));
        v.get(v.len() / 2).copied()
    }
}

/// Results of [`run`].
pub type Report = bed::Report<Proxy, Metric, Vec<IdleMemory>>;

/// Runs the benchmark on a fresh topology in `tb`.
pub fn run(tb: &Testbed, opts: &Options) -> Result<Report> {
    if opts.configs.contains(&Proxy::Switchyard) {
        ensure!(
            opts.switchyard.is_file(),
            "no switchyard binary at {} (build it first)",
            opts.switchyard.display()
        );
    }
    let mut tools = vec!["nginx", "wrk", "openssl"];
    if opts.configs.contains(&Proxy::Haproxy) {
        tools.push("haproxy");
    }
    let seq = Sequence {
        name: "router-bench",
        tools: &tools,
        configs: &opts.configs,
        window: opts.window,
        repeats: opts.repeats,
        connections: opts.connections,
    };
    bed::measure_in_turn(&seq, || Bed::start(tb, opts))
}

/// The topology with its servers (they stay up for every configuration).
struct Bed {
    web: Web,
    opts: Options,
}

/// A configuration while it is set up.
struct Active {
    proxy: Proxy,
    process: Option<Process>,
}

impl Active {
    /// Every process of the proxy (nginx: the master and its workers).
    fn pids(&self) -> Vec<u32> {
        let Some(p) = &self.process else {
            return Vec::new();
        };
        let mut pids = vec![p.pid()];
        pids.extend(children(p.pid()));
        pids
    }
}

impl Bed {
    fn start(tb: &Testbed, opts: &Options) -> Result<Self> {
        let mut web = Web::new(tb, "router")?;
        std::fs::write(web.dir.path().join("cluster.key"), SECRET)?;
        certificate(web.dir.path())?;
        web.start_nginx("router", Some(WEB_TLS_PORT))?;
        // The VIP lives on lb0's loopback for every proxy (the router routes it to lb0).
        web.topo
            .lb_unit(0)
            .ns()
            .run(["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        Ok(Self {
            web,
            opts: opts.clone(),
        })
    }

    fn topo(&self) -> &Topology {
        &self.web.topo
    }

    fn lb_ns(&self) -> &Netns {
        self.topo().lb_unit(0).ns()
    }

    /// The three wrk targets (scheme, address; no path).
    fn targets(&self, proxy: Proxy, metric: Metric) -> Vec<String> {
        let tls = metric == Metric::TlsHandshakes;
        let scheme = if tls { "https" } else { "http" };
        match proxy {
            Proxy::Direct => (0..HOSTS)
                .map(|k| {
                    let port = if tls { WEB_TLS_PORT } else { WEB_PORT };
                    format!(
                        "{scheme}://{}",
                        SocketAddr::new(self.topo().host(k).v4(), port)
                    )
                })
                .collect(),
            _ => {
                let port = if tls { HTTPS_PORT } else { HTTP_PORT };
                vec![format!("{scheme}://{}", SocketAddr::new(VIP.into(), port)); 3]
            }
        }
    }

    /// One wrk window of `metric`: three processes in parallel.
    fn wrk(&self, active: &Active, metric: Metric) -> Result<Sample> {
        let path = match metric {
            Metric::KeepAlive64k => "/64k",
            _ => "/1k",
        };
        let pids = active.pids();
        let cpu0 = self.web.cpu(&pids);
        let (runs, ()) = self.web.wrk(
            &self.targets(active.proxy, metric),
            path,
            self.opts.connections,
            self.opts.window,
            matches!(metric, Metric::NewConnections | Metric::TlsHandshakes),
            || (),
        )?;
        let cpu1 = self.web.cpu(&pids);
        Sample::of_wrk(&runs, &cpu0, &cpu1)
            .with_context(|| format!("{}: no request completed ({metric:?})", active.proxy))
    }

    /// Full TLS handshakes: `openssl s_time -new` (a new session every time; wrk would
    /// resume TLS 1.2 sessions) in [`Options::connections`] processes per target, each
    /// connecting, completing the handshake, sending one `GET /1k` with `Connection:
    /// close` and reading the answer, over and over for the window. s_time reports no
    /// latency distribution: `p50_us` is the mean time per connection, `p99_us` 0.
    fn handshakes(&self, active: &Active) -> Result<Sample> {
        let secs = self.opts.window.as_secs().max(1);
        let client = self.topo().client(0).ns();
        let pids = active.pids();
        // s_time sends "GET <this> HTTP/1.0\r\n\r\n": a full HTTP/1.1 request head.
        let page = "/1k HTTP/1.1\r\nHost: bench.switchyard.test\r\nConnection: close\r\nX-Pad:";
        let cpu0 = self.web.cpu(&pids);
        let outs: Vec<Result<(String, Duration)>> = thread::scope(|s| {
            let handles: Vec<_> = self
                .targets(active.proxy, Metric::TlsHandshakes)
                .into_iter()
                .flat_map(|t| std::iter::repeat_n(t, self.opts.connections))
                .map(|t| {
                    let connect = t.trim_start_matches("https://").to_owned();
                    let cmd = client
                        .command(["openssl", "s_time", "-new", "-connect"])
                        .arg(connect)
                        .arg("-time")
                        .arg(secs.to_string())
                        .arg("-www")
                        .arg(page)
                        .timeout(Duration::from_secs(secs + 30));
                    s.spawn(move || {
                        let started = Instant::now();
                        let out = cmd.output()?;
                        Ok((out.stdout, started.elapsed()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an s_time thread panicked")))
                })
                .collect()
        });
        let cpu1 = self.web.cpu(&pids);
        let mut connections = 0u64;
        let mut rate = 0.0;
        let mut busy = 0.0;
        let mut errors = 0u64;
        for out in outs {
            let (stdout, elapsed) = out?;
            match parse_s_time(&stdout) {
                Some(n) => {
                    connections += n;
                    rate += n as f64 / elapsed.as_secs_f64().max(1e-3);
                    busy += elapsed.as_secs_f64();
                }
                None => errors += 1,
            }
        }
        ensure!(
            connections > 0,
            "{}: no TLS connection completed (s_time failures: {errors})",
            active.proxy
        );
        let (cpu_us, lb_cpu_us) = cpu1.per_request(&cpu0, connections);
        Ok(Sample {
            rate,
            p50_us: busy / connections as f64 * 1e6,
            p99_us: 0.0,
            cpu_us,
            lb_cpu_us,
            requests: connections,
            errors,
        })
    }

    /// Opens [`Options::idle_connections`] keep-alive connections to the proxy's plain
    /// listener from the client namespace, one 1 KiB request on each, and reads the
    /// proxy's VmRSS with them open and idle.
    fn idle_memory(&self, active: &Active) -> Result<IdleMemory> {
        let n = self.opts.idle_connections;
        let target = SocketAddr::new(VIP.into(), HTTP_PORT);
        let rss = || -> u64 { active.pids().into_iter().filter_map(rss_bytes).sum() };
        // Let the previous windows' connections close and the allocator settle.
        thread::sleep(Duration::from_secs(1));
        let rss_before = rss();
        let conns = self
            .topo()
            .client(0)
            .ns()
            .enter(|| open_idle(target, n))??;
        thread::sleep(Duration::from_millis(500));
        let rss_after = rss();
        drop(conns);
        Ok(IdleMemory {
            connections: n,
            rss_before,
            rss_after,
        })
    }
}

impl Bench for Bed {
    type Config = Proxy;
    type Metric = Metric;
    type Memory = Vec<IdleMemory>;
    type Active = Active;

    fn activate(&self, proxy: Proxy) -> Result<Active> {
        let d = self.web.dir.path();
        let process = match proxy {
            Proxy::Direct => None,
            Proxy::Switchyard => {
                let config = d.join("cluster.toml");
                std::fs::write(&config, cluster_toml(self.topo(), d))?;
                let p = self
                    .lb_ns()
                    .command([self.opts.switchyard.as_os_str()])
                    .arg("lb")
                    .arg("--config")
                    .arg(&config)
                    .arg("--unit")
                    .arg("lb-1")
                    // Like the peers, no per-request log line.
                    .arg("--log-level")
                    .arg("info,switchyard_router::access=off")
                    .env("RUST_LOG", "info,switchyard_router::access=off")
                    .spawn()?;
                p.wait_for_output("lb ready", SETTLE)?;
                Some(p)
            }
            Proxy::Haproxy => {
                let cfg = d.join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_cfg(self.topo(), d))?;
                Some(
                    self.lb_ns()
                        .command(["haproxy", "-db", "-f"])
                        .arg(&cfg)
                        .spawn()?,
                )
            }
            Proxy::Nginx => {
                let cfg = d.join("nginx-proxy.conf");
                std::fs::write(&cfg, proxy_nginx_conf(self.topo(), d))?;
                Some(
                    self.lb_ns()
                        .command(["nginx", "-e"])
                        .arg(d.join("nginx-proxy.error.log"))
                        .arg("-c")
                        .arg(&cfg)
                        .spawn()?,
                )
            }
        };
        let active = Active { proxy, process };
        if let Some(p) = &active.process {
            for port in [HTTP_PORT, HTTPS_PORT] {
                self.lb_ns()
                    .wait_for_tcp(SocketAddr::new(VIP.into(), port), SETTLE)
                    .with_context(|| {
                        format!(
                            "{proxy} does not listen on {VIP}:{port}; its stderr: {}",
                            p.stderr().unwrap_or_default()
                        )
                    })?;
            }
        }
        // One second of new connections (plain and TLS) to every distinct target; each
        // must have answered without errors.
        let urls: Vec<String> = self
            .targets(proxy, Metric::NewConnections)
            .into_iter()
            .chain(self.targets(proxy, Metric::TlsHandshakes))
            .collect();
        self.web.warm_up(proxy, &urls, true)?;
        Ok(active)
    }

    fn deactivate(&self, active: Active) -> Result<()> {
        if let Some(p) = &active.process {
            p.terminate()?;
        }
        Ok(())
    }

    fn measure_all(&self, active: &Active, result: &mut ConfigResult) -> Result<()> {
        for &metric in &self.opts.metrics {
            // A failed measurement is reported, not fatal: the other metrics and
            // configurations still run.
            let measured = if metric == Metric::TlsHandshakes {
                self.handshakes(active)
            } else {
                self.wrk(active, metric)
            };
            match measured {
                Ok(sample) => result.samples.entry(metric).or_default().push(sample),
                Err(e) => {
                    let note = format!("{}: {e:#}", metric.label());
                    eprintln!("router-bench: {} failed: {note}", active.proxy);
                    result.failures.push(note);
                }
            }
        }
        if active.proxy != Proxy::Direct && self.opts.idle_connections > 0 {
            match self.idle_memory(active) {
                Ok(m) => result.memory.push(m),
                Err(e) => {
                    let note = format!("memory per idle connection: {e:#}");
                    eprintln!("router-bench: {} failed: {note}", active.proxy);
                    result.failures.push(note);
                }
            }
        }
        Ok(())
    }
}

/// `n` connections to `target`, each having completed one `GET /1k` (kept alive).
fn open_idle(target: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let request = b"GET /1k HTTP/1.1\r\nHost: bench.switchyard.test\r\n\r\n";
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("idle connection {i} to {target}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.write_all(request)?;
        read_response(&mut s).with_context(|| format!("idle connection {i}"))?;
        conns.push(s);
    }
    Ok(conns)
}

/// Reads one response with a `Content-Length` body; fails unless it is a 200.
fn read_response(s: &mut TcpStream) -> Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            ensure!(buf.len() < 65536, "response head too long");
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        ensure!(
            head.starts_with("http/1.1 200"),
            "unexpected answer: {head}"
        );
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("response without Content-Length")?;
        if buf.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// The connection count of `openssl s_time`'s last line ("N connections in T real
/// seconds, …"); `None` if it has none (it failed).
pub fn parse_s_time(out: &str) -> Option<u64> {
    out.lines()
        .rev()
        .find(|l| l.contains("connections in") && l.contains("real seconds"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// An ECDSA P-256 self-signed certificate and key (`cert.pem`, `key.pem`) in `dir`.
fn certificate(dir: &Path) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={SERVER_NAME}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{SERVER_NAME}"))
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("run openssl")?;
    ensure!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // HAProxy wants certificate and key in one file.
    let mut both = std::fs::read(dir.join("cert.pem"))?;
    both.extend(std::fs::read(dir.join("key.pem"))?);
    std::fs::write(dir.join("both.pem"), both)?;
    Ok(())
}

fn proxy_nginx_conf(topo: &Topology, dir: &Path) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for k in 0..HOSTS {
        let _ = writeln!(servers, "    server {}:{WEB_PORT};", topo.host(k).v4());
    }
    format!(
        r#"# router benchmark: nginx as the proxy
worker_processes auto;
daemon off;
user root;
pid {d}/nginx-proxy.pid;
error_log {d}/nginx-proxy.error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path {d}/nginx-proxy-body;
  proxy_temp_path {d}/nginx-proxy-temp;
  upstream web {{
{servers}    keepalive 64;
    keepalive_requests 100000000;
  }}
  server {{
    listen {VIP}:{HTTP_PORT} backlog=4096;
    listen {VIP}:{HTTPS_PORT} ssl backlog=4096;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
    )
}

fn haproxy_cfg(topo: &Topology, dir: &Path) -> String {
    let mut t = format!(
        "global\n  maxconn 9000\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 120s\n\nfrontend web\n  bind {VIP}:{HTTP_PORT}\n  bind {VIP}:{HTTPS_PORT} ssl crt {}\n  default_backend web\n\nbackend web\n  balance roundrobin\n  http-reuse always\n",
        dir.join("both.pem").display()
    );
    for k in 0..HOSTS {
        let _ = writeln!(t, "  server web-{} {}:{WEB_PORT}", k + 1, topo.host(k).v4());
    }
    t
}

fn cluster_toml(topo: &Topology, dir: &Path) -> String {
    let unit = topo.lb_unit(0).interfaces()[1].v4();
    let d = dir.display();
    let mut t = format!(
        r#"# router benchmark cluster: one unit with the router role, static backends
[cluster]
id = "router-bench"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "{unit}"
roles = ["router"]

[[listeners]]
name = "web-http"
address = "{VIP}:{HTTP_PORT}"
protocol = "http"

[[listeners]]
name = "web-https"
address = "{VIP}:{HTTPS_PORT}"
protocol = "https"
certificates = ["bench"]

[[services]]
name = "web"
vip = "{VIP}:{HTTP_PORT}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"

[[services]]
name = "web-tls"
vip = "{VIP}:{HTTPS_PORT}"
protocol = "tcp"
mode = "request"
listener = "web-https"
pool = "web"

[router.upstream]
max_connections_per_host = 64

[[tls.certificates]]
name = "bench"
cert_file = "{d}/cert.pem"
key_file = "{d}/key.pem"
server_names = ["{SERVER_NAME}"]

[[pools]]
name = "web"
"#
    );
    for k in 0..HOSTS {
        let _ = write!(
            t,
            "\n[[pools.hosts]]\nid = {}\nname = \"web-{}\"\naddress = \"{}:{WEB_PORT}\"\napp = \"web\"\n",
            101 + k,
            k + 1,
            topo.host(k).v4()
        );
    }
    t
}

/// Direct children of `pid` (nginx's workers).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

// ---- report ------------------------------------------------------------------------------

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = self.begin("Router");
        let metrics: Vec<Metric> = Metric::ALL
            .into_iter()
            .filter(|m| self.results.iter().any(|r| r.samples.contains_key(m)))
            .collect();
        for &metric in &metrics {
            self.rate_row(&mut out, metric, Proxy::Direct, |v| format!("{v:.0}"));
        }
        for &metric in &metrics {
            let cells = self.cells(|r| {
                cell(r.median(metric), |s| {
                    if metric == Metric::TlsHandshakes {
                        format!("mean {:.0}", s.p50_us)
                    } else {
                        format!("{:.0} / {:.0}", s.p50_us, s.p99_us)
                    }
                })
            });
            row(
                &mut out,
                &format!("p50 / p99 {} (µs)", metric.short()),
                &cells,
            );
        }
        for &metric in &metrics {
            let what = format!("CPU µs per {}", metric.short());
            self.cpu_row(&mut out, &what, metric, "proxy");
        }
        let cells = self.cells(|r| {
            r.median_memory()
                .map_or_else(|| "–".to_owned(), |m| format!("{:.0}", m.per_connection()))
        });
        row(&mut out, "memory per idle client connection (B)", &cells);
        let errors = self.cells(|r| {
            r.samples
                .values()
                .flat_map(|v| v.iter().map(|s| s.errors))
                .sum::<u64>()
                .to_string()
        });
        row(&mut out, "client errors (all wrk runs)", &errors);

        if self.get(Proxy::Switchyard).is_some() {
            let peers: Vec<Proxy> = [Proxy::Haproxy, Proxy::Nginx]
                .into_iter()
                .filter(|p| self.get(*p).is_some())
                .collect();
            let _ = writeln!(
                out,
                "\nswitchyard against the peers (median rate / median rate):\n"
            );
            columns(
                &mut out,
                &peers
                    .iter()
                    .map(|p| format!("switchyard / {p}"))
                    .collect::<Vec<_>>(),
            );
            for &metric in &metrics {
                let cells: Vec<String> = peers
                    .iter()
                    .map(|p| {
                        self.ratio(Proxy::Switchyard, *p, metric)
                            .map_or_else(|| "–".to_owned(), |x| format!("{x:.2}"))
                    })
                    .collect();
                row(&mut out, metric.label(), &cells);
            }
        }

        let memory: Vec<String> = self
            .results
            .iter()
            .flat_map(|r| {
                r.memory.iter().map(move |m| {
                    format!(
                        "- {}: {} idle connections, VmRSS {} → {} KiB",
                        r.config,
                        m.connections,
                        m.rss_before / 1024,
                        m.rss_after / 1024
                    )
                })
            })
            .collect();
        if !memory.is_empty() {
            let _ = writeln!(out, "\nMemory per idle connection, every repeat:\n");
            for line in memory {
                let _ = writeln!(out, "{line}");
            }
        }
        self.failures(&mut out);
        self.every_repeat(&mut out, "rate (p50/p99 µs)", |_, s| {
            format!("{:.0} ({:.0}/{:.0})", s.rate, s.p50_us, s.p99_us)
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse() {
        for s in ["direct", "switchyard", "haproxy", "nginx"] {
            let p: Proxy = s.parse().expect("parse");
            assert_eq!(p.to_string(), s);
        }
        assert!("envoy".parse::<Proxy>().is_err());
    }

    #[test]
    fn median_and_memory() {
        let mut r = ConfigResult::new(Proxy::Nginx);
        for rate in [3.0, 1.0, 2.0] {
            r.samples
                .entry(Metric::KeepAlive1k)
                .or_default()
                .push(Sample {
                    rate,
                    ..Sample::default()
                });
        }
        assert_eq!(r.median(Metric::KeepAlive1k).map(|s| s.rate), Some(2.0));
        assert!(r.median(Metric::TlsHandshakes).is_none());
        r.memory.push(IdleMemory {
            connections: 100,
            rss_before: 1000,
            rss_after: 101_000,
        });
        assert_eq!(r.median_memory().map(|m| m.per_connection()), Some(1000.0));
        // A shrinking RSS reads as zero, not as a negative size.
        let shrunk = IdleMemory {
            connections: 10,
            rss_before: 5000,
            rss_after: 4000,
        };
        assert_eq!(shrunk.per_connection(), 0.0);
    }

    #[test]
    fn s_time_output() {
        let out = "***\n\n1288 connections in 0.72s; 1788.89 connections/user sec, bytes read 300104\n1288 connections in 3 real seconds, 233 bytes read per connection\n";
        assert_eq!(parse_s_time(out), Some(1288));
        assert_eq!(parse_s_time("ERROR\nconnect: Connection refused\n"), None);
    }
}
