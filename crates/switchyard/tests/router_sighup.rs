//! Reloading a real `switchyard lb` process (router role, loopback, no root) with SIGHUP
//! while clients send requests: a keep-alive client and a new-connection client run bounded
//! loops against the router's listener; the configuration file is edited to add a route to
//! a new pool and the process gets SIGHUP (sent to its pid only); then the file is broken
//! and the process gets SIGHUP again.
//!
//! Every request of both loops succeeds; the new route takes effect (on new connections and
//! on the keep-alive connection opened before the reload); the broken file is refused, the
//! refusal is logged with its diagnostics, and the configuration in use stays.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::http::{Client, NamedApp};
use support::local::{Proc, field, free_tcp_port};
use support::wait::wait_until;

const SECRET: &str = "switchyard router sighup tests: not a production secret";
const READY: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(15);
/// Requests each client loop sends at most.
const MAX_PER_LOOP: u64 = 20_000;
/// How long a client loop may run at most.
const LOOP_DEADLINE: Duration = Duration::from_secs(60);
/// Requests each loop sends after the last reload before it may stop.
const AFTER_LAST: u64 = 50;

/// One unit with the router role; pool `web` (the application `one`); with `moved`, a route
/// `/moved/` to pool `other` (the application `two`).
fn config_text(listener: SocketAddr, one: SocketAddr, two: SocketAddr, moved: bool) -> String {
    let route = if moved {
        "\n[[services.routes]]\npath_prefix = \"/moved/\"\npool = \"other\"\n"
    } else {
        ""
    };
    format!(
        r#"[cluster]
id = "router-sighup-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["router"]

[[listeners]]
name = "web-http"
address = "{listener}"
protocol = "http"

[[services]]
name = "web-http"
vip = "{listener}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"
{route}
[[pools]]
name = "web"

[[pools.hosts]]
id = 101
name = "one"
address = "{one}"
app = "one"

[[pools]]
name = "other"

[[pools.hosts]]
id = 201
name = "two"
address = "{two}"
app = "two"
"#
    )
}

/// What one client loop saw.
#[derive(Debug, Default)]
struct LoopResult {
    ok: u64,
    failures: Vec<String>,
}

