//! Versions, the total order on atom states, and the clock mapping.
//!
//! **Collisions.** Two states of one key are compared by
//! `(version, zombie, added_by, expires_at_ms, data)`, lexicographically;
//! the greater state wins ([`outranks`]). The order is total, so merging
//! (keep the greater) is commutative, associative and idempotent: copies
//! that see the same states in any order, duplicated or not, end equal, and
//! a late or duplicated older state never overwrites a newer one. At equal
//! versions a zombie beats a live atom, so a delete is never undone by a
//! copy of the atom it deleted.
//!
//! **Versions** are hybrid logical clocks ([`VersionClock`]): at least the
//! Unix time in milliseconds shifted left by 16 bits, above any version
//! this unit issued or saw for the key. A re-add after a delete therefore
//! outranks the zombie even at a unit that never saw it, and the last
//! writer wins by wall-clock time (to within clock skew) when two units
//! write one key concurrently.
//!
//! **Clocks.** The machine runs on `Instant` (`now` of every call) and keeps
//! its deadlines in milliseconds since the instant it was built ("local
//! ms"). Atom expiries on the wire are Unix milliseconds; the unit maps
//! them with the Unix time the daemon read once at construction
//! ([`Clock`]), so a wall-clock step after start does not move deadlines.
//! Units disagree on an expiry only by their clock skew.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use switchyard_wire::dam::Atom;

/// Whole milliseconds of `d`, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The total order on states of one key (see the module header).
pub fn compare(a: &Atom, b: &Atom) -> Ordering {
    let key = |x: &Atom| {
        (
            x.meta.version,
            x.meta.zombie,
            x.meta.added_by,
            x.meta.expires_at_ms,
        )
    };
    key(a).cmp(&key(b)).then_with(|| a.data.cmp(&b.data))
}

/// Whether state `a` wins over state `b`.
pub fn outranks(a: &Atom, b: &Atom) -> bool {
    compare(a, b) == Ordering::Greater
}

/// Issues versions: hybrid logical clock, strictly increasing per unit.
#[derive(Debug, Clone, Default)]
pub(crate) struct VersionClock {
    last: u64,
}

impl VersionClock {
    /// A version above `known` (the key's current version here, if any)
    /// and above every version issued before, at least `unix_ms << 16`.
    pub(crate) fn next(&mut self, unix_ms: u64, known: Option<u64>) -> u64 {
        let wall = unix_ms.saturating_mul(1 << 16);
        let above_known = known.map_or(0, |v| v.saturating_add(1));
        let version = wall.max(above_known).max(self.last.saturating_add(1));
        self.last = version;
        version
    }
}

/// Maps `Instant`s to local milliseconds and Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    anchor: Instant,
    anchor_unix_ms: u64,
}

impl Clock {
    pub(crate) fn new(anchor: Instant, anchor_unix_ms: u64) -> Self {
        Self {
            anchor,
            anchor_unix_ms,
        }
    }

    /// Milliseconds since the anchor (0 before it).
    pub(crate) fn local_ms(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.anchor))
    }

    /// The Unix time of a local time.
    pub(crate) fn unix_ms(&self, local_ms: u64) -> u64 {
        self.anchor_unix_ms.saturating_add(local_ms)
    }

    /// The local time of a Unix time (0 if before the anchor).
    pub(crate) fn local_of_unix(&self, unix_ms: u64) -> u64 {
        unix_ms.saturating_sub(self.anchor_unix_ms)
    }

    /// The instant of a local time, if representable.
    pub(crate) fn instant(&self, local_ms: u64) -> Option<Instant> {
        self.anchor.checked_add(Duration::from_millis(local_ms))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use switchyard_wire::UnitId;
    use switchyard_wire::dam::AtomMeta;

    use super::*;

    fn atom(version: u64, zombie: bool, by: u32, expires: u64, data: &[u8]) -> Atom {
        Atom {
            key: b"k".to_vec(),
            data: data.to_vec(),
            meta: AtomMeta {
                added_by: UnitId(by),
                version,
                zombie,
                expires_at_ms: expires,
            },
        }
    }

    #[test]
    fn order_is_version_then_zombie_then_adder_then_expiry_then_data() {
        assert!(outranks(
            &atom(2, false, 1, 0, b""),
            &atom(1, true, 9, 9, b"z")
        ));
        assert!(outranks(
            &atom(1, true, 1, 0, b""),
            &atom(1, false, 9, 9, b"z")
        ));
        assert!(outranks(
            &atom(1, false, 2, 0, b""),
            &atom(1, false, 1, 9, b"z")
        ));
        assert!(outranks(
            &atom(1, false, 1, 5, b""),
            &atom(1, false, 1, 4, b"z")
        ));
        assert!(outranks(
            &atom(1, false, 1, 5, b"b"),
            &atom(1, false, 1, 5, b"a")
        ));
        let a = atom(1, false, 1, 5, b"a");
        assert!(!outranks(&a, &a.clone()));
    }

    #[test]
    fn versions_follow_the_wall_clock_and_never_repeat() {
        let mut clock = VersionClock::default();
        let v1 = clock.next(1_000, None);
        assert_eq!(v1, 1_000 << 16);
        let v2 = clock.next(1_000, None);
        assert_eq!(v2, v1 + 1);
        // A known version ahead of the wall clock is exceeded.
        let v3 = clock.next(1_000, Some(5_000 << 16));
        assert_eq!(v3, (5_000 << 16) + 1);
        // The wall clock going back does not lower versions.
        assert_eq!(clock.next(10, None), v3 + 1);
        assert_eq!(clock.next(u64::MAX, None), u64::MAX);
    }

    #[test]
    fn clock_maps_both_ways() {
        let t0 = Instant::now();
        let clock = Clock::new(t0, 1_700_000_000_000);
        let later = t0 + Duration::from_millis(1_500);
        assert_eq!(clock.local_ms(later), 1_500);
        if let Some(before) = t0.checked_sub(Duration::from_millis(1)) {
            assert_eq!(clock.local_ms(before), 0);
        }
        assert_eq!(clock.unix_ms(1_500), 1_700_000_001_500);
        assert_eq!(clock.local_of_unix(1_700_000_001_500), 1_500);
        assert_eq!(clock.local_of_unix(5), 0);
        assert_eq!(clock.instant(1_500), Some(later));
    }

    fn any_atom() -> impl Strategy<Value = Atom> {
        (
            0u64..4,
            any::<bool>(),
            0u32..3,
            0u64..3,
            proptest::collection::vec(0u8..3, 0..2),
        )
            .prop_map(|(v, z, by, e, d)| atom(v, z, by, e, &d))
    }

    proptest! {
        #[test]
        fn merge_is_order_independent(states in proptest::collection::vec(any_atom(), 1..8)) {
            let merge = |xs: &[Atom]| {
                xs.iter().fold(None::<Atom>, |acc, x| match acc {
                    Some(a) if !outranks(x, &a) => Some(a),
                    _ => Some(x.clone()),
                })
            };
            let forward = merge(&states);
            let mut reversed = states.clone();
            reversed.reverse();
            let mut doubled = states.clone();
            doubled.extend(states.iter().cloned());
            prop_assert_eq!(&forward, &merge(&reversed));
            prop_assert_eq!(&forward, &merge(&doubled));
            // The order is total: equal under compare means identical.
            for a in &states {
                for b in &states {
                    prop_assert_eq!(compare(a, b) == Ordering::Equal, a == b);
                }
            }
        }
    }
}
