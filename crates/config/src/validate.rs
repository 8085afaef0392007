//! Whole-configuration rules: owns everything that needs more than one value to decide
//! (unique names and ids, references between tables, mode/delivery/listener combinations,
//! roles the services need, referenced files) and the building of the typed [`Config`].
//! Every rule reports and carries on, so one run lists every problem.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::decode::{Field, Keyword, Kw, Span};
use crate::diagnostics::{Sink, closest, codes};
use crate::duration::format_duration;
use crate::files::{self, PemKind};
use crate::model::{
    Affinity, Certificate, Cluster, Config, HealthCheck, Host, HostId, Listener, ListenerProtocol,
    Pool, Probe, Protocol, Role, Service, ServiceMode, Unit, UnitId,
};
use crate::raw::{
    AffinityKind, At, CheckKind, ListenerKind, ModeKind, RawAffinity, RawCertificate, RawCluster,
    RawConfig, RawHealthCheck, RawListener, RawPool, RawService, RawUnit,
};

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
    let pools = v.pools(&raw.pools, &checks.names);
    let services = v.services(&raw.services, &pools.names, &listeners.names);
    if let (Some(cluster), Some(services)) = (&cluster, &services) {
        v.roles_needed(&cluster.units, &raw.services, services);
    }

    if v.sink.has_errors() {
        return None;
    }
    let (Some(cluster), Some(services)) = (cluster, services) else {
        // Unreachable in practice: every `None` above comes with a reported error.
        v.sink.error(
            codes::BAD_VALUE,
            &(0..0),
            "",
            "the configuration is incomplete",
            None,
        );
        return None;
    };
    Some(Config {
        source: source.to_path_buf(),
        cluster,
        services,
        pools: pools.items?,
        health_checks: checks.items?,
        listeners: listeners.items?,
        certificates: certificates.items?,
    })
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

