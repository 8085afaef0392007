//! Ports one machine shares. On each unit's machine, the unit's own sockets (admin API,
//! control port, session port, plumbing port, the router's listeners) must all differ, and
//! so must those of a host on the same machine (the embedded shape; the demo without root):
//! its application's address, and its agent's listen and API addresses from `[agent]`. Two
//! addresses collide when they have the same transport and port and the same IP, or one
//! of them is unspecified (`0.0.0.0`, `[::]`). Each collision is reported once, at the
//! setting written later in the file (a default is never blamed). Several agents on one
//! machine get their own ports from `switchyard agent --listen/--api/--socket`, which the
//! configuration cannot see.

use std::net::SocketAddr;

use super::Validator;
use crate::decode::{Field, Span};
use crate::diagnostics::codes;
use crate::model::{AgentSettings, Listener, Pool, Role, Unit};
use crate::raw::{At, RawConfig, RawUnit};
use crate::sessions::SessionSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// Who binds (or, for a host, serves) an address on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The unit's own process.
    Unit,
    /// A host beside it: its application or its agent.
    Host,
}

/// One address on a unit's machine.
#[derive(Debug)]
struct Socket {
    transport: Transport,
    addr: SocketAddr,
    owner: Owner,
    /// How the message names it when reported: `sessions.port 9170`.
    written: String,
    /// How the message names it as the other one: `unit lb's control_port`.
    named: String,
    /// Where it is written: span and field path; `None` for a default.
    at: Option<(Span, String)>,
    /// What to do about it.
    hint: &'static str,
}

impl Socket {
    fn collides(&self, other: &Socket) -> bool {
        self.transport == other.transport
            && self.addr.port() == other.addr.port()
            && (self.addr.ip() == other.addr.ip()
                || self.addr.ip().is_unspecified()
                || other.addr.ip().is_unspecified())
    }
}

fn written<T>(field: &Field<T>, at: &At, key: &str) -> Option<(Span, String)> {
    field.span().map(|span| (span, at.field(key)))
}

/// The validated parts the rule reads.
pub(super) struct Parts<'c> {
    pub(super) units: &'c [Unit],
    pub(super) listeners: &'c [Listener],
    pub(super) pools: &'c [Pool],
    pub(super) agent: &'c AgentSettings,
    pub(super) sessions: &'c SessionSettings,
}

impl Validator<'_> {
    /// Reports addresses that two processes on one unit's machine would both bind.
    pub(super) fn shared_ports(&mut self, raw: &RawConfig, parts: &Parts<'_>) {
        let raw_units = raw.cluster.iter().flat_map(|c| c.units.iter());
        for (unit, raw_unit) in parts.units.iter().zip(raw_units) {
            let sockets = machine(raw, parts, unit, raw_unit);
            for (i, later) in sockets.iter().enumerate() {
                for earlier in &sockets[..i] {
                    if later.owner == Owner::Host && earlier.owner == Owner::Host {
                        continue; // hosts' own ports are theirs to sort out
                    }
                    if later.collides(earlier) {
                        self.collision(earlier, later);
                    }
                }
            }
        }
    }

    fn collision(&mut self, a: &Socket, b: &Socket) {
        // Blame the setting written later; a default is never blamed.
        let (blamed, other) = match (&a.at, &b.at) {
            (Some((sa, _)), Some((sb, _))) if sa.start > sb.start => (a, b),
            (Some(_), None) => (a, b),
            (_, Some(_)) => (b, a),
            (None, None) => return, // defaults never collide
        };
        let Some((span, field)) = &blamed.at else {
            return;
        };
        self.sink.error(
            codes::CONFLICTING_SETTINGS,
            span,
            field.clone(),
            format!("{} is also {}", blamed.written, other.named),
            Some(blamed.hint.to_owned()),
        );
    }
}

