//! [`Dataplane`]: loads the forwarder's BPF object (both programs), owns its maps, attaches the
//! programs to interfaces and detaches them on drop, and gives typed access to VIPs, routes,
//! counters and events. Also the `BPF_PROG_TEST_RUN` entry points used by tests, benchmarks, the
//! reinjection of a classified first packet ([`Dataplane::reinject`]) and the slow path that
//! sends a frame along a route the table could not hold ([`Dataplane::deliver_with_route`]).
//!
//! Everything here is a thin shell over maps and syscalls; decisions (which host, which NAT
//! port, when a flow is idle) belong to the classifier and the agent.
//!
//! Interface names and ifindexes resolve in the network namespace of the calling thread.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf};
use aya::programs::tc::{self, SchedClassifier, SchedClassifierLinkId, TcAttachType};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use nix::time::{ClockId, clock_gettime};

use crate::counters::{COUNTER_COUNT, Counters, Hook, HostStats, VipStats};
use crate::error::{Error, is_map_full, is_not_found};
use crate::events::EventReader;
use crate::firewall::{FirewallRules, compile};
use crate::flow::{Flow, Route, Vip, addr_bytes, reply_key_of, route_entries, route_from_value};
use crate::layout::{
    Bucket, BucketKey, FlowKey, FwKeyData, FwRule, HostStatsValue, NatPorts, NatSourceKey,
    ROUTE_REPLY, RouteValue, SLOW_FIB_FAIL, SLOW_NO_NEIGH, SLOW_SENT, SLOW_TTL, SLOW_UNPARSED,
    SLOW_WRONG_FLOW, SlowRouteValue, VipKey, VipStatsValue, VipValue,
};
use crate::program;

const XDP_PROG: &str = "sy_xdp";
const TC_PROG: &str = "sy_tc";
const SLOW_PROG: &str = "sy_xdp_slow";
/// Capacity of the `nat_sources` map.
pub const MAX_NAT_SOURCES: usize = 64;

/// Map sizes, chosen at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Capacity of the routing table in routes (default 1,000,000). Each route takes two
    /// entries of the `routes` map (forward and reply), which is sized 2 × this. Entries are
    /// allocated on demand, so an empty table costs little memory.
    pub max_routes: u32,
    /// Number of VIPs (default 1,024).
    pub max_vips: u32,
    /// Size of the event ring buffer in bytes: a power of two, at least one page (default
    /// 8 MiB, about 5,000 miss events of a full frame).
    pub event_ring_bytes: u32,
    /// Firewall prefixes over all VIPs (default 65,536). While [`Dataplane::set_firewall`]
    /// replaces a VIP's rules, its old and new prefixes are both installed for a moment.
    pub max_firewall_rules: u32,
    /// Token buckets of the per-source rate limit (default 65,536; an LRU: when full, the least
    /// recently used source's bucket is reset, which only forgets that source's history).
    pub max_rate_buckets: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_routes: 1_000_000,
            max_vips: 1024,
            event_ring_bytes: 8 << 20,
            max_firewall_rules: 65_536,
            max_rate_buckets: 65_536,
        }
    }
}

/// Where to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// XDP: native mode, or generic with a logged warning when the driver has none. Fastest per
    /// packet; on veth it costs the peer GRO/TSO. Frames whose neighbour is not resolved yet are
    /// passed untouched (pair with [`AttachMode::Tc`] on the same interface to complete them).
    Xdp,
    /// tc ingress (tcx on kernels ≥ 6.6, else clsact): sees GRO/GSO skbs, resolves neighbours
    /// itself (`bpf_redirect_neigh`) and keeps CHECKSUM_PARTIAL packets correct.
    Tc,
    /// Both: XDP as the fast path, tc behind it for what XDP passes (unresolved neighbours).
    XdpAndTc,
}

/// One attachment made by [`Dataplane::attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The interface.
    pub ifname: String,
    /// Which program.
    pub hook: Hook,
    /// For XDP: true if it fell back to generic (skb) mode.
    pub generic: bool,
}

/// A route as installed, with its last activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The flow.
    pub flow: Flow,
    /// Its route.
    pub route: Route,
    /// CLOCK_MONOTONIC ns of the latest packet seen in either direction (refreshed at most
    /// every 100 ms per direction), or the install time if none yet.
    pub last_seen_ns: u64,
}

/// What a `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return value (`XDP_*` or `TC_ACT_*`).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
    /// Average time per run as measured by the kernel.
    pub duration: Duration,
}

