//! A route's `cache` table: parsed into `Route::cache`. Its mistakes are cases of the table
//! in `diagnostics.rs` (named `route cache: …`).

use switchyard_config::{RouteCache, load_file};

const BASE: &str = r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["router", "health-cache"]

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

[[pools]]
name = "p"

[[pools.hosts]]
id = 900
name = "h900"
address = "192.0.2.90:80"
app = "a"

[[services.routes]]
path_prefix = "/"
pool = "p"
"#;

fn load(cache: &str) -> Result<switchyard_config::Config, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("cluster.key"),
        format!("{}\n", "4b".repeat(32)),
    )
    .map_err(|e| e.to_string())?;
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{BASE}{cache}\n")).map_err(|e| e.to_string())?;
    load_file(&path).map_err(|d| d.to_string())
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
