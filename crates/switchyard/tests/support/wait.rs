//! Polling with deadlines. A probe returns `Ok(value)` when the awaited state holds and
//! `Err(observation)` otherwise; the observation of the last failed poll is what a timeout
//! reports, so a failure says what the test saw, not just that it waited.

use std::time::{Duration, Instant};

/// How often probes run.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Ok` or `timeout` passes. Returns the value and the time
/// it took, or the last observation.
pub fn poll_until<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), String> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return Ok((value, start.elapsed())),
            Err(observed) => observed,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(last);
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Polls `probe` until it returns `Ok`; panics after `timeout` with `what` and the last
/// observation. Returns the value and how long it took.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    match poll_until(timeout, probe) {
        Ok(done) => done,
        Err(last) => panic!(
            "timed out after {:.1} s waiting until {what}\nlast observed: {last}",
            timeout.as_secs_f64()
        ),
    }
}

/// Asserts that `probe` holds at every poll for `period` (an invariant over time, such as
/// "current stays active while the unit is cut off"); panics at the first violation.
#[track_caller]
pub fn hold_for(what: &str, period: Duration, mut probe: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        if let Err(observed) = probe() {
            panic!(
                "{what} stopped holding after {:.2} s ({polls} good polls): {observed}",
                start.elapsed().as_secs_f64()
            );
        }
        polls += 1;
        if start.elapsed() >= period {
            return;
        }
        std::thread::sleep(POLL * 4);
    }
}
