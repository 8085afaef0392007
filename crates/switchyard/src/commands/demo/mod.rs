//! `switchyard demo`: the embedded default, on one machine. As root it builds network
//! namespaces (client — router — one LB unit — three hosts), starts `switchyard lb`
//! (forwarder, classifier, health cache) and, on every host, the built-in demo application
//! (`switchyard demo-host`) with `switchyard agent`, all from the current executable with a
//! generated configuration — the production code paths; only the hosts are built in. It
//! prints where to send traffic, relays the unit's admin API to loopback, can generate
//! traffic (`--traffic`), takes `d N` / `u N` / `q` on stdin, and removes everything when it
//! stops (Ctrl-C, SIGTERM, `q`, `--duration`, or an error).
//!
//! Without root it explains how to run it; the request-router-only shape on loopback, which
//! needs no root, is added with the request router ([`router_only_shape`]).
//!
//! Layout: [`cluster`] (namespaces, configuration, processes), [`host`] (the demo
//! application), [`relay`] (admin API to root-namespace loopback), [`traffic`] (the load
//! generator), [`console`] (stdin commands, status and summary lines).

mod cluster;
mod console;
pub mod host;
mod relay;
mod traffic;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_agent::api::client::{self as agent_client, ApiTarget};
use switchyard_lb::admin::api::HostsResponse;
use switchyard_lb::admin::client as admin_client;
use switchyard_testbed::Testbed;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use cluster::{Cluster, HOSTS, VIP_PORT, host_name, host6_name};
use console::Command;
use traffic::{MAX_RATE, Traffic};

/// How often the status line is printed (and processes are checked).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Time limit of the demo's own admin API and agent API requests.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of `switchyard demo`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs as root: it creates network namespaces (named sy-<pid>-<n>-<role>) \
    and loads the forwarder's BPF programs there; nothing is added to the machine's own network \
    namespace except the admin relay on loopback. Everything is removed when it stops.\n\n\
    Console (type on stdin, then Enter): d N drains host N, u N undrains it, Enter prints the \
    status, q quits.\n\n\
    Examples:\n  \
    sudo switchyard demo --traffic\n  \
    sudo switchyard demo --traffic --rate 50 --duration 1m\n  \
    sudo switchyard demo --admin 127.0.0.1:9280\n  \
    sudo cargo run --release -p switchyard -- demo --traffic   (from a checkout)\n\n\
    While it runs, in another terminal:\n  \
    switchyard ctl hosts\n  \
    curl -s 127.0.0.1:9180/v1/flows\n  \
    sudo ip netns exec <client namespace> curl http://198.19.0.10/"
)]
pub struct DemoArgs {
    /// Generate traffic: GET / to the VIPs from the client namespace, one new connection
    /// per request, counted per answering host, with a status line every 2 s.
    #[arg(long)]
    pub traffic: bool,
    /// Requests per second with --traffic (1-200).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    pub rate: u32,
    /// Stop by itself after this long (e.g. 30s, 5m); default: until Ctrl-C or `q`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Loopback address where the unit's admin API is relayed (port 0 picks one).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9180", value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// Keep running when one of the demo's processes exits unexpectedly (report it and
    /// watch the load balancer route around it) instead of stopping with an error.
    #[arg(long)]
    pub keep_going: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match switchyard_config::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 30s, 5m)")),
    }
}

fn parse_admin(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP:PORT address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the admin API has no authentication, so the demo relays it to loopback only (e.g. 127.0.0.1:9180)"
        ));
    }
    Ok(addr)
}

/// Runs the demo until it is stopped.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // The demo's own diagnostics (warnings of the namespace teardown, …); RUST_LOG wins.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