/// What the slow path ([`Dataplane::deliver_with_route`]) did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowOutcome {
    /// Rewritten along the route and transmitted.
    Sent,
    /// The frame is of neither direction of the flow: dropped (never sent elsewhere).
    WrongFlow,
    /// Not a TCP/UDP packet the program understands (fragment, extension headers, malformed):
    /// dropped.
    Unparsed,
    /// TTL / hop limit ≤ 1: dropped.
    TtlExpired,
    /// The next hop's neighbour is not resolved (nothing resolves it on this path): dropped.
    NoNeighbour,
    /// No route to the destination, or larger than the egress MTU: dropped.
    FibFailed,
    /// Unsupported mode or a failed rewrite: dropped.
    Error,
}

impl SlowOutcome {
    fn from_raw(v: u32) -> SlowOutcome {
        match v {
            SLOW_SENT => SlowOutcome::Sent,
            SLOW_WRONG_FLOW => SlowOutcome::WrongFlow,
            SLOW_UNPARSED => SlowOutcome::Unparsed,
            SLOW_TTL => SlowOutcome::TtlExpired,
            SLOW_NO_NEIGH => SlowOutcome::NoNeighbour,
            SLOW_FIB_FAIL => SlowOutcome::FibFailed,
            _ => SlowOutcome::Error,
        }
    }
}

/// XDP actions.
pub mod xdp_action {
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

/// tc actions.
pub mod tc_action {
    /// `TC_ACT_OK`.
    pub const OK: u32 = 0;
    /// `TC_ACT_SHOT`.
    pub const SHOT: u32 = 2;
    /// `TC_ACT_REDIRECT`.
    pub const REDIRECT: u32 = 7;
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `last_seen_ns` (`bpf_ktime_get_ns`).
pub fn monotonic_now_ns() -> Result<u64, Error> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(|e| Error::Io {
        what: "read CLOCK_MONOTONIC",
        source: e.into(),
    })?;
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Host endpoints counted in `host_stats` (its size in `forwarder.bpf.c` less slot 0).
pub const MAX_HOST_SLOTS: u16 = 4095;

/// The loaded data plane. Dropping it detaches every attachment and frees the maps.
pub struct Dataplane {
    bpf: Ebpf,
    settings: Settings,
    vips: HashMap<MapData, VipKey, VipValue>,
    /// Forward and reply entries (`ROUTE_REPLY`) in one map.
    routes: HashMap<MapData, FlowKey, RouteValue>,
    fw_rules: LpmTrie<MapData, FwKeyData, FwRule>,
    fw_buckets: HashMap<MapData, BucketKey, Bucket>,
    counters: PerCpuArray<MapData, [u64; COUNTER_COUNT as usize]>,
    vip_stats: PerCpuArray<MapData, VipStatsValue>,
    host_stats: PerCpuArray<MapData, HostStatsValue>,
    /// Host endpoint -> its slot in `host_stats` (never freed: the counters are cumulative).
    host_slots: BTreeMap<SocketAddr, u16>,
    nat_sources: HashMap<MapData, NatSourceKey, NatPorts>,
    slow_route: Array<MapData, SlowRouteValue>,
    events: Option<RingBuf<MapData>>,
    /// VIP id -> VIP, for slot allocation.
    vip_slots: Vec<Option<Vip>>,
    /// VIP id -> its installed firewall.
    firewalls: Vec<Option<InstalledFirewall>>,
    xdp_links: Vec<(XdpLinkId, Attachment)>,
    tc_links: Vec<(SchedClassifierLinkId, Attachment)>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("settings", &self.settings)
            .field("attachments", &self.attachments())
            .finish_non_exhaustive()
    }
}

/// A VIP's firewall as installed: the rules, the generation of its rule-set id and the trie
/// entries to delete when they are replaced.
#[derive(Clone, Debug)]
struct InstalledFirewall {
    rules: FirewallRules,
    generation: u32,
    keys: Vec<(u32, FwKeyData)>,
}

/// The rule-set id of VIP `id`'s prefixes in generation `generation` (0 or 1).
fn rule_set(id: u16, generation: u32) -> u32 {
    u32::from(id) * 2 + (generation & 1)
}

fn take<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = bpf.take_map(name).ok_or(Error::Missing(name))?;
    T::try_from(map).map_err(|e| Error::map(name, e))
}

/// Verifies and loads program `name` of type `P` (nothing is attached).
fn load_program<P>(
    bpf: &mut Ebpf,
    name: &'static str,
    what: &str,
    load: fn(&mut P) -> Result<(), aya::programs::ProgramError>,
) -> Result<(), Error>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program: &mut P = bpf
        .program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|e| Error::program(format!("{what} type"), e))?;
    load(program).map_err(|e| Error::program(format!("load the {what}"), e))
}

