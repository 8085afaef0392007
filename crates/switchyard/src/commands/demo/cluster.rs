//! The demo's cluster: namespaces built with the testbed (client — router — one LB unit —
//! three hosts), a generated cluster configuration, and the processes, all started from the
//! current executable exactly as an operator would start them: `switchyard lb` in the LB
//! unit's namespace, `switchyard demo-host` and `switchyard agent` in each host's namespace.
//!
//! This is the only place the binary uses `switchyard-testbed`, for its namespaces and its
//! teardown guarantees (processes stopped, namespaces deleted, also on a panic). The
//! production roles (`lb`, `agent`) never see it: they read the generated configuration.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngCore;
use switchyard_lb::admin::api::HostsResponse;
use switchyard_lb::admin::client as admin_client;
use switchyard_testbed::{Netns, Process, Testbed, Topology};
use tempfile::TempDir;

/// Number of demo hosts.
pub const HOSTS: usize = 3;
/// The port every demo host's application listens on.
pub const APP_PORT: u16 = 8080;
/// The service port on the VIPs.
pub const VIP_PORT: u16 = 80;
/// The request router's port on the IPv4 VIP (HTTP, per-request routing).
pub const ROUTER_PORT: u16 = 8080;
/// The LB unit's admin API, inside its namespace.
pub const LB_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// The LB unit's name in the generated configuration.
pub const UNIT: &str = "lb-1";
/// The unit's health and load control port (UDP).
const CONTROL_PORT: u16 = 9170;
/// Every agent's UDP address, inside its host's namespace.
const AGENT_LISTEN: &str = "0.0.0.0:9171";
/// The generated cluster's id.
const CLUSTER_ID: &str = "switchyard-demo";
/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the hosts may take to become healthy in the unit's cache.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// Host number `n` (1-based) as named in the IPv4 pool: `demo-n`.
pub fn host_name(n: usize) -> String {
    format!("demo-{n}")
}

/// Host number `n` (1-based) as named in the IPv6 pool: `demo-n-v6`.
pub fn host6_name(n: usize) -> String {
    format!("demo-{n}-v6")
}

/// One demo host: its namespace, endpoints and processes.
#[derive(Debug)]
pub struct DemoHost {
    /// 1-based number (`d N` on the console).
    pub number: usize,
    /// Where it runs.
    pub ns: Netns,
    /// IPv4 endpoint (pool `web`).
    pub endpoint: SocketAddr,
    /// IPv6 endpoint (pool `web6`).
    pub endpoint6: SocketAddr,
    /// The agent's local API socket.
    pub socket: PathBuf,
    app: Process,
    agent: Process,
}

impl DemoHost {
    /// `demo-N`.
    pub fn name(&self) -> String {
        host_name(self.number)
    }
}

/// The running demo cluster. Dropping it stops everything; [`Cluster::shutdown`] does the
/// same and reports what could not be removed.
#[derive(Debug)]
pub struct Cluster {
    // Dropped in this order: processes, then the testbed (namespaces), then the files.
    hosts: Vec<DemoHost>,
    lb: Process,
    topo: Topology,
    tb: Testbed,
    dir: TempDir,
    /// Processes whose unexpected exit was already reported.
    reported: BTreeSet<String>,
}

/// A process that exited by itself.
#[derive(Debug)]
pub struct Exited {
    /// Which process (`switchyard lb`, `agent of demo-2`, …).
    pub what: String,
    /// Whether it exited with status 0 (it was told to stop, e.g. by a Ctrl-C sent to the
    /// whole terminal process group).
    pub clean: bool,
    /// Its exit status and the end of its log.
    pub detail: String,
}

impl Cluster {
    /// Builds the namespaces in `tb`, writes the configuration and starts every process,
    /// then waits until the unit sees every host healthy. `stop` is checked between steps
    /// (a Ctrl-C during setup); `progress` is told what happens.
    pub fn start(
        tb: Testbed,
        exe: &Path,
        stop: &AtomicBool,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<Self> {
        let check_stop = || -> anyhow::Result<()> {
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted during setup");
            }
            Ok(())
        };
        progress("creating network namespaces");
        let topo = Topology::builder()
            .clients(1)
            .lb_units(1)
            .hosts(HOSTS)
            .build(&tb)
            .context("cannot build the demo's namespaces")?;
        prepare_packet_path(&topo)?;
        check_stop()?;

        let dir = tempfile::Builder::new()
            .prefix("switchyard-demo-")
            .tempdir()
            .context("cannot create a temporary directory for the configuration")?;
        write_secret(&dir.path().join("cluster.key"))?;
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, config_text(&topo))
            .with_context(|| format!("cannot write {}", config.display()))?;
        switchyard_config::load_file(&config).map_err(|diagnostics| {
            anyhow::anyhow!("the generated configuration is not valid:\n{diagnostics}")
        })?;

