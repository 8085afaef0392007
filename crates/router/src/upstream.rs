//! Connections to hosts: one small pool per host (an idle stack of HTTP/1.1 connections
//! plus a semaphore that caps how many exist, or one multiplexed HTTP/2 connection), the
//! connect/request/idle timeouts, and passive outlier detection.
//!
//! Many client connections share few host connections (connection aggregation): a request
//! takes an idle connection, else opens one if the host's cap allows, else waits until a
//! connection is returned or closed. An HTTP/1.1 connection goes back to the idle stack
//! when its response body has been read to the end; one whose body was abandoned is closed.
//!
//! Idle HTTP/1.1 connections are kept per worker thread (`workers`): a connection's task
//! runs on the worker that opened it, and a request on that worker takes one of its own
//! idle connections first, so request and host connection stay on one thread. The cap is
//! per host across workers; when it is reached a request borrows another worker's idle
//! connection rather than wait. The one HTTP/2 connection per host is shared by all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_config::{HostId, UpstreamSettings};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{HostLabels, Metrics};

/// Errors of request bodies travelling to hosts.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of a request sent to a host.
pub(crate) type UpstreamBody = BoxBody<Bytes, BoxError>;

/// Why a host did not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be opened (or none became free in time); nothing was sent, so
    /// any request may be retried elsewhere.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The request was (maybe partly) sent and failed.
    #[error("request failed: {0}")]
    Request(#[source] hyper::Error),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short critical sections leaves plain data that
    // is still consistent; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type PoolKey = (HostId, SocketAddr);
type Pools = HashMap<PoolKey, Arc<HostPool>>;

/// All host pools and the outlier table of one router.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub(crate) settings: UpstreamSettings,
    hosts: Mutex<Pools>,
    /// Per worker: the pools it has used (a lookup that touches no lock other workers take).
    local: Box<[Mutex<Pools>]>,
    outliers: Mutex<HashMap<HostId, Outlier>>,
    /// Whether `outliers` may hold a host with errors or an ejection (else the per-request
    /// checks skip the lock). Only changed under the `outliers` lock.
    outliers_active: AtomicBool,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
}

