//! One parsed `/metrics` scrape (OpenMetrics text, through a real parser) of a unit or an
//! agent, with the checks the tests make on it.

use std::collections::BTreeSet;

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

use super::cluster::Cluster;

/// The content type every switchyard process serves `/metrics` with.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Scrape {
    pub what: String,
    pub text: String,
    families: MetricsExposition<OpenMetricsType, OpenMetricsValue>,
}

impl Scrape {
    pub fn parse(what: &str, status: u16, content_type: Option<&str>, text: String) -> Self {
        assert_eq!(status, 200, "{what}: {text}");
        assert_eq!(content_type, Some(OPENMETRICS), "{what}");
        let families = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("{what}: not OpenMetrics ({e:?}):\n{text}"));
        Self {
            what: what.to_owned(),
            text,
            families,
        }
    }

    pub fn unit(c: &Cluster, j: usize) -> Self {
        let r = c
            .unit_get(j, "/metrics")
            .unwrap_or_else(|e| panic!("unit {j} /metrics: {e}"));
        Self::parse(
            &format!("unit {j}"),
            r.status,
            r.content_type.as_deref(),
            r.text(),
        )
    }

    pub fn agent(c: &Cluster, a: usize) -> Self {
        let r = c
            .agent_request(a, "GET", "/metrics", None)
            .unwrap_or_else(|e| panic!("agent {a} /metrics: {e}"));
        Self::parse(
            &format!("agent {a}"),
            r.status,
            r.content_type.as_deref(),
            r.body,
        )
    }

    /// Asserts family `name` has type `kind` and exactly the label names `labels`.
    #[track_caller]
    pub fn family(&self, name: &str, kind: OpenMetricsType, labels: &[&str]) {
        let family = self
            .families
            .families
            .get(name)
            .unwrap_or_else(|| panic!("{}: no family {name}:\n{}", self.what, self.text));
        assert_eq!(family.family_type, kind, "{}: {name}", self.what);
        let mut have: Vec<&str> = family
            .get_label_names()
            .iter()
            .map(String::as_str)
            .collect();
        let mut want = labels.to_vec();
        have.sort_unstable();
        want.sort_unstable();
        assert_eq!(have, want, "{}: {name}'s labels", self.what);
    }

    /// The sum of the samples of `name` whose labels include `labels` (a histogram's count).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(family) = self.families.families.get(name) else {
            return 0.0;
        };
        family
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().expect("labels");
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|s| match &s.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    }

    /// The names of the samples (what PromQL selects): `…_total` for counters, `…_bucket`,
    /// `…_sum` and `…_count` for histograms, the family's name otherwise.
    pub fn sample_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (name, family) in &self.families.families {
            match family.family_type {
                OpenMetricsType::Counter => {
                    out.insert(format!("{name}_total"));
                }
                OpenMetricsType::Histogram => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    out.insert(name.clone());
                }
            }
        }
        out
    }
}
