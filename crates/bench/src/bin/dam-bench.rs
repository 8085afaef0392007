//! `dam-bench`: the DAM benchmark of `bench/dam.sh` (add and query
//! throughput and latency, memory per atom, time to restore the replication
//! level after a unit dies) on three in-process machines. Prints Markdown
//! for docs/BENCHMARKS.md. Needs no root.

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use switchyard_bench::dam::{self, Options};

/// Add and query throughput and latency, memory per atom and recovery time
/// of switchyard's DAM: three machines (replication level 1) joined by an
/// in-process network that seals and opens every message as a wire frame,
/// driven in real time on one thread.
#[derive(Debug, Parser)]
struct Args {
    /// Small counts (20,000 atoms; a few seconds).
    #[arg(long)]
    quick: bool,
    /// Atoms added (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    atoms: Option<usize>,
    /// Operations issued before the network is drained, in the batched
    /// parts of the add and remote-query phases.
    #[arg(long)]
    batch: Option<usize>,
    /// Adds and remote queries timed one at a time.
    #[arg(long)]
    latency_samples: Option<usize>,
    /// Queries of each kind (owner hit, remote, cache hit).
    #[arg(long)]
    queries: Option<usize>,
    /// Longest time any phase may take, in seconds.
    #[arg(long)]
    phase_limit: Option<u64>,
    /// The machines' `pace_pushes` (re-replication pushes per batch;
    /// default 512).
    #[arg(long)]
    pace_pushes: Option<usize>,
    /// The machines' `pace_scan` (atoms re-evaluated per batch; default
    /// 4,096).
    #[arg(long)]
    pace_scan: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut opts = if args.quick {
        Options::quick()
    } else {
        Options::full()
    };
    opts.atoms = args.atoms.unwrap_or(opts.atoms);
    opts.batch = args.batch.unwrap_or(opts.batch);
    opts.latency_samples = args.latency_samples.unwrap_or(opts.latency_samples);
    opts.queries = args.queries.unwrap_or(opts.queries);
    if let Some(s) = args.phase_limit {
        opts.phase_limit = Duration::from_secs(s);
    }
    let pacing = &mut opts.settings;
    pacing.pace_pushes = args.pace_pushes.unwrap_or(pacing.pace_pushes);
    pacing.pace_scan = args.pace_scan.unwrap_or(pacing.pace_scan);
    println!(
        "{}; load average {}\n",
        switchyard_bench::machine(),
        switchyard_bench::loadavg()
    );
    let report = dam::run(&opts)?;
    println!("{}", report.markdown());
    Ok(())
}
