//! The router role on loopback (no root): a unit with only the `router` role in front of a
//! small HTTP application, driven over real sockets. Cache invalidation through the admin
//! API and the per-client concurrency limit.

mod router_support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use router_support::{App, Fixture, WAIT, admin, connect, read_response, request};

#[test]
fn cache_invalidation_through_the_admin_api() {
    let app = App::start();
    let f = Fixture::start(&app, 256);

    let (status, first) = request(f.listener, "GET", "/static/a", None);
    assert_eq!((status, first.as_str()), (200, "version 1"));
    assert_eq!(
        request(f.listener, "GET", "/static/a", None).1,
        "version 1",
        "a hit"
    );
    assert_eq!(app.statics.load(Ordering::Relaxed), 1);
    let (status, view) = admin(f.admin, "GET", "/v1/router", None);
    assert_eq!(status, 200, "{view}");
    let caches = view["caches"].as_array().expect("caches in /v1/router");
    assert_eq!(caches.len(), 1, "{view}");
    assert_eq!(caches[0]["route"], "web#0");
    assert_eq!(caches[0]["entries"], 1);
    assert!(caches[0]["bytes"].as_u64().is_some_and(|b| b > 0), "{view}");

    // By route: the next request goes to the application again.
    let (status, doc) = admin(
        f.admin,
        "POST",
        "/v1/cache/invalidate",
        Some(r#"{"route": "web#0"}"#),
    );
    assert_eq!(
        (status, &doc["removed"]),
        (200, &serde_json::json!(1)),
        "{doc}"
    );
    assert_eq!(request(f.listener, "GET", "/static/a", None).1, "version 2");
    assert_eq!(request(f.listener, "GET", "/static/b", None).1, "version 3");

    // By host and path prefix: only the matching key goes.
    let (status, doc) = admin(
        f.admin,
        "POST",
        "/v1/cache/invalidate",
        Some(r#"{"host": "WWW.test", "path_prefix": "/static/b"}"#),
    );
    assert_eq!(
        (status, &doc["removed"]),
        (200, &serde_json::json!(1)),
        "{doc}"
    );
    assert_eq!(
        request(f.listener, "GET", "/static/a", None).1,
        "version 2",
        "kept"
    );
    assert_eq!(
        request(f.listener, "GET", "/static/b", None).1,
        "version 4",
        "refetched"
    );
    let (_, view) = admin(f.admin, "GET", "/v1/router", None);
    assert_eq!(view["caches"][0]["entries"], 2, "{view}");

    // Bad input: 400 with a reason, nothing removed.
    for (body, reason) in [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ("{}", "nothing to invalidate"),
        (r#"{"route": "web#0", "host": "www.test"}"#, "not both"),
        (r#"{"route": "web#7"}"#, "web#0"),
        (r#"{"route": 3}"#, "non-empty string"),
        (
            r#"{"host": "www.test", "path_prefix": "static"}"#,
            "start with",
        ),
        (r#"{"host": "www.test", "paths": "/"}"#, "unknown field"),
    ] {
        let (status, doc) = admin(f.admin, "POST", "/v1/cache/invalidate", Some(body));
        assert_eq!(status, 400, "{body}: {doc}");
        let error = doc["error"].as_str().unwrap_or("");
        assert!(
            error.contains(reason),
            "{body}: {error:?} should say {reason:?}"
        );
    }
    let (_, view) = admin(f.admin, "GET", "/v1/router", None);
    assert_eq!(view["caches"][0]["entries"], 2, "{view}");
}

#[test]
fn the_per_client_concurrency_limit_answers_429_and_frees_slots() {
    let app = App::start();
    let f = Fixture::start(&app, 2);

    // Two requests from this client wait at the application (keep-alive connections).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(f.listener);
            c.write_all(b"GET /gate HTTP/1.1\r\nHost: www.test\r\n\r\n")
                .expect("send");
            c
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while app.waiting.load(Ordering::Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "the application never got both requests"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // A third one from the same address is refused at once.
    let (status, body) = request(f.listener, "GET", "/other", None);
    assert_eq!((status, body.as_str()), (429, "too many requests\n"));
    assert_eq!(
        app.waiting.load(Ordering::Relaxed),
        2,
        "the refused request never reached the host"
    );

    app.gate.open();
    for c in &mut held {
        assert_eq!(read_response(c), (200, "opened".to_owned()));
    }
    // Slots are free again, on the same connections and on new ones.
    for c in &mut held {
        c.write_all(b"GET /other HTTP/1.1\r\nHost: www.test\r\n\r\n")
            .expect("send");
        assert_eq!(read_response(c), (200, "hello".to_owned()));
    }
    assert_eq!(
        request(f.listener, "GET", "/other", None),
        (200, "hello".to_owned())
    );
    let (_, view) = admin(f.admin, "GET", "/v1/router", None);
    assert_eq!(view["counters"]["rejected"], 1, "{view}");
    assert_eq!(view["counters"]["responses"]["4xx"], 1, "{view}");
}
