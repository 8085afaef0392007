//! [`Cluster`]: a switchyard cluster of real processes in a namespace testbed.
//!
//! ```text
//!  client0 ── router ── lb0 (lb-1, 198.18.200.10) ─┐
//!                    └─ lb1 (lb-2, 198.18.200.11) ─┼─ switch ── host0 (web-1, 198.18.200.100)
//!                                                  │            host1 (web-2, 198.18.200.101)
//!                                                  └─ …         host2 (web-3, 198.18.200.102)
//! ```
//!
//! [`Cluster::start`] builds the topology ([`ClusterSpec`]: how many clients, units and
//! hosts, the `[health]` timings, an optional HTTP check), writes the cluster
//! configuration into a temporary directory with a secret from `switchyard gen-secret`,
//! optionally starts an [`AppServer`] on every host's endpoint, then `switchyard lb` in every
//! LB unit namespace and `switchyard agent --host web-N` in every host namespace, each
//! awaited by its ready line. Naming: unit `j` is `lb-{j+1}` (id `j+1`, control
//! `198.18.200.{10+j}:9170`, admin `127.0.0.1:9180` inside its namespace); host `k` is
//! `web-{k+1}` (id `101+k`, endpoint `198.18.200.{100+k}:8080`, one configured row `web`
//! of service `web` = VIP `198.19.0.10:80`/tcp, info `shop`). Each agent's local API is its
//! Unix socket in the temporary directory (no namespace needed to reach it).
//!
//! Access: [`Cluster::unit_hosts`], [`Cluster::unit_counters`], [`Cluster::unit_allotment`]
//! (admin API, from inside the unit's namespace); [`Cluster::agent_row`],
//! [`Cluster::set_status`], [`Cluster::directive`], [`Cluster::agent_request`] (local API).
//! [`Cluster::converged`] compares every unit's cache with the agents' tables. Processes:
//! [`Cluster::start_lb`], [`Cluster::stop_lb`], [`Cluster::start_agent`],
//! [`Cluster::stop_agent`] (SIGTERM), [`Cluster::kill_agent`] (SIGKILL), ….
//!
//! When the test panics, dropping the cluster prints [`Cluster::dump`]: every unit's cache
//! and counters, every agent's rows and handshakes, the logs of earlier runs; the testbed
//! then prints the last lines of every running process's stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde::Serialize;
use switchyard_agent::api::client::{ApiResponse, ApiTarget};
use switchyard_agent::api::model::{HostJson, RowJson};
use switchyard_lb::admin::api::{AllotmentView, CountersResponse, HostRow, HostsResponse};
use switchyard_lb::admin::client::{self as admin_client, AdminResponse};
use switchyard_testbed::{Netns, Process, Testbed, Topology};
use switchyard_wire::allotment::{Allotment, AllotmentResponse, TokenGrant};
use switchyard_wire::{HostId, Protocol};
use tempfile::TempDir;

use super::app::AppServer;
use super::echo::EchoServer;
use super::wait;

/// The service's VIP (the topology's default IPv4 VIP, port 80).
pub const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10)), 80);
/// The IPv6 service's VIP (the topology's default IPv6 VIP, port 80), with
/// [`ClusterSpec::ipv6`].
pub const VIP6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0xfd53, 0x7900, 0xff, 0, 0, 0, 0, 0x10)),
    80,
);
/// The UDP service's VIP (the IPv4 VIP, port 7), with [`ClusterSpec::udp`].
pub const UDP_VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10)), 7);
/// The request-mode service's VIP and the router listener's address, with
/// [`ClusterSpec::router`].
pub const ROUTER_VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10)), 8000);
/// The request-mode service (and row name), with [`ClusterSpec::router`].
pub const ROUTER_SERVICE: &str = "web-http";
/// The router's listener, with [`ClusterSpec::router`].
pub const ROUTER_LISTENER: &str = "web-http";
/// The request-mode service's affinity cookie, with [`ClusterSpec::router`].
pub const ROUTER_COOKIE: &str = "SYID";
/// The configured service, and so the name of every host's configured row.
pub const SERVICE: &str = "web";
/// The IPv6 service (and row name of the `web6-N` hosts).
pub const SERVICE6: &str = "web6";
/// The UDP service (and second row name of the `web-N` hosts).
pub const UDP_SERVICE: &str = "echo";
/// The pool hosts' `app` (the rows' protocol-specific info).
pub const APP_INFO: &str = "shop";
/// The port every host's application listens on.
pub const APP_PORT: u16 = 8080;
/// The units' control port (UDP).
pub const CONTROL_PORT: u16 = 9170;
/// Every unit's admin API, inside its own namespace.
pub const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// Every agent's UDP listen address.
pub const AGENT_LISTEN: &str = "0.0.0.0:9171";
/// The cluster id.
pub const CLUSTER_ID: &str = "health-cluster-test";
/// How long a process may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Time limit of one API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The agents' HTTP check of every host's application (`GET /healthz` → 200 with `ok`).
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout (shorter than the interval).
    pub timeout: Duration,
    /// Passes to become healthy.
    pub rise: u32,
    /// Failures to become failing.
    pub fall: u32,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
        }
    }
}

