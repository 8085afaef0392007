//! `GET /metrics`: the unit's one [`Registry`], encoded by prometheus-client in the
//! OpenMetrics text format ([`switchyard_transport::metrics`]). The roles' counters live in
//! atomics and snapshots on their hot paths; collectors read them at scrape time: the
//! unit's info and the health cache ([`UnitCollector`], here), the packet roles
//! ([`super::flows::PacketCollector`]), the session store
//! ([`super::sessions::SessionCollector`]). The router registers its own families on the same
//! registry when it starts (`switchyard_router_*`, [`crate::router_role`]).
//!
//! Every series carries `unit` (the unit's name), a constant label of the registry; the
//! tables list the other labels. Counter families are listed with the `_total` their samples
//! carry. The health cache's:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_lb_info` | gauge (1) | `id`, `roles` |
//! | `switchyard_health_transport_sent_total`, `…_sent_bytes_total`, `…_send_errors_total`, `…_received_total`, `…_received_bytes_total` | counter | |
//! | `switchyard_health_transport_rejected_total` | counter | `reason` |
//! | `switchyard_health_messages_received_total`, `switchyard_health_messages_sent_total` | counter | `kind` |
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

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use switchyard_transport::metrics::{
    NO_LABELS, by_kind, counter, counters, gauge, gauges, transport,
};
use switchyard_wire::{Family, Protocol};

use super::api::UnitInfo;
use super::flows::{PacketCollector, PacketState};
use super::sessions::SessionCollector;
use crate::health_service::HealthCounters;
use crate::{HealthCacheHandle, SessionStoreHandle};

/// Every ignore reason the service labels, so each series exists from the
/// start (a counter that appears only when it first counts confuses
/// `rate()`).
const IGNORED_REASONS: [&str; 12] = [
    "other-host",
    "sender-mismatch",
    "unit-mismatch",
    "unknown-host",
    "departed",
    "stale-generation",
    "invalid-row",
    "unknown-unit",
    "not-for-this-machine",
    // Counted by the service before the cache sees a message (`trust`, acts).
    "unknown-sender",
    "not-a-member",
    "unexpected-reply",
];

/// The unit's registry with a collector for each role it runs (the router registers its
/// families itself when it starts).
pub fn registry(
    unit: &UnitInfo,
    packet_services: Vec<(SocketAddr, Protocol, String)>,
    health: Option<HealthCacheHandle>,
    packet: PacketState,
    sessions: Option<SessionStoreHandle>,
) -> Registry {
    // Every series of the unit carries its name (collectors' and the router's families alike).
    let mut registry = Registry::with_labels(std::iter::once((
        Cow::Borrowed("unit"),
        Cow::Owned(unit.name.clone()),
    )));
    registry.register_collector(Box::new(UnitCollector {
        unit: unit.clone(),
        health,
    }));
    if packet.forwarder.is_some() || packet.classifier.is_some() {
        registry.register_collector(Box::new(PacketCollector {
            packet,
            services: packet_services,
        }));
    }
    if let Some(store) = sessions {
        registry.register_collector(Box::new(SessionCollector(store)));
    }
    registry
}

/// `switchyard_lb_info` and, with the health-cache role, the `switchyard_health_*` families.
#[derive(Debug)]
pub struct UnitCollector {
    /// The unit (its name is the registry's `unit` label).
    unit: UnitInfo,
    health: Option<HealthCacheHandle>,
}

impl Collector for UnitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let id = self.unit.id.to_string();
        let roles = self.unit.roles.join(",");
        gauges(
            &mut encoder,
            "switchyard_lb_info",
            "The unit, its id and its configured roles.",
            [([("id", id.as_str()), ("roles", roles.as_str())], 1u64)],
        )?;
        match &self.health {
            Some(health) => encode_health(&mut encoder, &health.counters()),
            None => Ok(()),
        }
    }
}

fn encode_health(e: &mut DescriptorEncoder<'_>, c: &HealthCounters) -> fmt::Result {
    transport(e, "switchyard_health", &[(NO_LABELS, c.transport.clone())])?;
    let k = &c.cache;
    counters(
        e,
        "switchyard_health_messages_received",
        "Messages handled by the cache, by kind.",
        by_kind(Family::Health, k.received.iter()),
    )?;
    counters(
        e,
        "switchyard_health_messages_sent",
        "Messages sent by the cache, by kind.",
        by_kind(Family::Health, k.sent.iter()),
    )?;
    let ignored = &c.service.ignored;
    counters(
        e,
        "switchyard_health_messages_ignored",
        "Authenticated messages the cache ignored, by reason.",
        IGNORED_REASONS
            .iter()
            .map(|r| (*r, ignored.get(r).copied().unwrap_or(0)))
            .chain(
                ignored
                    .iter()
                    .filter(|(r, _)| !IGNORED_REASONS.contains(r))
                    .map(|(r, n)| (*r, *n)),
            )
            .map(|(reason, n)| ([("reason", reason)], n)),
    )?;
    let plain: [(&str, &str, u64); 10] = [
        (
            "switchyard_health_messages_unroutable",
            "Messages dropped because the destination's address is unknown.",
            c.service.unroutable,
        ),
        (
            "switchyard_health_stale_row_changes",
            "Row changes not newer than the cache.",
            k.stale_row_changes,
        ),
        (
            "switchyard_health_snapshots_requested",
            "Table snapshots requested (resyncs started).",
            k.snapshots_requested,
        ),
        (
            "switchyard_health_snapshots_completed",
            "Table snapshots applied (resyncs completed).",
            k.snapshots_completed,
        ),
        (
            "switchyard_health_partial_snapshots_dropped",
            "Incomplete snapshots dropped after the timeout.",
            k.partial_snapshots_dropped,
        ),
        (
            "switchyard_health_age_outs",
            "Hosts aged out for lack of heartbeats.",
            k.age_outs,
        ),
        (
            "switchyard_health_goodbyes",
            "Hosts cleared by a goodbye.",
            k.goodbyes,
        ),
        (
            "switchyard_health_generation_resets",
            "Hosts resynchronised after their table generation went backwards.",
            k.generation_resets,
        ),
        (
            "switchyard_health_postulate_replies",
            "Answers to postulate rounds (the directive handshake).",
            k.postulate_replies,
        ),
        (
            "switchyard_health_allotments",
            "Allotments issued.",
            k.allotments,
        ),
    ];
    for (name, help, value) in plain {
        counter(e, name, help, value)?;
    }
    gauge(e, "switchyard_health_hosts", "Hosts in the cache.", c.hosts)?;
    gauge(
        e,
        "switchyard_health_hosts_in_sync",
        "Hosts whose cached table matched their last heartbeat.",
        c.hosts_in_sync,
    )?;
    gauge(
        e,
        "switchyard_health_endpoints",
        "Application endpoints in the cache.",
        c.endpoints,
    )?;
    gauge(
        e,
        "switchyard_health_services",
        "Services with at least one endpoint in the cache.",
        c.services,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_without_the_health_role_exports_its_info_only() {
        let unit = UnitInfo {
            name: "lb-\"2\"".to_owned(),
            id: 2,
            roles: vec!["forwarder".to_owned()],
            running: vec![],
        };
        let registry = registry(&unit, Vec::new(), None, PacketState::default(), None);
        let text = switchyard_transport::metrics::encode(&registry).expect("encodes");
        assert!(
            text.contains(
                "switchyard_lb_info{unit=\"lb-\\\"2\\\"\",id=\"2\",roles=\"forwarder\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("switchyard_health_"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
