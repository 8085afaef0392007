//! `router-bench`: the namespace benchmark of `bench/router.sh` (request routing: direct,
//! switchyard's router, HAProxy `mode http` and nginx `proxy_pass` on one topology).
//! Needs root for the namespaces and nginx, wrk, haproxy and openssl. Prints Markdown for
//! docs/BENCHMARKS.md.

use anyhow::Result;
use clap::Parser;
use switchyard_bench::bed::{RunArgs, in_testbed};
use switchyard_bench::router::{self, Metric, Options, Proxy};

/// Keep-alive requests/s (1 KiB, 64 KiB), new connections/s, TLS handshakes/s, latency,
/// CPU per request and memory per idle connection of switchyard's request router against
/// direct, HAProxy and nginx.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
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
    let switchyard = args.run.switchyard.clone();
    let mut opts = if args.run.quick {
        Options::quick(switchyard)
    } else {
        Options::full(switchyard)
    };
    args.run
        .apply(&mut opts.window, &mut opts.repeats, &mut opts.connections);
    opts.idle_connections = args.idle_connections.unwrap_or(opts.idle_connections);
    if let Some(c) = args.configs {
        opts.configs = c;
    }
    if let Some(m) = args.metrics {
        opts.metrics = m;
    }
    println!(
        "switchyard: {}; {}\n",
        opts.switchyard.display(),
        switchyard_bench::machine()
    );
    let report = in_testbed("router benchmark", |tb| router::run(tb, &opts))?;
    println!("{}", report.markdown());
    Ok(())
}
