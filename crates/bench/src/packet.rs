//! The packet load-balancing benchmark of issue 4, on real processes in one
//! testbed topology:
//!
//! ```text
//!  client0 ── router ── lb0 ── switch ── host0 (nginx :8080, iperf3 -s :5201)
//!                                    ├── host1 (nginx :8080)
//!                                    └── host2 (nginx :8080)
//! ```
//!
//! Every configuration ([`Lb`]) is measured on the same topology, one after
//! the other, and the whole sequence is repeated ([`Options::repeats`]) so
//! that every configuration sees the machine's background load about
//! equally; the report gives the median of the repeats:
//!
//! - [`Lb::Direct`]: no balancer, the client talks to the hosts' own
//!   addresses (through the router; one hop less than through a unit);
//! - [`Lb::Switchyard`]: `switchyard lb` all-in-one (forwarder, classifier,
//!   health cache) in `lb0`, full NAT, at one attach point; the hosts'
//!   `switchyard agent`s report them healthy;
//! - [`Lb::Nftables`]: `dnat` with `numgen inc mod 3` in `lb0`'s prerouting
//!   (conntrack), the hosts route the client prefix back through `lb0`;
//! - [`Lb::Haproxy`]: HAProxy in TCP mode in `lb0` (roundrobin), bound to
//!   the VIP on `lb0`'s loopback.
//!
//! Load: three `wrk` processes in the client namespace, one thread and
//! [`Options::connections`] connections each; without a balancer each one
//! targets one host, through a balancer all three target the VIP, so the
//! client side is the same. `wrk` runs a small Lua script that prints its
//! totals and latency percentiles; the report sums the requests and
//! averages the three processes' percentiles. New connections: the same
//! with `Connection: close` (nginx closes after the answer). Bulk: one
//! `iperf3` stream to host0 (the VIP's port 5201 maps to host0 only).
//!
//! CPU per request: user + system time of every process in the benchmark's
//! namespaces (`/proc/<pid>/stat`; wrk, nginx, the balancer, the agents)
//! plus the machine's softirq time (`/proc/stat`), over the window, divided
//! by the requests. Memory per tracked flow: see [`Memory`].
//!
//! Nothing here asserts a speed: the report says what was measured.

use crate::procfs::{loadavg, ns_inode, proc_ticks, rss_bytes, which};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use switchyard_testbed::{Netns, Process, Testbed, Topology};

use crate::http;

/// The VIP (the topology's default IPv4 VIP).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// The web port on the VIP.
const VIP_PORT: u16 = 80;
/// nginx's port on every host.
const WEB_PORT: u16 = 8080;
/// iperf3's port, on host0 and on the VIP.
const BULK_PORT: u16 = 5201;
/// Hosts behind the balancer.
const HOSTS: usize = 3;
/// The client's prefix (client0's link), routed back through the unit for
/// nftables DNAT.
const CLIENT_NET: &str = "198.18.1.0/24";
/// Every unit's admin API, on its own namespace's loopback (the default).
const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// The cluster key of the throw-away benchmark cluster.
const SECRET: &str = "switchyard packet benchmark cluster: not a production secret";
/// Longest wait for processes to start and hosts to become healthy.
const SETTLE: Duration = Duration::from_secs(30);
/// Full-NAT source ports: wide, so that ten seconds of new connections with
/// the default 10 s FIN linger never run out (about 51,000 per host).
const NAT_PORTS: &str = "10000-60999";

/// A load balancer configuration on the shared topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lb {
    /// No balancer: the client talks to the hosts (the limit).
    Direct,
    /// `switchyard lb`, all-in-one, full NAT, at this attach point.
    Switchyard(Attach),
    /// nftables DNAT round robin with conntrack.
    Nftables,
    /// HAProxy, TCP mode, round robin.
    Haproxy,
}

/// The forwarder's attach point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attach {
    /// tc ingress (clsact + cls_bpf).
    Tc,
    /// XDP in front of tc.
    XdpTc,
    /// XDP only.
    Xdp,
}

impl Attach {
    /// The configuration's spelling.
    pub fn config(self) -> &'static str {
        match self {
            Self::Tc => "tc",
            Self::XdpTc => "xdp+tc",
            Self::Xdp => "xdp",
        }
    }
}

impl fmt::Display for Lb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Switchyard(a) => write!(f, "switchyard {}", a.config()),
            Self::Nftables => f.write_str("nftables"),
            Self::Haproxy => f.write_str("haproxy"),
        }
    }
}

impl std::str::FromStr for Lb {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "direct" => Self::Direct,
            "tc" | "switchyard-tc" => Self::Switchyard(Attach::Tc),
            "xdp+tc" | "switchyard-xdp+tc" => Self::Switchyard(Attach::XdpTc),
            "xdp" | "switchyard-xdp" => Self::Switchyard(Attach::Xdp),
            "nft" | "nftables" => Self::Nftables,
            "haproxy" => Self::Haproxy,
            other => bail!(
                "unknown configuration {other:?} (direct, tc, xdp+tc, xdp, nftables, haproxy)"
            ),
        })
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Keep-alive requests of a 1 KiB file.
    KeepAlive1k,
    /// Keep-alive requests of a 64 KiB file.
    KeepAlive64k,
    /// One request (1 KiB) per connection.
    NewConnections,
    /// One iperf3 stream.
    Bulk,
}