impl Upstreams {
    /// Pools for `workers` worker threads.
    pub(crate) fn new(settings: UpstreamSettings, metrics: Metrics, workers: usize) -> Self {
        Self {
            settings,
            hosts: Mutex::new(HashMap::new()),
            local: (0..workers.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            outliers: Mutex::new(HashMap::new()),
            outliers_active: AtomicBool::new(false),
            metrics,
        }
    }

    fn pool(&self, worker: usize, id: HostId, address: SocketAddr) -> Arc<HostPool> {
        let key = (id, address);
        let mut local = lock(&self.local[worker % self.local.len()]);
        if let Some(pool) = local.get(&key) {
            return pool.clone();
        }
        let pool = lock(&self.hosts)
            .entry(key)
            .or_insert_with(|| {
                Arc::new(HostPool {
                    id,
                    address,
                    permits: Arc::new(Semaphore::new(
                        usize::try_from(self.settings.max_connections_per_host).unwrap_or(1),
                    )),
                    idle: (0..self.local.len())
                        .map(|_| Mutex::new(Vec::new()))
                        .collect(),
                    returned: Notify::new(),
                    h2: tokio::sync::Mutex::new(None),
                    label: HostLabels {
                        host: id.0.to_string(),
                    },
                })
            })
            .clone();
        local.insert(key, pool.clone());
        pool
    }

    /// A connection to the host, within the request timeout.
    pub(crate) async fn lease(
        &self,
        id: HostId,
        address: SocketAddr,
    ) -> Result<Lease, UpstreamError> {
        let worker = crate::workers::current() % self.local.len();
        let pool = self.pool(worker, id, address);
        let acquire = async {
            if self.settings.http2 {
                pool.h2_sender(&self.settings, &self.metrics).await
            } else {
                pool.h1_sender(worker, &self.settings, &self.metrics).await
            }
        };
        // The timer is only registered if no idle connection is at hand at once.
        let acquired = tokio::time::timeout(self.settings.request_timeout, acquire).await;
        match acquired {
            Ok(Ok((sender, home))) => Ok(Lease {
                pool,
                sender: Some(sender),
                home,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::Connect(
                "no connection became free within the request timeout".to_owned(),
            )),
        }
    }

    /// Records the outcome of one attempt on `host`; returns true when this error took
    /// the host out of rotation.
    pub(crate) fn report(&self, host: HostId, ok: bool) -> bool {
        if ok && !self.outliers_active.load(Ordering::Relaxed) {
            return false;
        }
        let mut outliers = lock(&self.outliers);
        let ejected = self.record(&mut outliers, host, ok);
        let now = Instant::now();
        outliers.retain(|_, o| {
            o.ejected_until = o.ejected_until.filter(|u| *u > now);
            o.consecutive > 0 || o.ejected_until.is_some()
        });
        self.outliers_active
            .store(!outliers.is_empty(), Ordering::Relaxed);
        ejected
    }

    fn record(&self, outliers: &mut HashMap<HostId, Outlier>, host: HostId, ok: bool) -> bool {
        let entry = outliers.entry(host).or_default();
        if ok {
            entry.consecutive = 0;
            return false;
        }
        entry.consecutive = entry.consecutive.saturating_add(1);
        if entry.consecutive >= self.settings.outlier_errors {
            entry.consecutive = 0;
            entry.ejected_until = Some(Instant::now() + self.settings.outlier_ejection);
            self.metrics
                .outlier_ejections
                .get_or_create(&HostLabels {
                    host: host.0.to_string(),
                })
                .inc();
            crate::metrics::Totals::add(&self.metrics.totals.outlier_ejections);
            tracing::warn!(host = host.0, "host ejected after consecutive errors");
            return true;
        }
        false
    }

    /// Whether `host` is out of rotation locally right now.
    pub(crate) fn is_ejected(&self, host: HostId) -> bool {
        if !self.outliers_active.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        lock(&self.outliers)
            .get(&host)
            .and_then(|o| o.ejected_until)
            .is_some_and(|until| until > now)
    }

    /// The hosts out of rotation locally right now, in id order.
    pub(crate) fn ejected(&self) -> Vec<HostId> {
        let now = Instant::now();
        let mut out: Vec<HostId> = lock(&self.outliers)
            .iter()
            .filter(|(_, o)| o.ejected_until.is_some_and(|u| u > now))
            .map(|(id, _)| *id)
            .collect();
        out.sort_by_key(|id| id.0);
        out
    }
}

#[derive(Debug)]
struct HostPool {
    id: HostId,
    address: SocketAddr,
    /// One permit per open connection.
    permits: Arc<Semaphore>,
    /// Idle connections by the worker their task runs on, most recently used last.
    idle: Box<[Mutex<Vec<IdleConn>>]>,
    /// Signalled when a connection goes back to an idle stack.
    returned: Notify,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<UpstreamBody>>>,
    label: HostLabels,
}

#[derive(Debug)]
struct IdleConn {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

impl HostPool {
    fn pop_idle(
        &self,
        worker: usize,
        idle_timeout: Duration,
    ) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = lock(&self.idle[worker]);
        if idle.is_empty() {
            return None;
        }
        let now = Instant::now();
        // The oldest connection is at the bottom: when it has gone stale, drop every
        // stale and closed one (their tasks end and give their permits back).
        if idle
            .first()
            .is_some_and(|c| now.duration_since(c.since) >= idle_timeout)
        {
            idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < idle_timeout);
        }
        // A connection returned a moment ago may not be ready yet: its task (usually on
        // this thread) has not run since. Only closed ones are dropped here.
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    /// `sender` once it takes a request; `None` if its connection closed meanwhile.
    async fn when_ready(
        mut sender: http1::SendRequest<UpstreamBody>,
    ) -> Option<http1::SendRequest<UpstreamBody>> {
        if sender.is_ready() || sender.ready().await.is_ok() {
            Some(sender)
        } else {
            None
        }
    }

    /// An HTTP/1.1 connection for a request on `worker`, and the worker its task runs on:
    /// the worker's own idle one, else a new one within the cap, else another worker's
    /// idle one, else the first one returned or a permit freed by a closing one.
    async fn h1_sender(
        &self,
        worker: usize,
        settings: &UpstreamSettings,
        metrics: &Metrics,
    ) -> Result<(Sender, usize), UpstreamError> {
        let workers = self.idle.len();
        let worker = worker % workers;
        loop {
            if let Some(sender) = self.pop_idle(worker, settings.idle_timeout) {
                if let Some(sender) = Self::when_ready(sender).await {
                    return Ok((Sender::H1(sender), worker));
                }
                continue;
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.open_h1(permit, worker, settings, metrics).await;
            }
            for other in (1..workers).map(|i| (worker + i) % workers) {
                if let Some(sender) = self.pop_idle(other, settings.idle_timeout)
                    && let Some(sender) = Self::when_ready(sender).await
                {
                    return Ok((Sender::H1(sender), other));
                }
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|e| UpstreamError::Connect(e.to_string()))?;
                    return self.open_h1(permit, worker, settings, metrics).await;
                }
                () = self.returned.notified() => {}
            }
        }
    }

