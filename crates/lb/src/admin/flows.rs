//! The packet roles in the admin API: `GET /v1/flows` (flows per VIP and host, the data plane's
//! and the agent's counters, the classifier's counters, and the `top` most recently active
//! routes, default 20, at most 1000), the `forwarder` and `classifier` sections of
//! `/v1/counters`, and the `switchyard_forwarder_*` / `switchyard_classifier_*` metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_forwarder_flows` | gauge | |
//! | `switchyard_forwarder_vip_flows` | gauge | `service`, `vip` |
//! | `switchyard_forwarder_vip_packets_total`, `…_bytes_total`, `…_misses_total`, `…_reply_packets_total`, `…_reply_bytes_total`, `…_finals_total`, `…_fw_denied_total`, `…_fw_not_allowed_total`, `…_fw_rate_limited_total` | counter | `service`, `vip` |
//! | `switchyard_forwarder_host_flows` | gauge | `host`, `endpoint` |
//! | `switchyard_forwarder_host_packets_total`, `…_bytes_total`, `…_reply_packets_total`, `…_reply_bytes_total` | counter | `host`, `endpoint` |
//! | `switchyard_forwarder_routes_plumbed_total`, `switchyard_forwarder_routes_deleted_total` | counter | |
//! | `switchyard_forwarder_dataplane_total` | counter | `hook` (`xdp`, `tc`), `event` (`hit_packets`, `misses`, `fib_fail`, …) |
//! | `switchyard_forwarder_agent_total` | counter | `event` (`misses`, `reinjected`, `table_full`, …) |
//! | `switchyard_classifier_connections` | gauge | |
//! | `switchyard_classifier_nat_ports_in_use` | gauge | |
//! | `switchyard_classifier_misses_total` | counter | |
//! | `switchyard_classifier_new_connections_total` | counter | `service`, `vip` |
//! | `switchyard_classifier_rejected_total` | counter | `reason` (`no_healthy_host`, `nat_ports_exhausted`, …) |
//! | `switchyard_classifier_routes_deleted_total` | counter | `reason` (`final`, `idle`) |
//! | `switchyard_classifier_events_total` | counter | `event` (affinity, mid-connection, slow path, … outcomes) |
//! | `switchyard_classifier_endpoint_connections_total` | counter | `service`, `vip`, `endpoint` |
//!
//! `vip` is `IP:PORT/PROTOCOL`; `host` is the host's id.
//!
//! Walking the routing table for `top` is O(flows); the request runs on a blocking thread.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};
use switchyard_forwarder::Counters;
use switchyard_transport::metrics::{self as m, counter, gauge, gauges};
use switchyard_wire::Protocol;
use switchyard_wire::plumbing::Delivery;

use super::AdminState;
use super::api::UnitInfo;
use super::routes::ApiError;
use crate::classifier_role::{ClassifierSnapshot, ClassifierStats};
use crate::forwarder_role::{ForwarderHandle, ForwarderSnapshot, VipSnapshot};

/// The packet roles the admin API reads.
#[derive(Debug, Clone, Default)]
pub struct PacketState {
    /// The forwarder, if it runs.
    pub forwarder: Option<ForwarderHandle>,
    /// The classifier, if it runs.
    pub classifier: Option<ClassifierStats>,
}

/// One VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    /// Service name.
    pub service: String,
    /// VIP:port.
    pub vip: SocketAddr,
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Routes installed.
    pub flows: u64,
    /// Client → host packets forwarded.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets handed to the classifier.
    pub misses: u64,
    /// Host → client packets translated back.
    pub reply_packets: u64,
    /// Their bytes.
    pub reply_bytes: u64,
    /// FIN/RST seen on routed flows.
    pub finals: u64,
    /// New connections dropped by the firewall: denied source.
    #[serde(default)]
    pub fw_denied: u64,
    /// … source not in a non-empty allow list.
    #[serde(default)]
    pub fw_not_allowed: u64,
    /// … source over its new-connection rate.
    #[serde(default)]
    pub fw_rate_limited: u64,
}

/// Routes toward one host endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFlows {
    /// The host's endpoint.
    pub endpoint: SocketAddr,
    /// Routes installed.
    pub flows: u64,
}

