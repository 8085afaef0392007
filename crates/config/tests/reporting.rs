//! How diagnostics are collected and shown: all at once, in file order, rendered like rustc,
//! with hints that name the fix. Also the defaults a minimal configuration gets.

mod common;

use std::path::Path;
use std::time::Duration;

use switchyard_config::{Affinity, Diagnostics, HostId, Probe, codes, load_file, load_str};

/// Several distinct mistakes, semantic and structural, in one file.
const MANY_MISTAKES: &str = r#"[cluster]
id = "demo"
secret_file = "cluster.key"
colour = "blue"

[[cluster.units]]
name = "lb-1"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier", "router"]

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "web-again"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "magic"
pool = "wbe"

[[pools]]
name = "web"
health_check = "http"

[[pools.hosts]]
id = 501
name = "web-1"
address = "192.0.2.11:8080"
app = "shop"
capacity = 100

[[health_checks]]
name = "check"
kind = "http"
path = "/healthz"
interval = "1s"
timeout = "3s"
rise = 0
"#;

#[test]
fn one_file_with_several_mistakes_reports_all_of_them() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", MANY_MISTAKES) else {
        panic!("a broken configuration was accepted");
    };
    let found: Vec<(&str, usize, &str)> = diagnostics
        .iter()
        .map(|d| (d.code, d.line, d.field.as_str()))
        .collect();
    let expected = vec![
        (codes::UNKNOWN_FIELD, 4, "cluster.colour"),
        (codes::DUPLICATE_VIP, 22, "services[1].vip"),
        (codes::BAD_VALUE, 24, "services[1].mode"),
        (codes::UNDEFINED_POOL, 25, "services[1].pool"),
        (codes::UNDEFINED_CHECK, 29, "pools[0].health_check"),
        (codes::OUT_OF_RANGE, 36, "pools[0].hosts[0].capacity"),
        (codes::CONFLICTING_SETTINGS, 43, "health_checks[0].timeout"),
        (codes::OUT_OF_RANGE, 44, "health_checks[0].rise"),
    ];
    assert_eq!(found, expected, "\n{diagnostics}");
    assert_eq!(diagnostics.len(), 8);
    assert_eq!(
        diagnostics.summary(),
        format!(
            "8 errors in {}",
            dir.path().join("switchyard.toml").display()
        )
    );
    Ok(())
}

#[test]
fn diagnostics_render_like_rustc() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", MANY_MISTAKES) else {
        panic!("a broken configuration was accepted");
    };
    let file = dir.path().join("switchyard.toml");
    let rendered = diagnostics.to_string();
    let expected_vip = format!(
        "error[duplicate-vip]: VIP 198.51.100.10:80/tcp is already used by service \"web\"\n  \
         --> {}:22:7\n   | services[1].vip\n   = hint: each VIP:port/protocol belongs to one \
         service; change the port or merge the services\n",
        file.display()
    );
    assert!(rendered.contains(&expected_vip), "{rendered}");
    // One blank line between diagnostics, none at the end.
    assert_eq!(
        rendered.matches("\n\nerror[").count(),
        diagnostics.len() - 1
    );
    assert!(!rendered.ends_with("\n\n"));
    Ok(())
}

fn hint_of(diagnostics: &Diagnostics, code: &str) -> String {
    diagnostics
        .iter()
        .find(|d| d.code == code)
        .and_then(|d| d.hint.clone())
        .unwrap_or_else(|| panic!("no {code} with a hint in:\n{diagnostics}"))
}

#[test]
fn hints_suggest_the_likely_fix() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", MANY_MISTAKES) else {
        panic!("a broken configuration was accepted");
    };
    let unknown = hint_of(&diagnostics, codes::UNKNOWN_FIELD);
    assert!(
        unknown.contains("expected one of: id, secret_file, units"),
        "{unknown}"
    );
    let pool = hint_of(&diagnostics, codes::UNDEFINED_POOL);
    assert!(pool.contains("did you mean \"web\"?"), "{pool}");
    let mode = hint_of(&diagnostics, codes::BAD_VALUE);
    assert!(mode.contains("`packet`, `request`, `migrate`"), "{mode}");

    let text = MANY_MISTAKES.replace("\"198.51.100.10:80\"", "\"2001:db8::10:80\"");
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", &text) else {
        panic!("a broken configuration was accepted");
    };
    let address = hint_of(&diagnostics, codes::BAD_ADDRESS);
    assert!(address.contains("\"[2001:db8::10]:80\""), "{address}");

    let text = MANY_MISTAKES.replace("mode = \"magic\"", "mode = \"pakcet\"");
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", &text) else {
        panic!("a broken configuration was accepted");
    };
    let mode = hint_of(&diagnostics, codes::BAD_VALUE);
    assert!(mode.starts_with("did you mean `packet`?"), "{mode}");
    Ok(())
}

