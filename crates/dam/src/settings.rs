//! [`DamSettings`]: replication level, cache bounds, zombie floor, query
//! retries and re-replication pacing, with the defaults daemons start from.
//! Validation lives here, so a machine is never built with a zero interval
//! (which would make a driver spin) or an empty batch (which would stall
//! re-replication).

use std::time::Duration;

use crate::error::DamError;
use crate::placement::Replication;

/// Settings of one unit's [`crate::Dam`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamSettings {
    /// Copies kept by the owners of each atom.
    pub replication: Replication,
    /// Most atoms kept as cache entries (acquired by queries, the adding
    /// unit's copy, copies handed off); the least recently used go first.
    pub cache_capacity: usize,
    /// A cache entry is dropped this long after it was cached (or its atom
    /// expires, whichever comes first), so a missed delete is forgotten.
    pub cache_ttl: Duration,
    /// Shortest zombie time: a delete asking for less (or for none) keeps
    /// the zombie this long, because the zombie is also what stops late
    /// copies of the deleted atom from bringing it back.
    pub min_zombie: Duration,
    /// Send a `DeleteAtom` to every live unit that does not own a deleted
    /// key, so their cache entries turn into zombies at once (spec: "may be
    /// multicast to all DAM tables to ensure that any copies are deleted").
    pub invalidate_caches_on_delete: bool,
    /// Time to wait for answers to a `QueryAtom` round.
    pub query_timeout: Duration,
    /// Rounds per stage of a query (owners first, then every other unit)
    /// before the query moves on; at least 1.
    pub query_attempts: u32,
    /// First retry delay of an unacknowledged push; doubles per attempt.
    pub push_retry: Duration,
    /// Longest retry delay of a push. Pushes are retried while the target
    /// is live and still an owner; membership (SWIM) ends the others.
    pub push_retry_max: Duration,
    /// Time between two batches of re-replication work.
    pub pace_interval: Duration,
    /// Most pushes (re-replication and retries) sent per batch.
    pub pace_pushes: usize,
    /// Most held atoms re-evaluated (owners recomputed) per batch, and most
    /// expired atoms removed per `handle_timeout`.
    pub pace_scan: usize,
}

impl Default for DamSettings {
    fn default() -> Self {
        Self {
            replication: Replication::Level(1),
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(60),
            min_zombie: Duration::from_secs(1),
            invalidate_caches_on_delete: true,
            query_timeout: Duration::from_millis(100),
            query_attempts: 2,
            push_retry: Duration::from_millis(200),
            push_retry_max: Duration::from_secs(5),
            pace_interval: Duration::from_millis(10),
            pace_pushes: 512,
            pace_scan: 4_096,
        }
    }
}

impl DamSettings {
    pub(crate) fn validate(&self) -> Result<(), DamError> {
        at_least_1ms("query_timeout", self.query_timeout)?;
        at_least_1ms("push_retry", self.push_retry)?;
        at_least_1ms("pace_interval", self.pace_interval)?;
        at_least_1ms("cache_ttl", self.cache_ttl)?;
        if self.push_retry_max < self.push_retry {
            return Err(invalid("push_retry_max", "must be at least push_retry"));
        }
        if self.query_attempts == 0 {
            return Err(invalid("query_attempts", "must be at least 1"));
        }
        if self.pace_pushes == 0 {
            return Err(invalid("pace_pushes", "must be at least 1"));
        }
        if self.pace_scan == 0 {
            return Err(invalid("pace_scan", "must be at least 1"));
        }
        Ok(())
    }
}

fn at_least_1ms(field: &'static str, d: Duration) -> Result<(), DamError> {
    if d < Duration::from_millis(1) {
        Err(invalid(field, "must be at least 1 ms"))
    } else {
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &'static str) -> DamError {
    DamError::InvalidSettings { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(DamSettings::default().validate(), Ok(()));
    }

    #[test]
    fn spinning_or_stalling_settings_are_rejected() {
        type Tweak = fn(&mut DamSettings);
        let cases: [(&str, Tweak); 6] = [
            ("query_timeout", |s| {
                s.query_timeout = Duration::from_micros(10)
            }),
            ("pace_interval", |s| s.pace_interval = Duration::ZERO),
            ("push_retry_max", |s| {
                s.push_retry_max = Duration::from_millis(1)
            }),
            ("query_attempts", |s| s.query_attempts = 0),
            ("pace_pushes", |s| s.pace_pushes = 0),
            ("pace_scan", |s| s.pace_scan = 0),
        ];
        for (field, tweak) in cases {
            let mut s = DamSettings::default();
            tweak(&mut s);
            match s.validate() {
                Err(DamError::InvalidSettings { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
