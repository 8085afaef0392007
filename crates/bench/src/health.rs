//! The health-and-load benchmark of issue 3, on real processes: two
//! `switchyard lb` units and N hosts running `switchyard agent` in a testbed
//! topology, with the default protocol timings (`[health]` unset: heartbeat
//! 1 s, load interval 15 s, ...).
//!
//! - [`latency`]: flips an application's health through the agent's local
//!   API and measures when the agent's table changed and when each unit's
//!   cache applied it (from their log timestamps, see [`crate::logs`]); then
//!   the same for health found by a TCP check (a listener closed and opened).
//! - [`bandwidth`]: one agent with a 100-row table in steady state, without
//!   and with periodic load reports; datagrams, bytes and messages per second
//!   from the agent's and the units' `/v1/counters`.
//!
//! Nothing here asserts a speed: the report says what was measured.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rand::Rng;
use serde_json::{Value, json};
use switchyard_testbed::{Netns, Process, Testbed, Topology};

use crate::http;
use crate::logs::{LogTail, has_token, timestamp_ns, unix_ns};
use crate::stats::{Summary, ms};

/// The configured service; its rows are the ones the TCP check probes.
const SERVICE_VIP: &str = "198.19.0.10:80";
/// The VIP of the API row whose health the latency benchmark flips.
const FLIP_VIP: &str = "198.19.0.10:81";
/// Port of the configured application on every host (the check's target).
const APP_PORT: u16 = 8080;
/// Port of the flipped API row's endpoint (nothing listens; no check).
const FLIP_PORT: u16 = 9000;
/// Host ids: 101, 102, ...; names web-1, web-2, ...
const HOST_ID_BASE: u32 = 101;
/// Every unit's admin API, on its own namespace's loopback (the default).
const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// The cluster key of the throw-away benchmark cluster.
const SECRET: &str = "switchyard benchmark cluster: not a production secret";
/// Longest wait for processes to start and caches to converge.
const SETTLE: Duration = Duration::from_secs(30);
/// Longest wait for one API-reported change to reach every unit; a change
/// still missing after this is counted as missed, not timed.
const API_DEADLINE: Duration = Duration::from_secs(5);
/// How often the log files are read while waiting. The measured times come
/// from the log timestamps, so this only sets how long the wait lasts; it is
/// kept coarse so the benchmark does not steal CPU from the processes it
/// measures (two cores are shared by everything).
const POLL: Duration = Duration::from_millis(5);

/// Timing of the TCP check in the check benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    /// Time between probes, in ms.
    pub interval_ms: u64,
    /// Probe timeout, in ms.
    pub timeout_ms: u64,
    /// Consecutive passes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become failing.
    pub fall: u32,
}

impl Default for CheckTiming {
    /// The documented defaults (docs/AGENT.md, examples/all-in-one.toml).
    fn default() -> Self {
        Self {
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `switchyard` binary under test.
    pub switchyard: PathBuf,
    /// Hosts in the latency topology (each runs an agent).
    pub hosts: usize,
    /// Health flips through the local API.
    pub flips: usize,
    /// Health flips found by the TCP check (each direction counts one).
    pub check_flips: usize,
    /// The check's timing.
    pub check: CheckTiming,
    /// Rows of the agent in the bandwidth benchmark (the configured row and
    /// `rows - 1` added through the API).
    pub rows: usize,
    /// Length of each bandwidth phase.
    pub window: Duration,
    /// How often every row reports a load sample in the load phase.
    pub load_period: Duration,
}

impl Options {
    /// The full run of `bench/health.sh`.
    pub fn full(switchyard: PathBuf) -> Self {
        Self {
            switchyard,
            hosts: 3,
            flips: 200,
            check_flips: 20,
            check: CheckTiming::default(),
            rows: 100,
            window: Duration::from_secs(30),
            load_period: Duration::from_secs(1),
        }
    }

    /// `bench/health.sh --quick`: the same shape, small counts.
    pub fn quick(switchyard: PathBuf) -> Self {
        Self {
            flips: 10,
            check_flips: 2,
            window: Duration::from_secs(5),
            ..Self::full(switchyard)
        }
    }
}

/// Times of one health change, in ns from the moment it was caused (the
/// API request sent, or the listener closed/opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// New health: `true` healthy, `false` failing.
    pub to_healthy: bool,
    /// The agent's table changed (its log line).
    pub agent: i64,
    /// The first unit applied it.
    pub first_unit: i64,
    /// The last unit applied it: every unit holds it.
    pub every_unit: i64,
    /// The API request's round trip (API flips only; 0 for checks).
    pub api_rtt: i64,
}

/// Results of [`latency`].
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Hosts in the topology.
    pub hosts: usize,
    /// Flips through the local API that every unit applied in time.
    pub api: Vec<Change>,
    /// API flips not seen everywhere within the deadline.
    pub api_missed: usize,
    /// Flips found by the TCP check.
    pub check: Vec<Change>,
    /// Check flips not seen everywhere within the deadline.
    pub check_missed: usize,
    /// The check's timing.
    pub timing: CheckTiming,
}

