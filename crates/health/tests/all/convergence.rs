//! Property: whatever local changes hosts make while the network loses,
//! duplicates and reorders messages, every unit's cache converges to every
//! host's published table once the network is healthy again, and every
//! drain handshake completes.

use std::time::Duration;

use proptest::prelude::*;
use switchyard_wire::health::{DirectiveState, Health};

use crate::sim::*;

#[derive(Debug, Clone)]
enum Change {
    Set {
        host: usize,
        app: usize,
        health: u8,
        load: u8,
        capacity: u8,
    },
    Load {
        host: usize,
        app: usize,
        raw: u8,
    },
    Target {
        host: usize,
        app: usize,
        state: u8,
    },
    Remove {
        host: usize,
        app: usize,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0..3usize, 0..5usize, 0..3u8, 0..=100u8, 0..100u8)
            .prop_map(|(host, app, health, load, capacity)| Change::Set { host, app, health, load, capacity }),
        2 => (0..3usize, 0..5usize, 0..=100u8).prop_map(|(host, app, raw)| Change::Load { host, app, raw }),
        2 => (0..3usize, 0..5usize, 0..3u8).prop_map(|(host, app, state)| Change::Target { host, app, state }),
        1 => (0..3usize, 0..5usize).prop_map(|(host, app)| Change::Remove { host, app }),
    ]
}

fn apply(sim: &mut Sim, c: &Change) {
    let now = sim.now;
    let healths = [Health::Healthy, Health::Failing, Health::Unknown];
    let states = [
        DirectiveState::Active,
        DirectiveState::Draining,
        DirectiveState::Inactive,
    ];
    // Changes to rows that do not exist are local API errors: skip them.
    match *c {
        Change::Set {
            host,
            app: k,
            health,
            load,
            capacity,
        } => {
            let s = status(healths[usize::from(health)], load, capacity);
            sim.hosts[host]
                .set_app(now, app(host, k), s)
                .expect("valid app");
        }
        Change::Load { host, app: k, raw } => {
            let _ = sim.hosts[host].report_load(now, &app(host, k), raw);
        }
        Change::Target {
            host,
            app: k,
            state,
        } => {
            let _ = sim.hosts[host].set_target(now, &app(host, k), states[usize::from(state)]);
        }
        Change::Remove { host, app: k } => {
            let _ = sim.hosts[host].remove_app(now, &app(host, k));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn caches_converge_once_the_network_heals(
        seed in any::<u64>(),
        loss in 0.0..0.6f64,
        duplicate in 0.0..0.3f64,
        max_delay_ms in 1..800u64,
        changes in prop::collection::vec((change(), 0..400u64), 1..60),
    ) {
        let mut sim = Sim::new(3, 2, seed);
        sim.net = NetConfig::lossy(loss, duplicate, Duration::from_millis(max_delay_ms));
        for (c, pause_ms) in &changes {
            apply(&mut sim, c);
            sim.run_for(Duration::from_millis(*pause_ms));
        }
        sim.net = NetConfig::perfect();
        let settled = sim.run_until(60 * SEC, Sim::settled);
        prop_assert!(settled.is_some(), "not settled: {:?}", sim.mismatch());
        for unit in &sim.units {
            prop_assert!(unit.index_is_consistent());
            for host in &sim.hosts {
                let cached = unit.host(host.host()).expect("cached");
                prop_assert_eq!(cached.table.digest(), host.published().digest());
            }
        }
    }
}
