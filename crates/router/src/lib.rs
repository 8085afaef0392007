//! switchyard's request router (layer 7): owns HTTP/1.1, h2c and HTTPS listeners (the
//! certificate chosen by SNI, ALPN h2/http/1.1), per-request routing by host, path,
//! method and headers, forwarding headers and request ids, host choice with cookie and
//! hash affinity (shared through a [`SessionDirectory`] when one is given, which also
//! serves application-cookie affinity), pooled and capped connections to hosts with
//! retries and passive outlier detection, request limits, the access log and the router's
//! metrics.
//!
//! It does not own health or load: the caller feeds [`Backends`] snapshots (from the static
//! configuration today, from the consolidated health & load cache later) through an
//! `ArcSwap`, and reads back [`Router::ejected_hosts`]. It reads no TOML: it takes a
//! validated [`switchyard_config::Config`].
//!
//! ```no_run
//! # async fn run(config: switchyard_config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use switchyard_router::{Backends, Router, RouterConfig};
//! let backends = Arc::new(arc_swap::ArcSwap::from_pointee(Backends::from_config(&config)));
//! let mut registry = prometheus_client::registry::Registry::default();
//! let router = Router::new(RouterConfig::from_config(&config)?, backends, &mut registry);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! router.serve("public", listener).await?;
//! # Ok(()) }
//! ```

mod affinity;
mod backends;
mod cache;
mod metrics;
mod proxy;
mod rules;
mod session_directory;
mod tls;
mod upstream;
mod workers;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::header::HeaderName;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use switchyard_config::{Config, HostId, ListenerProtocol, RouterSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use affinity::{CookieKey, find_cookie, parse_cookie, rendezvous};
pub use backends::{Backend, Backends, HostState};
pub use metrics::RouterCounters;
pub use session_directory::{LOOKUP_TIMEOUT, LookupFuture, SessionDirectory, SessionEntry};

use metrics::Metrics;
use rules::ListenerRules;
use upstream::Upstreams;
use workers::Workers;

/// Why the router could not be built or could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// The configuration cannot be used by the router.
    #[error("router configuration: {0}")]
    Config(String),
    /// A certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// `serve` was given a listener name the configuration does not define.
    #[error("no listener called \"{0}\"")]
    UnknownListener(String),
    /// An invalidation named a route without a response cache.
    #[error("no route \"{0}\" with a response cache")]
    NoCache(String),
    /// The router's worker threads or a listener's socket could not be set up.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
}

/// What to remove from the response caches.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// Everything a route's cache holds (`service#N`), or only the keys (host and path)
    /// starting with `prefix`.
    Route {
        /// The route label, as in metrics.
        route: String,
        /// Key prefix: `host/path…` (host lower case); `None` clears the route's cache.
        prefix: Option<String>,
    },
    /// In every cache: responses for `host` whose path starts with `path_prefix`.
    Host {
        /// Request host without port.
        host: String,
        /// Path prefix (`/` for all of the host).
        path_prefix: String,
    },
}

/// One route cache's size.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The route label (`service#N`).
    pub route: String,
    /// Responses held (variants count separately).
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// Everything the router needs from the configuration, checked and compiled.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    settings: RouterSettings,
    listeners: HashMap<String, Arc<ListenerConfig>>,
    cookie_key: CookieKey,
    drain_timeout: Duration,
    /// `settings.request_id_header`, compiled once.
    request_id_header: HeaderName,
    /// Worker threads of a router built with this configuration (not reloadable).
    worker_threads: usize,
}

#[derive(Debug, Clone)]
struct ListenerConfig {
    protocol: Protocol,
    rules: ListenerRules,
}

#[derive(Clone)]
enum Protocol {
    Http,
    H2c,
    Https(Arc<rustls::ServerConfig>),
}