/// Message counts of one process over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Datagrams received (units) or sent (agent).
    pub datagrams: u64,
    /// Their bytes (UDP payload: framing, tag and message).
    pub bytes: u64,
    /// Protocol messages by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Datagrams sent the other way (units' replies; agent's receipts).
    pub back_datagrams: u64,
    /// Their bytes.
    pub back_bytes: u64,
}

/// One steady-state window of [`bandwidth`].
#[derive(Debug, Clone)]
pub struct Window {
    /// What happened during it.
    pub name: String,
    /// Its length in seconds (measured).
    pub seconds: f64,
    /// Load samples reported through the API during it.
    pub load_reports: u64,
    /// The agent: sent (datagrams, bytes, messages by kind), received back.
    pub agent: Counts,
    /// Each unit: received, messages by kind, replies sent.
    pub units: Vec<(String, Counts)>,
}

/// Results of [`bandwidth`].
#[derive(Debug, Clone, Default)]
pub struct Bandwidth {
    /// Rows in the agent's table.
    pub rows: usize,
    /// The windows measured.
    pub windows: Vec<Window>,
}

/// A benchmark cluster: two units and `hosts` agents in one topology.
struct Cluster {
    // Field order is drop order: processes stop before the servers and
    // the topology; the testbed (owned by the caller) removes the rest.
    units: Vec<Unit>,
    agents: Vec<Agent>,
    servers: Vec<AppServer>,
    topo: Topology,
    _dir: tempfile::TempDir,
}

struct Unit {
    name: String,
    ns: Netns,
    process: Process,
}

struct Agent {
    name: String,
    id: u32,
    socket: PathBuf,
    process: Process,
}

impl Cluster {
    /// Builds the topology, writes the configuration and starts every
    /// process; with `check`, every host's configured row is probed by a
    /// TCP check against a listener this process runs in the host's
    /// namespace.
    fn start(
        tb: &Testbed,
        switchyard: &Path,
        hosts: usize,
        check: Option<CheckTiming>,
    ) -> Result<Self> {
        ensure!(
            switchyard.is_file(),
            "no switchyard binary at {} (build it first)",
            switchyard.display()
        );
        let topo = Topology::builder()
            .clients(1)
            .lb_units(2)
            .hosts(hosts)
            .build(tb)?;
        let dir = tempfile::Builder::new()
            .prefix("switchyard-bench-")
            .tempdir()?;
        std::fs::write(dir.path().join("cluster.key"), SECRET)?;
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, config_toml(&topo, hosts, check))?;

        let mut servers = Vec::new();
        if check.is_some() {
            for k in 0..hosts {
                let addr = SocketAddr::new(topo.host(k).v4(), APP_PORT);
                servers.push(AppServer::start(topo.host(k).ns().clone(), addr)?);
            }
        }