/// One installed route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteJson {
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Client endpoint.
    pub client: SocketAddr,
    /// VIP endpoint.
    pub vip: SocketAddr,
    /// Host id.
    pub host: u32,
    /// Host endpoint.
    pub target: SocketAddr,
    /// `nat`, `half-nat`, `tunnel`.
    pub delivery: String,
    /// Full NAT: the source the host sees.
    pub nat_source: Option<SocketAddr>,
    /// Milliseconds since the last packet.
    pub idle_ms: u64,
}

/// The forwarder role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwarderView {
    /// Attached interfaces.
    pub interfaces: Vec<String>,
    /// `xdp`, `tc`, `xdp+tc`.
    pub attach: String,
    /// Routing table capacity.
    pub max_flows: u32,
    /// Routes installed.
    pub flows: u64,
    /// Per VIP.
    pub vips: Vec<VipView>,
    /// Per host endpoint.
    pub hosts: Vec<HostFlows>,
    /// Data-plane counters of the XDP program.
    pub xdp: BTreeMap<String, u64>,
    /// Data-plane counters of the tc program.
    pub tc: BTreeMap<String, u64>,
    /// The agent's counters.
    pub agent: BTreeMap<String, u64>,
    /// Most recently active routes (`/v1/flows` only).
    #[serde(default)]
    pub top: Vec<RouteJson>,
}

/// The classifier role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierView {
    /// Connections in the inventory.
    pub connections: u64,
    /// NAT ports in use.
    pub nat_ports_in_use: u64,
    /// Counters by name.
    pub events: BTreeMap<String, u64>,
    /// New connections per VIP and host endpoint.
    pub endpoints: Vec<EndpointConnections>,
}

/// New connections to one endpoint of one VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConnections {
    /// VIP:port.
    pub vip: SocketAddr,
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Host endpoint.
    pub endpoint: SocketAddr,
    /// New connections sent there.
    pub new_connections: u64,
}

/// `GET /v1/flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsResponse {
    /// The unit.
    pub unit: UnitInfo,
    /// The forwarder role, if it runs.
    pub forwarder: Option<ForwarderView>,
    /// The classifier role, if it runs.
    pub classifier: Option<ClassifierView>,
}

