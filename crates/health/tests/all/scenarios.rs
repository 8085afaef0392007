//! Protocol scenarios on the simulated network (issue 3's test list, sans-I/O).

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_health::{PercentageAllotment, ServiceKey, TokenAllotment};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentScheme};
use switchyard_wire::health::{DirectiveState, Health};
use switchyard_wire::{HostId, Protocol};

use crate::sim::*;

/// A cluster of `hosts` × `apps` rows, converged on a perfect network.
fn cluster(hosts: usize, units: usize, apps: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(hosts, units, seed);
    populate(&mut sim, apps);
    sim
}

fn populate(sim: &mut Sim, apps: usize) {
    let now = sim.now;
    for i in 0..sim.hosts.len() {
        for k in 0..apps {
            sim.hosts[i]
                .set_app(now, app(i, k), status(Health::Healthy, 10, 50))
                .expect("valid app");
        }
    }
    let took = sim.run_until(5 * SEC, Sim::converged);
    assert!(took.is_some(), "initial convergence: {:?}", sim.mismatch());
}

fn unit_row_health(sim: &Sim, j: usize, i: usize, k: usize) -> Option<Health> {
    let table = sim.units[j].host(host_id(i))?.table;
    table.get(&app(i, k)).map(|r| r.status.health())
}

fn unit_directive(
    sim: &Sim,
    j: usize,
    i: usize,
    k: usize,
) -> Option<(DirectiveState, DirectiveState)> {
    let table = sim.units[j].host(host_id(i))?.table;
    table
        .get(&app(i, k))
        .map(|r| (r.directive.target, r.directive.current))
}

fn host_directive(sim: &Sim, i: usize, k: usize) -> (DirectiveState, DirectiveState) {
    let view = sim.hosts[i].row(&app(i, k)).expect("row");
    (view.row.directive.target, view.row.directive.current)
}

#[test]
fn a_health_change_reaches_every_unit_within_a_heartbeat() {
    let mut sim = cluster(3, 2, 4, 1);
    sim.net = NetConfig::lossy(0.0, 0.0, 20 * MS);
    sim.run_for(SEC / 3);
    let now = sim.now;
    sim.hosts[1]
        .set_app(now, app(1, 2), status(Health::Failing, 10, 50))
        .expect("known");
    let took = sim
        .run_until(5 * SEC, |s| {
            (0..2).all(|j| unit_row_health(s, j, 1, 2) == Some(Health::Failing))
        })
        .expect("propagates");
    assert!(took <= SEC, "took {took:?}");
    // And back.
    let now = sim.now;
    sim.hosts[1]
        .set_app(now, app(1, 2), status(Health::Healthy, 10, 50))
        .expect("known");
    let took = sim
        .run_until(5 * SEC, |s| {
            (0..2).all(|j| unit_row_health(s, j, 1, 2) == Some(Health::Healthy))
        })
        .expect("propagates");
    assert!(took <= SEC, "took {took:?}");
    assert!(sim.converged());
}

#[test]
fn a_health_change_survives_the_loss_of_its_row_change() {
    let mut sim = cluster(1, 2, 2, 2);
    // The row change is lost for unit 1; the next heartbeat's digest
    // reveals the stale cache and a snapshot repairs it.
    sim.cut(Node::Unit(1));
    let now = sim.now;
    sim.hosts[0]
        .set_app(now, app(0, 1), status(Health::Failing, 10, 50))
        .expect("known");
    sim.run_for(10 * MS);
    sim.heal(Node::Unit(1));
    let took = sim
        .run_until(5 * SEC, |s| {
            unit_row_health(s, 1, 0, 1) == Some(Health::Failing)
        })
        .expect("repaired by snapshot");
    assert!(took <= 2 * SEC, "took {took:?}");
    let c = sim.units[1].counters();
    assert!(c.snapshots_completed >= 1, "repaired by a snapshot: {c:?}");
}

