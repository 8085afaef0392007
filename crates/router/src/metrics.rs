//! The router's Prometheus metrics, registered on the caller's registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::session_directory::SessionMetrics;

// Label sets are built for every request: their values are shared (`Arc<str>` labels
// precomputed with the routing rules) or plain numbers, so a lookup allocates nothing.

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: Arc<str>,
    pub(crate) host: HostLabel,
    pub(crate) status: u16,
}

/// A host id as a label value, or `none` for requests no host answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) struct HostLabel(pub(crate) Option<u32>);

impl EncodeLabelValue for HostLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(id) => EncodeLabelValue::encode(&id, encoder),
            None => EncodeLabelValue::encode(&"none", encoder),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HostLabels {
    pub(crate) host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: Arc<str>,
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
    pub(crate) cache_hits: Family<RouteLabels, Counter>,
    pub(crate) cache_misses: Family<RouteLabels, Counter>,
    pub(crate) cache_stores: Family<RouteLabels, Counter>,
    pub(crate) cache_evictions: Family<RouteLabels, Counter>,
    pub(crate) cache_invalidations: Family<RouteLabels, Counter>,
    pub(crate) cache_bytes: Family<RouteLabels, Gauge>,
    /// Session directory lookups and records.
    pub(crate) sessions: SessionMetrics,
    pub(crate) totals: Arc<Totals>,
    /// The route label of requests no route took: `none`.
    pub(crate) no_route: Arc<str>,
}

/// Plain totals next to the labelled families, for JSON documents.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) requests: AtomicU64,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub(crate) by_class: [AtomicU64; 5],
    pub(crate) retries: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) outlier_ejections: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
}

impl Totals {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, status: u16) {
        Self::add(&self.requests);
        if let Some(c) = self.by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            Self::add(c);
        }
    }

    pub(crate) fn snapshot(&self) -> RouterCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouterCounters {
            requests: get(&self.requests),
            responses_1xx: get(&self.by_class[0]),
            responses_2xx: get(&self.by_class[1]),
            responses_3xx: get(&self.by_class[2]),
            responses_4xx: get(&self.by_class[3]),
            responses_5xx: get(&self.by_class[4]),
            retries: get(&self.retries),
            rejected: get(&self.rejected),
            outlier_ejections: get(&self.outlier_ejections),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
        }
    }
}

/// The router's totals since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterCounters {
    /// Requests answered (by a host or by the router itself).
    pub requests: u64,
    /// Answers with a 1xx status (upgrades).
    pub responses_1xx: u64,
    /// Answers with a 2xx status.
    pub responses_2xx: u64,
    /// Answers with a 3xx status.
    pub responses_3xx: u64,
    /// Answers with a 4xx status.
    pub responses_4xx: u64,
    /// Answers with a 5xx status.
    pub responses_5xx: u64,
    /// Attempts repeated on another host.
    pub retries: u64,
    /// Requests refused by a protection limit.
    pub rejected: u64,
    /// Times a host was taken out of rotation by outlier detection.
    pub outlier_ejections: u64,
    /// Requests answered from a response cache.
    pub cache_hits: u64,
    /// Cacheable requests a response cache could not answer.
    pub cache_misses: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) reason: &'static str,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("switchyard_router");
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connections_in_use: Family::default(),
            connections_opened: Family::default(),
            retries: Family::default(),
            outlier_ejections: Family::default(),
            rejected: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_stores: Family::default(),
            cache_evictions: Family::default(),
            cache_invalidations: Family::default(),
            cache_bytes: Family::default(),
            sessions: SessionMetrics::register(r),
            totals: Arc::new(Totals::default()),
            no_route: Arc::from("none"),
        };
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
        r.register(
            "cache_hits",
            "Requests answered from the route's response cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Cacheable requests the route's response cache could not answer",
            m.cache_misses.clone(),
        );
        r.register(
            "cache_stores",
            "Responses stored in the route's cache",
            m.cache_stores.clone(),
        );
        r.register(
            "cache_evictions",
            "Responses evicted (least recently used) to make room",
            m.cache_evictions.clone(),
        );
        r.register(
            "cache_invalidations",
            "Responses removed by invalidation (API or unsafe requests)",
            m.cache_invalidations.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes held by the route's response cache",
            m.cache_bytes.clone(),
        );
        m
    }
}

impl Metrics {
    /// Creates the cache series of `routes` (routes with a response cache) at zero, so hit
    /// ratios and rates have them before the first request.
    pub(crate) fn cache_routes(&self, routes: impl IntoIterator<Item = String>) {
        for route in routes {
            let labels = RouteLabels {
                route: route.into(),
            };
            for family in [
                &self.cache_hits,
                &self.cache_misses,
                &self.cache_stores,
                &self.cache_evictions,
                &self.cache_invalidations,
            ] {
                let _ = family.get_or_create(&labels);
            }
            let _ = self.cache_bytes.get_or_create(&labels);
        }
    }
}

/// 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}
