//! Counters as JSON (`GET /v1/counters`) and as metrics (`GET /metrics`): the agent's one
//! [`Registry`], encoded by prometheus-client in the OpenMetrics text format
//! ([`switchyard_transport::metrics`]). The hosts' drivers own their counters; a scrape
//! gathers them ([`AgentMetrics::scrape`]) and the registry's collector encodes that
//! snapshot with the transports' counters, read at the same moment.
//!
//! Every series carries `host` (the host's id) and `host_name`; message families split by
//! `kind` (`heartbeat`, `row_change`, …, every kind from the start), rejections by
//! `reason`. Hosts in a host group add a `group` object and the `switchyard_agent_group_*`
//! families (labels `host`, `host_name` and `group`); without groups neither appears.

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use switchyard_transport::TransportSnapshot;
use switchyard_transport::metrics::{by_kind, counters, gauges, transport};
use switchyard_wire::Family;

use crate::daemon::HostHandle;
use crate::daemon::group::GroupCountersView;
use crate::daemon::host::{HostCounters, heartbeats, kind_counts};

/// The JSON document of `GET /v1/counters`.
pub(super) fn counters_json(hosts: &[(HostHandle, HostCounters)]) -> Value {
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(handle, c)| {
            let t = handle.transport.snapshot();
            let p = &c.protocol;
            let mut host = json!({
                "host": handle.name,
                "id": handle.id.0,
                "transport": transport_json(&t),
                "protocol": {
                    "heartbeats_sent": heartbeats(p),
                    "messages_sent": kinds_json(&p.sent),
                    "messages_received": kinds_json(&p.received),
                    "ignored": p.ignored,
                    "row_changes_published": p.row_changes_published,
                    "snapshots_served": p.snapshots_served,
                    "rows_resent": p.rows_resent,
                    "postulate_rounds": p.postulate_rounds,
                    "handshakes_completed": p.handshakes_completed,
                    "units_given_up": p.units_given_up,
                    "handshakes_blocked": p.handshakes_blocked,
                },
                "agent": {
                    "rows": c.rows,
                    "handshakes_pending": c.handshakes_pending,
                    "unknown_sender": c.driver.unknown_sender,
                    "ignored": c.driver.ignored,
                    "send_errors": c.driver.send_errors,
                    "unit_acts": c.driver.unit_acts,
                    "unit_acts_refused": c.driver.unit_acts_refused,
                },
            });
            if let (Some(g), Some(map)) = (&c.group, host.as_object_mut()) {
                map.insert("group".to_owned(), group_json(g));
            }
            host
        })
        .collect();
    json!({ "hosts": hosts })
}

fn group_json(g: &GroupCountersView) -> Value {
    json!({
        "name": g.name,
        "leading": g.leading,
        "members": g.members,
        "gossip_received": g.group.gossip_received,
        "gossip_rejected": g.group.gossip_rejected,
        "gossip_sent": g.group.gossip_sent,
        "gossip_unroutable": g.group.unroutable,
        "gossip_not_gossip": g.driver.gossip_not_gossip,
        "gossip_send_errors": g.driver.gossip_send_errors,
        "announces": g.group.announces,
        "timer_errors": g.group.timer_errors,
        "leader_changes": g.group.leader_changes,
        "heartbeats_direct": g.relay.direct,
        "heartbeats_to_leader": g.relay.to_leader,
        "consolidated_heartbeats_sent": g.relay.consolidated,
        "member_heartbeats_received": g.relay.member_heartbeats,
        "member_heartbeats_rejected": g.relay.rejected,
        "relay_unroutable": g.driver.unroutable,
        "transport": transport_json(&g.transport.snapshot()),
    })
}

fn transport_json(t: &TransportSnapshot) -> Value {
    let mut rejected = Map::new();
    for (reason, n) in &t.rejected {
        rejected.insert(reason.label().to_owned(), json!(n));
    }
    json!({
        "sent": t.sent,
        "sent_bytes": t.sent_bytes,
        "send_errors": t.send_errors,
        "received": t.received,
        "received_bytes": t.received_bytes,
        "rejected": rejected,
        "rejected_total": t.rejected_total(),
    })
}

