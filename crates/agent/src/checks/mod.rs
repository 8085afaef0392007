//! Built-in health checks: one probe per check kind ([`tcp`], [`http`], [`exec`]), the
//! [`RiseFall`] state machine that turns probe results into a health, and the
//! [`CheckRunner`] task that probes one application endpoint every interval and reports
//! changes.
//!
//! A probe never fails with an error: whatever goes wrong (refused, timed out, unexpected
//! answer, command not found) is a failed [`ProbeResult`] whose `detail` says why.

pub mod exec;
pub mod http;
mod rise_fall;
mod runner;
pub mod tcp;

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_config::Probe;

pub use rise_fall::RiseFall;
pub use runner::CheckRunner;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the application passed.
    pub ok: bool,
    /// Load in percent (0..=100) the application reported, if the probe kind carries one
    /// (only exec checks do, with `load=NN` on stdout).
    pub load: Option<u8>,
    /// One line for logs and operators: what was seen, or why it failed.
    pub detail: String,
}

impl ProbeResult {
    /// A passed probe.
    pub fn pass(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            load: None,
            detail: detail.into(),
        }
    }

    /// A failed probe.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            load: None,
            detail: detail.into(),
        }
    }
}

/// Runs the probe `probe` once against `endpoint`, giving it at most `timeout`.
pub async fn run_probe(probe: &Probe, endpoint: SocketAddr, timeout: Duration) -> ProbeResult {
    match probe {
        Probe::Tcp => tcp::probe(endpoint, timeout).await,
        Probe::Http {
            path,
            expect_status,
            body_contains,
        } => {
            let expect = http::Expect {
                status: *expect_status,
                body_contains: body_contains.as_deref(),
            };
            http::probe(endpoint, path, &expect, timeout).await
        }
        Probe::Exec { command } => exec::probe(command, endpoint, timeout).await,
    }
}

/// `text` cut to at most `max` characters, on one line, for a [`ProbeResult::detail`].
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        out.push('…');
    }
    out
}

/// A duration as operators read it, e.g. `200ms`.
pub(crate) fn shown(duration: Duration) -> String {
    switchyard_config::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn details_are_one_bounded_line() {
        assert_eq!(one_line("\n  first line \nsecond", 80), "first line");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("a\tb", 10), "a\tb".replace('\t', " "));
        assert_eq!(one_line("", 10), "");
    }
}
