//! `GET /metrics`: the health-cache counters in the Prometheus text
//! exposition format (version 0.0.4). Names start with
//! `switchyard_health_`; message kinds and reasons are labels:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_lb_info` | gauge (1) | `unit`, `id`, `roles` |
//! | `switchyard_health_transport_sent_total` | counter | |
//! | `switchyard_health_transport_sent_bytes_total` | counter | |
//! | `switchyard_health_transport_send_errors_total` | counter | |
//! | `switchyard_health_transport_received_total` | counter | |
//! | `switchyard_health_transport_received_bytes_total` | counter | |
//! | `switchyard_health_transport_rejected_total` | counter | `reason` |
//! | `switchyard_health_messages_received_total` | counter | `kind` |
//! | `switchyard_health_messages_sent_total` | counter | `kind` |
//! | `switchyard_health_messages_ignored_total` | counter | `reason` |
//! | `switchyard_health_messages_unroutable_total` | counter | |
//! | `switchyard_health_stale_row_changes_total` | counter | |
//! | `switchyard_health_snapshots_requested_total` | counter | |
//! | `switchyard_health_snapshots_completed_total` | counter | |
//! | `switchyard_health_partial_snapshots_dropped_total` | counter | |
//! | `switchyard_health_age_outs_total` | counter | |
//! | `switchyard_health_goodbyes_total` | counter | |
//! | `switchyard_health_generation_resets_total` | counter | |
//! | `switchyard_health_postulate_replies_total` | counter | |
//! | `switchyard_health_allotments_total` | counter | |
//! | `switchyard_health_hosts` | gauge | |
//! | `switchyard_health_hosts_in_sync` | gauge | |
//! | `switchyard_health_endpoints` | gauge | |
//! | `switchyard_health_services` | gauge | |

use std::fmt::Write;

use switchyard_transport::RejectReason;

use super::api::UnitInfo;
use crate::health_service::HealthCounters;

