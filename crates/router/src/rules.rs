//! Request routing rules, compiled: which service and pool a request belongs to, and the
//! rewrites its route asks for. Built once from the validated configuration.

use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method};
use regex::Regex;
use switchyard_config::{Affinity, Config, PathMatch, Route};

use crate::RouterError;

/// The services of one listener, in file order.
#[derive(Debug, Clone)]
pub(crate) struct ListenerRules {
    pub(crate) services: Vec<ServiceRules>,
}

/// One request-mode service: its routes, default pool and affinity.
#[derive(Debug, Clone)]
pub(crate) struct ServiceRules {
    /// The metrics label of requests no route matched: the service's name.
    pub(crate) label: Arc<str>,
    pub(crate) pool: String,
    pub(crate) affinity: Affinity,
    pub(crate) routes: Vec<CompiledRoute>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    /// The metrics label: `service#N`, N its position in the service's `routes`.
    pub(crate) label: Arc<str>,
    host: Option<HostMatch>,
    path: Option<CompiledPath>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub(crate) pool: String,
    prefix: Option<String>,
    rewrite_prefix: Option<String>,
    pub(crate) add_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove_headers: Vec<HeaderName>,
    pub(crate) max_body_bytes: Option<u64>,
    /// The route's response cache, when enabled.
    pub(crate) cache: Option<std::sync::Arc<crate::cache::ResponseCache>>,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
enum CompiledPath {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// What routing decided for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision<'r> {
    pub(crate) service: &'r ServiceRules,
    pub(crate) route: Option<&'r CompiledRoute>,
}

impl Decision<'_> {
    pub(crate) fn pool(&self) -> &str {
        self.route.map_or(&self.service.pool, |r| &r.pool)
    }

    /// A label for metrics: `service` or `service#route`.
    pub(crate) fn label(&self) -> &Arc<str> {
        self.route.map_or(&self.service.label, |r| &r.label)
    }
}

impl ListenerRules {
    /// The rules of listener `name` in `config`.
    pub(crate) fn build(config: &Config, name: &str) -> Result<Self, RouterError> {
        let mut services = Vec::new();
        for service in config.services_of_listener(name) {
            let routes = config
                .routes(service)
                .iter()
                .enumerate()
                .map(|(i, r)| compile(&service.name, i, r))
                .collect::<Result<Vec<_>, _>>()?;
            services.push(ServiceRules {
                label: Arc::from(service.name.as_str()),
                pool: service.pool.clone(),
                affinity: service.affinity.clone(),
                routes,
            });
        }
        if services.is_empty() {
            return Err(RouterError::Config(format!(
                "no request-mode service uses listener \"{name}\""
            )));
        }
        Ok(Self { services })
    }

    /// The first matching route of the listener's services in file order; else the first
    /// service's pool.
    pub(crate) fn decide(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Decision<'_>> {
        for service in &self.services {
            if let Some(route) = service
                .routes
                .iter()
                .find(|r| r.matches(method, host, path, headers))
            {
                return Some(Decision {
                    service,
                    route: Some(route),
                });
            }
        }
        self.services.first().map(|service| Decision {
            service,
            route: None,
        })
    }
}

fn compile(service: &str, index: usize, r: &Route) -> Result<CompiledRoute, RouterError> {
    let bad = |what: &str| RouterError::Config(format!("route {index}: {what}"));
    let host = r.host.as_ref().map(|h| match h.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
        None => HostMatch::Exact(h.clone()),
    });
    let (path, prefix) = match &r.path {
        None => (None, None),
        Some(PathMatch::Exact(p)) => (Some(CompiledPath::Exact(p.clone())), None),
        Some(PathMatch::Prefix(p)) => (Some(CompiledPath::Prefix(p.clone())), Some(p.clone())),
        Some(PathMatch::Regex(p)) => (
            Some(CompiledPath::Regex(
                Regex::new(p).map_err(|e| bad(&e.to_string()))?,
            )),
            None,
        ),
    };
    let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).map_err(|_| bad("header name"));
    let value = |v: &str| HeaderValue::from_str(v).map_err(|_| bad("header value"));
    Ok(CompiledRoute {
        label: Arc::from(format!("{service}#{index}")),
        host,
        path,
        methods: r
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| bad("method")))
            .collect::<Result<_, _>>()?,
        headers: r
            .headers
            .iter()
            .map(|h| Ok((name(&h.name)?, h.value.as_deref().map(value).transpose()?)))
            .collect::<Result<_, RouterError>>()?,
        pool: r.pool.clone(),
        prefix,
        rewrite_prefix: r.rewrite_prefix.clone(),
        add_headers: r
            .add_headers
            .iter()
            .map(|(n, v)| Ok((name(n)?, value(v)?)))
            .collect::<Result<_, RouterError>>()?,
        remove_headers: r
            .remove_headers
            .iter()
            .map(|n| name(n))
            .collect::<Result<_, _>>()?,
        max_body_bytes: r.max_body_bytes,
        cache: r
            .cache
            .map(|c| std::sync::Arc::new(crate::cache::ResponseCache::new(c))),
    })
}

impl CompiledRoute {
    fn matches(&self, method: &Method, host: &str, path: &str, headers: &HeaderMap) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => host == h,
            Some(HostMatch::Suffix(s)) => host.len() > s.len() && host.ends_with(s.as_str()),
        };
        let path_ok = match &self.path {
            None => true,
            Some(CompiledPath::Exact(p)) => path == p,
            Some(CompiledPath::Prefix(p)) => path.starts_with(p.as_str()),
            Some(CompiledPath::Regex(r)) => r.is_match(path),
        };
        host_ok
            && path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, want)| {
                let mut values = headers.get_all(name).iter();
                match want {
                    None => values.next().is_some(),
                    Some(v) => values.any(|have| have == v),
                }
            })
    }

    /// The path to forward: the matched prefix replaced when the route rewrites it.
    pub(crate) fn rewrite(&self, path: &str) -> Option<String> {
        let (prefix, with) = (self.prefix.as_ref()?, self.rewrite_prefix.as_ref()?);
        let rest = path.strip_prefix(prefix.as_str())?;
        // "/api/" → "/" on "/api/x" gives "/x"; never produce "//x" or an empty path.
        let mut out = with.clone();
        if out.ends_with('/') && rest.starts_with('/') {
            out.pop();
        }
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, rewrite: &str) -> CompiledRoute {
        let r = Route {
            host: None,
            path: Some(PathMatch::Prefix(prefix.to_owned())),
            methods: vec![],
            headers: vec![],
            pool: "p".to_owned(),
            rewrite_prefix: Some(rewrite.to_owned()),
            add_headers: vec![],
            remove_headers: vec![],
            max_body_bytes: None,
            cache: None,
        };
        match compile("s", 0, &r) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn prefix_rewrites_strip_and_replace() {
        assert_eq!(
            route("/api/", "/").rewrite("/api/users").as_deref(),
            Some("/users")
        );
        assert_eq!(
            route("/api/", "/v1/").rewrite("/api/users").as_deref(),
            Some("/v1/users")
        );
        assert_eq!(
            route("/api", "/v1").rewrite("/api/users").as_deref(),
            Some("/v1/users")
        );
        assert_eq!(route("/api/", "/").rewrite("/api/").as_deref(), Some("/"));
        assert_eq!(route("/api", "/").rewrite("/api/x").as_deref(), Some("/x"));
    }
}
