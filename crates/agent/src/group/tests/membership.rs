//! The group machine over the simulated network: convergence, leader
//! failure, rejoin, loss, announcements and refused gossip.

use std::time::Duration;

use switchyard_wire::health::GroupGossip;
use switchyard_wire::{HostId, SenderId};

use super::sim::{Net, settings};
use crate::group::{GossipRejected, GroupEvent, HostGroup};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn members_converge_on_the_lowest_id() {
    let mut net = Net::new(&[3, 1, 4, 2], 0.0, 1);
    let took = net.run_until(2 * SECOND, |n| n.agree(&[1, 2, 3, 4]));
    assert!(took.is_some(), "no agreement: {:#?}", net.groups);
    eprintln!("converged in {took:?}");
    // Stable afterwards, and exactly one host leads.
    net.run(5 * SECOND);
    assert!(net.agree(&[1, 2, 3, 4]));
    let leaders: Vec<HostId> = net
        .groups
        .values()
        .filter(|g| g.is_leader())
        .map(HostGroup::me)
        .collect();
    assert_eq!(leaders, vec![HostId(1)]);
    assert!(net.groups.values().all(|g| !g.is_alone()));
}

#[test]
fn leader_failure_elects_the_next_lowest_id() {
    let mut net = Net::new(&[1, 2, 3, 4], 0.0, 2);
    net.run_until(2 * SECOND, |n| n.agree(&[1, 2, 3, 4]))
        .unwrap();
    net.run(2 * SECOND);
    net.kill(1);
    let took = net
        .run_until(3 * SECOND, |n| n.agree(&[2, 3, 4]))
        .unwrap_or_else(|| panic!("no new leader: {:#?}", net.groups));
    eprintln!("new leader agreed {took:?} after the leader died");
    assert!(took <= Duration::from_millis(2500), "took {took:?}");
    net.run(10 * SECOND);
    assert!(net.agree(&[2, 3, 4]));
    let two = net.groups.get_mut(&HostId(2)).unwrap();
    let mut events = Vec::new();
    while let Some(e) = two.poll_event() {
        events.push(e);
    }
    assert!(
        events.contains(&GroupEvent::MemberDown(HostId(1))),
        "{events:?}"
    );
    assert!(events.contains(&GroupEvent::LeaderChanged {
        from: HostId(1),
        to: HostId(2)
    }));
}

#[test]
fn restarted_member_rejoins_and_leads_again() {
    let mut net = Net::new(&[1, 2, 3], 0.0, 3);
    net.run_until(2 * SECOND, |n| n.agree(&[1, 2, 3])).unwrap();
    net.kill(1);
    net.run_until(3 * SECOND, |n| n.agree(&[2, 3])).unwrap();
    net.run(5 * SECOND);
    net.start_host(1);
    let took = net.run_until(3 * SECOND, |n| n.agree(&[1, 2, 3]));
    assert!(took.is_some(), "restart not seen: {:#?}", net.groups);
    eprintln!("restarted member rejoined in {took:?}");
    assert_eq!(net.groups[&HostId(1)].identity().generation(), 2);
    net.run(5 * SECOND);
    assert!(net.agree(&[1, 2, 3]));
}

#[test]
fn restart_before_detection_replaces_the_old_identity() {
    let mut net = Net::new(&[1, 2, 3], 0.0, 4);
    net.run_until(2 * SECOND, |n| n.agree(&[1, 2, 3])).unwrap();
    // Back within a few milliseconds: the newer generation wins at once.
    net.kill(2);
    net.run(Duration::from_millis(10));
    net.start_host(2);
    net.run(3 * SECOND);
    assert!(net.agree(&[1, 2, 3]), "{:#?}", net.groups);
}

#[test]
fn lossy_network_converges_and_detects_the_dead_leader() {
    let mut net = Net::new(&[5, 1, 4, 2, 3], 0.15, 5);
    net.run_until(4 * SECOND, |n| n.agree(&[1, 2, 3, 4, 5]))
        .unwrap_or_else(|| panic!("no agreement under loss: {:#?}", net.groups));
    for g in net.groups.values_mut() {
        while g.poll_event().is_some() {}
    }
    // Over a longer run false suspicions are refuted; the views end equal.
    net.run(20 * SECOND);
    let false_downs = net
        .groups
        .values_mut()
        .flat_map(|g| std::iter::from_fn(|| g.poll_event()).collect::<Vec<_>>())
        .filter(|e| matches!(e, GroupEvent::MemberDown(_)))
        .count();
    eprintln!("false member-down events in 20 s at 15% loss: {false_downs}");
    assert!(false_downs <= 2, "{false_downs} false member-down events");
    net.run_until(3 * SECOND, |n| n.agree(&[1, 2, 3, 4, 5]))
        .unwrap_or_else(|| panic!("views diverged under loss: {:#?}", net.groups));
    assert!(net.lost > 0);
    net.kill(1);
    let took = net.run_until(4 * SECOND, |n| n.agree(&[2, 3, 4, 5]));
    assert!(
        took.is_some(),
        "dead leader not detected: {:#?}",
        net.groups
    );
    eprintln!("under 15% loss, new leader agreed {took:?} after the leader died");
}

