//! The check runner end to end: a real endpoint goes down and comes back, an exec check's
//! load is reported after every probe (and drives the load smoother to the raw value), and
//! the runner reports exactly that, in time, then stops.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_agent::{CheckRunner, StatusEvent};
use switchyard_config::{HealthCheck, Probe};
use switchyard_health::{HostProtocol, HostSettings};
use switchyard_wire::health::{AppStatus, Health};
use switchyard_wire::{AppId, HostId, Protocol, UnitId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(100);

fn check(probe: Probe, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        name: "test".into(),
        interval: INTERVAL,
        timeout: Duration::from_millis(80),
        rise,
        fall,
        probe,
    }
}

fn row(endpoint: SocketAddr) -> AppId {
    AppId {
        vip: SocketAddr::from(([198, 51, 100, 10], 80)),
        protocol: Protocol::Tcp,
        endpoint,
        info: "shop".into(),
    }
}

/// The next event, within `within`.
async fn next(rx: &mut mpsc::Receiver<StatusEvent>, within: Duration) -> StatusEvent {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the runner stopped"),
        Err(_) => panic!("no event within {within:?}"),
    }
}

/// Asserts that no event arrives for `quiet`.
async fn silent(rx: &mut mpsc::Receiver<StatusEvent>, quiet: Duration) {
    if let Ok(event) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

fn health_of(event: &StatusEvent) -> (Health, Option<u8>) {
    match event {
        StatusEvent::Check { health, load, .. } => (*health, *load),
        other => panic!("not a check event: {other:?}"),
    }
}

async fn bind(address: SocketAddr) -> TcpListener {
    TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("bind {address}: {e}"))
}

#[tokio::test]
async fn an_endpoint_that_goes_down_and_up_is_reported_failing_then_healthy() {
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let endpoint = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let (rise, fall) = (2, 3);
    let (tx, mut rx) = mpsc::channel(16);
    let _runner = CheckRunner::new(HostId(7), row(endpoint), check(Probe::Tcp, rise, fall))
        .without_jitter()
        .spawn(tx);

    // Unknown → healthy after `rise` probes (the first one runs at once).
    let event = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(health_of(&event), (Health::Healthy, None));
    assert_eq!(event.host(), HostId(7));
    assert_eq!(event.app(), &row(endpoint));

    // Down: failing after `fall` failed probes, i.e. within fall + 1 intervals (the first
    // failed probe may come up to one interval after the drop).
    drop(listener);
    let down = Instant::now();
    let event = next(&mut rx, Duration::from_secs(2)).await;
    let took = down.elapsed();
    assert_eq!(health_of(&event).0, Health::Failing, "{event:?}");
    assert!(took >= INTERVAL * (fall - 1), "failing too early: {took:?}");
    assert!(
        took <= INTERVAL * (fall + 1) + INTERVAL * 3,
        "failing too late: {took:?}"
    );
    if let StatusEvent::Check { detail, .. } = &event {
        assert!(detail.contains(&endpoint.to_string()), "{detail}");
    }

    // Up again on the same port: healthy after `rise` probes.
    let _listener = bind(endpoint).await;
    let up = Instant::now();
    let event = next(&mut rx, Duration::from_secs(2)).await;
    let took = up.elapsed();
    assert_eq!(health_of(&event).0, Health::Healthy, "{event:?}");
    assert!(
        took <= INTERVAL * (rise + 1) + INTERVAL * 3,
        "healthy too late: {took:?}"
    );

    // Nothing changes, so nothing is reported.
    silent(&mut rx, INTERVAL * 4).await;
}

/// An exec check reading its `load=NN` line from a file the test rewrites.
fn load_file_check(status: &std::path::Path) -> HealthCheck {
    let probe = Probe::Exec {
        command: vec!["cat".into(), status.display().to_string()],
    };
    check(probe, 1, 1)
}

