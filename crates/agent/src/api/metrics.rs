//! Counters as JSON (`GET /v1/counters`) and in the Prometheus text exposition format
//! (`GET /metrics`), hand-written: a few counter families with a `host` label (and `reason`
//! or `type` where they split). Hosts in a host group add a `group` object and the
//! `switchyard_agent_group_*` families (labels `host` and `group`); without groups neither
//! appears.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use switchyard_transport::TransportSnapshot;

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

/// One metric family: its header and samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Getter = fn(&TransportSnapshot, &HostCounters) -> u64;

/// The Prometheus text exposition of every host's counters.
pub(super) fn exposition(hosts: &[(HostHandle, HostCounters)]) -> String {
    let snapshots: Vec<TransportSnapshot> =
        hosts.iter().map(|(h, _)| h.transport.snapshot()).collect();
    let mut out = String::new();
    let simple: [(&str, &str, &str, Getter); 16] = [
        (
            "switchyard_agent_datagrams_sent_total",
            "counter",
            "Datagrams sent to LB units.",
            |t, _| t.sent,
        ),
        (
            "switchyard_agent_datagram_bytes_sent_total",
            "counter",
            "Bytes of datagrams sent to LB units.",
            |t, _| t.sent_bytes,
        ),
        (
            "switchyard_agent_send_errors_total",
            "counter",
            "Messages that could not be sent.",
            |t, _| t.send_errors,
        ),
        (
            "switchyard_agent_datagrams_received_total",
            "counter",
            "Authentic datagrams received.",
            |t, _| t.received,
        ),
        (
            "switchyard_agent_datagram_bytes_received_total",
            "counter",
            "Bytes of authentic datagrams received.",
            |t, _| t.received_bytes,
        ),
        (
            "switchyard_agent_heartbeats_sent_total",
            "counter",
            "Heartbeats sent (one per unit).",
            |_, c| heartbeats(&c.protocol),
        ),
        (
            "switchyard_agent_row_changes_published_total",
            "counter",
            "Row changes published (each to every unit).",
            |_, c| c.protocol.row_changes_published,
        ),
        (
            "switchyard_agent_snapshots_served_total",
            "counter",
            "Table snapshot requests answered (resyncs).",
            |_, c| c.protocol.snapshots_served,
        ),
        (
            "switchyard_agent_rows_resent_total",
            "counter",
            "Rows a unit objected to in a postulate round (each answered with a table snapshot).",
            |_, c| c.protocol.rows_resent,
        ),
        (
            "switchyard_agent_postulate_rounds_total",
            "counter",
            "Postulate rounds sent.",
            |_, c| c.protocol.postulate_rounds,
        ),
        (
            "switchyard_agent_handshakes_completed_total",
            "counter",
            "Directive handshakes completed.",
            |_, c| c.protocol.handshakes_completed,
        ),
        (
            "switchyard_agent_handshakes_blocked_total",
            "counter",
            "Times a handshake found no agreeing unit and every unit silent (blocked).",
            |_, c| c.protocol.handshakes_blocked,
        ),
        (
            "switchyard_agent_units_given_up_total",
            "counter",
            "Units given up on during a handshake.",
            |_, c| c.protocol.units_given_up,
        ),
        (
            "switchyard_agent_messages_ignored_total",
            "counter",
            "Authentic messages the protocol ignored.",
            |_, c| c.protocol.ignored,
        ),
        (
            "switchyard_agent_unknown_sender_total",
            "counter",
            "Authentic messages from a sender that is not a health-cache unit.",
            |_, c| c.driver.unknown_sender,
        ),
        (
            "switchyard_agent_rows",
            "gauge",
            "Rows in the host's table.",
            |_, c| c.rows as u64,
        ),
    ];
    for (name, kind, help, get) in simple {
        let mut f = Family::new(&mut out, name, kind, help);
        for ((handle, c), t) in hosts.iter().zip(&snapshots) {
            f.sample(name, &[("host", &handle.name)], get(t, c));
        }
    }
    {
        let name = "switchyard_agent_handshakes_pending";
        let mut f = Family::new(
            &mut out,
            name,
            "gauge",
            "Rows whose directive handshake is pending.",
        );
        for (handle, c) in hosts {
            f.sample(name, &[("host", &handle.name)], c.handshakes_pending as u64);
        }
    }
    {
        let name = "switchyard_agent_datagrams_rejected_total";
        let mut f = Family::new(
            &mut out,
            name,
            "counter",
            "Datagrams rejected by the transport, by reason.",
        );
        for ((handle, _), t) in hosts.iter().zip(&snapshots) {
            for (reason, n) in &t.rejected {
                f.sample(
                    name,
                    &[("host", &handle.name), ("reason", reason.label())],
                    *n,
                );
            }
        }
    }
    for (name, help, pick) in [
        (
            "switchyard_agent_messages_sent_total",
            "Protocol messages sent, by type.",
            (|c: &HostCounters| &c.protocol.sent)
                as fn(&HostCounters) -> &switchyard_health::MessageCounts,
        ),
        (
            "switchyard_agent_messages_received_total",
            "Protocol messages received, by type.",
            |c: &HostCounters| &c.protocol.received,
        ),
    ] {
        let mut f = Family::new(&mut out, name, "counter", help);
        for (handle, c) in hosts {
            for (kind, n) in kind_counts(pick(c)) {
                f.sample(name, &[("host", &handle.name), ("type", kind)], n);
            }
        }
    }
    group_exposition(&mut out, hosts);
    out
}

