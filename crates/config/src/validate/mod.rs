//! Whole-configuration rules: owns everything that needs more than one value to decide
//! (unique names and ids, references between tables, mode/delivery/listener combinations,
//! roles the services need, referenced files) and the building of the typed [`Config`].
//! Every rule reports and carries on, so one run lists every problem. The rules of each
//! part of the schema live in the submodule named after it.

mod agent;
mod checks;
mod cluster;
mod health;
mod packet;
mod pools;
mod ports;
mod router;
mod services;
mod sessions;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::decode::{Field, Span};
use crate::diagnostics::{Sink, closest, codes};
use crate::files;
use crate::model::Config;
use crate::raw::{At, RawConfig};

/// Default health check interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default health check timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive successes before a host counts as healthy.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures before a host counts as unhealthy.
pub const DEFAULT_FALL: u32 = 3;
/// Default expected HTTP status of an http check.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// Default host capacity.
pub const DEFAULT_CAPACITY: u8 = 50;
/// Default idle timeout of an affinity binding.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default UDP port of the health and load protocol on an LB unit.
pub const DEFAULT_CONTROL_PORT: u16 = 9170;
/// Default address of an LB unit's admin HTTP API.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);
/// Default UDP address the host agent receives LB units' messages on.
pub const DEFAULT_AGENT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9171);
/// Default loopback address of the host agent's local HTTP API.
pub const DEFAULT_AGENT_API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9181);
/// Default Unix socket of the host agent's local API.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/switchyard/agent.sock";
/// Default UDP port host-group members gossip on.
pub const DEFAULT_GOSSIP_PORT: u16 = 9172;

/// Defaults of the `[health]` table.
pub mod health_defaults {
    use std::time::Duration;

    /// Time between a host's heartbeats.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    /// Silence after which a host ages out.
    pub const HOST_DEAD_AFTER: Duration = Duration::from_secs(5);
    /// Least time between two load-only updates.
    pub const LOAD_INTERVAL: Duration = Duration::from_secs(15);
    /// Time between a directive change and its first postulate (at most
    /// `postulate_interval`; when not written, this or `postulate_interval` if shorter).
    pub const POSTULATE_DELAY: Duration = Duration::from_millis(200);
    /// Time between retries of an unanswered postulate.
    pub const POSTULATE_INTERVAL: Duration = Duration::from_millis(500);
    /// Silence after which a unit stops holding up a directive handshake.
    pub const UNIT_GIVE_UP_AFTER: Duration = Duration::from_secs(30);
    /// Lifetime of a token allotment.
    pub const TOKEN_VALIDITY: Duration = Duration::from_secs(2);
    /// Duration of a percentage allotment.
    pub const PERCENTAGE_DURATION: Duration = Duration::from_secs(5);
    /// Smallest load change, in percent points, worth reporting.
    pub const LOAD_HYSTERESIS: u8 = 5;
    /// Weight of a new load sample in the moving average of a row's load.
    pub const LOAD_SMOOTHING: f64 = 0.3;
}

/// Longest name allowed for clusters, units, services, pools, hosts, checks, listeners and
/// certificates.
pub const MAX_NAME_LEN: usize = 63;

