//! The admin API's contract: errors, metrics, role and address rules.

use switchyard_lb::admin::api::{ErrorBody, HostsResponse, ServicesResponse};
use switchyard_lb::{RunningUnit, UnitError, UnitOptions};

use openmetrics_parser::OpenMetricsType::Counter;

use crate::harness::*;

async fn error_of(unit: &RunningUnit, path: &str) -> (u16, String) {
    let response = get(unit, path).await;
    let body: ErrorBody = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{path}: not a JSON error ({e}): {}", response.text()));
    (response.status, body.error)
}

#[tokio::test]
async fn bad_queries_get_400_with_a_clear_json_error() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let cases = [
        ("/v1/allotments", "missing query parameter vip"),
        ("/v1/allotments?vip=nonsense", "not an IP:PORT"),
        (
            &format!("/v1/allotments?vip={VIP}&protocol=sctp"),
            "neither tcp nor udp",
        ),
        (
            &format!("/v1/allotments?vip={VIP}&scheme=lottery"),
            "neither tokens nor percentages",
        ),
        (
            &format!("/v1/allotments?vip={VIP}&tokens=-3"),
            "not a whole number",
        ),
        (
            &format!("/v1/allotments?vip={VIP}&tokens=99999999999"),
            "not a whole number",
        ),
        (
            &format!("/v1/allotments?vip={VIP}&scheme=percentages&tokens=5"),
            "scheme=tokens only",
        ),
        (
            &format!("/v1/allotments?vip={VIP}&colour=blue"),
            "unknown field",
        ),
        // Was axum's plain-text rejection; the API's errors are all JSON.
        ("/v1/flows?top=many", "top is a whole number"),
        ("/v1/flows?top=-1", "top is a whole number"),
    ];
    for (path, expected) in cases {
        let (status, error) = error_of(&unit, path).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert!(
            error.contains(expected),
            "{path}: {error:?} lacks {expected:?}"
        );
    }
    let (status, error) = error_of(&unit, "/v1/nothing").await;
    assert_eq!(status, 404);
    assert!(error.contains("/v1/hosts"), "{error}");
    // A service nobody serves gets an empty allotment, not an error.
    let view: serde_json::Value =
        get_json(&unit, "/v1/allotments?vip=192.0.2.1:443&protocol=udp").await;
    assert_eq!(view["entries"], serde_json::json!([]));
    unit.shutdown().await;
}

#[tokio::test]
async fn services_and_metrics_describe_the_cache() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let host = TestHost::start(101, unit.control_addr().expect("health role")).await;
    host.set(app(8081), healthy(40, 20)).await;
    wait_for_hosts(&unit, &[101], 1).await;
    let services: ServicesResponse = get_json(&unit, "/v1/services").await;
    assert_eq!(services.services.len(), 1);
    let web = &services.services[0];
    assert_eq!(web.name.as_deref(), Some("web"));
    assert_eq!(web.vip, VIP.parse().expect("vip"));
    assert_eq!(web.endpoints.len(), 1);
    assert_eq!(web.endpoints[0].host, 101);
    assert_eq!(web.endpoints[0].spare_capacity, 20 * 60);

    let metrics = scrape(&unit).await;
    for (family, value) in [
        ("switchyard_health_hosts", 1.0),
        ("switchyard_health_endpoints", 1.0),
        ("switchyard_health_services", 1.0),
        ("switchyard_health_snapshots_completed", 1.0),
        ("switchyard_health_age_outs", 0.0),
        ("switchyard_health_goodbyes", 0.0),
    ] {
        assert_eq!(
            metrics.value(family, &[("unit", "lb-1")]),
            Some(value),
            "{family}:\n{}",
            metrics.text
        );
    }
    metrics.family("switchyard_health_transport_received", Counter, &[]);
    assert_eq!(
        metrics.value(
            "switchyard_lb_info",
            &[
                ("unit", "lb-1"),
                ("id", "1"),
                ("roles", "forwarder,classifier,health-cache")
            ]
        ),
        Some(1.0)
    );
    assert!(
        metrics
            .value(
                "switchyard_health_messages_received",
                &[("kind", "heartbeat")]
            )
            .is_some_and(|n| n > 0.0),
        "{}",
        metrics.text
    );
    host.kill();
    unit.shutdown().await;
}

#[tokio::test]
async fn a_unit_without_the_health_cache_role_runs_only_the_admin_api() {
    let fixture = Fixture::new(r#""forwarder", "classifier""#, "5s");
    let unit = fixture.start().await;
    assert!(unit.health().is_none());
    assert!(unit.control_addr().is_none());
    let (status, error) = error_of(&unit, "/v1/hosts").await;
    assert_eq!(status, 503);
    assert!(
        error.contains("does not run the health-cache role"),
        "{error}"
    );
    let metrics = scrape(&unit).await;
    assert_eq!(
        metrics.value("switchyard_lb_info", &[("roles", "forwarder,classifier")]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert!(
        !metrics.text.contains("switchyard_health_"),
        "{}",
        metrics.text
    );
    unit.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_stays_on_loopback_and_units_are_named() {
    let fixture = Fixture::health();
    let mut options = options();
    options.admin = Some("0.0.0.0:0".parse().expect("addr"));
    match RunningUnit::start(&fixture.config, options).await {
        Err(UnitError::AdminNotLoopback(addr)) => assert_eq!(addr.port(), 0),
        other => panic!("expected a loopback error, got {other:?}"),
    }
    match RunningUnit::start(&fixture.config, UnitOptions::new("lb-9")).await {
        Err(error @ UnitError::UnknownUnit { .. }) => {
            assert!(error.to_string().contains("units: lb-1"), "{error}");
        }
        other => panic!("expected an unknown-unit error, got {other:?}"),
    }
    // The empty cache answers too.
    let unit = fixture.start().await;
    let doc: HostsResponse = get_json(&unit, "/v1/hosts").await;
    assert!(doc.hosts.is_empty());
    unit.shutdown().await;
}

#[tokio::test]
async fn requests_from_web_pages_are_refused() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let port = unit.admin_addr().port();
    let evil = format!("Host: evil.example:{port}");
    for (headers, message) in [
        (
            vec!["Host: localhost", "Origin: https://evil.example"],
            "Origin",
        ),
        (vec![evil.as_str()], "evil.example"),
        (vec!["Host: 203.0.113.7"], "loopback"),
    ] {
        let (status, _, body) = raw(&unit, "GET", "/v1/hosts", &headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        let error = doc["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{headers:?}: {error:?} lacks {message:?}"
        );
    }
    // curl's requests, and the client's, work.
    let loopback = format!("Host: 127.0.0.1:{port}");
    for headers in [vec![loopback.as_str()], vec!["Host: localhost"], vec![]] {
        let (status, _, body) = raw(&unit, "GET", "/v1/hosts", &headers).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    let _: serde_json::Value = get_json(&unit, "/v1/counters").await;
    unit.shutdown().await;
}
