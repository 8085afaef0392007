//! `switchyard agent`: runs the host agent.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `switchyard agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Cluster configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Name of a host in `pools.hosts` this agent reports for (repeat for a proxy agent).
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
}

/// Runs the agent until interrupted.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("switchyard agent is not built yet (hosts {:?})", args.hosts)
}
