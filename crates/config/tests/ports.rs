//! Ports one machine shares: a unit, its hosts and their agents on one address (the embedded
//! shape; `switchyard demo` without root) load when every port differs, and a collision is
//! reported once, at the setting written later. Only addresses on the unit's machine count.
//! (Each kind of collision's message and location: `tests/diagnostics.rs`.)

mod common;

use common::load;

/// A request router, session store and health cache on loopback, three hosts and their
/// agents beside it: `listener`, `host2` and `agent_listen` vary per test.
fn one_machine(listener: &str, host2: &str, agent_listen: &str) -> String {
    format!(
        r#"[cluster]
id = "one-machine"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "127.0.0.1"
roles = ["router", "session-store", "health-cache"]
control_port = 19170
admin = "127.0.0.1:19180"

[sessions]
port = 19174

[agent]
listen = "{agent_listen}"
api = "127.0.0.1:19181"

[[listeners]]
name = "web"
address = "{listener}"
protocol = "http"

[[services]]
name = "web"
vip = "{listener}"
protocol = "tcp"
mode = "request"
listener = "web"
pool = "web"

[[pools]]
name = "web"

[[pools.hosts]]
id = 101
name = "h1"
address = "127.0.0.1:18081"
app = "a"

[[pools.hosts]]
id = 102
name = "h2"
address = "{host2}"
app = "a"

[[pools.hosts]]
id = 103
name = "h3"
address = "127.0.0.1:18083"
app = "a"
"#
    )
}

fn errors(text: &str) -> Vec<(String, String)> {
    match load(text) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .iter()
            .map(|d| (d.field.clone(), d.message.clone()))
            .collect(),
    }
}

#[test]
fn a_unit_with_its_hosts_and_agents_on_loopback_loads_when_every_port_differs() {
    let text = one_machine("127.0.0.1:18080", "127.0.0.1:18082", "127.0.0.1:19171");
    let (_dir, config) = load(&text).unwrap_or_else(|d| panic!("{d}"));
    let unit = config.unit("lb").unwrap_or_else(|| panic!("unit lb"));
    assert_eq!(unit.control_addr().port(), 19170);
    assert_eq!(config.sessions.port, 19174);
    assert_eq!(config.agent_settings().listen.port(), 19171);
}

#[test]
fn a_host_elsewhere_may_use_a_port_of_the_unit() {
    // 192.0.2.7 is another machine: its port 19180 is not the unit's admin port.
    let text = one_machine("127.0.0.1:18080", "192.0.2.7:19180", "127.0.0.1:19171");
    assert_eq!(errors(&text), Vec::new());
}

#[test]
fn collisions_on_one_machine_are_reported_at_the_later_setting() {
    // A host on the router's listener: the router would send requests to itself.
    let text = one_machine("127.0.0.1:18080", "127.0.0.1:18080", "127.0.0.1:19171");
    assert_eq!(
        errors(&text),
        vec![(
            "pools[0].hosts[1].address".to_owned(),
            "host address 127.0.0.1:18080 is also listener web's address".to_owned()
        )]
    );
    // A listener on the admin API's address.
    let text = one_machine("127.0.0.1:19180", "127.0.0.1:18082", "127.0.0.1:19171");
    assert_eq!(
        errors(&text),
        vec![(
            "listeners[0].address".to_owned(),
            "listener address 127.0.0.1:19180 is also unit lb's admin API address".to_owned()
        )]
    );
    // The agents' UDP port on the unit's session port: an unspecified address overlaps every
    // address of the machine on its port, and UDP and TCP ports are separate (the listener
    // has TCP 19174).
    let text = one_machine("127.0.0.1:19174", "127.0.0.1:18082", "0.0.0.0:19174");
    assert_eq!(
        errors(&text),
        vec![(
            "agent.listen".to_owned(),
            "[agent] listen 0.0.0.0:19174 is also unit lb's session port (sessions.port)"
                .to_owned()
        )]
    );
}
