//! The DAM benchmark, run once with 20,000 atoms so it cannot rot. It checks
//! that every figure is produced and sane (positive, p50 ≤ p99, nothing
//! lost), never how fast anything was (docs/BENCHMARKS.md has the real run,
//! from `bench/dam.sh`). Needs no root.

use switchyard_bench::dam::{self, OpFigures, Options};
use switchyard_wire::MessageKind;

fn sane(name: &str, f: &OpFigures) {
    let l = &f.latency;
    assert!(f.ops > 0 && l.n == f.ops, "{name}: {f:?}");
    assert!(f.per_sec > 0.0 && f.per_sec.is_finite(), "{name}: {f:?}");
    assert!(
        l.min > 0 && l.p50 >= l.min && l.p99 >= l.p50 && l.max >= l.p99,
        "{name}: {f:?}"
    );
}

#[test]
fn dam_benchmark_runs_and_reports() {
    let opts = Options::quick();
    let report = dam::run(&opts).expect("DAM benchmark");
    for (name, f) in [
        ("add unloaded", &report.add_unloaded),
        ("add batched", &report.add_batched),
        ("query owner", &report.query_owner),
        ("query cache", &report.query_cache),
        ("query remote unloaded", &report.query_remote_unloaded),
        ("query remote batched", &report.query_remote_batched),
    ] {
        sane(name, f);
    }
    assert_eq!(report.add_unloaded.ops + report.add_batched.ops, opts.atoms);
    assert!(report.add_overall_per_sec > 0.0);
    assert!(
        report
            .add_traffic
            .frames
            .get(&MessageKind::AddAtom)
            .copied()
            >= Some(opts.atoms as u64)
    );

    // Memory: every atom stored on its two owners; figures positive.
    let owned: u64 = report.units.iter().map(|u| u.owned).sum();
    assert_eq!(owned, 2 * opts.atoms as u64, "{:?}", report.units);
    assert!(
        report
            .units
            .iter()
            .all(|u| u.handoff == 0 && u.footprint_bytes > 0)
    );
    assert!(report.rss_after > 0 && report.rss_before > 0);
    assert!(report.footprint_owner > report.footprint_cache);

    // Recovery: nothing missing, it took time and messages.
    assert!(report.atoms_degraded > 0 && report.atoms_degraded < opts.atoms);
    assert_eq!(report.recovery_missing, 0);
    assert!(report.recovery > std::time::Duration::ZERO);
    assert!(report.recovery_checked >= report.recovery);
    assert!(report.recovery_pushes >= report.atoms_degraded as u64);
    assert!(report.recovery_traffic.total() >= 2 * report.atoms_degraded as u64);

    let text = report.markdown();
    for needle in ["owner hit", "cache hit", "remote", "B per atom", "Recovery"] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}
