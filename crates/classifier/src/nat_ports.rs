//! NAT source port allocation for full-NAT routes.
//!
//! A full-NAT route makes the host see `(NAT source address, port)`; the
//! forwarder recognises the host's replies by `(host endpoint → NAT
//! source:port, protocol)`. So a port must be unique per (source address,
//! host endpoint, protocol) — not globally: the same port can serve
//! different endpoints at once, which multiplies the capacity by the number
//! of endpoints. [`NatPorts`] keeps one pool per such key, across services.
//!
//! Allocation is next-fit from a per-pool cursor, so a port just released
//! is the last to be handed out again (the host may still hold the old
//! connection in TIME_WAIT). Among a service's source addresses of the
//! endpoint's family the one with the fewest ports in use is tried first.
//! This module never hands out a port in use; freeing is the caller's duty
//! when the route is deleted.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use switchyard_wire::Protocol;

use crate::service::PortRange;

/// Why no port could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatError {
    /// No source address of the endpoint's address family.
    NoSource,
    /// Every port of every eligible source is in use for this endpoint.
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    source: IpAddr,
    endpoint: SocketAddr,
    protocol: Protocol,
}

#[derive(Debug)]
struct Pool {
    range: PortRange,
    used: HashSet<u16>,
    /// Ports of `used` inside `range`.
    in_range: u32,
    /// Next port to try.
    cursor: u16,
}

impl Pool {
    fn new(range: PortRange, key: &PoolKey, salt: u64) -> Self {
        // Start pools at different points so that sources and endpoints do
        // not all begin with the same port, and (with a per-process salt) a
        // restarted classifier does not begin with the ports its predecessor
        // just used, which hosts may hold in TIME_WAIT.
        let seed = xxhash_rust::xxh3::xxh3_64_with_seed(format!("{key:?}").as_bytes(), salt);
        let offset = u16::try_from(seed % u64::from(range.len())).unwrap_or(0);
        Self {
            range,
            used: HashSet::new(),
            in_range: 0,
            cursor: range.first().saturating_add(offset),
        }
    }

    fn set_range(&mut self, range: PortRange) {
        if self.range != range {
            self.range = range;
            self.in_range = count_u32(self.used.iter().filter(|p| range.contains(**p)).count());
            if !range.contains(self.cursor) {
                self.cursor = range.first();
            }
        }
    }

    fn is_full(&self) -> bool {
        self.in_range >= self.range.len()
    }

    fn next(&self, port: u16) -> u16 {
        if port >= self.range.last() {
            self.range.first()
        } else {
            port + 1
        }
    }

    fn allocate(&mut self) -> Option<u16> {
        if self.is_full() {
            return None;
        }
        let mut port = self.cursor;
        for _ in 0..self.range.len() {
            if self.used.insert(port) {
                self.in_range += 1;
                self.cursor = self.next(port);
                return Some(port);
            }
            port = self.next(port);
        }
        None
    }

    fn take(&mut self, port: u16) -> bool {
        let fresh = self.used.insert(port);
        if fresh && self.range.contains(port) {
            self.in_range += 1;
        }
        fresh
    }

