//! `[sessions]`: defaults and every setting read. Its mistakes are cases of the table in
//! `diagnostics.rs` (named `sessions: …`).

mod common;

use std::time::Duration;

use common::{PREFIX, SUFFIX, config};
use switchyard_config::{SessionReplication, SessionSettings};

#[test]
fn defaults_apply_without_the_table() -> Result<(), String> {
    let config = config(&format!("{PREFIX}{SUFFIX}"))?;
    assert_eq!(config.sessions, SessionSettings::default());
    assert_eq!(config.sessions.replication, SessionReplication::Level(1));
    assert_eq!(config.sessions.port, 9174);
    Ok(())
}

#[test]
fn every_setting_is_read() -> Result<(), String> {
    let text = format!(
        "{PREFIX}[sessions]\nreplication = \"full\"\nport = 9200\nresend_interval = \"200ms\"\nkeepalive_interval = \"500ms\"\nrebind_after = \"2s\"\ncache_size = 10\ncache_ttl = \"3s\"\n[sessions.zombie]\nfour_tuple = \"4s\"\nclient_ip = \"5s\"\ntls_session_id = \"6s\"\nhttp_cookie = \"7s\"\nuser = \"8s\"\ncustom = \"9s\"\n{SUFFIX}"
    );
    let s = config(&text)?.sessions;
    assert_eq!(s.replication, SessionReplication::Full);
    assert_eq!(s.port, 9200);
    assert_eq!(s.resend_interval, Duration::from_millis(200));
    assert_eq!(s.keepalive_interval, Duration::from_millis(500));
    assert_eq!(s.rebind_after, Duration::from_secs(2));
    assert_eq!(s.cache_size, 10);
    assert_eq!(s.cache_ttl, Duration::from_secs(3));
    let z = s.zombie;
    assert_eq!(
        [
            z.four_tuple,
            z.client_ip,
            z.tls_session_id,
            z.http_cookie,
            z.user,
            z.custom
        ],
        [4, 5, 6, 7, 8, 9].map(Duration::from_secs)
    );
    let level0 = format!("{PREFIX}[sessions]\nreplication = 0\n{SUFFIX}");
    assert_eq!(
        config(&level0)?.sessions.replication,
        SessionReplication::Level(0)
    );
    Ok(())
}