fn kinds_json(counts: &switchyard_health::MessageCounts) -> Value {
    let mut map = Map::new();
    for (kind, n) in kind_counts(counts) {
        map.insert(kind.to_owned(), json!(n));
    }
    Value::Object(map)
}

/// The agent's registry and the latest counters its collector encodes.
#[derive(Debug)]
pub(crate) struct AgentMetrics {
    registry: Registry,
    latest: Arc<Mutex<Vec<(HostHandle, HostCounters)>>>,
    /// One scrape at a time: gather, then encode what was gathered.
    scrape: tokio::sync::Mutex<()>,
}

impl AgentMetrics {
    pub(crate) fn new() -> Self {
        let latest = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(HostsCollector(Arc::clone(&latest))));
        Self {
            registry,
            latest,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// The exposition of `gathered`, the hosts' counters just read from their drivers.
    pub(crate) async fn scrape(
        &self,
        gathered: Vec<(HostHandle, HostCounters)>,
    ) -> Result<String, fmt::Error> {
        let _one = self.scrape.lock().await;
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = gathered;
        switchyard_transport::metrics::encode(&self.registry)
    }
}

/// Encodes the counters [`AgentMetrics::scrape`] gathered.
#[derive(Debug)]
struct HostsCollector(Arc<Mutex<Vec<(HostHandle, HostCounters)>>>);

fn host_labels(handle: &HostHandle) -> [(&'static str, String); 2] {
    [
        ("host", handle.id.0.to_string()),
        ("host_name", handle.name.clone()),
    ]
}

type Getter = fn(&HostCounters) -> u64;

impl Collector for HostsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let endpoints: Vec<_> = hosts
            .iter()
            .map(|(h, _)| (host_labels(h), h.transport.snapshot()))
            .collect();
        transport(e, "switchyard_agent", &endpoints)?;
        let plain: [(&str, &str, Getter); 12] = [
            (
                "switchyard_agent_heartbeats_sent",
                "Heartbeats sent (one per unit).",
                |c| heartbeats(&c.protocol),
            ),
            (
                "switchyard_agent_row_changes_published",
                "Row changes published (each to every unit).",
                |c| c.protocol.row_changes_published,
            ),
            (
                "switchyard_agent_snapshots_served",
                "Table snapshot requests answered (resyncs).",
                |c| c.protocol.snapshots_served,
            ),
            (
                "switchyard_agent_rows_resent",
                "Rows a unit objected to in a postulate round (each answered with a table snapshot).",
                |c| c.protocol.rows_resent,
            ),
            (
                "switchyard_agent_postulate_rounds",
                "Postulate rounds sent.",
                |c| c.protocol.postulate_rounds,
            ),
            (
                "switchyard_agent_handshakes_completed",
                "Directive handshakes completed.",
                |c| c.protocol.handshakes_completed,
            ),
            (
                "switchyard_agent_handshakes_blocked",
                "Times a handshake found no agreeing unit and every unit silent (blocked).",
                |c| c.protocol.handshakes_blocked,
            ),
            (
                "switchyard_agent_units_given_up",
                "Units given up on during a handshake.",
                |c| c.protocol.units_given_up,
            ),
            (
                "switchyard_agent_messages_ignored",
                "Authentic messages the protocol ignored.",
                |c| c.protocol.ignored,
            ),
            (
                "switchyard_agent_unknown_sender",
                "Authentic messages from a sender that is not a health-cache unit.",
                |c| c.driver.unknown_sender,
            ),
            (
                "switchyard_agent_unit_acts",
                "Operators' acts relayed by units and carried out (drain, undrain, disable, capacity).",
                |c| c.driver.unit_acts,
            ),
            (
                "switchyard_agent_unit_acts_refused",
                "Acts relayed by units and refused ([agent] unit_acts = false, or no such application).",
                |c| c.driver.unit_acts_refused,
            ),
        ];
        for (name, help, get) in plain {
            counters(
                e,
                name,
                help,
                hosts.iter().map(|(h, c)| (host_labels(h), get(c))),
            )?;
        }
        gauges(
            e,
            "switchyard_agent_rows",
            "Rows in the host's table.",
            hosts.iter().map(|(h, c)| (host_labels(h), c.rows as u64)),
        )?;
        gauges(
            e,
            "switchyard_agent_handshakes_pending",
            "Rows whose directive handshake is pending.",
            hosts
                .iter()
                .map(|(h, c)| (host_labels(h), c.handshakes_pending as u64)),
        )?;
        for (name, help, pick) in [
            (
                "switchyard_agent_messages_sent",
                "Protocol messages sent, by kind.",
                (|c: &HostCounters| &c.protocol.sent)
                    as fn(&HostCounters) -> &switchyard_health::MessageCounts,
            ),
            (
                "switchyard_agent_messages_received",
                "Protocol messages received, by kind.",
                |c: &HostCounters| &c.protocol.received,
            ),
        ] {
            counters(
                e,
                name,
                help,
                hosts.iter().flat_map(|(h, c)| {
                    let labels = host_labels(h);
                    by_kind(Family::Health, pick(c).iter())
                        .into_iter()
                        .map(move |(kind, n)| ((labels.clone(), kind), n))
                }),
            )?;
        }
        encode_groups(e, &hosts)
    }
}