fn dataplane_counters(c: &Counters) -> BTreeMap<String, u64> {
    [
        ("rx", c.rx),
        ("hit_packets", c.hit_packets),
        ("hit_bytes", c.hit_bytes),
        ("reply_packets", c.reply_packets),
        ("reply_bytes", c.reply_bytes),
        ("misses", c.misses),
        ("passed", c.passed),
        ("non_ip", c.non_ip),
        ("vlan", c.vlan),
        ("fragments", c.fragments),
        ("ipv6_ext", c.ipv6_ext),
        ("malformed", c.malformed),
        ("ttl_expired", c.ttl_expired),
        ("fib_no_neigh", c.fib_no_neigh),
        ("fib_fail", c.fib_fail),
        ("fib_frag_needed", c.fib_frag_needed),
        ("finals", c.finals),
        ("ringbuf_full", c.ringbuf_full),
        ("unsupported", c.unsupported),
        ("drop_other", c.drop_other),
        ("tx", c.tx),
        ("redirected", c.redirected),
        ("fw_denied", c.fw_denied),
        ("fw_not_allowed", c.fw_not_allowed),
        ("fw_rate_limited", c.fw_rate_limited),
        ("nat_misses", c.nat_misses),
        ("slow_sent", c.slow_sent),
        ("slow_refused", c.slow_refused),
        ("next_hop_cached", c.next_hop_cached),
        ("reopens", c.reopens),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn attach_name(a: switchyard_config::AttachPoint) -> &'static str {
    match a {
        switchyard_config::AttachPoint::Xdp => "xdp",
        switchyard_config::AttachPoint::Tc => "tc",
        switchyard_config::AttachPoint::XdpAndTc => "xdp+tc",
    }
}

fn forwarder_view(s: &ForwarderSnapshot) -> ForwarderView {
    ForwarderView {
        interfaces: s.interfaces.clone(),
        attach: attach_name(s.attach).to_owned(),
        max_flows: s.max_flows,
        flows: s.flows,
        vips: s
            .vips
            .iter()
            .map(|v| VipView {
                service: v.info.service.clone(),
                vip: v.info.vip,
                protocol: proto_name(v.info.protocol).to_owned(),
                flows: v.flows,
                packets: v.stats.packets,
                bytes: v.stats.bytes,
                misses: v.stats.misses,
                reply_packets: v.stats.reply_packets,
                reply_bytes: v.stats.reply_bytes,
                finals: v.stats.finals,
                fw_denied: v.stats.fw_denied,
                fw_not_allowed: v.stats.fw_not_allowed,
                fw_rate_limited: v.stats.fw_rate_limited,
            })
            .collect(),
        hosts: s
            .hosts
            .iter()
            .map(|(endpoint, flows)| HostFlows {
                endpoint: *endpoint,
                flows: *flows,
            })
            .collect(),
        xdp: dataplane_counters(&s.xdp),
        tc: dataplane_counters(&s.tc),
        agent: s.agent.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        top: Vec::new(),
    }
}

fn classifier_events(s: &ClassifierSnapshot) -> BTreeMap<String, u64> {
    let c = &s.counters;
    [
        ("misses", c.misses),
        ("new_connections", c.new_connections),
        ("affinity_hits", c.affinity_hits),
        ("affinity_misses", c.affinity_misses),
        ("affinity_reselections", c.affinity_reselections),
        ("allotment_requests", c.allotment_requests),
        ("allotment_errors", c.allotment_errors),
        ("rejected_no_healthy_host", c.rejected.no_healthy_host),
        (
            "rejected_nat_ports_exhausted",
            c.rejected.nat_ports_exhausted,
        ),
        ("rejected_no_nat_source", c.rejected.no_nat_source),
        (
            "rejected_endpoint_family_mismatch",
            c.rejected.endpoint_family_mismatch,
        ),
        ("rejected_reply_conflict", c.rejected.reply_conflict),
        ("unknown_service", c.malformed.unknown_service),
        ("protocol_mismatch", c.malformed.protocol_mismatch),
        ("bad_tcp_flags", c.malformed.bad_tcp_flags),
        ("mid_connection_replumbed", c.mid_connection.replumbed),
        ("mid_connection_from_lookup", c.mid_connection.from_lookup),
        ("mid_connection_to_zombie", c.mid_connection.to_zombie),
        ("mid_connection_dropped", c.mid_connection.dropped),
        ("repeated_first_packets", c.repeated_first_packets),
        ("replaced_on_syn", c.replaced_on_syn),
        ("routes_deleted_final", c.routes_deleted_final),
        ("routes_deleted_idle", c.routes_deleted_idle),
        ("idle_unknown", c.idle_unknown),
        ("final_unknown", c.final_unknown),
        ("table_full", c.table_full),
        ("plumb_errors", c.plumb_errors),
        ("slow_path_deliveries", c.slow_path_deliveries),
        ("half_nat_overflow", c.half_nat_overflow),
        ("reopened", c.reopened),
        ("session_lookups", c.session_lookups),
        ("session_hits", c.session_hits),
        ("session_misses", c.session_misses),
        ("session_timeouts", c.session_timeouts),
        ("slow_path_dropped", s.slow_path_dropped),
        ("slow_path_delivered", s.slow_path_delivered),
        ("slow_path_replies", s.slow_path_replies),
        ("slow_path_failed", s.slow_path_failed),
        ("reply_misses_unknown", s.reply_misses_unknown),
        ("allotment_refreshes", s.refreshes),
        ("plumbing_refused", s.refused),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn classifier_view(s: &ClassifierSnapshot) -> ClassifierView {
    let mut endpoints: Vec<EndpointConnections> = s
        .counters
        .services
        .iter()
        .flat_map(|(id, sc)| {
            sc.per_endpoint
                .iter()
                .map(move |(e, n)| EndpointConnections {
                    vip: id.vip,
                    protocol: proto_name(id.protocol).to_owned(),
                    endpoint: *e,
                    new_connections: *n,
                })
        })
        .collect();
    endpoints.sort_by_key(|e| (e.vip, e.endpoint));
    ClassifierView {
        connections: s.connections,
        nat_ports_in_use: s.nat_ports_in_use,
        events: classifier_events(s),
        endpoints,
    }
}

/// The `forwarder` and `classifier` sections of `/v1/counters`.
pub fn counters(state: &PacketState) -> (Option<ForwarderView>, Option<ClassifierView>) {
    (
        state
            .forwarder
            .as_ref()
            .map(|f| forwarder_view(&f.snapshot())),
        state
            .classifier
            .as_ref()
            .map(|c| classifier_view(&c.snapshot())),
    )
}

/// `?top=N`.
#[derive(Debug, Deserialize)]
pub struct FlowsQuery {
    top: Option<usize>,
}

/// `GET /v1/flows`; a bad `top` is 400 with the API's JSON error, as elsewhere.
pub(super) async fn flows(
    State(state): State<AdminState>,
    query: Result<Query<FlowsQuery>, QueryRejection>,
) -> Result<Json<FlowsResponse>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "bad query: {}; top is a whole number of routes (default 20, at most 1000)",
                rejection.body_text()
            ),
        )
    })?;
    let top = query.top.unwrap_or(20).min(1000);
    let packet = state.packet.clone();
    let (forwarder, classifier) = tokio::task::spawn_blocking(move || {
        let (mut forwarder, classifier) = counters(&packet);
        if let (Some(view), Some(handle)) = (&mut forwarder, &packet.forwarder) {
            view.top = handle
                .top_routes(top)
                .into_iter()
                .map(|r| {
                    let (delivery, nat_source) = match r.route.delivery {
                        Delivery::Nat { source } => ("nat", Some(source)),
                        Delivery::HalfNat => ("half-nat", None),
                        Delivery::Tunnel { .. } => ("tunnel", None),
                    };
                    RouteJson {
                        protocol: proto_name(r.route.flow.protocol()).to_owned(),
                        client: r.route.flow.client(),
                        vip: r.route.flow.vip(),
                        host: r.route.host.0,
                        target: r.route.target,
                        delivery: delivery.to_owned(),
                        nat_source,
                        idle_ms: u64::try_from(r.idle.as_millis()).unwrap_or(u64::MAX),
                    }
                })
                .collect();
        }
        (forwarder, classifier)
    })
    .await
    .unwrap_or((None, None));
    Ok(Json(FlowsResponse {
        unit: state.unit.clone(),
        forwarder,
        classifier,
    }))
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The classifier's events that have families of their own, not `events_total{event}`.
const OWN_FAMILY: [&str; 9] = [
    "misses",
    "new_connections",
    "rejected_no_healthy_host",
    "rejected_nat_ports_exhausted",
    "rejected_no_nat_source",
    "rejected_endpoint_family_mismatch",
    "rejected_reply_conflict",
    "routes_deleted_final",
    "routes_deleted_idle",
];