#[test]
fn b_drain_completes_at_the_host_and_in_every_unit() {
    let mut sim = cluster(2, 3, 2, 3);
    let now = sim.now;
    sim.hosts[0]
        .set_target(now, &app(0, 1), DirectiveState::Draining)
        .expect("known");
    // Units hold the target at once; current follows after the handshake.
    sim.run_for(20 * MS);
    for j in 0..3 {
        assert_eq!(
            unit_directive(&sim, j, 0, 1),
            Some((DirectiveState::Draining, DirectiveState::Active))
        );
    }
    let view = sim.hosts[0].row(&app(0, 1)).expect("row");
    assert!(view.handshake.is_some());
    let drained = (DirectiveState::Draining, DirectiveState::Draining);
    let took = sim
        .run_until(5 * SEC, |s| {
            host_directive(s, 0, 1) == drained
                && (0..3).all(|j| unit_directive(s, j, 0, 1) == Some(drained))
        })
        .expect("handshake completes");
    assert!(took <= SEC, "took {took:?}");
    assert_eq!(sim.hosts[0].counters().handshakes_completed, 1);
    assert_eq!(sim.hosts[0].counters().units_given_up, 0);
    assert!(sim.hosts[0].handshakes().is_empty());
    // Allotments no longer include the draining endpoint.
    assert!(sim.converged());
}

#[test]
fn c_drain_waits_for_a_partitioned_unit_then_completes() {
    let mut sim = cluster(1, 2, 2, 4);
    sim.cut(Node::Unit(1));
    let now = sim.now;
    sim.hosts[0]
        .set_target(now, &app(0, 0), DirectiveState::Draining)
        .expect("known");
    sim.run_for(10 * SEC);
    assert_eq!(
        host_directive(&sim, 0, 0),
        (DirectiveState::Draining, DirectiveState::Active),
        "current stays active while a unit is cut off"
    );
    let hs = sim.hosts[0].handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].agreed, vec![unit_id(0)]);
    assert_eq!(hs[0].waiting, vec![unit_id(1)]);
    assert!(hs[0].given_up.is_empty());
    assert!(hs[0].round.is_some_and(|r| r > 10));
    sim.heal(Node::Unit(1));
    let drained = (DirectiveState::Draining, DirectiveState::Draining);
    let took = sim
        .run_until(10 * SEC, |s| {
            host_directive(s, 0, 0) == drained
                && (0..2).all(|j| unit_directive(s, j, 0, 0) == Some(drained))
        })
        .expect("completes after the partition heals");
    assert!(took <= 3 * SEC, "took {took:?}");
    assert_eq!(sim.hosts[0].counters().units_given_up, 0);
    assert_eq!(sim.hosts[0].counters().handshakes_completed, 1);
}

#[test]
fn c_drain_gives_up_on_a_dead_unit_after_the_deadline() {
    let mut sim = cluster(1, 2, 1, 5);
    sim.cut(Node::Unit(1));
    let t0 = sim.now;
    sim.hosts[0]
        .set_target(t0, &app(0, 0), DirectiveState::Inactive)
        .expect("known");
    sim.run_for(29 * SEC);
    assert_eq!(host_directive(&sim, 0, 0).1, DirectiveState::Active);
    let done = (DirectiveState::Inactive, DirectiveState::Inactive);
    sim.run_until(5 * SEC, |s| host_directive(s, 0, 0) == done)
        .expect("completes without the dead unit");
    assert!(sim.now - t0 >= 30 * SEC);
    let c = sim.hosts[0].counters();
    assert_eq!(c.units_given_up, 1);
    assert_eq!(c.handshakes_completed, 1);
    sim.run_for(100 * MS);
    assert_eq!(unit_directive(&sim, 0, 0, 0), Some(done));
}

#[test]
fn c_a_long_dead_unit_is_given_up_while_a_healed_one_answers() {
    let mut sim = cluster(1, 3, 1, 6);
    sim.cut(Node::Unit(1));
    sim.run_for(40 * SEC); // unit 1 long silent before the drain
    sim.cut(Node::Unit(2));
    let now = sim.now;
    sim.hosts[0]
        .set_target(now, &app(0, 0), DirectiveState::Draining)
        .expect("known");
    sim.run_for(20 * SEC);
    // Unit 2 is cut off for less than the deadline: it still blocks.
    let hs = sim.hosts[0].handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].agreed, vec![unit_id(0)]);
    assert_eq!(hs[0].waiting, vec![unit_id(1), unit_id(2)]);
    sim.heal(Node::Unit(2));
    sim.run_for(2 * SEC);
    let hs = sim.hosts[0].handshakes();
    assert_eq!(hs[0].agreed, vec![unit_id(0), unit_id(2)]);
    assert_eq!(hs[0].waiting, vec![unit_id(1)]);
    let drained = (DirectiveState::Draining, DirectiveState::Draining);
    sim.run_until(15 * SEC, |s| host_directive(s, 0, 0) == drained)
        .expect("completes without unit 1 once it is given up");
    // Unit 1 was silent since long before: given up 30 s after the start.
    assert!(sim.now - now >= 30 * SEC);
    assert_eq!(sim.hosts[0].counters().units_given_up, 1);
}

