// SPDX-License-Identifier: Apache-2.0
/*
 * switchyard forwarder data plane (patent FIG. 4, FIGS. 26-30).
 *
 * Entry points sharing one inline core:
 *   sy_xdp  (SEC "xdp")  - native/generic XDP; checksums folded by hand (RFC 1624).
 *   sy_tc   (SEC "classifier") - tc ingress (tcx / clsact); checksums via bpf_l3/l4_csum_replace, so
 *                          CHECKSUM_PARTIAL and GSO skbs (veth, GRO) stay correct.
 *   sy_xdp_slow (SEC "xdp") - never attached: run by the agent through BPF_PROG_TEST_RUN (live
 *                          frames) to send one frame along the route in `slow_route` without
 *                          installing it (the classifier's slow path when `routes` is full).
 *
 * Per packet: parse; look the flow up in `routes` (both directions in one map):
 *   hit  -> rewrite per the entry (forward: full NAT / half NAT; reply: reverse translation),
 *           TTL-1, next hop (cached in the route; bpf_fib_lookup when stale), send. One hash
 *           lookup: the fast path.
 *   miss -> look the destination up in `vips`: not a VIP -> pass untouched; a VIP -> for a
 *           new connection (TCP SYN, UDP) the VIP's firewall (prefix trie, per-source token
 *           bucket) may drop it; else ring-buffer event with the frame (the "default route" to
 *           the classifier), drop. Not a VIP but addressed to a configured NAT source (port
 *           in its range): the reply of a flow without route (table full) -> REPLY_MISS event, drop.
 *
 * Never mis-forward: anything the program does not fully understand (non-IP, VLAN tags, IPv4
 * fragments, IPv6 extension headers, truncated or inconsistent headers) is passed untouched and
 * counted. See crates/forwarder/README.md for every decision.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "forwarder.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- maps ---------------------------------------------------------------------------------- */

/* Service endpoints handled by this forwarder. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sy_vip_key);
	__type(value, struct sy_vip);
	__uint(max_entries, 1024);
} vips SEC(".maps");

/* The routing table, both directions in one map: forward entries (client -> VIP) and reply
 * entries (host -> NAT source or client, SY_ROUTE_REPLY), so every routed packet costs exactly
 * one lookup whichever way it goes. A plain HASH (not LRU: an LRU would silently evict
 * established flows); allocated on demand so a 2M-entry table costs memory only when used.
 * The loader sizes it to 2 x max_routes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sy_flow_key);
	__type(value, struct sy_route);
	__uint(max_entries, 2000000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} routes SEC(".maps");

/* Full-NAT source addresses owned by this forwarder (and their port range): a packet to one
 * of them without a route is the reply of a flow the table could not hold (its forward
 * direction goes through the classifier's slow path), so it is reported like a miss instead of
 * passing to the stack (which would answer a TCP segment with a RST). Empty unless set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sy_nat_source_key);
	__type(value, struct sy_nat_ports);
	__uint(max_entries, 64);
} nat_sources SEC(".maps");

/* The route sy_xdp_slow applies (one entry). Written by the agent right before each test run;
 * the agent serialises those calls (one writer, one run at a time). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_slow_route);
	__uint(max_entries, 1);
} slow_route SEC(".maps");

/* Firewall prefixes of every VIP, allow and deny in one trie (value = action), keyed by
 * (rule-set id, source prefix): the most specific prefix decides, in one lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sy_fw_key);
	__type(value, struct sy_fw_rule);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fw_rules SEC(".maps");

/* Per-(VIP, source) new-connection token buckets. An LRU: evicting a bucket only resets that
 * source's limiter to a full bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sy_bucket_key);
	__type(value, struct sy_bucket);
	__uint(max_entries, 65536);
} fw_buckets SEC(".maps");

/* One block of counters per hook (SY_HOOK_*), looked up once per packet. */
struct sy_counters {
	__u64 c[SY_CNT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_counters);
	__uint(max_entries, 3);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_vip_stats);
	__uint(max_entries, 1024);
} vip_stats SEC(".maps");

/* Per host endpoint counters; slot 0 is never counted (see sy_route.host_slot). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_host_stats);
	__uint(max_entries, 4096);
} host_stats SEC(".maps");

/* Miss and final-packet events for the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* ---- small helpers ------------------------------------------------------------------------- */

/* last_seen_ns is rewritten at most this often per flow (in jiffies), so busy flows do not bounce the
 * route's cache line between CPUs on every packet. Idle expiry works in seconds. */
#define SY_TOUCH_JIFFIES 25 /* 25 ms at HZ=1000, 100 ms at HZ=250 */

/* A route's cached next hop (egress interface and MACs) is used for at most this long, then
 * resolved again with bpf_fib_lookup: a changed neighbour or FIB route takes effect within
 * this time. */
#define SY_NEXT_HOP_JIFFIES 250 /* 250 ms at HZ=1000, 1 s at HZ=250 */

static __always_inline struct sy_counters *counters_of(__u32 hook)
{
	return bpf_map_lookup_elem(&counters, &hook);
}

