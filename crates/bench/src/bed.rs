//! What the packet and router benchmarks share: the topology with nginx on every host
//! ([`Web`]), `wrk` (its reporting script, parallel runs, their parsing and warm-up), CPU
//! accounting over the benchmark's namespaces, samples and their medians, measuring every
//! configuration in turn ([`Bench`], [`measure_in_turn`]), the report's tables, and the
//! command-line options both take ([`RunArgs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use switchyard_testbed::{Process, Testbed, Topology};

use crate::procfs::{loadavg, ns_inode, proc_ticks, which};

/// The VIP (the topology's default IPv4 VIP).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// nginx's plain port on every host.
pub(crate) const WEB_PORT: u16 = 8080;
/// Hosts behind the balancer or proxy.
pub(crate) const HOSTS: usize = 3;
/// Longest wait for processes to start (and, packet benchmark, hosts to become healthy).
pub(crate) const SETTLE: Duration = Duration::from_secs(30);
/// USER_HZ is 100 on every Linux architecture this runs on.
const CLOCK_TICK: f64 = 100.0;

/// One client, one LB unit and [`HOSTS`] hosts, each host's nginx serving `/1k` and `/64k`
/// (plain, and with TLS when asked), the working directory with wrk's reporting script, and
/// the namespaces whose processes the CPU figures count.
pub(crate) struct Web {
    // Field order is drop order: processes stop before the topology.
    nginx: Vec<Process>,
    pub(crate) topo: Topology,
    pub(crate) dir: tempfile::TempDir,
    lua: PathBuf,
    ns_inodes: BTreeSet<u64>,
}

impl Web {
    /// The topology and the working directory of the `name` benchmark; nginx starts with
    /// [`Web::start_nginx`].
    pub(crate) fn new(tb: &Testbed, name: &str) -> Result<Self> {
        let topo = Topology::builder()
            .clients(1)
            .lb_units(1)
            .hosts(HOSTS)
            .build(tb)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-{name}-bench-"))
            .tempdir()?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        std::fs::write(www.join("1k"), vec![b'a'; 1024])?;
        std::fs::write(www.join("64k"), vec![b'b'; 65536])?;
        let lua = dir.path().join("report.lua");
        std::fs::write(&lua, WRK_LUA)?;
        let ns_inodes = [topo.client(0).ns(), topo.router().ns(), topo.switch()]
            .into_iter()
            .chain(topo.lb_units().iter().map(|n| n.ns()))
            .chain(topo.hosts().iter().map(|n| n.ns()))
            .filter_map(|ns| ns_inode(&ns.path()))
            .collect();
        Ok(Self {
            nginx: Vec::new(),
            topo,
            dir,
            lua,
            ns_inodes,
        })
    }

    /// nginx on every host, on [`WEB_PORT`] and, with `tls_port`, with TLS there too (the
    /// directory's `cert.pem` and `key.pem`); waits until each one listens.
    pub(crate) fn start_nginx(&mut self, name: &str, tls_port: Option<u16>) -> Result<()> {
        let d = self.dir.path();
        for k in 0..HOSTS {
            let host = self.topo.host(k);
            let conf = d.join(format!("nginx-{k}.conf"));
            std::fs::write(&conf, host_nginx_conf(name, d, k, host.v4(), tls_port))?;
            let p = host
                .ns()
                .command(["nginx", "-e"])
                .arg(d.join(format!("nginx-{k}.error.log")))
                .arg("-c")
                .arg(&conf)
                .spawn()?;
            self.nginx.push(p);
        }
        for k in 0..HOSTS {
            let host = self.topo.host(k);
            for port in std::iter::once(WEB_PORT).chain(tls_port) {
                host.ns()
                    .wait_for_tcp((host.v4(), port).into(), SETTLE)
                    .with_context(|| format!("nginx on host{k} did not start"))?;
            }
        }
        Ok(())
    }

