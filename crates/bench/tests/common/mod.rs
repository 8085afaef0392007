//! What the benchmark smoke tests share.

use std::path::PathBuf;

/// The `switchyard` binary `cargo test --workspace` built next to the test
/// (target/debug/switchyard), or `SWITCHYARD_BIN`.
pub fn switchyard() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("switchyard");
    assert!(
        path.is_file(),
        "{} is missing: build it (cargo build -p switchyard) or set SWITCHYARD_BIN",
        path.display()
    );
    path
}