#[test]
fn c_a_host_cut_off_from_every_unit_never_completes_a_drain_alone() {
    let mut sim = cluster(1, 2, 2, 14);
    sim.cut(Node::Host(0));
    let now = sim.now;
    sim.hosts[0]
        .set_target(now, &app(0, 0), DirectiveState::Draining)
        .expect("known");
    // Far past the give-up deadline: no unit ever agreed, so nobody is
    // given up and current stays.
    sim.run_for(120 * SEC);
    assert_eq!(
        host_directive(&sim, 0, 0),
        (DirectiveState::Draining, DirectiveState::Active),
        "current never flips while no unit is reachable"
    );
    let hs = sim.hosts[0].handshakes();
    assert_eq!(hs.len(), 1);
    assert!(hs[0].blocked, "blocked: no unit reachable");
    assert!(hs[0].given_up.is_empty());
    assert!(hs[0].agreed.is_empty());
    let c = sim.hosts[0].counters();
    assert_eq!(c.handshakes_blocked, 1);
    assert_eq!(c.units_given_up, 0);
    assert_eq!(c.handshakes_completed, 0);
    // Reconnected: units relearn the table and the drain completes.
    sim.heal(Node::Host(0));
    let drained = (DirectiveState::Draining, DirectiveState::Draining);
    sim.run_until(10 * SEC, |s| {
        host_directive(s, 0, 0) == drained
            && (0..2).all(|j| unit_directive(s, j, 0, 0) == Some(drained))
    })
    .expect("completes once units answer");
    let c = sim.hosts[0].counters();
    assert_eq!(c.handshakes_completed, 1);
    assert_eq!(c.units_given_up, 0);
}

#[test]
fn d_caches_converge_after_loss_duplication_and_reordering() {
    let mut sim = cluster(3, 3, 6, 7);
    sim.net = NetConfig::lossy(0.3, 0.1, 300 * MS);
    let mut rng_state = 12345u64;
    let mut next = move |n: u64| {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng_state >> 33) % n
    };
    let states = [
        DirectiveState::Active,
        DirectiveState::Draining,
        DirectiveState::Inactive,
    ];
    let healths = [Health::Healthy, Health::Failing, Health::Unknown];
    for _ in 0..200 {
        let i = next(3) as usize;
        let k = next(8) as usize;
        let now = sim.now;
        let h = &mut sim.hosts[i];
        match next(5) {
            0 => {
                let _ = h.set_target(now, &app(i, k), states[next(3) as usize]);
            }
            1 => {
                let _ = h.remove_app(now, &app(i, k));
            }
            2 => {
                let _ = h.report_load(now, &app(i, k), next(101) as u8);
            }
            _ => {
                let s = status(healths[next(3) as usize], next(101) as u8, next(100) as u8);
                h.set_app(now, app(i, k), s).expect("valid");
            }
        }
        sim.run_for(Duration::from_millis(50 + next(150)));
    }
    assert!(sim.dropped > 0);
    sim.net = NetConfig::perfect();
    let took = sim.run_until(60 * SEC, Sim::settled);
    assert!(took.is_some(), "not settled: {:?}", sim.mismatch());
    for unit in &sim.units {
        for host in &sim.hosts {
            let cached = unit.host(host.host()).expect("cached");
            assert!(cached.in_sync || cached.generation == host.published().generation());
            assert_eq!(cached.table.digest(), host.published().digest());
            assert!(cached.table.same_rows(host.published()));
        }
        assert!(
            unit.counters().stale_row_changes > 0,
            "reordering exercised"
        );
    }
}

