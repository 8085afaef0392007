//! `switchyard check-config`: validates configuration files and reports every error.

use std::path::PathBuf;
use std::process::ExitCode;

/// Checks each file; prints a one-line summary per valid file and all diagnostics of each
/// invalid one. Returns failure if any file is invalid.
pub fn run(files: &[PathBuf], quiet: bool) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    for file in files {
        match switchyard_config::load_file(file) {
            Ok(config) => {
                if !quiet {
                    println!("ok: {}: {}", file.display(), config.summary());
                }
            }
            Err(diagnostics) => {
                failed += 1;
                eprint!("{diagnostics}");
                let count = diagnostics.len();
                let noun = if count == 1 { "error" } else { "errors" };
                eprintln!("{}: {count} {noun}", file.display());
            }
        }
    }
    if failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