/// What to build and run.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Client namespaces (at least 1).
    pub clients: usize,
    /// LB units, each running `switchyard lb` with the health-cache role.
    pub lb_units: usize,
    /// Hosts, one pool `web`.
    pub hosts: usize,
    /// `[health] heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// `[health] host_dead_after`.
    pub host_dead_after: Duration,
    /// `[health] load_interval`.
    pub load_interval: Duration,
    /// `[health] postulate_interval`.
    pub postulate_interval: Duration,
    /// `[health] postulate_delay` (the configuration's default when `None`).
    pub postulate_delay: Option<Duration>,
    /// `[health] unit_give_up_after`.
    pub unit_give_up_after: Duration,
    /// Every host's capacity.
    pub capacity: u8,
    /// The pool's health check, if any (else health comes from the local API).
    pub http_check: Option<HttpCheck>,
    /// Start an [`AppServer`] on every host's endpoint before the agents.
    pub app_servers: bool,
    /// Start one agent per host in the host's namespace.
    pub agents: bool,
    /// TOML appended to the generated configuration (e.g. `[[host_groups]]`).
    pub extra_toml: String,
    /// Run the packet path (see [`PacketSpec`]). `None`: every unit lists the forwarder,
    /// classifier and health-cache roles without forwarder settings, so the data plane is
    /// not loaded (the health tests' shape).
    pub packet: Option<PacketSpec>,
    /// `max_flows` of every forwarding unit (the configuration's default when `None`).
    pub max_flows: Option<u32>,
    /// Also configure the IPv6 service `web6` ([`VIP6`], tcp, same delivery) served by pool
    /// `web6`: host `k`'s IPv6 endpoint (`[fd53:7900:0:200::{100+k}]:8080`) as host
    /// `web6-{k+1}` (id `201+k`, app [`APP_INFO`]), reported by host `k`'s agent next to
    /// `web-{k+1}`. Full NAT gets each unit's IPv6 backend address as a second NAT source.
    pub ipv6: bool,
    /// Also configure the UDP service `echo` ([`UDP_VIP`]) served by pool `web` (each host's
    /// IPv4 endpoint, UDP): a second row, `echo`, of every `web-N` host.
    pub udp: bool,
    /// The `firewall` of service `web`, as a TOML inline table (`{ deny = [...] }`).
    pub firewall: Option<String>,
    /// The `affinity` of service `web`, as a TOML inline table
    /// (`{ kind = "client-ip", timeout = "10m" }`); none when `None`.
    pub affinity: Option<String>,
    /// Start an [`EchoServer`] (TCP and UDP, answers name the host) on every host's
    /// endpoints before the agents (instead of, not next to, `app_servers`).
    pub echo_servers: bool,
    /// Add the `router` role to every unit, an http listener [`ROUTER_LISTENER`] at
    /// [`ROUTER_VIP`] (the VIP is put on every unit's `lo`, so the VIP route reaches the
    /// listener) and the request-mode service [`ROUTER_SERVICE`] on pool `web` with cookie
    /// affinity ([`ROUTER_COOKIE`]): a second row, `web-http`, of every `web-N` host.
    pub router: bool,
    /// With `router`: the `affinity` of [`ROUTER_SERVICE`] as a TOML inline table, instead
    /// of the default cookie affinity.
    pub router_affinity: Option<String>,
    /// Add the `session-store` role to every unit (session tracking; `[sessions]` settings
    /// go in `extra_toml`).
    pub sessions: bool,
}

/// The packet path of a cluster: forwarders attached to each forwarding unit's `eth0` (VIP
/// traffic from the router) and `eth1` (hosts), the service's delivery, and the units'
/// shape.
#[derive(Debug, Clone)]
pub struct PacketSpec {
    /// `"nat"` or `"half-nat"`.
    pub delivery: &'static str,
    /// `"tc"`, `"xdp"` or `"xdp+tc"`.
    pub attach: &'static str,
    /// `false`: every unit runs forwarder, classifier and health cache (all-in-one; NAT
    /// source = the unit's backend address). `true`: exactly 2 units, `lb-1` forwarder +
    /// health cache handing new connections to `lb-2` (classifier only, allotments from
    /// `lb-1` over UDP, NAT source = `lb-1`'s backend address); the router sends the VIP to
    /// `lb-1` only.
    pub split: bool,
}

impl PacketSpec {
    /// All-in-one units, full NAT, tc.
    pub fn all_in_one(delivery: &'static str) -> Self {
        Self {
            delivery,
            attach: "tc",
            split: false,
        }
    }

    /// Separate forwarder and classifier units.
    pub fn split(delivery: &'static str) -> Self {
        Self {
            delivery,
            attach: "tc",
            split: true,
        }
    }
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            clients: 1,
            lb_units: 2,
            hosts: 3,
            heartbeat_interval: Duration::from_millis(200),
            // Ten heartbeats: short, yet a loaded 2-core machine does not age hosts out
            // by accident.
            host_dead_after: Duration::from_secs(2),
            load_interval: Duration::from_millis(500),
            postulate_interval: Duration::from_millis(200),
            postulate_delay: None,
            unit_give_up_after: Duration::from_secs(30),
            capacity: 50,
            http_check: None,
            app_servers: false,
            agents: true,
            extra_toml: String::new(),
            packet: None,
            max_flows: None,
            ipv6: false,
            udp: false,
            firewall: None,
            affinity: None,
            echo_servers: false,
            router: false,
            router_affinity: None,
            sessions: false,
        }
    }
}

/// The nftables table of [`Cluster::switch_loss`].
pub const LOSS_TABLE: &str = "switchyard_cluster_loss";

/// Loss installed by [`Cluster::switch_loss`].
#[derive(Debug)]
pub struct SwitchLoss {
    switch: Netns,
}

impl SwitchLoss {
    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        let listing = self
            .switch
            .run(["nft", "list", "table", "bridge", LOSS_TABLE])
            .unwrap_or_default();
        listing
            .match_indices("packets ")
            .filter_map(|(i, _)| {
                listing[i + "packets ".len()..]
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }

    /// Stops dropping.
    pub fn clear(self) {
        self.switch
            .run(["nft", "delete", "table", "bridge", LOSS_TABLE])
            .expect("remove the loss from the switch");
    }
}

/// An agent process the cluster started.
#[derive(Debug)]
pub struct AgentProc {
    /// Where it runs.
    pub ns: Netns,
    /// The hosts it reports for (`--host`).
    pub hosts: Vec<String>,
    /// Its local API's Unix socket.
    pub socket: PathBuf,
    /// The process, `None` once stopped.
    pub process: Option<Process>,
    /// Exit statuses and logs of earlier runs, for the dump.
    pub past_logs: Vec<String>,
}

/// A row as both sides show it, for comparing a unit's cache with a host's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowView {
    /// VIP:port.
    pub vip: SocketAddr,
    /// `tcp`/`udp`.
    pub protocol: String,
    /// Endpoint address.
    pub endpoint: SocketAddr,
    /// Protocol-specific info.
    pub info: String,
    /// `healthy`/`failing`/`unknown`.
    pub health: String,
    /// Load (%).
    pub load: u8,
    /// Capacity.
    pub capacity: u8,
    /// Directive target.
    pub target: String,
    /// Directive current state.
    pub current: String,
}

impl RowView {
    /// A unit's row.
    pub fn of_unit(row: &HostRow) -> Self {
        Self {
            vip: row.vip,
            protocol: row.protocol.clone(),
            endpoint: row.endpoint,
            info: row.info.clone(),
            health: row.health.clone(),
            load: row.load,
            capacity: row.capacity,
            target: row.target.clone(),
            current: row.current.clone(),
        }
    }

    /// An agent's row (`current` is `-` while the row is absent).
    pub fn of_agent(row: &RowJson) -> Self {
        Self {
            vip: row.vip,
            protocol: name(&row.protocol),
            endpoint: row.endpoint,
            info: row.info.clone(),
            health: name(&row.health),
            load: row.load,
            capacity: row.capacity,
            target: name(&row.directive.target),
            current: row
                .directive
                .current
                .as_ref()
                .map_or_else(|| "-".to_owned(), name),
        }
    }
}

impl std::fmt::Display for RowView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} [{}] -> {} {} load={} cap={} {}/{}",
            self.vip,
            self.protocol,
            self.info,
            self.endpoint,
            self.health,
            self.load,
            self.capacity,
            self.target,
            self.current
        )
    }
}

