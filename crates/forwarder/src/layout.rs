//! `#[repr(C)]` mirrors of the structs in `bpf/forwarder.h`: the keys and values of the BPF maps
//! and the ring-buffer event header. Sizes and field offsets are asserted at compile time, so a
//! change on one side that is not made on the other fails the build.
//!
//! These are the raw wire-level layouts (addresses as 16 bytes, ports in network byte order);
//! the typed API lives in [`crate::flow`]. This module must not grow any logic beyond
//! conversions between bytes and these structs.

use std::mem::{offset_of, size_of};

/// `SY_FAMILY_V4`.
pub const FAMILY_V4: u8 = 4;
/// `SY_FAMILY_V6`.
pub const FAMILY_V6: u8 = 6;

/// `SY_MODE_NAT`: full NAT.
pub const MODE_NAT: u8 = 1;
/// `SY_MODE_HALF_NAT`: half NAT.
pub const MODE_HALF_NAT: u8 = 2;
/// `SY_MODE_TUNNEL`: reserved for the flow-id tunnel.
pub const MODE_TUNNEL: u8 = 3;

/// `SY_ROUTE_SET_SRC`: rewrite the source.
pub const ROUTE_SET_SRC: u8 = 1 << 0;
/// `SY_ROUTE_SET_DST`: rewrite the destination.
pub const ROUTE_SET_DST: u8 = 1 << 1;
/// `SY_ROUTE_REPLY`: a reply entry (host → client direction) of `routes`.
pub const ROUTE_REPLY: u8 = 1 << 2;

/// `SY_VIP_FW_RULES`: the VIP has prefixes in `fw_rules`.
pub const VIP_FW_RULES: u32 = 1 << 0;
/// `SY_VIP_FW_ALLOWLIST`: the VIP's allow list is not empty.
pub const VIP_FW_ALLOWLIST: u32 = 1 << 1;
/// `SY_VIP_FW_RATE`: the VIP limits new connections per source.
pub const VIP_FW_RATE: u32 = 1 << 2;

/// `SY_FW_ALLOW`.
pub const FW_ALLOW: u32 = 1;
/// `SY_FW_DENY`.
pub const FW_DENY: u32 = 2;

/// `SY_EVENT_MISS`.
pub const EVENT_MISS: u32 = 1;
/// `SY_EVENT_FINAL`.
pub const EVENT_FINAL: u32 = 2;
/// `SY_EVENT_REOPEN`.
pub const EVENT_REOPEN: u32 = 4;
/// `SY_EVENT_REPLY_MISS`: a packet to a NAT source without a route.
pub const EVENT_REPLY_MISS: u32 = 3;

/// `SY_SLOW_SENT`: `sy_xdp_slow` rewrote and transmitted the frame.
pub const SLOW_SENT: u32 = 1;
/// `SY_SLOW_WRONG_FLOW`: the frame is of neither direction of the flow.
pub const SLOW_WRONG_FLOW: u32 = 2;
/// `SY_SLOW_UNPARSED`: not a TCP/UDP packet the program understands.
pub const SLOW_UNPARSED: u32 = 3;
/// `SY_SLOW_TTL`: TTL / hop limit ≤ 1.
pub const SLOW_TTL: u32 = 4;
/// `SY_SLOW_NO_NEIGH`: the next hop's neighbour is not resolved.
pub const SLOW_NO_NEIGH: u32 = 5;
/// `SY_SLOW_FIB_FAIL`: no route, or larger than the egress MTU.
pub const SLOW_FIB_FAIL: u32 = 6;
/// `SY_SLOW_ERROR`: unsupported mode or a failed rewrite.
pub const SLOW_ERROR: u32 = 7;

/// `SY_MAX_CAPTURE`: the most frame bytes a miss event carries.
pub const MAX_CAPTURE: usize = 1514;