/// Every ignore reason the service labels, so each series exists from the
/// start (a counter that appears only when it first counts confuses
/// `rate()`).
const IGNORED_REASONS: [&str; 9] = [
    "other-host",
    "sender-mismatch",
    "unit-mismatch",
    "unknown-host",
    "departed",
    "stale-generation",
    "invalid-row",
    "unknown-unit",
    "not-for-this-machine",
];

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `RowChange` → `row_change`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders the metrics of a unit (health counters if it runs the role).
pub(super) fn render(unit: &UnitInfo, counters: Option<&HealthCounters>) -> String {
    let mut out = Out(String::new());
    out.header(
        "switchyard_lb_info",
        "gauge",
        "The unit, its id and its configured roles.",
    );
    let id = unit.id.to_string();
    let roles = unit.roles.join(",");
    out.sample(
        "switchyard_lb_info",
        &[("unit", &unit.name), ("id", &id), ("roles", &roles)],
        1,
    );
    let Some(c) = counters else {
        return out.0;
    };
    let t = &c.transport;
    out.single(
        "switchyard_health_transport_sent_total",
        "counter",
        "Datagrams sent on the health control port.",
        t.sent,
    );
    out.single(
        "switchyard_health_transport_sent_bytes_total",
        "counter",
        "Bytes sent on the health control port.",
        t.sent_bytes,
    );
    out.single(
        "switchyard_health_transport_send_errors_total",
        "counter",
        "Datagrams that could not be sent.",
        t.send_errors,
    );
    out.single(
        "switchyard_health_transport_received_total",
        "counter",
        "Authenticated datagrams received.",
        t.received,
    );
    out.single(
        "switchyard_health_transport_received_bytes_total",
        "counter",
        "Bytes of authenticated datagrams received.",
        t.received_bytes,
    );
    out.header(
        "switchyard_health_transport_rejected_total",
        "counter",
        "Datagrams rejected before reaching the cache, by reason.",
    );
    for reason in RejectReason::ALL {
        out.sample(
            "switchyard_health_transport_rejected_total",
            &[("reason", reason.label())],
            t.rejected_for(reason),
        );
    }

    let k = &c.cache;
    out.header(
        "switchyard_health_messages_received_total",
        "counter",
        "Messages handled by the cache, by kind.",
    );
    for (kind, n) in k.received.iter() {
        out.sample(
            "switchyard_health_messages_received_total",
            &[("kind", &snake(kind.name()))],
            n,
        );
    }
    out.header(
        "switchyard_health_messages_sent_total",
        "counter",
        "Messages sent by the cache, by kind.",
    );
    for (kind, n) in k.sent.iter() {
        out.sample(
            "switchyard_health_messages_sent_total",
            &[("kind", &snake(kind.name()))],
            n,
        );
    }
    out.header(
        "switchyard_health_messages_ignored_total",
        "counter",
        "Authenticated messages the cache ignored, by reason.",
    );
    for reason in IGNORED_REASONS {
        let n = c.service.ignored.get(reason).copied().unwrap_or(0);
        out.sample(
            "switchyard_health_messages_ignored_total",
            &[("reason", reason)],
            n,
        );
    }
    for (reason, n) in &c.service.ignored {
        if !IGNORED_REASONS.contains(reason) {
            out.sample(
                "switchyard_health_messages_ignored_total",
                &[("reason", reason)],
                *n,
            );
        }
    }
    out.single(
        "switchyard_health_messages_unroutable_total",
        "counter",
        "Messages dropped because the destination's address is unknown.",
        c.service.unroutable,
    );
    out.single(
        "switchyard_health_stale_row_changes_total",
        "counter",
        "Row changes not newer than the cache.",
        k.stale_row_changes,
    );
    out.single(
        "switchyard_health_snapshots_requested_total",
        "counter",
        "Table snapshots requested (resyncs started).",
        k.snapshots_requested,
    );
    out.single(
        "switchyard_health_snapshots_completed_total",
        "counter",
        "Table snapshots applied (resyncs completed).",
        k.snapshots_completed,
    );
    out.single(
        "switchyard_health_partial_snapshots_dropped_total",
        "counter",
        "Incomplete snapshots dropped after the timeout.",
        k.partial_snapshots_dropped,
    );
    out.single(
        "switchyard_health_age_outs_total",
        "counter",
        "Hosts aged out for lack of heartbeats.",
        k.age_outs,
    );
    out.single(
        "switchyard_health_goodbyes_total",
        "counter",
        "Hosts cleared by a goodbye.",
        k.goodbyes,
    );
    out.single(
        "switchyard_health_generation_resets_total",
        "counter",
        "Hosts resynchronised after their table generation went backwards.",
        k.generation_resets,
    );
    out.single(
        "switchyard_health_postulate_replies_total",
        "counter",
        "Answers to postulate (drain handshake) rounds.",
        k.postulate_replies,
    );
    out.single(
        "switchyard_health_allotments_total",
        "counter",
        "Allotments issued.",
        k.allotments,
    );
    out.single(
        "switchyard_health_hosts",
        "gauge",
        "Hosts in the cache.",
        c.hosts,
    );
    out.single(
        "switchyard_health_hosts_in_sync",
        "gauge",
        "Hosts whose cached table matched their last heartbeat.",
        c.hosts_in_sync,
    );
    out.single(
        "switchyard_health_endpoints",
        "gauge",
        "Application endpoints in the cache.",
        c.endpoints,
    );
    out.single(
        "switchyard_health_services",
        "gauge",
        "Services with at least one endpoint in the cache.",
        c.services,
    );
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_snake_case_and_labels_are_escaped() {
        assert_eq!(snake("RowChange"), "row_change");
        assert_eq!(snake("Heartbeat"), "heartbeat");
        assert_eq!(snake("GetTableSnapshot"), "get_table_snapshot");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_unit_without_the_health_role_exports_its_info_only() {
        let unit = UnitInfo {
            name: "lb-2".to_owned(),
            id: 2,
            roles: vec!["forwarder".to_owned()],
            running: vec![],
        };
        let text = render(&unit, None);
        assert!(text.contains("switchyard_lb_info{unit=\"lb-2\",id=\"2\",roles=\"forwarder\"} 1"));
        assert!(!text.contains("switchyard_health_"));
    }
}
