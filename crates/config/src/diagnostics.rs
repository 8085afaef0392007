//! Operator-facing errors: owns [`Diagnostic`], [`Diagnostics`], the stable error [`codes`],
//! the rustc-like rendering, and the internal collector that turns byte spans into
//! file:line:column positions. It does not decide what is wrong; the decoder and the
//! validator do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::location::LineIndex;

/// Stable short codes, one per kind of error. Scripts and tests may match on them; they never
/// change meaning once released.
pub mod codes {
    /// The configuration file itself could not be read (missing, unreadable, not UTF-8).
    pub const UNREADABLE_FILE: &str = "unreadable-file";
    /// TOML syntax error; no further checks run.
    pub const INVALID_TOML: &str = "invalid-toml";
    /// A key that the table does not define.
    pub const UNKNOWN_FIELD: &str = "unknown-field";
    /// A value of the wrong TOML type (an integer where a string belongs, …).
    pub const WRONG_TYPE: &str = "wrong-type";
    /// A required field is absent.
    pub const MISSING_FIELD: &str = "missing-field";
    /// A value that is not one of the allowed ones, or malformed in a field-specific way.
    pub const BAD_VALUE: &str = "bad-value";
    /// A name or identifier with characters or a length that is not allowed.
    pub const BAD_NAME: &str = "bad-name";
    /// An IP address or IP:port that does not parse or cannot be used.
    pub const BAD_ADDRESS: &str = "bad-address";
    /// A duration string that does not parse, or is zero where that makes no sense.
    pub const BAD_DURATION: &str = "bad-duration";
    /// A number outside its allowed range.
    pub const OUT_OF_RANGE: &str = "out-of-range";
    /// A list that must hold at least one entry is empty.
    pub const EMPTY_LIST: &str = "empty-list";
    /// The same entry appears twice in one list.
    pub const DUPLICATE_ENTRY: &str = "duplicate-entry";
    /// Two items of one kind share a name.
    pub const DUPLICATE_NAME: &str = "duplicate-name";
    /// Two units, or two hosts, share a numeric id.
    pub const DUPLICATE_ID: &str = "duplicate-id";
    /// Two services share address, port and protocol.
    pub const DUPLICATE_VIP: &str = "duplicate-vip";
    /// Two items that must have distinct addresses share one.
    pub const DUPLICATE_ADDRESS: &str = "duplicate-address";
    /// Two certificates of one listener claim the same server name.
    pub const DUPLICATE_SERVER_NAME: &str = "duplicate-server-name";
    /// A service names a pool that is not defined.
    pub const UNDEFINED_POOL: &str = "undefined-pool";
    /// A pool names a health check that is not defined.
    pub const UNDEFINED_CHECK: &str = "undefined-check";
    /// A service names a listener that is not defined.
    pub const UNDEFINED_LISTENER: &str = "undefined-listener";
    /// A listener names a certificate that is not defined.
    pub const UNDEFINED_CERTIFICATE: &str = "undefined-certificate";
    /// A unit names a classifier unit that is not defined.
    pub const UNDEFINED_UNIT: &str = "undefined-unit";
    /// A host group names a host that is not defined.
    pub const UNDEFINED_HOST: &str = "undefined-host";
    /// The cluster secret file cannot be read.
    pub const UNREADABLE_SECRET: &str = "unreadable-secret";
    /// The cluster secret holds fewer than 32 bytes of key material.
    pub const SHORT_SECRET: &str = "short-secret";
    /// A certificate or key file cannot be read.
    pub const UNREADABLE_PEM: &str = "unreadable-pem";
    /// A certificate or key file holds no PEM block of the expected kind.
    pub const BAD_PEM: &str = "bad-pem";
    /// A forwarder-only unit does not say which unit classifies for it.
    pub const NO_CLASSIFIER: &str = "no-classifier";
    /// A unit's `classifier` names a unit without the classifier role.
    pub const NOT_A_CLASSIFIER: &str = "not-a-classifier";
    /// The services need a role that no unit of the cluster has.
    pub const MISSING_ROLE: &str = "missing-role";
    /// Settings that cannot be used together.
    pub const CONFLICTING_SETTINGS: &str = "conflicting-settings";
}