/// The forwarder agent's events that have families of their own.
const OWN_AGENT_FAMILY: [&str; 2] = ["routes_added", "routes_deleted"];

/// The `switchyard_forwarder_*` and `switchyard_classifier_*` families, read from the roles'
/// snapshots at scrape time.
#[derive(Debug)]
pub struct PacketCollector {
    /// The roles.
    pub packet: PacketState,
    /// The configured packet-mode services (VIP, protocol, name), so their series exist
    /// before their first connection.
    pub services: Vec<(SocketAddr, Protocol, String)>,
}

fn vip_label(vip: SocketAddr, protocol: Protocol) -> String {
    format!("{vip}/{}", proto_name(protocol))
}

impl PacketCollector {
    fn service_name(&self, vip: SocketAddr, protocol: Protocol) -> &str {
        self.services
            .iter()
            .find(|(v, p, _)| *v == vip && *p == protocol)
            .map_or("", |(_, _, name)| name.as_str())
    }

    fn encode_forwarder(
        &self,
        e: &mut DescriptorEncoder<'_>,
        s: &ForwarderSnapshot,
    ) -> fmt::Result {
        gauge(
            e,
            "switchyard_forwarder_flows",
            "Routes installed in the forwarder.",
            s.flows,
        )?;
        let vip = |v: &VipSnapshot| {
            [
                ("service", v.info.service.clone()),
                ("vip", vip_label(v.info.vip, v.info.protocol)),
            ]
        };
        gauges(
            e,
            "switchyard_forwarder_vip_flows",
            "Routes installed per VIP.",
            s.vips.iter().map(|v| (vip(v), v.flows)),
        )?;
        type Pick = fn(&VipSnapshot) -> u64;
        let per_vip: [(&str, &str, Pick); 9] = [
            (
                "packets",
                "Client to host packets forwarded, per VIP.",
                |v| v.stats.packets,
            ),
            ("bytes", "Client to host bytes forwarded, per VIP.", |v| {
                v.stats.bytes
            }),
            (
                "misses",
                "Packets without a route, handed to the classifier, per VIP.",
                |v| v.stats.misses,
            ),
            (
                "reply_packets",
                "Host to client packets translated back, per VIP.",
                |v| v.stats.reply_packets,
            ),
            (
                "reply_bytes",
                "Host to client bytes translated back, per VIP.",
                |v| v.stats.reply_bytes,
            ),
            (
                "finals",
                "FIN or RST packets of routed flows, per VIP.",
                |v| v.stats.finals,
            ),
            (
                "fw_denied",
                "New connections dropped by the firewall: denied source.",
                |v| v.stats.fw_denied,
            ),
            (
                "fw_not_allowed",
                "New connections dropped by the firewall: source not allowed.",
                |v| v.stats.fw_not_allowed,
            ),
            (
                "fw_rate_limited",
                "New connections dropped by the firewall: source over its rate.",
                |v| v.stats.fw_rate_limited,
            ),
        ];
        for (what, help, pick) in per_vip {
            m::counters(
                e,
                &format!("switchyard_forwarder_vip_{what}"),
                help,
                s.vips.iter().map(|v| (vip(v), pick(v))),
            )?;
        }
        let host = |endpoint: &SocketAddr| {
            [
                (
                    "host",
                    s.host_of
                        .get(endpoint)
                        .map_or_else(String::new, |h| h.0.to_string()),
                ),
                ("endpoint", endpoint.to_string()),
            ]
        };
        gauges(
            e,
            "switchyard_forwarder_host_flows",
            "Routes installed per host endpoint.",
            s.hosts.iter().map(|(endpoint, n)| (host(endpoint), *n)),
        )?;
        type PickHost = fn(&switchyard_forwarder::HostStats) -> u64;
        let per_host: [(&str, &str, PickHost); 4] = [
            (
                "packets",
                "Client to host packets forwarded, per host endpoint.",
                |h| h.packets,
            ),
            (
                "bytes",
                "Client to host bytes forwarded, per host endpoint.",
                |h| h.bytes,
            ),
            (
                "reply_packets",
                "Host to client packets translated back, per host endpoint.",
                |h| h.reply_packets,
            ),
            (
                "reply_bytes",
                "Host to client bytes translated back, per host endpoint.",
                |h| h.reply_bytes,
            ),
        ];
        for (what, help, pick) in per_host {
            m::counters(
                e,
                &format!("switchyard_forwarder_host_{what}"),
                help,
                s.host_stats
                    .iter()
                    .map(|(endpoint, stats)| (host(endpoint), pick(stats))),
            )?;
        }
        let agent = |name: &str| {
            s.agent
                .iter()
                .find(|(k, _)| *k == name)
                .map_or(0, |(_, v)| *v)
        };
        counter(
            e,
            "switchyard_forwarder_routes_plumbed",
            "Routes installed in the forwarder's table (route plumbing).",
            agent("routes_added"),
        )?;
        counter(
            e,
            "switchyard_forwarder_routes_deleted",
            "Routes deleted from the forwarder's table.",
            agent("routes_deleted"),
        )?;
        m::counters(
            e,
            "switchyard_forwarder_dataplane",
            "Data-plane counters per program (drops: fib_fail, fib_frag_needed, unsupported, drop_other, ringbuf_full).",
            [("xdp", &s.xdp), ("tc", &s.tc)]
                .into_iter()
                .flat_map(|(hook, c)| {
                    dataplane_counters(c)
                        .into_iter()
                        .map(move |(event, n)| ([("hook", hook.to_owned()), ("event", event)], n))
                }),
        )?;
        m::counters(
            e,
            "switchyard_forwarder_agent",
            "Forwarder agent events.",
            s.agent
                .iter()
                .filter(|(k, _)| !OWN_AGENT_FAMILY.contains(k))
                .map(|(k, v)| ([("event", *k)], *v)),
        )
    }

