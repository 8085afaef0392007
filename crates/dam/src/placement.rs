//! Hashing for location selection (spec FIG. 23B): which live units own a
//! key.
//!
//! Rendezvous (highest random weight) hashing. Every live member `u` gets a
//! score for key `k`:
//!
//! ```text
//! score(k, u) = xxh3_64_with_seed(k ‖ u32_be(u), PLACEMENT_SEED)
//! ```
//!
//! (the key bytes followed by the unit id as 4 big-endian bytes). Members
//! are ranked by descending score, ties by ascending unit id, and the owner
//! set is the first `copies` of that ranking ([`Replication::copies`]).
//! Every unit computes the same owners from the same member set, with no
//! coordination; a membership change moves only the keys whose owner set
//! contained the departed unit or now contains the joining one (see the
//! property tests below).
//!
//! The hash is fixed: xxh3-64 with [`PLACEMENT_SEED`], never std's
//! `DefaultHasher` (which may change between Rust releases and would split
//! a cluster of mixed builds). `score_vector_is_pinned` pins the output.

use switchyard_wire::UnitId;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the placement hash ("SWYDDAM1" in ASCII). Changing it moves
/// every atom: units with different seeds disagree on every owner set.
pub const PLACEMENT_SEED: u64 = 0x5357_5944_4441_4d31;

/// How many copies of each atom the owners keep (spec: "zero, one, two or
/// more levels of replication up to full replication").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replication {
    /// `n` extra copies: each atom is owned by `n + 1` units (fewer if fewer
    /// are live). Level 0 keeps a single copy.
    Level(u16),
    /// Every live unit owns every atom.
    Full,
}

impl Replication {
    /// Number of owners among `members` live units (at least one while any
    /// unit is live).
    pub fn copies(self, members: usize) -> usize {
        match self {
            Self::Level(level) => (usize::from(level) + 1).min(members),
            Self::Full => members,
        }
    }
}

/// The rendezvous score of `unit` for `key`.
pub fn score(key: &[u8], unit: UnitId) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 4);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&unit.0.to_be_bytes());
    xxh3_64_with_seed(&buf, PLACEMENT_SEED)
}

/// Every member ranked for `key`: descending score, ties by ascending id.
/// Duplicates in `members` are ignored.
pub fn ranking(key: &[u8], members: &[UnitId]) -> Vec<UnitId> {
    let mut buf = Vec::with_capacity(key.len() + 4);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&[0; 4]);
    let at = key.len();
    let mut scored: Vec<(u64, UnitId)> = members
        .iter()
        .map(|&unit| {
            buf[at..].copy_from_slice(&unit.0.to_be_bytes());
            (xxh3_64_with_seed(&buf, PLACEMENT_SEED), unit)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().map(|(_, unit)| unit).collect()
}

/// The owners of `key` among `members`, in rank order (the first is the
/// primary).
pub fn owners(key: &[u8], members: &[UnitId], replication: Replication) -> Vec<UnitId> {
    let mut ranked = ranking(key, members);
    ranked.truncate(replication.copies(ranked.len()));
    ranked
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn units(ids: &[u32]) -> Vec<UnitId> {
        ids.iter().map(|&i| UnitId(i)).collect()
    }

    #[test]
    fn score_vector_is_pinned() {
        // If this fails, the placement of every atom changed: a cluster of
        // old and new builds would disagree on owners. Bump the protocol
        // version instead of editing these numbers.
        assert_eq!(score(b"", UnitId(0)), 0x602e_fc6d_b9ef_24fa);
        assert_eq!(score(b"session-42", UnitId(7)), 0xc9e6_9e45_7ddf_c2fc);
        assert_eq!(
            owners(
                b"session-42",
                &units(&[1, 2, 3, 4, 5]),
                Replication::Level(1)
            ),
            units(&[2, 4])
        );
    }

    #[test]
    fn score_is_xxh3_of_key_and_big_endian_id() {
        let mut input = b"abc".to_vec();
        input.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(
            score(b"abc", UnitId(0x0102_0304)),
            xxh3_64_with_seed(&input, PLACEMENT_SEED)
        );
    }

    #[test]
    fn copies_per_level() {
        assert_eq!(Replication::Level(0).copies(5), 1);
        assert_eq!(Replication::Level(2).copies(5), 3);
        assert_eq!(Replication::Level(9).copies(5), 5);
        assert_eq!(Replication::Full.copies(5), 5);
        assert_eq!(Replication::Level(0).copies(0), 0);
        let members = units(&[1, 2, 3]);
        assert_eq!(owners(b"k", &members, Replication::Full).len(), 3);
        assert_eq!(
            owners(b"k", &[], Replication::Level(1)),
            Vec::<UnitId>::new()
        );
    }

    #[test]
    fn ranking_ignores_member_order_and_duplicates() {
        let a = ranking(b"key", &units(&[5, 1, 9, 3]));
        let b = ranking(b"key", &units(&[3, 9, 9, 1, 5, 1]));
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn primaries_are_balanced() {
        // 20 000 keys over 8 units: each unit is the primary of 12.5 % of
        // them; allow ±10 % of that share.
        let members = units(&[11, 12, 13, 14, 15, 16, 17, 18]);
        let mut share: BTreeMap<UnitId, usize> = BTreeMap::new();
        for i in 0..20_000u32 {
            let key = format!("flow-{i}");
            let owner = owners(key.as_bytes(), &members, Replication::Level(0))[0];
            *share.entry(owner).or_default() += 1;
        }
        assert_eq!(share.len(), 8);
        for (unit, n) in share {
            assert!((2_250..=2_750).contains(&n), "{unit} is primary of {n}");
        }
    }

    proptest! {
        #[test]
        fn removing_a_member_moves_only_its_keys(
            ids in proptest::collection::btree_set(0u32..1_000, 2..12),
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..40),
            level in 0u16..4,
            pick in any::<prop::sample::Index>(),
        ) {
            let members: Vec<UnitId> = ids.iter().map(|&i| UnitId(i)).collect();
            let gone = members[pick.index(members.len())];
            let rest: Vec<UnitId> = members.iter().copied().filter(|&u| u != gone).collect();
            let r = Replication::Level(level);
            for key in &keys {
                let before = owners(key, &members, r);
                let after = owners(key, &rest, r);
                if before.contains(&gone) {
                    // The survivors keep their copies; one unit takes over
                    // (if any is left to take over).
                    let kept: Vec<UnitId> = before.iter().copied().filter(|&u| u != gone).collect();
                    prop_assert_eq!(&after[..kept.len()], &kept[..]);
                    prop_assert_eq!(after.len(), r.copies(rest.len()));
                } else {
                    prop_assert_eq!(before, after);
                }
            }
        }

        #[test]
        fn adding_a_member_moves_only_keys_it_takes(
            ids in proptest::collection::btree_set(0u32..1_000, 1..12),
            new in 1_000u32..2_000,
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..40),
            level in 0u16..4,
        ) {
            let members: Vec<UnitId> = ids.iter().map(|&i| UnitId(i)).collect();
            let mut grown = members.clone();
            grown.push(UnitId(new));
            let r = Replication::Level(level);
            for key in &keys {
                let before = owners(key, &members, r);
                let after = owners(key, &grown, r);
                if after.contains(&UnitId(new)) {
                    // Every other owner was an owner before.
                    for u in after.iter().filter(|&&u| u != UnitId(new)) {
                        prop_assert!(before.contains(u));
                    }
                } else {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
