//! The common switchyard test shape, built in one call: clients — router — LB units — hosts.
//! Owns the address plan and the routes that make every node reach every other; knows nothing
//! about switchyard itself (tests put VIPs, servers and balancers where they need them).
//!
//! ```text
//!  client0 ─eth0──c0─┐                     ┌─eth0 lb0 eth1─┐
//!  client1 ─eth0──c1─┤ router ─lb0,lb1,… ──┤               ├── switch (bridge br0) ── eth0 host0, host1, …
//!                    │        (ECMP → VIP) └─eth0 lb1 eth1─┘          │
//!                    └──────────── back ─────────────────────────────┘
//! ```
//!
//! | segment | IPv4 | IPv6 |
//! |---|---|---|
//! | client i ↔ router (`eth0` ↔ `c<i>`) | 198.18.(1+i).0/24: router .1, client .2 | fd53:7900:0:(1+i)::/64: ::1, ::2 |
//! | LB unit j ↔ router (`eth0` ↔ `lb<j>`) | 198.18.(101+j).0/24: router .1, LB unit .2 | fd53:7900:0:(101+j)::/64: ::1, ::2 |
//! | backend segment (bridge in `switch`) | 198.18.200.0/24: router (`back`) .1, LB unit j (`eth1`) .(10+j), host k (`eth0`) .(100+k) | fd53:7900:0:200::/64, same host numbers |
//! | VIP (default) | 198.19.0.10 | fd53:7900:ff::10 |
//!
//! (IPv6 groups reuse the decimal digits of the IPv4 numbers, so `198.18.200.101` is
//! `fd53:7900:0:200::101`.) Routes: clients, LB units and hosts reach 198.18.0.0/15 and
//! fd53:7900::/32 through the router (hosts via its backend address, so replies can go straight
//! back to clients); the router reaches the VIP by an ECMP route over all LB units' front
//! addresses, hashing on L4. The router forwards and has reverse-path filtering off; LB units
//! forward too. No route leads outside these ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cidr::{Cidr, TEST_NET_V4, TEST_NET_V6};
use crate::error::{Error, Result};
use crate::link::Link;
use crate::netns::Netns;
use crate::testbed::Testbed;

/// Client namespaces' interface toward the router.
pub const CLIENT_IF: &str = "eth0";
/// LB units' interface toward the router.
pub const LB_FRONT_IF: &str = "eth0";
/// LB units' interface on the backend segment.
pub const LB_BACK_IF: &str = "eth1";
/// Hosts' interface on the backend segment.
pub const HOST_IF: &str = "eth0";
/// The router's interface on the backend segment.
pub const ROUTER_BACK_IF: &str = "back";
/// The bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "br0";

const BACKEND_NET: u16 = 200;

/// The virtual IP addresses (one per family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    /// IPv4 VIP, inside 198.18.0.0/15.
    pub v4: Ipv4Addr,
    /// IPv6 VIP, inside fc00::/7.
    pub v6: Ipv6Addr,
}

impl Vip {
    /// `v4:port`.
    pub fn v4_socket(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.v4), port)
    }

    /// `[v6]:port`.
    pub fn v6_socket(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.v6), port)
    }
}

impl Default for Vip {
    fn default() -> Self {
        Vip {
            v4: Ipv4Addr::new(198, 19, 0, 10),
            v6: Ipv6Addr::new(0xfd53, 0x7900, 0xff, 0, 0, 0, 0, 0x10),
        }
    }
}

/// One addressed interface of a [`Node`].
#[derive(Clone, Debug)]
pub struct Interface {
    name: String,
    v4: Cidr,
    v6: Cidr,
    link: Link,
}

impl Interface {
    /// The interface name inside its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its IPv4 address.
    pub fn v4(&self) -> IpAddr {
        self.v4.addr()
    }

    /// Its IPv6 address.
    pub fn v6(&self) -> IpAddr {
        self.v6.addr()
    }

    /// Its IPv4 address with prefix length.
    pub fn v4_cidr(&self) -> Cidr {
        self.v4
    }