#[tokio::test]
async fn every_load_sample_is_reported_even_when_health_and_load_stay() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let status = dir.path().join("status");
    std::fs::write(&status, "load=30\n")?;
    let endpoint = SocketAddr::from(([127, 0, 0, 1], 9));
    let (tx, mut rx) = mpsc::channel(16);
    let _runner = CheckRunner::new(HostId(1), row(endpoint), load_file_check(&status)).spawn(tx);

    // The same load is reported after every probe: the daemon's smoother needs each sample.
    for _ in 0..3 {
        let event = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(health_of(&event), (Health::Healthy, Some(30)));
    }

    std::fs::write(&status, "load=60\n")?;
    let mut probes = 0;
    loop {
        let event = next(&mut rx, Duration::from_secs(2)).await;
        if health_of(&event) == (Health::Healthy, Some(60)) {
            break;
        }
        assert_eq!(health_of(&event), (Health::Healthy, Some(30)));
        probes += 1;
        assert!(probes < 10, "the new load was never reported");
    }

    // Health changes (the file is gone, cat fails) and is reported once; failed probes
    // carry no load, so nothing more is reported while health stays.
    std::fs::remove_file(&status)?;
    let mut probes = 0;
    loop {
        let event = next(&mut rx, Duration::from_secs(2)).await;
        if health_of(&event) == (Health::Failing, None) {
            break;
        }
        assert_eq!(health_of(&event), (Health::Healthy, Some(60)));
        probes += 1;
        assert!(probes < 10, "the failure was never reported");
    }
    silent(&mut rx, INTERVAL * 3).await;
    Ok(())
}

/// The runner's events drive the real load smoother of the host protocol (as the agent
/// daemon does): a raw load that jumps from 20 to 80 and stays there is published as 80,
/// within the hysteresis, after a bounded number of probes.
#[tokio::test]
async fn a_constant_raw_load_converges_through_the_smoother() -> std::io::Result<()> {
    const PROBES_AT_80: usize = 30;
    let dir = tempfile::tempdir()?;
    let status = dir.path().join("status");
    std::fs::write(&status, "load=20\n")?;
    let endpoint = SocketAddr::from(([127, 0, 0, 1], 9));
    let app = row(endpoint);
    let settings = HostSettings::new(HostId(1), vec![UnitId(100)]);
    let hysteresis = settings.smoothing.hysteresis;
    let mut host = HostProtocol::new(settings, std::time::Instant::now())
        .unwrap_or_else(|e| panic!("host: {e}"));
    let initial = AppStatus::new(Health::Healthy, 0, 50).unwrap_or_else(|e| panic!("{e}"));
    host.set_app(std::time::Instant::now(), app.clone(), initial)
        .unwrap_or_else(|e| panic!("set_app: {e}"));
    let (tx, mut rx) = mpsc::channel(16);
    let _runner = CheckRunner::new(HostId(1), app.clone(), load_file_check(&status))
        .without_jitter()
        .spawn(tx);

    let published = |host: &HostProtocol| host.row(&app).map(|v| v.row.status.load());
    let feed = |host: &mut HostProtocol, event: &StatusEvent| -> Option<u8> {
        let (_, load) = health_of(event);
        let raw = load?;
        host.report_load(std::time::Instant::now(), &app, raw)
            .unwrap_or_else(|e| panic!("report_load: {e}"));
        Some(raw)
    };
    for _ in 0..5 {
        let event = next(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(feed(&mut host, &event), Some(20));
    }
    assert_eq!(published(&host), Some(20));

    std::fs::write(&status, "load=80\n")?;
    let mut at_80 = 0;
    while at_80 < PROBES_AT_80 {
        let event = next(&mut rx, Duration::from_secs(2)).await;
        if feed(&mut host, &event) == Some(80) {
            at_80 += 1;
        }
    }
    let load = published(&host).unwrap_or_else(|| panic!("row gone"));
    assert!(
        80 - load < hysteresis,
        "published load {load} after {PROBES_AT_80} samples of 80"
    );
    Ok(())
}

#[tokio::test]
async fn a_runner_stops_when_its_guard_is_dropped_or_its_channel_closes() {
    let endpoint = SocketAddr::from(([127, 0, 0, 1], 9));
    let (tx, mut rx) = mpsc::channel(16);
    let guard = CheckRunner::new(HostId(1), row(endpoint), check(Probe::Tcp, 1, 1)).spawn(tx);
    drop(guard);
    // The runner held the only sender: once it is gone, the channel ends.
    let ended = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    let (tx, rx) = mpsc::channel(16);
    let guard = CheckRunner::new(HostId(1), row(endpoint), check(Probe::Tcp, 1, 1)).spawn(tx);
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !guard.is_finished() {
        assert!(Instant::now() < deadline, "the runner outlived its channel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