static __always_inline void count(struct sy_counters *cs, __u32 idx, __u64 n)
{
	if (cs && idx < SY_CNT_MAX)
		cs->c[idx] += n;
}

static __always_inline struct sy_vip_stats *vip_stat(__u32 id)
{
	return bpf_map_lookup_elem(&vip_stats, &id);
}

/* One's-complement sum helpers over raw (network order) memory. Summing 32-bit words and folding
 * equals summing 16-bit words, in either byte order, as long as one order is used throughout. */
static __always_inline __u64 csum_add32(__u64 acc, __u32 old, __u32 new)
{
	return acc + (__u32)~old + new;
}

static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffffULL) + (s >> 32);
	s = (s & 0xffffffffULL) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with diff = sum(~m + m'). */
static __always_inline __u16 csum_apply(__u16 csum, __u64 diff)
{
	return ~csum_fold64((__u64)(__u16)~csum + diff);
}

/* ---- parsing ------------------------------------------------------------------------------- */

enum sy_parse {
	SY_P_OK = 0,
	SY_P_NON_IP,
	SY_P_VLAN,
	SY_P_FRAGMENT,
	SY_P_IPV6_EXT,
	SY_P_MALFORMED,
	SY_P_OTHER_L4, /* IP but neither TCP nor UDP */
};

struct sy_pkt {
	struct sy_flow_key key;
	__u32 l3_off;
	__u32 l4_off;
	__u32 l3_len;   /* IPv4 total length / IPv6 40 + payload length */
	__u32 csum_off; /* offset of the L4 checksum */
	__u8 tcp_flags;
	__u8 ttl;
	__u8 tos;
	__u8 pad;
	__be32 flowinfo;
};

static __always_inline int is_ipv6_ext(__u8 nh)
{
	switch (nh) {
	case 0:   /* hop-by-hop */
	case 43:  /* routing */
	case 44:  /* fragment */
	case 50:  /* ESP */
	case 51:  /* AH */
	case 60:  /* destination options */
	case 135: /* mobility */
	case 139: /* HIP */
	case 140: /* shim6 */
	case 253:
	case 254: /* experimental */
		return 1;
	}
	return 0;
}

/* Parses Ethernet / IPv4|IPv6 / TCP|UDP with an explicit bounds check before every access.
 * Headers must lie in [data, data_end); lengths are checked against wire_len, the whole frame
 * (on tc the payload may sit in non-linear skb fragments beyond data_end). */
static __always_inline int parse(void *data, void *data_end, __u32 wire_len, struct sy_pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return SY_P_MALFORMED;

	__u16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return SY_P_VLAN;

	__u32 l3 = sizeof(struct ethhdr);
	__u8 l4proto;
	void *l4;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) > data_end)
			return SY_P_MALFORMED;
		if (ip->version != 4 || ip->ihl < 5)
			return SY_P_MALFORMED;
		__u32 ihl = ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl || l3 + tot > wire_len)
			return SY_P_MALFORMED;
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or offset: a fragment */
			return SY_P_FRAGMENT;
		l4proto = ip->protocol;
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return SY_P_OTHER_L4;
		p->key.family = SY_FAMILY_V4;
		__builtin_memcpy(p->key.saddr, &ip->saddr, 4);
		__builtin_memcpy(p->key.daddr, &ip->daddr, 4);
		p->l3_len = tot;
		p->ttl = ip->ttl;
		p->tos = ip->tos;
		p->l4_off = l3 + ihl;
		l4 = data + l3 + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) > data_end)
			return SY_P_MALFORMED;
		if (ip6->version != 6)
			return SY_P_MALFORMED;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		if (l3 + sizeof(*ip6) + plen > wire_len)
			return SY_P_MALFORMED;
		l4proto = ip6->nexthdr;
		if (is_ipv6_ext(l4proto))
			return SY_P_IPV6_EXT;
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return SY_P_OTHER_L4;
		p->key.family = SY_FAMILY_V6;
		__builtin_memcpy(p->key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->key.daddr, &ip6->daddr, 16);
		p->l3_len = sizeof(*ip6) + plen;
		p->ttl = ip6->hop_limit;
		p->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
		p->l4_off = l3 + sizeof(*ip6);
		l4 = data + l3 + sizeof(*ip6);
	} else {
		return SY_P_NON_IP;
	}
	p->l3_off = l3;
	p->key.proto = l4proto;

	__u32 l4_len = p->l3_len - (p->l4_off - l3);
	if (l4proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return SY_P_MALFORMED;
		__u32 doff = tcp->doff * 4;
		if (doff < sizeof(*tcp) || doff > l4_len)
			return SY_P_MALFORMED;
		p->key.sport = tcp->source;
		p->key.dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
	} else {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return SY_P_MALFORMED;
		__u32 ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > l4_len)
			return SY_P_MALFORMED;
		p->key.sport = udp->source;
		p->key.dport = udp->dest;
		p->csum_off = p->l4_off + offsetof(struct udphdr, check);
	}
	return SY_P_OK;
}

