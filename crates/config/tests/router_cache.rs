//! A route's `cache` table: parsed into `Route::cache`. Its mistakes are cases of the table
//! in `diagnostics.rs` (named `route cache: …`).

mod common;

use common::{PREFIX, SUFFIX, config};
use switchyard_config::RouteCache;

/// A request-mode service `s` with one route to pool `p`; a `cache` line written after it
/// belongs to the route.
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

[[services.routes]]
path_prefix = "/"
pool = "p"
"#;

fn load(cache: &str) -> Result<switchyard_config::Config, String> {
    config(&format!("{PREFIX}{SERVICE}{cache}{SUFFIX}"))
}

#[test]
fn a_route_cache_is_parsed_with_defaults() {
    let config = load("cache = { max_bytes = 8192, default_ttl = \"30s\" }").expect("valid");
    let service = config.service("s").expect("service s");
    assert_eq!(
        config.routes(service)[0].cache,
        Some(RouteCache {
            max_bytes: 8192,
            max_object_bytes: 1024,
            default_ttl: Some(std::time::Duration::from_secs(30)),
        })
    );
}