    /// CPU seconds so far: every process in the benchmark's namespaces plus the machine's
    /// softirq time, and the processes `own` (the balancer's or proxy's).
    pub(crate) fn cpu(&self, own: &[u32]) -> Cpu {
        let mut procs = 0u64;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Some(ino) = ns_inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))) else {
                    continue;
                };
                if self.ns_inodes.contains(&ino) {
                    procs += proc_ticks(pid).unwrap_or(0);
                }
            }
        }
        let softirq = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(7))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0);
        Cpu {
            total: (procs + softirq) as f64 / CLOCK_TICK,
            own: own.iter().filter_map(|&p| proc_ticks(p)).sum::<u64>() as f64 / CLOCK_TICK,
        }
    }

    /// One wrk window from the client namespace: a process per base URL (`scheme://addr`)
    /// in parallel, one thread and `connections` connections each, requesting `path`;
    /// `close`: one request per connection. `halfway` runs in the middle of the window.
    pub(crate) fn wrk<T>(
        &self,
        urls: &[String],
        path: &str,
        connections: usize,
        window: Duration,
        close: bool,
        halfway: impl FnOnce() -> T,
    ) -> Result<(Vec<WrkRun>, T)> {
        let secs = window.as_secs().max(1);
        let client = self.topo.client(0).ns();
        let (outs, mid) = thread::scope(|s| {
            let handles: Vec<_> = urls
                .iter()
                .map(|url| {
                    let mut cmd = client
                        .command(["wrk", "-t1"])
                        .arg(format!("-c{connections}"))
                        .arg(format!("-d{secs}s"))
                        .arg("--timeout")
                        .arg("2s")
                        .arg("-s")
                        .arg(&self.lua);
                    if close {
                        cmd = cmd.arg("-H").arg("Connection: close");
                    }
                    let cmd = cmd
                        .arg(format!("{url}{path}"))
                        .timeout(Duration::from_secs(secs + 30));
                    s.spawn(move || cmd.run())
                })
                .collect();
            thread::sleep(window / 2);
            let mid = halfway();
            let outs: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(switchyard_testbed::Error::Invalid(
                            "a wrk thread panicked".to_owned(),
                        ))
                    })
                })
                .collect();
            (outs, mid)
        });
        let mut runs = Vec::new();
        for out in outs {
            runs.push(parse_wrk(&out?)?);
        }
        Ok((runs, mid))
    }

    /// One second of new connections to every distinct base URL in parallel; each must
    /// have answered (and, `clean`, without an error).
    pub(crate) fn warm_up(
        &self,
        what: impl fmt::Display,
        urls: &[String],
        clean: bool,
    ) -> Result<()> {
        let mut urls = urls.to_vec();
        urls.dedup();
        let client = self.topo.client(0).ns();
        let outs: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = urls
                .iter()
                .map(|base| {
                    let url = format!("{base}/1k");
                    let cmd = client
                        .command(["wrk", "-t1", "-c2", "-d1s", "-H", "Connection: close", "-s"])
                        .arg(&self.lua)
                        .arg(&url)
                        .timeout(Duration::from_secs(15));
                    s.spawn(move || (url, cmd.run()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a wrk thread panicked"))
                })
                .collect()
        });
        for out in outs {
            let (url, out) = out?;
            let out = out.with_context(|| format!("warm-up through {what} to {url}"))?;
            let r = parse_wrk(&out)?;
            ensure!(
                r.requests > 0 && (!clean || r.errors == 0),
                "warm-up through {what} to {url} got no clean answer: {out}"
            );
        }
        Ok(())
    }
}