/* ---- events -------------------------------------------------------------------------------- */

static __always_inline void fill_header(struct sy_event_header *h, __u32 kind, __u32 ifindex,
					 const struct sy_pkt *p, __u16 vip_id, __u32 hook,
					 __u32 pkt_len, __u32 cap_len)
{
	h->kind = kind;
	h->ifindex = ifindex;
	__builtin_memcpy(&h->flow, &p->key, sizeof(h->flow));
	h->vip_id = vip_id;
	h->hook = hook;
	h->tcp_flags = p->key.proto == IPPROTO_TCP ? p->tcp_flags : 0;
	h->pkt_len = pkt_len;
	h->cap_len = cap_len;
	h->pad = 0;
	h->ts_ns = bpf_ktime_get_ns();
}

/* A header-only event about a routed flow (SY_EVENT_FINAL / SY_EVENT_REOPEN). */
static __always_inline void report_route_event(struct sy_counters *cs, const struct sy_pkt *p,
						__u32 kind, __u32 ifindex, __u16 vip_id,
						__u32 hook, __u32 pkt_len)
{
	struct sy_event_header *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		count(cs, SY_CNT_RINGBUF_FULL, 1);
		return;
	}
	fill_header(h, kind, ifindex, p, vip_id, hook, pkt_len, 0);
	bpf_ringbuf_submit(h, 0);
}

/* Copies the frame into a miss event. The copy length is bounded for the verifier. */
static __always_inline void report_miss(struct sy_counters *cs, void *ctx, int is_xdp,
					 const struct sy_pkt *p, __u32 kind,
					 __u32 ifindex, __u16 vip_id, __u32 hook, __u32 pkt_len)
{
	struct sy_miss_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(cs, SY_CNT_RINGBUF_FULL, 1);
		return;
	}
	/* 1 <= cap <= SY_MAX_CAPTURE, clamped in the register the helper receives so the verifier
	 * sees the bound (frames are at least an Ethernet header long, so 1 never copies short). */
	__u64 cap = pkt_len;
	asm volatile("if %0 <= %1 goto +1\n\t"
		     "%0 = %1\n\t"
		     "if %0 > 0 goto +1\n\t"
		     "%0 = 1"
		     : "+r"(cap)
		     : "i"(SY_MAX_CAPTURE));
	long err;
	if (is_xdp)
		err = bpf_xdp_load_bytes(ctx, 0, e->data, cap);
	else
		err = bpf_skb_load_bytes(ctx, 0, e->data, cap);
	if (err)
		cap = 0;
	fill_header(&e->hdr, kind, ifindex, p, vip_id, hook, pkt_len, cap);
	bpf_ringbuf_submit(e, 0);
}

/* ---- firewall ------------------------------------------------------------------------------ */

enum sy_fw_verdict {
	SY_FW_PASS = 0,
	SY_FW_V_DENIED,
	SY_FW_V_NOT_ALLOWED,
	SY_FW_V_RATE_LIMITED,
};

/* A packet that would open a connection: TCP SYN without ACK, or any UDP datagram (a UDP
 * "connection" is a route; this is only asked on a route miss). */
static __always_inline int is_new_connection(const struct sy_pkt *p)
{
	if (p->key.proto == IPPROTO_UDP)
		return 1;
	return (p->tcp_flags & 0x12) == 0x02; /* SYN set, ACK clear */
}

/* Takes one token from the source's bucket (created full on first use). */
static __always_inline int rate_limited(const struct sy_vip *vip, const struct sy_pkt *p)
{
	__u64 rate = vip->rate;
	__u64 cap = (__u64)vip->burst * SY_TOKEN;
	if (rate == 0 || cap == 0)
		return 0;
	struct sy_bucket_key bk = {};
	bk.vip_id = vip->id;
	__builtin_memcpy(bk.addr, p->key.saddr, 16);
	__u64 now = bpf_ktime_get_ns();
	struct sy_bucket *b = bpf_map_lookup_elem(&fw_buckets, &bk);
	if (!b) {
		struct sy_bucket nb = { .tokens = cap - SY_TOKEN, .last_ns = now };
		/* A concurrent creation for the same source wins; either way this one passes. */
		bpf_map_update_elem(&fw_buckets, &bk, &nb, BPF_NOEXIST);
		return 0;
	}
	/* Unlocked read-modify-write: concurrent new connections of one source on several CPUs
	 * may each take the same token (the limit is approximate under such races, never
	 * stricter). Overflow-free: elapsed * rate is only formed when it is <= need <= cap. */
	__u64 tokens = b->tokens;
	if (tokens > cap)
		tokens = cap; /* the burst was lowered */
	__u64 last = b->last_ns;
	__u64 elapsed = now > last ? now - last : 0;
	__u64 need = cap - tokens;
	if (elapsed > need / rate)
		tokens = cap;
	else
		tokens += elapsed * rate;
	b->last_ns = now;
	if (tokens < SY_TOKEN) {
		b->tokens = tokens;
		return 1;
	}
	b->tokens = tokens - SY_TOKEN;
	return 0;
}