        // The applications first, so the agents' first checks pass.
        let mut apps = Vec::new();
        for (k, node) in topo.hosts().iter().enumerate() {
            let n = k + 1;
            check_stop()?;
            progress(&format!(
                "starting demo host {} in {}",
                host_name(n),
                node.ns().name()
            ));
            let endpoint = SocketAddr::new(node.v4(), APP_PORT);
            let endpoint6 = SocketAddr::new(node.v6(), APP_PORT);
            let app = node
                .ns()
                .command([exe.as_os_str()])
                .arg("demo-host")
                .arg("--name")
                .arg(host_name(n))
                .arg("--listen")
                .arg(endpoint.to_string())
                .arg("--listen")
                .arg(endpoint6.to_string())
                .spawn()
                .context("cannot start switchyard demo-host")?;
            app.wait_for_output("demo-host ready", READY_TIMEOUT)
                .with_context(|| format!("demo host {} did not start", host_name(n)))?;
            apps.push((n, node.ns().clone(), endpoint, endpoint6, app));
        }

        check_stop()?;
        let lb_ns = topo.lb_unit(0).ns();
        progress(&format!(
            "starting switchyard lb ({UNIT}) in {}",
            lb_ns.name()
        ));
        let lb = lb_ns
            .command([exe.as_os_str()])
            .arg("lb")
            .arg("--config")
            .arg(&config)
            .arg("--unit")
            .arg(UNIT)
            .arg("--admin")
            .arg(LB_ADMIN.to_string())
            .arg("--log-level")
            .arg("info")
            .spawn()
            .context("cannot start switchyard lb")?;
        lb.wait_for_output("lb ready", READY_TIMEOUT)
            .context("switchyard lb did not start")?;

        let mut hosts = Vec::new();
        for (n, ns, endpoint, endpoint6, app) in apps {
            check_stop()?;
            progress(&format!(
                "starting switchyard agent for {} in {}",
                host_name(n),
                ns.name()
            ));
            let socket = dir.path().join(format!("agent-{n}.sock"));
            let agent = ns
                .command([exe.as_os_str()])
                .arg("agent")
                .arg("--config")
                .arg(&config)
                .arg("--host")
                .arg(host_name(n))
                .arg("--host")
                .arg(host6_name(n))
                .arg("--listen")
                .arg(AGENT_LISTEN)
                .arg("--socket")
                .arg(&socket)
                .arg("--log-level")
                .arg("info")
                .spawn()
                .context("cannot start switchyard agent")?;
            agent
                .wait_for_output("agent ready", READY_TIMEOUT)
                .with_context(|| format!("the agent of {} did not start", host_name(n)))?;
            hosts.push(DemoHost {
                number: n,
                ns,
                endpoint,
                endpoint6,
                socket,
                app,
                agent,
            });
        }

