//! `switchyard agent`: runs the host agent (the daemon lives in `switchyard_agent::daemon`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_agent::daemon::{AgentOptions, RunArgs};

/// Arguments of `switchyard agent`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    switchyard agent --config /etc/switchyard/switchyard.toml --host web-1\n  \
    switchyard agent --config switchyard.toml --host web-1 --host web-2   (proxy agent)\n  \
    curl --unix-socket /run/switchyard/agent.sock http://agent/v1/hosts\n\n\
    The local API is documented in docs/AGENT.md.")]
pub struct AgentArgs {
    /// Cluster configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Name of a host in `pools.hosts` this agent reports for (repeat for a proxy agent).
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
    /// UDP address to receive LB units' messages on (overrides `[agent] listen`). A proxy
    /// agent's further hosts use ephemeral ports on the same address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Loopback address of the local HTTP API (overrides `[agent] api`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub api: Option<SocketAddr>,
    /// Unix socket of the local API (overrides `[agent] socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log filter such as `info`, `debug` or `switchyard_agent=debug` (default: `RUST_LOG`,
    /// else `info`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    switchyard_agent::daemon::run(RunArgs {
        config: args.config,
        options: AgentOptions {
            hosts: args.hosts,
            listen: args.listen,
            api: args.api,
            socket: args.socket,
            ..AgentOptions::default()
        },
        log_level: args.log_level,
    })
}