#[test]
fn e_restarted_unit_is_rebuilt_from_snapshots() {
    let mut sim = cluster(4, 2, 5, 8);
    sim.run_for(3 * SEC);
    sim.restart_unit(0);
    assert_eq!(sim.units[0].hosts().count(), 0);
    let took = sim.run_until(10 * SEC, Sim::converged).expect("rebuilt");
    assert!(took <= 2 * SEC, "took {took:?}");
    assert_eq!(sim.units[0].counters().snapshots_completed, 4);
    assert_eq!(sim.units[0].hosts().count(), 4);
}

#[test]
fn f_goodbye_clears_at_once_and_silent_hosts_age_out() {
    let mut sim = cluster(3, 2, 2, 9);
    sim.hosts[0].goodbye();
    sim.run_for(10 * MS);
    for u in &sim.units {
        assert!(u.host(host_id(0)).is_none());
        assert_eq!(u.counters().goodbyes, 1);
        assert!(u.index_is_consistent());
    }
    sim.crash_host(1);
    sim.run_for(4 * SEC);
    assert!(sim.units.iter().all(|u| u.host(host_id(1)).is_some()));
    sim.run_for(2 * SEC);
    for u in &sim.units {
        assert!(u.host(host_id(1)).is_none(), "aged out");
        assert_eq!(u.counters().age_outs, 1);
        assert!(
            u.endpoints(&ServiceKey::of_app(&app(1, 0)))
                .iter()
                .all(|e| e.host != host_id(1))
        );
    }
    // The departed host stays gone: its stale messages are ignored.
    sim.run_for(10 * SEC);
    assert!(sim.units.iter().all(|u| u.host(host_id(0)).is_none()));
}

#[test]
fn f_restarted_host_replaces_its_old_rows() {
    let mut sim = cluster(2, 2, 3, 10);
    let old_generation = sim.hosts[1].published().generation();
    let mut settings = host_settings(1, 2);
    settings.initial_generation = old_generation + 1_000_000;
    sim.restart_host(1, settings);
    let now = sim.now;
    sim.hosts[1]
        .set_app(now, app(1, 7), status(Health::Healthy, 40, 20))
        .expect("valid");
    sim.run_until(5 * SEC, Sim::converged).expect("replaced");
    for u in &sim.units {
        let cached = u.host(host_id(1)).expect("cached");
        assert_eq!(cached.table.len(), 1);
        assert!(cached.table.get(&app(1, 7)).is_some());
        assert!(cached.table.get(&app(1, 0)).is_none());
    }
}

#[test]
fn f_host_restarted_with_a_lower_generation_is_resynchronised() {
    let mut sim = cluster(1, 1, 2, 11);
    let mut settings = host_settings(0, 1);
    settings.initial_generation = 5; // clock went backwards
    sim.restart_host(0, settings);
    let now = sim.now;
    sim.hosts[0]
        .set_app(now, app(0, 5), status(Health::Healthy, 40, 20))
        .expect("valid");
    let took = sim
        .run_until(20 * SEC, Sim::converged)
        .expect("resynchronised");
    assert!(took <= 8 * SEC, "took {took:?}");
    assert_eq!(sim.units[0].counters().generation_resets, 1);
}

#[test]
fn g_generations_never_go_back_under_heavy_reordering() {
    // The simulator checks after every event that no unit's cached
    // generation for a host decreases; here delays are far longer than the
    // time between changes so almost every message arrives out of order.
    let mut sim = cluster(2, 2, 3, 12);
    sim.net = NetConfig::lossy(0.0, 0.5, 2 * SEC);
    for n in 0..60u8 {
        let now = sim.now;
        let i = usize::from(n % 2);
        sim.hosts[i]
            .set_app(now, app(i, 0), status(Health::Healthy, n, 50))
            .expect("known");
        sim.hosts[i]
            .set_app(
                now,
                app(i, 1),
                status(
                    if n % 3 == 0 {
                        Health::Failing
                    } else {
                        Health::Healthy
                    },
                    1,
                    n,
                ),
            )
            .expect("known");
        sim.run_for(100 * MS);
    }
    sim.net = NetConfig::perfect();
    sim.run_until(30 * SEC, Sim::settled).expect("settles");
    assert!(sim.units.iter().all(|u| u.counters().stale_row_changes > 0));
}

