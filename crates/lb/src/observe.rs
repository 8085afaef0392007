//! Log lines that say what happened to the cache: hosts appearing,
//! resynchronising, ageing out and saying goodbye; endpoints added and
//! removed; health and directive changes. The cache itself does not report
//! changes, so the health service compares the hosts a message or timer
//! touched before and after (only rows of hosts whose generation changed or
//! that were resynchronised are compared).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_health::{AppKey, CacheCounters, ConsolidatedCache, HostView};
use switchyard_wire::health::{DirectiveState, Health, Row};
use switchyard_wire::{AppId, HostId, Message};

/// The counters that tell why a host changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    snapshots_completed: u64,
    goodbyes: u64,
    age_outs: u64,
}

impl Marks {
    pub(crate) fn of(counters: &CacheCounters) -> Self {
        Self {
            snapshots_completed: counters.snapshots_completed,
            goodbyes: counters.goodbyes,
            age_outs: counters.age_outs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RowSeen {
    health: Health,
    load: u8,
    capacity: u8,
    target: DirectiveState,
    current: DirectiveState,
}

impl RowSeen {
    fn of(row: &Row) -> Self {
        Self {
            health: row.status.health(),
            load: row.status.load(),
            capacity: row.status.capacity(),
            target: row.directive.target,
            current: row.directive.current,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    generation: u64,
    in_sync: bool,
    rows: BTreeMap<AppKey, (AppId, RowSeen)>,
}

/// What the log last said about each host.
#[derive(Debug)]
pub(crate) struct Observer {
    names: Arc<BTreeMap<HostId, String>>,
    seen: BTreeMap<HostId, Seen>,
}

/// The hosts a message is about (their state may have changed).
pub(crate) fn hosts_of(message: &Message) -> Vec<HostId> {
    match message {
        Message::Heartbeat(hb) => vec![hb.host],
        Message::RowChange(rc) => vec![rc.host],
        Message::SendTableSnapshot(s) => vec![s.host],
        Message::Goodbye(g) => vec![g.host],
        Message::ConsolidatedHeartbeat(c) => c.heartbeats.iter().map(|hb| hb.host).collect(),
        _ => Vec::new(),
    }
}

/// `vip/protocol -> endpoint [info]` for log lines.
pub(crate) fn describe_app(app: &AppId) -> String {
    let protocol = app.protocol.as_str();
    if app.info.is_empty() {
        format!("{}/{protocol} -> {}", app.vip, app.endpoint)
    } else {
        format!("{}/{protocol} [{}] -> {}", app.vip, app.info, app.endpoint)
    }
}

impl Observer {
    pub(crate) fn new(names: Arc<BTreeMap<HostId, String>>) -> Self {
        Self {
            names,
            seen: BTreeMap::new(),
        }
    }

    fn name(&self, host: HostId, view: Option<&HostView<'_>>) -> String {
        view.and_then(|v| v.name)
            .map(str::to_owned)
            .or_else(|| self.names.get(&host).cloned())
            .unwrap_or_else(|| "?".to_owned())
    }

    /// Compares every host, known before or now (after timers).
    pub(crate) fn update_all(&mut self, cache: &ConsolidatedCache, before: Marks) {
        let hosts: BTreeSet<HostId> = self
            .seen
            .keys()
            .copied()
            .chain(cache.hosts().map(|v| v.host))
            .collect();
        self.update(cache, hosts, before);
    }

    /// Compares `hosts` with what was last logged about them.
    pub(crate) fn update(
        &mut self,
        cache: &ConsolidatedCache,
        hosts: impl IntoIterator<Item = HostId>,
        before: Marks,
    ) {
        let after = Marks::of(cache.counters());
        let resynced = after.snapshots_completed > before.snapshots_completed;
        for host in hosts {
            let view = cache.host(host);
            match (self.seen.get(&host), view) {
                (None, None) => {}
                (Some(prev), None) => {
                    let name = self.name(host, None);
                    let rows = prev.rows.len();
                    if after.goodbyes > before.goodbyes {
                        tracing::info!(host = host.0, %name, rows, "host said goodbye; cleared");
                    } else if after.age_outs > before.age_outs {
                        tracing::info!(host = host.0, %name, rows, "host aged out (no heartbeat)");
                    } else {
                        tracing::info!(host = host.0, %name, rows, "host removed");
                    }
                    self.seen.remove(&host);
                }
                (prev, Some(view)) => {
                    let name = self.name(host, Some(&view));
                    if prev.is_none() {
                        tracing::info!(
                            host = host.0,
                            %name,
                            address = %view.address.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                            "host appeared"
                        );
                    }
                    let prev_generation = prev.map(|p| p.generation);
                    let prev_in_sync = prev.is_some_and(|p| p.in_sync);
                    let rows_may_differ =
                        prev.is_none() || resynced || prev_generation != Some(view.generation);
                    if resynced {
                        tracing::info!(
                            host = host.0,
                            %name,
                            generation = view.generation,
                            rows = view.table.len(),
                            "host resynchronised from a table snapshot"
                        );
                    } else if prev_in_sync && !view.in_sync {
                        tracing::info!(host = host.0, %name, generation = view.generation, "host's table differs from the cache; resynchronising");
                    }
                    let rows = if rows_may_differ {
                        let old = prev.map(|p| &p.rows);
                        Self::diff_rows(host, &name, old, &view, resynced)
                    } else {
                        prev.map(|p| p.rows.clone()).unwrap_or_default()
                    };
                    self.seen.insert(
                        host,
                        Seen {
                            generation: view.generation,
                            in_sync: view.in_sync,
                            rows,
                        },
                    );
                }
            }
        }
    }

    fn diff_rows(
        host: HostId,
        name: &str,
        old: Option<&BTreeMap<AppKey, (AppId, RowSeen)>>,
        view: &HostView<'_>,
        from_snapshot: bool,
    ) -> BTreeMap<AppKey, (AppId, RowSeen)> {
        let empty = BTreeMap::new();
        let old = old.unwrap_or(&empty);
        let mut new = BTreeMap::new();
        for (key, row) in view.table.entries() {
            let seen = RowSeen::of(row);
            let app = describe_app(&row.app);
            match old.get(key) {
                None => {
                    if from_snapshot {
                        tracing::debug!(host = host.0, %name, %app, health = ?seen.health, load = seen.load, capacity = seen.capacity, target = ?seen.target, current = ?seen.current, "endpoint added");
                    } else {
                        tracing::info!(host = host.0, %name, %app, health = ?seen.health, load = seen.load, capacity = seen.capacity, target = ?seen.target, current = ?seen.current, "endpoint added");
                    }
                }
                Some((_, was)) => {
                    if was.health != seen.health {
                        tracing::info!(host = host.0, %name, %app, from = ?was.health, to = ?seen.health, "health changed");
                    }
                    if was.target != seen.target || was.current != seen.current {
                        tracing::info!(
                            host = host.0,
                            %name,
                            %app,
                            target = ?seen.target,
                            current = ?seen.current,
                            was_target = ?was.target,
                            was_current = ?was.current,
                            handshake = if seen.target == seen.current { "complete" } else { "pending" },
                            "directive changed"
                        );
                    }
                    if was.load != seen.load || was.capacity != seen.capacity {
                        tracing::debug!(host = host.0, %name, %app, load = seen.load, capacity = seen.capacity, "load changed");
                    }
                }
            }
            new.insert(key.clone(), (row.app.clone(), seen));
        }
        for (key, (app, _)) in old {
            if !new.contains_key(key) {
                let app = describe_app(app);
                if from_snapshot {
                    tracing::debug!(host = host.0, %name, %app, "endpoint removed");
                } else {
                    tracing::info!(host = host.0, %name, %app, "endpoint removed");
                }
            }
        }
        new
    }
}

/// Where to send a message for `to`: the host's advertised address (its
/// IP taken from the source address when the host advertised an
/// unspecified one), else the source address of its latest datagram.
pub(crate) fn destination(
    advertised: Option<SocketAddr>,
    last_source: Option<SocketAddr>,
) -> Option<SocketAddr> {
    match (advertised, last_source) {
        (Some(a), Some(src)) if a.ip().is_unspecified() => {
            Some(SocketAddr::new(src.ip(), a.port()))
        }
        (Some(a), _) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
        (_, src) => src,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_prefers_a_usable_advertised_address() {
        let adv: SocketAddr = "192.0.2.5:9171".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9171".parse().expect("addr");
        let src: SocketAddr = "198.18.0.7:40000".parse().expect("addr");
        assert_eq!(destination(Some(adv), Some(src)), Some(adv));
        assert_eq!(destination(Some(adv), None), Some(adv));
        assert_eq!(
            destination(Some(any), Some(src)),
            Some("198.18.0.7:9171".parse().expect("addr"))
        );
        assert_eq!(destination(Some(any), None), None);
        assert_eq!(destination(None, Some(src)), Some(src));
        assert_eq!(destination(None, None), None);
    }
}
