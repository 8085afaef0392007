//! `switchyard lb`: runs a load-balancing unit — the roles its configuration
//! gives it (today the health-cache role) and its admin API — until SIGTERM
//! or SIGINT, then exits 0. Logs go to standard error; the line `lb ready`
//! (with the bound `control=` and `admin=` addresses) says it listens.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use switchyard_lb::{RunningUnit, UnitOptions};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Arguments of `switchyard lb`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    switchyard lb --config /etc/switchyard/cluster.toml --unit lb-1\n  \
    switchyard lb --config cluster.toml --unit lb-1 --control 127.0.0.1:0 --admin 127.0.0.1:0 --log-level debug")]
pub struct LbArgs {
    /// Cluster configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Name of this unit in `cluster.units`.
    #[arg(long, value_name = "NAME")]
    pub unit: String,
    /// Admin API address instead of the unit's `admin` (loopback only without
    /// --admin-token-file; port 0 picks one).
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// File holding the admin API's bearer token (at least 16 characters, e.g. from
    /// `switchyard gen-secret`): every request must then send `Authorization: Bearer
    /// <token>`, and the admin API may listen on a non-loopback address.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Health and load control address (UDP) instead of the unit's `address` and
    /// `control_port` (port 0 picks one).
    #[arg(long, value_name = "IP:PORT")]
    pub control: Option<SocketAddr>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter such as
    /// `info,switchyard_lb=debug`; RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The tracing filter for `--log-level`. At `info` the health core's own lines are
/// limited to warnings, because the unit logs every change itself with host names.
fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    if let Ok(env) = std::env::var("RUST_LOG")
        && !env.is_empty()
    {
        return EnvFilter::try_new(&env).with_context(|| format!("invalid RUST_LOG {env:?}"));
    }
    let directives = if level.eq_ignore_ascii_case("info") {
        "info,switchyard_health=warn".to_owned()
    } else {
        level.to_owned()
    };
    EnvFilter::try_new(&directives).with_context(|| {
        format!(
            "invalid --log-level {level:?}: use error, warn, info, debug, trace or a tracing filter"
        )
    })
}

/// Runs the unit until interrupted.
pub fn run(args: LbArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(filter(&args.log_level)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = switchyard_config::load_file(&args.config).map_err(|diagnostics| {
        anyhow::anyhow!(
            "{} is not a valid configuration (check it with `switchyard check-config`):\n{diagnostics}",
            args.config.display()
        )
    })?;
    let token = args
        .admin_token_file
        .as_deref()
        .map(switchyard_lb::admin::auth::AdminToken::from_file)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let options = UnitOptions {
            unit: args.unit.clone(),
            admin: args.admin,
            control: args.control,
        };
        let unit = RunningUnit::start_with_admin_token(&config, options, token)
            .await
            .with_context(|| format!("cannot start unit {}", args.unit))?;
        let signal_name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = signal_name, "stopping");
        unit.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
