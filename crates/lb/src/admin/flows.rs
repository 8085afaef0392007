//! The packet roles in the admin API: `GET /v1/flows` (flows per VIP and host, the data plane's
//! and the agent's counters, the classifier's counters, and the `top` most recently active
//! routes, default 20, at most 1000), the `forwarder` and `classifier` sections of
//! `/v1/counters`, and the `switchyard_forwarder_*` / `switchyard_classifier_*` metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_forwarder_flows` | gauge | |
//! | `switchyard_forwarder_vip_flows` | gauge | `service`, `vip` |
//! | `switchyard_forwarder_vip_packets_total`, `…_bytes_total`, `…_misses_total`, `…_reply_packets_total`, `…_reply_bytes_total`, `…_finals_total` | counter | `service`, `vip` |
//! | `switchyard_forwarder_host_flows` | gauge | `endpoint` |
//! | `switchyard_forwarder_dataplane_total` | counter | `hook` (`xdp`, `tc`), `counter` (`hit_packets`, `misses`, `fib_fail`, …) |
//! | `switchyard_forwarder_agent_total` | counter | `event` (`misses`, `reinjected`, `table_full`, …) |
//! | `switchyard_classifier_connections` | gauge | |
//! | `switchyard_classifier_nat_ports_in_use` | gauge | |
//! | `switchyard_classifier_events_total` | counter | `event` (`misses`, `new_connections`, `rejected_no_healthy_host`, …) |
//! | `switchyard_classifier_endpoint_connections_total` | counter | `vip`, `endpoint` |
//!
//! Walking the routing table for `top` is O(flows); the request runs on a blocking thread.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchyard_forwarder::Counters;
use switchyard_wire::plumbing::Delivery;

use super::AdminState;
use super::api::UnitInfo;
use super::routes::ApiError;
use crate::classifier_role::{ClassifierSnapshot, ClassifierStats};
use crate::forwarder_role::{ForwarderHandle, ForwarderSnapshot};

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

fn proto_name(p: switchyard_wire::Protocol) -> &'static str {
    match p {
        switchyard_wire::Protocol::Tcp => "tcp",
        switchyard_wire::Protocol::Udp => "udp",
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Appends the packet roles' metrics to `out`.
pub fn render_metrics(state: &PacketState, out: &mut String) {
    let (forwarder, classifier) = counters(state);
    if let Some(f) = forwarder {
        metric(
            out,
            "switchyard_forwarder_flows",
            "gauge",
            "Routes installed in the forwarder.",
            &[(String::new(), f.flows)],
        );
        let vip_labels = |v: &VipView| {
            format!(
                "service=\"{}\",vip=\"{}/{}\"",
                escape(&v.service),
                v.vip,
                v.protocol
            )
        };
        metric(
            out,
            "switchyard_forwarder_vip_flows",
            "gauge",
            "Routes installed per VIP.",
            &f.vips
                .iter()
                .map(|v| (vip_labels(v), v.flows))
                .collect::<Vec<_>>(),
        );
        type Pick = fn(&VipView) -> u64;
        let per_vip: [(&str, &str, Pick); 9] = [
            ("packets", "Client to host packets forwarded.", |v| {
                v.packets
            }),
            ("bytes", "Client to host bytes forwarded.", |v| v.bytes),
            (
                "misses",
                "Packets without a route, handed to the classifier.",
                |v| v.misses,
            ),
            (
                "reply_packets",
                "Host to client packets translated back.",
                |v| v.reply_packets,
            ),
            (
                "reply_bytes",
                "Host to client bytes translated back.",
                |v| v.reply_bytes,
            ),
            ("finals", "FIN or RST packets of routed flows.", |v| {
                v.finals
            }),
            (
                "fw_denied",
                "New connections dropped: denied source.",
                |v| v.fw_denied,
            ),
            (
                "fw_not_allowed",
                "New connections dropped: source not allowed.",
                |v| v.fw_not_allowed,
            ),
            (
                "fw_rate_limited",
                "New connections dropped: source over its rate.",
                |v| v.fw_rate_limited,
            ),
        ];
        for (name, help, pick) in per_vip {
            metric(
                out,
                &format!("switchyard_forwarder_vip_{name}_total"),
                "counter",
                help,
                &f.vips
                    .iter()
                    .map(|v| (vip_labels(v), pick(v)))
                    .collect::<Vec<_>>(),
            );
        }
        metric(
            out,
            "switchyard_forwarder_host_flows",
            "gauge",
            "Routes installed per host endpoint.",
            &f.hosts
                .iter()
                .map(|h| (format!("endpoint=\"{}\"", h.endpoint), h.flows))
                .collect::<Vec<_>>(),
        );
        let mut dp = Vec::new();
        for (hook, counters) in [("xdp", &f.xdp), ("tc", &f.tc)] {
            for (k, v) in counters {
                dp.push((format!("hook=\"{hook}\",counter=\"{k}\""), *v));
            }
        }
        metric(
            out,
            "switchyard_forwarder_dataplane_total",
            "counter",
            "Data-plane counters per program (drops: fib_fail, fib_frag_needed, unsupported, drop_other, ringbuf_full).",
            &dp,
        );
        metric(
            out,
            "switchyard_forwarder_agent_total",
            "counter",
            "Forwarder agent events.",
            &f.agent
                .iter()
                .map(|(k, v)| (format!("event=\"{k}\""), *v))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(c) = classifier {
        metric(
            out,
            "switchyard_classifier_connections",
            "gauge",
            "Connections in the classifier's inventory.",
            &[(String::new(), c.connections)],
        );
        metric(
            out,
            "switchyard_classifier_nat_ports_in_use",
            "gauge",
            "Full-NAT source ports in use.",
            &[(String::new(), c.nat_ports_in_use)],
        );
        metric(
            out,
            "switchyard_classifier_events_total",
            "counter",
            "Classifier inputs and outcomes.",
            &c.events
                .iter()
                .map(|(k, v)| (format!("event=\"{k}\""), *v))
                .collect::<Vec<_>>(),
        );
        metric(
            out,
            "switchyard_classifier_endpoint_connections_total",
            "counter",
            "New connections sent to each host endpoint.",
            &c.endpoints
                .iter()
                .map(|e| {
                    (
                        format!(
                            "vip=\"{}/{}\",endpoint=\"{}\"",
                            e.vip, e.protocol, e.endpoint
                        ),
                        e.new_connections,
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
}
