//! [`Process::spawn_here`]: a supervised process in the test's own namespace, without a
//! testbed and without root; runs everywhere.

use std::time::Duration;

use switchyard_testbed::{MARKER_ENV, Process};

#[test]
fn a_process_started_here_is_marked_logged_and_reaped_on_drop() {
    let logs = tempfile::tempdir().unwrap();
    let process = Process::spawn_here(
        ["sh", "-c", "echo ready >&2; echo out; exec sleep 30"],
        logs.path(),
        "sleeper",
        "sy-test-here",
    )
    .unwrap();
    process
        .wait_for_output("ready", Duration::from_secs(5))
        .unwrap();
    assert!(process.is_running());
    assert_eq!(process.stderr_path(), logs.path().join("sleeper.stderr"));
    assert!(process.stdout().unwrap().contains("out"));
    let environ = std::fs::read(format!("/proc/{}/environ", process.pid())).unwrap();
    let marker = format!("{MARKER_ENV}=sy-test-here");
    assert!(
        environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()),
        "the marker is in its environment"
    );
    let pid = process.pid();
    drop(process);
    // Reaped, not a zombie: the pid is gone (or, at worst, reused by an unrelated process).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        !stat.contains("(sleep)"),
        "pid {pid} survived its drop: {stat}"
    );
}

#[test]
fn a_process_started_here_reports_its_own_exit() {
    let logs = tempfile::tempdir().unwrap();
    let process = Process::spawn_here(
        ["sh", "-c", "exit 3"],
        logs.path(),
        "quitter",
        "sy-test-here",
    )
    .unwrap();
    let status = process
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("it exits by itself");
    assert_eq!(status.code(), Some(3));
    assert!(
        Process::spawn_here(["/nonexistent/program"], logs.path(), "x", "sy-test-here").is_err()
    );
}