    fn release(&mut self, port: u16) -> bool {
        let was = self.used.remove(&port);
        if was && self.range.contains(port) {
            self.in_range -= 1;
        }
        was
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// NAT source ports in use, per (source address, host endpoint, protocol).
#[derive(Debug, Default)]
pub struct NatPorts {
    pools: HashMap<PoolKey, Pool>,
    in_use: u64,
    salt: u64,
}

fn key(source: IpAddr, endpoint: SocketAddr, protocol: Protocol) -> PoolKey {
    PoolKey {
        source,
        endpoint: SocketAddr::new(endpoint.ip(), endpoint.port()),
        protocol,
    }
}

impl NatPorts {
    /// No ports in use.
    pub fn new() -> Self {
        Self::default()
    }

    /// No ports in use; pools start at points derived from `salt` (see
    /// [`crate::Settings::nat_port_salt`]).
    pub fn with_salt(salt: u64) -> Self {
        Self {
            salt,
            ..Self::default()
        }
    }

    /// Allocates a source address and port from `sources` / `range` for a
    /// route to `endpoint`. Only sources of the endpoint's family are used.
    pub fn allocate(
        &mut self,
        sources: &[IpAddr],
        range: PortRange,
        endpoint: SocketAddr,
        protocol: Protocol,
    ) -> Result<SocketAddr, NatError> {
        let mut candidates: Vec<(usize, IpAddr)> = sources
            .iter()
            .filter(|s| s.is_ipv4() == endpoint.is_ipv4())
            .map(|s| {
                let used = self
                    .pools
                    .get(&key(*s, endpoint, protocol))
                    .map_or(0, |p| p.used.len());
                (used, *s)
            })
            .collect();
        if candidates.is_empty() {
            return Err(NatError::NoSource);
        }
        // Fewest in use first; stable, so ties keep configuration order.
        candidates.sort_by_key(|c| c.0);
        let salt = self.salt;
        for (_, source) in candidates {
            let k = key(source, endpoint, protocol);
            let pool = self
                .pools
                .entry(k)
                .or_insert_with(|| Pool::new(range, &k, salt));
            pool.set_range(range);
            if let Some(port) = pool.allocate() {
                self.in_use += 1;
                return Ok(SocketAddr::new(source, port));
            }
        }
        Err(NatError::Exhausted)
    }

    /// Marks `source` (address and port) in use for `endpoint`, for a route
    /// learnt elsewhere. False if it already is (the caller must not use
    /// it).
    pub fn reserve(
        &mut self,
        source: SocketAddr,
        range: PortRange,
        endpoint: SocketAddr,
        protocol: Protocol,
    ) -> bool {
        let k = key(source.ip(), endpoint, protocol);
        let salt = self.salt;
        let pool = self
            .pools
            .entry(k)
            .or_insert_with(|| Pool::new(range, &k, salt));
        let taken = pool.take(source.port());
        if taken {
            self.in_use += 1;
        }
        taken
    }

    /// Frees `source` for `endpoint`. False if it was not in use.
    pub fn release(
        &mut self,
        source: SocketAddr,
        endpoint: SocketAddr,
        protocol: Protocol,
    ) -> bool {
        let k = key(source.ip(), endpoint, protocol);
        let Some(pool) = self.pools.get_mut(&k) else {
            return false;
        };
        let was = pool.release(source.port());
        if was {
            self.in_use -= 1;
        }
        was
    }

    /// Whether `source` is in use for `endpoint`.
    pub fn is_in_use(&self, source: SocketAddr, endpoint: SocketAddr, protocol: Protocol) -> bool {
        self.pools
            .get(&key(source.ip(), endpoint, protocol))
            .is_some_and(|p| p.used.contains(&source.port()))
    }

    /// Ports in use, over all pools.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn never_hands_out_a_port_in_use_and_exhausts() {
        let mut n = NatPorts::new();
        let range = PortRange::new(100, 109).expect("range");
        let e = sa("10.0.0.1:80");
        let mut got = HashSet::new();
        for _ in 0..10 {
            let s = n
                .allocate(&[ip("10.9.0.1")], range, e, Protocol::Tcp)
                .expect("port");
            assert!(range.contains(s.port()));
            assert!(got.insert(s), "{s} handed out twice");
        }
        assert_eq!(
            n.allocate(&[ip("10.9.0.1")], range, e, Protocol::Tcp),
            Err(NatError::Exhausted)
        );
        // Other endpoint or protocol: independent pools.
        assert!(
            n.allocate(&[ip("10.9.0.1")], range, sa("10.0.0.2:80"), Protocol::Tcp)
                .is_ok()
        );
        assert!(
            n.allocate(&[ip("10.9.0.1")], range, e, Protocol::Udp)
                .is_ok()
        );
        assert_eq!(n.in_use(), 12);
        // Release one: exactly that one comes back.
        let freed = sa("10.9.0.1:105");
        assert!(n.release(freed, e, Protocol::Tcp));
        assert!(!n.release(freed, e, Protocol::Tcp));
        assert_eq!(
            n.allocate(&[ip("10.9.0.1")], range, e, Protocol::Tcp),
            Ok(freed)
        );
    }

    #[test]
    fn the_salt_moves_where_a_pool_starts() {
        let range = PortRange::new(20000, 60999).expect("range");
        let e = sa("10.0.0.1:80");
        let first = |salt: u64| {
            NatPorts::with_salt(salt)
                .allocate(&[ip("10.9.0.1")], range, e, Protocol::Tcp)
                .expect("port")
        };
        assert_eq!(first(7), first(7), "a salt gives one start");
        let starts: HashSet<SocketAddr> = (0..16).map(first).collect();
        assert!(starts.len() >= 15, "salts spread the start: {starts:?}");
    }

    #[test]
    fn next_fit_delays_reuse_and_sources_are_balanced() {
        let mut n = NatPorts::new();
        let range = PortRange::new(1000, 1999).expect("range");
        let e = sa("[fd00::1]:443");
        let sources = [ip("10.9.0.1"), ip("fd00:9::1"), ip("fd00:9::2")];
        let a = n.allocate(&sources, range, e, Protocol::Tcp).expect("a");
        let b = n.allocate(&sources, range, e, Protocol::Tcp).expect("b");
        assert!(a.is_ipv6() && b.is_ipv6());
        assert_ne!(a.ip(), b.ip(), "the emptier source is preferred");
        assert!(n.release(a, e, Protocol::Tcp));
        let c = n.allocate(&sources, range, e, Protocol::Tcp).expect("c");
        assert_eq!(c.ip(), a.ip());
        assert_ne!(c, a, "a released port is not reused at once");
        assert_eq!(
            n.allocate(&[ip("10.9.0.1")], range, e, Protocol::Tcp),
            Err(NatError::NoSource)
        );
    }

    #[test]
    fn reserve_conflicts_with_allocations() {
        let mut n = NatPorts::new();
        let range = PortRange::new(7, 7).expect("range");
        let e = sa("10.0.0.1:80");
        let s = sa("10.9.0.1:7");
        assert!(n.reserve(s, range, e, Protocol::Tcp));
        assert!(!n.reserve(s, range, e, Protocol::Tcp));
        assert!(n.is_in_use(s, e, Protocol::Tcp));
        assert_eq!(
            n.allocate(&[s.ip()], range, e, Protocol::Tcp),
            Err(NatError::Exhausted)
        );
        assert!(n.release(s, e, Protocol::Tcp));
        assert_eq!(n.in_use(), 0);
    }
}
