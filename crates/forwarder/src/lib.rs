//! The forwarder's data plane (patent FIG. 4, FIGS. 26–30): a BPF program in C
//! (`bpf/forwarder.bpf.c`, an XDP entry point and a tc ingress entry point sharing one core)
//! that owns the VIPs and does one route lookup per routed packet (both directions share one
//! map; the VIP table is consulted only on a miss), and its Rust loader.
//!
//! - hit → rewrite for the route's delivery mode (full NAT or half NAT), checksums updated
//!   incrementally, TTL decremented, L2 addresses from `bpf_fib_lookup`, sent on;
//! - reply from a host → reverse translation back to VIP → client;
//! - miss → ring-buffer event with the frame (the "default route" to the classifier), dropped;
//!   after plumbing, [`Dataplane::reinject`] sends the frame through the program again;
//! - table full → the classifier's slow path: [`Dataplane::deliver_with_route`] sends one frame
//!   along an explicit route with the same rewrite code (`sy_xdp_slow`), without installing it;
//!   replies to a configured NAT source ([`Dataplane::set_nat_source`]) without a route are
//!   reported ([`Event::ReplyMiss`]) so the classifier can send them the same way;
//! - FIN/RST of routed flows → ring-buffer event;
//! - per-VIP firewall for new connections: allow/deny source prefixes (most specific wins) and
//!   a per-source rate limit ([`Dataplane::set_firewall`], [`FirewallRules`]);
//! - everything else (non-VIP traffic, fragments, IPv6 extension headers, VLAN tags, malformed
//!   frames) passes untouched and is counted — never mis-forwarded.
//!
//! This crate owns the BPF program, its map layouts and their typed access. It does not decide
//! anything: the classifier picks hosts and NAT ports, the forwarder agent runs plumbing and idle
//! expiry on top of [`Dataplane`]. See `README.md` for the decisions and the map layouts.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN) and Linux ≥ 6.0 for loading; tested on 6.18.

mod bench;
mod counters;
mod dataplane;
mod error;
mod events;
mod firewall;
mod flow;
pub mod layout;
pub mod packet;
mod program;

pub use bench::Baseline;
pub use counters::{Counters, Hook, HostStats, VipStats};
pub use dataplane::{
    AttachMode, Attachment, Dataplane, MAX_HOST_SLOTS, MAX_NAT_SOURCES, RouteInfo, RunResult,
    Settings, SlowOutcome, monotonic_now_ns, tc_action, xdp_action,
};
pub use error::Error;
pub use events::{Event, EventReader, Final, Miss, WireFlow, decode};
pub use firewall::{FirewallRules, MAX_RATE, Prefix};
pub use flow::{DeliveryMode, Flow, Protocol, Route, Vip};