/// Alternates `GET /` and `GET /moved/N` until `done` and [`AFTER_LAST`] more requests, at
/// most [`MAX_PER_LOOP`] or [`LOOP_DEADLINE`]: on one keep-alive connection, or each on a
/// new one. Every answer must be `200` from one of the applications.
fn client_loop(
    addr: SocketAddr,
    keep_alive: bool,
    sent: &AtomicU64,
    done: &AtomicBool,
) -> LoopResult {
    let mut result = LoopResult::default();
    let deadline = Instant::now() + LOOP_DEADLINE;
    let mut conn: Option<Client> = None;
    let mut after = 0;
    for i in 0..MAX_PER_LOOP {
        if Instant::now() > deadline {
            result.failures.push("the loop ran out of time".to_owned());
            break;
        }
        if done.load(Ordering::Relaxed) {
            if after >= AFTER_LAST {
                break;
            }
            after += 1;
        }
        let path = if i % 2 == 0 {
            "/".to_owned()
        } else {
            format!("/moved/{i}")
        };
        let answer = (|| {
            if !keep_alive || conn.is_none() {
                conn = Some(Client::connect(addr)?);
            }
            conn.as_mut().ok_or("no connection")?.get(&path, None)
        })();
        match answer {
            Ok(a) if a.status == 200 && (a.body == "one" || a.body == "two") => result.ok += 1,
            Ok(a) => result
                .failures
                .push(format!("request {i} {path}: {} {}", a.status, a.body)),
            Err(e) => result.failures.push(format!("request {i} {path}: {e}")),
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// The body `GET path` answers on a new connection.
fn body(addr: SocketAddr, path: &str) -> Result<String, String> {
    let a = Client::connect(addr)?.get(path, None)?;
    if a.status == 200 {
        Ok(a.body)
    } else {
        Err(format!("{path}: {} {}", a.status, a.body))
    }
}

fn start_lb(config: &Path) -> (Proc, SocketAddr) {
    let mut lb = Proc::spawn(
        "lb-1",
        [
            "lb".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--unit".as_ref(),
            "lb-1".as_ref(),
            "--admin".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    );
    let ready = lb.wait_for_line("lb ready", 0, READY);
    (lb, field(&ready, "admin"))
}

#[test]
fn sighup_reloads_a_running_lb_under_load_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cluster.key"), SECRET).expect("secret");
    let one = NamedApp::start(None, "127.0.0.1:0".parse().expect("addr"), "one");
    let two = NamedApp::start(None, "127.0.0.1:0".parse().expect("addr"), "two");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = dir.path().join("cluster.toml");
    let write = |moved: bool| {
        std::fs::write(
            &config,
            config_text(listener, one.addr(), two.addr(), moved),
        )
        .expect("write the configuration");
    };
    write(false);
    let (mut lb, admin) = start_lb(&config);
    assert_eq!(body(listener, "/moved/0"), Ok("one".to_owned()));

    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = [true, false]
        .into_iter()
        .map(|keep_alive| {
            let (sent, done) = (sent.clone(), done.clone());
            thread::spawn(move || client_loop(listener, keep_alive, &sent, &done))
        })
        .collect();
    // A keep-alive connection opened before the reload.
    let mut early = Client::connect(listener).expect("connect");
    assert_eq!(
        early.get("/moved/early", None).map(|a| a.body),
        Ok("one".to_owned())
    );
    let at_least = |n: u64| {
        let target = sent.load(Ordering::Relaxed) + n;
        wait_until("the clients make progress", WAIT, || {
            let now = sent.load(Ordering::Relaxed);
            (now >= target)
                .then_some(())
                .ok_or(format!("{now} of {target} requests"))
        });
    };
    at_least(100);

    // The new route, by SIGHUP to the process.
    let mark = lb.log_len();
    write(true);
    lb.signal(Signal::SIGHUP);
    let line = lb.wait_for_line("router configuration reloaded", mark, WAIT);
    assert!(line.contains("generation=1"), "{line}");
    assert_eq!(
        body(listener, "/moved/1"),
        Ok("two".to_owned()),
        "the new route applies"
    );
    assert_eq!(body(listener, "/"), Ok("one".to_owned()));
    assert_eq!(
        early.get("/moved/again", None).map(|a| a.body),
        Ok("two".to_owned()),
        "on a connection opened before the reload too"
    );
    at_least(100);

    // A broken file: refused and logged; the configuration in use stays.
    let mark = lb.log_len();
    std::fs::write(
        &config,
        format!(
            "{}\n[[pools.hosts]]\nid = \"not a number\"\n",
            config_text(listener, one.addr(), two.addr(), true)
        ),
    )
    .expect("break the configuration");
    lb.signal(Signal::SIGHUP);
    let refused = lb.wait_for_line("reload refused", mark, WAIT);
    assert!(
        refused.contains("previous configuration stays"),
        "{refused}"
    );
    let log = lb.log();
    assert!(
        log[mark..].contains("cluster.toml") && log[mark..].contains("pools"),
        "the refusal names the file and what is wrong:\n{}",
        &log[mark..]
    );
    at_least(100);
    assert_eq!(body(listener, "/moved/2"), Ok("two".to_owned()));
    assert_eq!(body(listener, "/"), Ok("one".to_owned()));
    let view = support::cluster::block_on(switchyard_lb::admin::client::get_json::<
        serde_json::Value,
    >(admin, "/v1/router", Duration::from_secs(3)))
    .expect("/v1/router");
    assert_eq!(view["reloads"], 1, "only the good file was applied: {view}");
    assert!(lb.try_status().is_none(), "SIGHUP did not end the process");

    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for (n, handle) in loops.into_iter().enumerate() {
        let result = handle.join().expect("client loop");
        assert!(
            result.failures.is_empty(),
            "loop {n}: {} of {} requests failed: {:?}\nlb log:\n{}",
            result.failures.len(),
            result.ok + result.failures.len() as u64,
            &result.failures[..result.failures.len().min(5)],
            lb.log()
        );
        total += result.ok;
    }
    assert!(total >= 300 + 2 * AFTER_LAST, "{total} requests");
    assert!(two.served() > 0 && one.served() > 0);
    let status = lb.terminate();
    assert!(status.success(), "lb exit: {status}\n{}", lb.log());
}
