//! Every framing, authentication and replay error, in the documented order.

use switchyard_wire::frame::{FRAME_OVERHEAD, MAX_UDP_PAYLOAD};
use switchyard_wire::health::Goodbye;
use switchyard_wire::plumbing::{Ingress, Miss};
use switchyard_wire::replay::REPLAY_WINDOW;
use switchyard_wire::{
    Codec, EncodeError, HEADER_LEN, HostId, MAX_PAYLOAD, MacKey, Message, Receiver, ReplayGuard,
    SenderId, WireError,
};

use crate::test_codec;

const S: SenderId = SenderId(9);

fn goodbye() -> Message {
    Goodbye { host: HostId(9) }.into()
}

fn frame() -> Vec<u8> {
    test_codec().seal(S, 42, &goodbye()).unwrap()
}

#[test]
fn layout_is_as_documented() {
    let f = frame();
    assert_eq!(&f[0..4], b"SWYD");
    assert_eq!(f[4], 1);
    assert_eq!(f[5], 0x11);
    assert_eq!(&f[6..8], &[0, 0]);
    assert_eq!(&f[8..12], &4u32.to_be_bytes());
    assert_eq!(&f[12..16], &9u32.to_be_bytes());
    assert_eq!(&f[16..24], &42u64.to_be_bytes());
    assert_eq!(&f[24..28], &9u32.to_be_bytes());
    assert_eq!(f.len(), 4 + FRAME_OVERHEAD);
}

#[test]
fn header_errors() {
    let codec = test_codec();
    let good = frame();

    let mut f = good.clone();
    f[0] = b'X';
    assert_eq!(codec.open(&f), Err(WireError::BadMagic { found: *b"XWYD" }));

    let mut f = good.clone();
    f[4] = 2;
    assert_eq!(codec.open(&f), Err(WireError::UnsupportedVersion(2)));

    let mut f = good.clone();
    f[5] = 0x1f;
    assert_eq!(codec.open(&f), Err(WireError::UnknownMessageType(0x1f)));

    let mut f = good.clone();
    f[7] = 1;
    assert_eq!(codec.open(&f), Err(WireError::ReservedFlags(1)));

    let mut f = good.clone();
    f[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
    assert_eq!(
        codec.open(&f),
        Err(WireError::PayloadTooLong {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        })
    );
    let mut f = good.clone();
    f[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        codec.open(&f),
        Err(WireError::PayloadTooLong { .. })
    ));
}

#[test]
fn per_codec_payload_limit() {
    let udp = test_codec().with_max_payload(MAX_UDP_PAYLOAD);
    let big: Message = Miss {
        ingress: Ingress {
            ifindex: 1,
            queue: 0,
        },
        packet: vec![0; 65_000],
    }
    .into();
    // Sealing refuses what a peer would refuse.
    assert!(matches!(
        udp.seal(S, 1, &big),
        Err(EncodeError::PayloadTooLong {
            max: MAX_UDP_PAYLOAD,
            ..
        })
    ));
    // Opening refuses it before looking further.
    let frame = test_codec().seal(S, 1, &big).unwrap();
    assert_eq!(
        udp.open(&frame),
        Err(WireError::PayloadTooLong {
            len: 65_000 + 12,
            max: MAX_UDP_PAYLOAD
        })
    );
    assert!(matches!(
        udp.frame_len(&frame[..HEADER_LEN]),
        Err(WireError::PayloadTooLong { .. })
    ));
    // The limit never exceeds the global maximum.
    assert_eq!(
        test_codec().with_max_payload(usize::MAX).max_payload(),
        MAX_PAYLOAD
    );
}

#[test]
fn truncation_and_length_mismatch() {
    let codec = test_codec();
    let good = frame();
    assert_eq!(
        codec.open(&good[..10]),
        Err(WireError::Truncated {
            needed: 24,
            got: 10
        })
    );
    assert_eq!(
        codec.open(&[]),
        Err(WireError::Truncated { needed: 24, got: 0 })
    );
    assert_eq!(
        codec.open(&good[..good.len() - 1]),
        Err(WireError::Truncated {
            needed: good.len(),
            got: good.len() - 1
        })
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        codec.open(&long),
        Err(WireError::LengthMismatch {
            expected: good.len(),
            got: good.len() + 1
        })
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let codec = test_codec();
    let good = frame();
    assert!(codec.open(&good).is_ok());
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut f = good.clone();
            f[byte] ^= 1 << bit;
            let err = codec.open(&f).unwrap_err();
            // Beyond the checked header fields, only the tag can notice.
            if byte >= 12 {
                assert_eq!(err, WireError::BadTag, "byte {byte} bit {bit}");
            }
        }
    }
}

