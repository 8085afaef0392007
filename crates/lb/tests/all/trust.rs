//! The unit's cache hears only the configuration's hosts and units: a host id nobody
//! configured never enters it, a group leader cannot speak for hosts outside its group,
//! and only configured units get allotments. Everything refused is counted.

use std::time::Duration;

use switchyard_lb::admin::api::CountersResponse;
use switchyard_transport::UdpEndpoint;
use switchyard_wire::allotment::{AllotmentRequest, AllotmentScheme};
use switchyard_wire::health::{ConsolidatedHeartbeat, ContentCheck, Heartbeat};
use switchyard_wire::{HostId, Message, Protocol, SenderId};

use crate::harness::*;

fn heartbeat(host: u32) -> Heartbeat {
    Heartbeat {
        host: HostId(host),
        check: ContentCheck::Table {
            generation: 1,
            digest: 0,
        },
        name: None,
        address: None,
        forward: false,
    }
}

fn ignored(c: &CountersResponse, reason: &str) -> u64 {
    c.service.ignored.get(reason).copied().unwrap_or(0)
}

#[tokio::test]
async fn unconfigured_hosts_and_foreign_group_members_never_enter_the_cache() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let control = unit.control_addr().expect("health role");

    // A host the configuration does not have, running a complete protocol machine.
    let stranger = TestHost::start(105, control).await;
    stranger.set(app(8105), healthy(10, 50)).await;
    // Host 103 is configured but in no group: as a "leader" it may forward only itself.
    let lone = UdpEndpoint::bind(loopback0(), codec(), SenderId(103))
        .await
        .expect("socket");
    let consolidated = Message::from(ConsolidatedHeartbeat {
        leader: HostId(103),
        heartbeats: vec![heartbeat(103), heartbeat(104), heartbeat(106)],
    });
    // Host 101 leads the group {101, 102}: 102 is forwarded, 104 is not its to forward.
    let leader = UdpEndpoint::bind(loopback0(), codec(), SenderId(101))
        .await
        .expect("socket");
    let grouped = Message::from(ConsolidatedHeartbeat {
        leader: HostId(101),
        heartbeats: vec![heartbeat(102), heartbeat(104)],
    });
    // An unconfigured unit asking for an allotment.
    let mut unknown_unit = UdpEndpoint::bind(loopback0(), codec(), SenderId(7))
        .await
        .expect("socket");
    let request = Message::from(AllotmentRequest {
        request_id: 1,
        vip: VIP.parse().expect("vip"),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme: AllotmentScheme::Tokens,
        wanted_tokens: 10,
    });

    let counters = eventually(WAIT, "refusals counted", || {
        let (lone, leader, unknown_unit) = (&lone, &leader, &unknown_unit);
        let (consolidated, grouped, request) = (&consolidated, &grouped, &request);
        let unit = &unit;
        async move {
            lone.send(control, consolidated).await.expect("send");
            leader.send(control, grouped).await.expect("send");
            unknown_unit.send(control, request).await.expect("send");
            let c: CountersResponse = get_json(unit, "/v1/counters").await;
            let done = ignored(&c, "unknown-host") >= 3
                && ignored(&c, "not-a-member") >= 4
                && ignored(&c, "unknown-unit") >= 2;
            done.then_some(c)
        }
    })
    .await;
    println!("ignored: {:?}", counters.service.ignored);

    // Only configured hosts the senders may speak for are cached: 103 for itself, 102
    // through its group's leader. 101 itself sent no heartbeat of its own.
    let doc = hosts(&unit).await;
    let cached: Vec<u32> = doc.hosts.iter().map(|h| h.id).collect();
    assert_eq!(cached, [102, 103], "{doc:?}");
    // The stranger's rows are nowhere, and it was never answered.
    let services: serde_json::Value = get_json(&unit, "/v1/services").await;
    assert!(
        !services.to_string().contains("8105"),
        "unconfigured host's row cached: {services}"
    );
    // The unconfigured unit got no allotment.
    let answer = tokio::time::timeout(Duration::from_millis(300), unknown_unit.recv()).await;
    assert!(
        answer.is_err(),
        "an unconfigured unit was answered: {answer:?}"
    );
    let metrics = scrape(&unit).await;
    for reason in ["unknown-host", "not-a-member", "unknown-unit"] {
        assert!(
            metrics
                .value("switchyard_health_messages_ignored", &[("reason", reason)])
                .is_some(),
            "{reason} missing:\n{}",
            metrics.text
        );
    }
    stranger.kill();
    unit.shutdown().await;
}
