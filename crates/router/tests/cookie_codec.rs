//! Property mirror of the `affinity_cookie` fuzz target: the cookie parser is total,
//! canonical, and verifies only values signed with the same key.

use proptest::prelude::*;
use switchyard_router::{CookieKey, find_cookie, parse_cookie};

fn check(data: &[u8]) {
    let key = CookieKey::new([7; 32]);
    if let Some((host, _)) = parse_cookie(data) {
        assert!(data.starts_with(format!("v1.{host}.").as_bytes()));
        if key.decode(data).is_some() {
            assert_eq!(key.encode(host).as_bytes(), data);
        }
    }
    let _ = find_cookie(data, "SWITCHYARD");
    if let Some(v) = find_cookie(data, "s") {
        let _ = key.decode(v);
    }
}

#[test]
fn seed_corpus_holds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/affinity_cookie");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("corpus: {e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        check(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
        n += 1;
    }
    assert!(n >= 3);
}

proptest! {
    #[test]
    fn any_bytes_are_handled(data in proptest::collection::vec(any::<u8>(), 0..80)) {
        check(&data);
    }

    #[test]
    fn signed_values_round_trip_and_tampering_fails(host in any::<u32>(), key in any::<[u8; 32]>(), flip in 0usize..64) {
        let key = CookieKey::new(key);
        let value = key.encode(host);
        prop_assert_eq!(key.decode(value.as_bytes()), Some(host));
        prop_assert_eq!(parse_cookie(value.as_bytes()).map(|(h, _)| h), Some(host));
        let mut bytes = value.into_bytes();
        let i = flip % bytes.len();
        bytes[i] ^= 0x01;
        prop_assert_eq!(key.decode(&bytes), None);
        let header = format!("a=b; SY={}; c=d", key.encode(host));
        prop_assert_eq!(find_cookie(header.as_bytes(), "SY").and_then(|v| key.decode(v)), Some(host));
    }
}
