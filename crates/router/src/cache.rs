//! A route's shared response cache: the RFC 9111 basics for a shared cache.
//!
//! - Only `GET` responses are stored; `HEAD` is answered from a stored `GET` response
//!   (without body). Other methods pass through, and a successful unsafe request (`POST`,
//!   `PUT`, `DELETE`, `PATCH`) invalidates the stored responses of its target (§4.4).
//! - The key is the request's host and path with query (before any rewrite); `Vary` adds
//!   the named request headers: one variant per combination of their values (§4.1).
//!   `Vary: *` is never stored.
//! - Not stored: responses with `Cache-Control: no-store`, `private` or `no-cache` (this
//!   cache does not revalidate), with `Set-Cookie`, to requests carrying `Authorization` or
//!   `Cache-Control: no-store`, statuses other than 200, 203, 204, 300, 301, 308, 404,
//!   405, 410, 414 and 501, bodies without `Content-Length` or above `max_object_bytes`.
//! - Freshness: `s-maxage`, else `max-age`, else the route's `default_ttl`, else not
//!   stored. `Expires` is ignored (every modern origin sends `max-age`; parsing HTTP dates
//!   is not worth a dependency). The response's own `Age` counts against it.
//! - A request with `Cache-Control: no-cache` or `max-age=0` is not served from the cache
//!   (its response may still be stored).
//! - Hits carry `Age` (seconds since the host produced the response) (§5.1).
//! - Size: the cache holds at most `max_bytes` (bodies + headers), evicting the least
//!   recently used entries.
//!
//! Out-of-band invalidation (the spec's) goes through [`ResponseCache::invalidate`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use switchyard_config::RouteCache;
use tokio::time::Instant;

/// A stored response, ready to answer a hit.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What storing a response did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) stored: bool,
    pub(crate) evicted: u64,
}

#[derive(Debug)]
struct Entry {
    key: String,
    /// Request header values named by `Vary`, in its order (lower-case names).
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Instant,
    /// `Age` the response arrived with, in seconds.
    initial_age: u64,
    lifetime: Duration,
    size: u64,
    stamp: u64,
}

#[derive(Debug, Default)]
struct Store {
    entries: HashMap<u64, Entry>,
    by_key: HashMap<String, Vec<u64>>,
    /// Last use → entry id: the first one is the least recently used.
    lru: BTreeMap<u64, u64>,
    bytes: u64,
    next_id: u64,
    clock: u64,
}

impl Store {
    fn touch(&mut self, id: u64) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries.get_mut(&id) {
            self.lru.remove(&e.stamp);
            e.stamp = clock;
            self.lru.insert(clock, id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            self.lru.remove(&e.stamp);
            self.bytes = self.bytes.saturating_sub(e.size);
            if let Some(ids) = self.by_key.get_mut(&e.key) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_key.remove(&e.key);
                }
            }
        }
    }
}

/// One route's cache.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    settings: RouteCache,
    store: Mutex<Store>,
}

/// The cache key of a request: host and path with query.
pub(crate) fn key(host: &str, path_and_query: &str) -> String {
    format!("{host}{path_and_query}")
}

fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"').to_owned())),
                None => (d, None),
            };
            Some((name.to_ascii_lowercase(), value))
        })
}

fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(n, _)| n == name)
}

fn seconds(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers)
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
        .and_then(|v| v.parse::<u64>().ok())
}

fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let text = value.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?);
        }
    }
    Some(names)
}

/// The values of `name` in a request, joined (so `a, b` and two headers compare equal).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let values: Vec<&[u8]> = headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&values.join(&b", "[..])).ok()
}

const CACHEABLE: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