/// Why the demo stopped.
#[derive(Debug)]
enum Stop {
    Signal(&'static str),
    Quit,
    Duration,
    ProcessStopped(String),
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Signals first: from here on Ctrl-C and SIGTERM stop the demo through its cleanup.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let tb = match Testbed::new("switchyard demo") {
        Ok(tb) => tb,
        Err(switchyard_testbed::Error::Unavailable { reason }) => {
            not_root(&reason);
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).context("cannot prepare the demo's namespaces"),
    };
    let listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the admin relay (a unit already running here? pick another address with --admin 127.0.0.1:9280)",
                args.admin
            )
        })?;
    let admin = listener.local_addr().context("the admin relay's address")?;
    let exe = std::env::current_exe().context("cannot find the switchyard executable")?;

    println!("switchyard demo: starting a load balancer in front of {HOSTS} demo hosts");
    let stop_setup = Arc::new(AtomicBool::new(false));
    let mut setup = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop_setup);
        let exe = exe.clone();
        move || Cluster::start(tb, &exe, &stop, &|step| println!("  {step}"))
    });
    let started = tokio::select! {
        joined = &mut setup => joined,
        _ = sigint.recv() => interrupted_setup(&stop_setup, setup, "SIGINT").await,
        _ = sigterm.recv() => interrupted_setup(&stop_setup, setup, "SIGTERM").await,
    };
    let mut cluster = match started.context("the setup thread failed")? {
        Ok(cluster) => cluster,
        Err(_) if stop_setup.load(Ordering::SeqCst) => {
            println!("stopped during setup; everything is removed");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.context("the demo could not start; everything is removed")),
    };

    let _relay = relay::start(
        listener,
        cluster.topo().lb_unit(0).ns().clone(),
        cluster::LB_ADMIN,
    );
    print_banner(&cluster, admin, &exe, &args);

    let vip = cluster.topo().vip();
    let traffic = args.traffic.then(|| {
        Traffic::start(
            cluster.topo().client(0).ns().clone(),
            vec![vip.v4_socket(VIP_PORT), vip.v6_socket(VIP_PORT)],
            args.rate,
        )
    });
    let started_at = Instant::now();
    let deadline = args.duration.map(|d| started_at + d);
    let mut commands = console::commands();
    let mut stdin_open = true;
    let mut ticker = tokio::time::interval_at(started_at + STATUS_EVERY, STATUS_EVERY);
    let mut last_states = String::new();

    let stop = loop {
        tokio::select! {
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            () = sleep_until(deadline) => break Stop::Duration,
            command = commands.recv(), if stdin_open => match command {
                None => stdin_open = false,
                Some(Command::Quit) => break Stop::Quit,
                Some(Command::Help) => println!("{}", console::HELP),
                Some(Command::Status) => {
                    let hosts = unit_hosts(admin).await;
                    let tally = traffic.as_ref().map(Traffic::tally);
                    println!("{}", status(started_at, tally.as_ref(), &hosts));
                }
                Some(Command::Drain(n)) => directive(&cluster, n, "drain").await,
                Some(Command::Undrain(n)) => directive(&cluster, n, "undrain").await,
            },
            _ = ticker.tick() => {
                if let Some(stop) = supervise(&mut cluster, args.keep_going) {
                    break stop;
                }
                let hosts = unit_hosts(admin).await;
                let tally = traffic.as_ref().map(Traffic::tally);
                let line = status(started_at, tally.as_ref(), &hosts);
                // Without traffic, only changes are worth a line.
                let states = status(started_at, None, &hosts);
                let states = states.split_once(" | ").map_or("", |(_, s)| s).to_owned();
                if tally.is_some() || states != last_states {
                    println!("{line}");
                }
                if let Some(error) = tally.and_then(|t| t.last_error) {
                    tracing::debug!(%error, "latest traffic failure");
                }
                last_states = states;
            }
        }
    };
    let failure = match &stop {
        Stop::Signal(name) => {
            println!("{name}: stopping");
            None
        }
        Stop::Quit => {
            println!("stopping");
            None
        }
        Stop::Duration => {
            println!("--duration reached: stopping");
            None
        }
        Stop::ProcessStopped(what) => Some(what.clone()),
    };
    if let Some(traffic) = traffic {
        let tally = tokio::task::spawn_blocking(move || traffic.finish())
            .await
            .context("the traffic generator panicked")?;
        if let Some(error) = &tally.last_error {
            println!("latest traffic failure: {error}");
        }
        println!("{}", console::summary_line(&tally));
    }
    drop(_relay);
    let cleaned = tokio::task::spawn_blocking(move || cluster.shutdown())
        .await
        .context("the cleanup panicked")?;
    cleaned?;
    println!("removed the demo's namespaces and processes");
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(what) => bail!("{what} (see its log above; --keep-going keeps the demo running)"),
    }
}

