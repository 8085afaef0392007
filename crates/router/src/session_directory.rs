//! Session affinity through a shared session directory (the DAM, when the unit runs the
//! session-store role): the seam the router looks sessions up and records them through,
//! and the placement of a request whose affinity uses it.
//!
//! - `app-cookie`: the application's own session cookie is looked up as
//!   `SessionId::HttpCookie { name, value }`, which the host reported through session
//!   tracking. Found (and live) → that host while it is active or draining; otherwise the
//!   request is balanced. The router records nothing: the application reports its session
//!   once it creates it.
//! - `client-ip` and `header`: the key (`SessionId::ClientIp`, or `SessionId::Custom` of
//!   kind `http-header:<lower-case name>` with the header's value) is looked up first; a
//!   live session on a host of the pool that is active or draining wins. Otherwise the host
//!   is chosen as without a directory (rendezvous among active hosts) and recorded with the
//!   affinity timeout as time to live, so every router sharing the directory agrees and a
//!   draining host keeps its clients. A record that is past half its life when it is hit
//!   is written again, so the timeout counts from the client's last request, roughly.
//!
//! A lookup waits at most [`LOOKUP_TIMEOUT`]; after that the request is placed as without
//! a directory and the timeout is counted. A zombie (a session the host ended) counts as
//! not found. A session found on a host outside the request's pool (the same client of
//! another service) is neither used nor overwritten.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use switchyard_config::HostId;
use switchyard_wire::SessionId;
use switchyard_wire::session::{MAX_COOKIE_VALUE_LEN, MAX_CUSTOM_ID_LEN, MAX_CUSTOM_KIND_LEN};

use crate::backends::{Backends, HostState, Placement, choose};

/// How long a request waits for a lookup at most.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);

/// A session the directory knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEntry {
    /// The host holding the session.
    pub host: HostId,
    /// The session was ended; the entry lingers until its zombie time passes.
    pub zombie: bool,
    /// Time left before the entry expires (`None`: it does not expire).
    pub expires_in: Option<Duration>,
}

/// The future of [`SessionDirectory::lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Option<SessionEntry>> + Send + 'a>>;

/// Where sessions are shared between router instances (the unit's DAM through its
/// session-store role). Implementations must not block: `lookup` is awaited by requests
/// (bounded by [`LOOKUP_TIMEOUT`]) and `record` is called on the request path.
pub trait SessionDirectory: Send + Sync + std::fmt::Debug {
    /// The session `session` is known by, if any.
    fn lookup<'a>(&'a self, session: &'a SessionId) -> LookupFuture<'a>;

    /// Records that `session` is on `host` for `ttl` (fire and forget).
    fn record(&self, session: &SessionId, host: HostId, ttl: Duration);
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The directory's metrics: lookups by result and records.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionMetrics {
    lookups: Family<ResultLabels, Counter>,
    records: Counter,
}

impl SessionMetrics {
    /// Registers `session_lookups{result}` and `session_records` on `registry` (the
    /// router's `switchyard_router` sub-registry).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "session_lookups",
            "Session directory lookups by result (hit, miss, zombie, timeout)",
            m.lookups.clone(),
        );
        registry.register(
            "session_records",
            "Client-IP and header affinity choices recorded in the session directory",
            m.records.clone(),
        );
        m
    }

    fn count(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }

    #[cfg(test)]
    fn lookups(&self, result: &'static str) -> u64 {
        self.lookups.get_or_create(&ResultLabels { result }).get()
    }
}

/// What a bounded lookup found.
enum Lookup {
    Hit(SessionEntry),
    Miss,
    TimedOut,
}

async fn look_up(
    directory: &dyn SessionDirectory,
    metrics: &SessionMetrics,
    session: &SessionId,
) -> Lookup {
    let (lookup, result) =
        match tokio::time::timeout(LOOKUP_TIMEOUT, directory.lookup(session)).await {
            Err(_) => (Lookup::TimedOut, "timeout"),
            Ok(None) => (Lookup::Miss, "miss"),
            Ok(Some(e)) if e.zombie => (Lookup::Miss, "zombie"),
            Ok(Some(e)) => (Lookup::Hit(e), "hit"),
        };
    metrics.count(result);
    lookup
}

