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

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use switchyard_testbed::{Netns, Process, Testbed, Topology};

use crate::bed::{
    self, Bench, HOSTS, Metric as _, SETTLE, Sequence, WEB_PORT, Web, cell, columns, row,
};
pub use crate::bed::{Sample, VIP};
use crate::http;
use crate::procfs::rss_bytes;

/// The web port on the VIP.
const VIP_PORT: u16 = 80;
/// iperf3's port, on host0 and on the VIP.
const BULK_PORT: u16 = 5201;
/// The client's prefix (client0's link), routed back through the unit for
/// nftables DNAT.
const CLIENT_NET: &str = "198.18.1.0/24";
/// Every unit's admin API, on its own namespace's loopback (the default).
const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// The cluster key of the throw-away benchmark cluster.
const SECRET: &str = "switchyard packet benchmark cluster: not a production secret";
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
}

impl bed::Metric for Metric {
    fn label(self) -> &'static str {
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

/// Results of one configuration (memory per flow: the last repeat's).
pub type ConfigResult = bed::ConfigResult<Lb, Metric, Option<Memory>>;

/// Results of [`run`].
pub type Report = bed::Report<Lb, Metric, Option<Memory>>;

/// Runs the benchmark on a fresh topology in `tb`.
pub fn run(tb: &Testbed, opts: &Options) -> Result<Report> {
    ensure!(
        opts.switchyard.is_file(),
        "no switchyard binary at {} (build it first)",
        opts.switchyard.display()
    );
    let mut tools = vec!["nginx", "wrk", "iperf3"];
    if opts.configs.contains(&Lb::Haproxy) {
        tools.push("haproxy");
    }
    let seq = Sequence {
        name: "packet-bench",
        tools: &tools,
        configs: &opts.configs,
        window: opts.window,
        repeats: opts.repeats,
        connections: opts.connections,
    };
    bed::measure_in_turn(&seq, || Bed::start(tb, opts))
}

/// The topology with its servers and agents (they stay up for every
/// configuration).
struct Bed {
    // Field order is drop order: processes stop before the topology.
    /// Held for their lifetime: they report the hosts healthy.
    _agents: Vec<Process>,
    iperf: std::sync::Mutex<Process>,
    web: Web,
    opts: Options,
    config: PathBuf,
}

/// A configuration while it is set up.
struct Active {
    lb: Lb,
    process: Option<Process>,
}

impl Bed {
    fn start(tb: &Testbed, opts: &Options) -> Result<Self> {
        let mut web = Web::new(tb, "packet")?;
        let topo = &web.topo;
        // Frames the forwarder reinjects or redirects with XDP reach a veth
        // only when its peer has NAPI (docs/LB.md): GRO on the router's and
        // the switch's ports toward the unit, as the cluster tests do.
        topo.router()
            .ns()
            .run(["ethtool", "-K", "lb0", "gro", "on"])?;
        topo.switch().run(["ethtool", "-K", "lb0", "gro", "on"])?;
        web.start_nginx("packet", None)?;
        let topo = &web.topo;
        let dir = web.dir.path();
        let iperf = std::sync::Mutex::new(start_iperf(topo)?);

        std::fs::write(dir.join("cluster.key"), SECRET)?;
        let config = dir.join("cluster.toml");
        std::fs::write(&config, cluster_toml(topo, Attach::Tc))?;
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
                .arg(dir.join(format!("agent-{k}.sock")))
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
            let socket = dir.join(format!("agent-{k}.sock"));
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
        Ok(Self {
            _agents: agents,
            iperf,
            web,
            opts: opts.clone(),
            config,
        })
    }

    fn topo(&self) -> &Topology {
        &self.web.topo
    }

    fn lb_ns(&self) -> &Netns {
        self.topo().lb_unit(0).ns()
    }

