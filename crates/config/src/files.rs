//! Files the configuration points at: owns resolving their paths against the configuration's
//! directory, reading the cluster secret, and checking that certificate and key files hold
//! PEM blocks of the right kind. Parsing certificates is the request router's job.

use std::path::{Path, PathBuf};

use crate::diagnostics::codes;
use crate::secret::{ClusterSecret, SecretError};

/// A problem with a referenced file: code, message and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileProblem {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// The directory relative paths in `config_file` are resolved against.
pub(crate) fn base_dir(config_file: &Path) -> PathBuf {
    match config_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `written` if absolute, else `written` under `base`.
pub(crate) fn resolve(base: &Path, written: &str) -> PathBuf {
    let path = Path::new(written);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Reads and checks the cluster secret at `path`.
pub(crate) fn read_secret(path: &Path) -> Result<ClusterSecret, FileProblem> {
    let contents = std::fs::read(path).map_err(|e| FileProblem {
        code: codes::UNREADABLE_SECRET,
        message: format!("cannot read cluster secret {}: {e}", path.display()),
        hint: Some(
            "create it with `switchyard gen-secret --out FILE` (or `openssl rand -hex 32 > FILE`), readable only by the switchyard user"
                .to_owned(),
        ),
    })?;
    ClusterSecret::from_file_contents(&contents).map_err(|e| {
        let code = match e {
            SecretError::OddHex { .. } => codes::BAD_VALUE,
            SecretError::ShortHex { .. } | SecretError::ShortRaw { .. } => codes::SHORT_SECRET,
        };
        FileProblem {
            code,
            message: format!("cluster secret {} {e}", path.display()),
            hint: Some(
                "use 32 random bytes or more: `switchyard gen-secret --out FILE` writes 64 hex digits"
                    .to_owned(),
            ),
        }
    })
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PemKind {
    /// A certificate chain: at least one `CERTIFICATE` block.
    Certificate,
    /// An unencrypted private key: a `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    PrivateKey,
}

/// Labels of the `-----BEGIN LABEL-----` lines in `text`.
fn pem_labels(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.strip_suffix("-----"))
        })
        .collect()
}

fn is_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY") && label != "ENCRYPTED PRIVATE KEY"
}

/// Checks that `path` is readable and holds a PEM block of `kind`.
pub(crate) fn check_pem(path: &Path, kind: PemKind) -> Result<(), FileProblem> {
    let bytes = std::fs::read(path).map_err(|e| FileProblem {
        code: codes::UNREADABLE_PEM,
        message: format!("cannot read {}: {e}", path.display()),
        hint: Some(
            "relative paths are resolved against the configuration file's directory".to_owned(),
        ),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let labels = pem_labels(&text);
    let found = match kind {
        PemKind::Certificate => labels.contains(&"CERTIFICATE"),
        PemKind::PrivateKey => labels.iter().any(|l| is_key_label(l)),
    };
    if found {
        return Ok(());
    }
    let (wanted, swapped) = match kind {
        PemKind::Certificate => (
            "a \"-----BEGIN CERTIFICATE-----\" block",
            labels.iter().any(|l| is_key_label(l)),
        ),
        PemKind::PrivateKey => (
            "a \"-----BEGIN … PRIVATE KEY-----\" block",
            labels.contains(&"CERTIFICATE"),
        ),
    };
    let hint = if swapped {
        "this file holds the other half of the pair: are cert_file and key_file swapped?".to_owned()
    } else if labels.contains(&"ENCRYPTED PRIVATE KEY") {
        "the key is encrypted; switchyard needs an unencrypted key (`openssl pkey -in KEY -out PLAIN`)"
            .to_owned()
    } else if bytes.first() == Some(&0x30) {
        "the file looks like DER; convert it to PEM with `openssl x509 -inform der` or `openssl pkey -inform der`"
            .to_owned()
    } else {
        "give a PEM file, as written by `openssl req -x509 … -out cert.pem -keyout key.pem`"
            .to_owned()
    };
    Err(FileProblem {
        code: codes::BAD_PEM,
        message: format!("{} does not contain {wanted}", path.display()),
        hint: Some(hint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        assert_eq!(
            base_dir(Path::new("examples/a.toml")),
            PathBuf::from("examples")
        );
        assert_eq!(base_dir(Path::new("a.toml")), PathBuf::from("."));
        assert_eq!(
            resolve(Path::new("/etc/sy"), "cluster.key"),
            PathBuf::from("/etc/sy/cluster.key")
        );
        assert_eq!(resolve(Path::new("/etc/sy"), "/k"), PathBuf::from("/k"));
    }

    #[test]
    fn pem_labels_are_found() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n  -----BEGIN EC PRIVATE KEY-----\n";
        assert_eq!(pem_labels(text), vec!["CERTIFICATE", "EC PRIVATE KEY"]);
        assert!(is_key_label("PRIVATE KEY"));
        assert!(is_key_label("RSA PRIVATE KEY"));
        assert!(!is_key_label("ENCRYPTED PRIVATE KEY"));
    }

    #[test]
    fn secret_files_are_checked() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let good = dir.path().join("good.key");
        std::fs::write(&good, format!("{}\n", "0f".repeat(32)))?;
        assert_eq!(read_secret(&good).map(|s| s.len()), Ok(32));

        let short = dir.path().join("short.key");
        std::fs::write(&short, "secret")?;
        let problem = read_secret(&short).map(|s| s.len());
        assert_eq!(problem.map_err(|p| p.code), Err(codes::SHORT_SECRET));

        let missing = dir.path().join("missing.key");
        let problem = read_secret(&missing).map(|s| s.len());
        assert_eq!(problem.map_err(|p| p.code), Err(codes::UNREADABLE_SECRET));
        Ok(())
    }

    #[test]
    fn swapped_pem_files_are_diagnosed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n",
        )?;
        assert_eq!(check_pem(&key, PemKind::PrivateKey), Ok(()));
        let problem = check_pem(&key, PemKind::Certificate).err();
        assert_eq!(problem.as_ref().map(|p| p.code), Some(codes::BAD_PEM));
        assert!(
            problem
                .and_then(|p| p.hint)
                .is_some_and(|h| h.contains("swapped"))
        );
        Ok(())
    }
}
