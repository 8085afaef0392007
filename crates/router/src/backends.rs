//! The hosts the router may send to: a snapshot per pool that the caller replaces as it
//! learns health, load and directives (today from the static configuration; later from
//! the consolidated health & load cache), and the per-request choice of a host in it.

use std::collections::HashMap;
use std::net::SocketAddr;

use switchyard_config::{Config, HostId};

use crate::affinity::rendezvous;

/// What a host may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Takes new requests.
    Active,
    /// Takes only requests with affinity to it (cookie, or a session the directory ties
    /// to it), no new clients.
    Draining,
    /// Takes nothing.
    Down,
}

impl HostState {
    /// Lower-case name for logs, documents and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

/// One host of a pool as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable host id (what affinity cookies name).
    pub id: HostId,
    /// Where its application listens.
    pub address: SocketAddr,
    /// Whether it takes new requests.
    pub state: HostState,
    /// Relative share of new requests (capacity or token share); 0 takes none.
    pub weight: u32,
}

/// The hosts of every pool; replaced as a whole (`ArcSwap<Backends>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    pools: HashMap<String, Vec<Backend>>,
}

impl Backends {
    /// No pools.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every pool of `config`, every host active with its configured capacity as weight.
    pub fn from_config(config: &Config) -> Self {
        let mut out = Self::new();
        for pool in &config.pools {
            out.set_pool(
                &pool.name,
                pool.hosts
                    .iter()
                    .map(|h| Backend {
                        id: h.id,
                        address: h.address,
                        state: HostState::Active,
                        weight: u32::from(h.capacity),
                    })
                    .collect(),
            );
        }
        out
    }

    /// Replaces the hosts of pool `name`.
    pub fn set_pool(&mut self, name: &str, hosts: Vec<Backend>) {
        self.pools.insert(name.to_owned(), hosts);
    }

    /// Sets the state of host `id` wherever it appears; returns whether it was found.
    pub fn set_state(&mut self, id: HostId, state: HostState) -> bool {
        let mut found = false;
        for host in self.pools.values_mut().flatten() {
            if host.id == id {
                host.state = state;
                found = true;
            }
        }
        found
    }

    /// The hosts of pool `name`.
    pub fn pool(&self, name: &str) -> &[Backend] {
        self.pools.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every pool with its hosts, by name.
    pub fn pools(&self) -> Vec<(&str, &[Backend])> {
        let mut out: Vec<(&str, &[Backend])> = self
            .pools
            .iter()
            .map(|(name, hosts)| (name.as_str(), hosts.as_slice()))
            .collect();
        out.sort_unstable_by_key(|(name, _)| *name);
        out
    }
}

/// How the request asks to be placed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placement<'a> {
    /// No affinity: weighted random among active hosts.
    Any {
        /// A fresh random number.
        random: u64,
    },
    /// The client holds a valid cookie for this host (it may be draining).
    Cookie { host: HostId, random: u64 },
    /// Rendezvous hash of this key over active hosts.
    Hash(&'a [u8]),
    /// The session directory puts the key's session on this host (it may be draining);
    /// if it cannot take the request, the rendezvous hash of `key`.
    Session { host: HostId, key: &'a [u8] },
}

/// Picks a host of `hosts` for a request, skipping `excluded` ones (tried already or
/// ejected locally). Draining hosts serve only the requests that a cookie or the session
/// directory ties to them.
pub(crate) fn choose<'h>(
    hosts: &'h [Backend],
    placement: Placement<'_>,
    excluded: &dyn Fn(HostId) -> bool,
) -> Option<&'h Backend> {
    let eligible = |h: &&Backend| h.state == HostState::Active && h.weight > 0 && !excluded(h.id);
    // The host a cookie or the directory ties the request to, while it is not down.
    let tied = |host: HostId| {
        hosts
            .iter()
            .find(|h| h.id == host && h.state != HostState::Down && !excluded(h.id))
    };
    let random = match placement {
        Placement::Cookie { host, random } => match tied(host) {
            Some(h) => return Some(h),
            None => random,
        },
        Placement::Session { host, key } => {
            return tied(host).or_else(|| choose(hosts, Placement::Hash(key), excluded));
        }
        Placement::Hash(key) => {
            let i = rendezvous(
                key,
                hosts.iter().filter(eligible).map(|h| (h.id.0, h.weight)),
            )?;
            return hosts.iter().filter(eligible).nth(i);
        }
        Placement::Any { random } => random,
    };
    let total: u64 = hosts
        .iter()
        .filter(eligible)
        .map(|h| u64::from(h.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for h in hosts.iter().filter(eligible) {
        let w = u64::from(h.weight);
        if point < w {
            return Some(h);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: u32, state: HostState, weight: u32) -> Backend {
        Backend {
            id: HostId(id),
            address: SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)),
            state,
            weight,
        }
    }

    #[test]
    fn weighted_choice_follows_weights_and_skips_draining() {
        let hosts = [
            host(1, HostState::Active, 1),
            host(2, HostState::Active, 3),
            host(3, HostState::Draining, 100),
            host(4, HostState::Down, 100),
        ];
        let mut counts = [0u32; 5];
        for r in 0..400u64 {
            let h = choose(&hosts, Placement::Any { random: r }, &|_| false);
            counts[h.map_or(0, |h| h.id.0 as usize)] += 1;
        }
        assert_eq!(counts, [0, 100, 300, 0, 0]);
    }

    #[test]
    fn cookie_keeps_a_draining_host_but_not_a_down_one() {
        let hosts = [
            host(1, HostState::Active, 1),
            host(3, HostState::Draining, 1),
        ];
        let pick = |id| {
            choose(
                &hosts,
                Placement::Cookie {
                    host: HostId(id),
                    random: 0,
                },
                &|_| false,
            )
            .map(|h| h.id.0)
        };
        assert_eq!(pick(3), Some(3));
        let down = [host(1, HostState::Active, 1), host(3, HostState::Down, 1)];
        let p = choose(
            &down,
            Placement::Cookie {
                host: HostId(3),
                random: 0,
            },
            &|_| false,
        );
        assert_eq!(p.map(|h| h.id.0), Some(1));
        let p = choose(
            &hosts,
            Placement::Cookie {
                host: HostId(3),
                random: 0,
            },
            &|id| id == HostId(3),
        );
        assert_eq!(p.map(|h| h.id.0), Some(1));
    }
}
