//! `[sessions]`: defaults, every setting read, and one located, explained error per kind of
//! mistake (the style of `diagnostics.rs`: each case is appended to a valid cluster prefix of
//! `PREFIX_LINES` lines, so expected lines count from the case's own first line).

use std::path::Path;
use std::time::Duration;

use switchyard_config::{Diagnostic, SessionReplication, SessionSettings, load_file};

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
const PREFIX_LINES: usize = 19;

struct Case {
    name: &'static str,
    toml: &'static str,
    code: &'static str,
    message: &'static str,
    line: usize,
    field: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "unknown field",
        toml: "[sessions]\nreplicaton = 1\n",
        code: "unknown-field",
        message: "unknown field `replicaton` in [sessions]",
        line: 2,
        field: "sessions.replicaton",
    },
    Case {
        name: "replication word",
        toml: "[sessions]\nreplication = \"all\"\n",
        code: "bad-value",
        message: "neither a level nor \"full\"",
        line: 2,
        field: "sessions.replication",
    },
    Case {
        name: "replication too high",
        toml: "[sessions]\nreplication = 256\n",
        code: "out-of-range",
        message: "replication 256 is out of range",
        line: 2,
        field: "sessions.replication",
    },
    Case {
        name: "replication negative",
        toml: "[sessions]\nreplication = -1\n",
        code: "out-of-range",
        message: "replication -1 is out of range",
        line: 2,
        field: "sessions.replication",
    },
    Case {
        name: "replication wrong type",
        toml: "[sessions]\nreplication = 1.5\n",
        code: "wrong-type",
        message: "replication",
        line: 2,
        field: "sessions.replication",
    },
    Case {
        name: "port zero",
        toml: "[sessions]\nport = 0\n",
        code: "out-of-range",
        message: "port 0 is out of range",
        line: 2,
        field: "sessions.port",
    },
    Case {
        name: "port taken by the control port",
        toml: "[sessions]\nport = 9170\n",
        code: "conflicting-settings",
        message: "sessions.port 9170 is also unit lb's control_port",
        line: 2,
        field: "sessions.port",
    },
    Case {
        name: "zero resend interval",
        toml: "[sessions]\nresend_interval = \"0s\"\n",
        code: "bad-duration",
        message: "resend_interval must be longer than zero",
        line: 2,
        field: "sessions.resend_interval",
    },
    Case {
        name: "bad duration",
        toml: "[sessions]\ncache_ttl = \"soon\"\n",
        code: "bad-duration",
        message: "invalid duration \"soon\"",
        line: 2,
        field: "sessions.cache_ttl",
    },
    Case {
        name: "rebind before a resend",
        toml: "[sessions]\nresend_interval = \"2s\"\nrebind_after = \"1s\"\n",
        code: "conflicting-settings",
        message: "rebind_after (1s) must be longer than resend_interval and keepalive_interval (2s)",
        line: 3,
        field: "sessions.rebind_after",
    },
    Case {
        name: "cache size zero",
        toml: "[sessions]\ncache_size = 0\n",
        code: "out-of-range",
        message: "cache_size 0 is out of range",
        line: 2,
        field: "sessions.cache_size",
    },
    Case {
        name: "unknown session type",
        toml: "[sessions.zombie]\ncookie = \"10s\"\n",
        code: "unknown-field",
        message: "unknown field `cookie` in [sessions.zombie]",
        line: 2,
        field: "sessions.zombie.cookie",
    },
    Case {
        name: "zombie time too long",
        toml: "[sessions.zombie]\nuser = \"100d\"\n",
        code: "out-of-range",
        message: "zombie time user is longer than the wire allows",
        line: 2,
        field: "sessions.zombie.user",
    },
];

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
fn each_mistake_in_sessions_gets_its_own_located_message() -> std::io::Result<()> {
    let dir = fixture_dir()?;
    let mut failures = Vec::new();
    for case in CASES {
        let file = dir
            .path()
            .join(format!("{}.toml", case.name.replace(' ', "-")));
        std::fs::write(&file, format!("{PREFIX}{}", case.toml))?;
        let diagnostics = match load_file(&file) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(d) => d,
        };
        let line = case.line + PREFIX_LINES;
        let all: Vec<&Diagnostic> = diagnostics.iter().collect();
        let ok = all.len() == 1
            && all[0].code == case.code
            && all[0].message.contains(case.message)
            && all[0].line == line
            && all[0].field == case.field
            && all[0].hint.is_some();
        if !ok {
            failures.push(format!(
                "{}: expected exactly one [{}] at line {line}, field `{}`, message containing {:?}; got:\n{diagnostics}",
                case.name, case.code, case.field, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
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
