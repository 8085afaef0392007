//! [`Link`] (a veth pair between two namespaces) and [`Bridge`] handles, with the link-level
//! faults: down/up like a pulled and re-plugged cable. Creation lives in
//! [`Testbed`](crate::Testbed); packet-drop faults in [`crate::faults`].

use crate::error::Result;
use crate::netns::Netns;

/// One end of a [`Link`]: an interface in a namespace.
#[derive(Clone, Debug)]
pub struct LinkEnd {
    ns: Netns,
    ifname: String,
}

impl LinkEnd {
    pub(crate) fn new(ns: Netns, ifname: String) -> Self {
        LinkEnd { ns, ifname }
    }

    /// The namespace this end lives in.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The interface name inside that namespace.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

/// A veth pair created by [`Testbed::link`](crate::Testbed::link).
#[derive(Clone, Debug)]
pub struct Link {
    a: LinkEnd,
    b: LinkEnd,
}

impl Link {
    pub(crate) fn new(a: LinkEnd, b: LinkEnd) -> Self {
        Link { a, b }
    }

    /// The first end (the `a` namespace of `Testbed::link`).
    pub fn a(&self) -> &LinkEnd {
        &self.a
    }

    /// The second end.
    pub fn b(&self) -> &LinkEnd {
        &self.b
    }

    /// Cuts the link: both ends go administratively down. Traffic stops at once and the kernel
    /// withdraws routes through either end (an ECMP route loses that next hop).
    pub fn set_down(&self) -> Result<()> {
        self.a.ns.set_link_down(&self.a.ifname)?;
        self.b.ns.set_link_down(&self.b.ifname)
    }

    /// Restores the link: both ends up, then the addresses and routes the testbed installed in
    /// both namespaces are put back where the kernel removed them.
    pub fn set_up(&self) -> Result<()> {
        self.a.ns.set_link_up(&self.a.ifname)?;
        self.b.ns.set_link_up(&self.b.ifname)?;
        // A route through `a` may need `b` up to resolve; run `a`'s restore again now.
        self.a.ns.restore();
        Ok(())
    }
}

/// A Linux bridge created by [`Testbed::bridge`](crate::Testbed::bridge).
#[derive(Clone, Debug)]
pub struct Bridge {
    ns: Netns,
    name: String,
    ports: Vec<String>,
}

impl Bridge {
    pub(crate) fn new(ns: Netns, name: String, ports: Vec<String>) -> Self {
        Bridge { ns, name, ports }
    }

    /// The namespace holding the bridge.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The bridge's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The enslaved interfaces.
    pub fn ports(&self) -> &[String] {
        &self.ports
    }
}
