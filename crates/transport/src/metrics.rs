//! What every daemon's `GET /metrics` shares: the exposition of one process-wide
//! [`Registry`] in the OpenMetrics text format ([`encode`], served as [`CONTENT_TYPE`]), and
//! the pieces of the [`Collector`]s that export counters the daemons already keep in atomics
//! and snapshots: one family of constant samples ([`counters`], [`gauges`]) and the
//! transport's families ([`transport`]).
//!
//! Conventions (docs/OPERATIONS.md, "Monitoring"): names are `switchyard_<part>_…` in snake
//! case; a counter's family is named without `_total`, which the encoder appends to its
//! samples; a family whose name ends in `_bytes` or `_seconds` declares that unit.
//!
//! [`Collector`]: prometheus_client::collector::Collector

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use switchyard_wire::{Family, MessageKind};

use crate::{RejectReason, TransportSnapshot};

/// A label set by reference (the encoder's traits are implemented for owned sets only).
#[derive(Debug, Clone, Copy)]
pub struct ByRef<'a, S>(pub &'a S);

impl<S: EncodeLabelSet> EncodeLabelSet for ByRef<'_, S> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        self.0.encode(encoder)
    }
}

/// The media type of the exposition [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// No labels.
pub const NO_LABELS: [(&str, &str); 0] = [];

/// The whole exposition of `registry`: every family, then `# EOF`.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// `name` split into the part before its unit suffix and the unit, when it has one.
fn unit_of(name: &str) -> (&str, Option<Unit>) {
    for (suffix, unit) in [("_bytes", Unit::Bytes), ("_seconds", Unit::Seconds)] {
        if let Some(base) = name.strip_suffix(suffix) {
            return (base, Some(unit));
        }
    }
    (name, None)
}

fn family<S, M>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (S, M)>,
) -> fmt::Result
where
    S: EncodeLabelSet,
    M: EncodeMetric,
{
    debug_assert!(
        !(kind == MetricType::Counter && name.ends_with("_total")),
        "{name}: the encoder appends _total to counters"
    );
    // Like the registry's own families, a family without samples is left out.
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let (base, unit) = unit_of(name);
    let mut metric = encoder.encode_descriptor(base, help, unit.as_ref(), kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `RowChange` → `row_change`: a message kind as a `kind` label value.
pub fn snake(name: &str) -> String {
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

/// Counts by message kind as `kind` samples: every kind of `family` (zero until counted,
/// so each series exists from the start and `rate()` sees its first increase), then any
/// other kind counted.
pub fn by_kind(
    family: Family,
    counted: impl IntoIterator<Item = (MessageKind, u64)>,
) -> Vec<([(&'static str, String); 1], u64)> {
    let mut counts: Vec<(MessageKind, u64)> = family.kinds().iter().map(|k| (*k, 0)).collect();
    for (kind, n) in counted {
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some(entry) => entry.1 = n,
            None => counts.push((kind, n)),
        }
    }
    counts
        .into_iter()
        .map(|(kind, n)| ([("kind", snake(kind.name()))], n))
        .collect()
}

/// One counter family: `name` (without `_total`), its help and its samples by label set.
pub fn counters<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    family(
        encoder,
        name,
        help,
        MetricType::Counter,
        samples.into_iter().map(|(s, v)| (s, ConstCounter::new(v))),
    )
}

/// A counter without labels.
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    counters(encoder, name, help, [(NO_LABELS, value)])
}

/// One gauge family.
pub fn gauges<S, V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, V)>,
) -> fmt::Result
where
    S: EncodeLabelSet,
    V: EncodeGaugeValue + Send + Sync + fmt::Debug + 'static,
{
    family(
        encoder,
        name,
        help,
        MetricType::Gauge,
        samples.into_iter().map(|(s, v)| (s, ConstGauge::new(v))),
    )
}

/// A gauge without labels.
pub fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    gauges(encoder, name, help, [(NO_LABELS, value)])
}

