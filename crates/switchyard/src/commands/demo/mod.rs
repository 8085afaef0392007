//! `switchyard demo`: the embedded default, on one machine, in one of two shapes. Both start
//! the production processes from the current executable with a generated configuration —
//! `switchyard lb`, and per demo host the built-in application (`switchyard demo-host`) with
//! `switchyard agent` — so only the hosts are built in. Both print where to send requests
//! and the dashboard's address, can generate traffic (`--traffic`), take `d N` / `u N` / `q`
//! on stdin, print status lines and a summary, and remove everything when they stop
//! (Ctrl-C, SIGTERM, `q`, `--duration`, or an error).
//!
//! - As root ([`cluster`]): network namespaces (client — router — one LB unit — three
//!   hosts), a unit with every role (forwarder, classifier, request router, session store,
//!   health cache), its admin API relayed to loopback ([`relay`]).
//! - Without root ([`loopback`]): the request-router-only shape, all on 127.0.0.1: a unit
//!   with the request router, session store and health cache. It says so, and what root
//!   adds.
//!
//! Layout: [`shape`] (what the shapes share: names, command lines, supervision),
//! [`generated`] (the configuration's directory and common parts), [`drive`] (setup,
//! console loop, cleanup), [`console`] (commands, status and summary lines), [`traffic`]
//! (the load generator), [`host`] (the demo application).

mod cluster;
mod console;
mod drive;
mod generated;
pub mod host;
mod loopback;
mod relay;
mod shape;
mod traffic;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use switchyard_testbed::Testbed;

use cluster::Cluster;
use drive::Signals;
use loopback::{Addresses, Loopback};
use shape::HOSTS;
use traffic::MAX_RATE;

/// Arguments of `switchyard demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Two shapes, chosen by who runs it:\n\n\
    As root: the whole load balancer in network namespaces (named sy-<pid>-<n>-<role>): a \
    client, a router, one LB unit with every role (the forwarder's XDP/tc program, the \
    classifier, the request router, the session store, the health cache) and three demo hosts \
    with their agents, IPv4 and IPv6. Nothing is added to the machine's own network namespace \
    except the admin relay on loopback.\n\n\
    Without root: the request-router-only shape, all on 127.0.0.1: one `switchyard lb` with \
    the request router, session store and health cache (admin API and dashboard on --admin, \
    router on --router), three demo hosts and their agents on free loopback ports. It says \
    so when it starts.\n\n\
    Either way everything is removed when it stops. Console (type on stdin, then Enter): \
    d N drains host N, u N undrains it, Enter prints the status, q quits.\n\n\
    Examples:\n  \
    sudo switchyard demo --traffic                  (as root: namespaces, packet path)\n  \
    sudo switchyard demo --traffic --rate 50 --duration 1m\n  \
    sudo switchyard demo --admin 127.0.0.1:9280\n  \
    sudo cargo run --release -p switchyard -- demo --traffic   (from a checkout)\n  \
    switchyard demo --traffic                       (without root: router on 127.0.0.1:8080)\n  \
    switchyard demo --traffic --router 127.0.0.1:0 --admin 127.0.0.1:0   (any free ports)\n  \
    cargo run --release -p switchyard -- demo --traffic   (from a checkout, without root)\n\n\
    While it runs, in another terminal:\n  \
    switchyard ctl hosts\n  \
    curl -s 127.0.0.1:9180/v1/services\n  \
    curl -i http://127.0.0.1:8080/                  (without root: through the router)\n  \
    sudo ip netns exec <client namespace> curl http://198.19.0.10/   (as root: the VIP)")]
pub struct DemoArgs {
    /// Generate traffic: GET /, one new connection per request, counted per answering host,
    /// with a status line every 2 s. As root from the client namespace to the VIPs (packet
    /// path); without root to the request router.
    #[arg(long)]
    pub traffic: bool,
    /// Requests per second with --traffic (1-200).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    pub rate: u32,
    /// Stop by itself after this long (e.g. 30s, 5m); default: until Ctrl-C or `q`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Loopback address of the unit's admin API and dashboard (as root: relayed there from
    /// the unit's namespace); port 0 picks a free one.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9180", value_parser = parse_loopback)]
    pub admin: SocketAddr,
    /// Without root: loopback address of the request router's HTTP listener; port 0 picks a
    /// free one. (As root the router listens on the VIP's port 8080 in the namespaces.)
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080", value_parser = parse_loopback)]
    pub router: SocketAddr,
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

fn parse_loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP:PORT address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the demo's admin API has no authentication and its router no limits for the open network, so both stay on loopback (e.g. 127.0.0.1:9180)"
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

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Signals first: from here on Ctrl-C and SIGTERM stop the demo through its cleanup.
    let mut signals = Signals::new()?;
    let exe = std::env::current_exe().context("cannot find the switchyard executable")?;
    match Testbed::new("switchyard demo") {
        Ok(tb) => {
            let listener = tokio::net::TcpListener::bind(args.admin)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the admin relay (a unit already running here? pick another address with --admin 127.0.0.1:9280)",
                        args.admin
                    )
                })?;
            let admin = listener.local_addr().context("the admin relay's address")?;
            println!("switchyard demo: starting a load balancer in front of {HOSTS} demo hosts");
            let start = Box::new({
                let exe = exe.clone();
                move |stop: &_, progress: &dyn Fn(&str)| Cluster::start(tb, &exe, stop, progress)
            });
            let Some(mut cluster) = drive::set_up(&mut signals, start).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let unit = cluster.topo().lb_unit(0).ns().clone();
            cluster.attach_relay(relay::start(listener, unit, cluster::LB_ADMIN));
            drive::run(Box::new(cluster), admin, &exe, &args, &mut signals).await
        }
        Err(switchyard_testbed::Error::Unavailable { reason }) => {
            print_loopback_shape(&reason);
            let wanted = Addresses {
                router: args.router,
                admin: args.admin,
            };
            let start = Box::new({
                let exe = exe.clone();
                move |stop: &_, progress: &dyn Fn(&str)| {
                    Loopback::start(&exe, wanted, stop, progress)
                }
            });
            let Some(demo) = drive::set_up(&mut signals, start).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let admin = demo.admin();
            drive::run(Box::new(demo), admin, &exe, &args, &mut signals).await
        }
        Err(e) => Err(e).context("cannot prepare the demo's namespaces"),
    }
}

/// Not root (or no namespaces): says which shape runs instead, and what root adds.
fn print_loopback_shape(reason: &str) {
    use std::os::unix::fs::MetadataExt as _;
    // The testbed's reason ends with advice for tests; the demo gives its own.
    let reason = reason.split("; ").next().unwrap_or(reason);
    // Root without namespaces (a container, no iproute2) ends up here too.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let why = if root {
        "no network namespaces"
    } else {
        "not root"
    };
    println!("switchyard demo: {why}, so it runs the request-router-only shape on loopback:");
    println!("  one `switchyard lb` with the request router, health cache and session store, in");
    println!("  front of {HOSTS} demo hosts with their agents, all on 127.0.0.1.");
    println!("  Network namespaces are not available here: {reason}.");
    println!(
        "  As root it runs the whole load balancer instead: network namespaces (client, router,"
    );
    println!("  LB unit, hosts) and the packet path (the forwarder's XDP/tc program and the");
    println!("  classifier, balancing TCP connections to VIPs, IPv4 and IPv6):");
    println!("    sudo switchyard demo --traffic");
    println!("    sudo cargo run --release -p switchyard -- demo --traffic   (from a checkout)");
}
