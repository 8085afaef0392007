//! Running a demo, whichever its shape: the setup on a thread of its own (a signal stops it
//! at its next step), the banner, the traffic generator, console commands, a status line
//! every 2 s, the supervision of the processes, and on every way out (Ctrl-C, SIGTERM, `q`,
//! `--duration`, a process that stopped) the summary and the shape's cleanup.

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
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use super::DemoArgs;
use super::console::{self, Command};
use super::shape::{self, Shape, Supervisor, host_name};
use super::traffic::{Tally, Traffic};

/// How often the status line is printed (and processes are checked).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Time limit of the demo's own admin API and agent API requests.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// SIGINT and SIGTERM, handled from the start: from then on they stop the demo through its
/// cleanup.
#[derive(Debug)]
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Starts handling both.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// The next one, by name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// A shape's blocking start: told to stop (checked between steps) and where to report
/// progress.
pub type Start<S> = Box<dyn FnOnce(&AtomicBool, &dyn Fn(&str)) -> anyhow::Result<S> + Send>;

/// Runs `start` on a thread of its own, printing its steps. A signal meanwhile tells it to
/// stop at its next step; its drop guards remove what it had made. `None`: a signal stopped
/// it.
pub async fn set_up<S: Shape>(signals: &mut Signals, start: Start<S>) -> anyhow::Result<Option<S>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut setup = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        move || start(&stop, &|step| println!("  {step}"))
    });
    let joined = tokio::select! {
        joined = &mut setup => joined,
        name = signals.recv() => {
            println!("{name}: stopping after the current step");
            stop.store(true, Ordering::SeqCst);
            let joined = setup.await;
            if let Ok(Ok(shape)) = joined {
                // It finished just as the signal came.
                let _ = tokio::task::spawn_blocking(move || Box::new(shape).shutdown()).await;
                println!("stopped during setup; everything is removed");
                return Ok(None);
            }
            joined
        }
    };
    match joined.context("the setup thread failed")? {
        Ok(shape) => Ok(Some(shape)),
        Err(_) if stop.load(Ordering::SeqCst) => {
            println!("stopped during setup; everything is removed");
            Ok(None)
        }
        Err(e) => Err(e.context("the demo could not start; everything is removed")),
    }
}

/// Why the demo stopped.
#[derive(Debug)]
enum Stop {
    Signal(&'static str),
    Quit,
    Duration,
    ProcessStopped(String),
}

/// Runs a started demo until it is stopped, then cleans up. `admin` is where its unit's
/// admin API answers from here; `exe` is the switchyard executable (for the banner).
pub async fn run(
    shape: Box<dyn Shape>,
    admin: SocketAddr,
    exe: &Path,
    args: &DemoArgs,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    println!("{}", banner(shape.as_ref(), admin, exe, args));
    let traffic = args.traffic.then(|| {
        let (ns, targets) = shape.traffic();
        Traffic::start(ns, targets, args.rate)
    });
    let pools = shape.pools();
    let started_at = Instant::now();
    let deadline = args.duration.map(|d| started_at + d);
    let mut commands = console::commands();
    let mut stdin_open = true;
    let mut ticker = tokio::time::interval_at(started_at + STATUS_EVERY, STATUS_EVERY);
    let mut supervisor = Supervisor::default();
    let mut last_states = String::new();
    let status = |tally: Option<&Tally>, hosts: &Result<HostsResponse, String>| {
        console::status_line(
            started_at.elapsed().as_secs(),
            tally,
            hosts.as_ref().map_err(String::as_str),
            pools,
        )
    };

    let stop = loop {
        tokio::select! {
            name = signals.recv() => break Stop::Signal(name),
            () = sleep_until(deadline) => break Stop::Duration,
            command = commands.recv(), if stdin_open => match command {
                None => stdin_open = false,
                Some(Command::Quit) => break Stop::Quit,
                Some(Command::Help) => println!("{}", console::HELP),
                Some(Command::Status) => {
                    let hosts = unit_hosts(admin).await;
                    let tally = traffic.as_ref().map(Traffic::tally);
                    println!("{}", status(tally.as_ref(), &hosts));
                }
                Some(Command::Drain(n)) => directive(shape.as_ref(), n, "drain").await,
                Some(Command::Undrain(n)) => directive(shape.as_ref(), n, "undrain").await,
            },
            _ = ticker.tick() => {
                if let Some(stop) = supervise(&mut supervisor, shape.as_ref(), args.keep_going) {
                    break stop;
                }
                let hosts = unit_hosts(admin).await;
                let tally = traffic.as_ref().map(Traffic::tally);
                let line = status(tally.as_ref(), &hosts);
                // Without traffic, only changes are worth a line.
                let states = status(None, &hosts);
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
    let failure = match stop {
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
        Stop::ProcessStopped(what) => Some(what),
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
    let removed = tokio::task::spawn_blocking(move || shape.shutdown())
        .await
        .context("the cleanup panicked")??;
    println!("{removed}");
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(what) => bail!("{what} (see its log above; --keep-going keeps the demo running)"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reports processes that exited by themselves; says whether the demo must stop.
fn supervise(supervisor: &mut Supervisor, shape: &dyn Shape, keep_going: bool) -> Option<Stop> {
    for exited in supervisor.exited(&shape::processes(shape)) {
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

/// Sets host `n`'s target (`drain` or `undrain`) for each of its rows through its agent's
/// local API (a Unix socket, reachable from here by its path).
async fn directive(shape: &dyn Shape, n: usize, action: &str) {
    let Some(host) = shape.hosts().iter().find(|h| h.number == n) else {
        eprintln!("no host {n}");
        return;
    };
    let target = ApiTarget::Unix(host.socket.clone());
    for name in shape.pools().names(n) {
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

/// The shape's banner followed by what both shapes offer alike.
fn banner(shape: &dyn Shape, admin: SocketAddr, exe: &Path, args: &DemoArgs) -> String {
    let ctl = if admin.to_string() == "127.0.0.1:9180" {
        format!("{} ctl hosts", exe.display())
    } else {
        format!("{} ctl --unit {admin} hosts", exe.display())
    };
    let mut text = shape.banner();
    text.push_str(&format!(
        "Dashboard:     http://{admin}/   (live host cards in a browser; `switchyard ctl watch` in a terminal)\n"
    ));
    text.push_str(&format!(
        "Admin API:     http://{admin}/v1/hosts   (also /v1/services, /v1/allotments, /metrics)\n"
    ));
    text.push_str(&format!("               {ctl}\n"));
    text.push_str("Drain a host:  type d 2 and Enter (undrain: u 2; status: Enter; quit: q)\n");
    text.push_str(&format!(
        "Configuration: {}   logs: {}\n",
        shape.config_path().display(),
        shape.log_dir().display()
    ));
    if args.traffic {
        let (_, targets) = shape.traffic();
        let targets: Vec<String> = targets.iter().map(|t| format!("http://{t}/")).collect();
        text.push_str(&format!(
            "Traffic:       {} requests/s to {} (a new connection each), a status line every {} s\n",
            args.rate,
            targets.join(" and "),
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
    text
}
