//! What the demo's two shapes share: the demo hosts' numbering and names, the [`Shape`] a
//! running demo presents to the console loop, the command lines of its processes (the same
//! in both shapes; only where they run differs), their supervision, and the wait until the
//! unit sees every host healthy.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchyard_lb::admin::api::HostsResponse;
use switchyard_lb::admin::client as admin_client;
use switchyard_testbed::{Netns, Process};

/// Number of demo hosts.
pub const HOSTS: usize = 3;
/// The LB unit's name in the generated configuration.
pub const UNIT: &str = "lb-1";
/// How long a process may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the hosts may take to become healthy in the unit's cache.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one admin API request during setup.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// Host number `n` (1-based) as named in the IPv4 pool: `demo-n`.
pub fn host_name(n: usize) -> String {
    format!("demo-{n}")
}

/// Host number `n` (1-based) as named in the IPv6 pool: `demo-n-v6`.
pub fn host6_name(n: usize) -> String {
    format!("demo-{n}-v6")
}

/// The pools the demo hosts are in, each host under one name per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pools {
    /// `web` (IPv4) only: the loopback shape.
    V4,
    /// `web` and `web6` (IPv6): the namespace shape.
    V4AndV6,
}

impl Pools {
    /// Host `n`'s names, IPv4 first: each is a row the unit reports and a host the agent
    /// steers.
    pub fn names(self, n: usize) -> Vec<String> {
        match self {
            Self::V4 => vec![host_name(n)],
            Self::V4AndV6 => vec![host_name(n), host6_name(n)],
        }
    }
}

/// One demo host's processes, in either shape.
#[derive(Debug)]
pub struct DemoHost {
    /// 1-based number (`d N` on the console).
    pub number: usize,
    /// Where its application listens, one address per pool (IPv4 first).
    pub endpoints: Vec<SocketAddr>,
    /// Its agent's local API socket.
    pub socket: PathBuf,
    /// `switchyard demo-host`.
    pub app: Process,
    /// `switchyard agent`.
    pub agent: Process,
}

impl DemoHost {
    /// `demo-N`.
    pub fn name(&self) -> String {
        host_name(self.number)
    }
}

/// A started demo, as the console loop drives it.
pub trait Shape: Send + 'static {
    /// The pools the hosts are in.
    fn pools(&self) -> Pools;
    /// `switchyard lb`.
    fn lb(&self) -> &Process;
    /// The demo hosts, in order.
    fn hosts(&self) -> &[DemoHost];
    /// Where the traffic generator runs (`None`: in the demo's own namespace) and the
    /// addresses it sends `GET /` to.
    fn traffic(&self) -> (Option<Netns>, Vec<SocketAddr>);
    /// The banner's first part: what runs where and how to send it requests.
    fn banner(&self) -> String;
    /// The generated configuration file.
    fn config_path(&self) -> PathBuf;
    /// Where the processes' logs are (removed at the end).
    fn log_dir(&self) -> &Path;
    /// Stops every process and removes everything the shape created; says what it removed.
    fn shutdown(self: Box<Self>) -> anyhow::Result<&'static str>;
}

/// Every process of `shape`, with what messages call it (`the agent of demo-2`).
pub fn processes(shape: &dyn Shape) -> Vec<(String, &Process)> {
    let mut all = vec![("switchyard lb".to_owned(), shape.lb())];
    for h in shape.hosts() {
        all.push((format!("the demo host {}", h.name()), &h.app));
        all.push((format!("the agent of {}", h.name()), &h.agent));
    }
    all
}

/// Stops the processes, agents first (they say goodbye to a unit that is still there), then
/// the unit, then the applications; each is terminated and reaped.
pub fn stop_processes(hosts: Vec<DemoHost>, lb: Process) {
    for h in &hosts {
        let _ = h.agent.terminate();
    }
    let _ = lb.terminate();
    drop(hosts);
}

/// Fails when the setup was told to stop (a signal); called between its steps.
pub fn check_stop(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted during setup");
    }
    Ok(())
}

/// `switchyard demo-host` for host `n`, listening on `listen` (port 0: any free port; the
/// ready line names the bound addresses, see [`listening`]).
pub fn demo_host_command(exe: &Path, n: usize, listen: &[SocketAddr]) -> Vec<OsString> {
    let mut command = vec![
        exe.into(),
        "demo-host".into(),
        "--name".into(),
        host_name(n).into(),
    ];
    for addr in listen {
        command.extend(["--listen".into(), addr.to_string().into()]);
    }
    command
}

/// `switchyard lb` running the unit, its admin API on `admin`.
pub fn lb_command(exe: &Path, config: &Path, admin: SocketAddr) -> Vec<OsString> {
    let mut command = vec![exe.into(), "lb".into(), "--config".into(), config.into()];
    let admin = admin.to_string();
    command.extend(["--unit", UNIT, "--admin", &admin, "--log-level", "info"].map(OsString::from));
    command
}