/// RFC 9110 `tchar`, the characters of header names and cookie names.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
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

    // ---- cluster -------------------------------------------------------------------------

    fn cluster(&mut self, raw: &RawCluster) -> Option<Cluster> {
        let id = self.name(&raw.id, raw.at.field("id"));
        let secret = raw.secret_file.spanned().and_then(|written| {
            let path = files::resolve(&self.base, written.get_ref());
            match files::read_secret(&path) {
                Ok(secret) => Some((path, secret)),
                Err(problem) => {
                    self.sink.error(
                        problem.code,
                        &written.span(),
                        raw.at.field("secret_file"),
                        problem.message,
                        problem.hint,
                    );
                    None
                }
            }
        });
        if raw.units_written && raw.units.is_empty() {
            self.empty_list(
                &raw.at.span,
                raw.at.field("units"),
                "the cluster has no units".to_owned(),
                "add at least one [[cluster.units]] table",
            );
        }
        let units = self.units(&raw.units);
        let (id, (secret_file, secret), units) = (id?, secret?, units?);
        Some(Cluster {
            id,
            secret_file,
            secret,
            units,
        })
    }

    fn units(&mut self, raw: &[RawUnit]) -> Option<Vec<Unit>> {
        let names = self.names("unit", raw.iter().map(|u| (&u.name, &u.at)));
        let mut ids: HashMap<u32, &str> = HashMap::new();
        let mut addresses: HashMap<std::net::IpAddr, &str> = HashMap::new();
        for unit in raw {
            if let Some(id) = unit.id.spanned() {
                if let Some(first) = ids.get(id.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ID,
                        &id.span(),
                        unit.at.field("id"),
                        format!("unit id {} is already used by {first}", id.get_ref()),
                        Some("every unit needs its own id".to_owned()),
                    );
                } else {
                    ids.insert(*id.get_ref(), &unit.at.path);
                }
            }
            if let Some(address) = unit.address.spanned() {
                if let Some(first) = addresses.get(address.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        unit.at.field("address"),
                        format!("address {} is already used by {first}", address.get_ref()),
                        Some("every unit needs its own control-plane address".to_owned()),
                    );
                } else {
                    addresses.insert(*address.get_ref(), &unit.at.path);
                }
            }
        }

        // Roles of every unit whose roles could be read, for classifier references.
        let mut roles_by_name: HashMap<&str, Vec<Role>> = HashMap::new();
        let mut roles_complete = true;
        let mut unit_roles = Vec::with_capacity(raw.len());
        for unit in raw {
            let roles = self.roles(unit);
            match (&roles, unit.name.get()) {
                (Some(roles), Some(name)) => {
                    roles_by_name
                        .entry(name.as_str())
                        .or_insert_with(|| roles.clone());
                }
                _ => roles_complete = false,
            }
            unit_roles.push(roles);
        }

        let mut out = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (unit, roles) in raw.iter().zip(unit_roles) {
            let classifier = roles.as_deref().and_then(|roles| {
                self.unit_classifier(unit, roles, &names, &roles_by_name, roles_complete)
            });
            match (
                unit.name.get(),
                unit.id.get(),
                unit.address.get(),
                roles,
                classifier,
            ) {
                (Some(name), Some(id), Some(address), Some(roles), Some(classifier)) => {
                    out.push(Unit {
                        name: name.clone(),
                        id: UnitId(*id),
                        address: *address,
                        roles,
                        classifier,
                    });
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn roles(&mut self, unit: &RawUnit) -> Option<Vec<Role>> {
        let roles = unit.roles.spanned()?;
        let path = unit.at.field("roles");
        if roles.get_ref().is_empty() {
            self.empty_list(
                &roles.span(),
                path,
                "the unit has no roles".to_owned(),
                "list what the unit runs: forwarder, classifier, router, session-store, health-cache",
            );
            return None;
        }
        let clean = self.no_duplicate_entries(roles.get_ref(), &path, |r: &Kw<Role>| {
            format!("role \"{}\"", r.0.keyword())
        });
        clean.then(|| roles.get_ref().iter().map(|r| r.get_ref().0).collect())
    }

    /// Checks `classifier` of one unit whose roles are known. `Some(None)`: no classifier
    /// (and none needed); `None`: an error was reported.
    fn unit_classifier(
        &mut self,
        unit: &RawUnit,
        roles: &[Role],
        names: &Names,
        roles_by_name: &HashMap<&str, Vec<Role>>,
        roles_complete: bool,
    ) -> Option<Option<String>> {
        let forwards = roles.contains(&Role::Forwarder);
        let classifies = roles.contains(&Role::Classifier);
        let path = unit.at.field("classifier");
        let Some(target) = unit.classifier.spanned() else {
            if unit.classifier.is_written() {
                return None;
            }
            if forwards && !classifies {
                let name = unit.name.get().map_or("this unit", String::as_str);
                self.sink.error(
                    codes::NO_CLASSIFIER,
                    &unit.at.span,
                    path,
                    format!("forwarder unit \"{name}\" has no classifier role and names no classifier"),
                    Some("add `classifier = \"UNIT\"` naming a unit with the classifier role, or give this unit the classifier role too".to_owned()),
                );
                return None;
            }
            return Some(None);
        };
        if !forwards {
            self.not_applicable(
                &unit.classifier,
                path,
                "`classifier` is set on a unit without the forwarder role".to_owned(),
                "only forwarder units hand new connections to a classifier; remove `classifier`",
            );
            return None;
        }
        if classifies {
            self.not_applicable(
                &unit.classifier,
                path,
                "`classifier` is set on a unit that has the classifier role itself".to_owned(),
                "a unit with both roles classifies its own connections; remove `classifier` or the classifier role",
            );
            return None;
        }
        if !self.reference(
            &unit.classifier,
            path.clone(),
            names,
            codes::UNDEFINED_UNIT,
            "unit",
            "cluster.units",
        ) {
            return None;
        }
        let name = target.get_ref();
        match roles_by_name.get(name.as_str()) {
            Some(target_roles) if target_roles.contains(&Role::Classifier) => {
                Some(Some(name.clone()))
            }
            Some(_) => {
                let classifiers: Vec<&str> = {
                    let mut c: Vec<&str> = roles_by_name
                        .iter()
                        .filter(|(_, r)| r.contains(&Role::Classifier))
                        .map(|(n, _)| *n)
                        .collect();
                    c.sort_unstable();
                    c
                };
                let hint = if classifiers.is_empty() {
                    format!("add \"classifier\" to the roles of unit \"{name}\"")
                } else {
                    format!(
                        "add \"classifier\" to the roles of unit \"{name}\", or name a classifier unit: {}",
                        classifiers.join(", ")
                    )
                };
                self.sink.error(
                    codes::NOT_A_CLASSIFIER,
                    &target.span(),
                    path,
                    format!("unit \"{name}\" does not have the classifier role"),
                    Some(hint),
                );
                None
            }
            // The target's roles could not be read (`roles_complete` is false); that error is
            // reported already.
            None => {
                debug_assert!(!roles_complete);
                None
            }
        }
    }

    // ---- health checks -------------------------------------------------------------------

    fn health_checks(&mut self, raw: &[RawHealthCheck]) -> Built<HealthCheck> {
        let names = self.names("health check", raw.iter().map(|c| (&c.name, &c.at)));
        let mut items = Some(Vec::with_capacity(raw.len()));
        for check in raw {
            let built = self.health_check(check);
            match (built, items.as_mut()) {
                (Some(c), Some(list)) => list.push(c),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    fn positive(&mut self, field: &Field<Duration>, path: String, what: &str) -> bool {
        match field.spanned() {
            Some(d) if d.get_ref().is_zero() => {
                self.sink.error(
                    codes::BAD_DURATION,
                    &d.span(),
                    path,
                    format!("{what} must be longer than zero"),
                    Some("e.g. \"500ms\" or \"2s\"".to_owned()),
                );
                false
            }
            _ => true,
        }
    }

    fn health_check(&mut self, raw: &RawHealthCheck) -> Option<HealthCheck> {
        let at = &raw.at;
        let interval_ok = self.positive(&raw.interval, at.field("interval"), "interval");
        let timeout_ok = self.positive(&raw.timeout, at.field("timeout"), "timeout");
        let interval = match &raw.interval {
            Field::Absent => Some(DEFAULT_INTERVAL),
            other => other.get().copied(),
        };
        let timeout = match &raw.timeout {
            Field::Absent => Some(DEFAULT_TIMEOUT),
            other => other.get().copied(),
        };
        let mut timing_ok = interval_ok && timeout_ok;
        if let (Some(interval), Some(timeout), true) = (interval, timeout, timing_ok)
            && timeout >= interval
        {
            timing_ok = false;
            let (span, path) = match (raw.timeout.span(), raw.interval.span()) {
                (Some(span), _) => (span, at.field("timeout")),
                (None, Some(span)) => (span, at.field("interval")),
                (None, None) => (at.span.clone(), at.field("timeout")),
            };
            let default =
                |field: &Field<Duration>| if field.is_written() { "" } else { " (default)" };
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                path,
                format!(
                    "timeout {}{} is not shorter than interval {}{}",
                    format_duration(timeout),
                    default(&raw.timeout),
                    format_duration(interval),
                    default(&raw.interval),
                ),
                Some("a probe must finish before the next one starts: make timeout shorter than interval".to_owned()),
            );
        }
        let probe = self.probe(raw);
        let (name, kind_ok) = (raw.name.get()?, raw.kind.get().is_some());
        let (Some(interval), Some(timeout), Some(probe), true, true) =
            (interval, timeout, probe, timing_ok, kind_ok)
        else {
            return None;
        };
        let rise = match &raw.rise {
            Field::Absent => DEFAULT_RISE,
            other => *other.get()?,
        };
        let fall = match &raw.fall {
            Field::Absent => DEFAULT_FALL,
            other => *other.get()?,
        };
        Some(HealthCheck {
            name: name.clone(),
            interval,
            timeout,
            rise,
            fall,
            probe,
        })
    }

    fn probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
        let at = &raw.at;
        let kind = raw.kind.get()?.0;
        let kind_word = kind.keyword();
        let only = |key: &str, for_kind: &str| {
            (
                format!("`{key}` only applies to {for_kind} checks, not to {kind_word} checks"),
                format!("remove `{key}`, or change `kind` to \"{for_kind}\""),
            )
        };
        if kind != CheckKind::Http {
            for (key, written) in [
                ("path", raw.path.is_written()),
                ("expect_status", raw.expect_status.is_written()),
                ("body_contains", raw.body_contains.is_written()),
            ] {
                if written {
                    let (message, hint) = only(key, "http");
                    let span = match key {
                        "path" => raw.path.span(),
                        "expect_status" => raw.expect_status.span(),
                        _ => raw.body_contains.span(),
                    };
                    if let Some(span) = span {
                        self.sink.error(
                            codes::CONFLICTING_SETTINGS,
                            &span,
                            at.field(key),
                            message,
                            Some(hint),
                        );
                    }
                }
            }
        }
        if kind != CheckKind::Exec && raw.command.is_written() {
            let (message, hint) = only("command", "exec");
            self.not_applicable(&raw.command, at.field("command"), message, &hint);
        }
        let conflicts = (kind != CheckKind::Http
            && (raw.path.is_written()
                || raw.expect_status.is_written()
                || raw.body_contains.is_written()))
            || (kind != CheckKind::Exec && raw.command.is_written());

        let probe = match kind {
            CheckKind::Tcp => Some(Probe::Tcp),
            CheckKind::Http => self.http_probe(raw),
            CheckKind::Exec => self.exec_probe(raw),
        };
        if conflicts { None } else { probe }
    }

    fn http_probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
        let at = &raw.at;
        let path = match &raw.path {
            Field::Absent => {
                self.missing(
                    at,
                    "path",
                    "http check has no `path`".to_owned(),
                    "add the request path, e.g. `path = \"/healthz\"`".to_owned(),
                );
                None
            }
            Field::Invalid => None,
            Field::Present(p) => {
                let text = p.get_ref();
                if !text.starts_with('/')
                    || text.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    self.sink.error(
                        codes::BAD_VALUE,
                        &p.span(),
                        at.field("path"),
                        format!("path \"{text}\" is not an absolute request path"),
                        Some("start with '/' and use no spaces, e.g. \"/healthz\"".to_owned()),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            }
        };
        let expect_status = match &raw.expect_status {
            Field::Absent => Some(DEFAULT_EXPECT_STATUS),
            other => other.get().copied(),
        };
        let body_contains = match &raw.body_contains {
            Field::Absent => Some(None),
            other => other.get().map(|b| Some(b.clone())),
        };
        Some(Probe::Http {
            path: path?,
            expect_status: expect_status?,
            body_contains: body_contains?,
        })
    }

    fn exec_probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
        let at = &raw.at;
        let command = match &raw.command {
            Field::Absent => {
                self.missing(
                    at,
                    "command",
                    "exec check has no `command`".to_owned(),
                    "add the program and its arguments, e.g. `command = [\"/usr/local/bin/check\", \"--quick\"]`".to_owned(),
                );
                return None;
            }
            Field::Invalid => return None,
            Field::Present(c) => c,
        };
        let Some(program) = command.get_ref().first() else {
            self.empty_list(
                &command.span(),
                at.field("command"),
                "exec check has an empty `command`".to_owned(),
                "give the program and its arguments, e.g. [\"/usr/local/bin/check\", \"--quick\"]",
            );
            return None;
        };
        if program.get_ref().trim().is_empty() {
            self.sink.error(
                codes::BAD_VALUE,
                &program.span(),
                format!("{}[0]", at.field("command")),
                "the program to run is an empty string".to_owned(),
                Some("the first entry is the program, e.g. \"/usr/local/bin/check\"".to_owned()),
            );
            return None;
        }
        Some(Probe::Exec {
            command: command
                .get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        })
    }

    // ---- certificates and listeners ------------------------------------------------------

    fn certificates(&mut self, raw: &[RawCertificate]) -> Built<Certificate> {
        let names = self.names("certificate", raw.iter().map(|c| (&c.name, &c.at)));
        let mut items = Some(Vec::with_capacity(raw.len()));
        for cert in raw {
            let built = self.certificate(cert);
            match (built, items.as_mut()) {
                (Some(c), Some(list)) => list.push(c),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    fn pem_file(&mut self, field: &Field<String>, path: String, kind: PemKind) -> Option<PathBuf> {
        let written = field.spanned()?;
        if written.get_ref().is_empty() {
            self.sink.error(
                codes::BAD_VALUE,
                &written.span(),
                path,
                "the file name is empty".to_owned(),
                None,
            );
            return None;
        }
        let resolved = files::resolve(&self.base, written.get_ref());
        match files::check_pem(&resolved, kind) {
            Ok(()) => Some(resolved),
            Err(problem) => {
                self.sink.error(
                    problem.code,
                    &written.span(),
                    path,
                    problem.message,
                    problem.hint,
                );
                None
            }
        }
    }

    fn certificate(&mut self, raw: &RawCertificate) -> Option<Certificate> {
        let at = &raw.at;
        let cert_file = self.pem_file(&raw.cert_file, at.field("cert_file"), PemKind::Certificate);
        let key_file = self.pem_file(&raw.key_file, at.field("key_file"), PemKind::PrivateKey);
        let server_names = raw.server_names.spanned().and_then(|list| {
            let path = at.field("server_names");
            if list.get_ref().is_empty() {
                self.empty_list(
                    &list.span(),
                    path,
                    "the certificate has no server names".to_owned(),
                    "list the SNI names it serves, e.g. [\"www.example.com\", \"*.example.com\"]",
                );
                return None;
            }
            let mut ok = true;
            for (i, name) in list.get_ref().iter().enumerate() {
                if !is_dns_name(name.get_ref()) {
                    ok = false;
                    self.sink.error(
                        codes::BAD_VALUE,
                        &name.span(),
                        format!("{path}[{i}]"),
                        format!("\"{}\" is not a DNS name", name.get_ref()),
                        Some("use a host name such as \"www.example.com\" or a wildcard such as \"*.example.com\"; SNI carries no IP addresses".to_owned()),
                    );
                }
            }
            let lowered: Vec<Spanned<String>> = list
                .get_ref()
                .iter()
                .map(|n| Spanned::new(n.span(), n.get_ref().to_ascii_lowercase()))
                .collect();
            ok &= self.no_duplicate_entries(&lowered, &path, |n: &String| format!("server name \"{n}\""));
            ok.then(|| lowered.into_iter().map(Spanned::into_inner).collect())
        });
        Some(Certificate {
            name: raw.name.get()?.clone(),
            cert_file: cert_file?,
            key_file: key_file?,
            server_names: server_names?,
        })
    }

    fn listeners(
        &mut self,
        raw: &[RawListener],
        certificates: &Built<Certificate>,
    ) -> Built<Listener> {
        let names = self.names("listener", raw.iter().map(|l| (&l.name, &l.at)));
        let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
        let mut items = Some(Vec::with_capacity(raw.len()));
        for listener in raw {
            if let Some(address) = listener.address.spanned() {
                if let Some(first) = addresses.get(address.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        listener.at.field("address"),
                        format!("address {} is already used by {first}", address.get_ref()),
                        Some("every listener needs its own address and port".to_owned()),
                    );
                    items = None;
                } else {
                    addresses.insert(*address.get_ref(), &listener.at.path);
                }
            }
            let built = self.listener(listener, certificates);
            match (built, items.as_mut()) {
                (Some(l), Some(list)) => list.push(l),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    fn listener(
        &mut self,
        raw: &RawListener,
        certificates: &Built<Certificate>,
    ) -> Option<Listener> {
        let at = &raw.at;
        let kind = raw.protocol.get()?.0;
        let protocol = match kind {
            ListenerKind::Http | ListenerKind::H2c => {
                if raw.certificates.is_written() {
                    self.not_applicable(
                        &raw.certificates,
                        at.field("certificates"),
                        format!(
                            "`certificates` only applies to https listeners, not to {} listeners",
                            kind.keyword()
                        ),
                        "remove `certificates`, or set `protocol = \"https\"`",
                    );
                    return None;
                }
                if kind == ListenerKind::Http {
                    ListenerProtocol::Http
                } else {
                    ListenerProtocol::H2c
                }
            }
            ListenerKind::Https => {
                let list = match &raw.certificates {
                    Field::Absent => {
                        let name = raw.name.get().map_or("", String::as_str);
                        self.missing(
                            at,
                            "certificates",
                            format!("https listener \"{name}\" has no certificates"),
                            "add `certificates = [\"NAME\", …]` naming [[tls.certificates]] entries".to_owned(),
                        );
                        return None;
                    }
                    Field::Invalid => return None,
                    Field::Present(list) => list,
                };
                let path = at.field("certificates");
                if list.get_ref().is_empty() {
                    self.empty_list(
                        &list.span(),
                        path,
                        "https listener has an empty `certificates` list".to_owned(),
                        "name at least one [[tls.certificates]] entry",
                    );
                    return None;
                }
                let mut ok = self.no_duplicate_entries(list.get_ref(), &path, |n: &String| {
                    format!("certificate \"{n}\"")
                });
                for (i, name) in list.get_ref().iter().enumerate() {
                    let field = Field::Present(name.clone());
                    ok &= self.reference(
                        &field,
                        format!("{path}[{i}]"),
                        &certificates.names,
                        codes::UNDEFINED_CERTIFICATE,
                        "certificate",
                        "tls.certificates",
                    );
                }
                if ok {
                    ok = self.distinct_server_names(list.get_ref(), &path, certificates);
                }
                if !ok {
                    return None;
                }
                ListenerProtocol::Https {
                    certificates: list.get_ref().iter().map(|n| n.get_ref().clone()).collect(),
                }
            }
        };
        Some(Listener {
            name: raw.name.get()?.clone(),
            address: *raw.address.get()?,
            protocol,
        })
    }

    /// Two certificates of one listener must not claim the same SNI name.
    fn distinct_server_names(
        &mut self,
        names: &[Spanned<String>],
        path: &str,
        certificates: &Built<Certificate>,
    ) -> bool {
        let Some(defined) = certificates.items.as_ref() else {
            return true; // A certificate failed; its own error is reported.
        };
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let Some(cert) = defined.iter().find(|c| &c.name == name.get_ref()) else {
                continue;
            };
            for server_name in &cert.server_names {
                match owner.get(server_name.as_str()) {
                    Some(first) if *first != cert.name => {
                        ok = false;
                        self.sink.error(
                            codes::DUPLICATE_SERVER_NAME,
                            &name.span(),
                            format!("{path}[{i}]"),
                            format!(
                                "server name \"{server_name}\" is served by both certificate \"{first}\" and certificate \"{}\"",
                                cert.name
                            ),
                            Some("SNI must pick exactly one certificate: remove the name from one of them".to_owned()),
                        );
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(server_name, &cert.name);
                    }
                }
            }
        }
        ok
    }

    // ---- pools ---------------------------------------------------------------------------

    fn pools(&mut self, raw: &[RawPool], checks: &Names) -> Built<Pool> {
        let names = self.names("pool", raw.iter().map(|p| (&p.name, &p.at)));
        // Host ids and names are unique across the whole configuration.
        let mut host_ids: HashMap<u32, &str> = HashMap::new();
        let _ = self.names(
            "host",
            raw.iter()
                .flat_map(|p| p.hosts.iter().map(|h| (&h.name, &h.at))),
        );
        let mut items = Some(Vec::with_capacity(raw.len()));
        for pool in raw {
            let mut ok = true;
            for host in &pool.hosts {
                if let Some(id) = host.id.spanned() {
                    if let Some(first) = host_ids.get(id.get_ref()) {
                        ok = false;
                        self.sink.error(
                            codes::DUPLICATE_ID,
                            &id.span(),
                            host.at.field("id"),
                            format!("host id {} is already used by {first}", id.get_ref()),
                            Some("host ids are unique across the whole configuration".to_owned()),
                        );
                    } else {
                        host_ids.insert(*id.get_ref(), &host.at.path);
                    }
                }
            }
            let built = self.pool(pool, checks);
            match (built, items.as_mut(), ok) {
                (Some(p), Some(list), true) => list.push(p),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    fn pool(&mut self, raw: &RawPool, checks: &Names) -> Option<Pool> {
        let at = &raw.at;
        let name = raw.name.get().map_or("", String::as_str);
        let check_ok = !raw.health_check.is_written()
            || self.reference(
                &raw.health_check,
                at.field("health_check"),
                checks,
                codes::UNDEFINED_CHECK,
                "health check",
                "health_checks",
            );
        if raw.hosts.is_empty() {
            let message = format!("pool \"{name}\" has no hosts");
            let hint = "add at least one [[pools.hosts]] table after the pool".to_owned();
            if raw.hosts_written {
                self.empty_list(&at.span, at.field("hosts"), message, &hint);
            } else {
                self.missing(at, "hosts", message, hint);
            }
            return None;
        }
        let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
        let mut hosts = Some(Vec::with_capacity(raw.hosts.len()));
        for host in &raw.hosts {
            if let Some(address) = host.address.spanned() {
                let addr = address.get_ref();
                if addr.ip().is_unspecified() {
                    self.sink.error(
                        codes::BAD_ADDRESS,
                        &address.span(),
                        host.at.field("address"),
                        format!("host address {addr} is the unspecified address"),
                        Some("give the address the application is reached at".to_owned()),
                    );
                    hosts = None;
                } else if let Some(first) = addresses.get(addr) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        host.at.field("address"),
                        format!("address {addr} is already used by {first} in this pool"),
                        Some("each host of a pool is a distinct endpoint".to_owned()),
                    );
                    hosts = None;
                } else {
                    addresses.insert(*addr, &host.at.path);
                }
            }
            let app = host.app.spanned().and_then(|app| {
                let text = app.get_ref();
                if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.sink.error(
                        codes::BAD_VALUE,
                        &app.span(),
                        host.at.field("app"),
                        format!("application id \"{text}\" is empty, too long or has spaces"),
                        Some("use the id the application reports to the host agent, e.g. \"shop-frontend\"".to_owned()),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            });
            let capacity = match &host.capacity {
                Field::Absent => Some(DEFAULT_CAPACITY),
                other => other.get().copied(),
            };
            match (
                host.id.get(),
                host.name.get(),
                host.address.get(),
                app,
                capacity,
                hosts.as_mut(),
            ) {
                (Some(id), Some(name), Some(address), Some(app), Some(capacity), Some(list)) => {
                    list.push(Host {
                        id: HostId(*id),
                        name: name.clone(),
                        address: *address,
                        app,
                        capacity,
                    })
                }
                _ => hosts = None,
            }
        }
        let hosts = hosts?;
        if !check_ok {
            return None;
        }
        Some(Pool {
            name: raw.name.get()?.clone(),
            health_check: raw.health_check.get().cloned(),
            hosts,
        })
    }

    // ---- services ------------------------------------------------------------------------

    fn services(
        &mut self,
        raw: &[RawService],
        pools: &Names,
        listeners: &Names,
    ) -> Option<Vec<Service>> {
        let _ = self.names("service", raw.iter().map(|s| (&s.name, &s.at)));
        let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
        let mut out = Some(Vec::with_capacity(raw.len()));
        for service in raw {
            let mut ok = true;
            if let (Some(vip), Some(protocol)) = (service.vip.spanned(), service.protocol.get()) {
                let key = (*vip.get_ref(), protocol.0);
                let shown = format!("{}/{}", vip.get_ref(), protocol.0.keyword());
                if let Some(first) = vips.get(&key) {
                    ok = false;
                    self.sink.error(
                        codes::DUPLICATE_VIP,
                        &vip.span(),
                        service.at.field("vip"),
                        format!("VIP {shown} is already used by {first}"),
                        Some("each VIP:port/protocol belongs to one service; change the port or merge the services".to_owned()),
                    );
                } else {
                    let owner = match service.name.get() {
                        Some(name) => format!("service \"{name}\""),
                        None => service.at.path.clone(),
                    };
                    vips.insert(key, owner);
                }
            }
            let built = self.service(service, pools, listeners);
            match (built, out.as_mut(), ok) {
                (Some(s), Some(list), true) => list.push(s),
                _ => out = None,
            }
        }
        out
    }

    fn service(&mut self, raw: &RawService, pools: &Names, listeners: &Names) -> Option<Service> {
        let at = &raw.at;
        let mut ok = true;
        if let Some(vip) = raw.vip.spanned()
            && vip.get_ref().ip().is_unspecified()
        {
            ok = false;
            self.sink.error(
                codes::BAD_ADDRESS,
                &vip.span(),
                at.field("vip"),
                format!("VIP {} is the unspecified address", vip.get_ref()),
                Some(
                    "a VIP is the address clients connect to, e.g. \"198.51.100.10:80\"".to_owned(),
                ),
            );
        }
        ok &= self.reference(
            &raw.pool,
            at.field("pool"),
            pools,
            codes::UNDEFINED_POOL,
            "pool",
            "pools",
        );
        let mode = self.mode(raw, listeners);
        let affinity = raw.mode.get().and_then(|mode| self.affinity(raw, mode.0));
        if !ok {
            return None;
        }
        Some(Service {
            name: raw.name.get()?.clone(),
            vip: *raw.vip.get()?,
            protocol: raw.protocol.get()?.0,
            mode: mode?,
            pool: raw.pool.get()?.clone(),
            affinity: affinity?,
        })
    }

    fn mode(&mut self, raw: &RawService, listeners: &Names) -> Option<ServiceMode> {
        let at = &raw.at;
        let mode = raw.mode.get()?.0;
        let word = mode.keyword();
        let mut ok = true;
        if mode != ModeKind::Packet
            && let Some(protocol) = raw.protocol.spanned()
            && protocol.get_ref().0 == Protocol::Udp
        {
            ok = false;
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &protocol.span(),
                at.field("protocol"),
                format!("{word} mode needs TCP, but the service is UDP"),
                Some("UDP services use `mode = \"packet\"`".to_owned()),
            );
        }
        let delivery = match mode {
            ModeKind::Request => {
                if raw.delivery.is_written() {
                    ok = false;
                    self.not_applicable(
                        &raw.delivery,
                        at.field("delivery"),
                        "`delivery` does not apply to request mode".to_owned(),
                        "the request router terminates the connection and opens its own to the host; remove `delivery`",
                    );
                }
                None
            }
            ModeKind::Packet | ModeKind::Migrate => match &raw.delivery {
                Field::Absent => {
                    self.missing(
                        at,
                        "delivery",
                        format!("{word}-mode service has no `delivery`"),
                        "add `delivery = \"nat\"`, \"half-nat\" or \"tunnel\"".to_owned(),
                    );
                    return None;
                }
                Field::Invalid => return None,
                Field::Present(d) => Some(d.get_ref().0),
            },
        };
        let listener = match mode {
            ModeKind::Request => match &raw.listener {
                Field::Absent => {
                    self.missing(
                        at,
                        "listener",
                        "request-mode service has no `listener`".to_owned(),
                        "add `listener = \"NAME\"` naming a [[listeners]] entry".to_owned(),
                    );
                    return None;
                }
                Field::Invalid => return None,
                Field::Present(l) => {
                    ok &= self.reference(
                        &raw.listener,
                        at.field("listener"),
                        listeners,
                        codes::UNDEFINED_LISTENER,
                        "listener",
                        "listeners",
                    );
                    Some(l.get_ref().clone())
                }
            },
            ModeKind::Packet | ModeKind::Migrate => {
                if raw.listener.is_written() {
                    ok = false;
                    self.not_applicable(
                        &raw.listener,
                        at.field("listener"),
                        format!("`listener` only applies to request mode, not to {word} mode"),
                        "remove `listener`, or set `mode = \"request\"`",
                    );
                }
                None
            }
        };
        if !ok {
            return None;
        }
        match (mode, delivery, listener) {
            (ModeKind::Packet, Some(delivery), _) => Some(ServiceMode::Packet { delivery }),
            (ModeKind::Migrate, Some(delivery), _) => Some(ServiceMode::Migrate { delivery }),
            (ModeKind::Request, _, Some(listener)) => Some(ServiceMode::Request { listener }),
            _ => None,
        }
    }

    fn affinity(&mut self, raw: &RawService, mode: ModeKind) -> Option<Affinity> {
        let Some(affinity) = raw.affinity.as_ref() else {
            return Some(Affinity::None);
        };
        let RawAffinity {
            at,
            kind,
            timeout,
            cookie,
            header,
        } = affinity;
        let kind = kind.spanned()?;
        let word = kind.get_ref().0.keyword();
        let mut ok = true;
        let needs_content = matches!(
            kind.get_ref().0,
            AffinityKind::Cookie | AffinityKind::Header | AffinityKind::TlsSession
        );
        if needs_content && mode == ModeKind::Packet {
            ok = false;
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &kind.span(),
                at.field("kind"),
                format!("{word} affinity needs to read the connection's content, which packet mode never does"),
                Some("use `mode = \"request\"` or `mode = \"migrate\"`, or client-ip affinity".to_owned()),
            );
        }
        if kind.get_ref().0 == AffinityKind::None && timeout.is_written() {
            ok = false;
            self.not_applicable(
                timeout,
                at.field("timeout"),
                "`timeout` does not apply to affinity kind \"none\"".to_owned(),
                "remove `timeout`, or choose an affinity kind",
            );
        }
        if !self.positive(timeout, at.field("timeout"), "affinity timeout") {
            ok = false;
        }
        let named = |this: &mut Self,
                     field: &Field<String>,
                     key: &str,
                     wanted: AffinityKind|
         -> Option<String> {
            let is_wanted = kind.get_ref().0 == wanted;
            match field {
                Field::Absent if is_wanted => {
                    this.missing(
                        at,
                        key,
                        format!("{word} affinity has no `{key}` name"),
                        format!("add `{key} = \"NAME\"` inside the affinity table"),
                    );
                    None
                }
                Field::Absent => Some(String::new()),
                Field::Invalid => None,
                Field::Present(name) if !is_wanted => {
                    this.sink.error(
                        codes::CONFLICTING_SETTINGS,
                        &name.span(),
                        at.field(key),
                        format!("`{key}` does not apply to {word} affinity"),
                        Some(format!(
                            "remove `{key}`, or set `kind = \"{}\"`",
                            wanted.keyword()
                        )),
                    );
                    None
                }
                Field::Present(name) => {
                    let text = name.get_ref();
                    if text.is_empty() || !text.chars().all(is_token_char) {
                        this.sink.error(
                            codes::BAD_VALUE,
                            &name.span(),
                            at.field(key),
                            format!("\"{text}\" is not a valid {key} name"),
                            Some("use letters, digits and !#$%&'*+-.^_`|~ only, e.g. \"SWITCHYARD\" or \"X-Session\"".to_owned()),
                        );
                        None
                    } else {
                        Some(text.clone())
                    }
                }
            }
        };
        let cookie = named(self, cookie, "cookie", AffinityKind::Cookie);
        let header = named(self, header, "header", AffinityKind::Header);
        let (Some(cookie), Some(header), true) = (cookie, header, ok) else {
            return None;
        };
        let timeout = match timeout {
            Field::Absent => DEFAULT_AFFINITY_TIMEOUT,
            other => *other.get()?,
        };
        Some(match kind.get_ref().0 {
            AffinityKind::None => Affinity::None,
            AffinityKind::ClientIp => Affinity::ClientIp { timeout },
            AffinityKind::FourTuple => Affinity::FourTuple { timeout },
            AffinityKind::TlsSession => Affinity::TlsSession { timeout },
            AffinityKind::Cookie => Affinity::Cookie {
                name: cookie,
                timeout,
            },
            AffinityKind::Header => Affinity::Header {
                name: header,
                timeout,
            },
        })
    }

    // ---- roles ---------------------------------------------------------------------------

    /// The services need units with the roles that carry them out.
    fn roles_needed(&mut self, units: &[Unit], raw: &[RawService], services: &[Service]) {
        let has = |role: Role| units.iter().any(|u| u.has_role(role));
        let mut reported = HashSet::new();
        for (service, raw) in services.iter().zip(raw) {
            let needed: &[Role] = match service.mode {
                ServiceMode::Packet { .. } | ServiceMode::Migrate { .. } => {
                    &[Role::Forwarder, Role::Classifier]
                }
                ServiceMode::Request { .. } => &[Role::Router],
            };
            for &role in needed {
                if has(role) || !reported.insert(role) {
                    continue;
                }
                let span = raw.mode.span().unwrap_or_else(|| raw.at.span.clone());
                let mode = match service.mode {
                    ServiceMode::Packet { .. } => "packet",
                    ServiceMode::Request { .. } => "request",
                    ServiceMode::Migrate { .. } => "migrate",
                };
                self.sink.error(
                    codes::MISSING_ROLE,
                    &span,
                    raw.at.field("mode"),
                    format!(
                        "service \"{}\" uses {mode} mode, but no unit has the {} role",
                        service.name,
                        role.keyword()
                    ),
                    Some(match units {
                        [only] => format!(
                            "add \"{}\" to the roles of unit \"{}\"",
                            role.keyword(),
                            only.name
                        ),
                        _ => format!(
                            "add \"{}\" to the roles of one of the {} units",
                            role.keyword(),
                            units.len()
                        ),
                    }),
                );
            }
        }
    }
}
