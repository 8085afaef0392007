//! Integration tests of the wire protocol, in one binary to keep link time
//! low: round trips, framing and replay errors, validation errors, and the
//! committed fuzz seed corpus.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod corpus;
mod framing;
mod roundtrip;
mod strategies;
mod validation;

use switchyard_wire::{Codec, MacKey};

/// Secret and cluster id of the fuzz `frame` target and its seed corpus
/// (also in fuzz/fuzz_targets/frame.rs and examples/seed_corpus.rs).
pub const FUZZ_SECRET: &[u8] = b"switchyard-fuzz-secret-not-for-production";
pub const FUZZ_CLUSTER: &str = "fuzz";

pub fn test_codec() -> Codec {
    Codec::new(MacKey::derive(&[0x5a; 32], "test-cluster").unwrap())
}

pub fn fuzz_codec() -> Codec {
    Codec::new(MacKey::derive(FUZZ_SECRET, FUZZ_CLUSTER).unwrap())
}

/// Decodes `payload` as `kind`; if it decodes, it must re-encode to exactly
/// the same bytes (the encoding is canonical). Mirrors the fuzz targets.
pub fn check_canonical(kind: switchyard_wire::MessageKind, payload: &[u8]) {
    if let Ok(message) = switchyard_wire::Message::decode_payload(kind, payload) {
        assert_eq!(message.kind(), kind);
        let again = message.encode_payload().unwrap();
        assert_eq!(again, payload, "{kind}: re-encoding differs");
    }
}
