//! The health benchmark, run once with tiny counts so it cannot rot. It
//! asserts that it ran and produced sane numbers, never how fast anything
//! was (docs/BENCHMARKS.md has the real runs, from `bench/health.sh`).

mod common;

use std::time::Duration;

use switchyard_bench::health::{self, CheckTiming, Options};
use switchyard_testbed::{Testbed, require_testbed};

#[test]
fn health_benchmark_runs_and_reports() {
    let tb = require_testbed!("namespaces for the health benchmark smoke run");
    let opts = Options {
        switchyard: common::switchyard(),
        hosts: 2,
        flips: 4,
        check_flips: 2,
        // A fast check so the smoke run stays short; the benchmark uses the
        // documented defaults.
        check: CheckTiming {
            interval_ms: 200,
            timeout_ms: 100,
            rise: 1,
            fall: 1,
        },
        rows: 10,
        window: Duration::from_secs(1),
        load_period: Duration::from_millis(250),
    };

    let latency = health::latency(&tb, &opts).expect("latency benchmark");
    tb.teardown().expect("teardown");
    assert_eq!(latency.api.len() + latency.api_missed, 4);
    assert_eq!(latency.check.len() + latency.check_missed, 2);
    assert!(!latency.api.is_empty(), "no API flip was observed");
    for c in latency.api.iter().chain(&latency.check) {
        // Causality only: a unit cannot apply a change before it was made.
        assert!(c.agent >= 0 && c.first_unit >= c.agent, "{c:?}");
        assert!(c.every_unit >= c.first_unit, "{c:?}");
    }
    let text = latency.markdown();
    assert!(text.contains("every unit applied"), "{text}");

    let tb = Testbed::new("health bandwidth smoke").expect("second testbed");
    let bandwidth = health::bandwidth(&tb, &opts).expect("bandwidth benchmark");
    tb.teardown().expect("teardown");
    assert_eq!(bandwidth.windows.len(), 2);
    let load = &bandwidth.windows[1];
    assert!(load.load_reports > 0, "{load:?}");
    assert!(load.agent.datagrams > 0 && load.agent.bytes > 0, "{load:?}");
    assert!(load.units.iter().all(|(_, c)| c.datagrams > 0), "{load:?}");
    let text = bandwidth.markdown();
    assert!(text.contains("agent bytes/s"), "{text}");
}