impl ResponseCache {
    pub(crate) fn new(settings: RouteCache) -> Self {
        Self {
            settings,
            store: Mutex::new(Store::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the cache may answer or store for this request at all.
    pub(crate) fn applies(method: &Method, request: &HeaderMap) -> bool {
        (*method == Method::GET || *method == Method::HEAD)
            && !request.contains_key(header::AUTHORIZATION)
            && !has_directive(request, "no-store")
    }

    /// Whether the request lets a stored response answer it.
    pub(crate) fn may_serve(request: &HeaderMap) -> bool {
        !has_directive(request, "no-cache") && seconds(request, "max-age") != Some(0)
    }

    /// A fresh stored response for the request, with its `Age`.
    pub(crate) fn lookup(&self, key: &str, request: &HeaderMap, now: Instant) -> Option<Hit> {
        let mut store = self.lock();
        let ids = store.by_key.get(key)?.clone();
        for id in ids {
            let Some(e) = store.entries.get(&id) else {
                continue;
            };
            if !e.vary.iter().all(|(n, v)| joined(request, n) == *v) {
                continue;
            }
            let resident = now.saturating_duration_since(e.stored_at);
            let age = Duration::from_secs(e.initial_age) + resident;
            if age >= e.lifetime {
                store.remove(id);
                continue;
            }
            let mut headers = e.headers.clone();
            headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
            let hit = Hit {
                status: e.status,
                headers,
                body: e.body.clone(),
            };
            store.touch(id);
            return Some(hit);
        }
        None
    }

    /// How long a response may be stored, or `None` when it must not be.
    fn lifetime(&self, status: StatusCode, response: &HeaderMap) -> Option<Duration> {
        if !CACHEABLE.contains(&status.as_u16())
            || response.contains_key(header::SET_COOKIE)
            || ["no-store", "private", "no-cache"]
                .iter()
                .any(|d| has_directive(response, d))
        {
            return None;
        }
        let explicit = seconds(response, "s-maxage").or_else(|| seconds(response, "max-age"));
        let lifetime = match explicit {
            Some(s) => Duration::from_secs(s),
            None => self.settings.default_ttl?,
        };
        (!lifetime.is_zero()).then_some(lifetime)
    }

    /// Whether a response with these headers is worth buffering for the cache: a
    /// cacheable status and headers and a declared length within `max_object_bytes`.
    pub(crate) fn wants(&self, status: StatusCode, response: &HeaderMap) -> bool {
        let length = response
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        length.is_some_and(|n| n <= self.settings.max_object_bytes)
            && vary_names(response).is_some()
            && self.lifetime(status, response).is_some()
    }

    /// Stores a response to a `GET` request, evicting least recently used entries to fit.
    pub(crate) fn store(
        &self,
        key: &str,
        request: &HeaderMap,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        now: Instant,
    ) -> Stored {
        let (Some(lifetime), Some(names)) = (self.lifetime(status, headers), vary_names(headers))
        else {
            return Stored::default();
        };
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let size = (body.len() + header_bytes + key.len()) as u64;
        if body.len() as u64 > self.settings.max_object_bytes || size > self.settings.max_bytes {
            return Stored::default();
        }
        let initial_age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let vary: Vec<(HeaderName, Option<HeaderValue>)> = names
            .into_iter()
            .map(|n| {
                let v = joined(request, &n);
                (n, v)
            })
            .collect();
        let mut stored_headers = headers.clone();
        stored_headers.remove(header::AGE);
        let mut store = self.lock();
        // The same variant replaces the old one.
        let same: Vec<u64> = store
            .by_key
            .get(key)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| store.entries.get(id).is_some_and(|e| e.vary == vary))
                    .collect()
            })
            .unwrap_or_default();
        for id in same {
            store.remove(id);
        }
        let mut evicted = 0;
        while store.bytes + size > self.settings.max_bytes {
            let Some((_, id)) = store.lru.pop_first() else {
                break;
            };
            if let Some(e) = store.entries.get_mut(&id) {
                // Already out of the LRU index; keep `remove` from looking it up there.
                e.stamp = u64::MAX;
            }
            store.remove(id);
            evicted += 1;
        }
        store.next_id += 1;
        store.clock += 1;
        let (id, stamp) = (store.next_id, store.clock);
        store.entries.insert(
            id,
            Entry {
                key: key.to_owned(),
                vary,
                status,
                headers: stored_headers,
                body,
                stored_at: now,
                initial_age,
                lifetime,
                size,
                stamp,
            },
        );
        store.by_key.entry(key.to_owned()).or_default().push(id);
        store.lru.insert(stamp, id);
        store.bytes += size;
        Stored {
            stored: true,
            evicted,
        }
    }

