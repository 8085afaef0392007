//! What the configuration tests share: a valid cluster to wrap a fragment in, and loading a
//! text from a directory that holds the cluster secret it names.

#![allow(dead_code, reason = "each test binary uses its own part")]

use std::path::Path;

use switchyard_config::{Config, Diagnostics, load_file};

/// A valid cluster: one unit with every role. 10 lines.
pub const PREFIX: &str = r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 60000
address = "192.0.2.1"
roles = ["forwarder", "classifier", "router", "session-store", "health-cache"]

"#;
pub const PREFIX_LINES: usize = 10;

/// A valid pool `p` with one host (id 900), appended after a fragment.
pub const SUFFIX: &str = r#"

[[pools]]
name = "p"

[[pools.hosts]]
id = 900
name = "h900"
address = "192.0.2.90:80"
app = "a"
"#;

/// A fresh directory holding `cluster.key`, the secret every test configuration names.
pub fn secret_dir() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("cluster.key"),
        format!("{}\n", "5e".repeat(32)),
    )?;
    Ok(dir)
}

/// Writes `text` to `<name>.toml` in `dir` and loads it.
pub fn load_in(dir: &Path, name: &str, text: &str) -> Result<Config, Diagnostics> {
    let file = dir.join(format!("{}.toml", name.replace(' ', "-")));
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    load_file(&file)
}

/// Loads `text` from a fresh [`secret_dir`], which lives as long as the returned handle.
pub fn load(text: &str) -> Result<(tempfile::TempDir, Config), Diagnostics> {
    let dir = secret_dir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    load_in(dir.path(), "switchyard", text).map(|config| (dir, config))
}

/// [`load`] for a text that must be valid, without the directory; a diagnostic as text.
pub fn config(text: &str) -> Result<Config, String> {
    load(text)
        .map(|(_, config)| config)
        .map_err(|d| d.to_string())
}
