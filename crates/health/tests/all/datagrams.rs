//! Large tables on the simulated network: 500 rows whose info is 1000 bytes
//! long, far more than one datagram. Every message sent is sealed with a
//! real codec limited to the hosts' datagram target, so a message that does
//! not fit fails the test; resync, a bulk drain of every row and loss must
//! all still converge.

use std::net::SocketAddr;

use switchyard_health::datagram::DEFAULT_MAX_DATAGRAM_PAYLOAD;
use switchyard_wire::frame::MAX_UDP_PAYLOAD;
use switchyard_wire::health::{DirectiveState, Health};
use switchyard_wire::{AppId, Protocol};

use crate::sim::*;

const ROWS: usize = 500;
const INFO_LEN: usize = 1000;

/// Runs until `done` holds, checking every 250 ms of simulated time (the
/// checks compare 500-row tables, too costly after every event).
fn run_until(sim: &mut Sim, max: std::time::Duration, done: impl Fn(&Sim) -> bool) -> bool {
    let end = sim.now + max;
    while sim.now < end {
        sim.run_for(250 * MS);
        if done(sim) {
            return true;
        }
    }
    false
}

/// Row `k` of host `i`, with a long protocol-specific info.
fn long_app(i: usize, k: usize) -> AppId {
    let mut info = format!("/service/{k:04}/");
    info.push_str(&"x".repeat(INFO_LEN - info.len()));
    AppId {
        vip: vip(80),
        protocol: Protocol::Tcp,
        endpoint: SocketAddr::from(([192, 168, 0, i as u8 + 1], 8000 + k as u16)),
        info,
    }
}

/// One host with `ROWS` long rows and `units` units, converged; every
/// message from now on is sealed within the datagram target.
fn big_cluster(units: usize, seed: u64) -> Sim {
    const { assert!(DEFAULT_MAX_DATAGRAM_PAYLOAD < MAX_UDP_PAYLOAD) };
    let mut sim = Sim::new(1, units, seed);
    sim.seal_within(DEFAULT_MAX_DATAGRAM_PAYLOAD);
    sim.index_check_every = 997;
    let now = sim.now;
    for k in 0..ROWS {
        sim.hosts[0]
            .set_app(now, long_app(0, k), status(Health::Healthy, 10, 50))
            .expect("valid app");
    }
    assert!(
        run_until(&mut sim, 10 * SEC, Sim::converged),
        "initial convergence: {:?}",
        sim.mismatch()
    );
    assert_eq!(
        sim.units[0].host(host_id(0)).expect("cached").table.len(),
        ROWS
    );
    // The table went out as many row changes, one generation each.
    assert!(sim.hosts[0].counters().row_changes_published >= ROWS as u64 / 2);
    sim
}

fn drained_everywhere(sim: &Sim) -> bool {
    let drained = |t: DirectiveState, c: DirectiveState| {
        t == DirectiveState::Draining && c == DirectiveState::Draining
    };
    assert!(
        sim.units.iter().all(|u| u.index_is_consistent()),
        "index out of step"
    );
    let host = sim.hosts[0].rows();
    host.len() == ROWS
        && host
            .iter()
            .all(|v| drained(v.row.directive.target, v.row.directive.current))
        && sim.converged()
}

#[test]
fn a_restarted_unit_resyncs_a_table_far_larger_than_a_datagram() {
    let mut sim = big_cluster(2, 21);
    sim.restart_unit(1);
    assert!(
        run_until(&mut sim, 10 * SEC, Sim::converged),
        "resync: {:?}",
        sim.mismatch()
    );
    assert!(sim.units[1].counters().snapshots_completed >= 1);
    assert!(sim.largest_payload <= DEFAULT_MAX_DATAGRAM_PAYLOAD);
    assert!(sim.largest_payload > DEFAULT_MAX_DATAGRAM_PAYLOAD / 2);
}

#[test]
fn a_bulk_drain_of_every_row_completes() {
    let mut sim = big_cluster(2, 22);
    let now = sim.now;
    for k in 0..ROWS {
        sim.hosts[0]
            .set_target(now, &long_app(0, k), DirectiveState::Draining)
            .expect("known");
    }
    assert!(
        run_until(&mut sim, 30 * SEC, drained_everywhere),
        "drain: {:?}",
        sim.mismatch()
    );
    let c = sim.hosts[0].counters();
    assert_eq!(c.handshakes_completed, ROWS as u64);
    assert_eq!(c.units_given_up, 0);
    assert!(sim.largest_payload <= DEFAULT_MAX_DATAGRAM_PAYLOAD);
}

#[test]
fn a_bulk_drain_and_a_resync_converge_through_loss() {
    let mut sim = big_cluster(3, 23);
    sim.net = NetConfig::lossy(0.2, 0.05, 100 * MS);
    sim.restart_unit(2);
    let now = sim.now;
    for k in 0..ROWS {
        sim.hosts[0]
            .set_target(now, &long_app(0, k), DirectiveState::Draining)
            .expect("known");
    }
    assert!(
        run_until(&mut sim, 120 * SEC, drained_everywhere),
        "lossy drain: {:?}",
        sim.mismatch()
    );
    assert!(sim.dropped > 0);
    let c = sim.hosts[0].counters();
    assert_eq!(c.handshakes_completed, ROWS as u64);
    assert_eq!(c.units_given_up, 0);
    assert!(sim.units[2].counters().snapshots_completed >= 1);
    sim.net = NetConfig::perfect();
    assert!(
        run_until(&mut sim, 10 * SEC, Sim::settled),
        "settle: {:?}",
        sim.mismatch()
    );
    assert!(sim.largest_payload <= DEFAULT_MAX_DATAGRAM_PAYLOAD);
}
