//! Pool rules: health check references, at least one host, host ids and names unique
//! across the configuration, distinct host addresses within a pool. (A host's service
//! manager is checked with the other agent rules, in `agent`.)

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::decode::Field;
use crate::diagnostics::codes;
use crate::model::{Host, HostId, Pool};
use crate::raw::RawPool;

use super::{Built, DEFAULT_CAPACITY, Names, Validator};

impl Validator<'_> {
    /// `unit_ids` are the LB units' ids with their paths: hosts and units share one id
    /// space because both sign control messages with their id as the sender.
    pub(super) fn pools<'r>(
        &mut self,
        raw: &'r [RawPool],
        checks: &Names,
        unit_ids: &[(u32, &'r str)],
    ) -> (Built<Pool>, Names) {
        let names = self.names("pool", raw.iter().map(|p| (&p.name, &p.at)));
        // Host ids and names are unique across the whole configuration.
        let mut host_ids: HashMap<u32, &str> = unit_ids.iter().copied().collect();
        let host_names = self.names(
            "host",
            raw.iter()
                .flat_map(|p| p.hosts.iter().map(|h| (&h.name, &h.at))),
        );
        let mut items = Some(Vec::with_capacity(raw.len()));
        for pool in raw {
            let mut ok = true;
            for host in &pool.hosts {
                if let Some(id) = host.id.spanned() {
                    if let Some(first) = host_ids.get(id.get_ref()) {
                        ok = false;
                        self.sink.error(
                            codes::DUPLICATE_ID,
                            &id.span(),
                            host.at.field("id"),
                            format!("host id {} is already used by {first}", id.get_ref()),
                            Some(
                                "host ids are unique across the whole configuration and distinct \
                                 from LB unit ids (both identify senders of control messages)"
                                    .to_owned(),
                            ),
                        );
                    } else {
                        host_ids.insert(*id.get_ref(), &host.at.path);
                    }
                }
            }
            let built = self.pool(pool, checks);
            match (built, items.as_mut(), ok) {
                (Some(p), Some(list), true) => list.push(p),
                _ => items = None,
            }
        }
        (Built { items, names }, host_names)
    }

    pub(super) fn pool(&mut self, raw: &RawPool, checks: &Names) -> Option<Pool> {
        let at = &raw.at;
        let name = raw.name.get().map_or("", String::as_str);
        let check_ok = !raw.health_check.is_written()
            || self.reference(
                &raw.health_check,
                at.field("health_check"),
                checks,
                codes::UNDEFINED_CHECK,
                "health check",
                "health_checks",
            );
        if raw.hosts.is_empty() {
            let message = format!("pool \"{name}\" has no hosts");
            let hint = "add at least one [[pools.hosts]] table after the pool".to_owned();
            if raw.hosts_written {
                self.empty_list(&at.span, at.field("hosts"), message, &hint);
            } else {
                self.missing(at, "hosts", message, hint);
            }
            return None;
        }
        let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
        let mut hosts = Some(Vec::with_capacity(raw.hosts.len()));
        for host in &raw.hosts {
            if let Some(address) = host.address.spanned() {
                let addr = address.get_ref();
                if addr.ip().is_unspecified() {
                    self.sink.error(
                        codes::BAD_ADDRESS,
                        &address.span(),
                        host.at.field("address"),
                        format!("host address {addr} is the unspecified address"),
                        Some("give the address the application is reached at".to_owned()),
                    );
                    hosts = None;
                } else if let Some(first) = addresses.get(addr) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        host.at.field("address"),
                        format!("address {addr} is already used by {first} in this pool"),
                        Some("each host of a pool is a distinct endpoint".to_owned()),
                    );
                    hosts = None;
                } else {
                    addresses.insert(*addr, &host.at.path);
                }
            }
            let app = host.app.spanned().and_then(|app| {
                let text = app.get_ref();
                if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.sink.error(
                        codes::BAD_VALUE,
                        &app.span(),
                        host.at.field("app"),
                        format!("application id \"{text}\" is empty, too long or has spaces"),
                        Some("use the id the application reports to the host agent, e.g. \"shop-frontend\"".to_owned()),
                    );
                    None
                } else {
                    Some(text.clone())
                }
            });
            let capacity = match &host.capacity {
                Field::Absent => Some(DEFAULT_CAPACITY),
                other => other.get().copied(),
            };
            let service_manager = self.service_manager(host);
            match (
                host.id.get(),
                host.name.get(),
                host.address.get(),
                app,
                capacity,
                service_manager,
                hosts.as_mut(),
            ) {
                (
                    Some(id),
                    Some(name),
                    Some(address),
                    Some(app),
                    Some(capacity),
                    Some(service_manager),
                    Some(list),
                ) => list.push(Host {
                    id: HostId(*id),
                    name: name.clone(),
                    address: *address,
                    app,
                    capacity,
                    service_manager,
                }),
                _ => hosts = None,
            }
        }
        let hosts = hosts?;
        if !check_ok {
            return None;
        }
        Some(Pool {
            name: raw.name.get()?.clone(),
            health_check: raw.health_check.get().cloned(),
            hosts,
        })
    }
}