    /// Its IPv6 address with prefix length.
    pub fn v6_cidr(&self) -> Cidr {
        self.v6
    }

    /// The veth pair this interface is one end of (for [`Link::set_down`] and friends).
    pub fn link(&self) -> &Link {
        &self.link
    }
}

/// A namespace of the topology with its addressed interfaces.
#[derive(Clone, Debug)]
pub struct Node {
    ns: Netns,
    interfaces: Vec<Interface>,
}

impl Node {
    /// The namespace, to run, spawn and enter things there.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// All addressed interfaces; the first is the primary one.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The interface called `name`, if the node has it.
    pub fn iface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The primary interface: clients', LB units' and hosts' `eth0`, the router's first
    /// interface.
    pub fn primary(&self) -> &Interface {
        // Every node is built with at least one interface (see `TopologyBuilder::build`).
        &self.interfaces[0]
    }

    /// IPv4 address of the primary interface.
    pub fn v4(&self) -> IpAddr {
        self.primary().v4()
    }

    /// IPv6 address of the primary interface.
    pub fn v6(&self) -> IpAddr {
        self.primary().v6()
    }
}

/// Configures a [`Topology`]; see the module docs for the shape and address plan.
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    clients: usize,
    lb_units: usize,
    hosts: usize,
    vip: Vip,
    vip_on_lb_units: bool,
    vip_on_hosts: bool,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            clients: 1,
            lb_units: 2,
            hosts: 3,
            vip: Vip::default(),
            vip_on_lb_units: false,
            vip_on_hosts: false,
        }
    }
}

impl TopologyBuilder {
    /// Number of client namespaces (1–99, default 1).
    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    /// Number of LB unit namespaces (0–80, default 2).
    pub fn lb_units(mut self, n: usize) -> Self {
        self.lb_units = n;
        self
    }

    /// Number of host namespaces (0–150, default 3).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// The VIPs the router spreads over the LB units (default 198.19.0.10 and fd53:7900:ff::10).
    pub fn vip(mut self, v4: Ipv4Addr, v6: Ipv6Addr) -> Self {
        self.vip = Vip { v4, v6 };
        self
    }

    /// Also put both VIPs on every LB unit's loopback, so LB units accept VIP traffic locally.
    pub fn vip_on_lb_units(mut self, yes: bool) -> Self {
        self.vip_on_lb_units = yes;
        self
    }

    /// Also put both VIPs on every host's loopback (for direct server return).
    pub fn vip_on_hosts(mut self, yes: bool) -> Self {
        self.vip_on_hosts = yes;
        self
    }

    /// Creates the namespaces, links, addresses and routes in `tb`.
    pub fn build(self, tb: &Testbed) -> Result<Topology> {
        if !(1..=99).contains(&self.clients) || self.lb_units > 80 || self.hosts > 150 {
            return Err(Error::Invalid(format!(
                "topology of {} clients, {} LB units, {} hosts: limits are 1-99, 0-80, 0-150",
                self.clients, self.lb_units, self.hosts
            )));
        }
        Cidr::host(self.vip.v4).check_test_range()?;
        Cidr::host(self.vip.v6).check_test_range()?;

        let router_ns = tb.namespace("router")?;
        let switch = tb.namespace("switch")?;
        router_ns.sysctls(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ])?;
        let mut router = Node {
            ns: router_ns,
            interfaces: Vec::new(),
        };
        let mut switch_ports = Vec::new();

        let mut clients = Vec::new();
        for i in 0..self.clients {
            let net = 1 + i as u16;
            let ns = tb.namespace(&format!("client{i}"))?;
            let (r, c) = pair(tb, &router, &format!("c{i}"), &ns, CLIENT_IF, net)?;
            router.interfaces.push(r);
            clients.push(Node {
                ns,
                interfaces: vec![c],
            });
        }

