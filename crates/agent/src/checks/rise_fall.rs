//! The rise/fall state machine: turns a stream of probe results into a health. Pure: no
//! clock, no I/O.

use switchyard_wire::health::Health;

/// Health from consecutive probe results: it starts [`Health::Unknown`]; `rise`
/// consecutive successes make it [`Health::Healthy`], `fall` consecutive failures
/// [`Health::Failing`]. A single result against the current health changes nothing until
/// its streak is long enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    health: Health,
    successes: u32,
    failures: u32,
}

impl RiseFall {
    /// A machine needing `rise` successes to become healthy and `fall` failures to become
    /// failing (each at least 1; 0 counts as 1).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            health: Health::Unknown,
            successes: 0,
            failures: 0,
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one probe result; returns the new health when it changed.
    pub fn record(&mut self, passed: bool) -> Option<Health> {
        let next = if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= self.rise).then_some(Health::Healthy)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.fall).then_some(Health::Failing)
        };
        match next {
            Some(health) if health != self.health => {
                self.health = health;
                Some(health)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(machine: &mut RiseFall, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&r| machine.record(r)).collect()
    }

    #[test]
    fn starts_unknown_and_rises_after_rise_successes() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(m.health(), Health::Unknown);
        assert_eq!(feed(&mut m, &[true]), [None]);
        assert_eq!(m.health(), Health::Unknown);
        assert_eq!(feed(&mut m, &[true]), [Some(Health::Healthy)]);
        // Further successes change nothing.
        assert_eq!(feed(&mut m, &[true, true]), [None, None]);
    }

    #[test]
    fn falls_after_fall_consecutive_failures_only() {
        let mut m = RiseFall::new(1, 3);
        assert_eq!(m.record(true), Some(Health::Healthy));
        // Two failures, a success, two failures: never three in a row.
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(m.health(), Health::Healthy);
        assert_eq!(m.record(false), Some(Health::Failing));
        assert_eq!(m.record(false), None);
    }

    #[test]
    fn starts_unknown_and_falls_without_ever_rising() {
        let mut m = RiseFall::new(2, 2);
        assert_eq!(feed(&mut m, &[false, false]), [None, Some(Health::Failing)]);
    }

    #[test]
    fn recovers_after_rise_successes() {
        let mut m = RiseFall::new(3, 1);
        assert_eq!(m.record(false), Some(Health::Failing));
        // The failure in the middle restarts the streak (and is no change: still failing).
        assert_eq!(
            feed(&mut m, &[true, true, false, true, true, true]),
            [None, None, None, None, None, Some(Health::Healthy)]
        );
        assert_eq!(m.health(), Health::Healthy);
    }

    #[test]
    fn alternating_results_stay_unknown() {
        let mut m = RiseFall::new(2, 2);
        assert_eq!(feed(&mut m, &[true, false, true, false, true]), [None; 5]);
        assert_eq!(m.health(), Health::Unknown);
    }

    #[test]
    fn zero_counts_act_as_one() {
        let mut m = RiseFall::new(0, 0);
        assert_eq!(m.record(true), Some(Health::Healthy));
        assert_eq!(m.record(false), Some(Health::Failing));
    }
}
