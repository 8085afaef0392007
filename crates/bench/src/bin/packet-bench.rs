//! `packet-bench`: the namespace part of `bench/packet.sh` (packet load
//! balancing: direct, switchyard at each attach point, nftables DNAT and
//! HAProxy on one topology). Needs root for the namespaces and nginx, wrk,
//! iperf3 and haproxy. Prints Markdown for docs/BENCHMARKS.md.

use anyhow::Result;
use clap::Parser;
use switchyard_bench::bed::{RunArgs, in_testbed};
use switchyard_bench::packet::{self, Lb, Options};

/// Requests/s, new connections/s, bulk throughput, latency, CPU per request
/// and memory per flow of switchyard against direct, nftables and HAProxy.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Configurations, comma separated: direct, tc, xdp+tc, xdp, nftables, haproxy
    /// (default: all, in that order).
    #[arg(long, value_delimiter = ',')]
    configs: Option<Vec<Lb>>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let switchyard = args.run.switchyard.clone();
    let mut opts = if args.run.quick {
        Options::quick(switchyard)
    } else {
        Options::full(switchyard)
    };
    args.run
        .apply(&mut opts.window, &mut opts.repeats, &mut opts.connections);
    if let Some(c) = args.configs {
        opts.configs = c;
    }
    println!(
        "switchyard: {}; {}\n",
        opts.switchyard.display(),
        switchyard_bench::machine()
    );
    let report = in_testbed("packet benchmark", |tb| packet::run(tb, &opts))?;
    println!("{}", report.markdown());
    Ok(())
}
