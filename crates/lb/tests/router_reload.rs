//! Reloading the router role on loopback (no root): under load from keep-alive and
//! new-connection clients, through `POST /v1/reload` and SIGHUP (its own test binary, since
//! the signal goes to the whole process), with a changed route, an added and a removed
//! listener and a broken file.

mod router_support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use router_support::{
    App, Extra, Fixture, TIMEOUT, WAIT, admin, connect, free_port, read_response, request,
};

/// Requests each client loop sends at most (the loops stop earlier once told to).
const MAX_PER_LOOP: u64 = 20_000;
/// Requests each loop sends after the last reload before it may stop.
const AFTER_RELOADS: u64 = 50;

/// What one client loop saw.
#[derive(Debug, Default)]
struct LoopResult {
    ok: u64,
    failures: Vec<String>,
}

/// Sends `GET /load/N` until `done` (and at least `min` more requests after `mark` was
/// set) or [`MAX_PER_LOOP`]: on one keep-alive connection, or each on a new one. Every
/// answer must be `200 hello`.
fn client_loop(
    addr: SocketAddr,
    keep_alive: bool,
    progress: &AtomicU64,
    reloaded: &AtomicBool,
    done: &AtomicBool,
) -> LoopResult {
    let mut result = LoopResult::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn: Option<TcpStream> = None;
    let mut after = 0;
    for i in 0..MAX_PER_LOOP {
        if Instant::now() > deadline {
            result.failures.push("the loop ran out of time".to_owned());
            break;
        }
        if done.load(Ordering::Relaxed) && after >= AFTER_RELOADS {
            break;
        }
        let answer = if keep_alive {
            let c = conn.get_or_insert_with(|| connect(addr));
            let sent =
                c.write_all(format!("GET /load/{i} HTTP/1.1\r\nHost: www.test\r\n\r\n").as_bytes());
            match sent {
                Ok(()) => read_response(c),
                Err(e) => (0, format!("send: {e}")),
            }
        } else {
            request(addr, "GET", &format!("/load/{i}"), None)
        };
        if answer == (200, "hello".to_owned()) {
            result.ok += 1;
        } else {
            result.failures.push(format!("request {i}: {answer:?}"));
        }
        progress.fetch_add(1, Ordering::Relaxed);
        if reloaded.load(Ordering::Relaxed) {
            after += 1;
        }
    }
    result
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn generation(f: &Fixture) -> u64 {
    let (status, view) = admin(f.admin, "GET", "/v1/router", None);
    assert_eq!(status, 200, "{view}");
    view["reloads"].as_u64().expect("reloads in /v1/router")
}

#[test]
fn reload_under_load_loses_no_request_and_applies_the_new_configuration() {
    let app = App::start();
    let other = App::named("other");
    let f = Fixture::start(&app, 256);
    assert_eq!(
        request(f.listener, "GET", "/moved/x", None),
        (200, "hello".to_owned())
    );
    let mut old_conn = connect(f.listener);
    old_conn
        .write_all(b"GET /moved/x HTTP/1.1\r\nHost: www.test\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut old_conn), (200, "hello".to_owned()));
    let second = SocketAddr::from(([127, 0, 0, 1], free_port()));
    assert!(
        TcpStream::connect_timeout(&second, TIMEOUT).is_err(),
        "nothing listens on the second listener's address yet"
    );

    let progress = AtomicU64::new(0);
    let reloaded = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let results: Vec<LoopResult> = thread::scope(|s| {
        let loops: Vec<_> = [true, true, false, false]
            .into_iter()
            .map(|keep_alive| {
                let (p, r, d) = (&progress, &reloaded, &done);
                s.spawn(move || client_loop(f.listener, keep_alive, p, r, d))
            })
            .collect();
        let reload_twice = || {
            wait_until("load", || progress.load(Ordering::Relaxed) >= 100);
            // 1: the same file, through the admin API.
            let (status, summary) = admin(f.admin, "POST", "/v1/reload", None);
            assert_eq!(status, 200, "{summary}");
            assert_eq!(
                summary["kept"],
                serde_json::json!(["web-http"]),
                "{summary}"
            );
            assert_eq!(summary["generation"], 1, "{summary}");
            let before = progress.load(Ordering::Relaxed);
            wait_until("load after the first reload", || {
                progress.load(Ordering::Relaxed) >= before + 100
            });
            // 2: a new route and a new listener, through SIGHUP.
            f.rewrite(&Extra {
                moved_to: Some(other.addr),
                second_listener: Some(second),
                ..Extra::default()
            });
            let kill = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .expect("run kill");
            assert!(kill.success());
            wait_until("the SIGHUP reload", || generation(&f) == 2);
            reloaded.store(true, Ordering::Relaxed);
        };
        // A failed assertion here still ends the loops: they are bounded.
        reload_twice();
        done.store(true, Ordering::Relaxed);
        loops
            .into_iter()
            .map(|h| h.join().expect("client loop"))
            .collect()
    });
    for (k, r) in results.iter().enumerate() {
        assert!(
            r.failures.is_empty(),
            "loop {k}: {} ok, failures {:?}",
            r.ok,
            r.failures
        );
        assert!(r.ok >= AFTER_RELOADS, "loop {k} sent only {}", r.ok);
    }

    // The changed route applies to new connections and to one opened before.
    assert_eq!(
        request(f.listener, "GET", "/moved/x", None),
        (200, "other".to_owned())
    );
    old_conn
        .write_all(b"GET /moved/y HTTP/1.1\r\nHost: www.test\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut old_conn), (200, "other".to_owned()));
    assert_eq!(
        request(second, "GET", "/z", None),
        (200, "hello".to_owned())
    );
    let (_, view) = admin(f.admin, "GET", "/v1/router", None);
    let names: Vec<&str> = view["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["web-2", "web-http"], "{view}");
    assert!(
        view["pools"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "other")),
        "{view}"
    );

    // A removed listener stops accepting; a request in flight on it finishes.
    let mut held = connect(second);
    held.write_all(b"GET /gate HTTP/1.1\r\nHost: www.test\r\n\r\n")
        .expect("send");
    wait_until("the held request", || {
        app.waiting.load(Ordering::Relaxed) >= 1
    });
    f.rewrite(&Extra {
        moved_to: Some(other.addr),
        ..Extra::default()
    });
    let (status, summary) = admin(f.admin, "POST", "/v1/reload", None);
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["removed"],
        serde_json::json!(["web-2"]),
        "{summary}"
    );
    wait_until("the removed listener to close", || {
        TcpStream::connect_timeout(&second, TIMEOUT).is_err()
    });
    app.gate.open();
    assert_eq!(read_response(&mut held), (200, "opened".to_owned()));

    // A broken file is refused with its diagnostics; the configuration in use stays.
    f.rewrite(&Extra {
        moved_to: Some(other.addr),
        raw: "\n[bogus]\nanswer = 42\n",
        ..Extra::default()
    });
    let (status, doc) = admin(f.admin, "POST", "/v1/reload", None);
    assert_eq!(status, 400, "{doc}");
    let error = doc["error"].as_str().unwrap_or("");
    assert!(
        error.contains("not a valid configuration") && error.contains("bogus"),
        "{error}"
    );
    assert_eq!(generation(&f), 3);
    assert_eq!(
        request(f.listener, "GET", "/moved/x", None),
        (200, "other".to_owned())
    );
}
