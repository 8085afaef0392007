//! The router benchmark, run once with 1 s windows so it cannot rot: direct, switchyard's
//! router, HAProxy and nginx on one topology against the debug binary, every metric, a few
//! idle connections. It asserts that every measurement ran and produced sane numbers, never
//! how fast anything was (docs/BENCHMARKS.md has the real runs, from `bench/router.sh`).
//! Needs root, nginx, wrk, haproxy (installed by `.ci/run`) and the `openssl` command;
//! skipped without root unless `CI=true`.

mod common;

use std::time::Duration;

use switchyard_bench::router::{self, Metric, Options, Proxy};
use switchyard_testbed::require_testbed;

#[test]
fn router_benchmark_runs_and_reports() {
    let tb = require_testbed!("namespaces for the router benchmark smoke run");
    let configs = vec![
        Proxy::Direct,
        Proxy::Switchyard,
        Proxy::Haproxy,
        Proxy::Nginx,
    ];
    let opts = Options {
        switchyard: common::switchyard(),
        window: Duration::from_secs(1),
        repeats: 1,
        connections: 2,
        idle_connections: 20,
        configs: configs.clone(),
        metrics: Metric::ALL.to_vec(),
    };
    let report = router::run(&tb, &opts);
    tb.teardown().expect("teardown");
    let report = report.expect("router benchmark");
    assert_eq!(report.results.len(), configs.len());
    for r in &report.results {
        assert!(r.failures.is_empty(), "{}: {:?}", r.config, r.failures);
        for metric in Metric::ALL {
            let s = r
                .median(metric)
                .unwrap_or_else(|| panic!("{}: no {metric:?} sample", r.config));
            assert!(
                s.rate > 0.0 && s.rate.is_finite() && s.requests > 0,
                "{}: {metric:?} {s:?}",
                r.config
            );
            // Causality only: a percentile is positive and ordered (s_time, for the
            // handshakes, gives only a mean).
            assert!(s.p50_us > 0.0, "{}: {s:?}", r.config);
            if metric != Metric::TlsHandshakes {
                assert!(s.p99_us >= s.p50_us, "{}: {s:?}", r.config);
            }
            assert!(s.cpu_us >= 0.0, "{}: {s:?}", r.config);
        }
        let memory = r.median_memory();
        if r.config == Proxy::Direct {
            assert!(memory.is_none(), "direct has no proxy to weigh");
        } else {
            let m = memory.unwrap_or_else(|| panic!("{}: no memory figure", r.config));
            assert!(
                m.connections == 20 && m.rss_after > 0,
                "{}: {m:?}",
                r.config
            );
        }
    }
    let text = report.markdown();
    assert!(text.contains("full TLS handshakes"), "{text}");
    assert!(text.contains("switchyard / haproxy"), "{text}");
    assert!(text.contains("switchyard / nginx"), "{text}");
}
