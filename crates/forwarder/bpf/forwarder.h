/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared layouts of the forwarder's BPF maps and ring-buffer events.
 *
 * Every struct here has a #[repr(C)] mirror in crates/forwarder/src/maps.rs with compile-time
 * size and offset assertions: change both together. All fields are naturally aligned and padding
 * is explicit, so the layout is the same for the BPF target and x86_64/aarch64 userspace.
 * Addresses are 16 bytes: an IPv4 address occupies the first 4 bytes, the rest is zero.
 * Addresses and ports are in network byte order, exactly as on the wire.
 */
#ifndef SWITCHYARD_FORWARDER_H
#define SWITCHYARD_FORWARDER_H

#include <linux/types.h>

#define SY_FAMILY_V4 4
#define SY_FAMILY_V6 6

/* A flow as seen on the wire in one direction: the key of `routes`, which holds both
 * directions: forward entries (client -> VIP) and reply entries (host -> NAT source or client,
 * flag SY_ROUTE_REPLY). 40 bytes. */
struct sy_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* SY_FAMILY_V4 / SY_FAMILY_V6 */
	__u8 pad[2]; /* must be zero */
};

/* Delivery modes (sy_route.mode). */
#define SY_MODE_NAT 1      /* full NAT: dst := host, src := NAT source */
#define SY_MODE_HALF_NAT 2 /* half NAT: dst := host, src unchanged */
#define SY_MODE_TUNNEL 3   /* reserved: flow-id tunnel (FIG. 38); dropped and counted today */

/* sy_route.flags */
#define SY_ROUTE_SET_SRC (1 << 0) /* rewrite the source to new_saddr:new_sport */
#define SY_ROUTE_SET_DST (1 << 1) /* rewrite the destination to new_daddr:new_dport */
#define SY_ROUTE_REPLY (1 << 2)   /* a reply entry (host -> client direction) */

/* The next hop of a route, resolved by the program with bpf_fib_lookup on the route's first
 * packet and cached in the route so later packets skip the FIB (refreshed every
 * SY_NEXT_HOP_JIFFIES). Written only by the program; zero when userspace installs a route.
 * 24 bytes. */
struct sy_next_hop {
	__u32 ifindex; /* egress interface; 0 = not resolved */
	__u32 jiffies; /* low 32 bits of jiffies when resolved */
	__u8 dmac[6];
	__u8 smac[6];
	__u16 max_len; /* XDP: largest L3 length the FIB accepted (MTU check); 0 = unknown */
	__u16 pad;
};

/* The value of `routes`: how to rewrite a matching packet. 88 bytes.
 * Forward entry: new_daddr:new_dport = host; new_saddr:new_sport = NAT source (full NAT only).
 * Reply entry: new_saddr:new_sport = VIP; new_daddr:new_dport = client (full NAT only). */
struct sy_route {
	__u8 new_saddr[16];
	__u8 new_daddr[16];
	__be16 new_sport;
	__be16 new_dport;
	__u8 mode;
	__u8 flags;
	__u16 vip_id;  /* index into vip_stats */
	__u32 flow_id; /* tunnel mode (reserved) */
	__u32 touch_jiffies; /* low 32 bits of jiffies at the last last_seen_ns refresh */
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of a recent packet, for idle expiry */
	struct sy_next_hop nh; /* the cached FIB result, written by the program */
	__u16 host_slot; /* index into host_stats: the host endpoint; 0 = not counted per host */
	__u16 pad16;     /* zero */
	__u32 pad32;     /* zero */
};

/* Key of `vips`: a service endpoint (destination address, port, protocol). 20 bytes. */
struct sy_vip_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* sy_vip.flags: which firewall checks apply to the VIP's new connections. */
#define SY_VIP_FW_RULES (1 << 0)     /* fw_rules holds prefixes of set fw_set: look them up */
#define SY_VIP_FW_ALLOWLIST (1 << 1) /* the allow list is not empty: no match = not allowed */
#define SY_VIP_FW_RATE (1 << 2)      /* per-source new-connection token bucket */

/* Value of `vips`. 24 bytes. Replaced as a whole, so a packet sees one consistent firewall. */
struct sy_vip {
	__u32 id;       /* index into vip_stats; < max VIPs */
	__u32 flags;    /* SY_VIP_FW_* */
	__u32 fw_set;   /* rule-set id of this VIP's prefixes in fw_rules (2 * id + generation) */
	__u32 rate;     /* new connections per second per source (SY_VIP_FW_RATE) */
	__u32 burst;    /* bucket size in connections (SY_VIP_FW_RATE) */
	__u32 pad;      /* zero */
};

