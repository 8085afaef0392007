//! The skip decision: under `CI=true` an unavailable testbed fails the test, elsewhere it skips.
//! Pure function tests; the process environment is never modified.

use switchyard_testbed::{OnUnavailable, on_unavailable, skip_line};

#[test]
fn ci_true_fails_instead_of_skipping() {
    assert_eq!(on_unavailable(Some("true")), OnUnavailable::Fail);
    assert_eq!(on_unavailable(Some("True")), OnUnavailable::Fail);
    assert_eq!(on_unavailable(Some("1")), OnUnavailable::Fail);
}

#[test]
fn without_ci_unavailable_testbeds_skip() {
    assert_eq!(on_unavailable(None), OnUnavailable::Skip);
    assert_eq!(on_unavailable(Some("false")), OnUnavailable::Skip);
    assert_eq!(on_unavailable(Some("")), OnUnavailable::Skip);
}

#[test]
fn skip_line_names_test_and_reason() {
    assert_eq!(
        skip_line("ecmp_spreads", "root", "CAP_SYS_ADMIN is missing"),
        "SKIPPED ecmp_spreads: needs root: CAP_SYS_ADMIN is missing\n"
    );
}
