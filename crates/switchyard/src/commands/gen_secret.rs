//! `switchyard gen-secret`: creates a cluster secret for `cluster.secret_file`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use rand::RngCore;

/// Length of a generated secret in bytes (256 bits).
const SECRET_BYTES: usize = 32;

/// Writes a fresh random secret as hex, to `out` (mode 0600) or standard output.
pub fn run(out: Option<&Path>, force: bool) -> anyhow::Result<ExitCode> {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let text = format!("{}\n", hex::encode(secret));
    match out {
        None => print!("{text}"),
        Some(path) => {
            let mut options = OpenOptions::new();
            options.write(true).mode(0o600);
            if force {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            let mut file = options.open(path).with_context(|| {
                if path.exists() && !force {
                    format!(
                        "{} already exists (use --force to replace it)",
                        path.display()
                    )
                } else {
                    format!("cannot create {}", path.display())
                }
            })?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote a new cluster secret to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
