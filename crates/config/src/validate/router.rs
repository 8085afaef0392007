//! Request-router rules: `[router]` limits and `[router.upstream]` settings (durations
//! longer than zero, a valid request id header name) and the routing rules of request-mode
//! services (`services[].routes`): one path condition per rule, paths that are absolute,
//! regular expressions that compile, methods and header names that are HTTP tokens, a
//! prefix rewrite only with a prefix match, and pools that exist.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use crate::decode::{Field, Span};
use crate::diagnostics::codes;
use crate::raw::{
    At, ModeKind, RawHeaderPair, RawRoute, RawRouteCache, RawRouter, RawService, RawUpstream,
};
use crate::router::router_defaults as d;
use crate::router::{HeaderMatch, PathMatch, Route, RouteCache, RouterSettings, UpstreamSettings};

use super::services::is_token_char;
use super::{Names, Validator};

/// Largest compiled size of a route's regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Validator<'_> {
    /// Builds the router settings; all defaults when the table is absent.
    pub(super) fn router(&mut self, raw: Option<&RawRouter>) -> Option<RouterSettings> {
        let Some(raw) = raw else {
            return Some(RouterSettings::default());
        };
        let at = &raw.at;
        let mut ok = self.positive(
            &raw.header_read_timeout,
            at.field("header_read_timeout"),
            "header_read_timeout",
        );
        let request_id_header = match &raw.request_id_header {
            Field::Absent => Some(d::REQUEST_ID_HEADER.to_owned()),
            Field::Invalid => None,
            Field::Present(name) => {
                self.header_name(name, at.field("request_id_header"), "request id header")
            }
        };
        let upstream = match &raw.upstream {
            None => Some(UpstreamSettings::default()),
            Some(up) => {
                let at = &up.at;
                let durations: [(&Field<Duration>, &str); 4] = [
                    (&up.connect_timeout, "connect_timeout"),
                    (&up.request_timeout, "request_timeout"),
                    (&up.idle_timeout, "idle_timeout"),
                    (&up.outlier_ejection, "outlier_ejection"),
                ];
                for (field, key) in durations {
                    ok &= self.positive(field, at.field(key), key);
                }
                upstream_settings(up)
            }
        };
        if !ok {
            return None;
        }
        Some(RouterSettings {
            max_header_bytes: value_or(&raw.max_header_bytes, d::MAX_HEADER_BYTES)?,
            max_headers: value_or(&raw.max_headers, d::MAX_HEADERS)?,
            header_read_timeout: Validator::duration_or(
                &raw.header_read_timeout,
                d::HEADER_READ_TIMEOUT,
            )?,
            max_body_bytes: match &raw.max_body_bytes {
                Field::Absent => d::MAX_BODY_BYTES,
                other => u64::from(*other.get()?),
            },
            max_requests_per_client: value_or(
                &raw.max_requests_per_client,
                d::MAX_REQUESTS_PER_CLIENT,
            )?,
            request_id_header: request_id_header?,
            upstream: upstream?,
        })
    }

    /// The routing rules of `raw` services (built ones in `services`, same order, when
    /// every service built), by service name; services without rules are absent.
    pub(super) fn routes(
        &mut self,
        raw: &[RawService],
        services: Option<&[crate::model::Service]>,
        pools: &Names,
    ) -> Option<BTreeMap<String, Vec<Route>>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (i, service) in raw.iter().enumerate() {
            let Some(first) = service.routes.first() else {
                continue;
            };
            if let Some(mode) = service.mode.get()
                && mode.0 != ModeKind::Request
            {
                ok = false;
                self.sink.error(
                    codes::CONFLICTING_SETTINGS,
                    &first.at.span,
                    service.at.field("routes"),
                    "`routes` only apply to request-mode services".to_owned(),
                    Some("routing rules need the request router: set `mode = \"request\"`, or remove the routes".to_owned()),
                );
                continue;
            }
            let mut built = Some(Vec::with_capacity(service.routes.len()));
            for route in &service.routes {
                match (self.route(route, pools), built.as_mut()) {
                    (Some(r), Some(list)) => list.push(r),
                    _ => built = None,
                }
            }
            match (built, services.and_then(|s| s.get(i))) {
                (Some(routes), Some(service)) => {
                    out.insert(service.name.clone(), routes);
                }
                _ => ok = false,
            }
        }
        (ok && services.is_some()).then_some(out)
    }

    fn route(&mut self, raw: &RawRoute, pools: &Names) -> Option<Route> {
        let at = &raw.at;
        let mut ok = self.reference(
            &raw.pool,
            at.field("pool"),
            pools,
            codes::UNDEFINED_POOL,
            "pool",
            "pools",
        );
        let host = match raw.host.spanned() {
            None => Some(None),
            Some(host) => self.route_host(host, at.field("host")).map(Some),
        };
        let path = self.path_match(raw);
        let methods = match raw.methods.spanned() {
            None => Some(Vec::new()),
            Some(list) => {
                let mut methods = Some(Vec::new());
                for (i, m) in list.get_ref().iter().enumerate() {
                    let text = m.get_ref();
                    if text.is_empty() || !text.chars().all(is_token_char) {
                        self.sink.error(
                            codes::BAD_VALUE,
                            &m.span(),
                            format!("{}[{i}]", at.field("methods")),
                            format!("\"{text}\" is not an HTTP method"),
                            Some(
                                "methods are tokens such as \"GET\", \"POST\" or \"PURGE\""
                                    .to_owned(),
                            ),
                        );
                        methods = None;
                    } else if let Some(list) = methods.as_mut() {
                        list.push(text.clone());
                    }
                }
                methods
            }
        };
        let headers = self.header_pairs(&raw.headers, false).map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| HeaderMatch { name, value })
                .collect::<Vec<_>>()
        });
        let add_headers = self.header_pairs(&raw.add_headers, true).map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| (name, value.unwrap_or_default()))
                .collect::<Vec<_>>()
        });
        let remove_headers = match raw.remove_headers.spanned() {
            None => Some(Vec::new()),
            Some(list) => {
                let mut names = Some(Vec::new());
                for (i, name) in list.get_ref().iter().enumerate() {
                    let path = format!("{}[{i}]", at.field("remove_headers"));
                    match (self.header_name(name, path, "header"), names.as_mut()) {
                        (Some(n), Some(list)) => list.push(n),
                        _ => names = None,
                    }
                }
                names
            }
        };
        let rewrite_prefix = match raw.rewrite_prefix.spanned() {
            None => Some(None),
            Some(rewrite) => {
                if !raw.path_prefix.is_written() {
                    ok = false;
                    self.sink.error(
                        codes::CONFLICTING_SETTINGS,
                        &rewrite.span(),
                        at.field("rewrite_prefix"),
                        "`rewrite_prefix` without `path_prefix`".to_owned(),
                        Some(
                            "a rewrite replaces the matched prefix: add `path_prefix = \"/…\"`"
                                .to_owned(),
                        ),
                    );
                    None
                } else if self.absolute_path(rewrite, at.field("rewrite_prefix")) {
                    Some(Some(rewrite.get_ref().clone()))
                } else {
                    None
                }
            }
        };
        let cache = match &raw.cache {
            None => Some(None),
            Some(c) => self.route_cache(c).map(Some),
        };
        if !ok {
            return None;
        }
        Some(Route {
            host: host?,
            path: path?,
            methods: methods?,
            headers: headers?,
            pool: raw.pool.get()?.clone(),
            rewrite_prefix: rewrite_prefix?,
            add_headers: add_headers?,
            remove_headers: remove_headers?,
            max_body_bytes: match &raw.max_body_bytes {
                Field::Absent => None,
                other => Some(u64::from(*other.get()?)),
            },
            cache: cache?,
        })
    }

    /// A route's `cache` table: `max_bytes` required, `max_object_bytes` at most
    /// `max_bytes`, `default_ttl` longer than zero.
    fn route_cache(&mut self, raw: &RawRouteCache) -> Option<RouteCache> {
        let at = &raw.at;
        let ttl_ok = self.positive(&raw.default_ttl, at.field("default_ttl"), "default_ttl");
        let max_bytes = match &raw.max_bytes {
            Field::Absent => {
                self.missing(
                    at,
                    "max_bytes",
                    "a route cache has no `max_bytes`".to_owned(),
                    "add `max_bytes = 67108864` (bytes the cache may hold)".to_owned(),
                );
                return None;
            }
            other => u64::try_from(*other.get()?).ok()?,
        };
        let max_object_bytes = match raw.max_object_bytes.spanned() {
            None if matches!(raw.max_object_bytes, Field::Invalid) => return None,
            None => (max_bytes / 8).max(1),
            Some(n) => {
                let n = u64::try_from(*n.get_ref()).ok()?;
                if n > max_bytes {
                    self.sink.error(
                        codes::CONFLICTING_SETTINGS,
                        &raw.max_object_bytes.spanned()?.span(),
                        at.field("max_object_bytes"),
                        format!("max_object_bytes {n} is larger than max_bytes {max_bytes}"),
                        Some("one response cannot be larger than the whole cache".to_owned()),
                    );
                    return None;
                }
                n
            }
        };
        if !ttl_ok {
            return None;
        }
        Some(RouteCache {
            max_bytes,
            max_object_bytes,
            default_ttl: match &raw.default_ttl {
                Field::Absent => None,
                other => Some(*other.get()?),
            },
        })
    }

    /// A route's host condition: a DNS name or `*.` and a DNS name, lower-cased.
    fn route_host(&mut self, host: &Spanned<String>, path: String) -> Option<String> {
        let text = host.get_ref().to_ascii_lowercase();
        let name = text.strip_prefix("*.").unwrap_or(&text);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if valid {
            return Some(text);
        }
        self.sink.error(
            codes::BAD_VALUE,
            &host.span(),
            path,
            format!("\"{}\" is not a host name", host.get_ref()),
            Some(
                "write a DNS name without port, e.g. \"api.example.com\" or \"*.example.com\""
                    .to_owned(),
            ),
        );
        None
    }

    /// The single path condition of a route, if any.
    fn path_match(&mut self, raw: &RawRoute) -> Option<Option<PathMatch>> {
        let at = &raw.at;
        let written: Vec<(&str, &Spanned<String>)> = [
            ("path", &raw.path),
            ("path_prefix", &raw.path_prefix),
            ("path_regex", &raw.path_regex),
        ]
        .into_iter()
        .filter_map(|(key, field)| field.spanned().map(|s| (key, s)))
        .collect();
        if [&raw.path, &raw.path_prefix, &raw.path_regex]
            .iter()
            .any(|f| matches!(f, Field::Invalid))
        {
            return None;
        }
        match written.as_slice() {
            [] => Some(None),
            [(key, value)] => {
                let path = at.field(key);
                match *key {
                    "path_regex" => {
                        let pattern = value.get_ref();
                        match regex::RegexBuilder::new(pattern)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .build()
                        {
                            Ok(_) => Some(Some(PathMatch::Regex(pattern.clone()))),
                            Err(e) => {
                                let why = e.to_string();
                                let first = why.lines().last().unwrap_or("").trim().to_owned();
                                self.sink.error(
                                    codes::BAD_VALUE,
                                    &value.span(),
                                    path,
                                    format!("path_regex \"{pattern}\" does not compile: {first}"),
                                    Some(
                                        "use Rust regex syntax, e.g. \"^/users/[0-9]+$\""
                                            .to_owned(),
                                    ),
                                );
                                None
                            }
                        }
                    }
                    _ if !self.absolute_path(value, path) => None,
                    "path" => Some(Some(PathMatch::Exact(value.get_ref().clone()))),
                    _ => Some(Some(PathMatch::Prefix(value.get_ref().clone()))),
                }
            }
            [(first, _), (second, value), ..] => {
                self.sink.error(
                    codes::CONFLICTING_SETTINGS,
                    &value.span(),
                    at.field(second),
                    format!("a route takes one path condition, but has `{first}` and `{second}`"),
                    Some("keep one of `path`, `path_prefix` and `path_regex`; use two routes for two conditions".to_owned()),
                );
                None
            }
        }
    }

    /// Whether `value` is an absolute request path (reported when not).
    fn absolute_path(&mut self, value: &Spanned<String>, path: String) -> bool {
        let text = value.get_ref();
        if text.starts_with('/') && !text.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return true;
        }
        self.sink.error(
            codes::BAD_VALUE,
            &value.span(),
            path,
            format!("\"{text}\" is not an absolute request path"),
            Some("paths start with '/' and hold no spaces, e.g. \"/api/\"".to_owned()),
        );
        false
    }

    /// A header name (an HTTP token), lower-cased.
    fn header_name(&mut self, name: &Spanned<String>, path: String, what: &str) -> Option<String> {
        let text = name.get_ref();
        if !text.is_empty() && text.chars().all(is_token_char) {
            return Some(text.to_ascii_lowercase());
        }
        self.sink.error(
            codes::BAD_VALUE,
            &name.span(),
            path,
            format!("\"{text}\" is not a valid {what} name"),
            Some("use letters, digits and !#$%&'*+-.^_`|~ only, e.g. \"X-Canary\"".to_owned()),
        );
        None
    }

    /// Name/value pairs of `headers` or `add_headers`; `value_required` for the latter.
    fn header_pairs(
        &mut self,
        raw: &[RawHeaderPair],
        value_required: bool,
    ) -> Option<Vec<(String, Option<String>)>> {
        let mut out = Some(Vec::with_capacity(raw.len()));
        for pair in raw {
            let at: &At = &pair.at;
            let name = match pair.name.spanned() {
                Some(name) => self.header_name(name, at.field("name"), "header"),
                None => None,
            };
            let value = match &pair.value {
                Field::Absent if value_required => {
                    self.missing(
                        at,
                        "value",
                        "a header to add has no `value`".to_owned(),
                        "add `value = \"…\"` beside the header's name".to_owned(),
                    );
                    None
                }
                Field::Absent => Some(None),
                Field::Invalid => None,
                Field::Present(v) => self.header_value(v, at.field("value")).map(Some),
            };
            match (name, value, out.as_mut()) {
                (Some(n), Some(v), Some(list)) => list.push((n, v)),
                _ => out = None,
            }
        }
        out
    }

    fn header_value(&mut self, value: &Spanned<String>, path: String) -> Option<String> {
        let text = value.get_ref();
        if text.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            return Some(text.clone());
        }
        let span: Span = value.span();
        self.sink.error(
            codes::BAD_VALUE,
            &span,
            path,
            "header value holds characters HTTP does not allow".to_owned(),
            Some("use visible ASCII characters, spaces and tabs only".to_owned()),
        );
        None
    }
}

/// The upstream settings written (durations already checked), defaults for the rest.
fn upstream_settings(up: &RawUpstream) -> Option<UpstreamSettings> {
    Some(UpstreamSettings {
        connect_timeout: Validator::duration_or(&up.connect_timeout, d::CONNECT_TIMEOUT)?,
        request_timeout: Validator::duration_or(&up.request_timeout, d::REQUEST_TIMEOUT)?,
        idle_timeout: Validator::duration_or(&up.idle_timeout, d::IDLE_TIMEOUT)?,
        max_connections_per_host: value_or(
            &up.max_connections_per_host,
            d::MAX_CONNECTIONS_PER_HOST,
        )?,
        retries: value_or(&up.retries, d::RETRIES)?,
        http2: value_or(&up.http2, false)?,
        outlier_errors: value_or(&up.outlier_errors, d::OUTLIER_ERRORS)?,
        outlier_ejection: Validator::duration_or(&up.outlier_ejection, d::OUTLIER_EJECTION)?,
    })
}

/// The value of an optional field, `default` when absent; `None` when it was written but
/// unusable (reported already).
fn value_or<T: Copy>(field: &Field<T>, default: T) -> Option<T> {
    match field {
        Field::Absent => Some(default),
        other => other.get().copied(),
    }
}
