//! The per-VIP firewall as Rust values: a source [`Prefix`], the [`FirewallRules`] of one VIP
//! (allow list, deny list, per-source new-connection rate limit), and their translation into
//! the raw entries of the `fw_rules` LPM trie and the VIP's map value.
//!
//! The data plane enforces the rules only for packets that would open a connection (a route
//! miss on the VIP that is a TCP SYN without ACK, or a UDP datagram); routed flows are never
//! re-checked. Semantics, in order:
//!
//! 1. the most specific prefix of either list that contains the source decides: deny drops,
//!    allow passes (so a deny prefix inside an allow prefix wins, and an allow prefix inside a
//!    deny prefix wins too); a prefix listed in both lists counts as deny;
//! 2. no prefix matches: dropped if the allow list is not empty ("not allowed"), else passed;
//! 3. a passed source takes one token from its bucket (`burst` tokens, refilled at
//!    `per_second`); an empty bucket drops ("rate limited").
//!
//! Pure functions only (no maps, no syscalls); tested without root.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::Error;
use crate::flow::addr_bytes;
use crate::layout::{
    FW_ALLOW, FW_DENY, FwKeyData, FwRule, VIP_FW_ALLOWLIST, VIP_FW_RATE, VIP_FW_RULES,
};

/// Largest accepted rate (new connections per second per source) and burst.
pub const MAX_RATE: u32 = 10_000_000;

