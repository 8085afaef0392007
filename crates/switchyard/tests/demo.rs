//! `switchyard demo` end to end: the real binary, as root, building its namespaces, starting
//! `switchyard lb`, the demo hosts and their agents, generating traffic and cleaning up.
//!
//! - `traffic_is_answered_by_every_host_and_nothing_is_left_behind`: `demo --traffic
//!   --duration 8s` exits 0, its banner names the VIP and the admin URL, its final summary
//!   counts answers from all three hosts and no failures, and no namespace or process of its
//!   testbed remains;
//! - `draining_a_host_on_stdin_stops_its_new_requests`: `d 1` typed while traffic runs makes
//!   host 1's request counter stop (once the load balancer shows the drain as current)
//!   while the others keep counting; `u 1` brings it back; `q` stops the demo with exit 0;
//! - `help_lists_the_options_with_examples`: `demo --help` describes both shapes;
//! - `without_root_it_runs_the_router_only_shape_on_loopback`: as an unprivileged user
//!   (uid 65534 when the tests run as root), `demo --traffic --duration` says which shape it
//!   runs and why, its router answers on the printed URL, every host answers, `d 1` stops
//!   host 1's new requests, it exits 0 with its summary, and none of its processes or files
//!   remain.
//!
//! The root tests skip without root (`SKIPPED` line), except under `CI=true`, where they
//! fail. Waits poll with generous deadlines; nothing is asserted about timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_switchyard");
/// Upper bound for the demo's setup (namespaces, processes, hosts healthy) on a busy machine.
const SETUP: Duration = Duration::from_secs(90);

/// A running `switchyard demo`, its output collected line by line.
struct Demo {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut command = Command::new(EXE);
        command.arg("demo").args(args);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard demo");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lines").clone()
    }

    fn transcript(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.lines().join("\n"),
            self.stderr.lock().expect("lines").join("\n")
        )
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to the demo's stdin");
        stdin.flush().expect("flush the demo's stdin");
    }

    /// Waits for a stdout line (after the first `from` lines) for which `probe` returns a
    /// value; returns it with the line's index.
    fn wait_line<T>(
        &self,
        what: &str,
        from: usize,
        timeout: Duration,
        mut probe: impl FnMut(&str) -> Option<T>,
    ) -> (usize, T) {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            for (i, line) in lines.iter().enumerate().skip(from) {
                if let Some(value) = probe(line) {
                    return (i, value);
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {} s waiting for {what}\n{}",
                    timeout.as_secs(),
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the demo") {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the demo did not exit within {} s\n{}",
                    timeout.as_secs(),
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test: stop the demo through its own cleanup (SIGTERM), then make sure.
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether this machine can run the root shape; prints `SKIPPED` (or fails under CI=true)
/// when it cannot.
fn can_run(what: &str) -> bool {
    switchyard_testbed::require(what).is_some()
}

/// Namespaces and processes left by the demo with process id `pid`.
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid:x}-", switchyard_testbed::NAME_PREFIX);
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("namespace {name}"));
            }
        }
    }
    let marker = format!("{}={prefix}", switchyard_testbed::MARKER_ENV);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|b| *b == 0)
                .any(|v| v.starts_with(marker.as_bytes()))
            {
                found.push(format!("process {:?}", entry.file_name()));
            }
        }
    }
    found
}

/// `key=value` from the summary line.
fn summary_value(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary:?}"))
}

/// Host `host`'s part of a status line (`demo-1 40 req healthy active`).
fn host_part<'a>(status: &'a str, host: &str) -> Option<&'a str> {
    status
        .split(" | ")
        .find(|part| part.starts_with(&format!("{host} ")))
}

/// Host `host`'s request count in a status line.
fn requests(status: &str, host: &str) -> Option<u64> {
    let mut words = host_part(status, host)?.split_whitespace().skip(1);
    let count = words.next()?.parse().ok()?;
    (words.next() == Some("req")).then_some(count)
}

fn status_counts(line: &str) -> Option<[u64; 3]> {
    if !line.starts_with("status ") {
        return None;
    }
    Some([
        requests(line, "demo-1")?,
        requests(line, "demo-2")?,
        requests(line, "demo-3")?,
    ])
}

#[test]
fn traffic_is_answered_by_every_host_and_nothing_is_left_behind() {
    if !can_run("root for switchyard demo") {
        return;
    }
    let mut demo = Demo::start(&["--traffic", "--duration", "8s", "--admin", "127.0.0.1:0"]);
    drop(demo.stdin.take()); // no console: a closed stdin is ignored
    let status = demo.wait_exit(SETUP + Duration::from_secs(60));
    let transcript = demo.transcript();
    assert!(status.success(), "exit {status}\n{transcript}");
    let lines = demo.lines();
    let text = lines.join("\n");
    assert!(text.contains("http://198.19.0.10:80/"), "{transcript}");
    assert!(
        text.contains("curl http://198.19.0.10/"),
        "banner shows how to send traffic\n{transcript}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Admin API:     http://127.0.0.1:") && l.contains("/v1/hosts")),
        "banner shows the admin URL\n{transcript}"
    );
    assert!(text.contains("ctl --unit 127.0.0.1:"), "{transcript}");
    let summary = lines
        .iter()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line\n{transcript}"));
    for host in ["demo-1", "demo-2", "demo-3"] {
        assert!(
            summary_value(summary, host) > 0,
            "{host} answered nothing: {summary}\n{transcript}"
        );
    }
    assert_eq!(summary_value(summary, "failed"), 0, "{transcript}");
    assert_eq!(
        summary_value(summary, "answered"),
        summary_value(summary, "requests"),
        "{transcript}"
    );
    assert!(
        text.contains("removed the demo's namespaces and processes"),
        "{transcript}"
    );
    let left = leftovers(demo.pid());
    assert!(left.is_empty(), "left behind: {left:?}\n{transcript}");
}

