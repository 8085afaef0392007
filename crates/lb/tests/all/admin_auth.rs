//! The admin API's bearer-token mode and the dashboard's assets.

use std::time::Duration;

use switchyard_lb::admin::api::{ErrorBody, HostsResponse};
use switchyard_lb::admin::auth::AdminToken;
use switchyard_lb::admin::client;
use switchyard_lb::{RunningUnit, UnitError};

use crate::harness::*;

const TOKEN: &str = "tests-admin-token-0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(5);

fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {body}"))
        .error
}

async fn start_with_token(fixture: &Fixture) -> RunningUnit {
    let token = AdminToken::new(TOKEN).expect("token");
    RunningUnit::start_with_admin_token(&fixture.config, options(), Some(token))
        .await
        .expect("unit starts")
}

/// With a token every API route needs it: none or a wrong one is 401 with a JSON reason
/// and `WWW-Authenticate: Bearer`; the right one is served, whatever the `Host`.
#[tokio::test]
async fn a_token_unit_answers_401_without_the_right_bearer_token() {
    let fixture = Fixture::health();
    let unit = start_with_token(&fixture).await;
    let host = format!("Host: {}", unit.admin_addr());
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in [
        "/v1/hosts",
        "/v1/counters",
        "/metrics",
        "/v1/flows",
        "/v1/nope",
    ] {
        let (status, head, body) = raw(&unit, "GET", path, &[&host]).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{path}: {head}"
        );
        assert!(
            error_message(&body).contains("Authorization: Bearer"),
            "{path}: {body}"
        );
        for wrong in [
            "Authorization: Bearer tests-admin-token-0123456789abcdeX",
            "Authorization: Bearer short",
            "Authorization: Basic dGVzdHM6dGVzdHM=",
            "Authorization: tests-admin-token-0123456789abcdef",
        ] {
            let (status, _, body) = raw(&unit, "GET", path, &[&host, wrong]).await;
            assert_eq!(status, 401, "{path} with {wrong:?}: {body}");
        }
    }
    let (status, _, body) = raw(&unit, "GET", "/v1/hosts", &[&host, &bearer]).await;
    assert_eq!(status, 200, "{body}");
    let doc: HostsResponse = serde_json::from_str(&body).expect("hosts document");
    assert_eq!(doc.unit.name, "lb-1");
    // A remote operator's Host is fine with the token (no DNS-rebinding check needed).
    let (status, _, body) = raw(
        &unit,
        "GET",
        "/v1/hosts",
        &["Host: lb-1.example:9180", &bearer],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Web pages are still refused, token or not.
    let (status, _, body) = raw(
        &unit,
        "GET",
        "/v1/hosts",
        &[&host, &bearer, "Origin: http://elsewhere.example"],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // The dashboard's own requests carry its origin: they pass with the token only.
    let own = "Origin: http://lb-1.example:9180";
    let named = "Host: lb-1.example:9180";
    let (status, _, body) = raw(&unit, "GET", "/v1/hosts", &[named, &bearer, own]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = raw(&unit, "GET", "/v1/hosts", &[named, own]).await;
    assert_eq!(status, 401, "{body}");
    // An unknown route with the token is the usual 404.
    let (status, _, _) = raw(&unit, "GET", "/v1/nope", &[&host, &bearer]).await;
    assert_eq!(status, 404);

    // The client sends the token.
    let doc: HostsResponse =
        client::get_json_authorized(unit.admin_addr(), "/v1/hosts", TIMEOUT, Some(TOKEN))
            .await
            .expect("hosts with the token");
    assert_eq!(doc.unit.id, 1);
    match client::get_json::<HostsResponse>(unit.admin_addr(), "/v1/hosts", TIMEOUT).await {
        Err(client::ClientError::Status { status: 401, .. }) => {}
        other => panic!("expected 401 without the token, got {other:?}"),
    }
    unit.shutdown().await;
}

/// The dashboard's page, script and style hold no data: served without the token (the
/// page asks for it), with a policy that allows this origin only.
#[tokio::test]
async fn dashboard_assets_are_served_without_the_token_and_only_them() {
    let fixture = Fixture::health();
    let unit = start_with_token(&fixture).await;
    let host = format!("Host: {}", unit.admin_addr());
    for (path, kind, marker) in [
        ("/", "text/html", "/dashboard/dashboard.js"),
        ("/dashboard", "text/html", "/dashboard/dashboard.css"),
        ("/dashboard/dashboard.js", "text/javascript", "/v1/hosts"),
        ("/dashboard/dashboard.css", "text/css", ".host"),
    ] {
        let (status, head, body) = raw(&unit, "GET", path, &[&host]).await;
        assert_eq!(status, 200, "{path}: {head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-type: {kind}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{path}: {head}"
        );
        assert!(body.contains(marker), "{path} lacks {marker:?}");
    }
    // Only GET: the assets are no way around the token.
    let (status, _, _) = raw(
        &unit,
        "POST",
        "/",
        &[&host, "Content-Type: application/json"],
    )
    .await;
    assert_eq!(status, 401);
    unit.shutdown().await;
}

/// Without a token the page is served on loopback like every route, and a non-loopback
/// address is refused; with a token the loopback rule is lifted (an address this machine
/// does not have then fails to bind, which shows the check was passed).
#[tokio::test]
async fn only_a_token_unit_may_bind_a_non_loopback_address() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let host = format!("Host: {}", unit.admin_addr());
    let (status, _, body) = raw(&unit, "GET", "/", &[&host]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<title>switchyard dashboard</title>"),
        "{body}"
    );
    let (status, _, _) = raw(&unit, "GET", "/v1/hosts", &[&host]).await;
    assert_eq!(status, 200);
    unit.shutdown().await;

    // TEST-NET-1: never an address of this machine, so nothing is ever bound there.
    let elsewhere = "192.0.2.1:0".parse().expect("addr");
    let mut opts = options();
    opts.admin = Some(elsewhere);
    match RunningUnit::start(&fixture.config, opts).await {
        Err(UnitError::AdminNotLoopback(addr)) => assert_eq!(addr, elsewhere),
        other => panic!("expected a loopback error, got {other:?}"),
    }
    let mut opts = options();
    opts.admin = Some(elsewhere);
    let token = AdminToken::new(TOKEN).expect("token");
    match RunningUnit::start_with_admin_token(&fixture.config, opts, Some(token)).await {
        Err(UnitError::AdminBind { addr, .. }) => assert_eq!(addr, elsewhere),
        other => panic!("expected a bind error at {elsewhere}, got {other:?}"),
    }
}

/// Directive acts pass the usual checks first (content type; the token in token mode);
/// a host whose agent was never heard from gets 503 (the acts themselves: `acts.rs`).
#[tokio::test]
async fn directive_acts_are_checked_before_they_are_relayed() {
    let fixture = Fixture::health();
    let unit = fixture.start().await;
    let host = format!("Host: {}", unit.admin_addr());
    let json = "Content-Type: application/json";
    for (method, path) in [
        ("POST", "/v1/hosts/web-1/drain"),
        ("POST", "/v1/hosts/web-1/undrain"),
        ("POST", "/v1/hosts/web-1/disable"),
    ] {
        let (status, _, body) = raw(&unit, method, path, &[&host, json]).await;
        assert_eq!(status, 503, "{method} {path}: {body}");
        let message = error_message(&body);
        assert!(
            message.contains("has not been heard from"),
            "{method} {path}: {message}"
        );
        let (status, _, _) = raw(&unit, method, path, &[&host]).await;
        assert_eq!(status, 415, "{method} {path} without the JSON content type");
    }
    unit.shutdown().await;
    let unit = start_with_token(&fixture).await;
    let (status, _, _) = raw(&unit, "POST", "/v1/hosts/web-1/drain", &[&host, json]).await;
    assert_eq!(status, 401, "the token comes first");
    unit.shutdown().await;
}
