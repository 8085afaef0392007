//! The packet benchmark, run once with 1 s windows so it cannot rot: direct,
//! switchyard (tc), nftables and HAProxy on one topology against the debug
//! binary. It asserts that every measurement ran and produced sane numbers,
//! never how fast anything was (docs/BENCHMARKS.md has the real runs, from
//! `bench/packet.sh`). Needs root, nginx, wrk, iperf3 and haproxy (installed
//! by `.ci/run`); skipped without root unless `CI=true`.

mod common;

use std::time::Duration;

use switchyard_bench::packet::{self, Attach, Lb, Metric, Options};
use switchyard_testbed::require_testbed;

#[test]
fn packet_benchmark_runs_and_reports() {
    let tb = require_testbed!("namespaces for the packet benchmark smoke run");
    let configs = vec![
        Lb::Direct,
        Lb::Switchyard(Attach::Tc),
        Lb::Nftables,
        Lb::Haproxy,
    ];
    let opts = Options {
        switchyard: common::switchyard(),
        window: Duration::from_secs(1),
        repeats: 1,
        connections: 2,
        configs: configs.clone(),
    };
    let report = packet::run(&tb, &opts);
    tb.teardown().expect("teardown");
    let report = report.expect("packet benchmark");
    assert_eq!(report.results.len(), configs.len());
    for r in &report.results {
        assert!(r.failures.is_empty(), "{}: {:?}", r.config, r.failures);
        for metric in Metric::ALL {
            let s = r
                .median(metric)
                .unwrap_or_else(|| panic!("{}: no {metric:?} sample", r.config));
            assert!(
                s.rate > 0.0 && s.rate.is_finite(),
                "{}: {metric:?} {s:?}",
                r.config
            );
            if metric != Metric::Bulk {
                assert!(s.requests > 0, "{}: {metric:?} {s:?}", r.config);
                // Causality only: a percentile is positive and ordered.
                assert!(
                    s.p50_us > 0.0 && s.p99_us >= s.p50_us,
                    "{}: {s:?}",
                    r.config
                );
                assert!(s.cpu_us >= 0.0, "{}: {s:?}", r.config);
            }
        }
    }
    let ours = report
        .results
        .iter()
        .find(|r| r.config == Lb::Switchyard(Attach::Tc))
        .expect("switchyard result");
    let memory = ours.memory.as_ref().expect("switchyard memory per flow");
    assert!(memory.flows > 0, "{memory:?}");
    let text = report.markdown();
    assert!(text.contains("keep-alive 1 KiB"), "{text}");
    assert!(text.contains("switchyard tc / nftables"), "{text}");
}
