//! The live dashboard: one page served at `GET /` and `GET /dashboard`, with its
//! script and style sheet at `/dashboard/dashboard.js` and `/dashboard/dashboard.css`.
//!
//! Every asset is compiled in (`include_str!`); the page loads nothing from anywhere but
//! this API, and its `Content-Security-Policy` (`default-src 'self'`) makes the browser
//! refuse anything else. The script polls `/v1/hosts`, `/v1/flows?top=0` and
//! `/v1/counters` once a second with same-origin `GET`s (which browsers send without an
//! `Origin` header, so the API's web-page check lets them through) and draws one card per
//! host: health, load against capacity, directive target/current (a drain in progress is
//! `draining` over `active`), connections per endpoint from the forwarder and new
//! connections per second from the classifier's counters, derived from the difference
//! between two polls.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AdminState;

/// The page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script.
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
/// Its style sheet.
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// Only this API: no inline script, no other origin, no framing by other pages.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The dashboard's routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/dashboard.js", get(script))
        .route("/dashboard/dashboard.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing outside this API: no absolute URL in any asset, and the page links its
    /// own script and style sheet.
    #[test]
    fn assets_reference_nothing_outside_the_api() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("dashboard.js", DASHBOARD_JS),
            ("dashboard.css", DASHBOARD_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains {needle:?}");
            }
        }
        assert!(INDEX_HTML.contains(r#"src="/dashboard/dashboard.js""#));
        assert!(INDEX_HTML.contains(r#"href="/dashboard/dashboard.css""#));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (CSP)");
    }
}