        let cluster = Self {
            hosts,
            lb,
            topo,
            tb,
            dir,
            reported: BTreeSet::new(),
        };
        progress("waiting until the load balancer sees every host healthy");
        cluster.wait_healthy(stop)?;
        Ok(cluster)
    }

    /// The namespaces.
    pub fn topo(&self) -> &Topology {
        &self.topo
    }

    /// The demo hosts, in order.
    pub fn hosts(&self) -> &[DemoHost] {
        &self.hosts
    }

    /// Where the processes' logs are (removed with the testbed).
    pub fn log_dir(&self) -> &Path {
        self.tb.log_dir()
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// The unit's `/v1/hosts`, asked from inside its namespace.
    fn unit_hosts(&self) -> anyhow::Result<HostsResponse> {
        let ns = self.topo.lb_unit(0).ns();
        ns.enter(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a runtime for the admin API request")?;
            runtime
                .block_on(admin_client::get_json::<HostsResponse>(
                    LB_ADMIN,
                    "/v1/hosts",
                    Duration::from_secs(2),
                ))
                .context("admin API request failed")
        })
        .with_context(|| format!("cannot enter {}", ns.name()))?
    }

    /// Polls the unit until every row of every demo host is healthy and active.
    fn wait_healthy(&self, stop: &AtomicBool) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let expected = 2 * HOSTS;
        loop {
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted during setup");
            }
            let seen = match self.unit_hosts() {
                Ok(hosts) => {
                    let ready = hosts
                        .hosts
                        .iter()
                        .filter(|h| h.alive)
                        .flat_map(|h| &h.rows)
                        .filter(|r| r.health == "healthy" && r.current == "active")
                        .count();
                    if ready >= expected {
                        return Ok(());
                    }
                    format!("{ready} of {expected} endpoints healthy")
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the hosts did not become healthy within {} s ({seen}); logs: {}",
                    HEALTHY_TIMEOUT.as_secs(),
                    self.log_dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Processes that exited by themselves since the last call (each reported once).
    pub fn exited(&mut self) -> Vec<Exited> {
        let mut found = Vec::new();
        let mut check = |what: String, p: &Process| {
            if let Ok(Some(status)) = p.try_status() {
                let tail = p.stderr().unwrap_or_default();
                let lines: Vec<&str> = tail.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                found.push(Exited {
                    clean: status.success(),
                    detail: format!("{status}; last lines of its log:\n{tail}"),
                    what,
                });
            }
        };
        check("switchyard lb".to_owned(), &self.lb);
        for h in &self.hosts {
            check(format!("the demo host {}", h.name()), &h.app);
            check(format!("the agent of {}", h.name()), &h.agent);
        }
        found.retain(|e| self.reported.insert(e.what.clone()));
        found
    }

    /// Stops every process and deletes the namespaces; reports what could not be removed.
    pub fn shutdown(self) -> anyhow::Result<()> {
        let Self {
            hosts,
            lb,
            topo,
            tb,
            dir,
            reported: _,
        } = self;
        // Agents first, so they say goodbye to a unit that is still there.
        for h in &hosts {
            let _ = h.agent.terminate();
        }
        let _ = lb.terminate();
        drop(hosts);
        drop(lb);
        drop(topo);
        let result = tb.teardown().context("cleaning up the namespaces");
        drop(dir);
        result
    }
}

/// Offloads the packet path needs: frames the forwarder reinjects or redirects with XDP
/// reach a veth only when its peer has NAPI, so GRO goes on on the router's and the
/// switch's ports to the unit.
fn prepare_packet_path(topo: &Topology) -> anyhow::Result<()> {
    // The request router listens on the VIP: the unit holds it on its loopback (the
    // forwarder only takes the packet services' ports; everything else reaches the stack).
    let vip = format!("{}/32", topo.vip().v4);
    topo.lb_unit(0)
        .ns()
        .run(["ip", "addr", "add", vip.as_str(), "dev", "lo"])
        .context("cannot put the VIP on the unit's loopback for the request router")?;
    for (ns, port) in [(topo.router().ns(), "lb0"), (topo.switch(), "lb0")] {
        ns.run(["ethtool", "-K", port, "gro", "on"]).with_context(|| {
            format!(
                "cannot turn GRO on for {port} in {} (is ethtool installed? apt-get install ethtool)",
                ns.name()
            )
        })?;
    }
    Ok(())
}

/// A fresh 256-bit cluster secret, hex, mode 0600.
fn write_secret(path: &Path) -> anyhow::Result<()> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The generated cluster configuration: one all-in-one unit, services `web` (IPv4 VIP) and
/// `web6` (IPv6 VIP), both full NAT to the demo hosts' port 8080 with an HTTP check.
pub fn config_text(topo: &Topology) -> String {
    let unit = topo.lb_unit(0);
    let backend = unit
        .iface("eth1")
        .map_or_else(|| unit.primary().clone(), Clone::clone);
    let vip = topo.vip();
    let mut text = format!(
        r#"# Generated by `switchyard demo`: one all-in-one load-balancing unit in front of
# {HOSTS} demo hosts, in network namespaces.
[cluster]
id = "{CLUSTER_ID}"
secret_file = "cluster.key"

[[cluster.units]]
name = "{UNIT}"
id = 1
address = "{unit_ip}"
roles = ["forwarder", "classifier", "router", "session-store", "health-cache"]
control_port = {CONTROL_PORT}
admin = "{LB_ADMIN}"
[cluster.units.forwarder]
interfaces = ["eth0", "eth1"]
attach = "tc"
nat_sources = ["{unit_ip}", "{unit_ip6}"]

# Quicker than the defaults, so a drain or a failed host shows within a second or two.
[health]
heartbeat_interval = "500ms"
host_dead_after = "3s"
load_interval = "1s"
postulate_interval = "500ms"

# Packet level: the forwarder and classifier; a client sticks to its host through the
# session store.
[[services]]
name = "web"
vip = "{vip4}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"
affinity = {{ kind = "client-ip", timeout = "30s" }}

# Request level: the request router terminates HTTP on the VIP's port {router_port} and routes
# each request; a cookie keeps a browser on one host.
[[listeners]]
name = "web-http"
address = "{router_vip}"
protocol = "http"

[[services]]
name = "web-l7"
vip = "{router_vip}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"
affinity = {{ kind = "cookie", cookie = "DEMO", timeout = "10m" }}

[[services]]
name = "web6"
vip = "{vip6}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web6"

[[health_checks]]
name = "demo-http"
kind = "http"
path = "/health"
expect_status = 200
body_contains = "ok"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
"#,
        unit_ip = backend.v4(),
        unit_ip6 = backend.v6(),
        vip4 = vip.v4_socket(VIP_PORT),
        vip6 = vip.v6_socket(VIP_PORT),
        router_vip = vip.v4_socket(ROUTER_PORT),
        router_port = ROUTER_PORT,
    );
    for (pool, v6) in [("web", false), ("web6", true)] {
        let _ = write!(
            text,
            "\n[[pools]]\nname = \"{pool}\"\nhealth_check = \"demo-http\"\n"
        );
        for (k, node) in topo.hosts().iter().enumerate() {
            let n = k + 1;
            let (id, name, address) = if v6 {
                (200 + n, host6_name(n), SocketAddr::new(node.v6(), APP_PORT))
            } else {
                (100 + n, host_name(n), SocketAddr::new(node.v4(), APP_PORT))
            };
            let _ = write!(
                text,
                "\n[[pools.hosts]]\nid = {id}\nname = \"{name}\"\naddress = \"{address}\"\napp = \"demo\"\n"
            );
        }
    }
    text
}