/* The VIP's firewall for a new connection: the most specific matching prefix decides (deny
 * drops; allow passes); no match drops only when the VIP has an allow list; then the
 * per-source rate limit. */
static __always_inline int firewall(const struct sy_vip *vip, const struct sy_pkt *p)
{
	__u32 flags = vip->flags;
	if (flags & (SY_VIP_FW_RULES | SY_VIP_FW_ALLOWLIST)) {
		struct sy_fw_key k = {};
		k.prefixlen = 32 + (p->key.family == SY_FAMILY_V4 ? 32 : 128);
		k.set = bpf_htonl(vip->fw_set);
		__builtin_memcpy(k.addr, p->key.saddr, 16);
		struct sy_fw_rule *r = (flags & SY_VIP_FW_RULES) ? bpf_map_lookup_elem(&fw_rules, &k)
								 : 0;
		if (r) {
			if (r->action != SY_FW_ALLOW)
				return SY_FW_V_DENIED;
		} else if (flags & SY_VIP_FW_ALLOWLIST) {
			return SY_FW_V_NOT_ALLOWED;
		}
	}
	if ((flags & SY_VIP_FW_RATE) && rate_limited(vip, p))
		return SY_FW_V_RATE_LIMITED;
	return SY_FW_PASS;
}

/* ---- NAT sources --------------------------------------------------------------------------- */

/* Whether the packet is addressed to one of this forwarder's NAT sources, in its port range. */
static __always_inline int to_nat_source(const struct sy_pkt *p)
{
	struct sy_nat_source_key k = {};
	__builtin_memcpy(k.addr, p->key.daddr, 16);
	k.family = p->key.family;
	struct sy_nat_ports *r = bpf_map_lookup_elem(&nat_sources, &k);
	if (!r)
		return 0;
	__u16 port = bpf_ntohs(p->key.dport);
	return port >= r->first && port <= r->last;
}

/* ---- the core ------------------------------------------------------------------------------ */

/* What the core decided. */
enum sy_verdict {
	SY_V_PASS = 0, /* leave the packet to the stack, untouched */
	SY_V_DROP,
	SY_V_FORWARD, /* rewrite with `r` and send */
};

struct sy_decision {
	struct sy_counters *cs;
	struct sy_pkt pkt;
	struct sy_route *route;
	__u32 is_reply;
	__u32 jiffies; /* low 32 bits of jiffies when the packet was decided (read once) */
	__u16 vip_id;
};

static __always_inline int classify(void *ctx, int is_xdp, void *data, void *data_end,
				    __u32 ifindex, __u32 pkt_len, __u32 hook,
				    struct sy_decision *d)
{
	struct sy_counters *cs = counters_of(hook);
	d->cs = cs;
	count(cs, SY_CNT_RX, 1);
	int rc = parse(data, data_end, pkt_len, &d->pkt);
	switch (rc) {
	case SY_P_OK:
		break;
	case SY_P_NON_IP:
		count(cs, SY_CNT_NON_IP, 1);
		return SY_V_PASS;
	case SY_P_VLAN:
		count(cs, SY_CNT_VLAN, 1);
		return SY_V_PASS;
	case SY_P_FRAGMENT:
		count(cs, SY_CNT_FRAGMENT, 1);
		return SY_V_PASS;
	case SY_P_IPV6_EXT:
		count(cs, SY_CNT_IPV6_EXT, 1);
		return SY_V_PASS;
	case SY_P_OTHER_L4:
		count(cs, SY_CNT_PASS, 1);
		return SY_V_PASS;
	default:
		count(cs, SY_CNT_MALFORMED, 1);
		return SY_V_PASS;
	}