    async fn open_h1(
        &self,
        permit: OwnedSemaphorePermit,
        worker: usize,
        settings: &UpstreamSettings,
        metrics: &Metrics,
    ) -> Result<(Sender, usize), UpstreamError> {
        let io = self.connect(settings.connect_timeout).await?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        // On this worker's runtime: the connection's task stays on this thread.
        self.spawn_conn(permit, metrics, async move {
            let _ = conn.with_upgrades().await;
        });
        Ok((Sender::H1(sender), worker))
    }

    async fn h2_sender(
        &self,
        settings: &UpstreamSettings,
        metrics: &Metrics,
    ) -> Result<(Sender, usize), UpstreamError> {
        let mut slot = self.h2.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok((Sender::H2(sender.clone()), 0));
        }
        *slot = None;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let io = self.connect(settings.connect_timeout).await?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        self.spawn_conn(permit, metrics, async move {
            let _ = conn.await;
        });
        *slot = Some(sender.clone());
        Ok((Sender::H2(sender), 0))
    }

    async fn connect(&self, timeout: Duration) -> Result<TokioIo<TcpStream>, UpstreamError> {
        match tokio::time::timeout(timeout, TcpStream::connect(self.address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(TokioIo::new(stream))
            }
            Ok(Err(e)) => Err(UpstreamError::Connect(format!("{}: {e}", self.address))),
            Err(_) => Err(UpstreamError::Connect(format!(
                "{}: connect timed out",
                self.address
            ))),
        }
    }

    /// Runs a connection's task; the permit and the gauge follow its life.
    fn spawn_conn(
        &self,
        permit: OwnedSemaphorePermit,
        metrics: &Metrics,
        conn: impl Future<Output = ()> + Send + 'static,
    ) {
        let in_use = metrics
            .connections_in_use
            .get_or_create(&self.label)
            .clone();
        metrics.connections_opened.get_or_create(&self.label).inc();
        in_use.inc();
        let host = self.id.0;
        tokio::spawn(async move {
            conn.await;
            in_use.dec();
            drop(permit);
            tracing::debug!(host, "host connection closed");
        });
    }
}

/// A connection to a host, held for one request.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<HostPool>,
    sender: Option<Sender>,
    /// The worker whose idle stack an HTTP/1.1 connection goes back to.
    home: usize,
}

impl Lease {
    /// Sends `request` and waits for the response head (the caller bounds the wait).
    pub(crate) async fn send(
        &mut self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match self.sender.as_mut() {
            Some(Sender::H1(s)) => {
                s.ready().await.map_err(UpstreamError::Request)?;
                s.send_request(request)
                    .await
                    .map_err(UpstreamError::Request)
            }
            Some(Sender::H2(s)) => {
                s.ready().await.map_err(UpstreamError::Request)?;
                s.send_request(request)
                    .await
                    .map_err(UpstreamError::Request)
            }
            None => Err(UpstreamError::Connect(
                "connection already released".to_owned(),
            )),
        }
    }

    /// Returns the connection for the next request (the response was read to the end).
    pub(crate) fn release(mut self) {
        if let Some(Sender::H1(sender)) = self.sender.take()
            && !sender.is_closed()
        {
            lock(&self.pool.idle[self.home]).push(IdleConn {
                sender,
                since: Instant::now(),
            });
            self.pool.returned.notify_one();
        }
    }
}
