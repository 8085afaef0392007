//! From a configuration file to status events: the rows an agent owns get their check
//! runners and their service watcher, and dropping the tasks stops them all.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_agent::status::{app_id, host_id};
use switchyard_agent::{StatusEvent, StatusOptions, spawn_status_tasks};
use switchyard_wire::health::Health;
use switchyard_wire::{HostId, Protocol};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;

const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e\n";

fn config_text(endpoint: std::net::SocketAddr) -> String {
    format!(
        r#"
[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "127.0.0.1"
roles = ["forwarder", "classifier", "health-cache"]

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "web-alt"
vip = "198.51.100.10:8080"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[pools]]
name = "web"
health_check = "tcp"

[[pools.hosts]]
id = 101
name = "web-1"
address = "{endpoint}"
app = "shop"
pidfile = "app.pid"

[[pools.hosts]]
id = 102
name = "web-2"
address = "192.0.2.12:80"
app = "shop"

[[health_checks]]
name = "tcp"
kind = "tcp"
interval = "100ms"
timeout = "50ms"
rise = 1
fall = 1
"#
    )
}

#[tokio::test]
async fn a_hosts_rows_get_their_checks_and_service_watcher() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("cluster.key"), SECRET)?;
    let mut app = Command::new("sleep").arg("30").kill_on_drop(true).spawn()?;
    let pid = app.id().unwrap_or_else(|| panic!("no pid"));
    std::fs::write(dir.path().join("app.pid"), format!("{pid}\n"))?;
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, config_text(endpoint))?;
    let config = switchyard_config::load_file(&file).unwrap_or_else(|d| panic!("{d}"));

    let apps = config.agent_apps("web-1");
    assert_eq!(apps.len(), 2);
    let ids: Vec<_> = apps.iter().map(app_id).collect();
    assert!(
        ids.iter()
            .all(|id| id.endpoint == endpoint && id.protocol == Protocol::Tcp && id.info == "shop")
    );
    assert_eq!(host_id(&apps[0]), HostId(101));

    let (tx, mut rx) = mpsc::channel(16);
    let options = StatusOptions {
        service_poll: Duration::from_millis(50),
        ..StatusOptions::default()
    };
    let tasks = spawn_status_tasks(&apps, &tx, &options);
    drop(tx);
    // Two check runners and one watcher for the host's pid file.
    assert_eq!(tasks.len(), 3);

    let mut healthy = HashSet::new();
    let mut up = HashSet::new();
    while healthy.len() < 2 || up.len() < 2 {
        let event = match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some(event)) => event,
            other => panic!("missing events (healthy {healthy:?}, up {up:?}): {other:?}"),
        };
        assert_eq!(event.host(), HostId(101));
        assert!(ids.contains(event.app()), "{event:?}");
        match event {
            StatusEvent::Check {
                health: Health::Healthy,
                app,
                ..
            } => assert!(healthy.insert(app)),
            StatusEvent::ServiceUp { app, .. } => assert!(up.insert(app)),
            other => panic!("unexpected {other:?}"),
        }
    }

    // The application stops: both rows go.
    app.kill().await?;
    let mut down = HashSet::new();
    while down.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some(StatusEvent::ServiceDown { app, .. })) => {
                down.insert(app);
            }
            other => panic!("expected service down: {other:?}"),
        }
    }

    // Dropping the tasks stops them: the channel ends once their senders are gone.
    drop(tasks);
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "tasks outlived their guards");
    drop(listener);
    Ok(())
}

#[tokio::test]
async fn rows_without_checks_or_managers_need_no_tasks() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("cluster.key"), SECRET)?;
    let file = dir.path().join("switchyard.toml");
    let text = config_text("127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")))
        .replace("health_check = \"tcp\"\n", "");
    std::fs::write(&file, text)?;
    let config = switchyard_config::load_file(&file).unwrap_or_else(|d| panic!("{d}"));
    let (tx, _rx) = mpsc::channel(1);
    let apps = config.agent_apps("web-2");
    assert_eq!(apps.len(), 2);
    let tasks = spawn_status_tasks(&apps, &tx, &StatusOptions::default());
    assert!(tasks.is_empty());
    Ok(())
}
