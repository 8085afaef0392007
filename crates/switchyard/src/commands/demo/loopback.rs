//! The demo without root: the request-router-only shape, on loopback. One `switchyard lb`
//! with the request router, health cache and session store roles in front of three
//! `switchyard demo-host` processes, each with its `switchyard agent`, all on 127.0.0.1 in the
//! demo's own network namespace: the production processes and configuration, without what
//! needs root (network namespaces, the forwarder's BPF program, the classifier).
//!
//! Ports: the router's listener and the admin API where the options say (a taken address is
//! an error naming the option; port 0 picks a free one); the unit's UDP control and session
//! ports are free ones reserved at start; the demo hosts and agents bind port 0 and say what
//! they got (the agents tell the unit in their heartbeats). The processes are children of the
//! demo, marked like testbed processes (`scripts/check-leftovers.sh` finds any left); their
//! logs, the configuration and the agents' sockets live in one temporary directory. All is
//! removed at the end, and by the drop guards on any error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use switchyard_testbed::{NAME_PREFIX, Netns, Process};

use super::generated::{self, ConfigDir};
use super::shape::{
    self, DemoHost, HOSTS, Pools, Shape, UNIT, agent_command, check_stop, demo_host_command,
    host_name, lb_command, listening, wait_ready,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Any free port on loopback.
const ANY_PORT: SocketAddr = SocketAddr::new(LOOPBACK, 0);

/// Where the user-facing parts listen (`--router`, `--admin`).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The request router's listener.
    pub router: SocketAddr,
    /// The unit's admin API and dashboard.
    pub admin: SocketAddr,
}

/// Addresses held until the unit binds them, so none is handed out twice.
#[derive(Debug)]
struct Reserved {
    router: TcpListener,
    admin: TcpListener,
    control: UdpSocket,
    sessions: UdpSocket,
}

impl Reserved {
    fn take(wanted: Addresses) -> anyhow::Result<Self> {
        let tcp = |addr: SocketAddr, what: &str, option: &str, example: &str| {
            TcpListener::bind(addr).with_context(|| {
                format!(
                    "cannot listen on {addr} for {what} (is another demo or program using it?): pick another address with {option} {example} (port 0: any free port)"
                )
            })
        };
        let udp = || UdpSocket::bind(ANY_PORT).context("cannot reserve a UDP port on 127.0.0.1");
        Ok(Self {
            router: tcp(
                wanted.router,
                "the request router",
                "--router",
                "127.0.0.1:8081",
            )?,
            admin: tcp(wanted.admin, "the admin API", "--admin", "127.0.0.1:9280")?,
            control: udp()?,
            sessions: udp()?,
        })
    }
}

/// The running loopback shape. Dropping it stops everything; [`Shape::shutdown`] does the
/// same and reports what could not be removed.
#[derive(Debug)]
pub struct Loopback {
    // Dropped in this order: processes, then the directory.
    hosts: Vec<DemoHost>,
    lb: Process,
    router: SocketAddr,
    admin: SocketAddr,
    control: SocketAddr,
    sessions: SocketAddr,
    logs: PathBuf,
    dir: ConfigDir,
}

impl Loopback {
    /// Starts every process on loopback and waits until the unit sees every host healthy.
    /// `stop` is checked between steps (a Ctrl-C during setup); `progress` is told what
    /// happens.
    pub fn start(
        exe: &Path,
        wanted: Addresses,
        stop: &AtomicBool,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<Self> {
        let reserved = Reserved::take(wanted)?;
        let local = |what: &str, addr: std::io::Result<SocketAddr>| {
            addr.with_context(|| format!("the reserved {what} address"))
        };
        let router = local("router", reserved.router.local_addr())?;
        let admin = local("admin", reserved.admin.local_addr())?;
        let control = local("control", reserved.control.local_addr())?;
        let sessions = local("session", reserved.sessions.local_addr())?;

        let dir = ConfigDir::create()?;
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        // Marked like a testbed's processes (`SWITCHYARD_TESTBED`), so that the leftover
        // checks find them.
        let marker = format!("{NAME_PREFIX}{:x}-loopback", std::process::id());
        let spawn = |label: &str, command: Vec<std::ffi::OsString>| {
            Process::spawn_here(command, &logs, label, &marker)
                .with_context(|| format!("cannot start {label}"))
        };

        // The applications first: the configuration names their ports.
        let mut apps = Vec::new();
        for n in 1..=HOSTS {
            check_stop(stop)?;
            progress(&format!("starting demo host {} on 127.0.0.1", host_name(n)));
            let app = spawn(
                &format!("demo-host-{n}"),
                demo_host_command(exe, n, &[ANY_PORT]),
            )?;
            let ready = wait_ready(
                &app,
                "demo-host ready",
                &format!("demo host {}", host_name(n)),
            )?;
            let endpoint = listening(&ready)?
                .first()
                .copied()
                .context("the demo host listens nowhere")?;
            apps.push((n, endpoint, app));
        }
        let hosts: Vec<(u32, String, SocketAddr)> = apps
            .iter()
            .zip(101..)
            .map(|((n, endpoint, _), id)| (id, host_name(*n), *endpoint))
            .collect();
        let config = dir.write_config(&config_text(router, admin, control, sessions, &hosts))?;

        check_stop(stop)?;
        progress(&format!("starting switchyard lb ({UNIT}) on 127.0.0.1"));
        drop(reserved);
        let lb = spawn("lb", lb_command(exe, &config, admin))?;
        wait_ready(&lb, "lb ready", "switchyard lb")?;

        let mut local_hosts = Vec::new();
        for (n, endpoint, app) in apps {
            check_stop(stop)?;
            progress(&format!("starting switchyard agent for {}", host_name(n)));
            let socket = dir.path().join(format!("agent-{n}.sock"));
            let agent = spawn(
                &format!("agent-{n}"),
                agent_command(
                    exe,
                    &config,
                    n,
                    Pools::V4,
                    ANY_PORT,
                    Some(ANY_PORT),
                    &socket,
                ),
            )?;
            wait_ready(
                &agent,
                "agent ready",
                &format!("the agent of {}", host_name(n)),
            )?;
            local_hosts.push(DemoHost {
                number: n,
                endpoints: vec![endpoint],
                socket,
                app,
                agent,
            });
        }

        progress("waiting until the load balancer sees every host healthy");
        shape::wait_healthy(Pools::V4, stop, &logs, || shape::unit_hosts_blocking(admin))?;
        Ok(Self {
            hosts: local_hosts,
            lb,
            router,
            admin,
            control,
            sessions,
            logs,
            dir,
        })
    }

    /// Where the unit's admin API and dashboard listen.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }
}

impl Shape for Loopback {
    fn pools(&self) -> Pools {
        Pools::V4
    }

