//! Packet faults: random loss and port blocking, implemented with an nftables table
//! (`inet switchyard_testbed`) that the testbed owns inside the affected namespace. The kernel
//! here has no netem, so loss is `numgen random mod 100 < N drop`. Each fault is its own pair of
//! base chains, so faults can be cleared one by one ([`Fault::clear`]) or all at once
//! ([`Netns::clear_faults`]). Loopback traffic is never touched.
//!
//! Each packet meets a fault once per namespace: received packets (local or forwarded) at
//! prerouting, locally generated ones at output (namespace-wide faults) or every packet leaving
//! the interface at postrouting (interface faults).

use std::fmt;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::names::check_ifname;
use crate::netns::Netns;

/// The nftables table (family `inet`) the testbed owns in each namespace with faults.
pub const NFT_TABLE: &str = "switchyard_testbed";

/// A transport protocol, for [`Netns::block_port`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// An installed fault. It stays until cleared ([`Fault::clear`], [`Netns::clear_faults`]) or
/// until the testbed is torn down; dropping the handle does not clear it.
#[derive(Clone, Debug)]
pub struct Fault {
    ns: Netns,
    chains: Vec<String>,
    what: String,
}

impl Fault {
    /// What the fault does, e.g. `"drop 50% on eth0 in sy-1f2e-0-router"`.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Removes this fault only. Clearing a fault that is already gone is not an error.
    pub fn clear(&self) -> Result<()> {
        for chain in &self.chains {
            let deleted = self
                .ns
                .run(["nft", "delete", "chain", "inet", NFT_TABLE, chain]);
            if let Err(e) = deleted {
                let exists = self
                    .ns
                    .output(["nft", "list", "chain", "inet", NFT_TABLE, chain])?
                    .status
                    .success();
                if exists {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Where a fault's rules hook in, and the rule each chain holds.
struct Hooks {
    chains: Vec<(&'static str, String)>,
}

impl Netns {
    /// Drops `percent`% of all packets entering or leaving this namespace (except loopback),
    /// chosen at random per packet.
    pub fn drop_percent(&self, percent: u8) -> Result<Fault> {
        let verdict = loss(percent)?;
        self.install_fault(
            format!("drop {percent}% in {}", self.name()),
            Hooks {
                chains: vec![
                    ("prerouting", format!("iifname != \"lo\" {verdict}")),
                    ("output", format!("oifname != \"lo\" {verdict}")),
                ],
            },
        )
    }

    /// Drops `percent`% of the packets received on or sent out of interface `ifname`.
    pub fn drop_percent_on(&self, ifname: &str, percent: u8) -> Result<Fault> {
        check_ifname(ifname)?;
        let verdict = loss(percent)?;
        self.install_fault(
            format!("drop {percent}% on {ifname} in {}", self.name()),
            Hooks {
                chains: vec![
                    ("prerouting", format!("iifname \"{ifname}\" {verdict}")),
                    ("postrouting", format!("oifname \"{ifname}\" {verdict}")),
                ],
            },
        )
    }

    /// Drops every `proto` packet to or from `port` entering or leaving this namespace (except
    /// loopback): a firewalled service, or a partitioned protocol.
    pub fn block_port(&self, proto: Proto, port: u16) -> Result<Fault> {
        let rules = |not_lo: &str| {
            format!("{not_lo} {proto} dport {port} drop\n    {not_lo} {proto} sport {port} drop")
        };
        self.install_fault(
            format!("block {proto} port {port} in {}", self.name()),
            Hooks {
                chains: vec![
                    ("prerouting", rules("iifname != \"lo\"")),
                    ("output", rules("oifname != \"lo\"")),
                ],
            },
        )
    }

    /// Removes every fault in this namespace (the whole testbed-owned nftables table).
    pub fn clear_faults(&self) -> Result<()> {
        self.command(["nft", "-f", "-"])
            .input(format!(
                "add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
            ))
            .run()?;
        Ok(())
    }

    fn install_fault(&self, what: String, hooks: Hooks) -> Result<Fault> {
        let id = self.state().fault_seq.fetch_add(1, Ordering::Relaxed);
        let mut script = format!("table inet {NFT_TABLE} {{\n");
        let mut chains = Vec::new();
        for (hook, rule) in hooks.chains {
            let chain = format!("fault{id}_{hook}");
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {hook} priority -300; policy accept;\n    {rule}\n  }}\n"
            ));
            chains.push(chain);
        }
        script.push_str("}\n");
        tracing::debug!(ns = %self.name(), %what, "inject fault");
        self.command(["nft", "-f", "-"]).input(script).run()?;
        Ok(Fault {
            ns: self.clone(),
            chains,
            what,
        })
    }
}

impl Link {
    /// Drops `percent`% of the packets crossing this link in either direction (applied at end
    /// `a`, so each packet is judged once).
    pub fn drop_percent(&self, percent: u8) -> Result<Fault> {
        self.a().ns().drop_percent_on(self.a().ifname(), percent)
    }
}

fn loss(percent: u8) -> Result<String> {
    if percent > 100 {
        return Err(Error::Invalid(format!("drop percentage {percent} > 100")));
    }
    Ok(match percent {
        // nft refuses `< 100` (out of range for `mod 100`) and `< 0` is pointless.
        100 => "drop".to_owned(),
        0 => "counter".to_owned(),
        p => format!("numgen random mod 100 < {p} drop"),
    })
}