    /// Removes every stored response whose key starts with `prefix` (`""`: all); returns
    /// how many.
    pub(crate) fn invalidate(&self, prefix: &str) -> u64 {
        let mut store = self.lock();
        let ids: Vec<u64> = store
            .entries
            .iter()
            .filter(|(_, e)| e.key.starts_with(prefix))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            store.remove(*id);
        }
        ids.len() as u64
    }

    /// Removes the stored responses of exactly `key`.
    pub(crate) fn invalidate_key(&self, key: &str) -> u64 {
        let mut store = self.lock();
        let ids = store.by_key.get(key).cloned().unwrap_or_default();
        for id in &ids {
            store.remove(*id);
        }
        ids.len() as u64
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries held now.
    pub(crate) fn entries(&self) -> u64 {
        self.lock().entries.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_bytes: u64) -> ResponseCache {
        ResponseCache::new(RouteCache {
            max_bytes,
            max_object_bytes: max_bytes,
            default_ttl: None,
        })
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn least_recently_used_entries_are_evicted_to_fit() {
        let c = cache(2000);
        let now = Instant::now();
        let resp = headers(&[("cache-control", "max-age=60")]);
        let body = Bytes::from(vec![b'x'; 600]);
        for k in ["h/a", "h/b", "h/c"] {
            let s = c.store(
                k,
                &HeaderMap::new(),
                StatusCode::OK,
                &resp,
                body.clone(),
                now,
            );
            assert!(s.stored);
        }
        assert!(c.lookup("h/a", &HeaderMap::new(), now).is_some());
        let s = c.store("h/d", &HeaderMap::new(), StatusCode::OK, &resp, body, now);
        assert_eq!(s.evicted, 1);
        assert!(
            c.lookup("h/b", &HeaderMap::new(), now).is_none(),
            "b was least recently used"
        );
        assert!(c.lookup("h/a", &HeaderMap::new(), now).is_some());
        assert!(c.bytes() <= 2000);
    }

    #[test]
    fn freshness_comes_from_s_maxage_then_max_age_and_counts_the_age() {
        let c = cache(1 << 20);
        let now = Instant::now();
        let both = headers(&[("cache-control", "max-age=1, s-maxage=100"), ("age", "50")]);
        c.store(
            "h/x",
            &HeaderMap::new(),
            StatusCode::OK,
            &both,
            Bytes::new(),
            now,
        );
        let hit = c
            .lookup("h/x", &HeaderMap::new(), now + Duration::from_secs(10))
            .expect("fresh for 100 s");
        assert_eq!(
            hit.headers.get(header::AGE).and_then(|v| v.to_str().ok()),
            Some("60")
        );
        assert!(
            c.lookup("h/x", &HeaderMap::new(), now + Duration::from_secs(51))
                .is_none()
        );
        let none = headers(&[("content-type", "text/plain")]);
        assert!(
            !c.store(
                "h/y",
                &HeaderMap::new(),
                StatusCode::OK,
                &none,
                Bytes::new(),
                now
            )
            .stored
        );
        let vary_all = headers(&[("cache-control", "max-age=9"), ("vary", "*")]);
        assert!(
            !c.store(
                "h/z",
                &HeaderMap::new(),
                StatusCode::OK,
                &vary_all,
                Bytes::new(),
                now
            )
            .stored
        );
        let error = headers(&[("cache-control", "max-age=9")]);
        assert!(
            !c.store(
                "h/e",
                &HeaderMap::new(),
                StatusCode::INTERNAL_SERVER_ERROR,
                &error,
                Bytes::new(),
                now
            )
            .stored
        );
    }
}