/// Tells the setup to stop at its next step and waits for it (its drop guards clean up).
async fn interrupted_setup(
    stop: &AtomicBool,
    setup: tokio::task::JoinHandle<anyhow::Result<Cluster>>,
    name: &str,
) -> Result<anyhow::Result<Cluster>, tokio::task::JoinError> {
    println!("{name}: stopping after the current step");
    stop.store(true, Ordering::SeqCst);
    let result = setup.await;
    if let Ok(Ok(cluster)) = result {
        // Finished just as the signal came.
        let _ = tokio::task::spawn_blocking(move || cluster.shutdown()).await;
        return Ok(Err(anyhow::anyhow!("interrupted")));
    }
    result
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reports processes that exited by themselves; says whether the demo must stop.
fn supervise(cluster: &mut Cluster, keep_going: bool) -> Option<Stop> {
    for exited in cluster.exited() {
        if exited.clean && !keep_going {
            // Exit status 0: it was told to stop (a Ctrl-C reaches the whole process group).
            println!("{} stopped: stopping the demo", exited.what);
            return Some(Stop::Quit);
        }
        eprintln!("switchyard demo: {} exited: {}", exited.what, exited.detail);
        if !keep_going {
            return Some(Stop::ProcessStopped(format!(
                "{} exited unexpectedly",
                exited.what
            )));
        }
    }
    None
}

async fn unit_hosts(admin: SocketAddr) -> Result<HostsResponse, String> {
    admin_client::get_json::<HostsResponse>(admin, "/v1/hosts", API_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

fn status(
    started_at: Instant,
    tally: Option<&traffic::Tally>,
    hosts: &Result<HostsResponse, String>,
) -> String {
    console::status_line(
        started_at.elapsed().as_secs(),
        tally,
        hosts.as_ref().map_err(String::as_str),
    )
}

/// Sets host `n`'s target (`drain` or `undrain`) for both its rows through its agent's
/// local API (a Unix socket, reachable from here by its path).
async fn directive(cluster: &Cluster, n: usize, action: &str) {
    let Some(host) = cluster.hosts().iter().find(|h| h.number == n) else {
        eprintln!("no host {n}");
        return;
    };
    let target = ApiTarget::Unix(host.socket.clone());
    for name in [host_name(n), host6_name(n)] {
        let path = format!("/v1/hosts/{name}/{action}");
        let answer = tokio::time::timeout(
            API_TIMEOUT,
            agent_client::request(&target, "POST", &path, None),
        )
        .await;
        match answer {
            Ok(Ok(r)) if (200..300).contains(&r.status) => {}
            Ok(Ok(r)) => {
                eprintln!(
                    "{action} {name}: the agent answered {}: {}",
                    r.status, r.body
                );
                return;
            }
            Ok(Err(e)) => {
                eprintln!("{action} {name}: {e:#}");
                return;
            }
            Err(_) => {
                eprintln!("{action} {name}: the agent did not answer in time");
                return;
            }
        }
    }
    let name = host_name(n);
    if action == "drain" {
        println!(
            "draining {name}: it gets no new connections once the load balancer agrees (watch the status line); open ones finish"
        );
    } else {
        println!("undraining {name}: it gets new connections again");
    }
}

fn print_banner(cluster: &Cluster, admin: SocketAddr, exe: &Path, args: &DemoArgs) {
    let topo = cluster.topo();
    let vip = topo.vip();
    let client = topo.client(0);
    let unit = topo.lb_unit(0);
    let ctl = if admin.to_string() == "127.0.0.1:9180" {
        format!("{} ctl hosts", exe.display())
    } else {
        format!("{} ctl --unit {admin} hosts", exe.display())
    };
    let mut text = String::new();
    text.push_str("\nswitchyard demo is running. Network namespaces:\n");
    text.push_str(&format!(
        "  {:<26} client         {}\n",
        client.ns().name(),
        client.v4()
    ));
    text.push_str(&format!(
        "  {:<26} router         forwards the VIPs to the LB unit\n",
        topo.router().ns().name()
    ));
    text.push_str(&format!(
        "  {:<26} LB unit {}   switchyard lb: forwarder, classifier, health cache\n",
        unit.ns().name(),
        cluster::UNIT
    ));
    for h in cluster.hosts() {
        text.push_str(&format!(
            "  {:<26} host {}    demo host on {} and {}, switchyard agent\n",
            h.ns.name(),
            h.name(),
            h.endpoint,
            h.endpoint6
        ));
    }
    text.push_str(&format!(
        "\nVIPs:          http://{}/ (service web) and http://{}/ (service web6), full NAT to the hosts' port {}\n",
        vip.v4_socket(VIP_PORT),
        vip.v6_socket(VIP_PORT),
        cluster::APP_PORT
    ));
    text.push_str(&format!(
        "Send traffic:  ip netns exec {} curl http://{}/        (as root)\n",
        client.ns().name(),
        vip.v4
    ));
    text.push_str(&format!(
        "               ip netns exec {} curl 'http://[{}]/'\n",
        client.ns().name(),
        vip.v6
    ));
    text.push_str(&format!(
        "Request router: ip netns exec {} curl -i http://{}/   (HTTP, per-request routing, cookie affinity)\n",
        client.ns().name(),
        vip.v4_socket(cluster::ROUTER_PORT)
    ));
    text.push_str(&format!(
        "Dashboard:     http://{admin}/   (live host cards in a browser; `switchyard ctl watch` in a terminal)\n"
    ));
    text.push_str(&format!(
        "Admin API:     http://{admin}/v1/hosts   (also /v1/services, /v1/flows, /v1/allotments, /metrics)\n"
    ));
    text.push_str(&format!("               {ctl}\n"));
    text.push_str("Drain a host:  type d 2 and Enter (undrain: u 2; status: Enter; quit: q)\n");
    text.push_str(&format!(
        "Configuration: {}   logs: {}\n",
        cluster.config_path().display(),
        cluster.log_dir().display()
    ));
    if args.traffic {
        text.push_str(&format!(
            "Traffic:       {} requests/s from the client, a status line every {} s\n",
            args.rate,
            STATUS_EVERY.as_secs()
        ));
    } else {
        text.push_str("Traffic:       none generated (add --traffic)\n");
    }
    match args.duration {
        Some(d) => text.push_str(&format!(
            "Stop:          Ctrl-C or q (stops by itself after {})\n",
            switchyard_config::format_duration(d)
        )),
        None => text.push_str("Stop:          Ctrl-C or q; everything is removed\n"),
    }
    println!("{text}");
}

/// Not root: says what the demo needs and how to run it.
fn not_root(reason: &str) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".to_owned());
    println!("switchyard demo: the packet-path demo needs root: it creates network namespaces and");
    println!("loads the forwarder's BPF programs ({reason}).");
    println!();
    println!("Run it as root:");
    println!("  sudo {exe} demo --traffic");
    println!("  sudo cargo run --release -p switchyard -- demo --traffic   (from a checkout)");
    println!();
    println!("{}", router_only_shape());
}

/// The demo shape that needs no root: the request router alone on loopback in front of
/// demo hosts on loopback ports. It comes with the request router (crates/router); until
/// then this only says so. Hook: start `switchyard lb` with the router role and the demo
/// hosts on 127.0.0.1 here instead of returning the message.
fn router_only_shape() -> &'static str {
    "Without root, the demo will run the request router alone on loopback; that shape comes with the request router."
}