/// Checks `raw` and builds the configuration; `None` when any error was reported.
pub(crate) fn validate(raw: &RawConfig, source: &Path, sink: &mut Sink) -> Option<Config> {
    let mut v = Validator {
        sink,
        base: files::base_dir(source),
    };
    let cluster = raw.cluster.as_ref().and_then(|c| v.cluster(c));
    let checks = v.health_checks(&raw.health_checks);
    let certificates = v.certificates(&raw.certificates);
    let listeners = v.listeners(&raw.listeners, &certificates);
    let unit_ids: Vec<(u32, &str)> = raw
        .cluster
        .iter()
        .flat_map(|c| c.units.iter())
        .filter_map(|u| u.id.spanned().map(|id| (*id.get_ref(), u.at.path.as_str())))
        .collect();
    let (pools, host_names) = v.pools(&raw.pools, &checks.names, &unit_ids);
    let services = v.services(&raw.services, &pools.names, &listeners.names);
    if let (Some(cluster), Some(services)) = (&cluster, &services) {
        v.roles_needed(&cluster.units, &raw.services, services);
        if let Some(raw_cluster) = &raw.cluster {
            v.nat_sources_needed(&raw_cluster.units, &cluster.units, services);
        }
    }
    let firewalls = v.firewalls(&raw.services, services.as_deref());
    let classifier = v.classifier(raw.classifier.as_ref());
    let router = v.router(raw.router.as_ref());
    let routes = v.routes(&raw.services, services.as_deref(), &pools.names);
    let health = v.health(raw.health.as_ref());
    let agent = v.agent(raw.agent.as_ref());
    let host_groups = v.host_groups(&raw.host_groups, &host_names, agent.as_ref());
    let sessions = v.sessions(raw.sessions.as_ref());
    if let (Some(cluster), Some(listeners), Some(pools), Some(agent)) =
        (&cluster, &listeners.items, &pools.items, &agent)
    {
        let parts = ports::Parts {
            units: &cluster.units,
            listeners,
            pools,
            agent,
            sessions: &sessions,
        };
        v.shared_ports(raw, &parts);
    }

    if v.sink.has_errors() {
        return None;
    }
    match (
        cluster,
        services,
        pools.items,
        checks.items,
        listeners.items,
        certificates.items,
        (health, agent, host_groups),
        (classifier, firewalls),
        (router, routes),
    ) {
        (
            Some(cluster),
            Some(services),
            Some(pools),
            Some(health_checks),
            Some(listeners),
            Some(certificates),
            (Some(health), Some(agent), Some(host_groups)),
            (Some(classifier), Some(firewalls)),
            (Some(router), Some(routes)),
        ) => Some(Config {
            source: source.to_path_buf(),
            cluster,
            services,
            pools,
            health_checks,
            listeners,
            certificates,
            health,
            agent,
            host_groups,
            classifier,
            firewalls,
            router,
            routes,
            sessions,
        }),
        _ => {
            // Unreachable in practice: every part that failed to build reported why. Never
            // let a failure pass without a diagnostic, though.
            v.sink.error(
                codes::BAD_VALUE,
                &(0..0),
                "",
                "the configuration is incomplete",
                None,
            );
            None
        }
    }
}

/// Items of one kind that built successfully, plus the names defined, for references.
struct Built<T> {
    /// All items, or `None` if any failed (its error is reported).
    items: Option<Vec<T>>,
    names: Names,
}

/// The names defined for one kind of item.
#[derive(Default)]
struct Names {
    /// Name → position of the definition in the file order.
    index: HashMap<String, usize>,
    /// Some item's name could not be read, so a failed lookup may be a follow-on error.
    incomplete: bool,
}

impl Names {
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn sorted(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

struct Validator<'s> {
    sink: &'s mut Sink,
    base: PathBuf,
}

impl Validator<'_> {
    // ---- shared checks -------------------------------------------------------------------

    /// Checks a name's syntax; returns it when usable.
    fn name(&mut self, field: &Field<String>, path: String) -> Option<String> {
        let name = field.spanned()?;
        let text = name.get_ref();
        let problem = if text.is_empty() {
            Some("is empty")
        } else if text.len() > MAX_NAME_LEN {
            Some("is too long")
        } else if !text.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !text.chars().all(is_name_char)
        {
            Some("has characters that are not allowed")
        } else {
            None
        };
        match problem {
            None => Some(text.clone()),
            Some(problem) => {
                self.sink.error(
                    codes::BAD_NAME,
                    &name.span(),
                    path,
                    format!("name \"{text}\" {problem}"),
                    Some(format!(
                        "names are 1 to {MAX_NAME_LEN} characters: letters, digits, '-', '_' and '.', starting with a letter or digit"
                    )),
                );
                None
            }
        }
    }