	/* One lookup finds forward and reply entries alike (the fast path). */
	struct sy_route *r = bpf_map_lookup_elem(&routes, &d->pkt.key);
	if (!r) {
		struct sy_vip_key vk = {};
		__builtin_memcpy(vk.addr, d->pkt.key.daddr, 16);
		vk.port = d->pkt.key.dport;
		vk.proto = d->pkt.key.proto;
		vk.family = d->pkt.key.family;
		struct sy_vip *vip = bpf_map_lookup_elem(&vips, &vk);
		if (!vip) {
			if (to_nat_source(&d->pkt)) {
				count(cs, SY_CNT_NAT_MISS, 1);
				report_miss(cs, ctx, is_xdp, &d->pkt, SY_EVENT_REPLY_MISS, ifindex, 0,
					    hook, pkt_len);
				return SY_V_DROP;
			}
			count(cs, SY_CNT_PASS, 1);
			return SY_V_PASS;
		}
		struct sy_vip_stats *vs = vip_stat(vip->id);
		if (vip->flags && is_new_connection(&d->pkt)) {
			switch (firewall(vip, &d->pkt)) {
			case SY_FW_PASS:
				break;
			case SY_FW_V_DENIED:
				count(cs, SY_CNT_FW_DENIED, 1);
				if (vs)
					vs->fw_denied++;
				return SY_V_DROP;
			case SY_FW_V_NOT_ALLOWED:
				count(cs, SY_CNT_FW_NOT_ALLOWED, 1);
				if (vs)
					vs->fw_not_allowed++;
				return SY_V_DROP;
			default:
				count(cs, SY_CNT_FW_RATE_LIMITED, 1);
				if (vs)
					vs->fw_rate_limited++;
				return SY_V_DROP;
			}
		}
		count(cs, SY_CNT_MISS, 1);
		if (vs)
			vs->misses++;
		report_miss(cs, ctx, is_xdp, &d->pkt, SY_EVENT_MISS, ifindex, vip->id, hook, pkt_len);
		return SY_V_DROP;
	}
	d->vip_id = r->vip_id;
	d->is_reply = (r->flags & SY_ROUTE_REPLY) != 0;
	if (r->mode != SY_MODE_NAT && r->mode != SY_MODE_HALF_NAT) {
		count(cs, SY_CNT_UNSUPPORTED, 1);
		return SY_V_DROP;
	}
	if (d->pkt.ttl <= 1) {
		/* The stack answers with ICMP time exceeded. */
		count(cs, SY_CNT_TTL_EXPIRED, 1);
		return SY_V_PASS;
	}
	if (d->pkt.key.proto == IPPROTO_TCP && (d->pkt.tcp_flags & 0x05)) { /* FIN | RST */
		count(cs, SY_CNT_FINAL, 1);
		struct sy_vip_stats *vs = vip_stat(d->vip_id);
		if (vs)
			vs->finals++;
		report_route_event(cs, &d->pkt, SY_EVENT_FINAL, ifindex, d->vip_id, hook, pkt_len);
	} else if (d->pkt.key.proto == IPPROTO_TCP && !d->is_reply &&
		   (d->pkt.tcp_flags & 0x12) == 0x02) { /* SYN without ACK */
		/* The client opens the same 4-tuple again (port reuse, or after an RST) while the
		 * route lingers: the classifier must keep the route for the new connection. */
		count(cs, SY_CNT_REOPEN, 1);
		report_route_event(cs, &d->pkt, SY_EVENT_REOPEN, ifindex, d->vip_id, hook, pkt_len);
	}
	/* bpf_jiffies64 is inlined (a load); bpf_ktime_get_ns reads the clocksource, which is
	 * costly under some hypervisors, so it runs only when the entry is refreshed. */
	__u32 j = (__u32)bpf_jiffies64();
	d->jiffies = j;
	if (j - r->touch_jiffies >= SY_TOUCH_JIFFIES) {
		r->touch_jiffies = j;
		r->last_seen_ns = bpf_ktime_get_ns();
	}
	d->route = r;
	return SY_V_FORWARD;
}

/* The rewritten addresses and ports, and the checksum diffs they cause. */
struct sy_rewrite {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u64 addr_diff; /* pseudo-header part (addresses) */
	__u64 port_diff; /* L4 header part (ports) */
};

static __always_inline void plan_rewrite(const struct sy_decision *d, struct sy_rewrite *w)
{
	const struct sy_route *r = d->route;
	const struct sy_pkt *p = &d->pkt;
	__builtin_memcpy(w->saddr, p->key.saddr, 16);
	__builtin_memcpy(w->daddr, p->key.daddr, 16);
	w->sport = p->key.sport;
	w->dport = p->key.dport;
	if (r->flags & SY_ROUTE_SET_SRC) {
		__builtin_memcpy(w->saddr, r->new_saddr, 16);
		w->sport = r->new_sport;
	}
	if (r->flags & SY_ROUTE_SET_DST) {
		__builtin_memcpy(w->daddr, r->new_daddr, 16);
		w->dport = r->new_dport;
	}
	__u64 diff = 0;
	const __u32 *os = (const __u32 *)p->key.saddr, *od = (const __u32 *)p->key.daddr;
	const __u32 *ns = (const __u32 *)w->saddr, *nd = (const __u32 *)w->daddr;
	diff = csum_add32(diff, os[0], ns[0]);
	diff = csum_add32(diff, od[0], nd[0]);
	if (p->key.family == SY_FAMILY_V6) {
#pragma unroll
		for (int i = 1; i < 4; i++) {
			diff = csum_add32(diff, os[i], ns[i]);
			diff = csum_add32(diff, od[i], nd[i]);
		}
	}
	w->addr_diff = diff;
	__u32 oports = ((__u32)p->key.sport) | ((__u32)p->key.dport << 16);
	__u32 nports = ((__u32)w->sport) | ((__u32)w->dport << 16);
	w->port_diff = csum_add32(0, oports, nports);
}

