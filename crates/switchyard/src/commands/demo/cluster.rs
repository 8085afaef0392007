//! The demo as root: namespaces built with the testbed (client — router — one LB unit —
//! three hosts), a generated cluster configuration, and the processes, all started from the
//! current executable exactly as an operator would start them: `switchyard lb` in the LB
//! unit's namespace, `switchyard demo-host` and `switchyard agent` in each host's namespace.
//!
//! It uses `switchyard-testbed` for its namespaces and their teardown guarantees (processes
//! stopped, namespaces deleted, also on a panic). The production roles (`lb`, `agent`)
//! never see it: they read the generated configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use switchyard_testbed::{Netns, Process, Testbed, Topology};

use super::generated::{self, ConfigDir};
use super::relay::Relay;
use super::shape::{
    self, DemoHost, HOSTS, Pools, Shape, UNIT, agent_command, check_stop, demo_host_command,
    host_name, host6_name, lb_command, wait_ready,
};

/// The port every demo host's application listens on.
pub const APP_PORT: u16 = 8080;
/// The service port on the VIPs.
pub const VIP_PORT: u16 = 80;
/// The request router's port on the IPv4 VIP (HTTP, per-request routing).
pub const ROUTER_PORT: u16 = 8080;
/// The LB unit's admin API, inside its namespace.
pub const LB_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// The unit's health and load control port (UDP).
const CONTROL_PORT: u16 = 9170;
/// Every agent's UDP address, inside its host's namespace.
const AGENT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9171);

/// The running demo cluster. Dropping it stops everything; [`Shape::shutdown`] does the
/// same and reports what could not be removed.
#[derive(Debug)]
pub struct Cluster {
    // Dropped in this order: the relay, processes, then the testbed (namespaces), then the
    // files.
    relay: Option<Relay>,
    hosts: Vec<DemoHost>,
    lb: Process,
    topo: Topology,
    tb: Testbed,
    dir: ConfigDir,
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
        progress("creating network namespaces");
        let topo = Topology::builder()
            .clients(1)
            .lb_units(1)
            .hosts(HOSTS)
            .build(&tb)
            .context("cannot build the demo's namespaces")?;
        prepare_packet_path(&topo)?;
        check_stop(stop)?;

        let dir = ConfigDir::create()?;
        let config = dir.write_config(&config_text(&topo))?;

        // The applications first, so the agents' first checks pass.
        let mut apps = Vec::new();
        for (k, node) in topo.hosts().iter().enumerate() {
            let n = k + 1;
            check_stop(stop)?;
            progress(&format!(
                "starting demo host {} in {}",
                host_name(n),
                node.ns().name()
            ));
            let endpoint = SocketAddr::new(node.v4(), APP_PORT);
            let endpoint6 = SocketAddr::new(node.v6(), APP_PORT);
            let app = node
                .ns()
                .command(demo_host_command(exe, n, &[endpoint, endpoint6]))
                .spawn()
                .context("cannot start switchyard demo-host")?;
            wait_ready(
                &app,
                "demo-host ready",
                &format!("demo host {}", host_name(n)),
            )?;
            apps.push((n, node.ns().clone(), vec![endpoint, endpoint6], app));
        }

        check_stop(stop)?;
        let lb_ns = topo.lb_unit(0).ns();
        progress(&format!(
            "starting switchyard lb ({UNIT}) in {}",
            lb_ns.name()
        ));
        let lb = lb_ns
            .command(lb_command(exe, &config, LB_ADMIN))
            .spawn()
            .context("cannot start switchyard lb")?;
        wait_ready(&lb, "lb ready", "switchyard lb")?;

        let mut hosts = Vec::new();
        for (n, ns, endpoints, app) in apps {
            check_stop(stop)?;
            progress(&format!(
                "starting switchyard agent for {} in {}",
                host_name(n),
                ns.name()
            ));
            let socket = dir.path().join(format!("agent-{n}.sock"));
            let agent = ns
                .command(agent_command(
                    exe,
                    &config,
                    n,
                    Pools::V4AndV6,
                    AGENT_LISTEN,
                    None,
                    &socket,
                ))
                .spawn()
                .context("cannot start switchyard agent")?;
            wait_ready(
                &agent,
                "agent ready",
                &format!("the agent of {}", host_name(n)),
            )?;
            hosts.push(DemoHost {
                number: n,
                endpoints,
                socket,
                app,
                agent,
            });
        }

        progress("waiting until the load balancer sees every host healthy");
        let lb_ns = topo.lb_unit(0).ns().clone();
        shape::wait_healthy(Pools::V4AndV6, stop, tb.log_dir(), || {
            lb_ns
                .enter(|| shape::unit_hosts_blocking(LB_ADMIN))
                .with_context(|| format!("cannot enter {}", lb_ns.name()))?
        })?;
        Ok(Self {
            relay: None,
            hosts,
            lb,
            topo,
            tb,
            dir,
        })
    }

    /// The namespaces.
    pub fn topo(&self) -> &Topology {
        &self.topo
    }

    /// Keeps the relay of the unit's admin API running as long as the cluster.
    pub fn attach_relay(&mut self, relay: Relay) {
        self.relay = Some(relay);
    }
}