impl Protocol {
    /// `http`, `h2c` or `https`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::H2c => "h2c",
            Self::Https(_) => "https",
        }
    }
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl RouterConfig {
    /// Compiles the router's part of `config`: every listener that a request-mode service
    /// uses, its routes and certificates; the affinity cookie key is derived from the
    /// cluster secret.
    pub fn from_config(config: &Config) -> Result<Self, RouterError> {
        let mut listeners = HashMap::new();
        for listener in &config.listeners {
            if config.services_of_listener(&listener.name).next().is_none() {
                continue;
            }
            let protocol = match &listener.protocol {
                ListenerProtocol::Http => Protocol::Http,
                ListenerProtocol::H2c => Protocol::H2c,
                ListenerProtocol::Https { certificates } => {
                    let certs = certificates
                        .iter()
                        .map(|name| {
                            config.certificate(name).ok_or_else(|| {
                                RouterError::Config(format!("no certificate called \"{name}\""))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Protocol::Https(tls::server_config(&certs)?)
                }
            };
            listeners.insert(
                listener.name.clone(),
                Arc::new(ListenerConfig {
                    protocol,
                    rules: ListenerRules::build(config, &listener.name)?,
                }),
            );
        }
        let request_id_header = HeaderName::from_bytes(config.router.request_id_header.as_bytes())
            .map_err(|_| {
                RouterError::Config(format!(
                    "request id header \"{}\" is not a header name",
                    config.router.request_id_header
                ))
            })?;
        Ok(Self {
            settings: config.router.clone(),
            listeners,
            cookie_key: CookieKey::derive(config.cluster.secret.as_bytes()),
            drain_timeout: Duration::from_secs(30),
            request_id_header,
            worker_threads: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    /// How many worker threads a [`Router`] built with this configuration serves its
    /// listeners on (default: one per CPU). A reload keeps the router's count.
    pub fn with_worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// Replaces the affinity cookie key (e.g. to share one across clusters).
    pub fn with_cookie_key(mut self, key: CookieKey) -> Self {
        self.cookie_key = key;
        self
    }

    /// How long [`Router::shutdown`] lets open connections finish (default 30 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Every route with a response cache, by label.
    fn caches(&self) -> Vec<(String, Arc<cache::ResponseCache>)> {
        let mut out = Vec::new();
        for listener in self.listeners.values() {
            for service in &listener.rules.services {
                for route in &service.routes {
                    if let Some(c) = &route.cache {
                        out.push((route.label.to_string(), c.clone()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The router-wide settings (`[router]`).
    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    /// The names of the listeners the router serves.
    pub fn listener_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.listeners.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The request router. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Swapped by [`Router::reload`]; every new connection and request reads it.
    config: ArcSwap<RouterConfig>,
    backends: Arc<ArcSwap<Backends>>,
    upstreams: Upstreams,
    metrics: Metrics,
    /// Where sessions are shared with other routers (client-IP, header and app-cookie
    /// affinity); without it affinity is stateless.
    sessions: Option<Arc<dyn SessionDirectory>>,
    /// Requests in flight per client address.
    clients: proxy::Clients,
    shutdown: watch::Sender<bool>,
    seed: u64,
    /// Started by the first `serve`.
    workers: OnceLock<Workers>,
    worker_threads: usize,
}

impl Router {
    /// A router over `backends` (the caller swaps in new snapshots at any time), with its
    /// metrics registered on `registry` under `switchyard_router_`.
    pub fn new(
        config: RouterConfig,
        backends: Arc<ArcSwap<Backends>>,
        registry: &mut Registry,
    ) -> Self {
        Self::build(config, backends, registry, None)
    }

    /// Like [`Router::new`], with a session directory shared with other routers: client-IP
    /// and header affinity look their key up there first and record new choices in it, and
    /// `app-cookie` affinity finds the host that reported the application's session.
    pub fn with_session_directory(
        config: RouterConfig,
        backends: Arc<ArcSwap<Backends>>,
        registry: &mut Registry,
        sessions: Arc<dyn SessionDirectory>,
    ) -> Self {
        Self::build(config, backends, registry, Some(sessions))
    }

    fn build(
        config: RouterConfig,
        backends: Arc<ArcSwap<Backends>>,
        registry: &mut Registry,
        sessions: Option<Arc<dyn SessionDirectory>>,
    ) -> Self {
        let metrics = Metrics::register(registry);
        metrics.cache_routes(config.caches().into_iter().map(|(route, _)| route));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let worker_threads = config.worker_threads;
        Self {
            inner: Arc::new(Inner {
                upstreams: Upstreams::new(
                    config.settings.upstream,
                    metrics.clone(),
                    worker_threads,
                ),
                config: ArcSwap::from_pointee(config),
                backends,
                metrics,
                sessions,
                clients: proxy::Clients::default(),
                shutdown: watch::channel(false).0,
                seed,
                workers: OnceLock::new(),
                worker_threads,
            }),
        }
    }

    /// Serves listener `name` on `listener` until [`Router::shutdown`]; then stops
    /// accepting and waits (up to the drain timeout) for open connections to finish.
    pub fn serve(
        &self,
        name: &str,
        listener: TcpListener,
    ) -> impl Future<Output = Result<(), RouterError>> + Send + 'static {
        self.serve_until(name, listener, watch::channel(false).1)
    }

    /// Like [`Router::serve`], and also stops (and drains) when `stop` turns `true`: for a
    /// listener that a reload removed or moved.
    ///
    /// Each accepted connection reads the configuration current at that moment (the
    /// listener's certificates and HTTP limits) and each request the one current when it
    /// starts (rules, limits, cookie key), so a [`Router::reload`] applies without closing
    /// anything.
    ///
    /// The listener is served by the router's worker threads (one accept loop on one of
    /// them, connections spread over all); dropping the returned future stops accepting
    /// and lets the open connections drain.
    pub fn serve_until(
        &self,
        name: &str,
        listener: TcpListener,
        stop_one: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), RouterError>> + Send + 'static {
        let inner = self.inner.clone();
        let name: Arc<str> = Arc::from(name);
        async move {
            let first = inner.config.load_full();
            let Some(at_start) = first.listeners.get(&*name).cloned() else {
                return Err(RouterError::UnknownListener(name.to_string()));
            };
            let workers = inner.workers()?;
            let listener = listener.into_std().map_err(RouterError::Listener)?;
            let home = workers.next_acceptor();
            // Dropped with this future: the accept loop then stops and drains.
            let (_alive, alive) = watch::channel(());
            let accept = workers.spawn(
                home,
                accept_loop(
                    AcceptLoop {
                        inner: inner.clone(),
                        name,
                        first,
                        at_start,
                        home,
                    },
                    listener,
                    stop_one,
                    alive,
                ),
            );
            accept
                .await
                .unwrap_or_else(|e| Err(RouterError::Listener(std::io::Error::other(e))))
        }
    }

    /// Replaces the configuration: rules, limits, certificates, the cookie key and the
    /// drain timeout. New connections and requests use it at once; requests in flight
    /// finish with the one they started with; nothing is closed. The response caches of
    /// the new rules start empty. `[router.upstream]` (timeouts, connection caps, HTTP/2)
    /// keeps its values until a restart; a change there is logged.
    pub fn reload(&self, config: RouterConfig) {
        if config.settings.upstream != self.inner.upstreams.settings {
            tracing::warn!("router.upstream changed: it applies after a restart, not on reload");
        }
        let routes = config.caches().into_iter().map(|(route, _)| route);
        self.inner.metrics.cache_routes(routes);
        self.inner.config.store(Arc::new(config));
    }

    /// The configuration in use.
    pub fn config(&self) -> Arc<RouterConfig> {
        self.inner.config.load_full()
    }

    /// Stops every `serve` from accepting; each then drains its connections and returns.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Hosts that passive outlier detection took out of rotation right now (the caller may
    /// report them to the health & load cache).
    pub fn ejected_hosts(&self) -> Vec<HostId> {
        self.inner.upstreams.ejected()
    }

    /// Totals since the router started (requests by status class, retries, rejections,
    /// outlier ejections).
    pub fn counters(&self) -> RouterCounters {
        self.inner.metrics.totals.snapshot()
    }

    /// Removes stored responses from the response caches (out-of-band invalidation);
    /// returns how many. Fails for a route that does not exist or has no cache.
    pub fn invalidate(&self, target: &Invalidation) -> Result<u64, RouterError> {
        let caches = self.inner.config.load().caches();
        let mut removed = 0;
        match target {
            Invalidation::Route { route, prefix } => {
                let Some((label, cache)) = caches.iter().find(|(l, _)| l == route) else {
                    return Err(RouterError::NoCache(route.clone()));
                };
                let n = cache.invalidate(prefix.as_deref().unwrap_or(""));
                proxy::cache_removed(&self.inner, label, cache, n);
                removed += n;
            }
            Invalidation::Host { host, path_prefix } => {
                let prefix = cache::key(&host.to_ascii_lowercase(), path_prefix);
                for (label, cache) in &caches {
                    let n = cache.invalidate(&prefix);
                    proxy::cache_removed(&self.inner, label, cache, n);
                    removed += n;
                }
            }
        }
        Ok(removed)
    }

    /// Every route with a response cache: label, entries and bytes held.
    pub fn caches(&self) -> Vec<CacheStats> {
        self.inner
            .config
            .load()
            .caches()
            .into_iter()
            .map(|(route, c)| CacheStats {
                entries: c.entries(),
                bytes: c.bytes(),
                route,
            })
            .collect()
    }

    /// The backends snapshot the router reads.
    pub fn backends(&self) -> &Arc<ArcSwap<Backends>> {
        &self.inner.backends
    }
}

/// What an accept loop serves: the listener `name` as configured in `first` when it
/// started (`at_start`), on worker `home`.
struct AcceptLoop {
    inner: Arc<Inner>,
    name: Arc<str>,
    first: Arc<RouterConfig>,
    at_start: Arc<ListenerConfig>,
    home: usize,
}

/// Accepts on `listener` until shutdown, `stop_one` or `alive` closing; then waits (up to
/// the drain timeout) for its connections to finish.
async fn accept_loop(
    serving: AcceptLoop,
    listener: std::net::TcpListener,
    mut stop_one: watch::Receiver<bool>,
    mut alive: watch::Receiver<()>,
) -> Result<(), RouterError> {
    let AcceptLoop {
        inner,
        name,
        first,
        at_start,
        home,
    } = serving;
    let listener = TcpListener::from_std(listener).map_err(RouterError::Listener)?;
    let graceful = GracefulShutdown::new();
    let mut stop = inner.shutdown.subscribe();
    let mut current = (
        first.clone(),
        at_start.clone(),
        connection_builder(&first, &at_start),
    );
    tracing::info!(listener = %name, protocol = ?at_start.protocol, "router listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let config = inner.config.load_full();
                if !Arc::ptr_eq(&config, &current.0) {
                    // Reloaded: this listener's new settings (or, if the reload
                    // dropped it or changed its protocol, its old ones while it
                    // drains; the caller serves the new one anew).
                    let listener = config
                        .listeners
                        .get(&*name)
                        .filter(|l| l.protocol.kind() == at_start.protocol.kind())
                        .cloned()
                        .unwrap_or_else(|| current.1.clone());
                    let builder = connection_builder(&config, &listener);
                    current = (config, listener, builder);
                }
                let (config, listener, builder) = current.clone();
                let ctx = proxy::ConnCtx::new(
                    inner.clone(),
                    config,
                    name.clone(),
                    listener,
                    peer,
                    matches!(at_start.protocol, Protocol::Https(_)),
                );
                let watcher = graceful.watcher();
                let Some(workers) = inner.workers.get() else {
                    break;
                };
                let (worker, open) = workers.place(home);
                if worker == home {
                    tokio::spawn(serve_connection(ctx, builder, watcher, stream, open));
                } else {
                    // Re-registered with the other worker's runtime.
                    let Ok(stream) = stream.into_std() else {
                        continue;
                    };
                    workers.spawn(worker, async move {
                        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                            serve_connection(ctx, builder, watcher, stream, open).await;
                        }
                    });
                }
            }
            () = until_stopped(&mut stop) => break,
            () = until_stopped(&mut stop_one) => break,
            _ = alive.changed() => break,
        }
    }
    drop(listener);
    let drain = inner.config.load().drain_timeout;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(listener = %name, "drain timeout; closing remaining connections");
        }
    }
    Ok(())
}

/// Serves one client connection (TLS first on an https listener) to its end.
async fn serve_connection(
    ctx: proxy::ConnCtx,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: tokio::net::TcpStream,
    _open: workers::OpenConnection,
) {
    let handshake = ctx.config.settings.header_read_timeout;
    let listener = ctx.listener.clone();
    let peer = ctx.peer();
    let service = proxy::service(Arc::new(ctx));
    match &listener.protocol {
        Protocol::Https(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        }
        Protocol::Http | Protocol::H2c => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        }
    }
}

/// Resolves once shutdown was requested (the guard `wait_for` yields stays inside). A
/// dropped sender never stops anything.
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// hyper's connection builder for `listener` under `config`: the protocols it speaks and
/// the HTTP limits.
fn connection_builder(
    config: &RouterConfig,
    listener: &ListenerConfig,
) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match listener.protocol {
        Protocol::Http => builder.http1_only(),
        Protocol::H2c => builder.http2_only(),
        Protocol::Https(_) => builder,
    };
    let s = &config.settings;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(
            usize::try_from(s.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(8192),
        )
        .max_headers(usize::try_from(s.max_headers).unwrap_or(usize::MAX));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes);
    Arc::new(builder)
}

impl Inner {
    /// A fresh pseudo-random number (not for secrets). A per-thread counter: no cache
    /// line shared between the workers.
    fn random(&self) -> u64 {
        thread_local! {
            static COUNTER: Cell<u64> = const { Cell::new(0) };
        }
        let n = COUNTER.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        let thread = COUNTER.with(|c| std::ptr::from_ref(c).addr() as u64);
        xxhash_rust::xxh3::xxh3_64_with_seed(&n.to_le_bytes(), self.seed ^ thread)
    }

    /// The worker threads, started on first use.
    fn workers(&self) -> Result<&Workers, RouterError> {
        if let Some(w) = self.workers.get() {
            return Ok(w);
        }
        let started = Workers::start(self.worker_threads).map_err(RouterError::Listener)?;
        // Two first serves racing: the loser's threads end when it is dropped.
        Ok(self.workers.get_or_init(|| started))
    }
}
