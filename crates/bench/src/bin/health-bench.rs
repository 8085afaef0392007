//! `health-bench`: the namespace part of `bench/health.sh` (propagation
//! latency and control bandwidth of the health and load protocol). Needs
//! root for the namespaces. Prints Markdown for docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use switchyard_bench::bed::in_testbed;
use switchyard_bench::health::{self, CheckTiming, Options};

/// Propagation latency and control bandwidth of switchyard's health and
/// load protocol, on real processes in network namespaces.
#[derive(Debug, Parser)]
struct Args {
    /// The switchyard binary to measure (a release build).
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// Small counts and short windows (about half a minute).
    #[arg(long)]
    quick: bool,
    /// Hosts in the latency topology.
    #[arg(long)]
    hosts: Option<usize>,
    /// Health flips through the agent's local API.
    #[arg(long)]
    flips: Option<usize>,
    /// Health changes found by the TCP check.
    #[arg(long)]
    check_flips: Option<usize>,
    /// TCP check interval in ms (default 2000, the documented default).
    #[arg(long)]
    check_interval_ms: Option<u64>,
    /// Rows of the host in the bandwidth benchmark.
    #[arg(long)]
    rows: Option<usize>,
    /// Length of each bandwidth window in seconds.
    #[arg(long)]
    seconds: Option<u64>,
    /// Only the latency benchmark.
    #[arg(long, conflicts_with = "only_bandwidth")]
    only_latency: bool,
    /// Only the bandwidth benchmark.
    #[arg(long)]
    only_bandwidth: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut opts = if args.quick {
        Options::quick(args.switchyard.clone())
    } else {
        Options::full(args.switchyard.clone())
    };
    opts.hosts = args.hosts.unwrap_or(opts.hosts);
    opts.flips = args.flips.unwrap_or(opts.flips);
    opts.check_flips = args.check_flips.unwrap_or(opts.check_flips);
    opts.rows = args.rows.unwrap_or(opts.rows);
    if let Some(s) = args.seconds {
        opts.window = Duration::from_secs(s);
    }
    if let Some(ms) = args.check_interval_ms {
        opts.check = CheckTiming {
            interval_ms: ms,
            timeout_ms: ms / 2,
            ..opts.check
        };
    }
    println!(
        "switchyard: {}; {}\n",
        opts.switchyard.display(),
        switchyard_bench::machine()
    );
    if !args.only_bandwidth {
        let latency = in_testbed("health latency benchmark", |tb| health::latency(tb, &opts))?;
        println!("{}", latency.markdown());
    }
    if !args.only_latency {
        let bandwidth = in_testbed("health bandwidth benchmark", |tb| {
            health::bandwidth(tb, &opts)
        })?;
        println!("{}", bandwidth.markdown());
    }
    Ok(())
}