impl Metric {
    /// Every metric, in measuring order (new connections last, so the flow
    /// table it leaves behind is what the memory figure reads).
    pub const ALL: [Metric; 4] = [
        Self::KeepAlive1k,
        Self::KeepAlive64k,
        Self::Bulk,
        Self::NewConnections,
    ];

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Self::KeepAlive1k => "keep-alive 1 KiB (req/s)",
            Self::KeepAlive64k => "keep-alive 64 KiB (req/s)",
            Self::NewConnections => "new connections (conn/s)",
            Self::Bulk => "bulk, 1 stream (Gbit/s)",
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
    /// Configurations, in order.
    pub configs: Vec<Lb>,
}

impl Options {
    /// The full run of `bench/packet.sh`.
    pub fn full(switchyard: PathBuf) -> Self {
        Self {
            switchyard,
            window: Duration::from_secs(10),
            repeats: 3,
            connections: 16,
            configs: vec![
                Lb::Direct,
                Lb::Switchyard(Attach::Tc),
                Lb::Switchyard(Attach::XdpTc),
                Lb::Switchyard(Attach::Xdp),
                Lb::Nftables,
                Lb::Haproxy,
            ],
        }
    }

    /// `bench/packet.sh --quick`: the same shape, 2 s windows, one repeat.
    pub fn quick(switchyard: PathBuf) -> Self {
        Self {
            window: Duration::from_secs(2),
            repeats: 1,
            ..Self::full(switchyard)
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests (or connections) per second; Gbit/s for bulk.
    pub rate: f64,
    /// Median latency in µs (mean of the wrk processes' medians; 0 for bulk).
    pub p50_us: f64,
    /// 99th percentile latency in µs (mean over the wrk processes).
    pub p99_us: f64,
    /// CPU µs per request: the namespaces' processes and softirq.
    pub cpu_us: f64,
    /// CPU µs per request of the balancer's own process (switchyard lb,
    /// haproxy), 0 without one.
    pub lb_cpu_us: f64,
    /// Requests the clients completed.
    pub requests: u64,
    /// Socket errors and non-2xx answers reported by the clients.
    pub errors: u64,
}

/// Memory per tracked flow of one configuration, read right after the
/// new-connection window (when the most flows are tracked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Flows (connections) tracked at that moment.
    pub flows: u64,
    /// Kernel bytes per flow: switchyard's BPF maps (`memlock` of its map
    /// fds, the routes map allocates per entry) or a conntrack entry
    /// (slab object size); HAProxy: none measured.
    pub kernel_per_flow: Option<f64>,
    /// User-space bytes per flow (VmRSS growth / flows).
    pub user_per_flow: Option<f64>,
    /// How it was measured.
    pub detail: String,
}

/// Results of one configuration.
#[derive(Debug, Clone)]
pub struct ConfigResult {
    /// Which.
    pub lb: Lb,
    /// Every repeat of every metric.
    pub samples: BTreeMap<Metric, Vec<Sample>>,
    /// Memory per flow (last repeat).
    pub memory: Option<Memory>,
    /// Measurements that failed, with why.
    pub failures: Vec<String>,
}

impl ConfigResult {
    /// The median sample (by rate) of `metric`.
    pub fn median(&self, metric: Metric) -> Option<Sample> {
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

/// Results of [`run`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Window and repeats.
    pub window: Duration,
    /// Repeats.
    pub repeats: usize,
    /// wrk connections in total (3 processes).
    pub connections: usize,
    /// Per configuration, in the order given.
    pub results: Vec<ConfigResult>,
    /// Load average before and after.
    pub loadavg: (String, String),
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs the benchmark on a fresh topology in `tb`.
pub fn run(tb: &Testbed, opts: &Options) -> Result<Report> {
    ensure!(
        opts.switchyard.is_file(),
        "no switchyard binary at {} (build it first)",
        opts.switchyard.display()
    );
    ensure!(!opts.configs.is_empty(), "no configuration to measure");
    for tool in ["nginx", "wrk", "iperf3"] {
        ensure!(which(tool), "{tool} is not installed");
    }
    if opts.configs.contains(&Lb::Haproxy) {
        ensure!(which("haproxy"), "haproxy is not installed");
    }
    let started = Instant::now();
    let load_before = loadavg();
    let bed = Bed::start(tb, opts)?;
    let mut results: Vec<ConfigResult> = opts
        .configs
        .iter()
        .map(|&lb| ConfigResult {
            lb,
            samples: BTreeMap::new(),
            memory: None,
            failures: Vec::new(),
        })
        .collect();
    for rep in 0..opts.repeats {
        for result in &mut results {
            eprintln!(
                "packet-bench: repeat {}/{}: {}",
                rep + 1,
                opts.repeats,
                result.lb
            );
            let active = bed
                .activate(result.lb)
                .with_context(|| format!("set up {}", result.lb))?;
            let measured = bed.measure_all(&active, result);
            let down = bed.deactivate(active);
            measured.with_context(|| format!("measure {}", result.lb))?;
            down.with_context(|| format!("tear down {}", result.lb))?;
        }
    }
    drop(bed);
    Ok(Report {
        window: opts.window,
        repeats: opts.repeats,
        connections: 3 * opts.connections,
        results,
        loadavg: (load_before, loadavg()),
        elapsed: started.elapsed(),
    })
}

/// The topology with its servers and agents (they stay up for every
/// configuration).
struct Bed {
    // Field order is drop order: processes stop before the topology.
    agents: Vec<Process>,
    nginx: Vec<Process>,
    iperf: std::sync::Mutex<Process>,
    topo: Topology,
    opts: Options,
    dir: tempfile::TempDir,
    config: PathBuf,
    lua: PathBuf,
    ns_inodes: BTreeSet<u64>,
}

/// A configuration while it is set up.
struct Active {
    lb: Lb,
    process: Option<Process>,
}

impl Bed {
    fn start(tb: &Testbed, opts: &Options) -> Result<Self> {
        let topo = Topology::builder()
            .clients(1)
            .lb_units(1)
            .hosts(HOSTS)
            .build(tb)?;
        // Frames the forwarder reinjects or redirects with XDP reach a veth
        // only when its peer has NAPI (docs/LB.md): GRO on the router's and
        // the switch's ports toward the unit, as the cluster tests do.
        topo.router()
            .ns()
            .run(["ethtool", "-K", "lb0", "gro", "on"])?;
        topo.switch().run(["ethtool", "-K", "lb0", "gro", "on"])?;
        let dir = tempfile::Builder::new()
            .prefix("switchyard-packet-bench-")
            .tempdir()?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        std::fs::write(www.join("1k"), vec![b'a'; 1024])?;
        std::fs::write(www.join("64k"), vec![b'b'; 65536])?;
        let lua = dir.path().join("report.lua");
        std::fs::write(&lua, WRK_LUA)?;

        let mut nginx = Vec::new();
        for k in 0..HOSTS {
            let host = topo.host(k);
            let conf = dir.path().join(format!("nginx-{k}.conf"));
            std::fs::write(&conf, nginx_conf(dir.path(), k, host.v4(), &www))?;
            let err = dir.path().join(format!("nginx-{k}.error.log"));
            let p = host
                .ns()
                .command(["nginx", "-e"])
                .arg(&err)
                .arg("-c")
                .arg(&conf)
                .spawn()?;
            nginx.push(p);
        }
        for k in 0..HOSTS {
            let host = topo.host(k);
            host.ns()
                .wait_for_tcp(SocketAddr::new(host.v4(), WEB_PORT), SETTLE)
                .with_context(|| format!("nginx on host{k} did not start"))?;
        }
        let iperf = std::sync::Mutex::new(start_iperf(&topo)?);

        std::fs::write(dir.path().join("cluster.key"), SECRET)?;
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, cluster_toml(&topo, Attach::Tc))?;
        let mut agents = Vec::new();
        for k in 0..HOSTS {
            let mut cmd = topo
                .host(k)
                .ns()
                .command([opts.switchyard.as_os_str()])
                .arg("agent")
                .arg("--config")
                .arg(&config)
                .arg("--host")
                .arg(format!("web-{}", k + 1));
            if k == 0 {
                cmd = cmd.arg("--host").arg("bulk-1");
            }
            let p = cmd
                .arg("--socket")
                .arg(dir.path().join(format!("agent-{k}.sock")))
                .arg("--log-level")
                .arg("info")
                .env("RUST_LOG", "info")
                .spawn()?;
            p.wait_for_output("agent ready", SETTLE)?;
            agents.push(p);
        }
        // Health comes from the agents' local API (no check probing the
        // servers during measurements).
        for k in 0..HOSTS {
            let socket = dir.path().join(format!("agent-{k}.sock"));
            let mut rows = vec![(format!("web-{}", k + 1), "web")];
            if k == 0 {
                rows.push(("bulk-1".to_owned(), "bulk"));
            }
            for (host, service) in rows {
                let path = format!("/v1/hosts/{host}/apps/{service}/status");
                let r = http::unix(
                    &socket,
                    "PUT",
                    &path,
                    Some(r#"{"health":"healthy","load":10}"#),
                )?;
                ensure!(r.status < 300, "PUT {path}: {} {}", r.status, r.body);
            }
        }
        let ns_inodes = [topo.client(0).ns(), topo.router().ns(), topo.switch()]
            .into_iter()
            .chain(topo.lb_units().iter().map(|n| n.ns()))
            .chain(topo.hosts().iter().map(|n| n.ns()))
            .filter_map(|ns| ns_inode(&ns.path()))
            .collect();
        Ok(Self {
            agents,
            nginx,
            iperf,
            topo,
            opts: opts.clone(),
            dir,
            config,
            lua,
            ns_inodes,
        })
    }

    fn lb_ns(&self) -> &Netns {
        self.topo.lb_unit(0).ns()
    }

    fn activate(&self, lb: Lb) -> Result<Active> {
        let mut active = Active { lb, process: None };
        match lb {
            Lb::Direct => {}
            Lb::Switchyard(attach) => {
                if attach != Attach::Tc {
                    self.senders_tx_checksum(false)?;
                }
                std::fs::write(&self.config, cluster_toml(&self.topo, attach))?;
                let p = self
                    .lb_ns()
                    .command([self.opts.switchyard.as_os_str()])
                    .arg("lb")
                    .arg("--config")
                    .arg(&self.config)
                    .arg("--unit")
                    .arg("lb-1")
                    .arg("--log-level")
                    .arg("info")
                    .env("RUST_LOG", "info")
                    .spawn()?;
                p.wait_for_output("lb ready", SETTLE)?;
                active.process = Some(p);
                self.wait_healthy()?;
            }
            Lb::Nftables => {
                self.lb_ns()
                    .command(["nft", "-f", "-"])
                    .input(nft_rules(&self.topo))
                    .run()?;
                for h in self.topo.hosts() {
                    h.ns()
                        .run(["ip", "route", "replace", CLIENT_NET, "via", "198.18.200.10"])?;
                }
            }
            Lb::Haproxy => {
                self.lb_ns()
                    .run(["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
                let cfg = self.dir.path().join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_cfg(&self.topo))?;
                let p = self
                    .lb_ns()
                    .command(["haproxy", "-db", "-f"])
                    .arg(&cfg)
                    .spawn()?;
                active.process = Some(p);
                self.lb_ns()
                    .wait_for_tcp(SocketAddr::new(VIP.into(), VIP_PORT), SETTLE)?;
            }
        }
        // Warm-up: a few connections through the path, checked.
        self.warm_up(lb)?;
        Ok(active)
    }

    fn deactivate(&self, active: Active) -> Result<()> {
        if let Some(p) = &active.process {
            p.terminate()?;
        }
        match active.lb {
            Lb::Direct => {}
            Lb::Switchyard(attach) => {
                if attach != Attach::Tc {
                    self.senders_tx_checksum(true)?;
                }
                // The data plane must be gone with the process.
                for ifname in ["eth0", "eth1"] {
                    let link = self.lb_ns().run(["ip", "-d", "link", "show", ifname])?;
                    ensure!(
                        !link.contains("prog/xdp"),
                        "an XDP program is still attached to {ifname}: {link}"
                    );
                }
            }
            Lb::Nftables => {
                self.lb_ns()
                    .run(["nft", "delete", "table", "ip", "sybench"])?;
                for h in self.topo.hosts() {
                    h.ns().run(["ip", "route", "del", CLIENT_NET])?;
                }
            }
            Lb::Haproxy => {
                self.lb_ns()
                    .run(["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
            }
        }
        Ok(())
    }

    /// Turns tx checksum offload of the client's and the hosts' interfaces
    /// off (before an XDP configuration) or back on. On veth a locally sent
    /// packet carries only the pseudo-header sum (CHECKSUM_PARTIAL), which
    /// an XDP program cannot see; real NICs deliver full checksums. This
    /// also turns TSO off on those senders while it lasts.
    fn senders_tx_checksum(&self, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for node in std::iter::once(self.topo.client(0)).chain(self.topo.hosts()) {
            node.ns().run(["ethtool", "-K", "eth0", "tx", state])?;
        }
        Ok(())
    }

    /// Waits until the unit holds every row healthy.
    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let doc =
                http::tcp_in(self.lb_ns(), ADMIN, "GET", "/v1/hosts", None).and_then(|r| r.json());
            let healthy = doc.as_ref().map_or(0, |d| {
                d["hosts"].as_array().map_or(0, |hosts| {
                    hosts
                        .iter()
                        .flat_map(|h| h["rows"].as_array().into_iter().flatten())
                        .filter(|r| r["health"] == "healthy")
                        .count()
                })
            });
            if healthy == HOSTS + 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the unit did not see every host healthy within {SETTLE:?}: {doc:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// One second of new connections to every distinct target, in
    /// parallel; each must have answered.
    fn warm_up(&self, lb: Lb) -> Result<()> {
        let mut targets = self.targets(lb);
        targets.dedup();
        let client = self.topo.client(0).ns();
        let outs: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|t| {
                    let url = format!("http://{t}/1k");
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
            let out = out.with_context(|| format!("warm-up through {lb} to {url}"))?;
            let r = parse_wrk(&out)?;
            ensure!(
                r.requests > 0,
                "warm-up through {lb} to {url} got no answer: {out}"
            );
        }
        Ok(())
    }

    /// The three wrk targets.
    fn targets(&self, lb: Lb) -> Vec<SocketAddr> {
        match lb {
            Lb::Direct => (0..HOSTS)
                .map(|k| SocketAddr::new(self.topo.host(k).v4(), WEB_PORT))
                .collect(),
            _ => vec![SocketAddr::new(VIP.into(), VIP_PORT); 3],
        }
    }

    fn bulk_target(&self, lb: Lb) -> SocketAddr {
        match lb {
            Lb::Direct => SocketAddr::new(self.topo.host(0).v4(), BULK_PORT),
            _ => SocketAddr::new(VIP.into(), BULK_PORT),
        }
    }

    fn measure_all(&self, active: &Active, result: &mut ConfigResult) -> Result<()> {
        let lb_pid = active.process.as_ref().map(Process::pid);
        let mut mem_before = None;
        for metric in Metric::ALL {
            if metric == Metric::NewConnections {
                mem_before = Some(self.memory_probe(active.lb, lb_pid)?);
            }
            let measured = match metric {
                Metric::Bulk => self.bulk(active.lb).map(|s| (s, None)),
                _ => self.wrk(active.lb, metric, lb_pid),
            };
            // A failed measurement is reported, not fatal: the other
            // metrics and configurations still run.
            let (sample, mid) = match measured {
                Ok(m) => m,
                Err(e) => {
                    let mut note = format!("{}: {e:#}", metric.label());
                    if let Lb::Switchyard(_) = active.lb
                        && let Ok(flows) =
                            http::tcp_in(self.lb_ns(), ADMIN, "GET", "/v1/flows?top=5", None)
                    {
                        let _ = write!(note, "\n  /v1/flows at that moment: {}", flows.body);
                    }
                    eprintln!("packet-bench: {} failed: {note}", active.lb);
                    result.failures.push(note);
                    if metric == Metric::Bulk {
                        self.restart_iperf()?;
                    }
                    continue;
                }
            };
            result.samples.entry(metric).or_default().push(sample);
            if let (Lb::Haproxy, Metric::KeepAlive64k, Some(mid)) = (active.lb, metric, mid) {
                result.memory = Some(mid);
            }
        }
        if let Some(before) = mem_before {
            let after = self.memory_probe(active.lb, lb_pid)?;
            if let Some(m) = memory_per_flow(active.lb, &before, &after) {
                result.memory = Some(m);
            }
        }
        Ok(())
    }

    /// One wrk window of `metric`: three processes in parallel. Returns the
    /// sample and, for HAProxy, its memory per connection sampled mid-window.
    fn wrk(&self, lb: Lb, metric: Metric, lb_pid: Option<u32>) -> Result<(Sample, Option<Memory>)> {
        let path = match metric {
            Metric::KeepAlive64k => "/64k",
            _ => "/1k",
        };
        let secs = self.opts.window.as_secs().max(1);
        let client = self.topo.client(0).ns();
        let rss_idle = lb_pid.and_then(rss_bytes);
        let cpu0 = self.cpu_snapshot(lb_pid);
        let started = Instant::now();
        let (outs, rss_mid) = thread::scope(|s| {
            let handles: Vec<_> = self
                .targets(lb)
                .into_iter()
                .map(|t| {
                    let mut cmd = client
                        .command(["wrk", "-t1"])
                        .arg(format!("-c{}", self.opts.connections))
                        .arg(format!("-d{secs}s"))
                        .arg("--timeout")
                        .arg("2s")
                        .arg("-s")
                        .arg(&self.lua);
                    if metric == Metric::NewConnections {
                        cmd = cmd.arg("-H").arg("Connection: close");
                    }
                    let cmd = cmd
                        .arg(format!("http://{t}{path}"))
                        .timeout(Duration::from_secs(secs + 30));
                    s.spawn(move || cmd.run())
                })
                .collect();
            thread::sleep(self.opts.window / 2);
            let rss_mid = lb_pid.and_then(rss_bytes);
            let outs: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
                .collect();
            (outs, rss_mid)
        });
        let elapsed = started.elapsed();
        let cpu1 = self.cpu_snapshot(lb_pid);
        let mut runs = Vec::new();
        for out in outs {
            runs.push(parse_wrk(&out?)?);
        }
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        ensure!(requests > 0, "{lb}: no request completed ({metric:?})");
        let rate: f64 = runs
            .iter()
            .map(|r| r.requests as f64 / (r.duration_us as f64 / 1e6))
            .sum();
        let n = runs.len() as f64;
        let (cpu, lb_cpu) = cpu1.since(&cpu0);
        let sample = Sample {
            rate,
            p50_us: runs.iter().map(|r| r.p50_us).sum::<f64>() / n,
            p99_us: runs.iter().map(|r| r.p99_us).sum::<f64>() / n,
            cpu_us: cpu / requests as f64 * 1e6,
            lb_cpu_us: lb_cpu / requests as f64 * 1e6,
            requests,
            errors: runs.iter().map(|r| r.errors).sum(),
        };
        let _ = elapsed;
        let memory = match (lb, rss_idle, rss_mid) {
            (Lb::Haproxy, Some(idle), Some(mid)) => {
                let conns = 3 * self.opts.connections as u64;
                Some(Memory {
                    flows: conns,
                    kernel_per_flow: None,
                    user_per_flow: Some(mid.saturating_sub(idle) as f64 / conns as f64),
                    detail: format!(
                        "VmRSS {} KiB idle → {} KiB with {conns} proxied keep-alive connections (64 KiB run)",
                        idle / 1024,
                        mid / 1024
                    ),
                })
            }
            _ => None,
        };
        Ok((sample, memory))
    }

    /// A new iperf3 server after a failed run (the old one may still be
    /// busy with the client that gave up).
    fn restart_iperf(&self) -> Result<()> {
        let mut p = self
            .iperf
            .lock()
            .map_err(|_| anyhow::anyhow!("iperf lock poisoned"))?;
        p.kill()?;
        *p = start_iperf(&self.topo)?;
        Ok(())
    }

    /// One iperf3 stream for the window.
    fn bulk(&self, lb: Lb) -> Result<Sample> {
        let secs = self.opts.window.as_secs().max(1);
        let target = self.bulk_target(lb);
        let out = self
            .topo
            .client(0)
            .ns()
            .command(["iperf3", "-J", "--connect-timeout", "3000", "-c"])
            .arg(target.ip().to_string())
            .arg("-p")
            .arg(target.port().to_string())
            .arg("-t")
            .arg(secs.to_string())
            .timeout(Duration::from_secs(secs + 10))
            .output()?;
        let doc: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("iperf3 output: {} {}", out.stdout, out.stderr))?;
        if let Some(e) = doc["error"].as_str() {
            bail!("iperf3 through {lb}: {e}");
        }
        let bps = doc["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 JSON without end.sum_received")?;
        let retransmits = doc["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        Ok(Sample {
            rate: bps / 1e9,
            requests: 1,
            errors: retransmits,
            ..Sample::default()
        })
    }

    /// CPU seconds so far: every process in the benchmark's namespaces, the
    /// machine's softirq time, and the balancer's process.
    fn cpu_snapshot(&self, lb_pid: Option<u32>) -> CpuSnapshot {
        let tick = clock_tick();
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
        CpuSnapshot {
            total: (procs + softirq) as f64 / tick,
            lb: lb_pid.and_then(proc_ticks).unwrap_or(0) as f64 / tick,
        }
    }

    fn memory_probe(&self, lb: Lb, lb_pid: Option<u32>) -> Result<Probe> {
        let mut p = Probe::default();
        match lb {
            Lb::Switchyard(_) => {
                let pid = lb_pid.context("no switchyard process")?;
                p.rss = rss_bytes(pid).unwrap_or(0);
                p.kernel = bpf_memlock(pid);
                let flows =
                    http::tcp_in(self.lb_ns(), ADMIN, "GET", "/v1/flows?top=0", None)?.json()?;
                p.flows = flows["classifier"]["connections"].as_u64().unwrap_or(0);
                p.routes = flows["forwarder"]["flows"].as_u64().unwrap_or(0);
            }
            Lb::Nftables => {
                p.flows = self
                    .lb_ns()
                    .sysctl_value("net.netfilter.nf_conntrack_count")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                p.kernel = slab_object_size("nf_conntrack").unwrap_or(0);
            }
            _ => {}
        }
        Ok(p)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for p in self.agents.iter().chain(&self.nginx) {
            let _ = p.terminate();
        }
        if let Ok(p) = self.iperf.lock() {
            let _ = p.terminate();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    total: f64,
    lb: f64,
}

impl CpuSnapshot {
    fn since(&self, before: &CpuSnapshot) -> (f64, f64) {
        (self.total - before.total, self.lb - before.lb)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    flows: u64,
    routes: u64,
    rss: u64,
    kernel: u64,
}

fn memory_per_flow(lb: Lb, before: &Probe, after: &Probe) -> Option<Memory> {
    match lb {
        Lb::Switchyard(_) => {
            let flows = after.flows.saturating_sub(before.flows);
            let per =
                |a: u64, b: u64| (flows > 0).then(|| a.saturating_sub(b) as f64 / flows as f64);
            Some(Memory {
                flows: after.flows,
                kernel_per_flow: per(after.kernel, before.kernel),
                user_per_flow: per(after.rss, before.rss),
                detail: format!(
                    "{} → {} connections ({} routing-table entries); BPF maps' memlock {} → {} KiB; VmRSS {} → {} KiB",
                    before.flows,
                    after.flows,
                    after.routes,
                    before.kernel / 1024,
                    after.kernel / 1024,
                    before.rss / 1024,
                    after.rss / 1024
                ),
            })
        }
        Lb::Nftables => Some(Memory {
            flows: after.flows,
            kernel_per_flow: (after.kernel > 0).then_some(after.kernel as f64),
            user_per_flow: None,
            detail: format!(
                "{} conntrack entries; nf_conntrack slab object {} B",
                after.flows, after.kernel
            ),
        }),
        _ => None,
    }
}

fn panicked() -> switchyard_testbed::Error {
    switchyard_testbed::Error::Invalid("a wrk thread panicked".to_owned())
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

fn nginx_conf(dir: &Path, k: usize, addr: IpAddr, www: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# packet benchmark: host{k}
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
  server {{
    listen {addr}:{WEB_PORT} backlog=4096;
    root {www};
    location / {{ }}
  }}
}}
"#,
        www = www.display()
    )
}

fn cluster_toml(topo: &Topology, attach: Attach) -> String {
    let unit = topo.lb_unit(0).interfaces()[1].v4();
    let mut t = format!(
        r#"# packet benchmark cluster
[cluster]
id = "packet-bench"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "{unit}"
roles = ["forwarder", "classifier", "health-cache"]
[cluster.units.forwarder]
interfaces = ["eth0", "eth1"]
attach = "{attach}"
nat_sources = ["{unit}"]
nat_ports = "{NAT_PORTS}"

[[services]]
name = "web"
vip = "{VIP}:{VIP_PORT}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "bulk"
vip = "{VIP}:{BULK_PORT}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "bulk"

[[pools]]
name = "web"
"#,
        attach = attach.config()
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
    let _ = write!(
        t,
        "\n[[pools]]\nname = \"bulk\"\n\n[[pools.hosts]]\nid = 201\nname = \"bulk-1\"\naddress = \"{}:{BULK_PORT}\"\napp = \"bulk\"\n",
        topo.host(0).v4()
    );
    t
}

fn nft_rules(topo: &Topology) -> String {
    let hosts: Vec<String> = (0..HOSTS)
        .map(|k| format!("{k} : {} . {WEB_PORT}", topo.host(k).v4()))
        .collect();
    format!(
        "table ip sybench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} tcp dport {VIP_PORT} dnat to numgen inc mod {HOSTS} map {{ {} }}\n    ip daddr {VIP} tcp dport {BULK_PORT} dnat to {}:{BULK_PORT}\n  }}\n}}\n",
        hosts.join(", "),
        topo.host(0).v4()
    )
}

fn haproxy_cfg(topo: &Topology) -> String {
    let mut t = format!(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\nfrontend web\n  bind {VIP}:{VIP_PORT}\n  default_backend web\n\nbackend web\n  balance roundrobin\n"
    );
    for k in 0..HOSTS {
        let _ = writeln!(t, "  server web-{} {}:{WEB_PORT}", k + 1, topo.host(k).v4());
    }
    let _ = write!(
        t,
        "\nfrontend bulk\n  bind {VIP}:{BULK_PORT}\n  default_backend bulk\n\nbackend bulk\n  server bulk-1 {}:{BULK_PORT}\n",
        topo.host(0).v4()
    );
    t
}

/// `iperf3 -s` on host0, listening.
fn start_iperf(topo: &Topology) -> Result<Process> {
    let h0 = topo.host(0);
    let p = h0
        .ns()
        .command(["iperf3", "-s", "-B"])
        .arg(h0.v4().to_string())
        .arg("-p")
        .arg(BULK_PORT.to_string())
        .spawn()?;
    wait_listening(h0.ns(), BULK_PORT)?;
    Ok(p)
}

fn wait_listening(ns: &Netns, port: u16) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = ns.run(["ss", "-Htln", &format!("sport = :{port}")])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} in {}", ns.name());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn clock_tick() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

/// Sum of `memlock` over the BPF maps the process holds open.
fn bpf_memlock(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            total += v;
        }
    }
    total
}

/// A slab cache's object size from /proc/slabinfo.
fn slab_object_size(cache: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/slabinfo").ok()?;
    info.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        if f.next()? != cache {
            return None;
        }
        // name active_objs num_objs objsize ...
        f.nth(2)?.parse().ok()
    })
}

// ---- report ------------------------------------------------------------------------------

fn fmt_rate(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Bulk => format!("{v:.2}"),
        _ => format!("{v:.0}"),
    }
}

impl Report {
    fn get(&self, lb: Lb) -> Option<&ConfigResult> {
        self.results.iter().find(|r| r.lb == lb)
    }