/* Looks the rewritten destination up in the FIB of the ingress interface's namespace. */
static __always_inline int fib(void *ctx, const struct sy_decision *d, const struct sy_rewrite *w,
			       __u32 ifindex, __u32 tot_len, struct bpf_fib_lookup *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->ifindex = ifindex;
	f->l4_protocol = d->pkt.key.proto;
	f->sport = w->sport;
	f->dport = w->dport;
	f->tot_len = tot_len;
	if (d->pkt.key.family == SY_FAMILY_V4) {
		f->family = AF_INET;
		f->tos = d->pkt.tos;
		__builtin_memcpy(&f->ipv4_src, w->saddr, 4);
		__builtin_memcpy(&f->ipv4_dst, w->daddr, 4);
	} else {
		f->family = AF_INET6;
		f->flowinfo = d->pkt.flowinfo;
		__builtin_memcpy(f->ipv6_src, w->saddr, 16);
		__builtin_memcpy(f->ipv6_dst, w->daddr, 16);
	}
	return bpf_fib_lookup(ctx, f, sizeof(*f), 0);
}

/* The next hop of a decided packet: the route's cached one while it is fresh (and, with an MTU
 * check (XDP: tot_len > 0), the packet is no longer than one the FIB accepted on that hop),
 * else bpf_fib_lookup, whose successful result is cached in the route. Returns a
 * BPF_FIB_LKUP_RET_* code; on SUCCESS *nh holds the egress interface and MACs. On NO_NEIGH the
 * caller finds the neighbour's address in *f (never cached). */
static __always_inline int next_hop(void *ctx, const struct sy_decision *d,
				    const struct sy_rewrite *w, __u32 ifindex, __u32 tot_len,
				    struct bpf_fib_lookup *f, struct sy_next_hop *nh)
{
	struct sy_route *r = d->route;
	__u32 j = d->jiffies;
	int fresh = r->nh.ifindex && j - r->nh.jiffies < SY_NEXT_HOP_JIFFIES;
	if (fresh && tot_len <= r->nh.max_len) {
		__builtin_memcpy(nh, &r->nh, sizeof(*nh));
		count(d->cs, SY_CNT_NEXT_HOP_CACHED, 1);
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	int rc = fib(ctx, d, w, ifindex, tot_len, f);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	nh->ifindex = f->ifindex;
	/* Only a fresh entry's length bound is kept (same hop, a longer packet fitted too). */
	nh->jiffies = fresh ? r->nh.jiffies : j;
	__builtin_memcpy(nh->dmac, f->dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, f->smac, ETH_ALEN);
	nh->max_len = fresh && r->nh.ifindex == f->ifindex && r->nh.max_len > tot_len
			      ? r->nh.max_len
			      : tot_len;
	nh->pad = 0;
	__builtin_memcpy(&r->nh, nh, sizeof(*nh));
	return rc;
}

/* Writes addresses, ports and TTL into the packet (direct access; bounds re-checked) and, when
 * `fix_csums` is set, folds the checksum updates by hand. Returns the IPv4 header checksum diff
 * of the TTL change through *ttl_diff (for the tc path, which applies it with a helper). */
static __always_inline int write_rewrite(void *data, void *data_end, const struct sy_pkt *p,
					 const struct sy_rewrite *w, int fix_csums,
					 __u64 *ttl_diff)
{
	if (p->key.family == SY_FAMILY_V4) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end)
			return -1;
		__u16 old_word = *(__u16 *)&ip->ttl; /* ttl and protocol */
		ip->ttl--;
		__u16 new_word = *(__u16 *)&ip->ttl;
		__u64 td = (__u16)~old_word + (__u64)new_word;
		*ttl_diff = td;
		__builtin_memcpy(&ip->saddr, w->saddr, 4);
		__builtin_memcpy(&ip->daddr, w->daddr, 4);
		if (fix_csums)
			ip->check = csum_apply(ip->check, w->addr_diff + td);
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__u16 old_word = *(__u16 *)((__u8 *)ip6 + 6); /* nexthdr and hop limit */
		ip6->hop_limit--;
		__u16 new_word = *(__u16 *)((__u8 *)ip6 + 6);
		*ttl_diff = (__u16)~old_word + (__u64)new_word;
		__builtin_memcpy(&ip6->saddr, w->saddr, 16);
		__builtin_memcpy(&ip6->daddr, w->daddr, 16);
	}

	/* Ports: the first 4 bytes of TCP and UDP. p->l4_off is bounded by parse (<= 14 + 60). */
	__u32 l4_off = p->l4_off;
	if (l4_off > sizeof(struct ethhdr) + 60)
		return -1;
	__u8 *l4 = data + l4_off;
	if ((void *)(l4 + 8) > data_end)
		return -1;
	__builtin_memcpy(l4, &w->sport, 2);
	__builtin_memcpy(l4 + 2, &w->dport, 2);
	if (fix_csums) {
		__u16 *csum;
		if (p->key.proto == IPPROTO_TCP) {
			if ((void *)(l4 + 18) > data_end)
				return -1;
			csum = (__u16 *)(l4 + 16);
			*csum = csum_apply(*csum, w->addr_diff + w->port_diff);
		} else {
			csum = (__u16 *)(l4 + 6);
			/* A zero UDP checksum means "none" (IPv4): it stays zero. */
			if (*csum != 0) {
				__u16 c = csum_apply(*csum, w->addr_diff + w->port_diff);
				*csum = c ? c : 0xffff;
			}
		}
	}
	return 0;
}