type GroupGetter = fn(&GroupCountersView) -> u64;

/// The `switchyard_agent_group_*` families, for hosts in a host group (none without).
fn encode_groups(
    e: &mut DescriptorEncoder<'_>,
    hosts: &[(HostHandle, HostCounters)],
) -> fmt::Result {
    let grouped: Vec<_> = hosts
        .iter()
        .filter_map(|(h, c)| {
            c.group.as_ref().map(|g| {
                let [host, host_name] = host_labels(h);
                ([host, host_name, ("group", g.name.clone())], g)
            })
        })
        .collect();
    let families: [(&str, bool, &str, GroupGetter); 13] = [
        (
            "switchyard_agent_group_members",
            false,
            "Live members of the host's group as it sees them, itself included.",
            |g| g.members as u64,
        ),
        (
            "switchyard_agent_group_leading",
            false,
            "1 while the host leads its group (or is alone in it), else 0.",
            |g| u64::from(g.leading),
        ),
        (
            "switchyard_agent_group_leader_changes",
            true,
            "Leader changes the host saw.",
            |g| g.group.leader_changes,
        ),
        (
            "switchyard_agent_group_gossip_received",
            true,
            "Group gossip datagrams accepted.",
            |g| g.group.gossip_received,
        ),
        (
            "switchyard_agent_group_gossip_rejected",
            true,
            "Group gossip refused (other group, forged or unknown sender, malformed) or other messages on the gossip port.",
            |g| g.group.gossip_rejected + g.driver.gossip_not_gossip,
        ),
        (
            "switchyard_agent_group_gossip_sent",
            true,
            "Group gossip datagrams sent.",
            |g| g.group.gossip_sent,
        ),
        (
            "switchyard_agent_group_gossip_datagrams_rejected",
            true,
            "Datagrams on the gossip port rejected by the transport (bad tag, replay, malformed).",
            |g| g.transport.snapshot().rejected_total(),
        ),
        (
            "switchyard_agent_group_heartbeats_direct",
            true,
            "Own heartbeats sent to units directly (no other member live).",
            |g| g.relay.direct,
        ),
        (
            "switchyard_agent_group_heartbeats_to_leader",
            true,
            "Own heartbeats sent to the group leader.",
            |g| g.relay.to_leader,
        ),
        (
            "switchyard_agent_group_consolidated_heartbeats_sent",
            true,
            "Consolidated heartbeats sent as leader (one per unit per interval).",
            |g| g.relay.consolidated,
        ),
        (
            "switchyard_agent_group_member_heartbeats_received",
            true,
            "Members' heartbeats accepted for relaying.",
            |g| g.relay.member_heartbeats,
        ),
        (
            "switchyard_agent_group_member_heartbeats_rejected",
            true,
            "Members' heartbeats refused (forged, not a live member, not marked forward).",
            |g| g.relay.rejected,
        ),
        (
            "switchyard_agent_group_send_errors",
            true,
            "Gossip that could not be sent and heartbeats without a leader address.",
            |g| g.driver.gossip_send_errors + g.driver.unroutable,
        ),
    ];
    for (name, counter, help, get) in families {
        let samples = grouped.iter().map(|(labels, g)| (labels.clone(), get(g)));
        if counter {
            counters(e, name, help, samples)?;
        } else {
            gauges(e, name, help, samples)?;
        }
    }
    Ok(())
}
