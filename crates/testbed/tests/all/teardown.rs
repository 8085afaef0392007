//! Teardown leaves nothing behind: not after a normal drop, not after a panic, not when
//! processes fork children of their own; concurrent testbeds never collide.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use switchyard_testbed::{Error, Testbed, require, require_testbed};

/// Gone, or a zombie (a reparented grandchild waits for init to reap it).
fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Builds namespaces, a link and processes (one of which forks a grandchild that the testbed
/// never saw), returning the namespace paths and all pids.
fn populate(tb: &Testbed) -> (Vec<PathBuf>, Vec<u32>) {
    let a = tb.namespace("a").unwrap();
    let b = tb.namespace("b").unwrap();
    tb.link(&a, "eth0", &b, "eth0").unwrap();
    let child = a.spawn(["sleep", "30"]).unwrap();
    let forker = b
        .spawn(["sh", "-c", "sleep 30 & echo grandchild=$!; wait"])
        .unwrap();
    forker
        .wait_for_output("grandchild=", Duration::from_secs(5))
        .unwrap();
    let out = forker.stdout().unwrap();
    let grandchild: u32 = out
        .trim()
        .trim_start_matches("grandchild=")
        .parse()
        .unwrap();
    let pids = vec![child.pid(), forker.pid(), grandchild];
    // Leak the handles: the testbed alone must clean up.
    std::mem::forget(child);
    std::mem::forget(forker);
    (vec![a.path(), b.path()], pids)
}

fn assert_all_gone(paths: &[PathBuf], pids: &[u32]) {
    for p in paths {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    // The grandchild was SIGKILLed; give init a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| !pid_gone(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    for &pid in pids {
        assert!(pid_gone(pid), "pid {pid} survived teardown");
    }
}

#[test]
fn drop_removes_namespaces_and_all_processes() {
    let tb = require_testbed!("network namespaces (root)");
    let (paths, pids) = populate(&tb);
    assert!(paths.iter().all(|p| p.exists()));
    let started = Instant::now();
    drop(tb);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "teardown took {:?}",
        started.elapsed()
    );
    assert_all_gone(&paths, &pids);
}

#[test]
fn a_panicking_test_still_tears_down() {
    let tb = require_testbed!("network namespaces (root)");
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let tb = tb;
        seen = Some(populate(&tb));
        panic!("deliberate failure inside a test using a testbed");
    }));
    assert!(result.is_err());
    let (paths, pids) = seen.unwrap();
    assert_all_gone(&paths, &pids);
}

#[test]
fn explicit_teardown_reports_and_invalidates_handles() {
    let tb = require_testbed!("network namespaces (root)");
    let ns = tb.namespace("a").unwrap();
    let path = ns.path();
    tb.teardown().unwrap();
    assert!(!path.exists());
    assert!(matches!(ns.run(["true"]), Err(Error::TornDown(_))));
    assert!(matches!(ns.spawn(["true"]), Err(Error::TornDown(_))));
}

#[test]
fn concurrent_testbeds_get_distinct_names() {
    let Some(probe) = require("network namespaces (root)") else {
        return;
    };
    drop(probe);
    let names: Vec<(String, String)> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                let tb = Testbed::new(&format!("concurrent {i}")).unwrap();
                let a = tb.namespace("a").unwrap();
                let b = tb.namespace("b").unwrap();
                tb.link(&a, "eth0", &b, "eth0").unwrap();
                (tb.name().to_owned(), a.name().to_owned())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut tbs: Vec<_> = names.iter().map(|(t, _)| t.clone()).collect();
    tbs.sort();
    tbs.dedup();
    assert_eq!(tbs.len(), 4, "{names:?}");
    for (tb, ns) in &names {
        assert!(ns.starts_with(&format!("{tb}-")), "{ns}");
        assert!(
            tb.starts_with(&format!("sy-{:x}-", std::process::id())),
            "{tb}"
        );
    }
}
