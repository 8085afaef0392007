//! `packet-bench`: the namespace part of `bench/packet.sh` (packet load
//! balancing: direct, switchyard at each attach point, nftables DNAT and
//! HAProxy on one topology). Needs root for the namespaces and nginx, wrk,
//! iperf3 and haproxy. Prints Markdown for docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_bench::packet::{self, Lb, Options};
use switchyard_testbed::Testbed;

/// Requests/s, new connections/s, bulk throughput, latency, CPU per request
/// and memory per flow of switchyard against direct, nftables and HAProxy.
#[derive(Debug, Parser)]
struct Args {
    /// The switchyard binary to measure (a release build).
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// 2 s windows and one repeat (about two minutes).
    #[arg(long)]
    quick: bool,
    /// Seconds per measurement (default 10; --quick 2).
    #[arg(long)]
    seconds: Option<u64>,
    /// Repeats of the whole sequence; the report gives medians (default 3; --quick 1).
    #[arg(long)]
    repeats: Option<usize>,
    /// Connections per wrk process (three processes; default 16).
    #[arg(long)]
    connections: Option<usize>,
    /// Configurations, comma separated: direct, tc, xdp+tc, xdp, nftables, haproxy
    /// (default: all, in that order).
    #[arg(long, value_delimiter = ',')]
    configs: Option<Vec<Lb>>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut opts = if args.quick {
        Options::quick(args.switchyard.clone())
    } else {
        Options::full(args.switchyard.clone())
    };
    if let Some(s) = args.seconds {
        opts.window = Duration::from_secs(s.max(1));
    }
    opts.repeats = args.repeats.unwrap_or(opts.repeats).max(1);
    opts.connections = args.connections.unwrap_or(opts.connections).max(1);
    if let Some(c) = args.configs {
        opts.configs = c;
    }
    println!(
        "switchyard: {}; {} CPUs; kernel {}\n",
        opts.switchyard.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let tb = Testbed::new("packet benchmark")
        .context("the benchmark needs network namespaces (run as root)")?;
    let report = packet::run(&tb, &opts);
    tb.teardown()?;
    println!("{}", report?.markdown());
    Ok(())
}
