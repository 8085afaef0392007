//! The settings the host agent and the LB units' health and load cache read: their defaults,
//! their written values, and the rows an agent owns for its host.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::load;
use switchyard_config::{
    AgentSettings, HealthSettings, HostId, Probe, Protocol, ServiceManager, health_defaults,
};

fn addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} is not an address: {e}"))
}

const MINIMAL: &str = r#"
[cluster]
id = "mini"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]

[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"

[[pools]]
name = "p"

[[pools.hosts]]
id = 7
name = "h"
address = "192.0.2.7:80"
app = "a"
"#;

#[test]
fn a_configuration_without_the_new_tables_gets_every_default() {
    let (_dir, config) = load(MINIMAL).unwrap_or_else(|d| panic!("{d}"));
    let unit = &config.cluster.units[0];
    assert_eq!(unit.control_port, 9170);
    assert_eq!(unit.admin, addr("127.0.0.1:9180"));
    assert_eq!(unit.control_addr(), addr("192.0.2.1:9170"));

    let health = config.health_settings();
    assert_eq!(*health, HealthSettings::default());
    assert_eq!(health.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(health.host_dead_after, Duration::from_secs(5));
    assert_eq!(health.load_interval, Duration::from_secs(15));
    assert_eq!(health.postulate_interval, Duration::from_millis(500));
    assert_eq!(health.unit_give_up_after, Duration::from_secs(30));
    assert_eq!(health.token_validity, Duration::from_secs(2));
    assert_eq!(health.percentage_duration, Duration::from_secs(5));
    assert_eq!(health.load_hysteresis, health_defaults::LOAD_HYSTERESIS);
    assert_eq!(health.load_hysteresis, 5);
    assert_eq!(health.postulate_delay, Duration::from_millis(200));
    assert_eq!(health.postulate_delay, health_defaults::POSTULATE_DELAY);
    assert!((health.load_smoothing - 0.3).abs() < f64::EPSILON);

    let agent = config.agent_settings();
    assert_eq!(*agent, AgentSettings::default());
    assert_eq!(agent.listen, addr("0.0.0.0:9171"));
    assert_eq!(agent.api, addr("127.0.0.1:9181"));
    assert_eq!(agent.socket, Path::new("/run/switchyard/agent.sock"));

    assert!(config.host_groups.is_empty());
    let (_, host) = config.host(HostId(7)).unwrap_or_else(|| panic!("no host"));
    assert_eq!(host.service_manager, None);
    assert_eq!(
        config.summary(),
        "cluster mini: 1 unit, 1 service, 1 pool (1 host), 0 checks, 0 listeners"
    );
}

const FULL: &str = r#"
[cluster]
id = "full"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier", "health-cache"]
control_port = 7000
admin = "[::1]:7001"

[health]
heartbeat_interval = "200ms"
host_dead_after = "400ms"
load_interval = "3s"
postulate_delay = "50ms"
postulate_interval = "100ms"
unit_give_up_after = "10s"
token_validity = "1s"
percentage_duration = "20s"
load_hysteresis = 0
load_smoothing = 0.5

[agent]
listen = "192.0.2.11:7100"
api = "[::1]:7101"
socket = "run/agent.sock"
unit_acts = false

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "web-v6"
vip = "[2001:db8::10]:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "web"

[[services]]
name = "dns"
vip = "198.51.100.10:53"
protocol = "udp"
mode = "packet"
delivery = "nat"
pool = "dns"

[[pools]]
name = "web"
health_check = "http"

[[pools.hosts]]
id = 101
name = "web-1"
address = "192.0.2.11:8080"
app = "shop"
capacity = 70
systemd_unit = "nginx.service"

[[pools.hosts]]
id = 102
name = "web-2"
address = "192.0.2.12:8080"
app = "shop"
pidfile = "/run/shop.pid"

[[pools]]
name = "dns"

[[pools.hosts]]
id = 201
name = "dns-1"
address = "192.0.2.21:53"
app = "resolver"
pidfile = "pids/unbound.pid"

[[health_checks]]
name = "http"
kind = "http"
path = "/healthz"

[[host_groups]]
name = "rack-1"
hosts = ["web-1", "web-2"]

[[host_groups]]
name = "rack-2"
hosts = ["dns-1", "web-3"]
gossip_port = 7200

[[pools]]
name = "spare"

[[pools.hosts]]
id = 301
name = "web-3"
address = "192.0.2.13:8080"
app = "shop"
"#;

#[test]
fn written_settings_are_read_and_paths_resolved() {
    let (dir, config) = load(FULL).unwrap_or_else(|d| panic!("{d}"));
    let unit = &config.cluster.units[0];
    assert_eq!(unit.control_port, 7000);
    assert_eq!(unit.admin, addr("[::1]:7001"));
    assert_eq!(unit.control_addr(), addr("192.0.2.1:7000"));

    assert_eq!(
        *config.health_settings(),
        HealthSettings {
            heartbeat_interval: Duration::from_millis(200),
            host_dead_after: Duration::from_millis(400),
            load_interval: Duration::from_secs(3),
            postulate_delay: Duration::from_millis(50),
            postulate_interval: Duration::from_millis(100),
            unit_give_up_after: Duration::from_secs(10),
            token_validity: Duration::from_secs(1),
            percentage_duration: Duration::from_secs(20),
            load_hysteresis: 0,
            load_smoothing: 0.5,
        }
    );
    assert_eq!(
        *config.agent_settings(),
        AgentSettings {
            listen: addr("192.0.2.11:7100"),
            api: addr("[::1]:7101"),
            socket: dir.path().join("run/agent.sock"),
            unit_acts: false,
        }
    );

    let (_, web1) = config
        .host_by_name("web-1")
        .unwrap_or_else(|| panic!("no web-1"));
    assert_eq!(
        web1.service_manager,
        Some(ServiceManager::Systemd {
            unit: "nginx.service".into()
        })
    );
    let (pool, dns1) = config
        .host_by_name("dns-1")
        .unwrap_or_else(|| panic!("no dns-1"));
    assert_eq!(pool.name, "dns");
    assert_eq!(
        dns1.service_manager,
        Some(ServiceManager::Pidfile {
            path: dir.path().join("pids/unbound.pid")
        })
    );
    assert!(config.host_by_name("nobody").is_none());

    assert_eq!(config.host_groups.len(), 2);
    let rack1 = config
        .host_group("rack-1")
        .unwrap_or_else(|| panic!("no rack-1"));
    assert_eq!(rack1.hosts, ["web-1", "web-2"]);
    assert_eq!(rack1.gossip_port, 9172);
    assert_eq!(
        config
            .host_group_of("web-3")
            .map(|g| (g.name.as_str(), g.gossip_port)),
        Some(("rack-2", 7200))
    );
    assert!(config.host_group_of("nobody").is_none());
    assert!(
        config.summary().ends_with(", 2 host groups"),
        "{}",
        config.summary()
    );
}

#[test]
fn an_agent_owns_one_row_per_service_of_its_host() {
    let (_dir, config) = load(FULL).unwrap_or_else(|d| panic!("{d}"));
    let (_, web1) = config
        .host_by_name("web-1")
        .unwrap_or_else(|| panic!("no web-1"));
    let services: Vec<&str> = config
        .services_of_host(web1)
        .map(|(s, p, h)| {
            assert_eq!((p.name.as_str(), h.id), ("web", HostId(101)));
            s.name.as_str()
        })
        .collect();
    assert_eq!(services, ["web", "web-v6"]);

    let apps = config.agent_apps("web-1");
    assert_eq!(apps.len(), 2);
    for (app, vip) in apps.iter().zip(["198.51.100.10:80", "[2001:db8::10]:80"]) {
        assert_eq!(app.host, HostId(101));
        assert_eq!(app.host_name, "web-1");
        assert_eq!(app.vip, addr(vip));
        assert_eq!(app.protocol, Protocol::Tcp);
        assert_eq!(app.endpoint, addr("192.0.2.11:8080"));
        assert_eq!(app.app, "shop");
        assert_eq!(app.capacity, 70);
        let check = app
            .health_check
            .as_ref()
            .unwrap_or_else(|| panic!("no check"));
        assert_eq!(check.name, "http");
        assert!(matches!(check.probe, Probe::Http { .. }));
        assert_eq!(
            app.service_manager,
            Some(ServiceManager::Systemd {
                unit: "nginx.service".into()
            })
        );
    }
    assert_eq!(apps[0].service, "web");
    assert_eq!(apps[1].service, "web-v6");

    let dns = config.agent_apps("dns-1");
    assert_eq!(dns.len(), 1);
    assert_eq!(dns[0].protocol, Protocol::Udp);
    assert_eq!(dns[0].capacity, 50);
    assert!(dns[0].health_check.is_none());

    // A host whose pool no service uses owns no rows; so does an unknown host.
    assert!(config.agent_apps("web-3").is_empty());
    assert!(config.agent_apps("nobody").is_empty());
}

/// Without `postulate_delay`, the delay follows a `postulate_interval` shorter than its
/// default; an integer `load_smoothing` of 1 is read as 1.0.
#[test]
fn postulate_delay_defaults_to_at_most_the_interval() {
    let text = MINIMAL.replacen(
        "[cluster]",
        "[health]\npostulate_interval = \"80ms\"\nload_smoothing = 1\n\n[cluster]",
        1,
    );
    let (_dir, config) = load(&text).unwrap_or_else(|d| panic!("{d}"));
    let health = config.health_settings();
    assert_eq!(health.postulate_delay, Duration::from_millis(80));
    assert!((health.load_smoothing - 1.0).abs() < f64::EPSILON);
}

/// A host reached only through a request-mode service's route (its pool is no service's
/// own) still owns a row for that service, with its pool's health check: the router finds
/// its health, load and directive there.
#[test]
fn a_host_reached_only_through_a_route_owns_a_row_for_the_service() {
    let text = r#"
[cluster]
id = "routes"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["router", "health-cache"]

[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "web"

[[services.routes]]
path_prefix = "/api/"
pool = "api"

[[health_checks]]
name = "api-check"
kind = "tcp"

[[pools]]
name = "web"

[[pools.hosts]]
id = 900
name = "web-1"
address = "192.0.2.90:80"
app = "a"

[[pools]]
name = "api"
health_check = "api-check"

[[pools.hosts]]
id = 901
name = "api-1"
address = "192.0.2.91:80"
app = "b"
"#;
    let (_dir, config) = load(text).unwrap_or_else(|d| panic!("{d}"));
    let apps = config.agent_apps("api-1");
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(
        (apps[0].service.as_str(), apps[0].vip, apps[0].endpoint),
        ("s", addr("192.0.2.5:80"), addr("192.0.2.91:80"))
    );
    assert_eq!(
        apps[0].health_check.as_ref().map(|c| c.name.as_str()),
        Some("api-check")
    );
    let web = config.agent_apps("web-1");
    assert_eq!(web.len(), 1);
    assert!(web[0].health_check.is_none());
}
