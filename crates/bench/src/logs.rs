//! Following a process's log file and reading its timestamps.
//!
//! The unit logs `health changed` from inside the health service right
//! after its cache applied the message (under the same lock the allotment
//! service reads), and the agent logs `health a -> b` when its table
//! changes, so a log line's timestamp is the moment the change took effect
//! there, to the microsecond (tracing's default RFC 3339 timer, UTC). The
//! benchmark compares these with the wall clock of the API call: all
//! processes share one machine and one realtime clock, so no skew, and
//! the poll loop that reads the files adds nothing to what is measured.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Reads the lines appended to a file since the last call.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    /// Follows `path` from its current end (earlier lines are not returned).
    pub fn from_end(path: &Path) -> Result<Self> {
        let offset = std::fs::metadata(path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        Ok(Self {
            path: path.to_owned(),
            offset,
            partial: String::new(),
        })
    }

    /// Complete lines appended since the last call.
    pub fn lines(&mut self) -> Result<Vec<String>> {
        let mut file =
            File::open(&self.path).with_context(|| format!("open {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(Vec::new());
        };
        let complete: String = self.partial.drain(..=end).collect();
        Ok(complete.lines().map(str::to_owned).collect())
    }
}

/// The timestamp a line starts with (`2026-05-01T12:34:56.123456Z`), in
/// nanoseconds since the Unix epoch.
pub fn timestamp_ns(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    let days = days_from_civil(y, mo, da);
    Some(((days * 86_400 + h * 3_600 + mi * 60 + s) * 1_000_000_000) + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `line` has the whitespace-separated token `token` (e.g.
/// `host=101`), so `host=10` does not match `host=101`.
pub fn has_token(line: &str, token: &str) -> bool {
    line.split_whitespace().any(|t| t == token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_timestamps() {
        assert_eq!(
            timestamp_ns("1970-01-01T00:00:00.000001Z  INFO x"),
            Some(1_000)
        );
        assert_eq!(
            timestamp_ns("2000-03-01T00:00:01.5Z INFO"),
            Some((951_868_800 + 1) * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(
            timestamp_ns("2024-02-29T23:59:59Z x"),
            Some(1_709_251_199_000_000_000)
        );
        assert_eq!(timestamp_ns("INFO no stamp"), None);
        assert_eq!(timestamp_ns("2024-02-29T23:59:59.x1Z"), None);
    }

    #[test]
    fn tails_only_new_complete_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        std::fs::write(&path, "old\n").expect("write");
        let mut tail = LogTail::from_end(&path).expect("tail");
        std::fs::write(&path, "old\nnew 1\nnew").expect("write");
        assert_eq!(tail.lines().expect("read"), vec!["new 1"]);
        std::fs::write(&path, "old\nnew 1\nnew 2\n").expect("write");
        assert_eq!(tail.lines().expect("read"), vec!["new 2"]);
        assert!(tail.lines().expect("read").is_empty());
        assert!(has_token("a host=101 b", "host=101"));
        assert!(!has_token("a host=1010 b", "host=101"));
    }
}