    fn lb(&self) -> &Process {
        &self.lb
    }

    fn hosts(&self) -> &[DemoHost] {
        &self.hosts
    }

    fn traffic(&self) -> (Option<Netns>, Vec<SocketAddr>) {
        (None, vec![self.router])
    }

    fn banner(&self) -> String {
        let mut text = String::new();
        text.push_str(
            "\nswitchyard demo is running the request-router-only shape on loopback (not root). Processes:\n",
        );
        text.push_str(&format!(
            "  {:<22} pid {:<7} request router on {}, health cache on UDP {}, session store on UDP {}\n",
            format!("switchyard lb ({UNIT})"),
            self.lb.pid(),
            self.router,
            self.control,
            self.sessions
        ));
        for h in &self.hosts {
            let endpoints: Vec<String> = h.endpoints.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                "  {:<22} pid {:<7} demo host on {}; its switchyard agent: pid {}\n",
                h.name(),
                h.app.pid(),
                endpoints.join(" and "),
                h.agent.pid()
            ));
        }
        text.push_str(&format!(
            "\nRequest router: curl -i http://{}/   (HTTP, per-request routing, cookie affinity)\n",
            self.router
        ));
        text
    }

    fn config_path(&self) -> PathBuf {
        self.dir.config_path()
    }

    fn log_dir(&self) -> &Path {
        &self.logs
    }

    fn shutdown(self: Box<Self>) -> anyhow::Result<&'static str> {
        let Self { hosts, lb, dir, .. } = *self;
        shape::stop_processes(hosts, lb);
        dir.remove()?;
        Ok("removed the demo's processes and its temporary directory")
    }
}

/// The generated configuration: one unit with the request router, session store and health
/// cache on loopback, service `web-l7` on the router's listener, pool `web` of the demo hosts.
fn config_text(
    router: SocketAddr,
    admin: SocketAddr,
    control: SocketAddr,
    sessions: SocketAddr,
    hosts: &[(u32, String, SocketAddr)],
) -> String {
    let mut text = generated::header("all on loopback (the request-router-only shape)");
    text.push_str(&format!(
        r#"
[[cluster.units]]
name = "{UNIT}"
id = 1
address = "{LOOPBACK}"
roles = ["router", "session-store", "health-cache"]
control_port = {control_port}
admin = "{admin}"

[sessions]
port = {session_port}

# The request router terminates HTTP on {router} and routes each request; a cookie keeps a
# browser on one host.
[[listeners]]
name = "web-http"
address = "{router}"
protocol = "http"

[[services]]
name = "web-l7"
vip = "{router}"
protocol = "tcp"
mode = "request"
listener = "web-http"
pool = "web"
affinity = {{ kind = "cookie", cookie = "DEMO", timeout = "10m" }}
"#,
        control_port = control.port(),
        session_port = sessions.port(),
    ));
    text.push_str(generated::HEALTH);
    generated::pool(&mut text, "web", hosts);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn the_generated_configuration_is_valid() {
        let dir = ConfigDir::create().expect("directory");
        let hosts: Vec<_> = (1..=HOSTS)
            .zip(101..)
            .map(|(n, id)| {
                (
                    id,
                    host_name(n),
                    SocketAddr::new(LOOPBACK, 40000 + n as u16),
                )
            })
            .collect();
        let text = config_text(
            addr("127.0.0.1:8080"),
            addr("127.0.0.1:9180"),
            addr("127.0.0.1:41000"),
            addr("127.0.0.1:41001"),
            &hosts,
        );
        let path = dir.write_config(&text).expect("valid");
        let config = switchyard_config::load_file(&path).expect("loads");
        let unit = config.unit(UNIT).expect("the unit");
        assert_eq!(unit.control_addr(), addr("127.0.0.1:41000"));
        assert_eq!(config.sessions.port, 41001);
        assert_eq!(config.listeners[0].address, addr("127.0.0.1:8080"));
        assert_eq!(config.pools[0].hosts.len(), HOSTS);
        dir.remove().expect("removed");
    }

    #[test]
    fn a_taken_address_names_the_option_to_change() {
        let taken = TcpListener::bind(ANY_PORT).expect("bind");
        let wanted = Addresses {
            router: taken.local_addr().expect("addr"),
            admin: ANY_PORT,
        };
        let error = format!("{:#}", Reserved::take(wanted).expect_err("taken"));
        assert!(error.contains("--router"), "{error}");
        let wanted = Addresses {
            router: ANY_PORT,
            admin: taken.local_addr().expect("addr"),
        };
        let error = format!("{:#}", Reserved::take(wanted).expect_err("taken"));
        assert!(error.contains("--admin"), "{error}");
    }
}