impl Dataplane {
    /// Loads the BPF object with `settings` and loads (verifies) both programs. Nothing is
    /// attached yet. Needs CAP_BPF and CAP_NET_ADMIN (root).
    pub fn load(settings: Settings) -> Result<Dataplane, Error> {
        let mut bpf = EbpfLoader::new()
            .map_max_entries("routes", settings.max_routes.saturating_mul(2))
            .map_max_entries("fw_rules", settings.max_firewall_rules)
            .map_max_entries("fw_buckets", settings.max_rate_buckets)
            .map_max_entries("vips", settings.max_vips)
            .map_max_entries("vip_stats", settings.max_vips)
            .map_max_entries("events", settings.event_ring_bytes)
            .load(program::FORWARDER)
            .map_err(|e| Error::Load(Box::new(e)))?;
        load_program::<Xdp>(&mut bpf, XDP_PROG, "XDP program", Xdp::load)?;
        load_program::<SchedClassifier>(&mut bpf, TC_PROG, "tc program", SchedClassifier::load)?;
        load_program::<Xdp>(&mut bpf, SLOW_PROG, "slow-path program", Xdp::load)?;
        let vips = take(&mut bpf, "vips")?;
        let routes = take(&mut bpf, "routes")?;
        let fw_rules = take(&mut bpf, "fw_rules")?;
        let fw_buckets = take(&mut bpf, "fw_buckets")?;
        let counters = take(&mut bpf, "counters")?;
        let vip_stats = take(&mut bpf, "vip_stats")?;
        let host_stats = take(&mut bpf, "host_stats")?;
        let nat_sources = take(&mut bpf, "nat_sources")?;
        let slow_route = take(&mut bpf, "slow_route")?;
        let events = take(&mut bpf, "events")?;
        let slots = usize::try_from(settings.max_vips).unwrap_or(0);
        Ok(Dataplane {
            bpf,
            settings,
            vips,
            routes,
            fw_rules,
            fw_buckets,
            counters,
            vip_stats,
            host_stats,
            host_slots: BTreeMap::new(),
            nat_sources,
            slow_route,
            events: Some(events),
            vip_slots: vec![None; slots],
            firewalls: vec![None; slots],
            xdp_links: Vec::new(),
            tc_links: Vec::new(),
        })
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    fn xdp(&self) -> Result<&Xdp, Error> {
        self.bpf
            .program(XDP_PROG)
            .ok_or(Error::Missing(XDP_PROG))?
            .try_into()
            .map_err(|e| Error::program("XDP program type", e))
    }

    fn slow(&self) -> Result<&Xdp, Error> {
        self.bpf
            .program(SLOW_PROG)
            .ok_or(Error::Missing(SLOW_PROG))?
            .try_into()
            .map_err(|e| Error::program("slow-path program type", e))
    }

    fn tc(&self) -> Result<&SchedClassifier, Error> {
        self.bpf
            .program(TC_PROG)
            .ok_or(Error::Missing(TC_PROG))?
            .try_into()
            .map_err(|e| Error::program("tc program type", e))
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp, Error> {
        self.bpf
            .program_mut(XDP_PROG)
            .ok_or(Error::Missing(XDP_PROG))?
            .try_into()
            .map_err(|e| Error::program("XDP program type", e))
    }

    fn tc_mut(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.bpf
            .program_mut(TC_PROG)
            .ok_or(Error::Missing(TC_PROG))?
            .try_into()
            .map_err(|e| Error::program("tc program type", e))
    }

    // ---- attaching ---------------------------------------------------------------------------

    /// Attaches to interface `ifname` (in the calling thread's namespace).
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<Vec<Attachment>, Error> {
        let mut made = Vec::new();
        if matches!(mode, AttachMode::Tc | AttachMode::XdpAndTc) {
            made.push(self.attach_tc(ifname)?);
        }
        if matches!(mode, AttachMode::Xdp | AttachMode::XdpAndTc) {
            made.push(self.attach_xdp(ifname)?);
        }
        Ok(made)
    }

    fn attach_xdp(&mut self, ifname: &str) -> Result<Attachment, Error> {
        let prog = self.xdp_mut()?;
        let (id, generic) = match prog.attach(ifname, XdpMode::Driver) {
            Ok(id) => (id, false),
            Err(native) => {
                tracing::warn!(
                    ifname,
                    error = %native,
                    "native XDP unavailable; falling back to generic (skb) XDP, which is slower"
                );
                let id = prog
                    .attach(ifname, XdpMode::Skb)
                    .map_err(|e| Error::program(format!("attach XDP to {ifname}"), e))?;
                (id, true)
            }
        };
        let a = Attachment {
            ifname: ifname.to_owned(),
            hook: Hook::Xdp,
            generic,
        };
        tracing::info!(ifname, generic, "forwarder XDP program attached");
        self.xdp_links.push((id, a.clone()));
        Ok(a)
    }

    fn attach_tc(&mut self, ifname: &str) -> Result<Attachment, Error> {
        let prog = self.tc_mut()?;
        let id = match prog.attach(ifname, TcAttachType::Ingress) {
            Ok(id) => id,
            Err(first) => {
                // Kernels before tcx (6.6) need the clsact qdisc first.
                tracing::debug!(ifname, error = %first, "tc attach failed; adding clsact and retrying");
                if let Err(e) = tc::qdisc_add_clsact(ifname) {
                    tracing::debug!(ifname, error = %e, "adding clsact");
                }
                prog.attach_with_options(
                    ifname,
                    TcAttachType::Ingress,
                    tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
                )
                .map_err(|e| Error::program(format!("attach tc ingress to {ifname}"), e))?
            }
        };
        let a = Attachment {
            ifname: ifname.to_owned(),
            hook: Hook::Tc,
            generic: false,
        };
        tracing::info!(ifname, "forwarder tc program attached");
        self.tc_links.push((id, a.clone()));
        Ok(a)
    }

    /// Every current attachment.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.xdp_links
            .iter()
            .map(|(_, a)| a.clone())
            .chain(self.tc_links.iter().map(|(_, a)| a.clone()))
            .collect()
    }

    /// Detaches everything (also done on drop).
    pub fn detach_all(&mut self) {
        for (id, a) in std::mem::take(&mut self.xdp_links) {
            if let Ok(p) = self.xdp_mut()
                && let Err(e) = p.detach(id)
            {
                tracing::warn!(ifname = %a.ifname, error = %e, "detach XDP");
            }
        }
        for (id, a) in std::mem::take(&mut self.tc_links) {
            if let Ok(p) = self.tc_mut()
                && let Err(e) = p.detach(id)
            {
                tracing::warn!(ifname = %a.ifname, error = %e, "detach tc");
            }
        }
    }

    // ---- VIPs --------------------------------------------------------------------------------

    /// Starts handling `vip`; returns its id (index of its counters). Idempotent.
    pub fn add_vip(&mut self, vip: Vip) -> Result<u16, Error> {
        if let Some(id) = self.vip_id(&vip) {
            return Ok(id);
        }
        let slot = self
            .vip_slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::TooManyVips {
                max_vips: self.settings.max_vips,
            })?;
        let id = u16::try_from(slot).map_err(|_| Error::TooManyVips {
            max_vips: self.settings.max_vips,
        })?;
        // A reused slot starts from zero.
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| Error::Io {
            what: "count possible CPUs",
            source,
        })?;
        let zero = PerCpuValues::try_from(vec![VipStatsValue::default(); cpus]).map_err(|e| {
            Error::Io {
                what: "build per-CPU zeroes",
                source: e,
            }
        })?;
        self.vip_stats
            .set(u32::from(id), zero, 0)
            .map_err(|e| Error::map("reset VIP counters", e))?;
        let value = VipValue {
            id: u32::from(id),
            ..VipValue::default()
        };
        self.vips
            .insert(vip.key(), value, 0)
            .map_err(|e| Error::map("insert VIP", e))?;
        self.vip_slots[slot] = Some(vip);
        Ok(id)
    }

    /// Stops handling `vip`: its new connections are no longer reported (they pass to the
    /// stack untouched); its installed routes keep forwarding until deleted, so established
    /// flows can drain. Its firewall rules and rate-limit buckets are removed. Returns whether
    /// it was configured.
    pub fn remove_vip(&mut self, vip: Vip) -> Result<bool, Error> {
        let Some(id) = self.vip_id(&vip) else {
            return Ok(false);
        };
        match self.vips.remove(&vip.key()) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::map("remove VIP", e)),
        }
        self.vip_slots[usize::from(id)] = None;
        if let Some(old) = self.firewalls[usize::from(id)].take() {
            self.delete_fw_keys(&old.keys)?;
            self.purge_buckets(id)?;
        }
        Ok(true)
    }

    /// The id of a configured VIP.
    pub fn vip_id(&self, vip: &Vip) -> Option<u16> {
        self.vip_slots
            .iter()
            .position(|s| s.as_ref() == Some(vip))
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Configured VIPs with their ids.
    pub fn vips(&self) -> Vec<(u16, Vip)> {
        self.vip_slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((u16::try_from(i).ok()?, (*s)?)))
            .collect()
    }

    // ---- firewall ----------------------------------------------------------------------------

    /// Installs `rules` as the firewall of `vip`, replacing its previous rules. Enforced only
    /// for new connections (route misses that are a TCP SYN without ACK or a UDP datagram).
    ///
    /// The replacement is atomic for packets: the new prefixes go in under a fresh rule-set id,
    /// then one update of the VIP's map value switches prefixes, allow-list flag and rate
    /// together, then the old prefixes are deleted. The only window: a packet that read the
    /// old VIP value just before the switch and looks the trie up after the old prefixes are
    /// gone is judged as "no prefix matches" under the old flags (a few packets at most, within
    /// microseconds of the call). Rate buckets are kept; a lower burst caps them.
    ///
    /// On error ([`Error::FirewallFull`], [`Error::InvalidFirewall`], …) the VIP keeps its
    /// previous rules.
    pub fn set_firewall(&mut self, vip: &Vip, rules: &FirewallRules) -> Result<(), Error> {
        let id = self
            .vip_id(vip)
            .ok_or_else(|| Error::UnknownVip(vip.to_string()))?;
        let slot = usize::from(id);
        let generation = self.firewalls[slot]
            .as_ref()
            .map_or(0, |f| f.generation ^ 1);
        let set = rule_set(id, generation);
        let compiled = compile(rules, vip.addr.is_ipv4(), set)?;
        let mut keys = Vec::with_capacity(compiled.entries.len());
        for (len, data, rule) in &compiled.entries {
            if let Err(e) = self.fw_rules.insert(&LpmKey::new(*len, *data), rule, 0) {
                let _ = self.delete_fw_keys(&keys);
                return Err(if is_map_full(&e) {
                    Error::FirewallFull {
                        max_rules: self.settings.max_firewall_rules,
                    }
                } else {
                    Error::map("insert firewall prefix", e)
                });
            }
            keys.push((*len, *data));
        }
        let value = VipValue {
            id: u32::from(id),
            flags: compiled.flags,
            fw_set: set,
            rate: compiled.rate,
            burst: compiled.burst,
            pad: 0,
        };
        if let Err(e) = self.vips.insert(vip.key(), value, 0) {
            let _ = self.delete_fw_keys(&keys);
            return Err(Error::map("update VIP firewall", e));
        }
        let old = self.firewalls[slot].replace(InstalledFirewall {
            rules: rules.clone(),
            generation,
            keys,
        });
        if let Some(old) = old {
            self.delete_fw_keys(&old.keys)?;
        }
        Ok(())
    }

    /// Removes the firewall of `vip` (every source allowed, unlimited). Returns whether it had
    /// one. Its rate-limit buckets are dropped too.
    pub fn clear_firewall(&mut self, vip: &Vip) -> Result<bool, Error> {
        let Some(id) = self.vip_id(vip) else {
            return Ok(false);
        };
        let Some(old) = self.firewalls[usize::from(id)].take() else {
            return Ok(false);
        };
        let value = VipValue {
            id: u32::from(id),
            ..VipValue::default()
        };
        self.vips
            .insert(vip.key(), value, 0)
            .map_err(|e| Error::map("update VIP firewall", e))?;
        self.delete_fw_keys(&old.keys)?;
        self.purge_buckets(id)?;
        Ok(true)
    }

    /// The firewall rules installed for `vip`, if any.
    pub fn firewall(&self, vip: &Vip) -> Option<&FirewallRules> {
        let id = self.vip_id(vip)?;
        self.firewalls[usize::from(id)].as_ref().map(|f| &f.rules)
    }

    fn delete_fw_keys(&mut self, keys: &[(u32, FwKeyData)]) -> Result<(), Error> {
        for (len, data) in keys {
            match self.fw_rules.remove(&LpmKey::new(*len, *data)) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::map("delete firewall prefix", e)),
            }
        }
        Ok(())
    }

    /// Deletes the rate-limit buckets of VIP `id` (so a reused id starts afresh).
    fn purge_buckets(&mut self, id: u16) -> Result<(), Error> {
        let mine: Vec<BucketKey> = self
            .fw_buckets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.vip_id == u32::from(id))
            .collect();
        for k in mine {
            match self.fw_buckets.remove(&k) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::map("delete rate bucket", e)),
            }
        }
        Ok(())
    }

    // ---- routes ------------------------------------------------------------------------------

    /// Installs `route` for `flow`: the forward entry and the reply entry. Replaces an existing
    /// route of the flow. [`Error::TableFull`] if the table is full (nothing is installed);
    /// [`Error::RouteConflict`] if the reply key (host → NAT source, or host → client for half
    /// NAT) already belongs to another route, or the flow's key is another route's reply key
    /// (replies could not be told apart; nothing is installed).
    pub fn add_route(&mut self, flow: &Flow, route: &Route) -> Result<(), Error> {
        let vip = flow.vip_endpoint();
        let vip_id = self
            .vip_id(&vip)
            .ok_or_else(|| Error::UnknownVip(vip.to_string()))?;
        let host_slot = self.host_slot(route.host);
        let mut entries = route_entries(flow, route, vip_id, host_slot)?;
        let now = monotonic_now_ns()?;
        entries.forward.1.last_seen_ns = now;
        entries.reply.1.last_seen_ns = now;
        // A replaced route may have had a different reply key. Both directions share one map,
        // so a key must not already hold the other direction of another route.
        let old_forward = self.routes.get(&entries.forward.0, 0).ok();
        if old_forward.is_some_and(|v| v.flags & ROUTE_REPLY != 0) {
            return Err(Error::RouteConflict(format!(
                "{flow} is the reply direction of another route"
            )));
        }
        let old_reply = old_forward.and_then(|v| reply_key_of(flow, &v));
        if old_reply != Some(entries.reply.0) && self.routes.get(&entries.reply.0, 0).is_ok() {
            return Err(Error::RouteConflict(format!(
                "the host side of {flow} (host {}, seeing {}) is already used by another route",
                route.host,
                route.nat_source.unwrap_or(flow.client)
            )));
        }

        let full = Error::TableFull {
            max_routes: self.settings.max_routes,
        };
        // Reply first: a forward entry without its reply entry would black-hole replies.
        match self.routes.insert(entries.reply.0, entries.reply.1, 0) {
            Ok(()) => {}
            Err(e) if is_map_full(&e) => return Err(full),
            Err(e) => return Err(Error::map("insert reply route", e)),
        }
        if let Err(e) = self.routes.insert(entries.forward.0, entries.forward.1, 0) {
            if old_reply != Some(entries.reply.0) {
                let _ = self.routes.remove(&entries.reply.0);
            }
            return Err(if is_map_full(&e) {
                full
            } else {
                Error::map("insert route", e)
            });
        }
        if let Some(old) = old_reply
            && old != entries.reply.0
        {
            let _ = self.routes.remove(&old);
        }
        Ok(())
    }

    /// Removes the route of `flow` (both directions). Returns whether there was one.
    pub fn delete_route(&mut self, flow: &Flow) -> Result<bool, Error> {
        let key = flow.key();
        let value = match self.routes.get(&key, 0) {
            Ok(v) if v.flags & ROUTE_REPLY == 0 => v,
            Ok(_) => return Ok(false),
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(Error::map("look up route", e)),
        };
        match self.routes.remove(&key) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::map("delete route", e)),
        }
        if let Some(rk) = reply_key_of(flow, &value) {
            match self.routes.remove(&rk) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::map("delete reply route", e)),
            }
        }
        Ok(true)
    }

    fn info(&self, flow: Flow, value: &RouteValue) -> Option<RouteInfo> {
        let route = route_from_value(value, flow.key().family)?;
        let reply_seen = reply_key_of(&flow, value)
            .and_then(|k| self.routes.get(&k, 0).ok())
            .map_or(0, |v| v.last_seen_ns);
        Some(RouteInfo {
            flow,
            route,
            last_seen_ns: value.last_seen_ns.max(reply_seen),
        })
    }

    /// The installed route of `flow`.
    pub fn route(&self, flow: &Flow) -> Result<Option<RouteInfo>, Error> {
        match self.routes.get(&flow.key(), 0) {
            Ok(v) if v.flags & ROUTE_REPLY == 0 => Ok(self.info(*flow, &v)),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::map("look up route", e)),
        }
    }

    /// Every installed route with its last activity (for idle expiry and inventory checks).
    /// Entries that vanish during the walk are skipped.
    pub fn routes(&self) -> Result<Vec<RouteInfo>, Error> {
        let mut out = Vec::new();
        for item in self.routes.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(Error::map("walk routes", e)),
            };
            if v.flags & ROUTE_REPLY != 0 {
                continue;
            }
            if let Some(info) = Flow::from_key(&k).and_then(|f| self.info(f, &v)) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Flows with no packet in either direction for at least `idle`.
    pub fn idle_flows(&self, idle: Duration) -> Result<Vec<Flow>, Error> {
        let now = monotonic_now_ns()?;
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| now.saturating_sub(r.last_seen_ns) >= idle)
            .map(|r| r.flow)
            .collect())
    }

    // ---- NAT sources and the slow path ----------------------------------------------------------

    /// Declares `addr` a full-NAT source of this forwarder with ports `first..=last`: a packet
    /// to it in that range that has no route is the reply of a flow the table could not hold,
    /// so it is reported ([`crate::Event::ReplyMiss`]) and dropped instead of passing to the
    /// stack. Replaces the address's range. Only for addresses no local socket uses in that
    /// range. [`Error::TooManyNatSources`] beyond [`MAX_NAT_SOURCES`].
    pub fn set_nat_source(&mut self, addr: IpAddr, first: u16, last: u16) -> Result<(), Error> {
        let (a, family) = addr_bytes(addr);
        let key = NatSourceKey {
            addr: a,
            family,
            pad: [0; 3],
        };
        self.nat_sources
            .insert(key, NatPorts { first, last }, 0)
            .map_err(|e| {
                if is_map_full(&e) {
                    Error::TooManyNatSources {
                        max: MAX_NAT_SOURCES,
                    }
                } else {
                    Error::map("insert NAT source", e)
                }
            })
    }

    /// Stops treating `addr` as a NAT source. Returns whether it was one.
    pub fn remove_nat_source(&mut self, addr: IpAddr) -> Result<bool, Error> {
        let (a, family) = addr_bytes(addr);
        let key = NatSourceKey {
            addr: a,
            family,
            pad: [0; 3],
        };
        match self.nat_sources.remove(&key) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(Error::map("remove NAT source", e)),
        }
    }

    /// Writes `route` of `flow` (both directions) into `slow_route`.
    fn set_slow_route(&mut self, flow: &Flow, route: &Route) -> Result<(), Error> {
        let vip = flow.vip_endpoint();
        let vip_id = self
            .vip_id(&vip)
            .ok_or_else(|| Error::UnknownVip(vip.to_string()))?;
        let host_slot = self.host_slot(route.host);
        let e = route_entries(flow, route, vip_id, host_slot)?;
        let value = SlowRouteValue {
            fwd_key: e.forward.0,
            fwd: e.forward.1,
            rep_key: e.reply.0,
            rep: e.reply.1,
            result: 0,
            pad: 0,
        };
        self.slow_route
            .set(0, value, 0)
            .map_err(|e| Error::map("write slow_route", e))
    }

    fn slow_result(&self) -> Result<SlowOutcome, Error> {
        let v = self
            .slow_route
            .get(&0, 0)
            .map_err(|e| Error::map("read slow_route", e))?;
        Ok(SlowOutcome::from_raw(v.result))
    }

    /// The slow path: sends `frame` (a whole Ethernet frame of `flow`, either direction, as
    /// received on `ingress_ifindex`) along `route` **without** installing the route — for
    /// flows the routing table could not hold. The data plane's own rewrite, FIB lookup and
    /// transmit do it (`sy_xdp_slow`, run once through `BPF_PROG_TEST_RUN` in live-frames mode,
    /// like [`Dataplane::reinject`]): a client → VIP frame gets the forward rewrite, a host →
    /// NAT source (or client) frame the reply rewrite; a frame of neither direction, or one
    /// that cannot be sent (TTL, no neighbour, no route), is dropped — never passed, never
    /// sent elsewhere. The transport checksum must be complete (as for `reinject`).
    ///
    /// The route travels in a one-entry map, so calls are serialised: `&mut self` (the agent's
    /// single owner or mutex) guarantees one at a time. Three syscalls per frame (write the
    /// route, run, read the outcome). Kernel ≥ 5.18; must run in the namespace of
    /// `ingress_ifindex`.
    pub fn deliver_with_route(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
        flow: &Flow,
        route: &Route,
    ) -> Result<SlowOutcome, Error> {
        self.set_slow_route(flow, route)?;
        let ctx = xdp_ctx(frame.len(), ingress_ifindex);
        self.slow()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx[..]),
                repeat: 1,
                attrs: TestRunAttrs::new().xdp_live_frames(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::program("slow path (BPF_PROG_TEST_RUN live frames)", e))?;
        self.slow_result()
    }

    /// As [`Dataplane::deliver_with_route`], but a plain test run: nothing is transmitted; the
    /// rewritten frame and the program's action come back (for tests).
    pub fn run_slow(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
        flow: &Flow,
        route: &Route,
    ) -> Result<(RunResult, SlowOutcome), Error> {
        self.set_slow_route(flow, route)?;
        let r = run_xdp_program(self.slow()?, frame, ingress_ifindex, 1)?;
        Ok((r, self.slow_result()?))
    }

    // ---- counters and events -----------------------------------------------------------------

    /// Global counters of one program, summed across CPUs.
    pub fn counters(&self, hook: Hook) -> Result<Counters, Error> {
        let per_cpu = self
            .counters
            .get(&hook.index(), 0)
            .map_err(|e| Error::map("read counters", e))?;
        let mut values = [0u64; COUNTER_COUNT as usize];
        for block in per_cpu.iter() {
            for (sum, v) in values.iter_mut().zip(block) {
                *sum += v;
            }
        }
        Ok(Counters::from_values(&values))
    }

    /// Counters of one VIP, summed across CPUs.
    pub fn vip_stats(&self, vip: &Vip) -> Result<Option<VipStats>, Error> {
        let Some(id) = self.vip_id(vip) else {
            return Ok(None);
        };
        let per_cpu = self
            .vip_stats
            .get(&u32::from(id), 0)
            .map_err(|e| Error::map("read VIP counters", e))?;
        let mut s = VipStats::default();
        for v in per_cpu.iter() {
            s.add(v);
        }
        Ok(Some(s))
    }

    /// The `host_stats` slot of host endpoint `host`, allocated on first use; 0 (not
    /// counted) once [`MAX_HOST_SLOTS`] endpoints have one.
    fn host_slot(&mut self, host: SocketAddr) -> u16 {
        if let Some(slot) = self.host_slots.get(&host) {
            return *slot;
        }
        let Ok(next) = u16::try_from(self.host_slots.len() + 1) else {
            return 0;
        };
        if next > MAX_HOST_SLOTS {
            return 0;
        }
        self.host_slots.insert(host, next);
        next
    }

    /// Counters of every host endpoint a route was installed to (both directions of all its
    /// routes, since the data plane was loaded). The first [`MAX_HOST_SLOTS`] endpoints are
    /// counted; later ones only in the VIP and global counters.
    pub fn host_stats(&self) -> Result<Vec<(SocketAddr, HostStats)>, Error> {
        let mut out = Vec::with_capacity(self.host_slots.len());
        for (host, slot) in &self.host_slots {
            let per_cpu = self
                .host_stats
                .get(&u32::from(*slot), 0)
                .map_err(|e| Error::map("read host counters", e))?;
            let mut s = HostStats::default();
            for v in per_cpu.iter() {
                s.add(v);
            }
            out.push((*host, s));
        }
        Ok(out)
    }

    /// The reader of miss and final-packet events (once).
    pub fn take_events(&mut self) -> Result<EventReader, Error> {
        self.events
            .take()
            .map(EventReader::new)
            .ok_or(Error::EventsTaken)
    }

    // ---- BPF_PROG_TEST_RUN ---------------------------------------------------------------------

    /// Runs the XDP program once on `frame` as if received on `ingress_ifindex` (0: the
    /// loopback device of the calling thread's namespace). Redirects are not performed.
    pub fn run_xdp(&self, frame: &[u8], ingress_ifindex: u32) -> Result<RunResult, Error> {
        self.run_xdp_repeat(frame, ingress_ifindex, 1)
    }

    /// As [`Dataplane::run_xdp`], `repeat` times (for micro-benchmarks; the frame is reset
    /// before each run). The duration is the kernel's average per run.
    pub fn run_xdp_repeat(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<RunResult, Error> {
        run_xdp_program(self.xdp()?, frame, ingress_ifindex, repeat)
    }

    /// Runs the tc program once on `frame` as if received on `ifindex` (0: loopback).
    /// Redirects are not performed.
    pub fn run_tc(&self, frame: &[u8], ifindex: u32) -> Result<RunResult, Error> {
        let ctx = skb_ctx(ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .tc()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: (ifindex != 0).then_some(&ctx[..]),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::program("BPF_PROG_TEST_RUN (tc)", e))?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            action: r.return_value,
            frame: out,
            duration: r.duration,
        })
    }

    /// Re-runs `frame` (a classified miss) through the XDP program in live-frames mode, as if it
    /// had arrived on `ingress_ifindex`: with its route now installed the program rewrites it
    /// and really transmits it (`XDP_TX` / `XDP_REDIRECT`), or hands it to the stack
    /// (`XDP_PASS`, where an attached tc program continues). Kernel ≥ 5.18. Must run in the
    /// namespace of `ingress_ifindex`.
    pub fn reinject(&self, frame: &[u8], ingress_ifindex: u32) -> Result<(), Error> {
        let ctx = xdp_ctx(frame.len(), ingress_ifindex);
        self.xdp()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx[..]),
                repeat: 1,
                attrs: TestRunAttrs::new().xdp_live_frames(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::program("reinject (BPF_PROG_TEST_RUN live frames)", e))?;
        Ok(())
    }
}

/// `struct xdp_md` for test runs: data = 0, data_end = len, data_meta = 0, ingress_ifindex,
/// rx_queue_index = 0, egress_ifindex = 0.
fn xdp_ctx(len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[4..8].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    c[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    c
}

/// The head of `struct __sk_buff` up to `ifindex` (offset 40) for test runs.
fn skb_ctx(ifindex: u32) -> [u8; 44] {
    let mut c = [0u8; 44];
    c[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

/// Runs any XDP program on a frame (shared by the benchmark's bare program).
pub(crate) fn run_xdp_program(
    prog: &Xdp,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<RunResult, Error> {
    let ctx = xdp_ctx(frame.len(), ingress_ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: (ingress_ifindex != 0).then_some(&ctx[..]),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|e| Error::program("BPF_PROG_TEST_RUN (XDP)", e))?;
    out.truncate(r.data_size_out as usize);
    Ok(RunResult {
        action: r.return_value,
        frame: out,
        duration: r.duration,
    })
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}
