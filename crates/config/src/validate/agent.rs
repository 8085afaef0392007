//! Host agent rules: the `[agent]` process settings (the local API stays on loopback, the
//! Unix socket path fits), each host's service manager (`systemd_unit` or `pidfile`), and
//! host groups (defined hosts, at least two, each host in one group at most).

use std::collections::HashMap;
use std::path::PathBuf;

use toml::Spanned;

use crate::decode::Field;
use crate::diagnostics::codes;
use crate::files;
use crate::model::{AgentSettings, HostGroup, ServiceManager};
use crate::raw::{RawAgent, RawHost, RawHostGroup};

use super::{
    DEFAULT_AGENT_API, DEFAULT_AGENT_LISTEN, DEFAULT_AGENT_SOCKET, DEFAULT_GOSSIP_PORT, Names,
    Validator,
};

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Longest systemd unit name (systemd's `UNIT_NAME_MAX` less the final NUL).
const MAX_UNIT_NAME: usize = 255;

/// Characters systemd allows in unit names.
fn is_unit_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ":-_.\\@".contains(c)
}

impl Validator<'_> {
    /// Builds the agent settings; all defaults when the table is absent.
    pub(super) fn agent(&mut self, raw: Option<&RawAgent>) -> Option<AgentSettings> {
        let Some(raw) = raw else {
            return Some(AgentSettings::default());
        };
        let at = &raw.at;
        let api = match &raw.api {
            Field::Absent => Some(DEFAULT_AGENT_API),
            Field::Invalid => None,
            Field::Present(api) if !api.get_ref().ip().is_loopback() => {
                self.sink.error(
                    codes::BAD_ADDRESS,
                    &api.span(),
                    at.field("api"),
                    format!("agent API address {} is not a loopback address", api.get_ref()),
                    Some(format!(
                        "the local API accepts unauthenticated health reports and drain commands, so it only listens on loopback: e.g. \"127.0.0.1:{0}\" or \"[::1]:{0}\"",
                        api.get_ref().port()
                    )),
                );
                None
            }
            Field::Present(api) => Some(*api.get_ref()),
        };
        let socket = match &raw.socket {
            Field::Absent => Some(PathBuf::from(DEFAULT_AGENT_SOCKET)),
            Field::Invalid => None,
            Field::Present(written) => {
                let resolved = files::resolve(&self.base, written.get_ref());
                let length = resolved.as_os_str().len();
                let problem = if written.get_ref().is_empty() {
                    Some("the socket path is empty".to_owned())
                } else if length > MAX_SOCKET_PATH {
                    Some(format!(
                        "socket path {} is {length} bytes long",
                        resolved.display()
                    ))
                } else {
                    None
                };
                match problem {
                    None => Some(resolved),
                    Some(message) => {
                        self.sink.error(
                            codes::BAD_VALUE,
                            &written.span(),
                            at.field("socket"),
                            message,
                            Some(format!(
                                "give a path of at most {MAX_SOCKET_PATH} bytes, e.g. \"{DEFAULT_AGENT_SOCKET}\"; relative paths are resolved against the configuration's directory"
                            )),
                        );
                        None
                    }
                }
            }
        };
        let listen = match &raw.listen {
            Field::Absent => Some(DEFAULT_AGENT_LISTEN),
            other => other.get().copied(),
        };
        Some(AgentSettings {
            listen: listen?,
            api: api?,
            socket: socket?,
            unit_acts: match &raw.unit_acts {
                Field::Absent => true,
                other => *other.get()?,
            },
        })
    }

    /// Reads a host's `systemd_unit` or `pidfile`. `Some(None)`: neither is set; `None`: an
    /// error was reported.
    pub(super) fn service_manager(&mut self, host: &RawHost) -> Option<Option<ServiceManager>> {
        let at = &host.at;
        if host.systemd_unit.is_written() && host.pidfile.is_written() {
            let span = host
                .pidfile
                .span()
                .or_else(|| host.systemd_unit.span())
                .unwrap_or_else(|| at.span.clone());
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                at.field("pidfile"),
                "a host takes `systemd_unit` or `pidfile`, not both",
                Some(
                    "the agent watches the application one way: keep `systemd_unit` for a systemd service, `pidfile` otherwise"
                        .to_owned(),
                ),
            );
            return None;
        }
        match (&host.systemd_unit, &host.pidfile) {
            (Field::Present(unit), _) => {
                let text = unit.get_ref();
                let problem = if text.is_empty() {
                    Some("is empty")
                } else if text.len() > MAX_UNIT_NAME {
                    Some("is too long")
                } else if text.starts_with(['-', '.']) || !text.chars().all(is_unit_name_char) {
                    Some("has characters that are not allowed")
                } else {
                    None
                };
                match problem {
                    None => Some(Some(ServiceManager::Systemd { unit: text.clone() })),
                    Some(problem) => {
                        self.sink.error(
                            codes::BAD_VALUE,
                            &unit.span(),
                            at.field("systemd_unit"),
                            format!("systemd unit name \"{text}\" {problem}"),
                            Some("give the unit's name as systemctl lists it, e.g. \"nginx.service\" (letters, digits, ':', '-', '_', '.', '\\\\' and '@', not starting with '-' or '.')".to_owned()),
                        );
                        None
                    }
                }
            }
            (_, Field::Present(path)) => {
                if path.get_ref().is_empty() {
                    self.sink.error(
                        codes::BAD_VALUE,
                        &path.span(),
                        at.field("pidfile"),
                        "the pid file path is empty",
                        Some("give the file the application writes its pid to, e.g. \"/run/nginx.pid\"".to_owned()),
                    );
                    return None;
                }
                Some(Some(ServiceManager::Pidfile {
                    path: files::resolve(&self.base, path.get_ref()),
                }))
            }
            (Field::Invalid, _) | (_, Field::Invalid) => None,
            (Field::Absent, Field::Absent) => Some(None),
        }
    }

    /// Builds the host groups. `hosts` are the host names defined; `agent` the agent
    /// settings, if they could be built, to keep gossip off the agent's own port.
    pub(super) fn host_groups(
        &mut self,
        raw: &[RawHostGroup],
        hosts: &Names,
        agent: Option<&AgentSettings>,
    ) -> Option<Vec<HostGroup>> {
        let _ = self.names("host group", raw.iter().map(|g| (&g.name, &g.at)));
        // Host name → the group that claimed it first.
        let mut member_of: HashMap<String, String> = HashMap::new();
        let mut out = Some(Vec::with_capacity(raw.len()));
        for group in raw {
            let built = self.host_group(group, hosts, agent, &mut member_of);
            match (built, out.as_mut()) {
                (Some(g), Some(list)) => list.push(g),
                _ => out = None,
            }
        }
        out
    }

    fn host_group(
        &mut self,
        raw: &RawHostGroup,
        hosts: &Names,
        agent: Option<&AgentSettings>,
        member_of: &mut HashMap<String, String>,
    ) -> Option<HostGroup> {
        let at = &raw.at;
        let group_name = raw.name.get().map_or(at.path.as_str(), String::as_str);
        let shown_group = match raw.name.get() {
            Some(name) => format!("host group \"{name}\""),
            None => at.path.clone(),
        };
        let mut ok = true;
        let path = at.field("hosts");
        let members = raw.hosts.spanned();
        if let Some(members) = members {
            let list = members.get_ref();
            ok &= self.no_duplicate_entries(list, &path, |h: &String| format!("host \"{h}\""));
            for (i, member) in list.iter().enumerate() {
                let entry = Field::Present(Spanned::new(member.span(), member.get_ref().clone()));
                if !self.reference(
                    &entry,
                    format!("{path}[{i}]"),
                    hosts,
                    codes::UNDEFINED_HOST,
                    "host",
                    "pools.hosts",
                ) {
                    ok = false;
                    continue;
                }
                let name = member.get_ref();
                match member_of.get(name) {
                    Some(first) if first != &shown_group => {
                        ok = false;
                        self.sink.error(
                            codes::CONFLICTING_SETTINGS,
                            &member.span(),
                            format!("{path}[{i}]"),
                            format!("host \"{name}\" is already in {first}"),
                            Some("a host belongs to at most one host group: remove it from one of them".to_owned()),
                        );
                    }
                    Some(_) => {}
                    None => {
                        member_of.insert(name.clone(), shown_group.clone());
                    }
                }
            }
            if list.len() < 2 {
                ok = false;
                self.sink.error(
                    codes::BAD_VALUE,
                    &members.span(),
                    path.clone(),
                    format!(
                        "host group \"{group_name}\" has {} host{}",
                        list.len(),
                        if list.len() == 1 { "" } else { "s" }
                    ),
                    Some("a group elects a leader among its members: list at least 2 hosts, or remove the group".to_owned()),
                );
            }
        }
        let gossip_port = match &raw.gossip_port {
            Field::Absent => Some(DEFAULT_GOSSIP_PORT),
            other => other.get().copied(),
        };
        if let (Some(port), Some(agent)) = (gossip_port, agent)
            && port == agent.listen.port()
        {
            ok = false;
            let (span, field) = match raw.gossip_port.span() {
                Some(span) => (span, at.field("gossip_port")),
                None => (at.span.clone(), at.field("gossip_port")),
            };
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                field,
                format!("gossip_port {port} is also the agent's listen port"),
                Some("agents receive LB units' messages on [agent].listen; give gossip a port of its own".to_owned()),
            );
        }
        if !ok {
            return None;
        }
        Some(HostGroup {
            name: raw.name.get()?.clone(),
            hosts: members?
                .get_ref()
                .iter()
                .map(|h| h.get_ref().clone())
                .collect(),
            gossip_port: gossip_port?,
        })
    }
}
