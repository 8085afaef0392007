//! `switchyard agent` as a real process on loopback: it announces readiness, serves the
//! local API on TCP and the Unix socket, heartbeats to the unit's control address, and on
//! SIGTERM says goodbye (a real frame, opened here with the cluster key), removes its socket
//! and exits 0. Bad configurations and unknown hosts exit 1 with a diagnostic.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard_wire::{Codec, HostId, MacKey, Message, Receiver, ReplayGuard};

const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e\n";

fn config(dir: &Path, unit: SocketAddr) -> PathBuf {
    std::fs::write(dir.join("cluster.key"), SECRET).unwrap();
    let file = dir.join("switchyard.toml");
    let text = format!(
        r#"
[cluster]
id = "cli-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 100
address = "{ip}"
roles = ["forwarder", "classifier", "health-cache"]
control_port = {port}

[health]
heartbeat_interval = "100ms"

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[pools]]
name = "web"

[[pools.hosts]]
id = 1
name = "web-1"
address = "127.0.0.1:18080"
app = "shop"
"#,
        ip = unit.ip(),
        port = unit.port()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Kills the agent if a test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(stream: &mut (impl Read + Write), path: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn agent_serves_its_api_and_says_goodbye_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let unit = UdpSocket::bind("127.0.0.1:0").unwrap();
    unit.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let file = config(dir.path(), unit.local_addr().unwrap());
    let socket = dir.path().join("run").join("agent.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("agent")
        .arg("--config")
        .arg(&file)
        .args([
            "--host",
            "web-1",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);
    let stderr = agent.0.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // "agent ready" names the API address.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut log = Vec::new();
    let api: SocketAddr = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no \"agent ready\" line; log so far:\n{}", log.join("\n")));
        log.push(line.clone());
        if line.contains("agent ready") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("api="))
                .unwrap_or_else(|| panic!("no api= in {line}"));
            break addr.parse().unwrap();
        }
    };
    assert!(api.ip().is_loopback());

    for (status, body) in [
        http(&mut UnixStream::connect(&socket).unwrap(), "/v1/hosts"),
        http(&mut TcpStream::connect(api).unwrap(), "/v1/hosts"),
    ] {
        assert_eq!(status, 200, "{body}");
        let hosts: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(hosts[0]["name"], "web-1");
        assert_eq!(hosts[0]["rows"][0]["name"], "web");
        assert_eq!(hosts[0]["rows"][0]["directive"]["current"], "active");
    }

    let secret = switchyard_config::ClusterSecret::from_file_contents(SECRET.as_bytes()).unwrap();
    let codec = Codec::new(MacKey::derive(secret.as_bytes(), "cli-test").unwrap());
    let mut receiver = Receiver::new(codec, ReplayGuard::default());
    let mut buf = [0u8; 65536];
    // Heartbeats already arrive.
    let mut heartbeats = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while heartbeats < 2 && Instant::now() < deadline {
        if let Ok((len, _)) = unit.recv_from(&mut buf)
            && let Ok(envelope) = receiver.accept(&buf[..len])
            && matches!(envelope.message, Message::Heartbeat(_))
        {
            heartbeats += 1;
        }
    }
    assert!(
        heartbeats >= 2,
        "no heartbeats at the unit's control address"
    );

    let status = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut goodbye = None;
    while goodbye.is_none() && Instant::now() < deadline {
        if let Ok((len, _)) = unit.recv_from(&mut buf)
            && let Ok(envelope) = receiver.accept(&buf[..len])
            && let Message::Goodbye(g) = envelope.message
        {
            goodbye = Some((envelope.sender, g.host));
        }
    }
    let (sender, host) = goodbye.expect("a goodbye reached the unit");
    assert_eq!(host, HostId(1));
    assert_eq!(sender.0, 1);

    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = agent.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn bad_configuration_and_unknown_host_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cluster]\nid = 3\n").unwrap();
    let run = |config: &Path, host: &str| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("agent")
            .arg("--config")
            .arg(config)
            .args([
                "--host",
                host,
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
            ])
            .arg("--socket")
            .arg(dir.path().join("a.sock"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&bad, "web-1");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");

    let out = run(&file, "nope");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no host named \"nope\""), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("agent")
        .arg("--config")
        .arg(&file)
        .args(["--host", "web-1", "--api", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}