#[test]
fn wrong_cluster_or_secret_is_bad_tag() {
    let f = frame();
    let other_cluster = Codec::new(MacKey::derive(&[0x5a; 32], "other-cluster").unwrap());
    assert_eq!(other_cluster.open(&f), Err(WireError::BadTag));
    let other_secret = Codec::new(MacKey::derive(&[0x5b; 32], "test-cluster").unwrap());
    assert_eq!(other_secret.open(&f), Err(WireError::BadTag));
}

#[test]
fn stream_reassembly_with_frame_len() {
    let codec = test_codec();
    let mut stream = Vec::new();
    for seq in 0..3 {
        codec.seal_into(S, seq, &goodbye(), &mut stream).unwrap();
    }
    let mut rest = &stream[..];
    let mut seen = 0;
    while !rest.is_empty() {
        let len = codec.frame_len(&rest[..HEADER_LEN]).unwrap();
        let env = codec.open(&rest[..len]).unwrap();
        assert_eq!(env.sequence, seen);
        rest = &rest[len..];
        seen += 1;
    }
    assert_eq!(seen, 3);
    assert_eq!(
        codec.frame_len(&stream[..5]),
        Err(WireError::Truncated { needed: 24, got: 5 })
    );
}

#[test]
fn seal_into_failure_leaves_buffer_untouched() {
    let codec = test_codec();
    let mut out = b"prefix".to_vec();
    let bad: Message = switchyard_wire::health::SendTableSnapshot {
        host: HostId(1),
        generation: 1,
        part: 0,
        parts: 0,
        rows: vec![],
    }
    .into();
    assert!(codec.seal_into(S, 1, &bad, &mut out).is_err());
    assert_eq!(out, b"prefix");
}

#[test]
fn replay_protection() {
    let codec = test_codec();
    let mut rx = Receiver::new(codec.clone(), ReplayGuard::default());
    let seal = |seq| codec.seal(S, seq, &goodbye()).unwrap();

    assert!(rx.accept(&seal(5000)).is_ok());
    assert_eq!(
        rx.accept(&seal(5000)),
        Err(WireError::Replayed {
            sender: S,
            sequence: 5000
        })
    );
    // Out of order within the window: accepted exactly once.
    assert!(rx.accept(&seal(4990)).is_ok());
    assert!(matches!(
        rx.accept(&seal(4990)),
        Err(WireError::Replayed { .. })
    ));
    // Older than the window.
    assert_eq!(
        rx.accept(&seal(5000 - REPLAY_WINDOW)),
        Err(WireError::Stale {
            sender: S,
            sequence: 5000 - REPLAY_WINDOW,
            newest: 5000
        })
    );
    assert!(rx.accept(&seal(5001)).is_ok());
}

#[test]
fn unauthenticated_frames_never_touch_replay_state() {
    let codec = test_codec();
    let mut rx = Receiver::new(codec.clone(), ReplayGuard::new(1));
    let mut forged = codec.seal(SenderId(1), 7, &goodbye()).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(rx.accept(&forged), Err(WireError::BadTag));
    assert!(rx.replay().is_empty());
    // The genuine frame with that sequence is still accepted.
    forged[last] ^= 1;
    assert!(rx.accept(&forged).is_ok());
}

#[test]
fn too_many_senders() {
    let codec = test_codec();
    let mut rx = Receiver::new(codec.clone(), ReplayGuard::new(2));
    for id in [1, 2] {
        assert!(
            rx.accept(&codec.seal(SenderId(id), 1, &goodbye()).unwrap())
                .is_ok()
        );
    }
    let third = codec.seal(SenderId(3), 1, &goodbye()).unwrap();
    assert_eq!(rx.accept(&third), Err(WireError::TooManySenders { max: 2 }));
    rx.replay_mut().forget(SenderId(1));
    assert!(rx.accept(&third).is_ok());
}

#[test]
fn errors_read_well() {
    assert_eq!(
        WireError::UnsupportedVersion(3).to_string(),
        "unsupported protocol version 3 (this build speaks version 1)"
    );
    assert_eq!(
        WireError::UnknownMessageType(0x99).to_string(),
        "unknown message type 0x99"
    );
    assert_eq!(
        WireError::Stale {
            sender: S,
            sequence: 1,
            newest: 2000
        }
        .to_string(),
        "stale frame: sequence 1 from sender 9 is behind the replay window (newest 2000)"
    );
}