static __always_inline void account_forward(const struct sy_decision *d, __u32 len)
{
	struct sy_counters *cs = d->cs;
	struct sy_vip_stats *vs = vip_stat(d->vip_id);
	__u32 slot = d->route->host_slot;
	struct sy_host_stats *hs = slot ? bpf_map_lookup_elem(&host_stats, &slot) : 0;
	if (d->is_reply) {
		count(cs, SY_CNT_REPLY_PACKETS, 1);
		count(cs, SY_CNT_REPLY_BYTES, len);
		if (vs) {
			vs->reply_packets++;
			vs->reply_bytes += len;
		}
		if (hs) {
			hs->reply_packets++;
			hs->reply_bytes += len;
		}
	} else {
		count(cs, SY_CNT_HIT_PACKETS, 1);
		count(cs, SY_CNT_HIT_BYTES, len);
		if (vs) {
			vs->packets++;
			vs->bytes += len;
		}
		if (hs) {
			hs->packets++;
			hs->bytes += len;
		}
	}
}

/* ---- XDP ----------------------------------------------------------------------------------- */

/* Rewrites a decided packet (d->route set) and sends it: XDP_TX or bpf_redirect. *why gets the
 * SY_SLOW_* outcome. An unresolved neighbour returns `no_neigh` untouched (sy_xdp: XDP_PASS,
 * for a tc program behind it; the slow path: XDP_DROP, as a pass would come back as a miss). */
static __always_inline int xdp_send(struct xdp_md *ctx, struct sy_decision *d, __u32 ifindex,
				    __u32 pkt_len, int no_neigh, __u32 *why)
{
	struct sy_counters *cs = d->cs;
	struct sy_rewrite w;
	plan_rewrite(d, &w);
	struct bpf_fib_lookup f;
	struct sy_next_hop nh;
	int rc = next_hop(ctx, d, &w, ifindex, d->pkt.l3_len, &f, &nh);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* Untouched to the stack: a tc program on the same interface resolves the
		 * neighbour with bpf_redirect_neigh; later packets take this path. */
		count(cs, SY_CNT_FIB_NO_NEIGH, 1);
		*why = SY_SLOW_NO_NEIGH;
		return no_neigh;
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		count(cs, SY_CNT_FIB_FRAG_NEEDED, 1);
		*why = SY_SLOW_FIB_FAIL;
		return XDP_DROP;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(cs, SY_CNT_FIB_FAIL, 1);
		*why = SY_SLOW_FIB_FAIL;
		return XDP_DROP;
	}

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 ttl_diff;
	*why = SY_SLOW_ERROR;
	if (write_rewrite(data, data_end, &d->pkt, &w, 1, &ttl_diff)) {
		count(cs, SY_CNT_DROP_OTHER, 1);
		return XDP_DROP;
	}
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, nh.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh.smac, ETH_ALEN);
	account_forward(d, pkt_len);
	*why = SY_SLOW_SENT;
	if (nh.ifindex == ifindex) {
		count(cs, SY_CNT_TX, 1);
		return XDP_TX;
	}
	count(cs, SY_CNT_REDIRECT, 1);
	return bpf_redirect(nh.ifindex, 0);
}

SEC("xdp")
int sy_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 pkt_len = data_end - data;
	struct sy_decision d = {};

	int v = classify(ctx, 1, data, data_end, ifindex, pkt_len, SY_HOOK_XDP, &d);
	if (v == SY_V_PASS)
		return XDP_PASS;
	if (v != SY_V_FORWARD || !d.route)
		return XDP_DROP;
	__u32 why;
	return xdp_send(ctx, &d, ifindex, pkt_len, XDP_PASS, &why);
}

/* ---- the slow path ------------------------------------------------------------------------- */

/* Both keys sit at 8-byte aligned offsets (the map value's fields; sy_decision.pkt.key), so
 * they are compared as five 64-bit words. */
static __always_inline int same_key(const struct sy_flow_key *a, const struct sy_flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/* Sends one frame along the route in `slow_route` (the direction whose key the frame has),
 * with the same rewrite, FIB lookup and transmit as sy_xdp, without touching `routes`. Run by
 * the agent through BPF_PROG_TEST_RUN in live-frames mode; never attached. Everything that is
 * not sent is dropped (a pass would reach the attached programs as a miss again). No FINAL
 * events: the classifier handles every packet of such a flow itself. */
SEC("xdp")
int sy_xdp_slow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 pkt_len = data_end - data;
	__u32 zero = 0;
	struct sy_slow_route *s = bpf_map_lookup_elem(&slow_route, &zero);
	if (!s)
		return XDP_DROP;
	struct sy_decision d = {};
	struct sy_counters *cs = counters_of(SY_HOOK_SLOW);
	d.cs = cs;
	count(cs, SY_CNT_RX, 1);
	__u32 why = SY_SLOW_UNPARSED;
	int act = XDP_DROP;
	if (parse(data, data_end, pkt_len, &d.pkt) != SY_P_OK)
		goto out;
	if (same_key(&d.pkt.key, &s->fwd_key)) {
		d.route = &s->fwd;
	} else if (same_key(&d.pkt.key, &s->rep_key)) {
		d.route = &s->rep;
	} else {
		why = SY_SLOW_WRONG_FLOW;
		goto out;
	}
	d.vip_id = d.route->vip_id;
	d.is_reply = (d.route->flags & SY_ROUTE_REPLY) != 0;
	d.jiffies = (__u32)bpf_jiffies64();
	if (d.route->mode != SY_MODE_NAT && d.route->mode != SY_MODE_HALF_NAT) {
		count(cs, SY_CNT_UNSUPPORTED, 1);
		why = SY_SLOW_ERROR;
		goto out;
	}
	if (d.pkt.ttl <= 1) {
		count(cs, SY_CNT_TTL_EXPIRED, 1);
		why = SY_SLOW_TTL;
		goto out;
	}
	act = xdp_send(ctx, &d, ifindex, pkt_len, XDP_DROP, &why);
out:
	count(cs, why == SY_SLOW_SENT ? SY_CNT_SLOW_SENT : SY_CNT_SLOW_REFUSED, 1);
	s->result = why;
	return act;
}