        let mut units = Vec::new();
        for j in 0..2 {
            let name = format!("lb-{}", j + 1);
            let ns = topo.lb_unit(j).ns().clone();
            let process = spawn(&ns, switchyard, &["lb", "--unit", &name], &config, &[])?;
            process.wait_for_output("lb ready", SETTLE)?;
            units.push(Unit { name, ns, process });
        }
        let mut agents = Vec::new();
        for k in 0..hosts {
            let name = format!("web-{}", k + 1);
            let socket = dir.path().join(format!("agent-{}.sock", k + 1));
            let process = spawn(
                topo.host(k).ns(),
                switchyard,
                &["agent", "--host", &name],
                &config,
                &[OsString::from("--socket"), socket.clone().into()],
            )?;
            process.wait_for_output("agent ready", SETTLE)?;
            agents.push(Agent {
                name,
                id: HOST_ID_BASE + u32::try_from(k)?,
                socket,
                process,
            });
        }
        Ok(Self {
            units,
            agents,
            servers,
            topo,
            _dir: dir,
        })
    }

    /// `GET /v1/hosts` of every unit.
    fn unit_hosts(&self) -> Result<Vec<Value>> {
        self.units
            .iter()
            .map(|u| http::tcp_in(&u.ns, ADMIN, "GET", "/v1/hosts", None)?.json())
            .collect()
    }

    /// Waits until every unit holds every host in sync with exactly
    /// `rows` rows, each passing `row_ok`.
    fn converge(&self, rows: usize, row_ok: impl Fn(&Value) -> bool) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let docs = self.unit_hosts()?;
            let ok = docs.iter().all(|doc| {
                let hosts = doc["hosts"].as_array().map_or(&[][..], Vec::as_slice);
                hosts.len() == self.agents.len()
                    && hosts.iter().all(|h| {
                        h["in_sync"] == json!(true)
                            && h["baseline"] == json!(true)
                            && h["rows"]
                                .as_array()
                                .is_some_and(|r| r.len() == rows && r.iter().all(&row_ok))
                    })
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the units did not converge within {SETTLE:?}: {}",
                    serde_json::to_string(&docs)?
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn agent_api(&self, k: usize, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(Value::to_string);
        http::unix(&self.agents[k].socket, method, path, body.as_deref())?
            .json()
            .with_context(|| format!("{method} {path} on {}", self.agents[k].name))
    }

    fn tails(&self) -> Result<(Vec<LogTail>, Vec<LogTail>)> {
        let agents = self
            .agents
            .iter()
            .map(|a| LogTail::from_end(a.process.stderr_path()))
            .collect::<Result<_>>()?;
        let units = self
            .units
            .iter()
            .map(|u| LogTail::from_end(u.process.stderr_path()))
            .collect::<Result<_>>()?;
        Ok((agents, units))
    }

    /// The processes' stderr tails, for error messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        let procs = self
            .units
            .iter()
            .map(|u| (&u.name, &u.process))
            .chain(self.agents.iter().map(|a| (&a.name, &a.process)));
        for (name, p) in procs {
            let text = p.stderr().unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let _ = writeln!(out, "--- {name} (last lines)");
            for l in tail.into_iter().rev() {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

/// `switchyard <args> --config CONFIG --log-level info <extra>` in `ns`.
fn spawn(
    ns: &Netns,
    switchyard: &Path,
    args: &[&str],
    config: &Path,
    extra: &[OsString],
) -> Result<Process> {
    let mut cmd = ns.command([switchyard.as_os_str()]);
    for a in args {
        cmd = cmd.arg(a);
    }
    cmd = cmd
        .arg("--config")
        .arg(config)
        .arg("--log-level")
        .arg("info");
    for a in extra {
        cmd = cmd.arg(a);
    }
    // The unit prefers RUST_LOG over --log-level: pin it so the caller's
    // environment cannot hide the lines the benchmark reads.
    Ok(cmd.env("RUST_LOG", "info").spawn()?)
}

fn config_toml(topo: &Topology, hosts: usize, check: Option<CheckTiming>) -> String {
    let mut t = String::from("[cluster]\nid = \"bench\"\nsecret_file = \"cluster.key\"\n");
    for j in 0..2 {
        // The units' backend address: agents reach them across the switch.
        // Packet services need a forwarder and a classifier somewhere; this
        // build skips those roles with a warning, so only the cache runs.
        let address = topo
            .lb_unit(j)
            .iface("eth1")
            .map_or_else(|| topo.lb_unit(j).v4(), |i| i.v4());
        let _ = write!(
            t,
            "\n[[cluster.units]]\nname = \"lb-{}\"\nid = {}\naddress = \"{address}\"\nroles = [\"forwarder\", \"classifier\", \"health-cache\"]\n",
            j + 1,
            j + 1
        );
    }
    let _ = write!(
        t,
        "\n[[services]]\nname = \"web\"\nvip = \"{SERVICE_VIP}\"\nprotocol = \"tcp\"\nmode = \"packet\"\ndelivery = \"nat\"\npool = \"web\"\n\n[[pools]]\nname = \"web\"\n"
    );
    if check.is_some() {
        t.push_str("health_check = \"bench-tcp\"\n");
    }
    for k in 0..hosts {
        let _ = write!(
            t,
            "\n[[pools.hosts]]\nid = {}\nname = \"web-{}\"\naddress = \"{}:{APP_PORT}\"\napp = \"shop\"\n",
            HOST_ID_BASE as usize + k,
            k + 1,
            topo.host(k).v4()
        );
    }
    if let Some(c) = check {
        let _ = write!(
            t,
            "\n[[health_checks]]\nname = \"bench-tcp\"\nkind = \"tcp\"\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nrise = {}\nfall = {}\n",
            c.interval_ms, c.timeout_ms, c.rise, c.fall
        );
    }
    t
}

/// A TCP listener in a host's namespace that the check can find open or
/// closed; connections are accepted and dropped at once.
struct AppServer {
    ns: Netns,
    addr: SocketAddr,
    listener: Arc<Mutex<Option<TcpListener>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AppServer {
    /// The accept loop ends on drop, or after an hour at the latest.
    const LIFETIME: Duration = Duration::from_secs(3600);

    fn start(ns: Netns, addr: SocketAddr) -> Result<Self> {
        let listener = Arc::new(Mutex::new(Some(Self::bind(&ns, addr)?)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (listener, stop) = (listener.clone(), stop.clone());
            thread::spawn(move || {
                let end = Instant::now() + Self::LIFETIME;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if let Some(l) = listener
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                    {
                        while let Ok((conn, _)) = l.accept() {
                            drop(conn);
                        }
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Ok(Self {
            ns,
            addr,
            listener,
            stop,
            thread: Some(thread),
        })
    }

    fn bind(ns: &Netns, addr: SocketAddr) -> Result<TcpListener> {
        let l = ns
            .enter(|| TcpListener::bind(addr))?
            .with_context(|| format!("listen on {addr}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// Closes the listener: the next probe is refused.
    fn close(&self) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Listens again.
    fn open(&self) -> Result<()> {
        let l = Self::bind(&self.ns, self.addr)?;
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(l);
        Ok(())
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn health_word(healthy: bool) -> &'static str {
    if healthy { "healthy" } else { "failing" }
}

/// What to look for in the logs after a change to row `row` (VIP `vip`)
/// of agent `k`.
struct Expect<'a> {
    agent_host: &'a str,
    host_id: u32,
    row: &'a str,
    vip: &'a str,
    to_healthy: bool,
    /// Lines stamped before this (ns) belong to earlier changes.
    since: i64,
}

/// Reads the logs until the agent and every unit logged the change, or
/// `deadline` passes (`None`). Returns the agent's and each unit's
/// timestamps.
fn observe(
    agent: &mut LogTail,
    units: &mut [LogTail],
    want: &Expect<'_>,
    deadline: Duration,
) -> Result<Option<(i64, Vec<i64>)>> {
    let end = Instant::now() + deadline;
    let agent_token = format!("host={}", want.agent_host);
    let row_token = format!("row={}", want.row);
    let arrow = format!("-> {}", health_word(want.to_healthy));
    let host_token = format!("host={}", want.host_id);
    let to_token = format!(
        "to={}",
        if want.to_healthy {
            "Healthy"
        } else {
            "Failing"
        }
    );
    let app = format!("app={}/", want.vip);
    let mut agent_at = None;
    let mut unit_at: Vec<Option<i64>> = vec![None; units.len()];
    loop {
        for line in agent.lines()? {
            let Some(ts) = timestamp_ns(&line) else {
                continue;
            };
            if agent_at.is_none()
                && ts >= want.since
                && line.contains(" health ")
                && line.contains(&arrow)
                && has_token(&line, &agent_token)
                && has_token(&line, &row_token)
            {
                agent_at = Some(ts);
            }
        }
        for (tail, at) in units.iter_mut().zip(unit_at.iter_mut()) {
            for line in tail.lines()? {
                let Some(ts) = timestamp_ns(&line) else {
                    continue;
                };
                if at.is_none()
                    && ts >= want.since
                    && line.contains("health changed")
                    && line.contains(&app)
                    && has_token(&line, &host_token)
                    && has_token(&line, &to_token)
                {
                    *at = Some(ts);
                }
            }
        }
        if let (Some(a), true) = (agent_at, unit_at.iter().all(Option::is_some)) {
            return Ok(Some((a, unit_at.into_iter().flatten().collect())));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

fn change(to_healthy: bool, since: i64, agent: i64, units: &[i64], api_rtt: i64) -> Change {
    Change {
        to_healthy,
        agent: agent - since,
        first_unit: units.iter().min().copied().unwrap_or(0) - since,
        every_unit: units.iter().max().copied().unwrap_or(0) - since,
        api_rtt,
    }
}

/// The propagation benchmark: `opts.flips` health reports through the local
/// API (round robin over the hosts, each alternating failing/healthy, a
/// random 20–80 ms pause before each so they fall at random points of the
/// heartbeat cycle), then `opts.check_flips` changes found by the TCP check
/// (listener closed, opened, ...; each after a random pause within one
/// check interval, so they fall at random points of the probe cycle).
pub fn latency(tb: &Testbed, opts: &Options) -> Result<Latency> {
    ensure!(opts.hosts >= 1, "at least one host");
    let cluster = Cluster::start(tb, &opts.switchyard, opts.hosts, Some(opts.check))?;
    let run = || -> Result<Latency> {
        for k in 0..opts.hosts {
            let endpoint = SocketAddr::new(cluster.topo.host(k).v4(), FLIP_PORT);
            cluster.agent_api(
                k,
                "POST",
                &format!("/v1/hosts/{}/apps", cluster.agents[k].name),
                Some(&json!({
                    "name": "flip", "vip": FLIP_VIP, "protocol": "tcp",
                    "endpoint": endpoint.to_string(), "capacity": 50,
                    "health": "healthy", "load": 10,
                })),
            )?;
        }
        // Both rows healthy everywhere: the configured one by its check
        // (rise × interval after start), the flip row as added.
        cluster.converge(2, |r| r["health"] == json!("healthy"))?;

        let mut out = Latency {
            hosts: opts.hosts,
            timing: opts.check,
            ..Latency::default()
        };
        let (mut agent_tails, mut unit_tails) = cluster.tails()?;
        let mut healthy = vec![true; opts.hosts];
        let mut rng = rand::rng();
        for i in 0..opts.flips {
            let k = i % opts.hosts;
            let to_healthy = !healthy[k];
            thread::sleep(Duration::from_millis(rng.random_range(20..80)));
            let path = format!("/v1/hosts/{}/apps/flip/status", cluster.agents[k].name);
            let body = json!({ "health": health_word(to_healthy) }).to_string();
            let sent = unix_ns();
            let response = http::unix(&cluster.agents[k].socket, "PUT", &path, Some(&body))?;
            let returned = unix_ns();
            response.json().with_context(|| format!("PUT {path}"))?;
            healthy[k] = to_healthy;
            let want = Expect {
                agent_host: &cluster.agents[k].name,
                host_id: cluster.agents[k].id,
                row: "flip",
                vip: FLIP_VIP,
                to_healthy,
                since: sent,
            };
            match observe(&mut agent_tails[k], &mut unit_tails, &want, API_DEADLINE)? {
                Some((agent, units)) => {
                    out.api
                        .push(change(to_healthy, sent, agent, &units, returned - sent))
                }
                None => out.api_missed += 1,
            }
        }

        // Health found by the check: fall × interval to fail, rise ×
        // interval to recover, plus up to one interval of phase.
        let c = opts.check;
        let check_deadline =
            Duration::from_millis(c.interval_ms * u64::from(c.rise.max(c.fall) + 1) + c.timeout_ms)
                + API_DEADLINE;
        for i in 0..opts.check_flips {
            let k = (i / 2) % opts.hosts;
            let to_healthy = i % 2 == 1;
            // The previous change was seen right after a probe; without a
            // pause of a random fraction of the interval every change would
            // start just after a probe and always measure the worst case.
            thread::sleep(Duration::from_millis(
                rng.random_range(0..c.interval_ms.max(1)),
            ));
            let since = unix_ns();
            if to_healthy {
                cluster.servers[k].open()?;
            } else {
                cluster.servers[k].close();
            }
            let want = Expect {
                agent_host: &cluster.agents[k].name,
                host_id: cluster.agents[k].id,
                row: "web",
                vip: SERVICE_VIP,
                to_healthy,
                since,
            };
            match observe(&mut agent_tails[k], &mut unit_tails, &want, check_deadline)? {
                Some((agent, units)) => out.check.push(change(to_healthy, since, agent, &units, 0)),
                None => out.check_missed += 1,
            }
        }
        if opts.check_flips % 2 == 1 {
            // The last change closed a listener; leave every host healthy.
            cluster.servers[((opts.check_flips - 1) / 2) % opts.hosts].open()?;
        }

        // The caches must end where the agents are (correctness, not speed).
        for doc in cluster.unit_hosts()? {
            for (k, agent) in cluster.agents.iter().enumerate() {
                let host = doc["hosts"]
                    .as_array()
                    .and_then(|h| h.iter().find(|h| h["id"] == json!(agent.id)))
                    .with_context(|| format!("{} missing from {doc}", agent.name))?;
                let flip = host["rows"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["vip"] == json!(FLIP_VIP)))
                    .with_context(|| format!("flip row of {} missing", agent.name))?;
                ensure!(
                    flip["health"] == json!(health_word(healthy[k])),
                    "{} shows {} for {}'s flip row, the agent says {}",
                    doc["unit"]["name"],
                    flip["health"],
                    agent.name,
                    health_word(healthy[k])
                );
            }
        }
        Ok(out)
    };
    run().map_err(|e| e.context(cluster.logs()))
}

fn counters_of(v: &Value, sent: bool) -> Counts {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let t = &v["transport"];
    let (fwd, back) = if sent {
        (("sent", "sent_bytes"), ("received", "received_bytes"))
    } else {
        (("received", "received_bytes"), ("sent", "sent_bytes"))
    };
    let kinds = if sent {
        &v["protocol"]["messages_sent"]
    } else {
        &v["cache"]["received"]
    };
    Counts {
        datagrams: n(&t[fwd.0]),
        bytes: n(&t[fwd.1]),
        kinds: kinds
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), n(v))).collect())
            .unwrap_or_default(),
        back_datagrams: n(&t[back.0]),
        back_bytes: n(&t[back.1]),
    }
}

fn delta(a: &Counts, b: &Counts) -> Counts {
    Counts {
        datagrams: b.datagrams.saturating_sub(a.datagrams),
        bytes: b.bytes.saturating_sub(a.bytes),
        kinds: b
            .kinds
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(a.kinds.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect(),
        back_datagrams: b.back_datagrams.saturating_sub(a.back_datagrams),
        back_bytes: b.back_bytes.saturating_sub(a.back_bytes),
    }
}

/// Every counter at once: the agent's (its one host) and each unit's.
fn sample(cluster: &Cluster) -> Result<(Counts, Vec<Counts>)> {
    let agent = cluster.agent_api(0, "GET", "/v1/counters", None)?;
    let host = agent["hosts"]
        .as_array()
        .and_then(|h| h.first())
        .context("agent counters without a host")?;
    let units = cluster
        .units
        .iter()
        .map(|u| {
            let v = http::tcp_in(&u.ns, ADMIN, "GET", "/v1/counters", None)?.json()?;
            Ok(counters_of(&v, false))
        })
        .collect::<Result<_>>()?;
    Ok((counters_of(host, true), units))
}

/// The bandwidth benchmark: one host whose table has `opts.rows` rows, two
/// units, two windows of `opts.window`: nothing changes; every row reports
/// a load sample every `opts.load_period` (a random walk of ±15 points, so
/// the smoothed load keeps crossing the 5-point hysteresis).
pub fn bandwidth(tb: &Testbed, opts: &Options) -> Result<Bandwidth> {
    ensure!(opts.rows >= 1, "at least one row");
    let cluster = Cluster::start(tb, &opts.switchyard, 1, None)?;
    let run = || -> Result<Bandwidth> {
        let host = cluster.agents[0].name.clone();
        let mut rng = rand::rng();
        // The configured row has no check here: report it healthy.
        cluster.agent_api(
            0,
            "PUT",
            &format!("/v1/hosts/{host}/apps/web/status"),
            Some(&json!({ "health": "healthy", "load": 30 })),
        )?;
        let ip = cluster.topo.host(0).v4();
        let mut names = vec!["web".to_owned()];
        let mut loads = vec![30i32];
        for i in 1..opts.rows {
            let name = format!("app-{i:03}");
            let load = rng.random_range(10..70);
            cluster.agent_api(
                0,
                "POST",
                &format!("/v1/hosts/{host}/apps"),
                Some(&json!({
                    "name": name,
                    "vip": SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10)), 10_000 + u16::try_from(i)?).to_string(),
                    "protocol": "tcp",
                    "endpoint": SocketAddr::new(ip, 20_000 + u16::try_from(i)?).to_string(),
                    "capacity": 50, "health": "healthy", "load": load,
                })),
            )?;
            names.push(name);
            loads.push(load);
        }
        cluster.converge(opts.rows, |r| r["health"] == json!("healthy"))?;

        let mut out = Bandwidth {
            rows: opts.rows,
            windows: Vec::new(),
        };
        for with_load in [false, true] {
            let (a0, u0) = sample(&cluster)?;
            let start = Instant::now();
            let end = start + opts.window;
            let mut reports = 0u64;
            if with_load {
                let mut next = start;
                while next < end {
                    for (name, load) in names.iter().zip(loads.iter_mut()) {
                        *load = (*load + rng.random_range(-15..=15)).clamp(0, 100);
                        cluster.agent_api(
                            0,
                            "PUT",
                            &format!("/v1/hosts/{host}/apps/{name}/status"),
                            Some(&json!({ "load": load })),
                        )?;
                        reports += 1;
                    }
                    next += opts.load_period;
                    thread::sleep(next.min(end).saturating_duration_since(Instant::now()));
                }
            } else {
                thread::sleep(opts.window);
            }
            let seconds = start.elapsed().as_secs_f64();
            let (a1, u1) = sample(&cluster)?;
            out.windows.push(Window {
                name: if with_load {
                    format!(
                        "load report per row every {} ms",
                        opts.load_period.as_millis()
                    )
                } else {
                    "nothing changes".to_owned()
                },
                seconds,
                load_reports: reports,
                agent: delta(&a0, &a1),
                units: cluster
                    .units
                    .iter()
                    .zip(u0.iter().zip(&u1))
                    .map(|(u, (a, b))| (u.name.clone(), delta(a, b)))
                    .collect(),
            });
        }
        Ok(out)
    };
    run().map_err(|e| e.context(cluster.logs()))
}

fn summary_row(out: &mut String, what: &str, samples: &[i64]) {
    match Summary::of(samples) {
        Some(s) => {
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} | {} |",
                s.n,
                ms(s.min),
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                ms(s.max)
            );
        }
        None => {
            let _ = writeln!(out, "| {what} | 0 | – | – | – | – | – |");
        }
    }
}

const LATENCY_HEADER: &str = "| from → to | n | min ms | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n";

impl Latency {
    /// Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let pick = |v: &[Change], f: fn(&Change) -> i64| v.iter().map(f).collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "#### Health reported through the agent's local API ({} flips, {} hosts, 2 units, missed: {})\n",
            self.api.len() + self.api_missed,
            self.hosts,
            self.api_missed
        );
        out.push_str(LATENCY_HEADER);
        summary_row(
            &mut out,
            "PUT sent → PUT answered",
            &pick(&self.api, |c| c.api_rtt),
        );
        summary_row(
            &mut out,
            "PUT sent → agent's table changed",
            &pick(&self.api, |c| c.agent),
        );
        summary_row(
            &mut out,
            "PUT sent → first unit applied",
            &pick(&self.api, |c| c.first_unit),
        );
        summary_row(
            &mut out,
            "**PUT sent → every unit applied**",
            &pick(&self.api, |c| c.every_unit),
        );
        summary_row(
            &mut out,
            "agent's table changed → every unit applied",
            &pick(&self.api, |c| c.every_unit - c.agent),
        );
        let t = self.timing;
        let _ = writeln!(
            out,
            "\n#### Health found by a TCP check (interval {} ms, timeout {} ms, rise {}, fall {}; {} changes, missed: {})\n",
            t.interval_ms,
            t.timeout_ms,
            t.rise,
            t.fall,
            self.check.len() + self.check_missed,
            self.check_missed
        );
        out.push_str(LATENCY_HEADER);
        for (dir, healthy) in [("failing", false), ("healthy", true)] {
            let v: Vec<Change> = self
                .check
                .iter()
                .filter(|c| c.to_healthy == healthy)
                .copied()
                .collect();
            let cause = if healthy {
                "listener opened"
            } else {
                "listener closed"
            };
            summary_row(
                &mut out,
                &format!("{cause} → agent says {dir}"),
                &pick(&v, |c| c.agent),
            );
            summary_row(
                &mut out,
                &format!("**{cause} → every unit shows {dir}**"),
                &pick(&v, |c| c.every_unit),
            );
        }
        summary_row(
            &mut out,
            "agent's verdict → every unit applied",
            &pick(&self.check, |c| c.every_unit - c.agent),
        );
        out
    }
}

impl Bandwidth {
    /// Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "#### Control traffic of one host with {} rows to 2 units (UDP payload bytes)\n",
            self.rows
        );
        out.push_str(
            "| window | s | load reports/s | agent datagrams/s | agent bytes/s | bytes/s per unit | unit datagrams/s | unit replies/s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for w in &self.windows {
            let per_s = |n: u64| n as f64 / w.seconds;
            let units = |f: fn(&Counts) -> u64| {
                w.units
                    .iter()
                    .map(|(name, c)| format!("{name}: {:.1}", per_s(f(c))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} | {} |",
                w.name,
                w.seconds,
                per_s(w.load_reports),
                per_s(w.agent.datagrams),
                per_s(w.agent.bytes),
                units(|c| c.bytes),
                units(|c| c.datagrams),
                units(|c| c.back_datagrams),
            );
        }
        out.push_str("\nMessages per second by kind (agent sent, to both units together; each unit received):\n\n");
        out.push_str("| window | agent sent | units received |\n|---|---|---|\n");
        for w in &self.windows {
            let kinds = |m: &BTreeMap<String, u64>| {
                if m.is_empty() {
                    return "none".to_owned();
                }
                m.iter()
                    .map(|(k, n)| format!("{k} {:.2}", *n as f64 / w.seconds))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let units = w
                .units
                .iter()
                .map(|(name, c)| format!("{name}: {}", kinds(&c.kinds)))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                w.name,
                kinds(&w.agent.kinds),
                units
            );
        }
        out
    }
}