/// nginx on host `k`: `/1k` and `/64k` from `dir/www` on [`WEB_PORT`], and with TLS on
/// `tls_port`.
fn host_nginx_conf(
    name: &str,
    dir: &Path,
    k: usize,
    addr: IpAddr,
    tls_port: Option<u16>,
) -> String {
    let d = dir.display();
    let (tls, tls_listen) = match tls_port {
        Some(port) => (
            format!(
                "  ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n  ssl_protocols TLSv1.2 TLSv1.3;\n"
            ),
            format!("    listen {addr}:{port} ssl backlog=4096;\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"# {name} benchmark: host{k}
worker_processes 1;
daemon off;
user root;
pid {d}/nginx-{k}.pid;
error_log {d}/nginx-{k}.error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path {d}/nginx-{k}-body;
{tls}  server {{
    listen {addr}:{WEB_PORT} backlog=4096;
{tls_listen}    root {d}/www;
    location / {{ }}
  }}
}}
"#
    )
}

/// CPU seconds of a [`Web::cpu`] reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    total: f64,
    own: f64,
}

impl Cpu {
    /// CPU µs per request since `before`: everything, and the balancer's own processes.
    pub(crate) fn per_request(&self, before: &Cpu, requests: u64) -> (f64, f64) {
        let per = |s: f64| s / requests as f64 * 1e6;
        (per(self.total - before.total), per(self.own - before.own))
    }
}

/// The totals wrk's Lua `done` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkRun {
    /// Completed requests.
    pub requests: u64,
    /// Run time in µs.
    pub duration_us: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
    /// Median latency in µs.
    pub p50_us: f64,
    /// 99th percentile in µs.
    pub p99_us: f64,
}

/// Reads the `SYBENCH` line of [`WRK_LUA`].
pub fn parse_wrk(out: &str) -> Result<WrkRun> {
    let line = out
        .lines()
        .find(|l| l.starts_with("SYBENCH "))
        .with_context(|| format!("no SYBENCH line in wrk output: {out}"))?;
    let mut kv = BTreeMap::new();
    for pair in line.split_whitespace().skip(1) {
        if let Some((k, v)) = pair.split_once('=') {
            kv.insert(k, v.parse::<f64>().unwrap_or(0.0));
        }
    }
    let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
    Ok(WrkRun {
        requests: get("requests") as u64,
        duration_us: get("duration_us") as u64,
        errors: (get("connect") + get("read") + get("write") + get("timeout") + get("status"))
            as u64,
        p50_us: get("p50"),
        p99_us: get("p99"),
    })
}

/// wrk's reporting script: one machine-readable line.
const WRK_LUA: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SYBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p99=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// One measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests (or connections) per second; Gbit/s for the packet benchmark's bulk.
    pub rate: f64,
    /// Median latency in µs (mean of the wrk processes' medians; 0 for bulk, the mean
    /// time per connection for TLS handshakes).
    pub p50_us: f64,
    /// 99th percentile latency in µs (mean over the wrk processes).
    pub p99_us: f64,
    /// CPU µs per request: the namespaces' processes and softirq.
    pub cpu_us: f64,
    /// CPU µs per request of the balancer's or proxy's own processes, 0 without one.
    pub lb_cpu_us: f64,
    /// Requests the clients completed.
    pub requests: u64,
    /// Socket errors and non-2xx answers reported by the clients (iperf3 retransmits for
    /// bulk).
    pub errors: u64,
}

impl Sample {
    /// The sample of one wrk window: the processes' rates summed and their percentiles
    /// averaged, CPU per request between `cpu0` and `cpu1`; `None` if no request completed.
    pub(crate) fn of_wrk(runs: &[WrkRun], cpu0: &Cpu, cpu1: &Cpu) -> Option<Sample> {
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        if requests == 0 {
            return None;
        }
        let n = runs.len() as f64;
        let (cpu_us, lb_cpu_us) = cpu1.per_request(cpu0, requests);
        Some(Sample {
            rate: runs
                .iter()
                .map(|r| r.requests as f64 / (r.duration_us.max(1) as f64 / 1e6))
                .sum(),
            p50_us: runs.iter().map(|r| r.p50_us).sum::<f64>() / n,
            p99_us: runs.iter().map(|r| r.p99_us).sum::<f64>() / n,
            cpu_us,
            lb_cpu_us,
            requests,
            errors: runs.iter().map(|r| r.errors).sum(),
        })
    }
}