/// One problem in a configuration file, located precisely enough for an operator to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable short code, one of [`codes`].
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The configuration file, as the caller named it.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column in characters; 0 when the problem concerns the whole file.
    pub column: usize,
    /// Path of the offending field, e.g. `services[1].vip`; empty for file-level problems.
    pub field: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error[{}]: {}", self.code, self.message)?;
        if self.line == 0 {
            writeln!(f, "  --> {}", self.file.display())?;
        } else {
            writeln!(
                f,
                "  --> {}:{}:{}",
                self.file.display(),
                self.line,
                self.column
            )?;
        }
        if !self.field.is_empty() {
            writeln!(f, "   | {}", self.field)?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "   = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration file, in file order.
///
/// `Display` renders all of them like rustc does, separated by blank lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Wraps diagnostics, ordering them by position in the file (file-level ones first).
    pub fn new(mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| (d.line, d.column));
        Self { items }
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (a loaded configuration never yields an empty set).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The problems, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// The problems, by value.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }

    /// One closing line such as `3 errors in examples/bad.toml`.
    pub fn summary(&self) -> String {
        let file = self
            .items
            .first()
            .map(|d| d.file.display().to_string())
            .unwrap_or_default();
        let noun = if self.items.len() == 1 {
            "error"
        } else {
            "errors"
        };
        format!("{} {noun} in {file}", self.items.len())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Collects diagnostics for one source text, turning byte spans into positions.
#[derive(Debug)]
pub(crate) struct Sink {
    file: PathBuf,
    lines: LineIndex,
    items: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: &Path, source: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            lines: LineIndex::new(source),
            items: Vec::new(),
        }
    }

    /// Records one error at the start of `span`.
    pub(crate) fn error(
        &mut self,
        code: &'static str,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.lines.locate(span.start);
        self.items.push(Diagnostic {
            code,
            message: message.into(),
            file: self.file.clone(),
            line,
            column,
            field: field.into(),
            hint,
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.items.is_empty()
    }

    pub(crate) fn finish(self) -> Diagnostics {
        Diagnostics::new(self.items)
    }
}

/// A diagnostic about the file as a whole (it could not be read at all).
pub(crate) fn file_error(file: &Path, code: &'static str, message: String) -> Diagnostics {
    Diagnostics::new(vec![Diagnostic {
        code,
        message,
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        hint: None,
    }])
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Hint text: an optional "did you mean" followed by the list of allowed values.
pub(crate) fn choices_hint(word: &str, what: &str, allowed: &[&str]) -> String {
    let list = allowed
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(word, allowed.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? {what}: {list}"),
        None => format!("{what}: {list}"),
    }
}

/// Edit distance over characters, ignoring ASCII case, where swapping two neighbours counts
/// as one edit (optimal string alignment), so "wbe" is one edit from "web".
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let d = Diagnostic {
            code: codes::DUPLICATE_VIP,
            message: "VIP 198.51.100.10:80/tcp is already used by service \"web\"".into(),
            file: PathBuf::from("examples/bad.toml"),
            line: 14,
            column: 7,
            field: "services[1].vip".into(),
            hint: Some("change the port".into()),
        };
        assert_eq!(
            d.to_string(),
            "error[duplicate-vip]: VIP 198.51.100.10:80/tcp is already used by service \"web\"\n  \
             --> examples/bad.toml:14:7\n   | services[1].vip\n   = hint: change the port\n"
        );
    }

    #[test]
    fn sorted_by_position_and_summarised() {
        let at = |line, column| Diagnostic {
            code: codes::BAD_VALUE,
            message: String::new(),
            file: PathBuf::from("x.toml"),
            line,
            column,
            field: String::new(),
            hint: None,
        };
        let all = Diagnostics::new(vec![at(3, 1), at(1, 5), at(1, 2)]);
        let order: Vec<_> = all.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(order, vec![(1, 2), (1, 5), (3, 1)]);
        assert_eq!(all.summary(), "3 errors in x.toml");
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(closest("adress", ["address", "name"]), Some("address"));
        assert_eq!(closest("pakcet", ["packet", "request"]), Some("packet"));
        assert_eq!(closest("wbe", ["web", "api"]), Some("web"));
        assert_eq!(closest("zzzz", ["address", "name"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