/// The transport families of one endpoint per label set, named `{part}_transport_…`:
/// `sent`, `sent_bytes`, `send_errors`, `received`, `received_bytes` and `rejected` (by
/// `reason`, every reason listed) counters.
pub fn transport<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    part: &str,
    endpoints: &[(S, TransportSnapshot)],
) -> fmt::Result {
    type Pick = fn(&TransportSnapshot) -> u64;
    let plain: [(&str, &str, Pick); 5] = [
        ("sent", "Datagrams sent.", |t| t.sent),
        (
            "sent_bytes",
            "Bytes of datagrams sent (whole frames).",
            |t| t.sent_bytes,
        ),
        (
            "send_errors",
            "Datagrams that could not be sent (socket or encoding errors).",
            |t| t.send_errors,
        ),
        ("received", "Authenticated datagrams received.", |t| {
            t.received
        }),
        (
            "received_bytes",
            "Bytes of authenticated datagrams received.",
            |t| t.received_bytes,
        ),
    ];
    for (what, help, pick) in plain {
        counters(
            encoder,
            &format!("{part}_transport_{what}"),
            help,
            endpoints.iter().map(|(labels, t)| (ByRef(labels), pick(t))),
        )?;
    }
    counters(
        encoder,
        &format!("{part}_transport_rejected"),
        "Datagrams rejected before reaching the protocol (framing, bad tag, malformed, replayed, stale, too many senders), by reason.",
        endpoints.iter().flat_map(|(labels, t)| {
            RejectReason::ALL
                .iter()
                .map(move |r| ((ByRef(labels), [("reason", r.label())]), t.rejected_for(*r)))
        }),
    )
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            counter(&mut encoder, "switchyard_test_events", "Events.", 3)?;
            gauges(
                &mut encoder,
                "switchyard_test_memory_bytes",
                "Memory.",
                [([("host", "a\"b")], 7u64)],
            )?;
            transport(
                &mut encoder,
                "switchyard_test",
                &[([("host", "1")], TransportSnapshot::default())],
            )
        }
    }

    #[test]
    fn collectors_write_openmetrics_with_suffixes_units_and_escapes() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = encode(&registry).expect("encodes");
        for line in [
            "# TYPE switchyard_test_events counter",
            "switchyard_test_events_total 3",
            "# TYPE switchyard_test_memory_bytes gauge",
            "# UNIT switchyard_test_memory_bytes bytes",
            "switchyard_test_memory_bytes{host=\"a\\\"b\"} 7",
            "switchyard_test_transport_sent_bytes_total{host=\"1\"} 0",
            "switchyard_test_transport_rejected_total{host=\"1\",reason=\"bad-tag\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn kinds_are_snake_case_and_every_kind_of_the_family_is_listed() {
        assert_eq!(snake("RowChange"), "row_change");
        assert_eq!(snake("GetTableSnapshot"), "get_table_snapshot");
        let samples = by_kind(Family::Health, [(MessageKind::Heartbeat, 4)]);
        assert_eq!(samples.len(), Family::Health.kinds().len());
        assert!(samples.contains(&([("kind", "heartbeat".to_owned())], 4)));
        assert!(samples.contains(&([("kind", "goodbye".to_owned())], 0)));
    }

    #[test]
    fn empty_families_are_left_out() {
        #[derive(Debug)]
        struct Empty;
        impl Collector for Empty {
            fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
                counters(
                    &mut encoder,
                    "switchyard_test_none",
                    "None.",
                    Vec::<([(&str, &str); 1], u64)>::new(),
                )
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Empty));
        assert_eq!(encode(&registry).expect("encodes"), "# EOF\n");
    }

    #[test]
    fn only_bytes_and_seconds_are_units() {
        assert!(matches!(
            unit_of("x_memory_bytes"),
            ("x_memory", Some(Unit::Bytes))
        ));
        assert!(matches!(
            unit_of("x_lag_seconds"),
            ("x_lag", Some(Unit::Seconds))
        ));
        assert!(matches!(unit_of("x_bytes_sent"), ("x_bytes_sent", None)));
    }
}