        let mut lb_units = Vec::new();
        for j in 0..self.lb_units {
            let net = 101 + j as u16;
            let ns = tb.namespace(&format!("lb{j}"))?;
            ns.sysctls(&[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ])?;
            let (r, front) = pair(tb, &router, &format!("lb{j}"), &ns, LB_FRONT_IF, net)?;
            router.interfaces.push(r);
            let port = format!("lb{j}");
            let back = backend_end(tb, &switch, &port, &ns, LB_BACK_IF, 10 + j as u16)?;
            switch_ports.push(port);
            lb_units.push(Node {
                ns,
                interfaces: vec![front, back],
            });
        }

        let mut hosts = Vec::new();
        for k in 0..self.hosts {
            let ns = tb.namespace(&format!("host{k}"))?;
            let port = format!("h{k}");
            let iface = backend_end(tb, &switch, &port, &ns, HOST_IF, 100 + k as u16)?;
            switch_ports.push(port);
            hosts.push(Node {
                ns,
                interfaces: vec![iface],
            });
        }

        let back = backend_end(tb, &switch, "r", &router.ns, ROUTER_BACK_IF, 1)?;
        switch_ports.push("r".to_owned());
        router.interfaces.push(back.clone());
        let ports: Vec<&str> = switch_ports.iter().map(String::as_str).collect();
        tb.bridge(&switch, SWITCH_BRIDGE, &ports)?;

        // Routes back toward the router. The router's address on each link is the peer's
        // gateway: for clients and LB units their own link, for hosts the backend segment.
        let vip = self.vip;
        let aggregate = |node: &Node, gw: &Interface| -> Result<()> {
            node.ns.add_route(TEST_NET_V4, gw.v4())?;
            node.ns.add_route(TEST_NET_V6, gw.v6())?;
            if !TEST_NET_V6.contains(IpAddr::V6(vip.v6)) {
                node.ns.add_route(vip.v6, gw.v6())?;
            }
            Ok(())
        };
        for (i, c) in clients.iter().enumerate() {
            aggregate(c, &router.interfaces[i])?;
        }
        for (j, lb) in lb_units.iter().enumerate() {
            aggregate(lb, &router.interfaces[self.clients + j])?;
        }
        for h in &hosts {
            aggregate(h, &back)?;
        }
        let fronts = || lb_units.iter().map(|lb| lb.interfaces[0].clone());
        match lb_units.len() {
            0 => {}
            1 => {
                let front = &lb_units[0].interfaces[0];
                router.ns.add_route(vip.v4, front.v4())?;
                router.ns.add_route(vip.v6, front.v6())?;
            }
            _ => {
                router
                    .ns
                    .add_multipath_route(vip.v4, fronts().map(|f| f.v4()))?;
                router
                    .ns
                    .add_multipath_route(vip.v6, fronts().map(|f| f.v6()))?;
            }
        }

        let with_vip = (if self.vip_on_lb_units {
            &lb_units[..]
        } else {
            &[]
        })
        .iter()
        .chain(if self.vip_on_hosts { &hosts[..] } else { &[] });
        for node in with_vip {
            node.ns.add_addr("lo", vip.v4)?;
            node.ns.add_addr("lo", vip.v6)?;
        }

        Ok(Topology {
            clients,
            router,
            lb_units,
            hosts,
            switch,
            vip,
        })
    }
}

/// A point-to-point link `r_if` (router, host number 1) ↔ `n_if` (node, host number 2) on
/// subnet number `net`. Returns (router side, node side).
fn pair(
    tb: &Testbed,
    router: &Node,
    r_if: &str,
    ns: &Netns,
    n_if: &str,
    net: u16,
) -> Result<(Interface, Interface)> {
    let link = tb.link(&router.ns, r_if, ns, n_if)?;
    let r = addressed(&router.ns, r_if, net, 1, link.clone())?;
    let n = addressed(ns, n_if, net, 2, link)?;
    Ok((r, n))
}