/// What a benchmark measures: a row of its report.
pub trait Metric: Copy + Ord {
    /// Row label.
    fn label(self) -> &'static str;
}

/// Results of one configuration `C` of a benchmark measuring metrics `M`, with memory
/// figures `Mem`.
#[derive(Debug, Clone)]
pub struct ConfigResult<C, M, Mem> {
    /// Which.
    pub config: C,
    /// Every repeat of every metric.
    pub samples: BTreeMap<M, Vec<Sample>>,
    /// Memory figures.
    pub memory: Mem,
    /// Measurements that failed, with why.
    pub failures: Vec<String>,
}

impl<C, M: Ord, Mem: Default> ConfigResult<C, M, Mem> {
    /// No sample yet.
    pub fn new(config: C) -> Self {
        Self {
            config,
            samples: BTreeMap::new(),
            memory: Mem::default(),
            failures: Vec::new(),
        }
    }
}

impl<C, M: Ord, Mem> ConfigResult<C, M, Mem> {
    /// The median sample (by rate) of `metric`; of an even number, the mean of the middle
    /// two (the larger request and error counts).
    pub fn median(&self, metric: M) -> Option<Sample> {
        let mut v = self.samples.get(&metric)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            return Some(v[mid]);
        }
        let (a, b) = (v[mid - 1], v[mid]);
        let avg = |x: f64, y: f64| (x + y) / 2.0;
        Some(Sample {
            rate: avg(a.rate, b.rate),
            p50_us: avg(a.p50_us, b.p50_us),
            p99_us: avg(a.p99_us, b.p99_us),
            cpu_us: avg(a.cpu_us, b.cpu_us),
            lb_cpu_us: avg(a.lb_cpu_us, b.lb_cpu_us),
            requests: a.requests.max(b.requests),
            errors: a.errors.max(b.errors),
        })
    }
}

/// Results of a run of [`measure_in_turn`].
#[derive(Debug, Clone)]
pub struct Report<C, M, Mem> {
    /// Window of each measurement.
    pub window: Duration,
    /// Repeats.
    pub repeats: usize,
    /// wrk connections in total (3 processes).
    pub connections: usize,
    /// Per configuration, in the order given.
    pub results: Vec<ConfigResult<C, M, Mem>>,
    /// Load average before and after.
    pub loadavg: (String, String),
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A benchmark's topology with what stays up for every configuration: sets each
/// configuration up, measures it and tears it down.
pub(crate) trait Bench {
    /// A configuration.
    type Config: Copy + fmt::Display;
    /// What is measured.
    type Metric: Metric;
    /// Memory figures of a configuration.
    type Memory: Default;
    /// A configuration while it is set up.
    type Active;

    /// Sets `config` up.
    fn activate(&self, config: Self::Config) -> Result<Self::Active>;
    /// Measures every metric once into `result` (a failed measurement goes to its
    /// `failures`; an error stops the run).
    fn measure_all(
        &self,
        active: &Self::Active,
        result: &mut ConfigResult<Self::Config, Self::Metric, Self::Memory>,
    ) -> Result<()>;
    /// Tears `active` down.
    fn deactivate(&self, active: Self::Active) -> Result<()>;
}

/// How [`measure_in_turn`] runs.
pub(crate) struct Sequence<'a, C> {
    /// The benchmark's name in progress lines (`packet-bench`).
    pub(crate) name: &'a str,
    /// Tools that must be installed.
    pub(crate) tools: &'a [&'a str],
    /// Configurations, in order.
    pub(crate) configs: &'a [C],
    /// Length of each measurement.
    pub(crate) window: Duration,
    /// How many times the whole sequence runs.
    pub(crate) repeats: usize,
    /// Connections of each of the three wrk processes.
    pub(crate) connections: usize,
}

