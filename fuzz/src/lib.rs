//! Shared harness of the wire protocol fuzz targets.
//!
//! Family targets read one selector byte (the index of a message type
//! within the family, modulo the family's size) and decode the rest as that
//! type's payload, bypassing the MAC so the decoders are reached. Whatever
//! decodes must re-encode to exactly the input: the encoding is canonical.
//! The `frame` target opens raw input with a fixed test key.

use std::sync::OnceLock;

use switchyard_wire::{Codec, Family, HEADER_LEN, MacKey, Message};

/// Key of the `frame` target; the seed corpus is sealed with it (see
/// crates/wire/examples/seed_corpus.rs). Not a production secret.
const FUZZ_SECRET: &[u8] = b"switchyard-fuzz-secret-not-for-production";
const FUZZ_CLUSTER: &str = "fuzz";

/// Decodes `data` as a payload of one of `family`'s message types and
/// checks the round trip.
pub fn family_round_trip(family: Family, data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let kinds = family.kinds();
    let kind = kinds[usize::from(selector) % kinds.len()];
    let Ok(message) = Message::decode_payload(kind, payload) else {
        return;
    };
    assert_eq!(message.kind(), kind);
    let encoded = match message.encode_payload() {
        Ok(encoded) => encoded,
        Err(e) => panic!("{kind}: decoded message does not re-encode: {e}"),
    };
    assert_eq!(encoded, payload, "{kind}: encoding is not canonical");
}

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(|| match MacKey::derive(FUZZ_SECRET, FUZZ_CLUSTER) {
        Ok(key) => Codec::new(key),
        Err(e) => panic!("fuzz key: {e}"),
    })
}

/// Opens `data` as a frame; an opened frame must agree with the stream
/// length function and re-seal to exactly the input.
pub fn open_frame(data: &[u8]) {
    let codec = codec();
    let length = codec.frame_len(data);
    let Ok(envelope) = codec.open(data) else {
        return;
    };
    assert_eq!(length.ok(), Some(data.len()));
    assert!(data.len() >= HEADER_LEN);
    match codec.seal(envelope.sender, envelope.sequence, &envelope.message) {
        Ok(frame) => assert_eq!(frame, data, "re-sealed frame differs"),
        Err(e) => panic!("opened message does not re-seal: {e}"),
    }
}
