//! Forged, corrupted, truncated, random, replayed and impersonating
//! datagrams are counted by reason and change nothing.

use rand::RngCore;
use switchyard_lb::admin::api::{CountersResponse, HostsResponse};
use switchyard_wire::health::{AppStatus, Health, Row, RowChange, RowOp};
use switchyard_wire::health::{Directive, DirectiveState, GetTableSnapshot};
use switchyard_wire::{Codec, HostId, MacKey, Message, SenderId, UnitId};
use tokio::net::UdpSocket;

use crate::harness::*;

/// A row change that would mark host 101's endpoint failing.
fn poison() -> Message {
    Message::from(RowChange {
        host: HostId(101),
        generation: u64::MAX / 2,
        ops: vec![RowOp::Update(Row {
            app: app(8081),
            status: AppStatus::new(Health::Failing, 100, 0).expect("status"),
            directive: Directive {
                target: DirectiveState::Inactive,
                current: DirectiveState::Inactive,
            },
        })],
    })
}

/// The parts of the document that must not change (heartbeat ages do).
fn essence(doc: &HostsResponse) -> Vec<(u32, u64, String)> {
    doc.hosts
        .iter()
        .map(|h| {
            let rows = serde_json::to_string(&h.rows).expect("json");
            (h.id, h.generation, rows)
        })
        .collect()
}

#[tokio::test]
async fn hostile_datagrams_are_counted_by_reason_and_ignored() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let control = unit.control_addr().expect("health role");
    let host = TestHost::start(101, control).await;
    host.set(app(8081), healthy(30, 50)).await;
    let before = essence(&wait_for_hosts(&unit, &[101], 1).await);

    let attacker = UdpSocket::bind(loopback0()).await.expect("socket");
    let good = codec();
    let forger = Codec::new(MacKey::derive(&[0x5a; 32], CLUSTER).expect("key"));
    let other_cluster = Codec::new(MacKey::derive(SECRET.as_bytes(), "other").expect("key"));
    let sequence = u64::MAX / 4;

    // Forged: the right format, the wrong key (or another cluster's key).
    let forged = forger
        .seal(SenderId(101), sequence, &poison())
        .expect("seal");
    let foreign = other_cluster
        .seal(SenderId(101), sequence, &poison())
        .expect("seal");
    // Corrupted: a genuine frame with one payload byte flipped.
    let mut corrupted = good.seal(SenderId(101), sequence, &poison()).expect("seal");
    corrupted[30] ^= 0x01;
    // Truncated: a genuine frame cut short.
    let genuine = good.seal(SenderId(101), sequence, &poison()).expect("seal");
    let truncated = genuine[..genuine.len() - 10].to_vec();
    // Random bytes, and an empty datagram.
    let mut random = vec![0u8; 200];
    rand::rng().fill_bytes(&mut random);
    for datagram in [
        &forged,
        &foreign,
        &corrupted,
        &truncated,
        &random,
        &Vec::new(),
    ] {
        attacker.send_to(datagram, control).await.expect("send");
    }
    // Authentic but impersonating: configured host 102 reports host 101's rows, and
    // sender 999, which the configuration does not have, does too.
    let impersonation = good.seal(SenderId(102), 1, &poison()).expect("seal");
    attacker
        .send_to(&impersonation, control)
        .await
        .expect("send");
    let stranger = good.seal(SenderId(999), 1, &poison()).expect("seal");
    attacker.send_to(&stranger, control).await.expect("send");
    // Authentic, then replayed.
    let snapshot_request = Message::from(GetTableSnapshot {
        requester: UnitId(102),
    });
    let once = good
        .seal(SenderId(102), 2, &snapshot_request)
        .expect("seal");
    attacker.send_to(&once, control).await.expect("send");
    attacker.send_to(&once, control).await.expect("send");

    let counters: CountersResponse = eventually(WAIT, "all counted", || async {
        let c: CountersResponse = get_json(&unit, "/v1/counters").await;
        let t = &c.transport;
        let done = t.rejected_total >= 7
            && c.service
                .ignored
                .get("sender-mismatch")
                .copied()
                .unwrap_or(0)
                >= 1
            && c.service
                .ignored
                .get("unknown-sender")
                .copied()
                .unwrap_or(0)
                >= 1
            && c.service
                .ignored
                .get("not-for-this-machine")
                .copied()
                .unwrap_or(0)
                >= 1;
        done.then_some(c)
    })
    .await;
    let rejected = &counters.transport.rejected;
    assert_eq!(rejected["bad-tag"], 3, "{rejected:?}");
    assert_eq!(rejected["framing"], 3, "{rejected:?}");
    assert_eq!(rejected["replayed"], 1, "{rejected:?}");
    assert_eq!(counters.transport.rejected_total, 7);
    assert_eq!(counters.service.ignored["sender-mismatch"], 1);
    assert_eq!(counters.service.ignored["unknown-sender"], 1);
    assert_eq!(counters.service.ignored["not-for-this-machine"], 1);

    // The cache is unchanged, and the host is still served.
    let after = hosts(&unit).await;
    assert_eq!(essence(&after), before);
    assert_eq!(after.hosts[0].rows[0].health, "healthy");

    // The metrics say the same.
    let metrics = scrape(&unit).await;
    for (family, reason, n) in [
        ("switchyard_health_transport_rejected", "bad-tag", 3.0),
        ("switchyard_health_transport_rejected", "framing", 3.0),
        ("switchyard_health_transport_rejected", "replayed", 1.0),
        ("switchyard_health_messages_ignored", "sender-mismatch", 1.0),
    ] {
        assert_eq!(
            metrics.value(family, &[("unit", "lb-1"), ("reason", reason)]),
            Some(n),
            "{family}{{reason={reason}}}:\n{}",
            metrics.text
        );
    }
    host.kill();
    unit.shutdown().await;
}
