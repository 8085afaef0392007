//! Properties under arbitrary input: whatever messages arrive (anything a
//! holder of the cluster key could send) and whatever the local calls, the
//! machine never panics and its indexes stay consistent; and whatever
//! writes a lossy, duplicating, reordering network carries, the owners end
//! on the greatest state written.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchyard_dam::{Dam, DamSettings, DeleteOutcome, Replication, compare};
use switchyard_wire::dam::{AddAtom, Atom, AtomMeta, DeleteAtom, QueryAtom, ReturnAtom};
use switchyard_wire::{Message, UnitId};

use crate::sim::{MS, NetConfig, SEC, Sim, UNIX0, host, key};

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u8, Option<u16>),
    Delete(u8, u16),
    Query(u8),
    Members(u8),
    Timeout,
    Receive(u32, Box<Message>),
}

fn atom(k: u8) -> impl Strategy<Value = Atom> {
    (
        0u64..6,
        any::<bool>(),
        1u32..5,
        prop_oneof![Just(0u64), UNIX0 - 10..UNIX0 + 5_000],
        0u8..3,
    )
        .prop_map(move |(version, zombie, by, expires_at_ms, d)| Atom {
            key: vec![k],
            data: vec![d],
            meta: AtomMeta {
                added_by: UnitId(by),
                version,
                zombie,
                expires_at_ms,
            },
        })
}

fn message() -> impl Strategy<Value = Message> {
    let call = 0u64..12;
    prop_oneof![
        (call.clone(), (0u8..4).prop_flat_map(atom)).prop_map(|(call_id, atom)| AddAtom {
            call_id,
            atom
        }
        .into()),
        (call.clone(), 0u8..4, any::<u32>()).prop_map(|(call_id, k, zombie_ms)| {
            DeleteAtom {
                call_id,
                key: vec![k],
                zombie_ms,
            }
            .into()
        }),
        (call.clone(), 0u8..4).prop_map(|(call_id, k)| QueryAtom {
            call_id,
            key: vec![k]
        }
        .into()),
        (
            call,
            (0u8..4).prop_flat_map(|k| (Just(k), proptest::option::of(atom(k))))
        )
            .prop_map(|(call_id, (k, atom))| ReturnAtom {
                call_id,
                key: vec![k],
                atom
            }
            .into()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3, proptest::option::of(1u16..3_000)).prop_map(|(k, d, t)| Op::Add(k, d, t)),
        (0u8..4, 0u16..3_000).prop_map(|(k, z)| Op::Delete(k, z)),
        (0u8..4).prop_map(Op::Query),
        any::<u8>().prop_map(Op::Members),
        Just(Op::Timeout),
        (1u32..6, message()).prop_map(|(from, m)| Op::Receive(from, Box::new(m))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_input_keeps_the_machine_consistent(
        ops in proptest::collection::vec((op(), 0u64..400), 1..120),
    ) {
        let t0 = Instant::now();
        let settings = DamSettings {
            replication: Replication::Level(1),
            cache_capacity: 2,
            pace_scan: 2,
            pace_pushes: 2,
            ..DamSettings::default()
        };
        let mut dam = Dam::new(UnitId(1), settings, t0, UNIX0).expect("valid");
        let mut now = t0;
        for (op, step) in ops {
            now += Duration::from_millis(step);
            match op {
                Op::Add(k, d, ttl) => {
                    let ttl = ttl.map(|t| Duration::from_millis(u64::from(t)));
                    prop_assert!(dam.add(now, vec![k], vec![d], ttl).is_ok());
                }
                Op::Delete(k, z) => {
                    dam.delete(now, &[k], Duration::from_millis(u64::from(z)));
                }
                Op::Query(k) => {
                    dam.query(now, &[k]);
                }
                Op::Members(mask) => {
                    let members: Vec<UnitId> =
                        (1..6).filter(|i| mask & (1 << i) != 0).map(UnitId).collect();
                    dam.set_members(now, &members);
                }
                Op::Timeout => {
                    if dam.poll_timeout().is_some_and(|t| t <= now) {
                        dam.handle_timeout(now);
                    }
                }
                Op::Receive(from, message) => {
                    let _ = dam.handle(now, UnitId(from), &message);
                }
            }
            while let Some(t) = dam.poll_transmit() {
                prop_assert_ne!(t.to, UnitId(1));
                prop_assert!(t.message.encode_payload().is_ok());
            }
            while dam.poll_event().is_some() {}
            prop_assert!(dam.is_consistent());
        }
        // Time alone drains everything: no push or query is stuck.
        dam.set_members(now, &[]);
        for _ in 0..1_000 {
            let Some(t) = dam.poll_timeout() else { break };
            now = now.max(t);
            dam.handle_timeout(now);
            while dam.poll_transmit().is_some() {}
        }
        prop_assert!(dam.is_settled());
        prop_assert_eq!(dam.counters().queries_pending, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn owners_converge_on_the_greatest_write(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        dup in 0.0f64..0.5,
        writes in proptest::collection::vec((0usize..4, 0usize..6, any::<bool>(), 0u64..30), 1..40),
    ) {
        let mut sim = Sim::new(4, seed, DamSettings {
            replication: Replication::Level(1),
            ..DamSettings::default()
        });
        sim.net = NetConfig::lossy(loss, dup, 30 * MS);
        let mut written: BTreeMap<usize, Vec<Atom>> = BTreeMap::new();
        for (unit, k, delete, gap) in writes {
            sim.run_for(Duration::from_millis(gap));
            let now = sim.now;
            if delete {
                // Only at a holder: a forwarded delete makes the owners
                // write zombies of their own, not known here.
                if sim.units[unit].get(&key(k)).is_none() {
                    continue;
                }
                if let DeleteOutcome::Deleted(a) = sim.units[unit].delete(now, &key(k), 60 * SEC) {
                    written.entry(k).or_default().push(a);
                }
            } else {
                written.entry(k).or_default().push(sim.add(unit, &key(k), &host(unit)));
            }
        }
        sim.settle(30 * SEC);
        for (k, states) in written {
            let best = states.iter().max_by(|a, b| compare(a, b)).expect("one write");
            let copies = sim.copies(&key(k));
            let owners: Vec<usize> = sim.owners(&key(k)).into_iter().collect();
            prop_assert_eq!(copies.keys().copied().collect::<Vec<_>>(), owners);
            for copy in copies.values() {
                prop_assert_eq!(copy, best);
            }
        }
    }
}
