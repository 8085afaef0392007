//! The router's Prometheus metrics, registered on the caller's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) host: String,
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HostLabels {
    pub(crate) host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
}

/// Every metric of one router.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) connections_in_use: Family<HostLabels, Gauge>,
    pub(crate) connections_opened: Family<HostLabels, Counter>,
    pub(crate) retries: Family<RouteLabels, Counter>,
    pub(crate) outlier_ejections: Family<HostLabels, Counter>,
    pub(crate) rejected: Family<RejectLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) reason: &'static str,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connections_in_use: Family::default(),
            connections_opened: Family::default(),
            retries: Family::default(),
            outlier_ejections: Family::default(),
            rejected: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("switchyard_router");
        r.register(
            "requests",
            "Requests answered, by route, host id (or \"none\") and status",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            m.latency.clone(),
        );
        r.register(
            "host_connections",
            "Open connections to each host",
            m.connections_in_use.clone(),
        );
        r.register(
            "host_connections_opened",
            "Connections opened to each host",
            m.connections_opened.clone(),
        );
        r.register(
            "retries",
            "Requests retried on another host, by route",
            m.retries.clone(),
        );
        r.register(
            "outlier_ejections",
            "Times a host was taken out of rotation after consecutive errors",
            m.outlier_ejections.clone(),
        );
        r.register(
            "rejected",
            "Requests refused by a protection limit, by reason",
            m.rejected.clone(),
        );
        m
    }
}

/// 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}
