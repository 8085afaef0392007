//! Benchmarks of real switchyard processes: the release `switchyard` binary
//! started inside testbed namespaces, driven through its local and admin
//! APIs, timed from its own log timestamps. Entry points are the scripts in
//! `bench/` (e.g. `bench/health.sh`); results and how to read them are in
//! `docs/BENCHMARKS.md`.
//!
//! Speed is never asserted: `cargo test` runs each benchmark once with tiny
//! counts (`tests/smoke.rs`) only to prove it still works.

pub mod bed;
pub mod dam;
pub mod health;
pub mod http;
pub mod logs;
pub mod packet;
mod procfs;
pub mod router;
pub mod stats;

pub use procfs::loadavg;

/// The machine a benchmark ran on, for the report's first line: `N CPUs; kernel X`.
pub fn machine() -> String {
    format!(
        "{} CPUs; kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}