/// `switchyard agent` for host `n` under each of its `pools` names, receiving the unit's
/// messages on `listen`, its local API on the Unix `socket` (and on TCP `api` when given).
pub fn agent_command(
    exe: &Path,
    config: &Path,
    n: usize,
    pools: Pools,
    listen: SocketAddr,
    api: Option<SocketAddr>,
    socket: &Path,
) -> Vec<OsString> {
    let mut command = vec![exe.into(), "agent".into(), "--config".into(), config.into()];
    for name in pools.names(n) {
        command.extend(["--host".into(), name.into()]);
    }
    command.extend(["--listen".into(), listen.to_string().into()]);
    command.extend(["--socket".into(), socket.into()]);
    if let Some(api) = api {
        command.extend(["--api".into(), api.to_string().into()]);
    }
    command.extend(["--log-level", "info"].map(OsString::from));
    command
}

/// Waits for `process`'s ready line (the first of its output containing `needle`).
pub fn wait_ready(process: &Process, needle: &str, what: &str) -> anyhow::Result<String> {
    process
        .wait_for_output(needle, READY_TIMEOUT)
        .with_context(|| format!("{what} did not start"))?;
    let output = process.stderr().unwrap_or_default() + &process.stdout().unwrap_or_default();
    output
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
        .with_context(|| format!("{what}: its ready line went missing"))
}

/// The addresses a `demo-host ready … listen=A,B` line names.
pub fn listening(ready: &str) -> anyhow::Result<Vec<SocketAddr>> {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .context("no listen= in the demo host's ready line")?
        .split(',')
        .map(|a| {
            a.parse()
                .with_context(|| format!("bad address {a:?} in {ready:?}"))
        })
        .collect()
}

/// The unit's `/v1/hosts`, asked from a blocking thread (a runtime of its own, so a caller
/// inside a namespace asks from there).
pub fn unit_hosts_blocking(admin: SocketAddr) -> anyhow::Result<HostsResponse> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the admin API request")?
        .block_on(admin_client::get_json::<HostsResponse>(
            admin,
            "/v1/hosts",
            API_TIMEOUT,
        ))
        .context("admin API request failed")
}

/// Polls `hosts` until every row of every demo host (one per pool) is healthy and active.
pub fn wait_healthy(
    pools: Pools,
    stop: &AtomicBool,
    logs: &Path,
    hosts: impl Fn() -> anyhow::Result<HostsResponse>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + HEALTHY_TIMEOUT;
    let expected = pools.names(1).len() * HOSTS;
    loop {
        check_stop(stop)?;
        let seen = match hosts() {
            Ok(hosts) => {
                let ready = hosts
                    .hosts
                    .iter()
                    .filter(|h| h.alive)
                    .flat_map(|h| &h.rows)
                    .filter(|r| r.health == "healthy" && r.current == "active")
                    .count();
                if ready >= expected {
                    return Ok(());
                }
                format!("{ready} of {expected} endpoints healthy")
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "the hosts did not become healthy within {} s ({seen}); logs: {}",
                HEALTHY_TIMEOUT.as_secs(),
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A process that exited by itself.
#[derive(Debug)]
pub struct Exited {
    /// Which process (`switchyard lb`, `the agent of demo-2`, …).
    pub what: String,
    /// Whether it exited with status 0 (it was told to stop, e.g. by a Ctrl-C sent to the
    /// whole terminal process group).
    pub clean: bool,
    /// Its exit status and the end of its log.
    pub detail: String,
}

/// Notices processes that exited by themselves, reporting each once.
#[derive(Debug, Default)]
pub struct Supervisor {
    reported: BTreeSet<String>,
}

impl Supervisor {
    /// Those of `processes` that exited since the last call.
    pub fn exited(&mut self, processes: &[(String, &Process)]) -> Vec<Exited> {
        let mut found = Vec::new();
        for (what, p) in processes {
            if let Ok(Some(status)) = p.try_status() {
                let log = p.stderr().unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                found.push(Exited {
                    what: what.clone(),
                    clean: status.success(),
                    detail: format!("{status}; last lines of its log:\n{tail}"),
                });
            }
        }
        found.retain(|e| self.reported.insert(e.what.clone()));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_name_the_bound_addresses() {
        let line = "demo-host ready name=demo-1 listen=127.0.0.1:40001,[::1]:40002";
        assert_eq!(
            listening(line).expect("addresses"),
            vec![
                "127.0.0.1:40001".parse::<SocketAddr>().expect("addr"),
                "[::1]:40002".parse().expect("addr"),
            ]
        );
        assert!(listening("demo-host ready name=x").is_err());
        assert!(listening("demo-host ready listen=nonsense").is_err());
    }

    #[test]
    fn commands_are_the_operators_command_lines() {
        let exe = Path::new("/bin/switchyard");
        let line = |v: Vec<OsString>| {
            v.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(
            line(demo_host_command(exe, 2, &[any])),
            "/bin/switchyard demo-host --name demo-2 --listen 127.0.0.1:0"
        );
        assert_eq!(
            line(agent_command(
                exe,
                Path::new("c.toml"),
                1,
                Pools::V4AndV6,
                any,
                Some(any),
                Path::new("a.sock"),
            )),
            "/bin/switchyard agent --config c.toml --host demo-1 --host demo-1-v6 --listen 127.0.0.1:0 --socket a.sock --api 127.0.0.1:0 --log-level info"
        );
        assert_eq!(
            line(lb_command(exe, Path::new("c.toml"), any)),
            "/bin/switchyard lb --config c.toml --unit lb-1 --admin 127.0.0.1:0 --log-level info"
        );
    }
}