    fn ratio(&self, lb: Lb, base: Lb, metric: Metric) -> Option<f64> {
        let a = self.get(lb)?.median(metric)?.rate;
        let b = self.get(base)?.median(metric)?.rate;
        (b > 0.0).then(|| a / b)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Packet benchmark: {} s windows, median of {} repeat(s), {} wrk connections (3 processes); load average {} before, {} after; {:.0} s in all.\n",
            self.window.as_secs(),
            self.repeats,
            self.connections,
            self.loadavg.0,
            self.loadavg.1,
            self.elapsed.as_secs_f64()
        );
        let names: Vec<String> = self.results.iter().map(|r| r.lb.to_string()).collect();
        let _ = writeln!(out, "| metric | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(names.len()));
        for metric in Metric::ALL {
            let cells: Vec<String> = self
                .results
                .iter()
                .map(|r| match r.median(metric) {
                    Some(s) => match self.ratio(r.lb, Lb::Direct, metric) {
                        Some(x) if r.lb != Lb::Direct => {
                            format!("{} ({x:.2}×)", fmt_rate(metric, s.rate))
                        }
                        _ => fmt_rate(metric, s.rate),
                    },
                    None => "–".to_owned(),
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", metric.label(), cells.join(" | "));
        }
        for (what, pick) in [
            (
                "p50 latency keep-alive 1 KiB (µs)",
                (Metric::KeepAlive1k, true),
            ),
            (
                "p99 latency keep-alive 1 KiB (µs)",
                (Metric::KeepAlive1k, false),
            ),
            (
                "p50 latency new connection (µs)",
                (Metric::NewConnections, true),
            ),
            (
                "p99 latency new connection (µs)",
                (Metric::NewConnections, false),
            ),
        ] {
            let cells: Vec<String> = self
                .results
                .iter()
                .map(|r| {
                    r.median(pick.0).map_or_else(
                        || "–".to_owned(),
                        |s| format!("{:.0}", if pick.1 { s.p50_us } else { s.p99_us }),
                    )
                })
                .collect();
            let _ = writeln!(out, "| {what} | {} |", cells.join(" | "));
        }
        for (what, metric) in [
            ("CPU µs/request keep-alive 1 KiB", Metric::KeepAlive1k),
            ("CPU µs/request keep-alive 64 KiB", Metric::KeepAlive64k),
            ("CPU µs/connection new connections", Metric::NewConnections),
        ] {
            let cells: Vec<String> = self
                .results
                .iter()
                .map(|r| {
                    r.median(metric).map_or_else(
                        || "–".to_owned(),
                        |s| {
                            if s.lb_cpu_us > 0.0 {
                                format!("{:.1} (LB process {:.1})", s.cpu_us, s.lb_cpu_us)
                            } else {
                                format!("{:.1}", s.cpu_us)
                            }
                        },
                    )
                })
                .collect();
            let _ = writeln!(out, "| {what} | {} |", cells.join(" | "));
        }
        let errors: Vec<String> = self
            .results
            .iter()
            .map(|r| {
                let e: u64 = r
                    .samples
                    .iter()
                    .filter(|(m, _)| **m != Metric::Bulk)
                    .flat_map(|(_, v)| v.iter().map(|s| s.errors))
                    .sum();
                e.to_string()
            })
            .collect();
        let _ = writeln!(
            out,
            "| client errors (all wrk runs) | {} |",
            errors.join(" | ")
        );
        let retr: Vec<String> = self
            .results
            .iter()
            .map(|r| {
                r.median(Metric::Bulk)
                    .map_or_else(|| "–".to_owned(), |s| s.errors.to_string())
            })
            .collect();
        let _ = writeln!(
            out,
            "| iperf3 retransmits (median run) | {} |",
            retr.join(" | ")
        );

        // Ratios of each switchyard attach point against the peers.
        let peers = [Lb::Nftables, Lb::Haproxy];
        let ours: Vec<Lb> = self
            .results
            .iter()
            .map(|r| r.lb)
            .filter(|l| matches!(l, Lb::Switchyard(_)))
            .collect();
        if !ours.is_empty() {
            let _ = writeln!(
                out,
                "\nRatios (median rate / median rate):\n\n| metric | {} |",
                ours.iter()
                    .flat_map(|o| {
                        std::iter::once(format!("{o} / direct")).chain(
                            peers
                                .iter()
                                .filter(|p| self.get(**p).is_some())
                                .map(move |p| format!("{o} / {p}")),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let cols = ours.len() * (1 + peers.iter().filter(|p| self.get(**p).is_some()).count());
            let _ = writeln!(out, "|---|{}", "---:|".repeat(cols));
            for metric in Metric::ALL {
                let mut cells = Vec::new();
                for o in &ours {
                    for base in std::iter::once(Lb::Direct).chain(peers) {
                        if base != Lb::Direct && self.get(base).is_none() {
                            continue;
                        }
                        cells.push(
                            self.ratio(*o, base, metric)
                                .map_or_else(|| "–".to_owned(), |x| format!("{x:.2}")),
                        );
                    }
                }
                let _ = writeln!(out, "| {} | {} |", metric.label(), cells.join(" | "));
            }
        }

        let _ = writeln!(out, "\nMemory per tracked flow:\n");
        let _ = writeln!(
            out,
            "| configuration | flows | kernel B/flow | user-space B/flow | measured |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        for r in &self.results {
            if let Some(m) = &r.memory {
                let b = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    r.lb,
                    m.flows,
                    b(m.kernel_per_flow),
                    b(m.user_per_flow),
                    m.detail
                );
            }
        }

        let failures: Vec<(Lb, &String)> = self
            .results
            .iter()
            .flat_map(|r| r.failures.iter().map(move |f| (r.lb, f)))
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailed measurements (not in the medians):\n");
            for (lb, f) in failures {
                let _ = writeln!(out, "- {lb}: {f}");
            }
        }
        let _ = writeln!(out, "\nEvery repeat (rate; for wrk runs p50/p99 µs):\n");
        for r in &self.results {
            for (metric, v) in &r.samples {
                let runs: Vec<String> = v
                    .iter()
                    .map(|s| match metric {
                        Metric::Bulk => format!("{:.2}", s.rate),
                        _ => format!("{:.0} ({:.0}/{:.0})", s.rate, s.p50_us, s.p99_us),
                    })
                    .collect();
                let _ = writeln!(out, "- {} · {}: {}", r.lb, metric.label(), runs.join(", "));
            }
        }
        out
    }
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
    fn configurations_parse() {
        for s in ["direct", "tc", "xdp+tc", "xdp", "nftables", "haproxy"] {
            let lb: Lb = s.parse().expect("parse");
            assert!(!lb.to_string().is_empty());
        }
        assert!("ipvs".parse::<Lb>().is_err());
    }

    #[test]
    fn median_of_repeats() {
        let mut r = ConfigResult {
            lb: Lb::Direct,
            samples: BTreeMap::new(),
            memory: None,
            failures: Vec::new(),
        };
        for rate in [3.0, 1.0, 2.0] {
            r.samples.entry(Metric::Bulk).or_default().push(Sample {
                rate,
                ..Sample::default()
            });
        }
        assert_eq!(r.median(Metric::Bulk).map(|s| s.rate), Some(2.0));
        assert!(r.median(Metric::KeepAlive1k).is_none());
    }
}