/* ---- tc ------------------------------------------------------------------------------------ */

/* Longest header chain the program reads: Ethernet + IPv4 with options + TCP with options. */
#define SY_TC_PULL (14 + 60 + 60)

SEC("classifier")
int sy_tc(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex; /* on ingress: the receiving interface */
	__u32 pkt_len = skb->len;
	/* Make the headers linear (locally generated or GRO skbs keep payload in fragments). */
	__u32 want = pkt_len < SY_TC_PULL ? pkt_len : SY_TC_PULL;
	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct sy_decision d = {};

	int v = classify(skb, 0, data, data_end, ifindex, pkt_len, SY_HOOK_TC, &d);
	struct sy_counters *cs = d.cs;
	if (v == SY_V_PASS)
		return TC_ACT_OK;
	if (v != SY_V_FORWARD || !d.route)
		return TC_ACT_SHOT;

	struct sy_rewrite w;
	plan_rewrite(&d, &w);
	struct bpf_fib_lookup f;
	struct sy_next_hop nh;
	/* tot_len 0: the kernel checks the skb itself against the MTU, which is GSO-aware. */
	int rc = next_hop(skb, &d, &w, ifindex, 0, &f, &nh);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		count(cs, SY_CNT_FIB_FRAG_NEEDED, 1);
		return TC_ACT_SHOT;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(cs, SY_CNT_FIB_FAIL, 1);
		return TC_ACT_SHOT;
	}

	/* Direct writes first (pointers are valid), checksum helpers last (they invalidate them). */
	__u64 ttl_diff;
	if (write_rewrite(data, data_end, &d.pkt, &w, 0, &ttl_diff)) {
		count(cs, SY_CNT_DROP_OTHER, 1);
		return TC_ACT_SHOT;
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return TC_ACT_SHOT;
		__builtin_memcpy(eth->h_dest, nh.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, nh.smac, ETH_ALEN);
	}

	__u32 addr_diff = csum_fold64(w.addr_diff);
	__u32 port_diff = csum_fold64(w.port_diff);
	__u32 td = csum_fold64(ttl_diff);
	long err = 0;
	__u64 l4flags = BPF_F_PSEUDO_HDR;
	if (d.pkt.key.proto == IPPROTO_UDP)
		l4flags |= BPF_F_MARK_MANGLED_0;
	if (d.pkt.key.family == SY_FAMILY_V4) {
		__u32 l3csum = d.pkt.l3_off + offsetof(struct iphdr, check);
		err |= bpf_l3_csum_replace(skb, l3csum, 0, addr_diff + td, 0);
	} else {
		l4flags |= BPF_F_IPV6;
		/* The hop limit is covered by no checksum, only by a CHECKSUM_COMPLETE skb->csum. */
		bpf_csum_update(skb, td);
	}
	err |= bpf_l4_csum_replace(skb, d.pkt.csum_off, 0, addr_diff, l4flags);
	err |= bpf_l4_csum_replace(skb, d.pkt.csum_off, 0, port_diff,
				   l4flags & ~(__u64)(BPF_F_PSEUDO_HDR | BPF_F_IPV6));
	if (err) {
		count(cs, SY_CNT_DROP_OTHER, 1);
		return TC_ACT_SHOT;
	}
	account_forward(&d, pkt_len);
	count(cs, SY_CNT_REDIRECT, 1);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(cs, SY_CNT_FIB_NO_NEIGH, 1);
		struct bpf_redir_neigh neigh = {};
		if (d.pkt.key.family == SY_FAMILY_V4) {
			neigh.nh_family = AF_INET;
			neigh.ipv4_nh = f.ipv4_dst;
		} else {
			neigh.nh_family = AF_INET6;
			__builtin_memcpy(neigh.ipv6_nh, f.ipv6_dst, 16);
		}
		return bpf_redirect_neigh(f.ifindex, &neigh, sizeof(neigh), 0);
	}
	return bpf_redirect(nh.ifindex, 0);
}
