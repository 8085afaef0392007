//! Health check rules: timing (defaults, timeout below interval) and the settings each
//! probe kind (tcp, http, exec) accepts.

use std::time::Duration;

use crate::decode::{Field, Keyword};
use crate::diagnostics::codes;
use crate::duration::format_duration;
use crate::model::{HealthCheck, Probe};
use crate::raw::{CheckKind, RawHealthCheck};

use super::{
    Built, DEFAULT_EXPECT_STATUS, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT,
    Validator,
};

impl Validator<'_> {
    pub(super) fn health_checks(&mut self, raw: &[RawHealthCheck]) -> Built<HealthCheck> {
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

    pub(super) fn positive(&mut self, field: &Field<Duration>, path: String, what: &str) -> bool {
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

    pub(super) fn health_check(&mut self, raw: &RawHealthCheck) -> Option<HealthCheck> {
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

    pub(super) fn probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
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

    pub(super) fn http_probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
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

    pub(super) fn exec_probe(&mut self, raw: &RawHealthCheck) -> Option<Probe> {
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
}