/// Every address bound on `unit`'s machine: the unit's, then the hosts' beside it (a host
/// whose IP is the unit's address, or a loopback host of a loopback unit).
fn machine(raw: &RawConfig, parts: &Parts<'_>, unit: &Unit, raw_unit: &RawUnit) -> Vec<Socket> {
    let name = &unit.name;
    let at = &raw_unit.at;
    // A UDP port the unit binds on its address, written as `key` and named `what`.
    let udp = |port: u16, key: &str, what: &str, at, hint| Socket {
        transport: Transport::Udp,
        addr: SocketAddr::new(unit.address, port),
        owner: Owner::Unit,
        written: format!("{key} {port}"),
        named: format!("unit {name}'s {what}"),
        at,
        hint,
    };
    let mut sockets = vec![
        Socket {
            transport: Transport::Tcp,
            addr: unit.admin,
            owner: Owner::Unit,
            written: format!("admin {}", unit.admin),
            named: format!("unit {name}'s admin API address"),
            at: written(&raw_unit.admin, at, "admin"),
            hint: "give the admin API an address no other socket on the machine uses (default 127.0.0.1:9180)",
        },
        udp(
            unit.control_port,
            "control_port",
            "control_port",
            written(&raw_unit.control_port, at, "control_port"),
            "the health protocol needs a UDP port of its own (default 9170)",
        ),
    ];
    if unit.has_role(Role::Forwarder) || unit.has_role(Role::Classifier) {
        sockets.push(udp(
            unit.forwarder.plumbing_port,
            "plumbing_port",
            "plumbing_port",
            raw_unit
                .forwarder
                .as_ref()
                .and_then(|f| written(&f.plumbing_port, &f.at, "plumbing_port")),
            "route plumbing needs a UDP port of its own (default 9173)",
        ));
    }
    if unit.has_role(Role::SessionStore) {
        sockets.push(udp(
            parts.sessions.port,
            "sessions.port",
            "session port (sessions.port)",
            raw.sessions
                .as_ref()
                .and_then(|s| written(&s.port, &s.at, "port")),
            "give session tracking a port of its own (default 9174)",
        ));
    }
    if unit.has_role(Role::Router) {
        for (listener, raw_listener) in parts.listeners.iter().zip(&raw.listeners) {
            sockets.push(Socket {
                transport: Transport::Tcp,
                addr: listener.address,
                owner: Owner::Unit,
                written: format!("listener address {}", listener.address),
                named: format!("listener {}'s address", listener.name),
                at: written(&raw_listener.address, &raw_listener.at, "address"),
                hint: "every listener of a router unit needs an address no other socket on the machine uses",
            });
        }
    }
    let beside = |ip: std::net::IpAddr| {
        ip == unit.address || (ip.is_loopback() && unit.address.is_loopback())
    };
    let mut hosts_beside = false;
    for (pool, raw_pool) in parts.pools.iter().zip(&raw.pools) {
        for (host, raw_host) in pool.hosts.iter().zip(&raw_pool.hosts) {
            if !beside(host.address.ip()) {
                continue;
            }
            hosts_beside = true;
            sockets.push(Socket {
                transport: Transport::Tcp,
                addr: host.address,
                owner: Owner::Host,
                written: format!("host address {}", host.address),
                named: format!("host {}'s address", host.name),
                at: written(&raw_host.address, &raw_host.at, "address"),
                hint: "the host's application runs on the unit's machine here: give it a port no socket of the unit uses",
            });
        }
    }
    if hosts_beside {
        let raw_agent = raw.agent.as_ref();
        for (transport, addr, key, at, hint) in [
            (
                Transport::Udp,
                parts.agent.listen,
                "listen",
                raw_agent.and_then(|a| written(&a.listen, &a.at, "listen")),
                "an agent beside a unit needs its own UDP port: set [agent] listen, or run it with --listen",
            ),
            (
                Transport::Tcp,
                parts.agent.api,
                "api",
                raw_agent.and_then(|a| written(&a.api, &a.at, "api")),
                "an agent beside a unit needs its own API port: set [agent] api, or run it with --api",
            ),
        ] {
            sockets.push(Socket {
                transport,
                addr,
                owner: Owner::Host,
                written: format!("[agent] {key} {addr}"),
                named: format!("the {key} address of the agents beside it ([agent] {key})"),
                at,
                hint,
            });
        }
    }
    sockets
}