fn allotment_cluster() -> (Sim, ServiceKey) {
    // Hosts 0..3 serve port 80 at loads 20/50/80 %; host 3 serves it but drains.
    let mut sim = Sim::new(4, 1, 13);
    let now = sim.now;
    for (i, load) in [20u8, 50, 80, 10].into_iter().enumerate() {
        sim.hosts[i]
            .set_app(now, app(i, 0), status(Health::Healthy, load, 50))
            .expect("valid");
    }
    sim.hosts[3]
        .set_target(now, &app(3, 0), DirectiveState::Draining)
        .expect("known");
    sim.run_until(5 * SEC, Sim::settled).expect("settled");
    (sim, ServiceKey::of_app(&app(0, 0)))
}

fn request(scheme: AllotmentScheme) -> AllotmentRequest {
    AllotmentRequest {
        request_id: 1,
        vip: vip(80),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme,
        wanted_tokens: 0,
    }
}

fn assert_split(counts: &BTreeMap<HostId, u32>, total: u32) {
    assert_eq!(counts.get(&host_id(3)), None, "draining endpoint got none");
    let expected = [0.8, 0.5, 0.2];
    let sum: f64 = expected.iter().sum();
    for (i, e) in expected.iter().enumerate() {
        let got = f64::from(counts.get(&host_id(i)).copied().unwrap_or(0)) / f64::from(total);
        assert!(
            (got - e / sum).abs() <= 0.02,
            "host {i}: {got} vs {}",
            e / sum
        );
    }
}

#[test]
fn h_token_draws_follow_spare_capacity() {
    let (mut sim, service) = allotment_cluster();
    assert_eq!(sim.units[0].endpoints(&service).len(), 4);
    let mut counts = BTreeMap::new();
    let mut now = sim.now;
    let mut tokens = TokenAllotment::new(
        &sim.units[0].allot(&request(AllotmentScheme::Tokens), now),
        now,
    )
    .expect("tokens");
    let mut refills = 0;
    for _ in 0..10_000 {
        now += Duration::from_micros(300);
        let e = match tokens.draw(now) {
            Some(e) => e,
            None => {
                refills += 1;
                let r = sim.units[0].allot(&request(AllotmentScheme::Tokens), now);
                tokens = TokenAllotment::new(&r, now).expect("tokens");
                tokens.draw(now).expect("fresh tokens")
            }
        };
        *counts.entry(e.host).or_insert(0u32) += 1;
    }
    assert_eq!(refills, 99, "100 tokens per allotment");
    assert_split(&counts, 10_000);
    // Stale tokens are not spent.
    let r = sim.units[0].allot(&request(AllotmentScheme::Tokens), now);
    let mut stale = TokenAllotment::new(&r, now).expect("tokens");
    assert_eq!(stale.draw(now + 2 * SEC), None);
    assert_eq!(stale.remaining(), 100);
    sim.run_for(SEC);
}

#[test]
fn h_percentage_draws_follow_spare_capacity_and_expire() {
    let (mut sim, _) = allotment_cluster();
    let now = sim.now;
    let r = sim.units[0].allot(&request(AllotmentScheme::Percentages), now);
    let mut shares = PercentageAllotment::new(&r, now).expect("percentages");
    let mut counts = BTreeMap::new();
    for _ in 0..10_000 {
        let e = shares.draw(now + SEC).expect("within duration");
        *counts.entry(e.host).or_insert(0u32) += 1;
    }
    assert_split(&counts, 10_000);
    assert_eq!(shares.draw(now + 5 * SEC), None, "expired");
    // A host that ages out gets nothing in later allotments.
    sim.crash_host(0);
    sim.run_for(6 * SEC);
    let now = sim.now;
    let r = sim.units[0].allot(&request(AllotmentScheme::Percentages), now);
    let mut shares = PercentageAllotment::new(&r, now).expect("percentages");
    for _ in 0..100 {
        assert_ne!(shares.draw(now).expect("endpoint").host, host_id(0));
    }
}
