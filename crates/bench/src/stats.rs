//! Percentiles of latency samples, for Markdown tables.

/// Summary of signed nanosecond samples (signed: two clocks are compared,
/// and a sample below 0 would be a finding, not something to hide).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: i64,
    /// 90th percentile.
    pub p90: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Largest sample.
    pub max: i64,
    /// Smallest sample.
    pub min: i64,
}

impl Summary {
    /// Nearest-rank percentiles; `None` without samples.
    pub fn of(samples: &[i64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let r = (p / 100.0 * sorted.len() as f64).ceil() as usize;
            sorted[r.clamp(1, sorted.len()) - 1]
        };
        Some(Summary {
            n: sorted.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            min: sorted[0],
        })
    }
}

/// Nanoseconds as milliseconds with three decimals.
pub fn ms(ns: i64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<i64> = (1..=100).rev().collect();
        let s = Summary::of(&samples).expect("samples");
        assert_eq!(
            (s.n, s.p50, s.p90, s.p99, s.max, s.min),
            (100, 50, 90, 99, 100, 1)
        );
        let one = Summary::of(&[7]).expect("one");
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert!(Summary::of(&[]).is_none());
        assert_eq!(ms(1_234_567), "1.235");
    }
}