    /// Indexes the names of one kind of item, reporting duplicates and bad names.
    fn names<'r>(
        &mut self,
        kind: &str,
        items: impl Iterator<Item = (&'r Field<String>, &'r At)>,
    ) -> Names {
        let mut names = Names::default();
        let mut first_seen: HashMap<String, String> = HashMap::new();
        for (position, (field, at)) in items.enumerate() {
            let Some(name) = self.name(field, at.field("name")) else {
                names.incomplete = true;
                continue;
            };
            let span = field.span().unwrap_or_else(|| at.span.clone());
            if let Some(first) = first_seen.get(&name) {
                self.sink.error(
                    codes::DUPLICATE_NAME,
                    &span,
                    at.field("name"),
                    format!("{kind} name \"{name}\" is already used by {first}"),
                    Some(format!("every {kind} needs its own name")),
                );
                continue;
            }
            first_seen.insert(name.clone(), at.path.clone());
            names.index.insert(name, position);
        }
        names
    }

    /// Checks a reference to an item of another kind; true when it resolves.
    fn reference(
        &mut self,
        field: &Field<String>,
        path: String,
        names: &Names,
        code: &'static str,
        kind: &str,
        table: &str,
    ) -> bool {
        let Some(name) = field.spanned() else {
            return false;
        };
        if names.contains(name.get_ref()) {
            return true;
        }
        if names.incomplete {
            // A definition could not be read; its error explains this one.
            return false;
        }
        let defined = names.sorted();
        let hint = match (
            closest(name.get_ref(), defined.iter().copied()),
            defined.is_empty(),
        ) {
            (_, true) => format!(
                "no {kind} is defined; add a [[{table}]] entry named \"{}\"",
                name.get_ref()
            ),
            (Some(best), false) => format!(
                "did you mean \"{best}\"? defined {kind}s: {}",
                defined.join(", ")
            ),
            (None, false) => format!("defined {kind}s: {}", defined.join(", ")),
        };
        self.sink.error(
            code,
            &name.span(),
            path,
            format!("{kind} \"{}\" is not defined", name.get_ref()),
            Some(hint),
        );
        false
    }

    /// Reports a setting that does not apply.
    fn not_applicable<T>(&mut self, field: &Field<T>, path: String, message: String, hint: &str) {
        if let Some(span) = field.span() {
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                path,
                message,
                Some(hint.to_owned()),
            );
        }
    }

    /// The value of an optional duration, `default` when absent; `None` when it was written
    /// but unusable (reported already).
    fn duration_or(field: &Field<Duration>, default: Duration) -> Option<Duration> {
        match field {
            Field::Absent => Some(default),
            other => other.get().copied(),
        }
    }

    fn missing(&mut self, at: &At, key: &str, message: String, hint: String) {
        self.sink.error(
            codes::MISSING_FIELD,
            &at.span,
            at.field(key),
            message,
            Some(hint),
        );
    }

    fn empty_list(&mut self, span: &Span, path: String, message: String, hint: &str) {
        self.sink.error(
            codes::EMPTY_LIST,
            span,
            path,
            message,
            Some(hint.to_owned()),
        );
    }

    /// Reports entries that appear twice in one list; returns whether there were none.
    fn no_duplicate_entries<T: PartialEq + std::fmt::Debug>(
        &mut self,
        list: &[Spanned<T>],
        path: &str,
        show: impl Fn(&T) -> String,
    ) -> bool {
        let mut clean = true;
        for (i, item) in list.iter().enumerate() {
            if list[..i]
                .iter()
                .any(|earlier| earlier.get_ref() == item.get_ref())
            {
                self.sink.error(
                    codes::DUPLICATE_ENTRY,
                    &item.span(),
                    format!("{path}[{i}]"),
                    format!("{} is listed twice", show(item.get_ref())),
                    Some("remove the repeated entry".to_owned()),
                );
                clean = false;
            }
        }
        clean
    }
}
