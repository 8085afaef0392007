//! Decodes arbitrary bytes as the request router's affinity cookie: the parser is total,
//! a decoded value re-encodes to the same bytes, and only correctly signed values verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::{CookieKey, find_cookie, parse_cookie};

fuzz_target!(|data: &[u8]| {
    let key = CookieKey::new([7; 32]);
    if let Some((host, _tag)) = parse_cookie(data) {
        // Canonical form: a parsed value is exactly the text that names it.
        let prefix = format!("v1.{host}.");
        assert!(data.starts_with(prefix.as_bytes()));
        if key.decode(data).is_some() {
            assert_eq!(key.encode(host).as_bytes(), data);
        }
    }
    let _ = find_cookie(data, "SWITCHYARD");
    if let Some(value) = find_cookie(data, "s") {
        let _ = key.decode(value);
    }
});