/// `struct sy_flow_key`: a flow as seen on the wire in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `struct sy_next_hop`: a route's next hop, cached by the program (zero when installed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface; 0 = not resolved.
    pub ifindex: u32,
    /// Low 32 bits of jiffies when resolved.
    pub jiffies: u32,
    /// Next hop's MAC address.
    pub dmac: [u8; 6],
    /// Egress interface's MAC address.
    pub smac: [u8; 6],
    /// XDP: largest L3 length the FIB accepted on this hop; 0 = unknown.
    pub max_len: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct sy_route`: the value of `routes` (forward and reply entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    /// New source address (with [`ROUTE_SET_SRC`]).
    pub new_saddr: [u8; 16],
    /// New destination address (with [`ROUTE_SET_DST`]).
    pub new_daddr: [u8; 16],
    /// New source port, network byte order.
    pub new_sport: u16,
    /// New destination port, network byte order.
    pub new_dport: u16,
    /// `MODE_*`.
    pub mode: u8,
    /// `ROUTE_*` bits.
    pub flags: u8,
    /// Index into `vip_stats`.
    pub vip_id: u16,
    /// Tunnel flow id (reserved).
    pub flow_id: u32,
    /// Low 32 bits of jiffies when `last_seen_ns` was refreshed (written by the program;
    /// zero when installed).
    pub touch_jiffies: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of a recent packet; 0 = none yet.
    pub last_seen_ns: u64,
    /// The cached FIB result (written by the program; zero when installed).
    pub nh: NextHop,
    /// Index into `host_stats`: the host endpoint the route leads to (0: not counted).
    pub host_slot: u16,
    /// Zero.
    pub pad16: u16,
    /// Zero.
    pub pad32: u32,
}

/// `struct sy_slow_route`: the one value of `slow_route`, both directions of a route for
/// `sy_xdp_slow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowRouteValue {
    /// Key of the forward direction (client → VIP).
    pub fwd_key: FlowKey,
    /// Its rewrite.
    pub fwd: RouteValue,
    /// Key of the reply direction (host → NAT source or client).
    pub rep_key: FlowKey,
    /// Its rewrite.
    pub rep: RouteValue,
    /// `SLOW_*`, written by the program (zero when written by the agent).
    pub result: u32,
    /// Zero.
    pub pad: u32,
}

/// `struct sy_nat_source_key`: a full-NAT source address (key of `nat_sources`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatSourceKey {
    /// Address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// `struct sy_nat_ports`: a NAT source's port range (host byte order, inclusive).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatPorts {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// `struct sy_vip_key`: a service endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Address family.
    pub family: u8,
}

/// `struct sy_vip`: the value of `vips`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipValue {
    /// Index into `vip_stats`.
    pub id: u32,
    /// `VIP_FW_*` bits.
    pub flags: u32,
    /// Rule-set id of the VIP's prefixes in `fw_rules`.
    pub fw_set: u32,
    /// New connections per second per source (with [`VIP_FW_RATE`]).
    pub rate: u32,
    /// Bucket size in connections (with [`VIP_FW_RATE`]).
    pub burst: u32,
    /// Zero.
    pub pad: u32,
}

/// `struct sy_fw_key` after its leading `prefixlen` (32 for the rule-set id + the prefix
/// length), which aya's `lpm_trie::Key` carries: the data of the `fw_rules` LPM trie key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwKeyData {
    /// Rule-set id, big endian.
    pub set: u32,
    /// Address (IPv4 in the first 4 bytes), bits beyond the prefix zero.
    pub addr: [u8; 16],
}

/// `struct sy_fw_rule`: the value of `fw_rules`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwRule {
    /// [`FW_ALLOW`] or [`FW_DENY`].
    pub action: u32,
}

/// `struct sy_bucket_key`: the key of `fw_buckets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// The VIP's id.
    pub vip_id: u32,
    /// Source address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
}

/// `struct sy_bucket`: a source's token bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens in units of 1/1e9 connection.
    pub tokens: u64,
    /// `bpf_ktime_get_ns()` of the last refill.
    pub last_ns: u64,
}

/// `struct sy_vip_stats`: per-VIP counters (one copy per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStatsValue {
    /// Client → host packets forwarded.
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
    /// Packets without a route, handed to the classifier.
    pub misses: u64,
    /// Host → client packets reverse-translated.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
    /// FIN/RST seen on routed flows.
    pub finals: u64,
    /// New connections dropped by a deny prefix.
    pub fw_denied: u64,
    /// New connections dropped because the source is not in the allow list.
    pub fw_not_allowed: u64,
    /// New connections dropped by the per-source rate limit.
    pub fw_rate_limited: u64,
}

/// `struct sy_host_stats`: per host endpoint counters (one copy per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStatsValue {
    /// Client → host packets forwarded to the endpoint.
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
    /// Host → client packets of the endpoint reverse-translated.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
}