/* Key of `fw_rules` (LPM trie): rule-set id, then the source address. prefixlen counts the 32
 * bits of `set` plus the prefix length, so one lookup with prefixlen 32 + 32 (IPv4) or
 * 32 + 128 (IPv6) finds the most specific prefix of the VIP's allow and deny lists. 24 bytes. */
struct sy_fw_key {
	__u32 prefixlen;
	__u32 set;      /* sy_vip.fw_set, big endian (all 32 bits always match) */
	__u8 addr[16];  /* IPv4 in the first 4 bytes */
};

/* Value of `fw_rules`. */
#define SY_FW_ALLOW 1
#define SY_FW_DENY 2
struct sy_fw_rule {
	__u32 action; /* SY_FW_ALLOW / SY_FW_DENY */
};

/* Key of `fw_buckets` (LRU hash): one token bucket per VIP and source address. 20 bytes. */
struct sy_bucket_key {
	__u32 vip_id;
	__u8 addr[16];
};

/* Tokens are counted in units of 1/SY_TOKEN connection, so refill = elapsed ns * rate. */
#define SY_TOKEN 1000000000ULL

/* Value of `fw_buckets`. 16 bytes. */
struct sy_bucket {
	__u64 tokens;  /* in 1/SY_TOKEN connections, at most burst * SY_TOKEN */
	__u64 last_ns; /* bpf_ktime_get_ns() of the last refill */
};

/* Per-VIP counters (`vip_stats`, per CPU). 72 bytes. */
struct sy_vip_stats {
	__u64 packets;       /* client -> host packets forwarded */
	__u64 bytes;
	__u64 misses;        /* packets with no route (sent to the classifier) */
	__u64 reply_packets; /* host -> client packets reverse-translated */
	__u64 reply_bytes;
	__u64 finals;        /* FIN/RST seen on a routed flow, either direction */
	__u64 fw_denied;       /* new connections dropped: source in the deny list */
	__u64 fw_not_allowed;  /* new connections dropped: allow list set, source not in it */
	__u64 fw_rate_limited; /* new connections dropped: the source's token bucket was empty */
};

/* Per host endpoint counters (`host_stats`, per CPU), indexed by sy_route.host_slot: both
 * directions of every route to the endpoint. 32 bytes. */
struct sy_host_stats {
	__u64 packets;       /* client -> host packets forwarded to the endpoint */
	__u64 bytes;
	__u64 reply_packets; /* host -> client packets of the endpoint reverse-translated */
	__u64 reply_bytes;
};

/* Global counters: index into the per-CPU block `counters[hook].c[]` (hook = SY_HOOK_*). */
enum sy_counter {
	SY_CNT_RX = 0,         /* every frame the program saw */
	SY_CNT_HIT_PACKETS,    /* forwarded client -> host */
	SY_CNT_HIT_BYTES,
	SY_CNT_REPLY_PACKETS,  /* reverse-translated host -> client */
	SY_CNT_REPLY_BYTES,
	SY_CNT_MISS,           /* VIP packet without route: event + drop */
	SY_CNT_PASS,           /* IP traffic not for a VIP nor a reply: untouched */
	SY_CNT_NON_IP,         /* not IPv4/IPv6: untouched */
	SY_CNT_VLAN,           /* VLAN tagged: untouched */
	SY_CNT_FRAGMENT,       /* IPv4 fragment: untouched */
	SY_CNT_IPV6_EXT,       /* IPv6 with extension headers: untouched */
	SY_CNT_MALFORMED,      /* truncated / inconsistent headers: untouched */
	SY_CNT_TTL_EXPIRED,    /* routed packet with TTL/hop limit <= 1: untouched, stack answers */
	SY_CNT_FIB_NO_NEIGH,   /* XDP: untouched (tc completes it); tc: redirect_neigh */
	SY_CNT_FIB_FAIL,       /* no route / unreachable / forwarding off: dropped */
	SY_CNT_FIB_FRAG_NEEDED,/* larger than the egress MTU: dropped */
	SY_CNT_FINAL,          /* FIN or RST on a routed flow: event, still forwarded */
	SY_CNT_RINGBUF_FULL,   /* an event could not be queued */
	SY_CNT_UNSUPPORTED,    /* a route with a mode this program cannot apply: dropped */
	SY_CNT_DROP_OTHER,     /* a helper failed mid-rewrite: dropped */
	SY_CNT_TX,             /* XDP_TX (egress = ingress interface) */
	SY_CNT_REDIRECT,       /* redirected to another interface */
	SY_CNT_FW_DENIED,      /* new connection dropped by a deny prefix */
	SY_CNT_FW_NOT_ALLOWED, /* new connection dropped: not in the VIP's allow list */
	SY_CNT_FW_RATE_LIMITED,/* new connection dropped by the per-source rate limit */
	SY_CNT_NAT_MISS,       /* packet to a NAT source (port in range) without route: event + drop */
	SY_CNT_SLOW_SENT,      /* sy_xdp_slow: frame rewritten along `slow_route` and sent */
	SY_CNT_SLOW_REFUSED,   /* sy_xdp_slow: frame not sent (not of the flow, unparseable, FIB) */
	SY_CNT_NEXT_HOP_CACHED,/* routed packet sent along the route's cached next hop (no FIB lookup) */
	SY_CNT_REOPEN,         /* SYN without ACK on a routed flow: REOPEN event, still forwarded */
	SY_CNT_MAX
};

