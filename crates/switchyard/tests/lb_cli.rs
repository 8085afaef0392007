//! End-to-end tests of `switchyard lb` and `switchyard ctl hosts`: the real
//! binary on loopback ephemeral ports, a real host protocol machine over
//! UDP, signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use switchyard_health::{HostProtocol, HostSettings};
use switchyard_transport::{Received, UdpEndpoint};
use switchyard_wire::health::{AppStatus, Health};
use switchyard_wire::{AppId, Codec, HostId, MacKey, Protocol, SenderId, UnitId};

const SECRET: &str = "switchyard cli tests: not a production secret";
const VIP: &str = "198.51.100.10:80";

fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("cluster.key"), SECRET).expect("secret");
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
            r#"[cluster]
id = "cli"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["forwarder", "classifier", "health-cache"]

[health]
heartbeat_interval = "100ms"
host_dead_after = "2s"

[[services]]
name = "web"
vip = "{VIP}"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[pools]]
name = "web"

[[pools.hosts]]
id = 101
name = "web-1"
address = "127.0.0.1:8081"
app = "shop"
"#
        ),
    )
    .expect("config");
    path
}

/// A running `switchyard lb`; killed on drop if still running.
struct Lb {
    child: Child,
    stderr: Arc<Mutex<String>>,
    admin: SocketAddr,
    control: SocketAddr,
}

impl Lb {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["lb", "--config"])
            .arg(config)
            .args([
                "--unit",
                "lb-1",
                "--control",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard lb");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                // Log first, then signal: a reader woken by the ready line must find it in
                // the log.
                {
                    let mut log = log.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
                if line.contains("lb ready") {
                    let _ = ready_tx.send(line.clone());
                }
            }
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("no `lb ready` line:\n{}", stderr.lock().expect("log"));
            }
        };
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in {ready:?}"))
        };
        Self {
            admin: field("admin"),
            control: field("control"),
            child,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// Sends `signal` and waits for the exit (at most 5 s).
    fn stop(mut self, signal: Signal) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lb did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Host 101's protocol machine over UDP, until the task is aborted.
async fn run_host(unit: SocketAddr) -> tokio::task::JoinHandle<()> {
    let codec = Codec::new(MacKey::derive(SECRET.as_bytes(), "cli").expect("key"));
    let host = HostId(101);
    let mut endpoint = UdpEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        codec,
        SenderId::from(host),
    )
    .await
    .expect("host socket");
    let mut settings = HostSettings::new(host, vec![UnitId(1)]);
    settings.name = Some("web-1.test".to_owned());
    settings.name_every = 1;
    settings.address = Some(endpoint.local_addr().expect("addr"));
    settings.heartbeat_interval = Duration::from_millis(100);
    let mut machine = HostProtocol::new(settings, Instant::now()).expect("machine");
    let app = AppId {
        vip: VIP.parse().expect("vip"),
        protocol: Protocol::Tcp,
        endpoint: "127.0.0.1:8081".parse().expect("addr"),
        info: String::new(),
    };
    machine
        .set_app(
            Instant::now(),
            app,
            AppStatus::new(Health::Healthy, 25, 40).expect("status"),
        )
        .expect("row");
    tokio::spawn(async move {
        loop {
            while let Some(t) = machine.poll_transmit() {
                let _ = endpoint.send(unit, &t.message).await;
            }
            let deadline = machine
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                received = endpoint.recv() => {
                    if let Ok(Received { result: Ok(envelope), .. }) = received {
                        let _ = machine.handle(Instant::now(), UnitId(envelope.sender.0), &envelope.message);
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => machine.handle_timeout(Instant::now()),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_hosts_shows_what_a_running_unit_caches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lb = Lb::start(&write_config(dir.path()));
    assert!(lb.admin.ip().is_loopback() && lb.admin.port() != 0);
    let unit = lb.admin.to_string();

    // Empty at first.
    let out = switchyard(&["ctl", "--unit", &unit, "hosts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no hosts in the cache yet"),
        "{}",
        text(&out.stdout)
    );

    let host = run_host(lb.control).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let table = loop {
        let out = switchyard(&["ctl", "--unit", &unit, "hosts"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        if table.contains("healthy") && !table.contains("resyncing") {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "host never showed up:\n{table}\n{}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "unit lb-1 (id 1): 1 host, 1 endpoint", "{table}");
    assert!(lines[1].starts_with("HOST"), "{table}");
    for cell in [
        "web-1.test (101)",
        "198.51.100.10:80/tcp -> 127.0.0.1:8081",
        "healthy",
        "25%",
        "active/active",
        "complete",
        "s ago",
    ] {
        assert!(lines[2].contains(cell), "{cell:?} missing:\n{table}");
    }
    assert!(
        lines[2].trim_end().ends_with("100"),
        "all tokens to the only endpoint:\n{table}"
    );

    // The option may follow the subcommand too; --json prints the document.
    let out = switchyard(&["ctl", "hosts", "--json", "--unit", &unit]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["unit"]["name"], "lb-1");
    let row = &doc["hosts"][0]["rows"][0];
    assert_eq!(doc["hosts"][0]["id"], 101);
    assert_eq!(row["health"], "healthy");
    assert_eq!(row["load"], 25);
    assert_eq!(row["capacity"], 40);
    assert_eq!(row["handshake"], "complete");
    assert_eq!(row["tokens"], 100);

    let log = lb.log();
    assert!(log.contains("host appeared"), "{log}");
    assert!(
        log.contains("host resynchronised from a table snapshot"),
        "{log}"
    );
    host.abort();
    let status = lb.stop(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
}

#[test]
fn lb_exits_zero_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path());
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let lb = Lb::start(&config);
        assert!(lb.log().contains("lb ready"));
        let status = lb.stop(signal);
        assert_eq!(status.code(), Some(0), "{signal:?}");
    }
}

#[test]
fn ctl_against_a_closed_port_says_nobody_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = switchyard(&["ctl", "--unit", &addr.to_string(), "hosts"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("no switchyard unit answers at {addr}")) && err.contains("--unit"),
        "{err}"
    );
}

#[test]
fn lb_refuses_bad_units_and_non_loopback_admin_addresses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path());
    let config = config.to_str().expect("utf-8");
    let out = switchyard(&["lb", "--config", config, "--unit", "lb-9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no unit named \"lb-9\""),
        "{}",
        text(&out.stderr)
    );
    let out = switchyard(&[
        "lb",
        "--config",
        config,
        "--unit",
        "lb-1",
        "--admin",
        "0.0.0.0:0",
        "--control",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a loopback address"),
        "{}",
        text(&out.stderr)
    );
}
