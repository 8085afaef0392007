//! Test harness: a configuration in a temp dir, a unit on ephemeral
//! loopback ports, host agents' protocol machines driven over UDP, and
//! polling helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openmetrics_parser::{MetricFamily, MetricsExposition, OpenMetricsType, OpenMetricsValue};
use serde::de::DeserializeOwned;
use switchyard_health::{HostProtocol, HostSettings};
use switchyard_lb::admin::api::HostsResponse;
use switchyard_lb::admin::client::{self, AdminResponse};
use switchyard_lb::{RunningUnit, UnitOptions};
use switchyard_transport::{Received, UdpEndpoint};
use switchyard_wire::health::{AppStatus, Health};
use switchyard_wire::{AppId, Codec, HostId, MacKey, Protocol, SenderId, UnitId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Raw key material (not hex, so the configuration uses the bytes as they are).
pub const SECRET: &str = "switchyard lb tests: not a production secret";
pub const CLUSTER: &str = "test";
pub const UNIT: UnitId = UnitId(1);
pub const VIP: &str = "198.51.100.10:80";
/// Packet services need a forwarder and a classifier in the configuration;
/// this build skips both.
pub const HEALTH_ROLES: &str = r#""forwarder", "classifier", "health-cache""#;
/// Timeout of one admin API request.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline for a state the tests wait for: generous, since a loaded machine is slow;
/// speed is measured by the benchmarks, never asserted here.
pub const WAIT: Duration = Duration::from_secs(10);

/// A configuration with unit `lb-1` (id 1) with `roles`, unit `lb-2` (id 2, not
/// started), hosts 101–104 and a host group of 101 and 102.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub config: switchyard_config::Config,
}

impl Fixture {
    pub fn new(roles: &str, host_dead_after: &str) -> Self {
        Self::with_extra(roles, host_dead_after, "")
    }

    /// [`Self::new`] with `extra` appended to the configuration (more tables).
    pub fn with_extra(roles: &str, host_dead_after: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("cluster.key"), SECRET).expect("secret");
        let path = dir.path().join("cluster.toml");
        let text = format!(
            r#"[cluster]
id = "{CLUSTER}"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = [{roles}]

# Asks lb-1 for allotments over UDP in tests; runs nothing here.
[[cluster.units]]
name = "lb-2"
id = 2
address = "127.0.0.2"
roles = ["forwarder", "classifier"]

[health]
heartbeat_interval = "100ms"
host_dead_after = "{host_dead_after}"

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

[[pools.hosts]]
id = 102
name = "web-2"
address = "127.0.0.1:8082"
app = "shop"

[[pools.hosts]]
id = 103
name = "web-3"
address = "127.0.0.1:8083"
app = "shop"

[[pools.hosts]]
id = 104
name = "web-4"
address = "127.0.0.1:8084"
app = "shop"

[[host_groups]]
name = "pair"
hosts = ["web-1", "web-2"]
gossip_port = 7946
{extra}"#
        );
        std::fs::write(&path, text).expect("config");
        let config = switchyard_config::load_file(&path)
            .unwrap_or_else(|d| panic!("test config rejected:\n{d}"));
        Self { _dir: dir, config }
    }

    /// The default fixture: a unit with the health-cache role, hosts age out after 5 s.
    pub fn health() -> Self {
        Self::new(HEALTH_ROLES, "5s")
    }

    pub async fn start(&self) -> RunningUnit {
        RunningUnit::start(&self.config, options())
            .await
            .expect("unit starts")
    }
}

pub fn options() -> UnitOptions {
    UnitOptions {
        unit: "lb-1".to_owned(),
        admin: Some(loopback0()),
        control: Some(loopback0()),
    }
}

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A free loopback TCP port (bound and released; the unit binds it right after).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind(loopback0())
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A free loopback UDP port (bound and released; the unit binds it right after).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind(loopback0())
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

pub fn codec() -> Codec {
    Codec::new(MacKey::derive(SECRET.as_bytes(), CLUSTER).expect("key"))
}

pub fn app(port: u16) -> AppId {
    AppId {
        vip: VIP.parse().expect("vip"),
        protocol: Protocol::Tcp,
        endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
        info: String::new(),
    }
}

pub fn healthy(load: u8, capacity: u8) -> AppStatus {
    AppStatus::new(Health::Healthy, load, capacity).expect("status")
}

type Command = Box<dyn FnOnce(&mut HostProtocol, Instant) + Send>;

/// A host agent's protocol machine talking to one unit over UDP.
pub struct TestHost {
    commands: mpsc::UnboundedSender<(Command, oneshot::Sender<()>)>,
    task: JoinHandle<()>,
}

