//! The `switchyard` binary: one executable for every role of a switchyard cluster.
//!
//! Roles are chosen by subcommand and configuration, never by a different build. Each
//! subcommand lives in its own module under `commands/`; this file only parses the command
//! line and dispatches. Subcommands are added here as the parts they drive land.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// switchyard: a scale-out software network load balancer for Linux.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    sudo switchyard demo --traffic\n  \
    switchyard check-config examples/all-in-one.toml\n  \
    switchyard lb --config examples/all-in-one.toml --unit lb-1\n  \
    switchyard agent --config examples/all-in-one.toml --host web-1\n  \
    switchyard ctl hosts\n  \
    switchyard gen-secret --out /etc/switchyard/cluster.key")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try it: a load balancer in front of three built-in demo hosts, in network namespaces
    /// it creates (as root) or the request router alone on loopback (without root); with
    /// traffic, draining and a status line. Ctrl-C removes everything.
    Demo(commands::demo::DemoArgs),
    /// The demo's built-in host application (started by `switchyard demo`).
    #[command(hide = true)]
    DemoHost(commands::demo::host::DemoHostArgs),
    /// Run a load-balancing unit: the roles its configuration gives it.
    Lb(commands::lb::LbArgs),
    /// Run the host agent: health and load of this host's applications, reported to every
    /// load-balancing unit.
    Agent(commands::agent::AgentArgs),
    /// Inspect and steer a running cluster through a unit's admin API.
    Ctl(commands::ctl::CtlArgs),
    /// Validate configuration files and print every error with its file, line, field and a hint.
    ///
    /// Exits 0 when every file is valid, 1 when any file has errors.
    #[command(
        after_help = "Example:\n  switchyard check-config examples/all-in-one.toml examples/request-router.toml"
    )]
    CheckConfig {
        /// Configuration files (TOML) to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print nothing for valid files; only errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Generate a new random cluster secret (256 bits, hex) for `cluster.secret_file`.
    ///
    /// The secret keys the authentication tag on every control message of the cluster:
    /// every unit and host agent of one cluster must hold the same secret.
    #[command(after_help = "Example:\n  switchyard gen-secret --out /etc/switchyard/cluster.key")]
    GenSecret {
        /// Write the secret to this file (created with mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace the file if it already exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::DemoHost(args) => commands::demo::host::run(args),
        Command::Lb(args) => commands::lb::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Ctl(args) => commands::ctl::run(args),
        Command::CheckConfig { files, quiet } => commands::check_config::run(&files, quiet),
        Command::GenSecret { out, force } => commands::gen_secret::run(out.as_deref(), force),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("switchyard: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