/// `struct sy_event_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `EVENT_*`.
    pub kind: u32,
    /// Ingress interface index.
    pub ifindex: u32,
    /// The flow as seen on the wire.
    pub flow: FlowKey,
    /// The VIP's id.
    pub vip_id: u16,
    /// 0 = XDP, 1 = tc.
    pub hook: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Length of the whole frame.
    pub pkt_len: u32,
    /// Captured bytes following the header (miss events).
    pub cap_len: u32,
    /// Zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
}

// SAFETY: FlowKey is #[repr(C)], consists only of integers and integer arrays, has no implicit
// padding (asserted below: 40 bytes = the sum of its fields) and every bit pattern is valid.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above; 88 bytes, all fields integers (and a NextHop of integers), no implicit
// padding (asserted below).
unsafe impl aya::Pod for RouteValue {}
// SAFETY: as above; 20 bytes, all fields integers, no implicit padding (asserted below).
unsafe impl aya::Pod for VipKey {}
// SAFETY: as above; six u32, 24 bytes.
unsafe impl aya::Pod for VipValue {}
// SAFETY: as above; nine u64, 72 bytes.
unsafe impl aya::Pod for VipStatsValue {}
// SAFETY: as above; four u64, 32 bytes.
unsafe impl aya::Pod for HostStatsValue {}
// SAFETY: as above; a u32 and 16 bytes, 20 bytes, no implicit padding (asserted below).
unsafe impl aya::Pod for FwKeyData {}
// SAFETY: as above; a u32 and 16 bytes, 20 bytes, no implicit padding (asserted below).
unsafe impl aya::Pod for BucketKey {}
// SAFETY: as above; two u64, 16 bytes.
unsafe impl aya::Pod for Bucket {}
// SAFETY: as above; one u32.
unsafe impl aya::Pod for FwRule {}
// SAFETY: as above; two FlowKeys, two RouteValues and two u32, 264 bytes, every field at an
// offset that its alignment divides, no implicit padding (asserted below).
unsafe impl aya::Pod for SlowRouteValue {}
// SAFETY: as above; 16 + 1 + 3 bytes, 20 bytes, no implicit padding (asserted below).
unsafe impl aya::Pod for NatSourceKey {}
// SAFETY: as above; two u16.
unsafe impl aya::Pod for NatPorts {}

const _: () = {
    assert!(size_of::<FlowKey>() == 40);
    assert!(offset_of!(FlowKey, daddr) == 16);
    assert!(offset_of!(FlowKey, sport) == 32);
    assert!(offset_of!(FlowKey, dport) == 34);
    assert!(offset_of!(FlowKey, proto) == 36);
    assert!(offset_of!(FlowKey, family) == 37);
    assert!(offset_of!(FlowKey, pad) == 38);

    assert!(size_of::<NextHop>() == 24);
    assert!(offset_of!(NextHop, jiffies) == 4);
    assert!(offset_of!(NextHop, dmac) == 8);
    assert!(offset_of!(NextHop, smac) == 14);
    assert!(offset_of!(NextHop, max_len) == 20);
    assert!(offset_of!(NextHop, pad) == 22);
    assert!(size_of::<RouteValue>() == 88);
    assert!(offset_of!(RouteValue, nh) == 56);
    assert!(offset_of!(RouteValue, host_slot) == 80);
    assert!(offset_of!(RouteValue, pad32) == 84);
    assert!(offset_of!(RouteValue, new_daddr) == 16);
    assert!(offset_of!(RouteValue, new_sport) == 32);
    assert!(offset_of!(RouteValue, new_dport) == 34);
    assert!(offset_of!(RouteValue, mode) == 36);
    assert!(offset_of!(RouteValue, flags) == 37);
    assert!(offset_of!(RouteValue, vip_id) == 38);
    assert!(offset_of!(RouteValue, flow_id) == 40);
    assert!(offset_of!(RouteValue, touch_jiffies) == 44);
    assert!(offset_of!(RouteValue, last_seen_ns) == 48);

    assert!(size_of::<VipKey>() == 20);
    assert!(offset_of!(VipKey, port) == 16);
    assert!(offset_of!(VipKey, proto) == 18);
    assert!(offset_of!(VipKey, family) == 19);

    assert!(size_of::<VipValue>() == 24);
    assert!(offset_of!(VipValue, fw_set) == 8);
    assert!(offset_of!(VipValue, rate) == 12);
    assert!(offset_of!(VipValue, burst) == 16);
    assert!(size_of::<VipStatsValue>() == 72);
    assert!(offset_of!(VipStatsValue, fw_denied) == 48);
    assert!(size_of::<HostStatsValue>() == 32);
    assert!(size_of::<aya::maps::lpm_trie::Key<FwKeyData>>() == 24);
    assert!(size_of::<FwKeyData>() == 20);
    assert!(offset_of!(FwKeyData, addr) == 4);
    assert!(size_of::<BucketKey>() == 20);
    assert!(offset_of!(BucketKey, addr) == 4);
    assert!(size_of::<Bucket>() == 16);
    assert!(size_of::<FwRule>() == 4);
    assert!(size_of::<SlowRouteValue>() == 264);
    assert!(offset_of!(SlowRouteValue, fwd) == 40);
    assert!(offset_of!(SlowRouteValue, rep_key) == 128);
    assert!(offset_of!(SlowRouteValue, rep) == 168);
    assert!(offset_of!(SlowRouteValue, result) == 256);
    assert!(size_of::<NatSourceKey>() == 20);
    assert!(offset_of!(NatSourceKey, family) == 16);
    assert!(size_of::<NatPorts>() == 4);

    assert!(size_of::<EventHeader>() == EventHeader::LEN);
    assert!(offset_of!(EventHeader, ifindex) == 4);
    assert!(offset_of!(EventHeader, flow) == 8);
    assert!(offset_of!(EventHeader, vip_id) == 48);
    assert!(offset_of!(EventHeader, hook) == 50);
    assert!(offset_of!(EventHeader, tcp_flags) == 51);
    assert!(offset_of!(EventHeader, pkt_len) == 52);
    assert!(offset_of!(EventHeader, cap_len) == 56);
    assert!(offset_of!(EventHeader, ts_ns) == 64);
};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

