//! Shared fixtures of the forwarder's root-only tests: the skip decision and a small "lab" of
//! namespaces where the data plane's FIB lookups resolve deterministically.
//!
//! ```text
//!  cl: eth0 (02:..:c1) 198.18.1.2  ──  front (02:..:f1) 198.18.1.1   lb   back (02:..:b1) 198.18.200.1  ──  eth0 (02:..:a1) 198.18.200.100 :hs
//! ```
//! The lb namespace forwards and has permanent neighbour entries for the client and the host,
//! so `bpf_fib_lookup` succeeds and the rewritten frames are byte-exact, MACs included.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::{IpAddr, SocketAddr};

use switchyard_testbed::{Netns, OnUnavailable, Testbed, on_unavailable, skip_line};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
pub const FRONT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xf1];
pub const BACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb1];
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];

pub const CLIENT4: &str = "198.18.1.2";
pub const FRONT4: &str = "198.18.1.1";
pub const BACK4: &str = "198.18.200.1";
pub const HOST4: &str = "198.18.200.100";
pub const VIP4: &str = "198.19.0.10";
pub const CLIENT6: &str = "fd53:7900:0:1::2";
pub const FRONT6: &str = "fd53:7900:0:1::1";
pub const BACK6: &str = "fd53:7900:0:200::1";
pub const HOST6: &str = "fd53:7900:0:200::100";
pub const VIP6: &str = "fd53:7900:ff::10";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn sa(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(s), port)
}

/// True if the test can run (root); otherwise prints a SKIPPED line, or panics under CI=true.
pub fn have_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    match on_unavailable(std::env::var("CI").ok().as_deref()) {
        OnUnavailable::Fail => panic!("{test} needs root for BPF, which CI must provide"),
        OnUnavailable::Skip => {
            eprint!("\n{}", skip_line(test, "root (BPF)", "not running as root"));
            false
        }
    }
}

pub struct Lab {
    pub tb: Testbed,
    pub lb: Netns,
    pub cl: Netns,
    pub hs: Netns,
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The lab, or `None` after a SKIPPED line (panics under CI=true when unavailable).
pub fn lab(what: &str) -> Option<Lab> {
    let tb = switchyard_testbed::require(what)?;
    let lb = tb.namespace("lb").expect("lb namespace");
    let cl = tb.namespace("cl").expect("cl namespace");
    let hs = tb.namespace("hs").expect("hs namespace");
    tb.link(&lb, "front", &cl, "eth0").expect("front link");
    tb.link(&lb, "back", &hs, "eth0").expect("back link");
    for (ns, ifname, m) in [
        (&lb, "front", FRONT_MAC),
        (&lb, "back", BACK_MAC),
        (&cl, "eth0", CLIENT_MAC),
        (&hs, "eth0", HOST_MAC),
    ] {
        ns.run(["ip", "link", "set", ifname, "address", &mac(m)])
            .expect("set mac");
    }
    lb.add_addr("front", format!("{FRONT4}/24").as_str())
        .expect("addr");
    lb.add_addr("front", format!("{FRONT6}/64").as_str())
        .expect("addr");
    lb.add_addr("back", format!("{BACK4}/24").as_str())
        .expect("addr");
    lb.add_addr("back", format!("{BACK6}/64").as_str())
        .expect("addr");
    cl.add_addr("eth0", format!("{CLIENT4}/24").as_str())
        .expect("addr");
    cl.add_addr("eth0", format!("{CLIENT6}/64").as_str())
        .expect("addr");
    hs.add_addr("eth0", format!("{HOST4}/24").as_str())
        .expect("addr");
    hs.add_addr("eth0", format!("{HOST6}/64").as_str())
        .expect("addr");
    lb.sysctls(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
    ])
    .expect("forwarding");
    for (addr, dev, m) in [
        (CLIENT4, "front", CLIENT_MAC),
        (CLIENT6, "front", CLIENT_MAC),
        (HOST4, "back", HOST_MAC),
        (HOST6, "back", HOST_MAC),
    ] {
        lb.run([
            "ip",
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac(m),
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .expect("neighbour");
    }
    Some(Lab { tb, lb, cl, hs })
}

/// The index of `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> u32 {
    nix::net::if_::if_nametoindex(ifname).unwrap_or_else(|e| panic!("ifindex of {ifname}: {e}"))
}
