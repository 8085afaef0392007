//! Real UDP on loopback: authenticated messages go through; forged, corrupted, replayed and
//! random datagrams are counted by reason and never delivered.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_transport::{RejectReason, UdpEndpoint};
use switchyard_wire::health::Goodbye;
use switchyard_wire::{Codec, HostId, MacKey, Message, SenderId, UnitId};

fn codec(secret: &[u8], cluster: &str) -> Codec {
    Codec::new(MacKey::derive(secret, cluster).expect("key"))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn recv(endpoint: &mut UdpEndpoint) -> switchyard_transport::Received {
    tokio::time::timeout(Duration::from_secs(5), endpoint.recv())
        .await
        .expect("a datagram within 5 s")
        .expect("socket receive")
}

#[tokio::test]
async fn authentic_messages_arrive_and_everything_else_is_counted_and_dropped() {
    let secret = [7u8; 32];
    let mut unit = UdpEndpoint::bind(loopback(), codec(&secret, "c1"), UnitId(1).into())
        .await
        .expect("bind unit");
    let unit_addr = unit.local_addr().expect("addr");
    let host = UdpEndpoint::bind(loopback(), codec(&secret, "c1"), HostId(9).into())
        .await
        .expect("bind host");

    // Authentic.
    let goodbye = Message::from(Goodbye { host: HostId(9) });
    host.send(unit_addr, &goodbye).await.expect("send");
    let got = recv(&mut unit).await;
    let envelope = got.result.expect("accepted");
    assert_eq!(envelope.message, goodbye);
    assert_eq!(envelope.sender, SenderId::from(HostId(9)));
    assert_eq!(got.from, host.local_addr().expect("addr"));

    // Another cluster's key (or a forger without the secret): bad tag.
    let stranger = UdpEndpoint::bind(loopback(), codec(&secret, "c2"), HostId(9).into())
        .await
        .expect("bind stranger");
    stranger.send(unit_addr, &goodbye).await.expect("send");
    let got = recv(&mut unit).await;
    assert!(got.result.is_err());

    // Raw datagrams: junk, a replay of a captured frame, and a corrupted copy.
    let raw = tokio::net::UdpSocket::bind(loopback())
        .await
        .expect("bind raw");
    raw.send_to(b"definitely not a switchyard frame", unit_addr)
        .await
        .expect("send junk");
    assert!(recv(&mut unit).await.result.is_err());

    let sealed = codec(&secret, "c1")
        .seal(HostId(9).into(), 1, &goodbye)
        .expect("seal");
    raw.send_to(&sealed, unit_addr).await.expect("send");
    // Sequence 1 is far behind the clock-based sequences the host endpoint already used.
    assert!(recv(&mut unit).await.result.is_err());

    let fresh = codec(&secret, "c1")
        .seal(HostId(77).into(), 5, &goodbye)
        .expect("seal");
    raw.send_to(&fresh, unit_addr).await.expect("send");
    assert!(
        recv(&mut unit).await.result.is_ok(),
        "first copy is accepted"
    );
    raw.send_to(&fresh, unit_addr).await.expect("send");
    assert!(
        recv(&mut unit).await.result.is_err(),
        "second copy is a replay"
    );

    let mut corrupted = codec(&secret, "c1")
        .seal(HostId(78).into(), 5, &goodbye)
        .expect("seal");
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    raw.send_to(&corrupted, unit_addr).await.expect("send");
    assert!(recv(&mut unit).await.result.is_err());

    let counters = unit.counters().snapshot();
    assert_eq!(counters.received, 2);
    assert_eq!(counters.rejected_for(RejectReason::BadTag), 2);
    assert_eq!(counters.rejected_for(RejectReason::Framing), 1);
    assert_eq!(counters.rejected_for(RejectReason::Stale), 1);
    assert_eq!(counters.rejected_for(RejectReason::Replayed), 1);
    assert_eq!(counters.rejected_total(), 5);
    assert_eq!(host.counters().snapshot().sent, 1);
}
