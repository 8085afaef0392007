//! `switchyard ctl`: inspects a running cluster through a unit's admin API.

use std::process::ExitCode;

/// Arguments of `switchyard ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin API address of the unit to ask.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9180")]
    pub unit: String,
}

/// Runs one ctl command.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("switchyard ctl is not built yet (unit {})", args.unit)
}