#[test]
fn draining_a_host_on_stdin_stops_its_new_requests() {
    if !can_run("root for switchyard demo") {
        return;
    }
    // --duration only bounds the test; it ends with `q`.
    let mut demo = Demo::start(&["--traffic", "--duration", "5m", "--admin", "127.0.0.1:0"]);
    demo.wait_line("every host answering", 0, SETUP, |l| {
        status_counts(l).filter(|c| c.iter().all(|&n| n > 0))
    });
    // The request router answers on the VIP's router port, setting its affinity cookie.
    let (_, ns) = demo.wait_line("the request router's line", 0, SETUP, |l| {
        l.strip_prefix("Request router: ip netns exec ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    });
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-s", "-i", "--max-time", "5"])
        .arg("http://198.19.0.10:8080/")
        .output()
        .expect("run curl in the client namespace");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("hello from demo-") && answer.contains("set-cookie: DEMO=v1."),
        "the request router's answer: {answer}\n{}",
        demo.transcript()
    );
    demo.type_line("d 1");
    // The drain is current once the status line shows `draining` without `(now active)`.
    let (drained_at, ()) = demo.wait_line(
        "host 1 drained at the load balancer",
        0,
        Duration::from_secs(60),
        |l| {
            let part = host_part(l, "demo-1")?;
            (l.starts_with("status ") && part.contains("draining") && !part.contains("(now"))
                .then_some(())
        },
    );
    // One more status line for the classifier to drop its allotment (it refreshes within
    // 200 ms of a change) and the last open requests to finish; from there on host 1's
    // counter must stand still while the others keep counting.
    let (first, base) = demo.wait_line(
        "a status line after the drain",
        drained_at + 1,
        Duration::from_secs(30),
        status_counts,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let after: Vec<[u64; 3]> = loop {
        let after: Vec<[u64; 3]> = demo.lines()[first + 1..]
            .iter()
            .filter_map(|l| status_counts(l))
            .collect();
        if after.len() >= 3 {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for three more status lines\n{}",
            demo.transcript()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for counts in &after {
        assert_eq!(
            counts[0],
            base[0],
            "demo-1 got new requests while drained: {base:?} -> {counts:?}\n{}",
            demo.transcript()
        );
    }
    let later = after[after.len() - 1];
    assert!(
        later[1] > base[1] && later[2] > base[2],
        "the other hosts kept answering: {base:?} -> {later:?}\n{}",
        demo.transcript()
    );

    demo.type_line("u 1");
    demo.wait_line(
        "host 1 answering again",
        first,
        Duration::from_secs(60),
        |l| status_counts(l).filter(|c| c[0] > base[0]),
    );
    demo.type_line("q");
    let status = demo.wait_exit(Duration::from_secs(60));
    let transcript = demo.transcript();
    assert!(status.success(), "exit {status}\n{transcript}");
    let lines = demo.lines();
    let summary = lines
        .iter()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line\n{transcript}"));
    assert!(summary_value(summary, "demo-1") > base[0], "{transcript}");
    let left = leftovers(demo.pid());
    assert!(left.is_empty(), "left behind: {left:?}\n{transcript}");
}

#[test]
fn help_lists_the_options_with_examples() {
    let out = Command::new(EXE)
        .args(["demo", "--help"])
        .output()
        .expect("run switchyard demo --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--traffic",
        "--rate",
        "--duration",
        "--admin",
        "--keep-going",
        "--router",
        "As root:",
        "Without root: the request-router-only shape",
        "Examples:",
        "sudo switchyard demo --traffic",
        "\n  switchyard demo --traffic",
        "switchyard ctl hosts",
        "d N",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let top = Command::new(EXE)
        .arg("--help")
        .output()
        .expect("run switchyard --help");
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("demo"), "{top}");
    assert!(
        !top.contains("demo-host"),
        "the host application is hidden:\n{top}"
    );
}

/// One `GET path` to `addr` over a new connection; the whole answer.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// The address in a banner line's `http://ADDR/` URL.
fn url_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("http://").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

#[test]
fn without_root_it_runs_the_router_only_shape_on_loopback() {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    // As root, run it as the unprivileged user `nobody` (no capabilities, so no namespaces),
    // from a copy of the binary that user can reach (the build directory may sit below a
    // directory only root may enter, like a fresh `mktemp -d` clone).
    let copy = tempfile::Builder::new()
        .prefix("switchyard-demo-nonroot")
        .tempdir()
        .expect("temporary directory");
    let exe = if root {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = copy.path().join("switchyard");
        std::fs::copy(EXE, &exe).expect("copy the binary");
        for (path, mode) in [(copy.path(), 0o755), (exe.as_path(), 0o755)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("make the copy reachable");
        }
        exe
    } else {
        std::path::PathBuf::from(EXE)
    };
    let mut command = Command::new(&exe);
    // Free ports for the router and the admin API: tests run in parallel. --duration ends
    // it: long enough for the drain to show in a few status lines.
    command
        .args(["demo", "--traffic", "--duration", "20s"])
        .args(["--router", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .current_dir(copy.path());
    if root {
        command.uid(65534).gid(65534);
    }
    let mut demo = Demo::spawn(command);

    // It says which shape it runs, why, and what root adds.
    let (_, ()) = demo.wait_line("the shape's announcement", 0, SETUP, |l| {
        l.contains("not root, so it runs the request-router-only shape on loopback")
            .then_some(())
    });
    let (_, router) = demo.wait_line("the request router's URL", 0, SETUP, |l| {
        l.strip_prefix("Request router: curl -i ")
            .and_then(url_addr)
    });
    let (_, admin) = demo.wait_line("the dashboard's URL", 0, SETUP, |l| {
        l.strip_prefix("Dashboard:").and_then(url_addr)
    });
    let (_, config) = demo.wait_line("the configuration's path", 0, SETUP, |l| {
        let path = l
            .strip_prefix("Configuration: ")?
            .split_whitespace()
            .next()?;
        Some(std::path::PathBuf::from(path))
    });
    let text = demo.lines().join("\n");
    for needle in [
        "XDP",
        "classifier",
        "network namespaces",
        "sudo switchyard demo --traffic",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing\n{}",
            demo.transcript()
        );
    }
    assert!(
        router.ip().is_loopback() && admin.ip().is_loopback(),
        "{text}"
    );

    // The printed URLs work: the router routes (and sets its affinity cookie), the admin API
    // serves the dashboard.
    let answer = http_get(router, "/");
    assert!(
        answer.contains("hello from demo-") && answer.contains("set-cookie: DEMO=v1."),
        "the request router's answer: {answer}\n{}",
        demo.transcript()
    );
    let dashboard = http_get(admin, "/");
    assert!(
        dashboard.starts_with("HTTP/1.1 200"),
        "the dashboard: {dashboard}\n{}",
        demo.transcript()
    );

    // Every host answers; then `d 1` stops host 1's new requests once the unit shows the
    // drain as current, while the others keep answering.
    demo.wait_line("every host answering", 0, SETUP, |l| {
        status_counts(l).filter(|c| c.iter().all(|&n| n > 0))
    });
    demo.type_line("d 1");
    let (drained_at, ()) = demo.wait_line(
        "host 1 drained at the load balancer",
        0,
        Duration::from_secs(30),
        |l| {
            let part = host_part(l, "demo-1")?;
            (l.starts_with("status ") && part.contains("draining") && !part.contains("(now"))
                .then_some(())
        },
    );
    let (first, base) = demo.wait_line(
        "a status line after the drain",
        drained_at + 1,
        Duration::from_secs(30),
        status_counts,
    );
    let status = demo.wait_exit(Duration::from_secs(60));
    let transcript = demo.transcript();
    assert!(status.success(), "exit {status}\n{transcript}");
    let lines = demo.lines();
    let after: Vec<[u64; 3]> = lines[first + 1..]
        .iter()
        .filter_map(|l| status_counts(l))
        .collect();
    assert!(
        after.len() >= 2,
        "two status lines after the drain before --duration ended it\n{transcript}"
    );
    for counts in &after {
        assert_eq!(
            counts[0], base[0],
            "demo-1 got new requests while drained: {base:?} -> {counts:?}\n{transcript}"
        );
    }
    let later = after[after.len() - 1];
    assert!(
        later[1] > base[1] && later[2] > base[2],
        "the other hosts kept answering: {base:?} -> {later:?}\n{transcript}"
    );

    // The summary, and nothing left behind: no process it started, no temporary directory.
    let summary = lines
        .iter()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line\n{transcript}"));
    for host in ["demo-1", "demo-2", "demo-3"] {
        assert!(
            summary_value(summary, host) > 0,
            "{host} answered nothing: {summary}\n{transcript}"
        );
    }
    assert_eq!(summary_value(summary, "demo-1"), base[0], "{transcript}");
    assert_eq!(summary_value(summary, "failed"), 0, "{transcript}");
    assert!(
        lines
            .iter()
            .any(|l| l == "removed the demo's processes and its temporary directory"),
        "{transcript}"
    );
    let left = leftovers(demo.pid());
    assert!(left.is_empty(), "left behind: {left:?}\n{transcript}");
    let dir = config.parent().expect("the configuration's directory");
    assert!(
        dir.starts_with(std::env::temp_dir()) && !dir.exists(),
        "{} remains\n{transcript}",
        dir.display()
    );
}