#[test]
fn syntax_errors_are_reported_alone() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    // A syntax error plus semantic ones: only the syntax error is reported.
    let text = MANY_MISTAKES.replace("rise = 0", "rise = = 0");
    let Err(diagnostics) = common::load_in(dir.path(), "switchyard", &text) else {
        panic!("a broken configuration was accepted");
    };
    assert!(
        diagnostics.iter().all(|d| d.code == codes::INVALID_TOML),
        "{diagnostics}"
    );
    assert_eq!(
        diagnostics.iter().map(|d| d.line).collect::<Vec<_>>(),
        vec![44]
    );
    Ok(())
}

#[test]
fn an_unreadable_file_is_a_diagnostic() {
    let missing = Path::new("/nonexistent/switchyard.toml");
    let Err(diagnostics) = load_file(missing) else {
        panic!("a missing file loaded");
    };
    let all: Vec<_> = diagnostics.iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].code, codes::UNREADABLE_FILE);
    assert_eq!(all[0].file, missing);
    assert_eq!((all[0].line, all[0].column), (0, 0));
    let rendered = diagnostics.to_string();
    assert!(
        rendered.starts_with("error[unreadable-file]: cannot read /nonexistent/switchyard.toml"),
        "{rendered}"
    );
    assert!(
        rendered.contains("  --> /nonexistent/switchyard.toml\n"),
        "{rendered}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_located() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("latin1.toml");
    std::fs::write(&file, b"[cluster]\nid = \"caf\xe9\"\n")?;
    let Err(diagnostics) = load_file(&file) else {
        panic!("a non-UTF-8 file loaded");
    };
    let all: Vec<_> = diagnostics.iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].code, codes::INVALID_TOML);
    assert_eq!((all[0].line, all[0].column), (2, 10));
    Ok(())
}

const MINIMAL: &str = r#"[cluster]
id = "mini"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "2001:db8::1"
roles = ["forwarder", "classifier"]

[[services]]
name = "s"
vip = "[2001:db8::80]:443"
protocol = "tcp"
mode = "packet"
delivery = "tunnel"
pool = "p"
affinity = { kind = "client-ip" }

# The same address and port over UDP is another VIP.
[[services]]
name = "s-udp"
vip = "[2001:db8::80]:443"
protocol = "udp"
mode = "packet"
delivery = "tunnel"
pool = "p"

[[pools]]
name = "p"
health_check = "c"
hosts = [
  { id = 7, name = "h7", address = "[2001:db8::7]:8443", app = "a" },
]

[[health_checks]]
name = "c"
kind = "http"
path = "/"
"#;

#[test]
fn load_str_resolves_files_against_the_origin_and_applies_defaults() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    let origin = dir.path().join("not-written.toml");
    let config = load_str(MINIMAL, &origin).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.source, origin);
    assert_eq!(config.cluster.secret_file, dir.path().join("cluster.key"));
    assert_eq!(config.cluster.secret.as_bytes(), &[0x5e; 32][..]);

    let (pool, host) = config
        .host(HostId(7))
        .unwrap_or_else(|| panic!("no host 7"));
    assert_eq!(pool.name, "p");
    assert_eq!(host.capacity, switchyard_config::DEFAULT_CAPACITY);
    let check = config
        .health_check("c")
        .unwrap_or_else(|| panic!("no check"));
    assert_eq!(check.interval, Duration::from_secs(2));
    assert_eq!(check.timeout, Duration::from_secs(1));
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(
        check.probe,
        Probe::Http {
            path: "/".into(),
            expect_status: 200,
            body_contains: None
        }
    );
    let service = config.service("s").unwrap_or_else(|| panic!("no service"));
    assert_eq!(
        service.affinity,
        Affinity::ClientIp {
            timeout: switchyard_config::DEFAULT_AFFINITY_TIMEOUT
        }
    );
    assert_eq!(
        config.service("s-udp").map(|s| s.affinity.clone()),
        Some(Affinity::None)
    );
    assert_eq!(
        config.summary(),
        "cluster mini: 1 unit, 2 services, 1 pool (1 host), 1 check, 0 listeners"
    );

    // Relative to a file name with no directory: the current directory, where there is no
    // cluster.key.
    let Err(diagnostics) = load_str(MINIMAL, Path::new("inline.toml")) else {
        panic!("the secret was found in the current directory");
    };
    let all: Vec<_> = diagnostics.iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].code, codes::UNREADABLE_SECRET);
    assert_eq!(all[0].file, Path::new("inline.toml"));
    Ok(())
}

#[test]
fn debug_output_never_shows_the_secret() -> std::io::Result<()> {
    let dir = common::secret_dir()?;
    let config = load_str(MINIMAL, &dir.path().join("x.toml")).unwrap_or_else(|d| panic!("{d}"));
    let shown = format!("{config:?}");
    assert!(
        shown.contains("ClusterSecret(<32 bytes redacted>)"),
        "{shown}"
    );
    assert!(!shown.contains("94, 94"), "secret bytes leaked: {shown}");
    assert!(
        !shown.to_lowercase().contains("5e5e"),
        "secret text leaked: {shown}"
    );
    Ok(())
}