/// Starts the bench and measures every configuration, one after the other, the whole
/// sequence `repeats` times (so that every configuration sees the machine's background
/// load about equally).
pub(crate) fn measure_in_turn<B: Bench>(
    seq: &Sequence<'_, B::Config>,
    start: impl FnOnce() -> Result<B>,
) -> Result<Report<B::Config, B::Metric, B::Memory>> {
    ensure!(!seq.configs.is_empty(), "no configuration to measure");
    for tool in seq.tools {
        ensure!(which(tool), "{tool} is not installed");
    }
    let started = Instant::now();
    let load_before = loadavg();
    let bench = start()?;
    let mut results: Vec<_> = seq.configs.iter().map(|&c| ConfigResult::new(c)).collect();
    for rep in 0..seq.repeats {
        for result in &mut results {
            let config = result.config;
            eprintln!("{}: repeat {}/{}: {config}", seq.name, rep + 1, seq.repeats);
            let active = bench
                .activate(config)
                .with_context(|| format!("set up {config}"))?;
            let measured = bench.measure_all(&active, result);
            let down = bench.deactivate(active);
            measured.with_context(|| format!("measure {config}"))?;
            down.with_context(|| format!("tear down {config}"))?;
        }
    }
    drop(bench);
    Ok(Report {
        window: seq.window,
        repeats: seq.repeats,
        connections: 3 * seq.connections,
        results,
        loadavg: (load_before, loadavg()),
        elapsed: started.elapsed(),
    })
}

// ---- report ------------------------------------------------------------------------------

/// `| label | cells |`.
pub(crate) fn row(out: &mut String, label: &str, cells: &[String]) {
    let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
}

/// A table's head: `| metric | columns |` and the alignment row.
pub(crate) fn columns(out: &mut String, columns: &[String]) {
    row(out, "metric", columns);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
}

/// A cell of a median, or a dash without one.
pub(crate) fn cell(sample: Option<Sample>, f: impl FnOnce(Sample) -> String) -> String {
    sample.map_or_else(|| "–".to_owned(), f)
}

impl<C: Copy + PartialEq + fmt::Display, M: Metric, Mem> Report<C, M, Mem> {
    /// The result of `config`.
    pub fn get(&self, config: C) -> Option<&ConfigResult<C, M, Mem>> {
        self.results.iter().find(|r| r.config == config)
    }

    /// Median rate of `a` over median rate of `b`.
    pub fn ratio(&self, a: C, b: C, metric: M) -> Option<f64> {
        let x = self.get(a)?.median(metric)?.rate;
        let y = self.get(b)?.median(metric)?.rate;
        (y > 0.0).then(|| x / y)
    }

    /// One cell per configuration.
    pub(crate) fn cells(&self, f: impl FnMut(&ConfigResult<C, M, Mem>) -> String) -> Vec<String> {
        self.results.iter().map(f).collect()
    }