/// `n_if` in `ns` joined to the switch as port `port`, addressed on the backend segment.
fn backend_end(
    tb: &Testbed,
    switch: &Netns,
    port: &str,
    ns: &Netns,
    n_if: &str,
    host: u16,
) -> Result<Interface> {
    let link = tb.link(ns, n_if, switch, port)?;
    addressed(ns, n_if, BACKEND_NET, host, link)
}

fn addressed(ns: &Netns, ifname: &str, net: u16, host: u16, link: Link) -> Result<Interface> {
    let v4: Cidr = format!("198.18.{net}.{host}/24").parse()?;
    let v6: Cidr = format!("fd53:7900:0:{net}::{host}/64").parse()?;
    ns.add_addr(ifname, v4)?;
    ns.add_addr(ifname, v6)?;
    Ok(Interface {
        name: ifname.to_owned(),
        v4,
        v6,
        link,
    })
}

/// Clients, a router, LB units and hosts with addresses and routes; see the module docs.
///
/// ```no_run
/// # fn demo() -> switchyard_testbed::Result<()> {
/// use switchyard_testbed::{Testbed, Topology};
/// let tb = Testbed::new("example")?;
/// let topo = Topology::builder().clients(1).lb_units(2).hosts(3).vip_on_lb_units(true).build(&tb)?;
/// let host = topo.host(0);
/// println!("{} has {} on {}", host.ns().name(), host.v4(), host.primary().name());
/// topo.lb_unit(1).primary().link().set_down()?; // the router loses one ECMP next hop
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Topology {
    clients: Vec<Node>,
    router: Node,
    lb_units: Vec<Node>,
    hosts: Vec<Node>,
    switch: Netns,
    vip: Vip,
}

impl Topology {
    /// Starts a builder with 1 client, 2 LB units, 3 hosts and the default VIP.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// All clients.
    pub fn clients(&self) -> &[Node] {
        &self.clients
    }

    /// Client `i`. Panics if out of range, like slice indexing.
    pub fn client(&self, i: usize) -> &Node {
        &self.clients[i]
    }

    /// The router: interfaces `c<i>` (clients), `lb<j>` (LB units), `back` (backend segment).
    pub fn router(&self) -> &Node {
        &self.router
    }

    /// All LB units.
    pub fn lb_units(&self) -> &[Node] {
        &self.lb_units
    }

    /// LB unit `j`: `eth0` toward the router, `eth1` on the backend segment. Panics if out of
    /// range.
    pub fn lb_unit(&self, j: usize) -> &Node {
        &self.lb_units[j]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Node] {
        &self.hosts
    }

    /// Host `k` (`eth0` on the backend segment). Panics if out of range.
    pub fn host(&self, k: usize) -> &Node {
        &self.hosts[k]
    }

    /// The namespace holding the backend bridge; its ports are `lb<j>`, `h<k>` and `r`.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The VIPs.
    pub fn vip(&self) -> Vip {
        self.vip
    }

    /// The router's interface toward client `i`.
    pub fn router_client_iface(&self, i: usize) -> &Interface {
        &self.router.interfaces[i]
    }

    /// The router's interface toward LB unit `j`.
    pub fn router_lb_iface(&self, j: usize) -> &Interface {
        &self.router.interfaces[self.clients.len() + j]
    }

    /// The router's interface on the backend segment.
    pub fn router_backend(&self) -> &Interface {
        &self.router.interfaces[self.clients.len() + self.lb_units.len()]
    }
}

impl fmt::Display for Topology {
    /// One line per node: namespace, interfaces and addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIP {} / {}", self.vip.v4, self.vip.v6)?;
        let nodes = self
            .clients
            .iter()
            .chain(std::iter::once(&self.router))
            .chain(&self.lb_units)
            .chain(&self.hosts);
        for node in nodes {
            write!(f, "{}:", node.ns.name())?;
            for i in &node.interfaces {
                write!(f, " {} {} {}", i.name, i.v4, i.v6)?;
            }
            writeln!(f)?;
        }
        writeln!(f, "{}: bridge {SWITCH_BRIDGE}", self.switch.name())
    }
}