#[test]
fn lone_host_announces_until_a_peer_appears() {
    let mut net = Net::new(&[2], 0.0, 6);
    // Three peers configured, none running.
    net.kill(2);
    let now = net.now;
    let mut group = HostGroup::new(settings(2, &[1, 2, 3, 4], 1), now).unwrap();
    let mut announced = Vec::new();
    while let Some((to, gossip)) = group.poll_gossip() {
        assert_eq!(gossip.group, "web");
        announced.push(to);
    }
    assert_eq!(announced.len(), 3, "one announcement per configured peer");
    assert!(group.is_alone() && group.is_leader());
    assert_eq!(group.view().live.len(), 1);

    // Alone, it announces again every announce_interval.
    let next = group.poll_timeout().unwrap();
    assert!(next <= now + SECOND);
    group.handle_timeout(now + SECOND);
    let mut again = 0;
    while group.poll_gossip().is_some() {
        again += 1;
    }
    assert_eq!(again, 3);

    // A peer comes up later: they find each other.
    let mut net = Net::new(&[1, 2], 0.0, 7);
    net.kill(1);
    net.run(3 * SECOND);
    assert!(net.groups[&HostId(2)].is_alone());
    net.start_host(1);
    assert!(net.run_until(2 * SECOND, |n| n.agree(&[1, 2])).is_some());
}

#[test]
fn clean_leave_hands_over_quickly() {
    let mut net = Net::new(&[1, 2, 3], 0.0, 8);
    net.run_until(2 * SECOND, |n| n.agree(&[1, 2, 3])).unwrap();
    let now = net.now;
    net.groups.get_mut(&HostId(1)).unwrap().leave(now);
    assert_eq!(net.groups[&HostId(1)].poll_timeout(), None);
    net.flush();
    net.kill(1);
    let took = net.run_until(2 * SECOND, |n| n.agree(&[2, 3])).unwrap();
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[test]
fn foreign_forged_and_malformed_gossip_is_refused() {
    let mut net = Net::new(&[1, 2], 0.0, 9);
    let now = net.now;
    // A genuine announcement from host 2 to host 1.
    let (_, genuine) = net
        .groups
        .get_mut(&HostId(2))
        .unwrap()
        .poll_gossip()
        .unwrap();
    let one = net.groups.get_mut(&HostId(1)).unwrap();

    let other_group = GroupGossip {
        group: "db".into(),
        ..genuine.clone()
    };
    assert_eq!(
        one.handle_gossip(now, SenderId(2), &other_group),
        Err(GossipRejected::WrongGroup("db".into()))
    );
    assert_eq!(
        one.handle_gossip(now, SenderId(3), &genuine),
        Err(GossipRejected::ForgedSender {
            from: SenderId(3),
            claimed: HostId(2)
        })
    );
    let garbage = GroupGossip {
        group: "web".into(),
        data: vec![0xff; 40],
    };
    assert!(matches!(
        one.handle_gossip(now, SenderId(2), &garbage),
        Err(GossipRejected::Malformed(_))
    ));
    let huge = GroupGossip {
        group: "web".into(),
        data: vec![0; 5000],
    };
    assert_eq!(
        one.handle_gossip(now, SenderId(2), &huge),
        Err(GossipRejected::TooLarge(5000))
    );
    // From a host that is not configured in the group.
    let mut stranger = HostGroup::new(settings(9, &[1, 9], 1), now).unwrap();
    let (_, from_stranger) = stranger.poll_gossip().unwrap();
    assert_eq!(
        one.handle_gossip(now, SenderId(9), &from_stranger),
        Err(GossipRejected::NotAMember(HostId(9)))
    );
    assert!(one.is_alone());
    assert_eq!(one.counters().gossip_rejected, 5);

    // The genuine one is taken.
    one.handle_gossip(now, SenderId(2), &genuine).unwrap();
    assert_eq!(one.members().len(), 2);
}

#[test]
fn settings_are_checked() {
    let mut s = settings(1, &[1, 2], 1);
    s.probe_rtt = s.probe_period;
    assert!(HostGroup::new(s, std::time::Instant::now()).is_err());
    let mut s = settings(1, &[1, 2], 1);
    s.group = "g".repeat(64);
    assert!(s.validate().is_err());
    let mut s = settings(1, &[1, 2, 2], 1);
    assert!(s.validate().is_err());
    s.peers.pop();
    assert!(s.validate().is_ok());
}