/// The lowercase name an API enum serialises to (`healthy`, `draining`, `tcp`, …).
pub fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

/// Runs `future` to completion on a current-thread runtime on this thread (so sockets it
/// opens belong to this thread's namespace).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
        .block_on(future)
}

/// The wire allotment behind an `/v1/allotments` answer (token scheme), to spend with
/// `switchyard_health::TokenAllotment` as a classifier would.
pub fn token_response(view: &AllotmentView) -> AllotmentResponse {
    AllotmentResponse {
        request_id: view.request_id,
        vip: view.vip,
        protocol: if view.protocol == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        info: view.info.clone(),
        allotment: Allotment::Tokens {
            entries: view
                .entries
                .iter()
                .map(|e| TokenGrant {
                    endpoint: e.endpoint,
                    host: HostId(e.host),
                    tokens: e.tokens.unwrap_or(0),
                })
                .collect(),
            valid_for_ms: view.valid_for_ms.unwrap_or(0),
        },
    }
}

/// A running cluster; everything stops when it is dropped (the testbed tears down).
#[derive(Debug)]
pub struct Cluster {
    // Dropped in this order: processes, applications, then the testbed, then the files.
    lbs: Vec<Option<Process>>,
    agents: Vec<AgentProc>,
    apps: Vec<AppServer>,
    echoes: Vec<EchoServer>,
    past_lb_logs: Vec<Vec<String>>,
    spec: ClusterSpec,
    topo: Topology,
    tb: Testbed,
    secret: Vec<u8>,
    config: PathBuf,
    dir: TempDir,
}

impl Cluster {
    /// Builds and starts the cluster, or returns `None` after printing why the test is
    /// skipped (not root, no namespaces; under `CI=true` it fails instead).
    pub fn start(what: &str, spec: ClusterSpec) -> Option<Self> {
        let tb = switchyard_testbed::require(what)?;
        let topo = Topology::builder()
            .clients(spec.clients)
            .lb_units(spec.lb_units)
            .hosts(spec.hosts)
            .build(&tb)
            .expect("build the topology");
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = dir.path().join("cluster.key");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("gen-secret")
            .arg("--out")
            .arg(&key)
            .output()
            .expect("run switchyard gen-secret");
        assert!(
            out.status.success(),
            "switchyard gen-secret failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secret_text = std::fs::read(&key).expect("read the generated secret");
        let secret = switchyard_config::ClusterSecret::from_file_contents(&secret_text)
            .expect("gen-secret wrote a valid secret")
            .as_bytes()
            .to_vec();
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, config_text(&spec)).expect("write the configuration");
        if let Some(packet) = &spec.packet {
            prepare_packet_path(&topo, packet, spec.lb_units);
        }
        let mut cluster = Self {
            lbs: (0..spec.lb_units).map(|_| None).collect(),
            agents: Vec::new(),
            apps: Vec::new(),
            echoes: Vec::new(),
            past_lb_logs: vec![Vec::new(); spec.lb_units],
            spec,
            topo,
            tb,
            secret,
            config,
            dir,
        };
        if cluster.spec.app_servers {
            for k in 0..cluster.spec.hosts {
                let server = AppServer::start(cluster.topo.host(k).ns(), cluster.endpoint(k));
                cluster.apps.push(server);
            }
        }
        if cluster.spec.echo_servers {
            for k in 0..cluster.spec.hosts {
                let mut addrs = vec![cluster.endpoint(k)];
                if cluster.spec.ipv6 {
                    addrs.push(cluster.endpoint6(k));
                }
                let server =
                    EchoServer::start(cluster.topo.host(k).ns(), &cluster.host_name(k), &addrs);
                cluster.echoes.push(server);
            }
        }
        if cluster.spec.router {
            for j in 0..cluster.spec.lb_units {
                let vip = format!("{}/32", ROUTER_VIP.ip());
                cluster
                    .topo
                    .lb_unit(j)
                    .ns()
                    .run(["ip", "addr", "add", vip.as_str(), "dev", "lo"])
                    .expect("put the router VIP on the unit's lo");
            }
        }
        for j in 0..cluster.spec.lb_units {
            cluster.start_lb(j);
        }
        if cluster.spec.agents {
            for k in 0..cluster.spec.hosts {
                let ns = cluster.topo.host(k).ns().clone();
                let mut hosts = vec![cluster.host_name(k)];
                if cluster.spec.ipv6 {
                    hosts.push(cluster.host6_name(k));
                }
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                cluster.start_agent(&ns, &hosts);
            }
        }
        Some(cluster)
    }

    // ---- names and places --------------------------------------------------------------

    /// The spec it was built from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The namespaces.
    pub fn topo(&self) -> &Topology {
        &self.topo
    }

    /// The testbed.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The temporary directory (configuration, secret, agent sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster secret's bytes (to seal frames as a member would).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Unit `j`'s name, `lb-{j+1}`.
    pub fn unit_name(&self, j: usize) -> String {
        format!("lb-{}", j + 1)
    }

    /// Unit `j`'s control address (UDP).
    pub fn control_addr(&self, j: usize) -> SocketAddr {
        SocketAddr::new(self.unit_ip(j), CONTROL_PORT)
    }

    /// Unit `j`'s backend address.
    pub fn unit_ip(&self, j: usize) -> IpAddr {
        self.topo
            .lb_unit(j)
            .iface("eth1")
            .expect("LB units have eth1")
            .v4()
    }

    /// Host `k`'s name, `web-{k+1}`.
    pub fn host_name(&self, k: usize) -> String {
        format!("web-{}", k + 1)
    }

    /// Host `k`'s id, `101+k`.
    pub fn host_id(&self, k: usize) -> u32 {
        101 + k as u32
    }

    /// Host `k`'s application endpoint.
    pub fn endpoint(&self, k: usize) -> SocketAddr {
        SocketAddr::new(self.topo.host(k).v4(), APP_PORT)
    }

    /// Host `k`'s IPv6 host name (with [`ClusterSpec::ipv6`]), `web6-{k+1}`.
    pub fn host6_name(&self, k: usize) -> String {
        format!("web6-{}", k + 1)
    }

    /// Host `k`'s IPv6 application endpoint (with [`ClusterSpec::ipv6`]).
    pub fn endpoint6(&self, k: usize) -> SocketAddr {
        SocketAddr::new(self.topo.host(k).v6(), APP_PORT)
    }

    /// Host `k`'s echo server (with [`ClusterSpec::echo_servers`]).
    pub fn echo(&self, k: usize) -> &EchoServer {
        &self.echoes[k]
    }

    /// Host `k`'s application server (with `app_servers`).
    pub fn app(&mut self, k: usize) -> &mut AppServer {
        &mut self.apps[k]
    }

