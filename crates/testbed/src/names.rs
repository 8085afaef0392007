//! Naming: unique testbed names (`sy-<pid hex>-<counter>`), namespace names
//! (`<testbed>-<role>`), and the validation of roles and interface names. Unique names let tests
//! run in parallel, in threads of one process and in separate processes.
//! `scripts/check-leftovers.sh` relies on the `sy-` prefix and this shape.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// Prefix of every testbed and namespace name.
pub const NAME_PREFIX: &str = "sy-";

/// Where `ip netns` keeps named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Environment variable carried by every process a testbed starts; its value is the testbed name.
pub const MARKER_ENV: &str = "SWITCHYARD_TESTBED";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Picks a fresh testbed name. Skips names that already have namespaces in /run/netns: those are
/// leftovers of an earlier process that had the same pid (its leftovers are reported by
/// `scripts/check-leftovers.sh`, never reused or removed).
pub(crate) fn fresh_testbed_name() -> String {
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{pid:x}-{n}");
        if !has_namespaces_with_prefix(&format!("{name}-")) {
            return name;
        }
    }
}

fn has_namespaces_with_prefix(prefix: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return false;
    };
    dir.flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
}

/// The bind-mount file of a named namespace.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// A role names a namespace inside its testbed: 1–32 characters of `a-z 0-9 - _`, starting with a
/// letter or digit.
pub(crate) fn check_role(role: &str) -> Result<()> {
    let ok = !role.is_empty()
        && role.len() <= 32
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !role.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "role {role:?}: use 1-32 characters of a-z, 0-9, '-', '_'"
        )))
    }
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("interface name {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let a = fresh_testbed_name();
        let b = fresh_testbed_name();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("sy-{:x}-", std::process::id())));
    }

    #[test]
    fn validation() {
        assert!(check_role("lb0").is_ok());
        assert!(check_role("host-side_1").is_ok());
        assert!(check_role("").is_err());
        assert!(check_role("Client").is_err());
        assert!(check_role("a/b").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("sixteen-chars-xx").is_err());
        assert!(check_ifname("a b").is_err());
    }
}
