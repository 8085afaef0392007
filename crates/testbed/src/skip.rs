//! Skipping root-only tests: [`require`] and [`require_testbed!`](crate::require_testbed) give a
//! test its [`Testbed`] or, when the machine cannot provide one, skip it with a `SKIPPED` line on
//! the real stderr — except under `CI=true`, where a test that cannot run fails instead, so CI
//! can never go green by skipping.

use std::io::Write;

use crate::error::Error;
use crate::testbed::Testbed;

/// What to do when a testbed is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Print `SKIPPED <test>: …` and let the test return early.
    Skip,
    /// Panic: the test must run here.
    Fail,
}

/// The pure decision, from the value of the `CI` environment variable: `true` (any case) or `1`
/// means CI, where unavailable testbeds fail the test.
pub fn on_unavailable(ci: Option<&str>) -> OnUnavailable {
    match ci.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => OnUnavailable::Fail,
        _ => OnUnavailable::Skip,
    }
}

/// The line printed for a skipped test.
pub fn skip_line(test: &str, what: &str, reason: &str) -> String {
    format!("SKIPPED {test}: needs {what}: {reason}\n")
}

/// A testbed for a test that needs `what` (e.g. `"namespaces for the ECMP test"`), or `None`
/// after printing `SKIPPED <test>: needs <what>: <reason>` straight to the process's stderr
/// (the test harness does not capture it, and `scripts/test.sh` counts these lines).
///
/// # Panics
///
/// When the testbed is unavailable and `CI=true`, and on any other error creating it.
pub fn require(what: &str) -> Option<Testbed> {
    let reason = match Testbed::new(what) {
        Ok(tb) => return Some(tb),
        Err(Error::Unavailable { reason }) => reason,
        Err(e) => panic!("cannot create a testbed for {what}: {e}"),
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    match on_unavailable(std::env::var("CI").ok().as_deref()) {
        OnUnavailable::Fail => {
            panic!("{test} needs {what}, which CI must provide: {reason}")
        }
        OnUnavailable::Skip => {
            // The leading newline keeps `SKIPPED` at the start of a line even when the harness
            // has already printed `test NAME ... ` (scripts/test.sh counts `^SKIPPED`).
            let line = format!("\n{}", skip_line(test, what, &reason));
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// `let tb = require_testbed!("what the test needs");` — evaluates to a [`Testbed`], or returns
/// from the enclosing test (which must return `()`) after printing why it was skipped. See
/// [`require`].
#[macro_export]
macro_rules! require_testbed {
    ($what:expr) => {
        match $crate::require($what) {
            ::std::option::Option::Some(tb) => tb,
            ::std::option::Option::None => return,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_true_fails_anything_else_skips() {
        assert_eq!(on_unavailable(Some("true")), OnUnavailable::Fail);
        assert_eq!(on_unavailable(Some("TRUE")), OnUnavailable::Fail);
        assert_eq!(on_unavailable(Some("1")), OnUnavailable::Fail);
        assert_eq!(on_unavailable(None), OnUnavailable::Skip);
        assert_eq!(on_unavailable(Some("")), OnUnavailable::Skip);
        assert_eq!(on_unavailable(Some("false")), OnUnavailable::Skip);
    }

    #[test]
    fn skip_line_starts_the_line() {
        let line = skip_line("ecmp", "root", "not root");
        assert!(line.starts_with("SKIPPED ecmp: "));
        assert!(line.ends_with('\n'));
    }
}
