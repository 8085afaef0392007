//! `router-bench`: the namespace benchmark of `bench/router.sh` (request routing: direct,
//! switchyard's router, HAProxy `mode http` and nginx `proxy_pass` on one topology).
//! Needs root for the namespaces and nginx, wrk, haproxy and openssl. Prints Markdown for
//! docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_bench::router::{self, Metric, Options, Proxy};
use switchyard_testbed::Testbed;

/// Keep-alive requests/s (1 KiB, 64 KiB), new connections/s, TLS handshakes/s, latency,
/// CPU per request and memory per idle connection of switchyard's request router against
/// direct, HAProxy and nginx.
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
    /// Idle keep-alive connections for the memory figure (default 2000; --quick 500; 0: skip).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Configurations, comma separated: direct, switchyard, haproxy, nginx (default: all).
    #[arg(long, value_delimiter = ',')]
    configs: Option<Vec<Proxy>>,
    /// Metrics, comma separated: keep-alive-1k, keep-alive-64k, new-connections, tls
    /// (default: all).
    #[arg(long, value_delimiter = ',', value_parser = metric)]
    metrics: Option<Vec<Metric>>,
}

fn metric(s: &str) -> Result<Metric, String> {
    Ok(match s {
        "keep-alive-1k" => Metric::KeepAlive1k,
        "keep-alive-64k" => Metric::KeepAlive64k,
        "new-connections" => Metric::NewConnections,
        "tls" => Metric::TlsHandshakes,
        other => {
            return Err(format!(
                "unknown metric {other:?} (keep-alive-1k, keep-alive-64k, new-connections, tls)"
            ));
        }
    })
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
    opts.idle_connections = args.idle_connections.unwrap_or(opts.idle_connections);
    if let Some(c) = args.configs {
        opts.configs = c;
    }
    if let Some(m) = args.metrics {
        opts.metrics = m;
    }
    println!(
        "switchyard: {}; {} CPUs; kernel {}\n",
        opts.switchyard.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let tb = Testbed::new("router benchmark")
        .context("the benchmark needs network namespaces (run as root)")?;
    let report = router::run(&tb, &opts);
    tb.teardown()?;
    println!("{}", report?.markdown());
    Ok(())
}