#define SY_HOOK_XDP 0
#define SY_HOOK_TC 1
#define SY_HOOK_SLOW 2 /* sy_xdp_slow (the classifier's slow path) */

/* Ring buffer event kinds. */
#define SY_EVENT_MISS 1
#define SY_EVENT_FINAL 2
#define SY_EVENT_REPLY_MISS 3 /* like MISS, for a packet to a NAT source (host -> NAT source) */
#define SY_EVENT_REOPEN 4     /* a SYN (no ACK) on a routed flow: the 4-tuple opens again */

/* Largest frame copied into a miss event. */
#define SY_MAX_CAPTURE 1514

/* Header common to all events. 72 bytes. */
struct sy_event_header {
	__u32 kind;    /* SY_EVENT_* */
	__u32 ifindex; /* ingress interface */
	struct sy_flow_key flow; /* as seen on the wire */
	__u16 vip_id;
	__u8 hook;      /* SY_HOOK_* */
	__u8 tcp_flags; /* TCP flags byte (0 for UDP) */
	__u32 pkt_len;  /* length of the whole frame */
	__u32 cap_len;  /* bytes of it that follow (miss events only) */
	__u32 pad;
	__u64 ts_ns;    /* bpf_ktime_get_ns() */
};

/* A miss: the header and the first cap_len bytes of the frame. */
struct sy_miss_event {
	struct sy_event_header hdr;
	__u8 data[SY_MAX_CAPTURE];
	__u8 pad[6];
};

/* Key of `nat_sources`: a full-NAT source address of this forwarder. 20 bytes. */
struct sy_nat_source_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3]; /* zero */
};

/* Value of `nat_sources`: the NAT port range, host byte order, inclusive. */
struct sy_nat_ports {
	__u16 first;
	__u16 last;
};

/* sy_slow_route.result, written by sy_xdp_slow. */
#define SY_SLOW_SENT 1       /* rewritten and transmitted (XDP_TX / XDP_REDIRECT) */
#define SY_SLOW_WRONG_FLOW 2 /* the frame is of neither direction of the flow: dropped */
#define SY_SLOW_UNPARSED 3   /* not a TCP/UDP packet the program understands: dropped */
#define SY_SLOW_TTL 4        /* TTL / hop limit <= 1: dropped */
#define SY_SLOW_NO_NEIGH 5   /* next hop's neighbour unresolved: dropped */
#define SY_SLOW_FIB_FAIL 6   /* no route / too big for the egress MTU: dropped */
#define SY_SLOW_ERROR 7      /* unsupported mode or a failed rewrite: dropped */

/* The only value of `slow_route` (an ARRAY of one): a route to apply to one frame without
 * installing it in `routes` (the classifier's slow path when the table is full). Both
 * directions: a frame whose key is fwd_key gets fwd, one whose key is rep_key gets rep.
 * 264 bytes. */
struct sy_slow_route {
	struct sy_flow_key fwd_key;
	struct sy_route fwd;
	struct sy_flow_key rep_key;
	struct sy_route rep;
	__u32 result; /* SY_SLOW_*, written by the program */
	__u32 pad;
};

#endif
