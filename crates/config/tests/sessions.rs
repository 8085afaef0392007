//! `[sessions]`: defaults and every setting read. Its mistakes are cases of the table in
//! `diagnostics.rs` (named `sessions: …`).

use std::path::Path;
use std::time::Duration;

use switchyard_config::{SessionReplication, SessionSettings, load_file};

/// A valid cluster: one session-store unit and a pool. 19 lines.
const PREFIX: &str = r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 60000
address = "192.0.2.1"
roles = ["session-store", "health-cache"]

[[pools]]
name = "p"

[[pools.hosts]]
id = 900
name = "h900"
address = "192.0.2.90:80"
app = "a"

"#;

fn fixture_dir() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cluster.key"),
        format!("{}\n", "5e".repeat(32)),
    )?;
    Ok(dir)
}

fn load(dir: &Path, name: &str, text: &str) -> Result<switchyard_config::Config, String> {
    let file = dir.join(format!("{}.toml", name.replace(' ', "-")));
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    load_file(&file).map_err(|d| d.to_string())
}

#[test]
fn defaults_apply_without_the_table() -> Result<(), String> {
    let dir = fixture_dir().map_err(|e| e.to_string())?;
    let config = load(dir.path(), "defaults", PREFIX)?;
    assert_eq!(config.sessions, SessionSettings::default());
    assert_eq!(config.sessions.replication, SessionReplication::Level(1));
    assert_eq!(config.sessions.port, 9174);
    Ok(())
}

#[test]
fn every_setting_is_read() -> Result<(), String> {
    let dir = fixture_dir().map_err(|e| e.to_string())?;
    let text = format!(
        "{PREFIX}[sessions]\nreplication = \"full\"\nport = 9200\nresend_interval = \"200ms\"\nkeepalive_interval = \"500ms\"\nrebind_after = \"2s\"\ncache_size = 10\ncache_ttl = \"3s\"\n[sessions.zombie]\nfour_tuple = \"4s\"\nclient_ip = \"5s\"\ntls_session_id = \"6s\"\nhttp_cookie = \"7s\"\nuser = \"8s\"\ncustom = \"9s\"\n"
    );
    let s = load(dir.path(), "all", &text)?.sessions;
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
    let level0 = format!("{PREFIX}[sessions]\nreplication = 0\n");
    assert_eq!(
        load(dir.path(), "level0", &level0)?.sessions.replication,
        SessionReplication::Level(0)
    );
    Ok(())
}