impl Shape for Cluster {
    fn pools(&self) -> Pools {
        Pools::V4AndV6
    }

    fn lb(&self) -> &Process {
        &self.lb
    }

    fn hosts(&self) -> &[DemoHost] {
        &self.hosts
    }

    fn traffic(&self) -> (Option<Netns>, Vec<SocketAddr>) {
        let vip = self.topo.vip();
        (
            Some(self.topo.client(0).ns().clone()),
            vec![vip.v4_socket(VIP_PORT), vip.v6_socket(VIP_PORT)],
        )
    }

    fn banner(&self) -> String {
        banner(self)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.config_path()
    }

    fn log_dir(&self) -> &Path {
        self.tb.log_dir()
    }

    fn shutdown(self: Box<Self>) -> anyhow::Result<&'static str> {
        let Self {
            relay,
            hosts,
            lb,
            topo,
            tb,
            dir,
        } = *self;
        drop(relay);
        shape::stop_processes(hosts, lb);
        drop(topo);
        let namespaces = tb.teardown().context("cleaning up the namespaces");
        let files = dir.remove();
        namespaces?;
        files?;
        Ok("removed the demo's namespaces and processes")
    }
}

/// The namespaces, the VIPs and how to send them traffic.
fn banner(cluster: &Cluster) -> String {
    let topo = cluster.topo();
    let vip = topo.vip();
    let client = topo.client(0);
    let unit = topo.lb_unit(0);
    let mut text = String::new();
    text.push_str("\nswitchyard demo is running. Network namespaces:\n");
    text.push_str(&format!(
        "  {:<26} client         {}\n",
        client.ns().name(),
        client.v4()
    ));
    text.push_str(&format!(
        "  {:<26} router         forwards the VIPs to the LB unit\n",
        topo.router().ns().name()
    ));
    text.push_str(&format!(
        "  {:<26} LB unit {UNIT}   switchyard lb: forwarder, classifier, request router, session store, health cache\n",
        unit.ns().name(),
    ));
    for (h, node) in cluster.hosts.iter().zip(topo.hosts()) {
        let endpoints: Vec<String> = h.endpoints.iter().map(ToString::to_string).collect();
        text.push_str(&format!(
            "  {:<26} host {}    demo host on {}, switchyard agent\n",
            node.ns().name(),
            h.name(),
            endpoints.join(" and "),
        ));
    }
    text.push_str(&format!(
        "\nVIPs:          http://{}/ (service web) and http://{}/ (service web6), full NAT to the hosts' port {APP_PORT}\n",
        vip.v4_socket(VIP_PORT),
        vip.v6_socket(VIP_PORT),
    ));
    text.push_str(&format!(
        "Send traffic:  ip netns exec {} curl http://{}/        (as root)\n",
        client.ns().name(),
        vip.v4
    ));
    text.push_str(&format!(
        "               ip netns exec {} curl 'http://[{}]/'\n",
        client.ns().name(),
        vip.v6
    ));
    text.push_str(&format!(
        "Request router: ip netns exec {} curl -i http://{}/   (HTTP, per-request routing, cookie affinity)\n",
        client.ns().name(),
        vip.v4_socket(ROUTER_PORT)
    ));
    text
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

/// The generated cluster configuration: one all-in-one unit, services `web` (IPv4 VIP) and
/// `web6` (IPv6 VIP), both full NAT to the demo hosts' port 8080 with an HTTP check, and
/// `web-l7`, the request router on the IPv4 VIP's port 8080.
pub fn config_text(topo: &Topology) -> String {
    let unit = topo.lb_unit(0);
    let backend = unit
        .iface("eth1")
        .map_or_else(|| unit.primary().clone(), Clone::clone);
    let vip = topo.vip();
    let mut text = generated::header("in network namespaces");
    text.push_str(&format!(
        r#"
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

# Request level: the request router terminates HTTP on the VIP's port {ROUTER_PORT} and routes
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
"#,
        unit_ip = backend.v4(),
        unit_ip6 = backend.v6(),
        vip4 = vip.v4_socket(VIP_PORT),
        vip6 = vip.v6_socket(VIP_PORT),
        router_vip = vip.v4_socket(ROUTER_PORT),
    ));
    text.push_str(generated::HEALTH);
    let hosts = |first_id: u32, v6: bool| -> Vec<(u32, String, SocketAddr)> {
        let nodes = topo.hosts().iter().enumerate().zip(first_id..);
        nodes
            .map(|((k, node), id)| match v6 {
                false => (id, host_name(k + 1), SocketAddr::new(node.v4(), APP_PORT)),
                true => (id, host6_name(k + 1), SocketAddr::new(node.v6(), APP_PORT)),
            })
            .collect()
    };
    generated::pool(&mut text, "web", &hosts(101, false));
    generated::pool(&mut text, "web6", &hosts(201, true));
    text
}