    /// The run's line and the head of the main table (a column per configuration).
    pub(crate) fn begin(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{title} benchmark: {} s windows, median of {} repeat(s), {} wrk connections (3 processes); load average {} before, {} after; {:.0} s in all.\n",
            self.window.as_secs(),
            self.repeats,
            self.connections,
            self.loadavg.0,
            self.loadavg.1,
            self.elapsed.as_secs_f64()
        );
        columns(&mut out, &self.cells(|r| r.config.to_string()));
        out
    }

    /// The median rate of `metric` of every configuration, with its ratio to `base`'s.
    pub(crate) fn rate_row(
        &self,
        out: &mut String,
        metric: M,
        base: C,
        fmt: impl Fn(f64) -> String,
    ) {
        let cells = self.cells(|r| {
            cell(r.median(metric), |s| {
                match self.ratio(r.config, base, metric) {
                    Some(x) if r.config != base => format!("{} ({x:.2}×)", fmt(s.rate)),
                    _ => fmt(s.rate),
                }
            })
        });
        row(out, metric.label(), &cells);
    }

    /// CPU µs per request of `metric`, with the balancer's own share as `(own x)`.
    pub(crate) fn cpu_row(&self, out: &mut String, label: &str, metric: M, own: &str) {
        let cells = self.cells(|r| {
            cell(r.median(metric), |s| {
                if s.lb_cpu_us > 0.0 {
                    format!("{:.1} ({own} {:.1})", s.cpu_us, s.lb_cpu_us)
                } else {
                    format!("{:.1}", s.cpu_us)
                }
            })
        });
        row(out, label, &cells);
    }

    /// The failed measurements, if any.
    pub(crate) fn failures(&self, out: &mut String) {
        let failures: Vec<(C, &String)> = self
            .results
            .iter()
            .flat_map(|r| r.failures.iter().map(move |f| (r.config, f)))
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailed measurements (not in the medians):\n");
            for (config, f) in failures {
                let _ = writeln!(out, "- {config}: {f}");
            }
        }
    }

    /// Every repeat of every metric, each as `run(metric, sample)`.
    pub(crate) fn every_repeat(
        &self,
        out: &mut String,
        title: &str,
        run: impl Fn(M, &Sample) -> String,
    ) {
        let _ = writeln!(out, "\nEvery repeat ({title}):\n");
        for r in &self.results {
            for (&metric, v) in &r.samples {
                let runs: Vec<String> = v.iter().map(|s| run(metric, s)).collect();
                let _ = writeln!(
                    out,
                    "- {} · {}: {}",
                    r.config,
                    metric.label(),
                    runs.join(", ")
                );
            }
        }
    }
}

/// Command-line options of the namespace benchmarks (`packet-bench`, `router-bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The switchyard binary to measure (a release build).
    #[arg(long, default_value = "target/release/switchyard")]
    pub switchyard: PathBuf,
    /// 2 s windows and one repeat (about two minutes).
    #[arg(long)]
    pub quick: bool,
    /// Seconds per measurement (default 10; --quick 2).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Repeats of the whole sequence; the report gives medians (default 3; --quick 1).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Connections per wrk process (three processes; default 16).
    #[arg(long)]
    pub connections: Option<usize>,
}

impl RunArgs {
    /// Overrides the window, repeats and connections given (at least 1 each).
    pub fn apply(&self, window: &mut Duration, repeats: &mut usize, connections: &mut usize) {
        if let Some(s) = self.seconds {
            *window = Duration::from_secs(s.max(1));
        }
        *repeats = self.repeats.unwrap_or(*repeats).max(1);
        *connections = self.connections.unwrap_or(*connections).max(1);
    }
}

/// Runs `bench` in a fresh testbed called `name` and tears it down, whether it succeeded
/// or not.
pub fn in_testbed<T>(name: &str, bench: impl FnOnce(&Testbed) -> Result<T>) -> Result<T> {
    let tb = Testbed::new(name).context("the benchmark needs network namespaces (run as root)")?;
    let result = bench(&tb);
    tb.teardown()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_line() {
        let r = parse_wrk(
            "Running 1s test\nSYBENCH requests=100 duration_us=1000000 bytes=5 connect=1 read=2 write=0 status=3 timeout=0 p50=120 p99=900\n",
        )
        .expect("parse");
        assert_eq!(
            r,
            WrkRun {
                requests: 100,
                duration_us: 1_000_000,
                errors: 6,
                p50_us: 120.0,
                p99_us: 900.0
            }
        );
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn host_configurations_listen_with_tls_when_asked() {
        let dir = Path::new("/tmp/x");
        let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 200, 100));
        let tls = host_nginx_conf("router", dir, 0, addr, Some(8443));
        assert!(tls.contains("198.18.200.100:8443 ssl"), "{tls}");
        let plain = host_nginx_conf("packet", dir, 0, addr, None);
        assert!(!plain.contains("ssl"), "{plain}");
        assert!(plain.contains("198.18.200.100:8080 backlog"), "{plain}");
    }
}