    fn encode_classifier(
        &self,
        e: &mut DescriptorEncoder<'_>,
        s: &ClassifierSnapshot,
    ) -> fmt::Result {
        let c = &s.counters;
        gauge(
            e,
            "switchyard_classifier_connections",
            "Connections in the classifier's inventory.",
            s.connections,
        )?;
        gauge(
            e,
            "switchyard_classifier_nat_ports_in_use",
            "Full-NAT source ports in use.",
            s.nat_ports_in_use,
        )?;
        counter(
            e,
            "switchyard_classifier_misses",
            "Packets the forwarder had no route for, handed to the classifier.",
            c.misses,
        )?;
        let mut per_service: Vec<(SocketAddr, Protocol, u64)> = self
            .services
            .iter()
            .map(|(vip, protocol, _)| (*vip, *protocol, 0))
            .collect();
        for (id, sc) in &c.services {
            match per_service
                .iter_mut()
                .find(|(vip, protocol, _)| *vip == id.vip && *protocol == id.protocol)
            {
                Some(entry) => entry.2 = sc.new_connections,
                None => per_service.push((id.vip, id.protocol, sc.new_connections)),
            }
        }
        m::counters(
            e,
            "switchyard_classifier_new_connections",
            "New connections admitted (routes plumbed to a host), per VIP.",
            per_service.iter().map(|(vip, protocol, n)| {
                (
                    [
                        ("service", self.service_name(*vip, *protocol).to_owned()),
                        ("vip", vip_label(*vip, *protocol)),
                    ],
                    *n,
                )
            }),
        )?;
        let r = &c.rejected;
        m::counters(
            e,
            "switchyard_classifier_rejected",
            "New connections rejected, by reason.",
            [
                ("no_healthy_host", r.no_healthy_host),
                ("nat_ports_exhausted", r.nat_ports_exhausted),
                ("no_nat_source", r.no_nat_source),
                ("endpoint_family_mismatch", r.endpoint_family_mismatch),
                ("reply_conflict", r.reply_conflict),
            ]
            .map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        m::counters(
            e,
            "switchyard_classifier_routes_deleted",
            "Routes the classifier retired: after a FIN or RST (final) or for idleness (idle, expired).",
            [
                ("final", c.routes_deleted_final),
                ("idle", c.routes_deleted_idle),
            ]
            .map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        m::counters(
            e,
            "switchyard_classifier_events",
            "Other classifier inputs and outcomes.",
            classifier_events(s)
                .into_iter()
                .filter(|(k, _)| !OWN_FAMILY.contains(&k.as_str()))
                .map(|(k, v)| ([("event", k)], v)),
        )?;
        let mut endpoints: Vec<_> = c
            .services
            .iter()
            .flat_map(|(id, sc)| sc.per_endpoint.iter().map(move |(ep, n)| (id, *ep, *n)))
            .collect();
        endpoints.sort_by_key(|(id, ep, _)| (id.vip, *ep));
        m::counters(
            e,
            "switchyard_classifier_endpoint_connections",
            "New connections sent to each host endpoint.",
            endpoints.into_iter().map(|(id, ep, n)| {
                (
                    [
                        ("service", self.service_name(id.vip, id.protocol).to_owned()),
                        ("vip", vip_label(id.vip, id.protocol)),
                        ("endpoint", ep.to_string()),
                    ],
                    n,
                )
            }),
        )
    }
}

impl Collector for PacketCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(f) = &self.packet.forwarder {
            self.encode_forwarder(&mut encoder, &f.snapshot())?;
        }
        if let Some(c) = &self.packet.classifier {
            self.encode_classifier(&mut encoder, &c.snapshot())?;
        }
        Ok(())
    }
}
