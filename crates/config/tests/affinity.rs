//! `services[].affinity` kinds of the request router, parsed into `Affinity`. Their mistakes
//! are cases of the table in `diagnostics.rs` (named `app-cookie affinity …`).

use std::time::Duration;

use switchyard_config::{Affinity, load_file};

const BASE: &str = r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["router", "session-store", "health-cache"]

[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
"#;

const POOL: &str = r#"
[[pools]]
name = "p"

[[pools.hosts]]
id = 900
name = "h900"
address = "192.0.2.90:80"
app = "a"
"#;

fn load(affinity: &str) -> Result<switchyard_config::Config, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("cluster.key"),
        format!("{}\n", "4b".repeat(32)),
    )
    .map_err(|e| e.to_string())?;
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{BASE}{affinity}\n{POOL}")).map_err(|e| e.to_string())?;
    load_file(&path).map_err(|d| d.to_string())
}

#[test]
fn app_cookie_affinity_names_the_application_cookie() {
    let config =
        load(r#"affinity = { kind = "app-cookie", cookie = "JSESSIONID", timeout = "20m" }"#)
            .expect("valid");
    let service = config.service("s").expect("service s");
    assert_eq!(
        service.affinity,
        Affinity::AppCookie {
            name: "JSESSIONID".into(),
            timeout: Duration::from_secs(20 * 60),
        }
    );
    assert_eq!(
        service.affinity.timeout(),
        Some(Duration::from_secs(20 * 60))
    );
}

#[test]
fn app_cookie_affinity_timeout_defaults_like_the_other_kinds() {
    let app = load(r#"affinity = { kind = "app-cookie", cookie = "sid" }"#).expect("valid");
    let ip = load(r#"affinity = { kind = "client-ip" }"#).expect("valid");
    let timeout = |c: &switchyard_config::Config| c.service("s").and_then(|s| s.affinity.timeout());
    assert!(timeout(&app).is_some());
    assert_eq!(timeout(&app), timeout(&ip));
    assert!(matches!(
        app.service("s").map(|s| &s.affinity),
        Some(Affinity::AppCookie { name, .. }) if name == "sid"
    ));
}
