//! Every valid message survives seal → open unchanged; arbitrary and
//! mutated input never panics a decoder.

use proptest::prelude::*;
use switchyard_wire::{Message, MessageKind, Receiver, ReplayGuard, SenderId};

use crate::strategies::message;
use crate::{check_canonical, test_codec};

proptest! {
    #[test]
    fn seal_open_round_trips(msg in message(), sender in any::<u32>(), seq in any::<u64>()) {
        let codec = test_codec();
        let frame = codec.seal(SenderId(sender), seq, &msg).unwrap();
        let payload = msg.encode_payload().unwrap();
        prop_assert_eq!(frame.len(), payload.len() + switchyard_wire::frame::FRAME_OVERHEAD);
        prop_assert_eq!(codec.frame_len(&frame[..24]).unwrap(), frame.len());

        let env = codec.open(&frame).unwrap();
        prop_assert_eq!(env.sender, SenderId(sender));
        prop_assert_eq!(env.sequence, seq);
        prop_assert_eq!(&env.message, &msg);

        let decoded = Message::decode_payload(msg.kind(), &payload).unwrap();
        prop_assert_eq!(&decoded, &msg);

        let mut rx = Receiver::new(codec, ReplayGuard::default());
        prop_assert_eq!(rx.accept(&frame).unwrap().message, msg);
        prop_assert!(rx.accept(&frame).is_err());
    }

    #[test]
    fn open_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = test_codec().open(&bytes);
        let _ = test_codec().frame_len(&bytes);
    }

    #[test]
    fn open_arbitrary_after_valid_header_never_panics(
        kind in proptest::sample::select(MessageKind::ALL),
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut frame = b"SWYD\x01".to_vec();
        frame.push(kind.code());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&(rest.len().saturating_sub(44) as u32).to_be_bytes());
        frame.extend_from_slice(&rest);
        let _ = test_codec().open(&frame);
    }

    #[test]
    fn decode_arbitrary_payloads_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for &kind in MessageKind::ALL {
            check_canonical(kind, &bytes);
        }
    }

    #[test]
    fn decode_mutated_payloads_never_panics(
        msg in message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut payload = msg.encode_payload().unwrap();
        if !payload.is_empty() {
            for (at, value) in edits {
                let i = at.index(payload.len());
                payload[i] = value;
            }
        }
        check_canonical(msg.kind(), &payload);
        let cut = cut.index(payload.len() + 1);
        check_canonical(msg.kind(), &payload[..cut]);
    }
}
