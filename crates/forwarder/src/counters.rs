//! The data plane's counters as Rust values: [`Counters`] (global, per attach point, summed over
//! CPUs) and [`VipStats`] (per VIP). The index order mirrors `enum sy_counter` in
//! `bpf/forwarder.h`.

use crate::layout::{HostStatsValue, VipStatsValue};

/// Number of global counters per hook (`SY_CNT_MAX`).
pub(crate) const COUNTER_COUNT: u32 = 30;

/// Which program a counter set or event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// The XDP program.
    Xdp,
    /// The tc (clsact / tcx ingress) program.
    Tc,
    /// `sy_xdp_slow`, the slow path ([`crate::Dataplane::deliver_with_route`]); never attached.
    Slow,
}

impl Hook {
    /// `SY_HOOK_*`: the index of this program's counter block.
    pub(crate) fn index(self) -> u32 {
        match self {
            Hook::Xdp => 0,
            Hook::Tc => 1,
            Hook::Slow => 2,
        }
    }

    pub(crate) fn from_raw(v: u8) -> Hook {
        match v {
            0 => Hook::Xdp,
            2 => Hook::Slow,
            _ => Hook::Tc,
        }
    }
}

/// Global counters of one program, summed across CPUs. See `enum sy_counter` for exact meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every frame the program saw.
    pub rx: u64,
    /// Client → host packets forwarded.
    pub hit_packets: u64,
    /// Their bytes.
    pub hit_bytes: u64,
    /// Host → client packets reverse-translated.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
    /// VIP packets without a route: reported to the classifier and dropped.
    pub misses: u64,
    /// IP traffic for no VIP and no route: passed untouched.
    pub passed: u64,
    /// Non-IP frames: passed untouched.
    pub non_ip: u64,
    /// VLAN-tagged frames: passed untouched.
    pub vlan: u64,
    /// IPv4 fragments: passed untouched.
    pub fragments: u64,
    /// IPv6 packets with extension headers: passed untouched.
    pub ipv6_ext: u64,
    /// Truncated or inconsistent headers: passed untouched.
    pub malformed: u64,
    /// Routed packets with TTL / hop limit ≤ 1: passed untouched (the stack answers).
    pub ttl_expired: u64,
    /// FIB lookups that found no neighbour (XDP: passed untouched; tc: `bpf_redirect_neigh`).
    pub fib_no_neigh: u64,
    /// FIB lookups that failed otherwise (no route, forwarding off): dropped.
    pub fib_fail: u64,
    /// Packets larger than the egress MTU: dropped.
    pub fib_frag_needed: u64,
    /// FIN/RST on routed flows (reported; still forwarded).
    pub finals: u64,
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Routes with a mode this program cannot apply: dropped.
    pub unsupported: u64,
    /// Helper failures mid-rewrite: dropped.
    pub drop_other: u64,
    /// `XDP_TX` (egress interface = ingress interface).
    pub tx: u64,
    /// Redirected to another interface.
    pub redirected: u64,
    /// New connections dropped by a VIP's deny prefix.
    pub fw_denied: u64,
    /// New connections dropped because the source is not in the VIP's allow list.
    pub fw_not_allowed: u64,
    /// New connections dropped by a VIP's per-source rate limit.
    pub fw_rate_limited: u64,
    /// Packets to a NAT source (port in range) without a route: reported to the classifier
    /// (replies of flows the table could not hold) and dropped.
    pub nat_misses: u64,
    /// Slow path: frames rewritten along the given route and sent.
    pub slow_sent: u64,
    /// Slow path: frames not sent (not of the flow, unparseable, TTL, FIB); dropped.
    pub slow_refused: u64,
    /// Routed packets sent along their route's cached next hop, without a FIB lookup.
    pub next_hop_cached: u64,
    /// SYNs without ACK on routed flows (reported as [`crate::Event::Reopen`]; forwarded).
    pub reopens: u64,
}

impl Counters {
    pub(crate) fn from_values(v: &[u64]) -> Counters {
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        Counters {
            rx: g(0),
            hit_packets: g(1),
            hit_bytes: g(2),
            reply_packets: g(3),
            reply_bytes: g(4),
            misses: g(5),
            passed: g(6),
            non_ip: g(7),
            vlan: g(8),
            fragments: g(9),
            ipv6_ext: g(10),
            malformed: g(11),
            ttl_expired: g(12),
            fib_no_neigh: g(13),
            fib_fail: g(14),
            fib_frag_needed: g(15),
            finals: g(16),
            ringbuf_full: g(17),
            unsupported: g(18),
            drop_other: g(19),
            tx: g(20),
            redirected: g(21),
            fw_denied: g(22),
            fw_not_allowed: g(23),
            fw_rate_limited: g(24),
            nat_misses: g(25),
            slow_sent: g(26),
            slow_refused: g(27),
            next_hop_cached: g(28),
            reopens: g(29),
        }
    }
}

/// Counters of one VIP, summed across CPUs and both programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    /// Client → host packets forwarded.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets without a route, handed to the classifier.
    pub misses: u64,
    /// Host → client packets reverse-translated.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
    /// FIN/RST on routed flows.
    pub finals: u64,
    /// New connections dropped by a deny prefix.
    pub fw_denied: u64,
    /// New connections dropped because the source is not in the allow list.
    pub fw_not_allowed: u64,
    /// New connections dropped by the per-source rate limit.
    pub fw_rate_limited: u64,
}

impl VipStats {
    pub(crate) fn add(&mut self, v: &VipStatsValue) {
        self.packets += v.packets;
        self.bytes += v.bytes;
        self.misses += v.misses;
        self.reply_packets += v.reply_packets;
        self.reply_bytes += v.reply_bytes;
        self.finals += v.finals;
        self.fw_denied += v.fw_denied;
        self.fw_not_allowed += v.fw_not_allowed;
        self.fw_rate_limited += v.fw_rate_limited;
    }
}

/// Counters of one host endpoint (every route to it, both directions), summed across CPUs
/// and both programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Client → host packets forwarded to the endpoint.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Host → client packets of the endpoint reverse-translated.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
}

impl HostStats {
    pub(crate) fn add(&mut self, v: &HostStatsValue) {
        self.packets += v.packets;
        self.bytes += v.bytes;
        self.reply_packets += v.reply_packets;
        self.reply_bytes += v.reply_bytes;
    }
}
