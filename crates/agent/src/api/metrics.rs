//! Counters as JSON (`GET /v1/counters`) and in the Prometheus text exposition format
//! (`GET /metrics`), hand-written: a few counter families with a `host` label (and `reason`
//! or `type` where they split).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use switchyard_transport::TransportSnapshot;

use crate::daemon::HostHandle;
use crate::daemon::host::{HostCounters, heartbeats, kind_counts};

/// The JSON document of `GET /v1/counters`.
pub(super) fn counters_json(hosts: &[(HostHandle, HostCounters)]) -> Value {
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(handle, c)| {
            let t = handle.transport.snapshot();
            let p = &c.protocol;
            json!({
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
                },
                "agent": {
                    "rows": c.rows,
                    "handshakes_pending": c.handshakes_pending,
                    "unknown_sender": c.driver.unknown_sender,
                    "ignored": c.driver.ignored,
                    "send_errors": c.driver.send_errors,
                },
            })
        })
        .collect();
    json!({ "hosts": hosts })
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
    let simple: [(&str, &str, &str, Getter); 15] = [
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
            "Rows resent to a unit that objected to a postulate.",
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
    out
}