impl TestHost {
    /// Starts host `id` reporting to the unit at `unit_addr`, heartbeating
    /// every 100 ms and advertising its socket's address.
    pub async fn start(id: u32, unit_addr: SocketAddr) -> Self {
        let host = HostId(id);
        let mut endpoint = UdpEndpoint::bind(loopback0(), codec(), SenderId::from(host))
            .await
            .expect("host socket");
        let mut settings = HostSettings::new(host, vec![UNIT]);
        settings.name = Some(format!("host-{id}.test"));
        settings.name_every = 1;
        settings.address = Some(endpoint.local_addr().expect("addr"));
        settings.heartbeat_interval = Duration::from_millis(100);
        settings.postulate_delay = Duration::from_millis(50);
        settings.postulate_interval = Duration::from_millis(100);
        settings.load_interval = Duration::from_millis(100);
        let mut machine = HostProtocol::new(settings, Instant::now()).expect("host machine");
        let (commands, mut rx) = mpsc::unbounded_channel::<(Command, oneshot::Sender<()>)>();
        let task = tokio::spawn(async move {
            loop {
                let deadline = machine.poll_timeout();
                let sleep = async move {
                    match deadline {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let mut ack = None;
                tokio::select! {
                    command = rx.recv() => match command {
                        Some((f, done)) => {
                            f(&mut machine, Instant::now());
                            ack = Some(done);
                        }
                        None => break,
                    },
                    received = endpoint.recv() => {
                        if let Ok(Received { result: Ok(envelope), .. }) = received {
                            let _ = machine.handle(Instant::now(), UnitId(envelope.sender.0), &envelope.message);
                        }
                    }
                    () = sleep => machine.handle_timeout(Instant::now()),
                }
                while let Some(t) = machine.poll_transmit() {
                    assert_eq!(t.to, UNIT);
                    let _ = endpoint.send(unit_addr, &t.message).await;
                }
                if let Some(done) = ack {
                    let _ = done.send(());
                }
            }
        });
        Self { commands, task }
    }

    /// Runs `f` on the machine and waits until what it queued was sent.
    pub async fn with(&self, f: impl FnOnce(&mut HostProtocol, Instant) + Send + 'static) {
        let (done, wait) = oneshot::channel();
        self.commands
            .send((Box::new(f), done))
            .unwrap_or_else(|_| panic!("host task ended"));
        wait.await.expect("host task acknowledges");
    }

    /// Adds or updates an application row.
    pub async fn set(&self, app: AppId, status: AppStatus) {
        self.with(move |m, now| m.set_app(now, app, status).expect("set_app"))
            .await;
    }

    /// Clean shutdown: goodbye, then stop.
    pub async fn goodbye(self) {
        self.with(|m, _| m.goodbye()).await;
        self.task.abort();
    }

    /// Crash: stop without a word.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// One `/metrics` scrape, parsed and validated by an OpenMetrics parser (families, types,
/// suffixes, label syntax, `# EOF`).
pub struct Scrape {
    pub text: String,
    pub families: MetricsExposition<OpenMetricsType, OpenMetricsValue>,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let families = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("not valid OpenMetrics text ({e:?}):\n{text}"));
        Self { text, families }
    }

    /// Family `name` (a counter's without `_total`), of type `kind` with exactly the label
    /// names `labels` and `unit` (every family of a unit carries its name).
    pub fn family(
        &self,
        name: &str,
        kind: OpenMetricsType,
        labels: &[&str],
    ) -> &MetricFamily<OpenMetricsType, OpenMetricsValue> {
        let family = self
            .families
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}:\n{}", self.text));
        assert_eq!(family.family_type, kind, "{name}'s type");
        let mut have: Vec<&str> = family
            .get_label_names()
            .iter()
            .map(String::as_str)
            .collect();
        let mut want = labels.to_vec();
        want.push("unit");
        have.sort_unstable();
        want.sort_unstable();
        assert_eq!(have, want, "{name}'s labels");
        family
    }

    /// The sum of family `name`'s samples whose labels include `labels` (a histogram's
    /// count), `None` when no sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.families.families.get(name)?;
        let mut total = None;
        for sample in family.iter_samples() {
            let set = sample.get_labelset().expect("bound sample");
            if labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
            {
                let v = match &sample.value {
                    OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                    OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                    other => panic!("{name}: unexpected value {other:?}"),
                };
                *total.get_or_insert(0.0) += v;
            }
        }
        total
    }
}

/// `GET /metrics`: 200 with the OpenMetrics media type, parsed.
pub async fn scrape(unit: &RunningUnit) -> Scrape {
    let response = get(unit, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    Scrape::parse(response.text())
}

/// One raw HTTP/1.1 answer: the status, the header block (status line included) and the
/// body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One raw HTTP/1.1 exchange with `addr`: `method target` with exactly `headers` (each
/// `Name: value`; none is added but `Connection: close` and the body's `Content-Length`)
/// and `body`, the whole answer read within [`WAIT`]. Chunked answers are not read.
pub async fn raw_exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    let what = format!("{method} {target}");
    let answer = tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let answer = String::from_utf8(answer).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: not an HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status in {head:?}"));
    let answer = Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    assert!(
        answer.header("transfer-encoding").is_none(),
        "{what}: chunked answers are not read here"
    );
    answer
}

/// [`raw_exchange`] without a body with the unit's admin API: the status, the header block
/// and the body.
pub async fn raw(
    unit: &RunningUnit,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, String, String) {
    let answer = raw_exchange(unit.admin_addr(), method, path, headers, "").await;
    (answer.status, answer.head, answer.body)
}

/// GET from the unit's admin API.
pub async fn get(unit: &RunningUnit, path: &str) -> AdminResponse {
    client::get(unit.admin_addr(), path, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GET and decode JSON (2xx expected).
pub async fn get_json<T: DeserializeOwned>(unit: &RunningUnit, path: &str) -> T {
    client::get_json(unit.admin_addr(), path, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub async fn hosts(unit: &RunningUnit) -> HostsResponse {
    get_json(unit, "/v1/hosts").await
}

/// Polls `probe` every 20 ms until it yields `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/v1/hosts` shows exactly `ids`, each in sync with `rows`
/// rows.
pub async fn wait_for_hosts(unit: &RunningUnit, ids: &[u32], rows: usize) -> HostsResponse {
    eventually(WAIT, "hosts in sync", || async {
        let doc = hosts(unit).await;
        let shown: Vec<u32> = doc.hosts.iter().map(|h| h.id).collect();
        let ready = shown == ids
            && doc
                .hosts
                .iter()
                .all(|h| h.in_sync && h.baseline && h.rows.len() == rows);
        ready.then_some(doc)
    })
    .await
}
