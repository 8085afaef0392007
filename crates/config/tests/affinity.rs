//! `services[].affinity` kinds of the request router, parsed into `Affinity`. Their mistakes
//! are cases of the table in `diagnostics.rs` (named `app-cookie affinity …`).

mod common;

use std::time::Duration;

use common::{PREFIX, SUFFIX, config};
use switchyard_config::Affinity;

/// A request-mode service `s`; an `affinity` line written after it belongs to it.
const SERVICE: &str = r#"[[listeners]]
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

fn load(affinity: &str) -> Result<switchyard_config::Config, String> {
    config(&format!("{PREFIX}{SERVICE}{affinity}{SUFFIX}"))
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
