//! Rate limiting for log lines about network input, shared by every daemon: a flood of
//! forged or stale datagrams must not become a flood of log lines. Counting is the
//! counters' job; this only decides when a line is written and how many events it
//! summarises.

use std::time::{Duration, Instant};

/// Allows one log line per `every`; counts the events in between.
///
/// ```
/// use std::time::{Duration, Instant};
/// use switchyard_transport::Throttle;
///
/// let mut log = Throttle::new(Duration::from_secs(10));
/// if let Some(suppressed) = log.event(Instant::now()) {
///     eprintln!("datagram rejected ({suppressed} more since the last line)");
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one event at `now`. `Some(n)` means "log now", `n` being the
    /// number of events suppressed since the previous line.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_suppressed_count() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(5));
        assert_eq!(t.event(t0), Some(0));
        assert_eq!(t.event(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.event(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.event(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(t.event(t0 + Duration::from_secs(6)), None);
    }
}
