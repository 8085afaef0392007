//! Allotments: tokens and percentages in proportion to spare capacity,
//! none for draining endpoints; over the admin API, the in-process handle
//! and from another unit over UDP.

use std::time::Instant;

use switchyard_health::{AllotmentSource, ServiceKey, TokenAllotment};
use switchyard_lb::admin::api::AllotmentView;
use switchyard_transport::UdpEndpoint;
use switchyard_wire::allotment::{Allotment, AllotmentRequest, AllotmentScheme};
use switchyard_wire::health::DirectiveState;
use switchyard_wire::{Message, Protocol, SenderId};

use crate::harness::*;

/// Hosts 101–103 at loads 20/50/80 (capacity 50), host 104 idle but
/// draining.
async fn three_loads_and_a_drain(unit: &switchyard_lb::RunningUnit) -> Vec<TestHost> {
    let control = unit.control_addr().expect("health role");
    let mut agents = Vec::new();
    for (id, load) in [(101u32, 20u8), (102, 50), (103, 80), (104, 0)] {
        let host = TestHost::start(id, control).await;
        let port = 8000 + id as u16;
        host.set(app(port), healthy(load, 50)).await;
        if id == 104 {
            host.with(move |m, now| {
                m.set_target(now, &app(port), DirectiveState::Draining)
                    .expect("drain")
            })
            .await;
        }
        agents.push(host);
    }
    wait_for_hosts(unit, &[101, 102, 103, 104], 1).await;
    // The drain reached the cache.
    eventually(WAIT, "draining target cached", || async {
        let doc = hosts(unit).await;
        (doc.hosts[3].rows[0].target == "draining").then_some(())
    })
    .await;
    agents
}

fn shares(entries: &[(u32, u64)]) -> Vec<f64> {
    let total: u64 = entries.iter().map(|e| e.1).sum();
    entries.iter().map(|e| e.1 as f64 / total as f64).collect()
}

fn assert_proportional(by_host: &[(u32, u64)]) {
    // Spare capacity 0.8 : 0.5 : 0.2, normalised.
    let expected = [0.8 / 1.5, 0.5 / 1.5, 0.2 / 1.5];
    let hosts: Vec<u32> = by_host.iter().map(|e| e.0).collect();
    assert_eq!(
        hosts,
        [101, 102, 103],
        "the draining host 104 must get nothing"
    );
    for (got, want) in shares(by_host).iter().zip(expected) {
        assert!((got - want).abs() < 0.02, "{by_host:?}: {got} vs {want}");
    }
}

#[tokio::test]
async fn token_and_percentage_allotments_follow_spare_capacity() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let agents = three_loads_and_a_drain(&unit).await;

    // The admin API shows previews: GET counts no allotment.
    let issued = unit
        .health()
        .expect("health role")
        .counters()
        .cache
        .allotments;

    // The admin API: 10 000 tokens.
    let view: AllotmentView = get_json(
        &unit,
        &format!("/v1/allotments?vip={VIP}&protocol=tcp&tokens=10000&scheme=tokens"),
    )
    .await;
    assert_eq!(view.scheme, "tokens");
    assert_eq!(view.valid_for_ms, Some(2000));
    let by_host: Vec<(u32, u64)> = view
        .entries
        .iter()
        .map(|e| (e.host, u64::from(e.tokens.expect("tokens"))))
        .collect();
    assert_eq!(by_host.iter().map(|e| e.1).sum::<u64>(), 10_000);
    assert_proportional(&by_host);
    assert_eq!(view.entries[0].host_name.as_deref(), Some("host-101.test"));

    // Percentages.
    let view: AllotmentView = get_json(
        &unit,
        &format!("/v1/allotments?vip={VIP}&scheme=percentages"),
    )
    .await;
    assert_eq!(view.duration_ms, Some(5000));
    let by_host: Vec<(u32, u64)> = view
        .entries
        .iter()
        .map(|e| (e.host, u64::from(e.basis_points.expect("basis points"))))
        .collect();
    assert_eq!(by_host.iter().map(|e| e.1).sum::<u64>(), 10_000);
    assert_proportional(&by_host);

    // /v1/hosts shows each endpoint's share of 100 tokens.
    let doc = hosts(&unit).await;
    let tokens: Vec<u32> = doc.hosts.iter().map(|h| h.rows[0].tokens).collect();
    assert_eq!(tokens, [54, 33, 13, 0]);
    assert_eq!(
        unit.health()
            .expect("health role")
            .counters()
            .cache
            .allotments,
        issued,
        "GET /v1/allotments and /v1/hosts must not count allotments"
    );

    // The in-process API a classifier uses: 10 000 draws.
    let health = unit.health().expect("health role").clone();
    let service = ServiceKey::new(VIP.parse().expect("vip"), Protocol::Tcp, "");
    let mut draws = [0u64; 4];
    let mut source = health.clone();
    let mut drawn = 0;
    while drawn < 10_000 {
        let request = AllotmentRequest {
            request_id: drawn,
            vip: service.vip,
            protocol: service.protocol,
            info: String::new(),
            scheme: AllotmentScheme::Tokens,
            wanted_tokens: 1000,
        };
        let now = Instant::now();
        let response = AllotmentSource::allot(&mut source, &request, now);
        let mut tokens = TokenAllotment::new(&response, now).expect("tokens");
        while let Some(endpoint) = tokens.draw(now) {
            draws[(endpoint.host.0 - 101) as usize] += 1;
            drawn += 1;
        }
    }
    assert_eq!(draws[3], 0, "draining endpoint drawn: {draws:?}");
    assert_proportional(&[(101, draws[0]), (102, draws[1]), (103, draws[2])]);

    // Previews are not counted; issued allotments are.
    let before = health.counters().cache.allotments;
    let _ = health.preview(&service, AllotmentScheme::Tokens, 100);
    assert_eq!(health.counters().cache.allotments, before);
    let _ = health.allot_service(&service, AllotmentScheme::Tokens, 100);
    assert_eq!(health.counters().cache.allotments, before + 1);

    for agent in agents {
        agent.kill();
    }
    unit.shutdown().await;
}

#[tokio::test]
async fn another_unit_gets_allotments_over_udp() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let agents = three_loads_and_a_drain(&unit).await;
    let control = unit.control_addr().expect("health role");
    let mut peer = UdpEndpoint::bind(loopback0(), codec(), SenderId(2))
        .await
        .expect("peer socket");
    let request = AllotmentRequest {
        request_id: 77,
        vip: VIP.parse().expect("vip"),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme: AllotmentScheme::Tokens,
        wanted_tokens: 1500,
    };
    peer.send(control, &Message::from(request))
        .await
        .expect("send");
    let received = tokio::time::timeout(WAIT, peer.recv())
        .await
        .expect("answer in time")
        .expect("recv");
    let envelope = received.result.expect("authentic answer");
    assert_eq!(envelope.sender, SenderId(1));
    let Message::AllotmentResponse(response) = envelope.message else {
        panic!("not an allotment response: {:?}", envelope.message)
    };
    assert_eq!(response.request_id, 77);
    let Allotment::Tokens { entries, .. } = response.allotment else {
        panic!("not tokens")
    };
    let by_host: Vec<(u32, u64)> = entries
        .iter()
        .map(|g| (g.host.0, u64::from(g.tokens)))
        .collect();
    assert_eq!(by_host.iter().map(|e| e.1).sum::<u64>(), 1500);
    assert_proportional(&by_host);
    for agent in agents {
        agent.kill();
    }
    unit.shutdown().await;
}