/// An IPv4 or IPv6 prefix (address and length; bits beyond the length are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix of `addr` with `len` bits (at most 32 for IPv4, 128 for IPv6). Host bits
    /// beyond `len` are cleared, so `198.18.1.7/24` is `198.18.1.0/24`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::InvalidFirewall(format!(
                "prefix length {len} is longer than {max} bits for {addr}"
            )));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Prefix { addr, len })
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the zero-length prefix (every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if `ip` (of the same family) lies in the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Prefix::new(ip, self.len).is_ok_and(|p| p.addr == self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = Error;

    /// `ADDR/LEN`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Prefix, Error> {
        let bad = || Error::InvalidFirewall(format!("{s:?} is not an address prefix"));
        match s.split_once('/') {
            Some((a, l)) => {
                Prefix::new(a.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?)
            }
            None => Ok(Prefix::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

/// The firewall of one VIP. The default (everything empty) allows every source, unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallRules {
    /// Sources allowed to open connections; empty = every source not denied.
    pub allow: Vec<Prefix>,
    /// Sources whose new connections are dropped.
    pub deny: Vec<Prefix>,
    /// `(per_second, burst)`: each source may open `burst` connections at once, refilled at
    /// `per_second` (both 1..=[`MAX_RATE`]). `None` = unlimited.
    pub new_conn_rate: Option<(u32, u32)>,
}

impl FirewallRules {
    /// True if the rules filter nothing.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.new_conn_rate.is_none()
    }
}

/// The map form of a VIP's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Compiled {
    /// `fw_rules` entries, one per distinct prefix: (trie prefix length, key data, value).
    pub entries: Vec<(u32, FwKeyData, FwRule)>,
    /// `VIP_FW_*` bits for the VIP's value.
    pub flags: u32,
    /// Rate and burst (zero without a limit).
    pub rate: u32,
    /// Burst.
    pub burst: u32,
}

/// The trie key of `prefix` in rule set `set`: (prefix length over set id and address, data).
pub(crate) fn fw_key(set: u32, prefix: &Prefix) -> (u32, FwKeyData) {
    let (addr, _) = addr_bytes(prefix.addr);
    (
        32 + u32::from(prefix.len),
        FwKeyData {
            set: set.to_be(),
            addr,
        },
    )
}

/// Checks `rules` for a VIP of family `vip_is_v4` and translates them for rule set `set`.
pub(crate) fn compile(rules: &FirewallRules, vip_is_v4: bool, set: u32) -> Result<Compiled, Error> {
    let mut actions: BTreeMap<Prefix, u32> = BTreeMap::new();
    for (list, action) in [(&rules.allow, FW_ALLOW), (&rules.deny, FW_DENY)] {
        for p in list {
            if p.addr.is_ipv4() != vip_is_v4 {
                return Err(Error::InvalidFirewall(format!(
                    "prefix {p} is not of the VIP's address family"
                )));
            }
            // Deny is inserted second: a prefix in both lists is denied.
            actions.insert(*p, action);
        }
    }
    let mut flags = 0;
    if !actions.is_empty() {
        flags |= VIP_FW_RULES;
    }
    if !rules.allow.is_empty() {
        flags |= VIP_FW_ALLOWLIST;
    }
    let (rate, burst) = match rules.new_conn_rate {
        None => (0, 0),
        Some((r, b)) if (1..=MAX_RATE).contains(&r) && (1..=MAX_RATE).contains(&b) => {
            flags |= VIP_FW_RATE;
            (r, b)
        }
        Some((r, b)) => {
            return Err(Error::InvalidFirewall(format!(
                "rate {r}/s burst {b}: both must be 1..={MAX_RATE}"
            )));
        }
    };
    Ok(Compiled {
        entries: actions
            .iter()
            .map(|(p, &action)| {
                let (len, data) = fw_key(set, p);
                (len, data, FwRule { action })
            })
            .collect(),
        flags,
        rate,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn prefixes_parse_mask_and_contain() {
        assert_eq!(p("198.18.1.7/24").to_string(), "198.18.1.0/24");
        assert_eq!(p("198.18.1.7").len(), 32);
        assert_eq!(p("fd53:7900::1/32").to_string(), "fd53:7900::/32");
        assert_eq!(p("0.0.0.0/0").len(), 0);
        assert!(p("0.0.0.0/0").is_empty());
        assert!(p("198.18.0.0/15").contains("198.19.255.1".parse().expect("ip")));
        assert!(!p("198.18.0.0/16").contains("198.19.0.1".parse().expect("ip")));
        assert!(!p("198.18.0.0/16").contains("fd53::1".parse().expect("ip")));
        for bad in ["198.18.0.0/33", "fd53::/129", "nonsense/8", "198.18.0.0/x"] {
            assert!(matches!(
                bad.parse::<Prefix>(),
                Err(Error::InvalidFirewall(_))
            ));
        }
    }

    #[test]
    fn compile_sets_flags_keys_and_deny_precedence() {
        let rules = FirewallRules {
            allow: vec![p("198.18.0.0/15"), p("198.18.5.0/24")],
            deny: vec![p("198.18.5.0/24"), p("198.18.9.9")],
            new_conn_rate: Some((10, 20)),
        };
        let c = compile(&rules, true, 7).expect("valid");
        assert_eq!(c.flags, VIP_FW_RULES | VIP_FW_ALLOWLIST | VIP_FW_RATE);
        assert_eq!((c.rate, c.burst), (10, 20));
        assert_eq!(c.entries.len(), 3, "the shared prefix appears once");
        let (len, k) = fw_key(7, &p("198.18.5.0/24"));
        assert_eq!(len, 56);
        assert_eq!(k.set, 7u32.to_be());
        assert_eq!(&k.addr[..4], &[198, 18, 5, 0]);
        let shared = c
            .entries
            .iter()
            .find(|(l, key, _)| (*l, *key) == (len, k))
            .expect("present");
        assert_eq!(shared.2.action, FW_DENY, "a prefix in both lists is denied");

        let deny_only = FirewallRules {
            deny: vec![p("fd53:7900:0:9::/64")],
            ..FirewallRules::default()
        };
        let c = compile(&deny_only, false, 0).expect("valid");
        assert_eq!(c.flags, VIP_FW_RULES);
        assert_eq!(c.entries[0].0, 32 + 64);
        assert_eq!(
            compile(&FirewallRules::default(), true, 0)
                .expect("ok")
                .flags,
            0
        );
    }

    #[test]
    fn compile_rejects_wrong_family_and_bad_rates() {
        let v6_on_v4 = FirewallRules {
            deny: vec![p("fd53::/16")],
            ..FirewallRules::default()
        };
        assert!(matches!(
            compile(&v6_on_v4, true, 0),
            Err(Error::InvalidFirewall(_))
        ));
        for rate in [(0, 1), (1, 0), (MAX_RATE + 1, 1)] {
            let r = FirewallRules {
                new_conn_rate: Some(rate),
                ..FirewallRules::default()
            };
            assert!(matches!(
                compile(&r, true, 0),
                Err(Error::InvalidFirewall(_))
            ));
        }
    }
}
