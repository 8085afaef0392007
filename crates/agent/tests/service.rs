//! Service-manager watching with real processes: a pid file whose process dies and is
//! replaced, a zombie, a missing pid file, and systemd where it cannot answer.
//!
//! systemd is not PID 1 on the machines these tests run on, so the systemd backend's live
//! answers (a unit going active or inactive) cannot be tested here: its parsing is unit
//! tested in `service::systemd`, and here only its "cannot ask systemd → down with a
//! reason" paths run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_agent::service::pidfile::{process_alive, process_state};
use switchyard_agent::service::systemd::unit_state;
use switchyard_agent::{ServiceState, ServiceWatcher, StatusEvent};
use switchyard_config::ServiceManager;
use switchyard_wire::{AppId, HostId, Protocol};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const POLL: Duration = Duration::from_millis(50);

fn rows() -> Vec<AppId> {
    [80, 443]
        .into_iter()
        .map(|port| AppId {
            vip: SocketAddr::from(([198, 51, 100, 10], port)),
            protocol: Protocol::Tcp,
            endpoint: SocketAddr::from(([192, 0, 2, 11], port)),
            info: "shop".into(),
        })
        .collect()
}

async fn next(rx: &mut mpsc::Receiver<StatusEvent>) -> StatusEvent {
    match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the watcher stopped"),
        Err(_) => panic!("no event within 2s"),
    }
}

/// The next event for each row, in row order; all of the same kind.
async fn next_for_every_row(rx: &mut mpsc::Receiver<StatusEvent>) -> Vec<StatusEvent> {
    let mut events = Vec::new();
    for app in rows() {
        let event = next(rx).await;
        assert_eq!(event.app(), &app, "{event:?}");
        assert_eq!(event.host(), HostId(5));
        events.push(event);
    }
    events
}

async fn silent(rx: &mut mpsc::Receiver<StatusEvent>, quiet: Duration) {
    if let Ok(event) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sleep: {e}"))
}

fn write_pid(path: &Path, child: &Child) -> std::io::Result<()> {
    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    std::fs::write(path, format!("{pid}\n"))
}

#[tokio::test]
async fn a_pid_file_watcher_follows_its_process() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("app.pid");
    let mut first = sleeper();
    write_pid(&pid_file, &first)?;

    let (tx, mut rx) = mpsc::channel(16);
    let manager = ServiceManager::Pidfile {
        path: pid_file.clone(),
    };
    let _watcher = ServiceWatcher::new(HostId(5), rows(), manager)
        .with_poll_interval(POLL)
        .spawn(tx);

    for event in next_for_every_row(&mut rx).await {
        assert!(matches!(event, StatusEvent::ServiceUp { .. }), "{event:?}");
    }
    silent(&mut rx, POLL * 4).await;

    // Killed and reaped: down.
    first.kill().await?;
    for event in next_for_every_row(&mut rx).await {
        let StatusEvent::ServiceDown { reason, .. } = &event else {
            panic!("expected down: {event:?}");
        };
        assert!(reason.contains("is not running"), "{reason}");
    }

    // The application is restarted and writes its new pid: up again.
    let mut second = sleeper();
    write_pid(&pid_file, &second)?;
    for event in next_for_every_row(&mut rx).await {
        assert!(matches!(event, StatusEvent::ServiceUp { .. }), "{event:?}");
    }
    second.kill().await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_or_empty_pid_file_is_down_from_the_start() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("nothing.pid");
    let (tx, mut rx) = mpsc::channel(16);
    let manager = ServiceManager::Pidfile {
        path: pid_file.clone(),
    };
    let _watcher = ServiceWatcher::new(HostId(5), rows(), manager)
        .with_poll_interval(POLL)
        .spawn(tx);
    for event in next_for_every_row(&mut rx).await {
        let StatusEvent::ServiceDown { reason, .. } = &event else {
            panic!("expected down: {event:?}");
        };
        assert!(reason.ends_with("does not exist"), "{reason}");
    }
    // Still down with another reason: not reported again.
    std::fs::write(&pid_file, "")?;
    silent(&mut rx, POLL * 4).await;
    let ServiceState::Down { reason } = process_state(&pid_file).await else {
        panic!("an empty pid file counts as up");
    };
    assert!(reason.contains("holds no pid"), "{reason}");
    Ok(())
}

#[test]
fn a_zombie_counts_as_dead() -> std::io::Result<()> {
    let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or_else(|e| panic!("{e}"));
    assert!(process_alive(pid).is_up());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill: {e}"));
    // Not reaped yet: kill(pid, 0) still finds it, /proc says zombie.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let reason = loop {
        if let ServiceState::Down { reason } = process_alive(pid) {
            break reason;
        }
        assert!(std::time::Instant::now() < deadline, "{pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(reason.contains("zombie"), "{reason}");
    child.wait()?;
    assert!(!process_alive(pid).is_up());
    Ok(())
}

#[tokio::test]
async fn systemd_that_cannot_be_asked_means_down_with_a_reason() {
    let missing = PathBuf::from("/nonexistent/systemctl");
    let ServiceState::Down { reason } = unit_state(&missing, "nginx.service").await else {
        panic!("up without systemctl");
    };
    assert!(
        reason.starts_with("cannot run /nonexistent/systemctl"),
        "{reason}"
    );

    // The real systemctl (if installed) on a unit that exists nowhere: down whether systemd
    // runs (the unit is not found) or not (systemctl cannot reach it).
    let state = unit_state(
        Path::new("systemctl"),
        "switchyard-test-no-such-unit.service",
    )
    .await;
    let ServiceState::Down { reason } = state else {
        panic!("a unit that does not exist is up");
    };
    println!("systemctl on an unknown unit: {reason}");
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn a_systemd_watcher_without_systemctl_reports_down_once() {
    let (tx, mut rx) = mpsc::channel(16);
    let manager = ServiceManager::Systemd {
        unit: "nginx.service".into(),
    };
    let _watcher = ServiceWatcher::new(HostId(5), rows(), manager)
        .with_poll_interval(POLL)
        .with_systemctl(PathBuf::from("/nonexistent/systemctl"))
        .spawn(tx);
    for event in next_for_every_row(&mut rx).await {
        let StatusEvent::ServiceDown { reason, .. } = &event else {
            panic!("expected down: {event:?}");
        };
        assert!(reason.contains("cannot run"), "{reason}");
    }
    silent(&mut rx, POLL * 4).await;
}