    // ---- processes ---------------------------------------------------------------------

    /// Starts `switchyard lb` for unit `j` in its namespace and waits for `lb ready`.
    pub fn start_lb(&mut self, j: usize) {
        assert!(self.lbs[j].is_none(), "unit {j} is already running");
        let ns = self.topo.lb_unit(j).ns();
        let process = ns
            .command([env!("CARGO_BIN_EXE_switchyard"), "lb", "--config"])
            .arg(&self.config)
            .arg("--unit")
            .arg(self.unit_name(j))
            .arg("--admin")
            .arg(ADMIN.to_string())
            .arg("--log-level")
            .arg("info")
            .spawn()
            .expect("spawn switchyard lb");
        process
            .wait_for_output("lb ready", READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{} did not start: {e}", self.unit_name(j)));
        self.lbs[j] = Some(process);
    }

    /// Stops unit `j` with SIGTERM (SIGKILL after a grace period); returns its exit status.
    pub fn stop_lb(&mut self, j: usize) -> ExitStatus {
        let process = self.lbs[j].take().expect("unit is running");
        let status = process.terminate().expect("terminate switchyard lb");
        self.past_lb_logs[j].push(format!(
            "run ended with {status}; stderr tail:\n{}",
            tail(&process.stderr().unwrap_or_default(), 15)
        ));
        status
    }

    /// Kills unit `j` with SIGKILL.
    pub fn kill_lb(&mut self, j: usize) {
        let process = self.lbs[j].take().expect("unit is running");
        let status = process.kill().expect("kill switchyard lb");
        self.past_lb_logs[j].push(format!(
            "run killed ({status}); stderr tail:\n{}",
            tail(&process.stderr().unwrap_or_default(), 15)
        ));
    }

    /// Whether unit `j` runs the health-cache role (every unit but the classifier-only one
    /// of a split packet cluster).
    pub fn unit_runs_health(&self, j: usize) -> bool {
        !matches!(&self.spec.packet, Some(p) if p.split && j == 1)
    }

    /// Unit `j`'s `/v1/flows` (forwarder and classifier state).
    pub fn unit_flows(
        &self,
        j: usize,
    ) -> Result<switchyard_lb::admin::flows::FlowsResponse, String> {
        self.unit_json(j, "/v1/flows")
    }

    /// Unit `j`'s process, while running.
    pub fn lb_process(&self, j: usize) -> Option<&Process> {
        self.lbs[j].as_ref()
    }

    /// Starts an agent in `ns` reporting for `hosts` (one `--host` each), with its socket in
    /// the temporary directory, waits for `agent ready` and returns its index. Host agents
    /// started by [`Cluster::start`] have index `k` for host `k`.
    pub fn start_agent(&mut self, ns: &Netns, hosts: &[&str]) -> usize {
        let index = self.agents.len();
        let socket = self.dir.path().join(format!("agent-{index}.sock"));
        self.agents.push(AgentProc {
            ns: ns.clone(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            socket,
            process: None,
            past_logs: Vec::new(),
        });
        self.restart_agent(index);
        index
    }

    /// Starts agent `a` again after [`Cluster::stop_agent`] or [`Cluster::kill_agent`].
    pub fn restart_agent(&mut self, a: usize) {
        let agent = &self.agents[a];
        assert!(agent.process.is_none(), "agent {a} is already running");
        let mut command = agent
            .ns
            .command([env!("CARGO_BIN_EXE_switchyard"), "agent", "--config"])
            .arg(&self.config);
        for host in &agent.hosts {
            command = command.arg("--host").arg(host);
        }
        let process = command
            .arg("--listen")
            .arg(AGENT_LISTEN)
            .arg("--socket")
            .arg(&agent.socket)
            .arg("--log-level")
            .arg("info")
            .spawn()
            .expect("spawn switchyard agent");
        process
            .wait_for_output("agent ready", READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("agent for {:?} did not start: {e}", agent.hosts));
        self.agents[a].process = Some(process);
    }

    /// Stops agent `a` with SIGTERM (it says goodbye); returns its exit status.
    pub fn stop_agent(&mut self, a: usize) -> ExitStatus {
        let process = self.agents[a].process.take().expect("agent is running");
        let status = process.terminate().expect("terminate switchyard agent");
        self.agents[a].past_logs.push(format!(
            "run ended with {status}; stderr tail:\n{}",
            tail(&process.stderr().unwrap_or_default(), 15)
        ));
        status
    }

    /// Kills agent `a` with SIGKILL (no goodbye).
    pub fn kill_agent(&mut self, a: usize) {
        let process = self.agents[a].process.take().expect("agent is running");
        let status = process.kill().expect("kill switchyard agent");
        self.agents[a].past_logs.push(format!(
            "run killed ({status}); stderr tail:\n{}",
            tail(&process.stderr().unwrap_or_default(), 15)
        ));
    }

    /// Agent `a`'s stderr so far (empty when it is not running).
    pub fn agent_log(&self, a: usize) -> String {
        self.agents[a]
            .process
            .as_ref()
            .and_then(|p| p.stderr().ok())
            .unwrap_or_default()
    }

    /// Unit `j`'s stderr so far (empty when it is not running).
    pub fn lb_log(&self, j: usize) -> String {
        self.lbs[j]
            .as_ref()
            .and_then(|p| p.stderr().ok())
            .unwrap_or_default()
    }

    /// Agent `a`.
    pub fn agent(&self, a: usize) -> &AgentProc {
        &self.agents[a]
    }

    /// The running agent reporting for host `k`.
    fn agent_of(&self, k: usize) -> Result<&AgentProc, String> {
        let host = self.host_name(k);
        self.agents
            .iter()
            .find(|a| a.process.is_some() && a.hosts.contains(&host))
            .ok_or_else(|| format!("no running agent reports for {host}"))
    }

    // ---- the units' admin API ----------------------------------------------------------

    /// `GET path` from unit `j`'s admin API, from inside its namespace.
    pub fn unit_get(&self, j: usize, path: &str) -> Result<AdminResponse, String> {
        let ns = self.topo.lb_unit(j).ns();
        ns.enter(|| block_on(admin_client::get(ADMIN, path, REQUEST_TIMEOUT)))
            .map_err(|e| format!("enter {}: {e}", ns.name()))?
            .map_err(|e| format!("{} GET {path}: {e}", self.unit_name(j)))
    }

    fn unit_json<T: serde::de::DeserializeOwned + Send>(
        &self,
        j: usize,
        path: &str,
    ) -> Result<T, String> {
        let ns = self.topo.lb_unit(j).ns();
        ns.enter(|| block_on(admin_client::get_json::<T>(ADMIN, path, REQUEST_TIMEOUT)))
            .map_err(|e| format!("enter {}: {e}", ns.name()))?
            .map_err(|e| format!("{} GET {path}: {e}", self.unit_name(j)))
    }

    /// Unit `j`'s `/v1/router` (with [`ClusterSpec::router`]).
    pub fn unit_router(&self, j: usize) -> Result<serde_json::Value, String> {
        self.unit_json(j, "/v1/router")
    }

    /// Unit `j`'s `/v1/hosts`.
    pub fn try_unit_hosts(&self, j: usize) -> Result<HostsResponse, String> {
        self.unit_json(j, "/v1/hosts")
    }

    /// Unit `j`'s `/v1/hosts`; panics if it does not answer.
    #[track_caller]
    pub fn unit_hosts(&self, j: usize) -> HostsResponse {
        self.try_unit_hosts(j).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Unit `j`'s `/v1/counters`.
    pub fn try_unit_counters(&self, j: usize) -> Result<CountersResponse, String> {
        self.unit_json(j, "/v1/counters")
    }

    /// Unit `j`'s `/v1/counters`; panics if it does not answer.
    #[track_caller]
    pub fn unit_counters(&self, j: usize) -> CountersResponse {
        self.try_unit_counters(j).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `switchyard ctl --unit 127.0.0.1:9180 hosts [--json]` run inside unit `j`'s
    /// namespace: its standard output.
    pub fn ctl_hosts(&self, j: usize, json: bool) -> Result<String, String> {
        if json {
            self.ctl(j, &["hosts", "--json"])
        } else {
            self.ctl(j, &["hosts"])
        }
    }

    /// `switchyard ctl --unit <unit j's admin API> ARGS` run in unit `j`'s namespace: its
    /// output, or its status and error output.
    pub fn ctl(&self, j: usize, ctl_args: &[&str]) -> Result<String, String> {
        let mut args = vec![
            env!("CARGO_BIN_EXE_switchyard").to_owned(),
            "ctl".to_owned(),
            "--unit".to_owned(),
            ADMIN.to_string(),
        ];
        args.extend(ctl_args.iter().map(|a| (*a).to_owned()));
        let out = self
            .topo
            .lb_unit(j)
            .ns()
            .output(&args)
            .map_err(|e| format!("cannot run ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!("ctl failed ({}): {}", out.status, out.stderr));
        }
        Ok(out.stdout)
    }

    /// Unit `j`'s hosts as `switchyard ctl hosts --json` prints them.
    pub fn ctl_hosts_json(&self, j: usize) -> Result<HostsResponse, String> {
        let text = self.ctl_hosts(j, true)?;
        serde_json::from_str(&text)
            .map_err(|e| format!("ctl printed no hosts document ({e}): {text}"))
    }

    /// A token allotment of `tokens` for the `web` service from unit `j`'s
    /// `/v1/allotments`.
    pub fn unit_allotment(&self, j: usize, tokens: u32) -> Result<AllotmentView, String> {
        self.unit_json(
            j,
            &format!("/v1/allotments?vip={VIP}&protocol=tcp&info={APP_INFO}&tokens={tokens}"),
        )
    }

    /// Host `k`'s `web` row at unit `j` (the row of [`VIP`]/tcp; `Ok(None)` when the unit does not hold the host or
    /// the row).
    pub fn unit_row(&self, j: usize, k: usize) -> Result<Option<HostRow>, String> {
        let hosts = self.try_unit_hosts(j)?;
        let id = self.host_id(k);
        let endpoint = self.endpoint(k);
        Ok(hosts.hosts.iter().find(|h| h.id == id).and_then(|h| {
            h.rows
                .iter()
                .find(|r| r.endpoint == endpoint && r.vip == VIP && r.protocol == "tcp")
                .cloned()
        }))
    }

    /// Whether unit `j` holds host `k` at all.
    pub fn unit_has_host(&self, j: usize, k: usize) -> Result<bool, String> {
        let id = self.host_id(k);
        Ok(self.try_unit_hosts(j)?.hosts.iter().any(|h| h.id == id))
    }

    // ---- the agents' local API ---------------------------------------------------------

    /// One request to agent `a`'s local API over its Unix socket.
    pub fn agent_request(
        &self,
        a: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<ApiResponse, String> {
        let target = ApiTarget::Unix(self.agents[a].socket.clone());
        block_on(async {
            tokio::time::timeout(
                REQUEST_TIMEOUT,
                switchyard_agent::api::client::request(&target, method, path, body),
            )
            .await
        })
        .map_err(|_| format!("agent {a}: {method} {path}: no answer in time"))?
        .map_err(|e| format!("agent {a}: {method} {path}: {e:#}"))
    }

    /// Agent `a`'s `/v1/hosts`.
    pub fn agent_hosts(&self, a: usize) -> Result<Vec<HostJson>, String> {
        let response = self.agent_request(a, "GET", "/v1/hosts", None)?;
        if response.status != 200 {
            return Err(format!(
                "agent {a}: GET /v1/hosts answered {}: {}",
                response.status, response.body
            ));
        }
        serde_json::from_str(&response.body)
            .map_err(|e| format!("agent {a}: GET /v1/hosts: {e}: {}", response.body))
    }

    /// Agent `a`'s `/v1/counters` (JSON: `{"hosts": [{"host", "transport", "protocol",
    /// ...}]}`).
    pub fn agent_counters(&self, a: usize) -> Result<serde_json::Value, String> {
        let response = self.agent_request(a, "GET", "/v1/counters", None)?;
        if response.status != 200 {
            return Err(format!(
                "agent {a}: GET /v1/counters answered {}: {}",
                response.status, response.body
            ));
        }
        Ok(response.json())
    }

    /// Datagrams sent to the units by every running agent, all hosts together.
    pub fn agents_sent(&self) -> Result<u64, String> {
        let mut sent = 0;
        for a in (0..self.agents.len()).filter(|a| self.agents[*a].process.is_some()) {
            let counters = self.agent_counters(a)?;
            for host in counters["hosts"].as_array().into_iter().flatten() {
                sent += host["transport"]["sent"]
                    .as_u64()
                    .ok_or_else(|| format!("agent {a}: no transport.sent in {host}"))?;
            }
        }
        Ok(sent)
    }

    /// Host `k`'s `web` row as its agent shows it.
    pub fn agent_row(&self, k: usize) -> Result<RowJson, String> {
        let agent = self.agent_of(k)?;
        let a = self
            .agents
            .iter()
            .position(|x| std::ptr::eq(x, agent))
            .expect("the agent is listed");
        let path = format!("/v1/hosts/{}/apps/{SERVICE}", self.host_name(k));
        let response = self.agent_request(a, "GET", &path, None)?;
        if response.status != 200 {
            return Err(format!(
                "GET {path} answered {}: {}",
                response.status, response.body
            ));
        }
        serde_json::from_str(&response.body).map_err(|e| format!("GET {path}: {e}"))
    }

    /// A request to the agent of host `k` that must answer 2xx; returns the body.
    #[track_caller]
    pub fn host_request(&self, k: usize, method: &str, path: &str, body: Option<&str>) -> String {
        let agent = self.agent_of(k).unwrap_or_else(|e| panic!("{e}"));
        let a = self
            .agents
            .iter()
            .position(|x| std::ptr::eq(x, agent))
            .expect("the agent is listed");
        let response = self
            .agent_request(a, method, path, body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (200..300).contains(&response.status),
            "{method} {path} {body:?} answered {}: {}",
            response.status,
            response.body
        );
        response.body
    }

    /// `PUT /v1/hosts/web-N/apps/web/status` with the given fields.
    #[track_caller]
    pub fn set_status(
        &self,
        k: usize,
        health: Option<&str>,
        load: Option<u8>,
        capacity: Option<u8>,
    ) {
        self.set_service_status(k, SERVICE, health, load, capacity);
    }

    /// `PUT /v1/hosts/{host}/apps/{service}/status` for host `k`'s row of `service`
    /// ([`SERVICE`] and [`UDP_SERVICE`]: host `web-N`; [`SERVICE6`]: host `web6-N`).
    #[track_caller]
    pub fn set_service_status(
        &self,
        k: usize,
        service: &str,
        health: Option<&str>,
        load: Option<u8>,
        capacity: Option<u8>,
    ) {
        let mut body = serde_json::Map::new();
        if let Some(h) = health {
            body.insert("health".into(), h.into());
        }
        if let Some(l) = load {
            body.insert("load".into(), l.into());
        }
        if let Some(c) = capacity {
            body.insert("capacity".into(), c.into());
        }
        let host = if service == SERVICE6 {
            self.host6_name(k)
        } else {
            self.host_name(k)
        };
        let path = format!("/v1/hosts/{host}/apps/{service}/status");
        self.host_request(
            k,
            "PUT",
            &path,
            Some(&serde_json::Value::Object(body).to_string()),
        );
    }

    /// `POST /v1/hosts/web-N/{command}` (`drain`, `undrain`, `disable`): every row of the
    /// host.
    #[track_caller]
    pub fn directive(&self, k: usize, command: &str) {
        let path = format!("/v1/hosts/{}/{command}", self.host_name(k));
        self.host_request(k, "POST", &path, None);
    }

    // ---- convergence -------------------------------------------------------------------

    /// Every running agent's published table, by host id: `Err` while any row has an
    /// unpublished change or a pending handshake (the tables are still moving).
    pub fn expected_tables(&self) -> Result<BTreeMap<u32, Vec<RowView>>, String> {
        let mut tables = BTreeMap::new();
        for (a, agent) in self.agents.iter().enumerate() {
            if agent.process.is_none() {
                continue;
            }
            for host in self.agent_hosts(a)? {
                let mut rows = Vec::new();
                for row in host.rows.iter().filter(|r| r.present) {
                    if !row.published {
                        return Err(format!(
                            "{} row {}: change not yet published",
                            host.name, row.name
                        ));
                    }
                    if let Some(h) = &row.handshake {
                        return Err(format!(
                            "{} row {}: handshake to {} pending (agreed {:?}, waiting {:?})",
                            host.name,
                            row.name,
                            name(&h.target),
                            h.agreed,
                            h.waiting
                        ));
                    }
                    rows.push(RowView::of_agent(row));
                }
                rows.sort();
                tables.insert(host.id, rows);
            }
        }
        Ok(tables)
    }

    /// Whether unit `j`'s cache holds exactly `expected`: the same hosts, each alive, in
    /// sync, with a baseline, and the same rows (health, load, capacity, target, current).
    pub fn compare_unit(
        &self,
        j: usize,
        expected: &BTreeMap<u32, Vec<RowView>>,
    ) -> Result<(), String> {
        let unit = self.unit_name(j);
        let hosts = self.try_unit_hosts(j)?;
        for (id, want) in expected {
            let Some(entry) = hosts.hosts.iter().find(|h| h.id == *id) else {
                return Err(format!("{unit} does not hold host {id}"));
            };
            if !(entry.alive && entry.in_sync && entry.baseline) {
                return Err(format!(
                    "{unit} host {id}: alive={} in_sync={} baseline={}",
                    entry.alive, entry.in_sync, entry.baseline
                ));
            }
            let mut got: Vec<RowView> = entry.rows.iter().map(RowView::of_unit).collect();
            got.sort();
            if &got != want {
                return Err(format!(
                    "{unit} host {id}: unit rows [{}] but the host's table is [{}]",
                    join(&got),
                    join(want)
                ));
            }
        }
        if let Some(extra) = hosts.hosts.iter().find(|h| !expected.contains_key(&h.id)) {
            return Err(format!(
                "{unit} still holds host {} ({:?}) that no running agent reports",
                extra.id, extra.name
            ));
        }
        Ok(())
    }

    /// Whether every unit's cache equals the hosts' tables.
    pub fn converged(&self) -> Result<(), String> {
        let expected = self.expected_tables()?;
        for j in 0..self.spec.lb_units {
            if self.lbs[j].is_some() && self.unit_runs_health(j) {
                self.compare_unit(j, &expected)?;
            }
        }
        Ok(())
    }

    /// Waits until [`Cluster::converged`]; returns how long it took.
    #[track_caller]
    pub fn wait_converged(&self, timeout: Duration) -> Duration {
        wait::wait_until(
            "every unit's cache equals the hosts' tables",
            timeout,
            || self.converged(),
        )
        .1
    }

    /// Waits until every running unit shows host `k`'s row satisfying `want`; returns how
    /// long it took.
    #[track_caller]
    pub fn wait_rows(
        &self,
        what: &str,
        k: usize,
        timeout: Duration,
        want: impl Fn(&HostRow) -> bool,
    ) -> Duration {
        wait::wait_until(what, timeout, || {
            for j in (0..self.spec.lb_units)
                .filter(|j| self.lbs[*j].is_some() && self.unit_runs_health(*j))
            {
                match self.unit_row(j, k)? {
                    Some(row) if want(&row) => {}
                    Some(row) => {
                        return Err(format!(
                            "{} shows {}: {}",
                            self.unit_name(j),
                            self.host_name(k),
                            RowView::of_unit(&row)
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{} has no row of {}",
                            self.unit_name(j),
                            self.host_name(k)
                        ));
                    }
                }
            }
            Ok(())
        })
        .1
    }

    // ---- faults ------------------------------------------------------------------------

    /// Drops `percent`% of the control datagrams (UDP to or from port 9170) crossing the
    /// backend switch, at random and silently for both ends (an nftables `bridge` table in
    /// the switch namespace; the testbed's own faults hook the routing path, where a drop of
    /// a locally sent packet shows up as a send error). Cleared by [`SwitchLoss::clear`] or
    /// at teardown.
    pub fn switch_loss(&self, percent: u8) -> SwitchLoss {
        assert!((1..100).contains(&percent), "loss of {percent}%");
        let rule = |dir: &str| {
            format!("    udp {dir} {CONTROL_PORT} numgen random mod 100 < {percent} counter drop\n")
        };
        let script = format!(
            "table bridge {LOSS_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{}{}  }}\n}}\n",
            rule("dport"),
            rule("sport")
        );
        self.topo
            .switch()
            .command(["nft", "-f", "-"])
            .input(script)
            .run()
            .expect("install the loss in the switch");
        SwitchLoss {
            switch: self.topo.switch().clone(),
        }
    }

    // ---- diagnostics -------------------------------------------------------------------

    /// What a failing test needs to see: each unit's cache and counters, each agent's rows
    /// and handshakes, and the logs of processes that were stopped earlier.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "===== cluster state ({}) =====", self.tb.name());
        for j in 0..self.spec.lb_units {
            let unit = self.unit_name(j);
            let Some(process) = &self.lbs[j] else {
                let _ = writeln!(out, "--- {unit}: not running");
                continue;
            };
            let _ = writeln!(out, "--- {unit} (pid {})", process.pid());
            match self.try_unit_hosts(j) {
                Ok(hosts) => {
                    for h in &hosts.hosts {
                        let _ = writeln!(
                            out,
                            "  host {} {:?} alive={} in_sync={} baseline={} heartbeat {} ms ago gen={}",
                            h.id,
                            h.name,
                            h.alive,
                            h.in_sync,
                            h.baseline,
                            h.last_heartbeat_ms,
                            h.generation
                        );
                        for r in &h.rows {
                            let _ = writeln!(
                                out,
                                "    {} handshake={} tokens={}",
                                RowView::of_unit(r),
                                r.handshake,
                                r.tokens
                            );
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  hosts: {e}");
                }
            }
            match self.try_unit_counters(j) {
                Ok(c) => {
                    let _ = writeln!(
                        out,
                        "  transport: received={} sent={} rejected={:?}\n  cache: snapshots requested={} completed={} age_outs={} goodbyes={} ignored={} postulate_replies={}\n  service ignored={:?} unroutable={}",
                        c.transport.received,
                        c.transport.sent,
                        c.transport.rejected,
                        c.cache.snapshots_requested,
                        c.cache.snapshots_completed,
                        c.cache.age_outs,
                        c.cache.goodbyes,
                        c.cache.ignored,
                        c.cache.postulate_replies,
                        c.service.ignored,
                        c.service.unroutable
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  counters: {e}");
                }
            }
        }
        for (a, agent) in self.agents.iter().enumerate() {
            let _ = writeln!(
                out,
                "--- agent {a} for {:?} in {}{}",
                agent.hosts,
                agent.ns.name(),
                if agent.process.is_some() {
                    ""
                } else {
                    " (not running)"
                }
            );
            if agent.process.is_none() {
                continue;
            }
            match self.agent_hosts(a) {
                Ok(hosts) => {
                    for h in hosts {
                        let _ = writeln!(
                            out,
                            "  {} (id {}) listen={} gen={} published_rows={}",
                            h.name, h.id, h.listen, h.generation, h.published_rows
                        );
                        for r in &h.rows {
                            let _ = writeln!(
                                out,
                                "    {} present={} published={} handshake={} check={}",
                                RowView::of_agent(r),
                                r.present,
                                r.published,
                                r.handshake.as_ref().map_or_else(
                                    || "-".to_owned(),
                                    |hs| format!(
                                        "{} agreed={:?} waiting={:?} given_up={:?} age={}ms",
                                        name(&hs.target),
                                        hs.agreed,
                                        hs.waiting,
                                        hs.given_up,
                                        hs.age_ms
                                    )
                                ),
                                r.check
                                    .as_ref()
                                    .map_or_else(|| "-".to_owned(), |c| c.detail.clone())
                            );
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  {e}");
                }
            }
        }
        for j in 0..self.spec.lb_units {
            for past in &self.past_lb_logs[j] {
                let _ = writeln!(out, "--- {} earlier {past}", self.unit_name(j));
            }
        }
        for (a, agent) in self.agents.iter().enumerate() {
            for past in &agent.past_logs {
                let _ = writeln!(out, "--- agent {a} earlier {past}");
            }
        }
        let _ = writeln!(out, "===== end of cluster state =====");
        out
    }

    /// [`Cluster::dump`] and the end of every running process's stderr. (When a test
    /// panics the testbed prints those logs itself at teardown, so the drop dump leaves them
    /// out.)
    pub fn dump_with_logs(&self) -> String {
        let mut out = self.dump();
        for j in 0..self.spec.lb_units {
            if let Some(p) = &self.lbs[j] {
                let _ = writeln!(
                    out,
                    "--- {} stderr (last lines)\n{}",
                    self.unit_name(j),
                    tail(&p.stderr().unwrap_or_default(), 25)
                );
            }
        }
        for (a, agent) in self.agents.iter().enumerate() {
            if let Some(p) = &agent.process {
                let _ = writeln!(
                    out,
                    "--- agent {a} {:?} stderr (last lines)\n{}",
                    agent.hosts,
                    tail(&p.stderr().unwrap_or_default(), 25)
                );
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

/// The cluster configuration for `spec`.
pub fn config_text(spec: &ClusterSpec) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let delivery = spec.packet.as_ref().map_or("nat", |p| p.delivery);
    let firewall = spec
        .firewall
        .as_ref()
        .map(|f| format!("firewall = {f}\n"))
        .unwrap_or_default();
    let firewall = match &spec.affinity {
        Some(a) => format!("{firewall}affinity = {a}\n"),
        None => firewall,
    };
    let mut text = format!(
        r#"# Generated by the cluster test harness.
[cluster]
id = "{CLUSTER_ID}"
secret_file = "cluster.key"
"#
    );
    for j in 0..spec.lb_units {
        // Packet-mode services need forwarder and classifier units. Without a packet spec
        // no unit has forwarder settings, so no data plane is loaded.
        let max_flows = spec
            .max_flows
            .map(|n| format!(", max_flows = {n}"))
            .unwrap_or_default();
        let (roles, extra) = match &spec.packet {
            None => (
                r#"["forwarder", "classifier", "health-cache"]"#.to_owned(),
                String::new(),
            ),
            Some(p) if p.split && j == 0 => (
                r#"["forwarder", "health-cache"]"#.to_owned(),
                format!(
                    "classifier = \"lb-2\"\nforwarder = {{ interfaces = [\"eth0\", \"eth1\"], attach = \"{}\"{max_flows} }}\n",
                    p.attach
                ),
            ),
            Some(p) if p.split => (
                r#"["classifier"]"#.to_owned(),
                format!(
                    "forwarder = {{ nat_sources = [{}] }}\n",
                    nat_sources(spec, 0)
                ),
            ),
            Some(p) => (
                r#"["forwarder", "classifier", "health-cache"]"#.to_owned(),
                format!(
                    "forwarder = {{ interfaces = [\"eth0\", \"eth1\"], attach = \"{}\", nat_sources = [{}]{max_flows} }}\n",
                    p.attach,
                    nat_sources(spec, j)
                ),
            ),
        };
        let roles = if spec.router {
            roles.replacen(']', r#", "router"]"#, 1)
        } else {
            roles
        };
        let roles = if spec.sessions {
            roles.replacen(']', r#", "session-store"]"#, 1)
        } else {
            roles
        };
        let _ = write!(
            text,
            r#"
[[cluster.units]]
name = "lb-{n}"
id = {n}
address = "198.18.200.{ip}"
roles = {roles}
control_port = {CONTROL_PORT}
admin = "{ADMIN}"
{extra}"#,
            n = j + 1,
            ip = 10 + j
        );
    }
    let _ = write!(
        text,
        r#"
[health]
heartbeat_interval = "{}"
host_dead_after = "{}"
load_interval = "{}"
postulate_interval = "{}"
unit_give_up_after = "{}"
{}
[[services]]
name = "{SERVICE}"
vip = "{VIP}"
protocol = "tcp"
mode = "packet"
delivery = "{delivery}"
pool = "web"
{firewall}
[[pools]]
name = "web"
"#,
        ms(spec.heartbeat_interval),
        ms(spec.host_dead_after),
        ms(spec.load_interval),
        ms(spec.postulate_interval),
        ms(spec.unit_give_up_after),
        spec.postulate_delay
            .map(|d| format!("postulate_delay = \"{}\"\n", ms(d)))
            .unwrap_or_default(),
    );
    if spec.http_check.is_some() {
        text.push_str("health_check = \"app-http\"\n");
    }
    for k in 0..spec.hosts {
        let _ = write!(
            text,
            r#"
[[pools.hosts]]
id = {id}
name = "web-{n}"
address = "198.18.200.{ip}:{APP_PORT}"
app = "{APP_INFO}"
capacity = {cap}
"#,
            id = 101 + k,
            n = k + 1,
            ip = 100 + k,
            cap = spec.capacity
        );
    }
    if spec.udp {
        let _ = write!(
            text,
            r#"
[[services]]
name = "{UDP_SERVICE}"
vip = "{UDP_VIP}"
protocol = "udp"
mode = "packet"
delivery = "{delivery}"
pool = "web"
"#
        );
    }
    if spec.ipv6 {
        let _ = write!(
            text,
            r#"
[[services]]
name = "{SERVICE6}"
vip = "{VIP6}"
protocol = "tcp"
mode = "packet"
delivery = "{delivery}"
pool = "{SERVICE6}"

[[pools]]
name = "{SERVICE6}"
"#
        );
        for k in 0..spec.hosts {
            let _ = write!(
                text,
                r#"
[[pools.hosts]]
id = {id}
name = "web6-{n}"
address = "[fd53:7900:0:200::{ip}]:{APP_PORT}"
app = "{APP_INFO}"
capacity = {cap}
"#,
                id = 201 + k,
                n = k + 1,
                ip = 100 + k,
                cap = spec.capacity
            );
        }
    }
    if let Some(check) = &spec.http_check {
        let _ = write!(
            text,
            r#"
[[health_checks]]
name = "app-http"
kind = "http"
path = "/healthz"
expect_status = 200
body_contains = "ok"
interval = "{}"
timeout = "{}"
rise = {}
fall = {}
"#,
            ms(check.interval),
            ms(check.timeout),
            check.rise,
            check.fall
        );
    }
    if spec.router {
        let affinity = spec.router_affinity.clone().unwrap_or_else(|| {
            format!(r#"{{ kind = "cookie", cookie = "{ROUTER_COOKIE}", timeout = "10m" }}"#)
        });
        let _ = write!(
            text,
            r#"
[[listeners]]
name = "{ROUTER_LISTENER}"
address = "{ROUTER_VIP}"
protocol = "http"

[[services]]
name = "{ROUTER_SERVICE}"
vip = "{ROUTER_VIP}"
protocol = "tcp"
mode = "request"
listener = "{ROUTER_LISTENER}"
pool = "web"
affinity = {affinity}
"#
        );
    }
    text.push_str(&spec.extra_toml);
    text
}

/// The full-NAT sources of unit `j` as a TOML array's items: its IPv4 backend address, and
/// with [`ClusterSpec::ipv6`] its IPv6 one.
fn nat_sources(spec: &ClusterSpec, j: usize) -> String {
    let mut sources = format!("\"198.18.200.{}\"", 10 + j);
    if spec.ipv6 {
        let _ = write!(sources, ", \"fd53:7900:0:200::{}\"", 10 + j);
    }
    sources
}

/// What the packet path needs from the topology: GRO on the peers of every LB unit's
/// interfaces (frames the forwarder reinjects or redirects with XDP reach a veth only when its
/// peer has NAPI), for a split cluster the VIP routed to `lb-1` only (`lb-2` does not
/// forward), and for half NAT every host's route to the clients via `lb-1`'s backend address
/// (hosts answer the client directly, through the forwarder).
fn prepare_packet_path(topo: &Topology, packet: &PacketSpec, units: usize) {
    if packet.delivery == "half-nat" {
        let via = topo
            .lb_unit(0)
            .iface("eth1")
            .expect("LB units have eth1")
            .v4();
        for host in topo.hosts() {
            for client in topo.clients() {
                host.ns()
                    .add_route(client.primary().v4_cidr(), via)
                    .expect("host route to the client via the forwarder");
            }
        }
    }
    for j in 0..units {
        let port = format!("lb{j}");
        topo.router()
            .ns()
            .run(["ethtool", "-K", port.as_str(), "gro", "on"])
            .expect("GRO on the router's port to the unit");
        topo.switch()
            .run(["ethtool", "-K", port.as_str(), "gro", "on"])
            .expect("GRO on the switch's port to the unit");
    }
    if packet.split {
        let front = &topo.lb_unit(0).interfaces()[0];
        for (vip, via) in [(VIP.ip(), front.v4()), (VIP6.ip(), front.v6())] {
            topo.router()
                .ns()
                .run([
                    "ip".to_owned(),
                    "route".to_owned(),
                    "replace".to_owned(),
                    vip.to_string(),
                    "via".to_owned(),
                    via.to_string(),
                ])
                .expect("the VIP routed to the forwarder unit only");
        }
    }
}

fn join(rows: &[RowView]) -> String {
    rows.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