impl FlowKey {
    /// Size in bytes.
    pub const LEN: usize = 40;

    /// Decodes the C layout from `b` (at least [`Self::LEN`] bytes).
    pub fn from_bytes(b: &[u8]) -> Option<FlowKey> {
        if b.len() < Self::LEN {
            return None;
        }
        let mut k = FlowKey::default();
        k.saddr.copy_from_slice(&b[0..16]);
        k.daddr.copy_from_slice(&b[16..32]);
        k.sport = u16_at(b, 32);
        k.dport = u16_at(b, 34);
        k.proto = b[36];
        k.family = b[37];
        k.pad = [b[38], b[39]];
        Some(k)
    }
}

impl EventHeader {
    /// Size in bytes.
    pub const LEN: usize = 72;

    /// Decodes the C layout from the start of a ring-buffer record, or `None` if it is short.
    pub fn from_bytes(b: &[u8]) -> Option<EventHeader> {
        if b.len() < Self::LEN {
            return None;
        }
        Some(EventHeader {
            kind: u32_at(b, 0),
            ifindex: u32_at(b, 4),
            flow: FlowKey::from_bytes(&b[8..48])?,
            vip_id: u16_at(b, 48),
            hook: b[50],
            tcp_flags: b[51],
            pkt_len: u32_at(b, 52),
            cap_len: u32_at(b, 56),
            pad: u32_at(b, 60),
            ts_ns: u64_at(b, 64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_header_decodes_native_layout() {
        let mut b = vec![0u8; EventHeader::LEN + 3];
        b[0..4].copy_from_slice(&EVENT_MISS.to_ne_bytes());
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        b[8] = 198;
        b[42..44].copy_from_slice(&80u16.to_be_bytes());
        b[44] = 6;
        b[45] = FAMILY_V4;
        b[48..50].copy_from_slice(&3u16.to_ne_bytes());
        b[50] = 1;
        b[51] = 0x02;
        b[52..56].copy_from_slice(&60u32.to_ne_bytes());
        b[56..60].copy_from_slice(&60u32.to_ne_bytes());
        b[64..72].copy_from_slice(&99u64.to_ne_bytes());
        let h = EventHeader::from_bytes(&b).expect("long enough");
        assert_eq!(h.kind, EVENT_MISS);
        assert_eq!(h.ifindex, 7);
        assert_eq!(h.flow.saddr[0], 198);
        assert_eq!(u16::from_be(h.flow.dport), 80);
        assert_eq!(h.flow.proto, 6);
        assert_eq!(h.vip_id, 3);
        assert_eq!(h.hook, 1);
        assert_eq!(h.tcp_flags, 2);
        assert_eq!(h.cap_len, 60);
        assert_eq!(h.ts_ns, 99);
        assert!(EventHeader::from_bytes(&b[..EventHeader::LEN - 1]).is_none());
    }
}