/// The session an application cookie names, if it fits session tracking's limits.
pub(crate) fn cookie_session(name: &str, value: &[u8]) -> Option<SessionId> {
    if value.is_empty() || value.len() > MAX_COOKIE_VALUE_LEN {
        return None;
    }
    Some(SessionId::HttpCookie {
        name: name.to_owned(),
        value: std::str::from_utf8(value).ok()?.to_owned(),
    })
}

/// The session a header value names: kind `http-header:<lower-case name>`, id the value.
pub(crate) fn header_session(name: &str, value: &[u8]) -> Option<SessionId> {
    let kind = format!("http-header:{}", name.to_ascii_lowercase());
    (kind.len() <= MAX_CUSTOM_KIND_LEN && value.len() <= MAX_CUSTOM_ID_LEN).then(|| {
        SessionId::Custom {
            kind,
            id: value.to_vec(),
        }
    })
}

/// A directory and its metrics: what a placement through the directory needs.
#[derive(Clone, Copy)]
pub(crate) struct Directory<'a> {
    pub(crate) directory: &'a dyn SessionDirectory,
    pub(crate) metrics: &'a SessionMetrics,
}

impl Directory<'_> {
    /// `app-cookie`: the host that reported the cookie's session, while it is not down (the
    /// choice falls back to `random` otherwise); balanced when the directory does not know
    /// it.
    pub(crate) async fn app_cookie(self, session: &SessionId, random: u64) -> Placement<'static> {
        match look_up(self.directory, self.metrics, session).await {
            Lookup::Hit(e) => Placement::Cookie {
                host: e.host,
                random,
            },
            Lookup::Miss | Lookup::TimedOut => Placement::Any { random },
        }
    }

    /// `client-ip` and `header`: the session's host if the directory knows one in `pool`
    /// that is not down; else the rendezvous choice of `key` among hosts not `excluded`,
    /// recorded for `ttl` and placed as that session (not after a timed-out lookup, nor
    /// over a session on another pool's host: the hash of `key` then).
    pub(crate) async fn hashed<'k>(
        self,
        session: &SessionId,
        key: &'k [u8],
        ttl: Duration,
        (backends, pool): (&ArcSwap<Backends>, &str),
        excluded: &(dyn Fn(HostId) -> bool + Sync),
    ) -> Placement<'k> {
        let found = look_up(self.directory, self.metrics, session).await;
        let snapshot = backends.load();
        let hosts = snapshot.pool(pool);
        match found {
            Lookup::TimedOut => return Placement::Hash(key),
            Lookup::Hit(e) => match hosts.iter().find(|h| h.id == e.host) {
                None => return Placement::Hash(key),
                Some(h) if h.state != HostState::Down => {
                    if e.expires_in.is_some_and(|left| left < ttl / 2) {
                        self.record(session, e.host, ttl);
                    }
                    return Placement::Session { host: e.host, key };
                }
                // Its host is down: choose anew and record the new host.
                Some(_) => {}
            },
            Lookup::Miss => {}
        }
        // The request goes where the record says: its first attempt need not hash again.
        match choose(hosts, Placement::Hash(key), excluded) {
            Some(h) => {
                self.record(session, h.id, ttl);
                Placement::Session { host: h.id, key }
            }
            None => Placement::Hash(key),
        }
    }

    fn record(self, session: &SessionId, host: HostId, ttl: Duration) {
        self.directory.record(session, host, ttl);
        self.metrics.records.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Mutex;

    use super::*;
    use crate::backends::Backend;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An in-memory directory; `slow` never answers.
    #[derive(Debug, Default)]
    struct Fake {
        entries: Mutex<HashMap<Vec<u8>, SessionEntry>>,
        records: Mutex<Vec<(SessionId, HostId, Duration)>>,
        slow: bool,
    }

    impl Fake {
        fn with(session: &SessionId, host: u32, zombie: bool) -> Self {
            let fake = Self::default();
            lock(&fake.entries).insert(
                session.key(),
                SessionEntry {
                    host: HostId(host),
                    zombie,
                    expires_in: None,
                },
            );
            fake
        }

        fn recorded(&self) -> Vec<(SessionId, HostId, Duration)> {
            lock(&self.records).clone()
        }
    }

    impl SessionDirectory for Fake {
        fn lookup<'a>(&'a self, session: &'a SessionId) -> LookupFuture<'a> {
            Box::pin(async move {
                if self.slow {
                    std::future::pending::<()>().await;
                }
                lock(&self.entries).get(&session.key()).copied()
            })
        }

        fn record(&self, session: &SessionId, host: HostId, ttl: Duration) {
            lock(&self.records).push((session.clone(), host, ttl));
            lock(&self.entries).insert(
                session.key(),
                SessionEntry {
                    host,
                    zombie: false,
                    expires_in: Some(ttl),
                },
            );
        }
    }

    fn pool(states: &[(u32, HostState)]) -> ArcSwap<Backends> {
        let mut b = Backends::new();
        b.set_pool(
            "p",
            states
                .iter()
                .map(|&(id, state)| Backend {
                    id: HostId(id),
                    address: SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)),
                    state,
                    weight: if state == HostState::Active { 10 } else { 0 },
                })
                .collect(),
        );
        ArcSwap::from_pointee(b)
    }

    fn metrics() -> SessionMetrics {
        SessionMetrics::register(&mut Registry::default())
    }

    const TTL: Duration = Duration::from_secs(600);

    async fn place(
        dir: &Fake,
        m: &SessionMetrics,
        backends: &ArcSwap<Backends>,
        ip: [u8; 4],
    ) -> Option<u32> {
        let session = SessionId::ClientIp(IpAddr::from(ip));
        let d = Directory {
            directory: dir,
            metrics: m,
        };
        let placement = d
            .hashed(&session, &ip, TTL, (backends, "p"), &|_| false)
            .await;
        let snapshot = backends.load();
        choose(snapshot.pool("p"), placement, &|_| false).map(|h| h.id.0)
    }

    #[tokio::test]
    async fn a_new_client_is_hashed_and_recorded_then_kept_while_its_host_drains() {
        let dir = Fake::default();
        let m = metrics();
        let all = [
            (1, HostState::Active),
            (2, HostState::Active),
            (3, HostState::Active),
        ];
        let backends = pool(&all);
        let first = place(&dir, &m, &backends, [192, 0, 2, 7])
            .await
            .expect("a host");
        assert_eq!(m.lookups("miss"), 1);
        let recorded = dir.recorded();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].1, HostId(first));
        assert_eq!(recorded[0].2, TTL);

        // The host drains: rendezvous alone would move the client; the directory keeps it.
        let drained = all.map(|(id, s)| (id, if id == first { HostState::Draining } else { s }));
        backends.store(pool(&drained).load_full());
        let again = place(&dir, &m, &backends, [192, 0, 2, 7]).await;
        assert_eq!(
            again,
            Some(first),
            "the recorded client stays on its draining host"
        );
        assert_eq!(m.lookups("hit"), 1);
        assert_eq!(
            dir.recorded().len(),
            1,
            "a fresh record is not written again"
        );

        // A client the directory does not know never lands on the draining host.
        for last in 0..50u8 {
            let host = place(&dir, &m, &backends, [198, 51, 100, last]).await;
            assert_ne!(host, Some(first), "new client {last} got the draining host");
        }

        // Down: the client moves and the new host is recorded.
        let down = all.map(|(id, s)| (id, if id == first { HostState::Down } else { s }));
        backends.store(pool(&down).load_full());
        let moved = place(&dir, &m, &backends, [192, 0, 2, 7])
            .await
            .expect("a host");
        assert_ne!(moved, first);
        assert_eq!(dir.recorded().last().map(|r| r.1), Some(HostId(moved)));
    }

    #[tokio::test]
    async fn zombies_and_other_pools_hosts_are_not_used() {
        let m = metrics();
        let backends = pool(&[(1, HostState::Active), (2, HostState::Draining)]);
        let session = SessionId::ClientIp(IpAddr::from([192, 0, 2, 9]));
        let zombie = Fake::with(&session, 2, true);
        let host = place(&zombie, &m, &backends, [192, 0, 2, 9]).await;
        assert_eq!(host, Some(1));
        assert_eq!(m.lookups("zombie"), 1);
        assert_eq!(
            zombie.recorded().len(),
            1,
            "the zombie's key is recorded anew"
        );

        let elsewhere = Fake::with(&session, 77, false);
        assert_eq!(
            place(&elsewhere, &m, &backends, [192, 0, 2, 9]).await,
            Some(1)
        );
        assert!(
            elsewhere.recorded().is_empty(),
            "another pool's session is not overwritten"
        );
    }

    #[tokio::test]
    async fn a_slow_directory_is_abandoned_and_counted() {
        let dir = Fake {
            slow: true,
            ..Fake::default()
        };
        let m = metrics();
        let backends = pool(&[(1, HostState::Active), (2, HostState::Active)]);
        let start = tokio::time::Instant::now();
        let host = place(&dir, &m, &backends, [192, 0, 2, 1]).await;
        assert!(host.is_some());
        assert!(
            start.elapsed() < LOOKUP_TIMEOUT * 5,
            "{:?}",
            start.elapsed()
        );
        assert_eq!(m.lookups("timeout"), 1);
        assert!(
            dir.recorded().is_empty(),
            "nothing is recorded after a timeout"
        );
        let session = cookie_session("JSESSIONID", b"abc").expect("a session");
        let d = Directory {
            directory: &dir,
            metrics: &m,
        };
        let p = d.app_cookie(&session, 5).await;
        assert!(matches!(p, Placement::Any { random: 5 }));
        assert_eq!(m.lookups("timeout"), 2);
    }

    #[tokio::test]
    async fn an_app_cookie_follows_the_reported_session_even_to_a_draining_host() {
        let m = metrics();
        let session = cookie_session("JSESSIONID", b"4fe2").expect("a session");
        let dir = Fake::with(&session, 2, false);
        let backends = pool(&[(1, HostState::Active), (2, HostState::Draining)]);
        let d = Directory {
            directory: &dir,
            metrics: &m,
        };
        let p = d.app_cookie(&session, 0).await;
        let snapshot = backends.load();
        assert_eq!(
            choose(snapshot.pool("p"), p, &|_| false).map(|h| h.id.0),
            Some(2)
        );
        let unknown = cookie_session("JSESSIONID", b"other").expect("a session");
        let p = d.app_cookie(&unknown, 0).await;
        assert_eq!(
            choose(snapshot.pool("p"), p, &|_| false).map(|h| h.id.0),
            Some(1)
        );
        assert!(dir.recorded().is_empty(), "app cookies are never recorded");
        assert_eq!((m.lookups("hit"), m.lookups("miss")), (1, 1));
    }

    #[test]
    fn session_keys_follow_the_wire_limits() {
        assert_eq!(cookie_session("sid", b""), None);
        assert_eq!(cookie_session("sid", &[0xff]), None);
        assert_eq!(
            cookie_session("sid", &vec![b'a'; MAX_COOKIE_VALUE_LEN + 1]),
            None
        );
        assert_eq!(
            header_session("X-Tenant", b"acme"),
            Some(SessionId::Custom {
                kind: "http-header:x-tenant".into(),
                id: b"acme".to_vec(),
            })
        );
        assert_eq!(
            header_session("X-Tenant", &vec![b'a'; MAX_CUSTOM_ID_LEN + 1]),
            None
        );
    }
}