type GroupGetter = fn(&GroupCountersView) -> u64;

/// The `switchyard_agent_group_*` families, for hosts in a host group (none without).
fn group_exposition(out: &mut String, hosts: &[(HostHandle, HostCounters)]) {
    let grouped: Vec<(&str, &GroupCountersView)> = hosts
        .iter()
        .filter_map(|(h, c)| c.group.as_ref().map(|g| (h.name.as_str(), g)))
        .collect();
    if grouped.is_empty() {
        return;
    }
    let families: [(&str, &str, &str, GroupGetter); 13] = [
        (
            "switchyard_agent_group_members",
            "gauge",
            "Live members of the host's group as it sees them, itself included.",
            |g| g.members as u64,
        ),
        (
            "switchyard_agent_group_leading",
            "gauge",
            "1 while the host leads its group (or is alone in it), else 0.",
            |g| u64::from(g.leading),
        ),
        (
            "switchyard_agent_group_leader_changes_total",
            "counter",
            "Leader changes the host saw.",
            |g| g.group.leader_changes,
        ),
        (
            "switchyard_agent_group_gossip_received_total",
            "counter",
            "Group gossip datagrams accepted.",
            |g| g.group.gossip_received,
        ),
        (
            "switchyard_agent_group_gossip_rejected_total",
            "counter",
            "Group gossip refused (other group, forged or unknown sender, malformed) or other messages on the gossip port.",
            |g| g.group.gossip_rejected + g.driver.gossip_not_gossip,
        ),
        (
            "switchyard_agent_group_gossip_sent_total",
            "counter",
            "Group gossip datagrams sent.",
            |g| g.group.gossip_sent,
        ),
        (
            "switchyard_agent_group_gossip_datagrams_rejected_total",
            "counter",
            "Datagrams on the gossip port rejected by the transport (bad tag, replay, malformed).",
            |g| g.transport.snapshot().rejected_total(),
        ),
        (
            "switchyard_agent_group_heartbeats_direct_total",
            "counter",
            "Own heartbeats sent to units directly (no other member live).",
            |g| g.relay.direct,
        ),
        (
            "switchyard_agent_group_heartbeats_to_leader_total",
            "counter",
            "Own heartbeats sent to the group leader.",
            |g| g.relay.to_leader,
        ),
        (
            "switchyard_agent_group_consolidated_heartbeats_sent_total",
            "counter",
            "Consolidated heartbeats sent as leader (one per unit per interval).",
            |g| g.relay.consolidated,
        ),
        (
            "switchyard_agent_group_member_heartbeats_received_total",
            "counter",
            "Members' heartbeats accepted for relaying.",
            |g| g.relay.member_heartbeats,
        ),
        (
            "switchyard_agent_group_member_heartbeats_rejected_total",
            "counter",
            "Members' heartbeats refused (forged, not a live member, not marked forward).",
            |g| g.relay.rejected,
        ),
        (
            "switchyard_agent_group_send_errors_total",
            "counter",
            "Gossip that could not be sent and heartbeats without a leader address.",
            |g| g.driver.gossip_send_errors + g.driver.unroutable,
        ),
    ];
    for (name, kind, help, get) in families {
        let mut f = Family::new(out, name, kind, help);
        for (host, g) in &grouped {
            f.sample(name, &[("host", host), ("group", &g.name)], get(g));
        }
    }
}
