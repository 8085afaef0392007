//! Every shipped example configuration loads cleanly.

use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_loads_cleanly() -> std::io::Result<()> {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(examples_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            match switchyard_config::load_file(&path) {
                Ok(config) => checked.push(config.summary()),
                Err(diagnostics) => panic!("{} does not load:\n{diagnostics}", path.display()),
            }
        }
    }
    checked.sort();
    assert!(
        checked.len() >= 4,
        "expected at least 4 examples, found {checked:?}"
    );
    Ok(())
}

#[test]
fn all_in_one_has_what_its_comments_promise() {
    use switchyard_config::{Affinity, Delivery, Probe, Protocol, Role, ServiceMode};
    let config = switchyard_config::load_file(&examples_dir().join("all-in-one.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.cluster.units.len(), 1);
    let unit = &config.cluster.units[0];
    for role in [
        Role::Forwarder,
        Role::Classifier,
        Role::Router,
        Role::SessionStore,
        Role::HealthCache,
    ] {
        assert!(unit.has_role(role), "{role:?}");
    }
    let web = config.service("web").unwrap_or_else(|| panic!("no web"));
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(
        web.mode,
        ServiceMode::Packet {
            delivery: Delivery::Nat
        }
    );
    assert!(matches!(web.affinity, Affinity::ClientIp { .. }));
    assert!(config.services.iter().any(|s| s.protocol == Protocol::Udp));
    let pool = config.pool_of(web).unwrap_or_else(|| panic!("no pool"));
    assert_eq!(pool.hosts.len(), 3);
    let check = pool
        .health_check
        .as_deref()
        .and_then(|c| config.health_check(c))
        .unwrap_or_else(|| panic!("no check"));
    assert!(matches!(check.probe, Probe::Http { .. }));
    assert_eq!(config.cluster.secret.len(), 32);
    assert_eq!(
        config.summary(),
        "cluster demo: 1 unit, 2 services, 2 pools (5 hosts), 1 check, 0 listeners"
    );
}

#[test]
fn request_router_offers_certificates_by_sni() {
    use switchyard_config::ListenerProtocol;
    let config = switchyard_config::load_file(&examples_dir().join("request-router.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let https = config
        .listener("public-https")
        .unwrap_or_else(|| panic!("no listener"));
    let ListenerProtocol::Https { certificates } = &https.protocol else {
        panic!("not https: {:?}", https.protocol);
    };
    assert_eq!(certificates.len(), 2);
    for name in certificates {
        let cert = config
            .certificate(name)
            .unwrap_or_else(|| panic!("no certificate {name}"));
        assert!(cert.cert_file.is_file() && cert.key_file.is_file());
    }
}

#[test]
fn request_router_example_has_its_routes_and_default_limits() {
    use switchyard_config::{PathMatch, RouterSettings};
    let config = switchyard_config::load_file(&examples_dir().join("request-router.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let www = config.service("www").unwrap_or_else(|| panic!("no www"));
    let routes = config.routes(www);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].host.as_deref(), Some("www.example.com"));
    assert_eq!(routes[0].path, Some(PathMatch::Prefix("/api/".to_owned())));
    assert_eq!(routes[0].pool, "api");
    assert_eq!(routes[0].rewrite_prefix.as_deref(), Some("/v1/"));
    assert_eq!(
        routes[0].add_headers,
        vec![("x-forwarded-prefix".to_owned(), "/api".to_owned())]
    );
    assert_eq!(routes[0].remove_headers, vec!["x-debug".to_owned()]);
    assert_eq!(routes[0].max_body_bytes, Some(1_048_576));
    assert_eq!(
        routes[1].path,
        Some(PathMatch::Regex("^/static/[a-z0-9._-]+$".to_owned()))
    );
    assert_eq!(routes[1].methods, vec!["GET".to_owned(), "HEAD".to_owned()]);
    let internal = config
        .service("internal-api")
        .unwrap_or_else(|| panic!("no internal-api"));
    assert!(config.routes(internal).is_empty());
    assert_eq!(config.router, RouterSettings::default());
    let on_https: Vec<&str> = config
        .services_of_listener("public-https")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(on_https, ["www"]);
}

#[test]
fn request_router_example_follows_the_shop_application_cookie() {
    use switchyard_config::Affinity;
    let config = switchyard_config::load_file(&examples_dir().join("request-router.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let shop = config.service("shop").unwrap_or_else(|| panic!("no shop"));
    assert!(
        matches!(&shop.affinity, Affinity::AppCookie { name, .. } if name == "JSESSIONID"),
        "{:?}",
        shop.affinity
    );
}