    /// Turns tx checksum offload of the client's and the hosts' interfaces
    /// off (before an XDP configuration) or back on. On veth a locally sent
    /// packet carries only the pseudo-header sum (CHECKSUM_PARTIAL), which
    /// an XDP program cannot see; real NICs deliver full checksums. This
    /// also turns TSO off on those senders while it lasts.
    fn senders_tx_checksum(&self, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for node in std::iter::once(self.topo().client(0)).chain(self.topo().hosts()) {
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

    /// The three wrk targets (`http://` and the address).
    fn targets(&self, lb: Lb) -> Vec<String> {
        match lb {
            Lb::Direct => (0..HOSTS)
                .map(|k| {
                    format!(
                        "http://{}",
                        SocketAddr::new(self.topo().host(k).v4(), WEB_PORT)
                    )
                })
                .collect(),
            _ => vec![format!("http://{}", SocketAddr::new(VIP.into(), VIP_PORT)); 3],
        }
    }

    fn bulk_target(&self, lb: Lb) -> SocketAddr {
        match lb {
            Lb::Direct => SocketAddr::new(self.topo().host(0).v4(), BULK_PORT),
            _ => SocketAddr::new(VIP.into(), BULK_PORT),
        }
    }

    /// One wrk window of `metric`: three processes in parallel. Returns the
    /// sample and, for HAProxy, its memory per connection sampled mid-window.
    fn wrk(&self, lb: Lb, metric: Metric, lb_pid: Option<u32>) -> Result<(Sample, Option<Memory>)> {
        let path = match metric {
            Metric::KeepAlive64k => "/64k",
            _ => "/1k",
        };
        let rss_idle = lb_pid.and_then(rss_bytes);
        let cpu0 = self.web.cpu(lb_pid.as_slice());
        let (runs, rss_mid) = self.web.wrk(
            &self.targets(lb),
            path,
            self.opts.connections,
            self.opts.window,
            metric == Metric::NewConnections,
            || lb_pid.and_then(rss_bytes),
        )?;
        let cpu1 = self.web.cpu(lb_pid.as_slice());
        let sample = Sample::of_wrk(&runs, &cpu0, &cpu1)
            .with_context(|| format!("{lb}: no request completed ({metric:?})"))?;
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
        *p = start_iperf(self.topo())?;
        Ok(())
    }

    /// One iperf3 stream for the window.
    fn bulk(&self, lb: Lb) -> Result<Sample> {
        let secs = self.opts.window.as_secs().max(1);
        let target = self.bulk_target(lb);
        let out = self
            .topo()
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

impl Bench for Bed {
    type Config = Lb;
    type Metric = Metric;
    type Memory = Option<Memory>;
    type Active = Active;

    fn activate(&self, lb: Lb) -> Result<Active> {
        let mut active = Active { lb, process: None };
        match lb {
            Lb::Direct => {}
            Lb::Switchyard(attach) => {
                if attach != Attach::Tc {
                    self.senders_tx_checksum(false)?;
                }
                std::fs::write(&self.config, cluster_toml(self.topo(), attach))?;
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
                    .input(nft_rules(self.topo()))
                    .run()?;
                for h in self.topo().hosts() {
                    h.ns()
                        .run(["ip", "route", "replace", CLIENT_NET, "via", "198.18.200.10"])?;
                }
            }
            Lb::Haproxy => {
                self.lb_ns()
                    .run(["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
                let cfg = self.web.dir.path().join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_cfg(self.topo()))?;
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
        self.web.warm_up(lb, &self.targets(lb), false)?;
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
                for h in self.topo().hosts() {
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
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = self.begin("Packet");
        for metric in Metric::ALL {
            self.rate_row(&mut out, metric, Lb::Direct, |v| fmt_rate(metric, v));
        }
        for (what, metric, p50) in [
            (
                "p50 latency keep-alive 1 KiB (µs)",
                Metric::KeepAlive1k,
                true,
            ),
            (
                "p99 latency keep-alive 1 KiB (µs)",
                Metric::KeepAlive1k,
                false,
            ),
            (
                "p50 latency new connection (µs)",
                Metric::NewConnections,
                true,
            ),
            (
                "p99 latency new connection (µs)",
                Metric::NewConnections,
                false,
            ),
        ] {
            let cells = self.cells(|r| {
                cell(r.median(metric), |s| {
                    format!("{:.0}", if p50 { s.p50_us } else { s.p99_us })
                })
            });
            row(&mut out, what, &cells);
        }
        for (what, metric) in [
            ("CPU µs/request keep-alive 1 KiB", Metric::KeepAlive1k),
            ("CPU µs/request keep-alive 64 KiB", Metric::KeepAlive64k),
            ("CPU µs/connection new connections", Metric::NewConnections),
        ] {
            self.cpu_row(&mut out, what, metric, "LB process");
        }
        let errors = self.cells(|r| {
            r.samples
                .iter()
                .filter(|(m, _)| **m != Metric::Bulk)
                .flat_map(|(_, v)| v.iter().map(|s| s.errors))
                .sum::<u64>()
                .to_string()
        });
        row(&mut out, "client errors (all wrk runs)", &errors);
        let retransmits = self.cells(|r| cell(r.median(Metric::Bulk), |s| s.errors.to_string()));
        row(&mut out, "iperf3 retransmits (median run)", &retransmits);

        // Ratios of each switchyard attach point against direct and the peers.
        let bases: Vec<Lb> = std::iter::once(Lb::Direct)
            .chain(
                [Lb::Nftables, Lb::Haproxy]
                    .into_iter()
                    .filter(|p| self.get(*p).is_some()),
            )
            .collect();
        let ours: Vec<Lb> = self
            .results
            .iter()
            .map(|r| r.config)
            .filter(|l| matches!(l, Lb::Switchyard(_)))
            .collect();
        if !ours.is_empty() {
            let pairs: Vec<(Lb, Lb)> = ours
                .iter()
                .flat_map(|&o| bases.iter().map(move |&b| (o, b)))
                .collect();
            let _ = writeln!(out, "\nRatios (median rate / median rate):\n");
            columns(
                &mut out,
                &pairs
                    .iter()
                    .map(|(o, b)| format!("{o} / {b}"))
                    .collect::<Vec<_>>(),
            );
            for metric in Metric::ALL {
                let cells: Vec<String> = pairs
                    .iter()
                    .map(|&(o, b)| {
                        self.ratio(o, b, metric)
                            .map_or_else(|| "–".to_owned(), |x| format!("{x:.2}"))
                    })
                    .collect();
                row(&mut out, metric.label(), &cells);
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
                    r.config,
                    m.flows,
                    b(m.kernel_per_flow),
                    b(m.user_per_flow),
                    m.detail
                );
            }
        }

        self.failures(&mut out);
        self.every_repeat(
            &mut out,
            "rate; for wrk runs p50/p99 µs",
            |metric, s| match metric {
                Metric::Bulk => format!("{:.2}", s.rate),
                _ => format!("{:.0} ({:.0}/{:.0})", s.rate, s.p50_us, s.p99_us),
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut r = ConfigResult::new(Lb::Direct);
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
