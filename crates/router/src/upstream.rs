//! Connections to hosts: one small pool per host (an idle stack of HTTP/1.1 connections
//! plus a semaphore that caps how many exist, or one multiplexed HTTP/2 connection), the
//! connect/request/idle timeouts, and passive outlier detection.
//!
//! Many client connections share few host connections (connection aggregation): a request
//! takes an idle connection, else opens one if the host's cap allows, else waits until a
//! connection is returned or closed. An HTTP/1.1 connection goes back to the idle stack
//! when its response body has been read to the end; one whose body was abandoned is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
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

/// All host pools and the outlier table of one router.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub(crate) settings: UpstreamSettings,
    hosts: Mutex<HashMap<(HostId, SocketAddr), Arc<HostPool>>>,
    outliers: Mutex<HashMap<HostId, Outlier>>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
}

impl Upstreams {
    pub(crate) fn new(settings: UpstreamSettings, metrics: Metrics) -> Self {
        Self {
            settings,
            hosts: Mutex::new(HashMap::new()),
            outliers: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn pool(&self, id: HostId, address: SocketAddr) -> Arc<HostPool> {
        let mut hosts = lock(&self.hosts);
        hosts
            .entry((id, address))
            .or_insert_with(|| {
                Arc::new(HostPool {
                    id,
                    address,
                    permits: Arc::new(Semaphore::new(
                        usize::try_from(self.settings.max_connections_per_host).unwrap_or(1),
                    )),
                    idle: Mutex::new(Vec::new()),
                    returned: Notify::new(),
                    h2: tokio::sync::Mutex::new(None),
                    label: HostLabels {
                        host: id.0.to_string(),
                    },
                })
            })
            .clone()
    }

    /// A connection to the host, within the request timeout.
    pub(crate) async fn lease(
        &self,
        id: HostId,
        address: SocketAddr,
    ) -> Result<Lease, UpstreamError> {
        let pool = self.pool(id, address);
        let acquire = async {
            if self.settings.http2 {
                pool.h2_sender(&self.settings, &self.metrics).await
            } else {
                pool.h1_sender(&self.settings, &self.metrics).await
            }
        };
        match tokio::time::timeout(self.settings.request_timeout, acquire).await {
            Ok(Ok(sender)) => Ok(Lease {
                pool,
                sender: Some(sender),
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
        let mut outliers = lock(&self.outliers);
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
    idle: Mutex<Vec<IdleConn>>,
    /// Signalled when a connection goes back to the idle stack.
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
    fn pop_idle(&self, idle_timeout: Duration) -> Option<http1::SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        // Drop stale and closed connections anywhere in the stack (their permits return).
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < idle_timeout);
        while let Some(c) = idle.pop() {
            if c.sender.is_ready() {
                return Some(c.sender);
            }
        }
        None
    }

    async fn h1_sender(
        &self,
        settings: &UpstreamSettings,
        metrics: &Metrics,
    ) -> Result<Sender, UpstreamError> {
        loop {
            if let Some(sender) = self.pop_idle(settings.idle_timeout) {
                return Ok(Sender::H1(sender));
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|e| UpstreamError::Connect(e.to_string()))?;
                    let io = self.connect(settings.connect_timeout).await?;
                    let (sender, conn) = http1::handshake(io)
                        .await
                        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
                    self.spawn_conn(permit, metrics, async move {
                        let _ = conn.with_upgrades().await;
                    });
                    return Ok(Sender::H1(sender));
                }
                () = self.returned.notified() => {}
            }
        }
    }

    async fn h2_sender(
        &self,
        settings: &UpstreamSettings,
        metrics: &Metrics,
    ) -> Result<Sender, UpstreamError> {
        let mut slot = self.h2.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok(Sender::H2(sender.clone()));
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
        Ok(Sender::H2(sender))
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
            lock(&self.pool.idle).push(IdleConn {
                sender,
                since: Instant::now(),
            });
            self.pool.returned.notify_one();
        }
    }
}
