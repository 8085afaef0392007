//! `switchyard lb`: runs a load-balancing unit.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `switchyard lb`.
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// Cluster configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Name of this unit in `cluster.units`.
    #[arg(long, value_name = "NAME")]
    pub unit: String,
}

/// Runs the unit until interrupted.
pub fn run(args: LbArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("switchyard lb is not built yet (unit {})", args.unit)
}
