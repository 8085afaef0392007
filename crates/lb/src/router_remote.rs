//! The router role's backends on a unit without the health-cache role: host states from
//! the allotments of health-cache units, asked over UDP.
//!
//! **What is asked.** Every refresh the role asks one health-cache unit
//! ([`crate::allotment_client`], shared with the classifier role) for an
//! [`AffinityAllotmentRequest`] per service key of every pool ([`Plan`]): the VIPs of the
//! request-mode services on that pool (else of its TCP services of any mode) with each app
//! its hosts run. The answer is the percentage allotment the classifier's token allotment
//! is computed like (shares in proportion to spare capacity, capacity × (100 − load), over
//! healthy endpoints whose directive target is active), plus the endpoints that get no share
//! but still serve the requests with affinity to them: directive target draining, or healthy
//! and active with no spare capacity.
//!
//! An allotment alone cannot say "draining": an endpoint without a grant may be draining,
//! failing, inactive or gone, and a router must keep a draining host reachable for its
//! cookie-affinitized clients. The affinity variant of the request (`0x22`/`0x23`) says it
//! without changing the classifier's `AllotmentRequest`/`AllotmentResponse`, whose strict
//! decoders in earlier builds would refuse a new trailing field (see
//! `switchyard_wire::allotment`).
//!
//! **Host states.** A pool host, for each answered key of its app: *active* with weight =
//! its basis points when it has a share; *draining* when listed as draining; *active* with
//! weight 0 (cookie-affinitized requests only, as with the local cache) when listed as
//! having no share; *down* otherwise. Over several keys the worst state and the smallest
//! weight count, as with the local cache. A pool no service reports rows for has its hosts
//! down, as with the local cache.
//!
//! **Validity.** An answer is used for its duration (`[health] percentage_duration`, from
//! the answer) and then for a grace period of two more durations, so a health-cache unit's
//! restart or a few lost datagrams change nothing; the role asks every quarter duration (kept
//! between 100 and 500 ms), so a drain or a failure reaches the router
//! within about that time. A host none of whose keys has a usable answer is served from the
//! static configuration (active, weight = configured capacity), so when every health-cache
//! unit has been silent for three durations the router falls back to the static
//! configuration, logged as a warning, until one answers again.
//!
//! [`RemoteBackends`] is the sans-I/O part (answers and `now` in, backends out), tested with
//! simulated time below; `crate::router_role` owns the socket and the timers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_health::ServiceKey;
use switchyard_router::{Backends, HostState};
use switchyard_wire::allotment::{
    AffinityAllotmentRequest, AffinityAllotmentResponse, AffinityOnlyReason, Allotment,
};

use crate::allotment_client::ClientCounters;
use crate::router_role::{Plan, PlanHost, combine};

/// An answer is used for this many more durations after its own.
const GRACE_DURATIONS: u32 = 2;
/// Shortest validity assumed for an answer (a 0 ms duration would flap).
const MIN_VALIDITY: Duration = Duration::from_millis(100);

/// How often to ask, for answers valid `validity` long.
pub(crate) fn refresh_every(validity: Duration) -> Duration {
    (validity / 4).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// The request the router sends for `request`.
pub(crate) fn wrap(
    request: switchyard_wire::allotment::AllotmentRequest,
) -> switchyard_wire::Message {
    AffinityAllotmentRequest { request }.into()
}

/// How current the answers are, by the newest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// No answer yet.
    Waiting,
    /// The newest answer is within its duration.
    Fresh,
    /// Past its duration, within the grace period: still used.
    Stale,
    /// Past the grace period: the static configuration is used.
    Lost,
}

/// The latest answer per service key, and what the role logged about them.
#[derive(Debug, Default)]
pub(crate) struct RemoteBackends {
    latest: HashMap<ServiceKey, (AffinityAllotmentResponse, Instant)>,
    reported: Option<Status>,
}

/// Whether any pool host was served from the static configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Every host from an answer (or down for want of rows).
    Remote,
    /// Some hosts from answers, some from the static configuration.
    Partly,
    /// Every host from the static configuration.
    Static,
}

fn validity(response: &AffinityAllotmentResponse) -> Duration {
    let ms = match &response.response.allotment {
        Allotment::Tokens { valid_for_ms, .. } => *valid_for_ms,
        Allotment::Percentages { duration_ms, .. } => *duration_ms,
    };
    Duration::from_millis(u64::from(ms)).max(MIN_VALIDITY)
}

impl RemoteBackends {
    /// Keeps `response` as the latest answer for its service key.
    pub(crate) fn store(&mut self, response: AffinityAllotmentResponse, now: Instant) {
        let r = &response.response;
        let key = ServiceKey::new(r.vip, r.protocol, r.info.clone());
        self.latest.insert(key, (response, now));
    }

    /// Forgets the answers of keys `plan` no longer asks for (after a reload).
    pub(crate) fn retain(&mut self, plan: &Plan) {
        self.latest
            .retain(|key, _| plan.pools.iter().any(|p| p.keys.contains(key)));
    }

    /// How old the newest answer is at `now`, if there is one.
    pub(crate) fn last_answer_age(&self, now: Instant) -> Option<Duration> {
        self.latest
            .values()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .min()
    }

    /// How current the answers are at `now`.
    pub(crate) fn status(&self, now: Instant) -> Status {
        let mut status = Status::Waiting;
        for (response, at) in self.latest.values() {
            let age = now.saturating_duration_since(*at);
            let valid = validity(response);
            let this = if age <= valid {
                Status::Fresh
            } else if age <= valid * (1 + GRACE_DURATIONS) {
                Status::Stale
            } else {
                Status::Lost
            };
            status = match (status, this) {
                (Status::Fresh, _) | (_, Status::Fresh) => Status::Fresh,
                (Status::Stale, _) | (_, Status::Stale) => Status::Stale,
                _ => Status::Lost,
            };
        }
        status
    }

    /// The status at `now` when it differs from the one last reported (and records it),
    /// with the one before: the role logs the change.
    pub(crate) fn status_change(&mut self, now: Instant) -> Option<(Option<Status>, Status)> {
        let status = self.status(now);
        let before = self.reported.replace(status);
        (before != Some(status)).then_some((before, status))
    }

    /// The answer for `key` if it is still usable at `now` (within its duration and the
    /// grace period).
    fn usable(&self, key: &ServiceKey, now: Instant) -> Option<&AffinityAllotmentResponse> {
        self.latest.get(key).and_then(|(response, at)| {
            (now.saturating_duration_since(*at) <= validity(response) * (1 + GRACE_DURATIONS))
                .then_some(response)
        })
    }

    /// The backends of every pool of `plan` at `now`, and whether some came from the
    /// static configuration.
    pub(crate) fn backends(&self, plan: &Plan, now: Instant) -> (Backends, Fed) {
        let (mut remote, mut fallback) = (0usize, 0usize);
        let backends = plan.backends_by(|pool, h| {
            let answers: Vec<&AffinityAllotmentResponse> = pool
                .keys
                .iter()
                .filter(|k| k.info == h.app)
                .filter_map(|k| self.usable(k, now))
                .collect();
            if pool.keys.is_empty() {
                // No service reports rows for this pool: as with the local cache.
                remote += 1;
                (HostState::Down, 0)
            } else if answers.is_empty() {
                fallback += 1;
                plan.fallback
                    .pool(&pool.name)
                    .iter()
                    .find(|b| b.id == h.id)
                    .map_or((HostState::Active, 0), |b| (b.state, b.weight))
            } else {
                remote += 1;
                combine(answers.iter().map(|a| standing(h, a)))
            }
        });
        let fed = match (remote, fallback) {
            (_, 0) => Fed::Remote,
            (0, _) => Fed::Static,
            _ => Fed::Partly,
        };
        (backends, fed)
    }
}

/// What one answer says about `host`.
fn standing(host: &PlanHost, answer: &AffinityAllotmentResponse) -> (HostState, u32) {
    let is_host = |id, endpoint| id == host.id && endpoint == host.address;
    let share = match &answer.response.allotment {
        Allotment::Tokens { entries, .. } => entries
            .iter()
            .find(|e| is_host(e.host, e.endpoint))
            .map(|e| e.tokens),
        Allotment::Percentages { entries, .. } => entries
            .iter()
            .find(|e| is_host(e.host, e.endpoint))
            .map(|e| u32::from(e.basis_points)),
    };
    if let Some(weight) = share.filter(|w| *w > 0) {
        return (HostState::Active, weight);
    }
    match answer
        .affinity_only
        .iter()
        .find(|a| is_host(a.host, a.endpoint))
        .map(|a| a.reason)
    {
        Some(AffinityOnlyReason::Draining) => (HostState::Draining, 0),
        Some(AffinityOnlyReason::NoShare) => (HostState::Active, 0),
        None => (HostState::Down, 0),
    }
}

/// The `remote` part of `GET /v1/router` on a unit that asks health-cache units.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteView {
    /// The health-cache units, in the order they are asked.
    pub units: Vec<SocketAddr>,
    /// The one asked now.
    pub asking: Option<SocketAddr>,
    /// `waiting`, `fresh`, `stale` or `lost`.
    pub status: Status,
    /// Age of the newest answer.
    pub last_answer_ms: Option<u64>,
    /// Requests, answers, refused datagrams, failovers.
    pub counters: ClientCounters,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router_role::PlanPool;
    use switchyard_router::Backend;
    use switchyard_wire::allotment::{AffinityOnly, AllotmentResponse, PercentageGrant};
    use switchyard_wire::{HostId, Protocol};

    const SEC: Duration = Duration::from_secs(1);

    fn vip() -> SocketAddr {
        "198.51.100.10:8000".parse().expect("vip")
    }

    fn host(id: u32) -> PlanHost {
        PlanHost {
            id: HostId(id),
            name: format!("web-{id}"),
            address: SocketAddr::from(([192, 0, 2, id as u8], 8080)),
            app: "shop".into(),
            vips: vec![vip()],
        }
    }

    fn plan() -> Plan {
        let hosts = vec![host(1), host(2), host(3), host(4)];
        let mut fallback = Backends::new();
        fallback.set_pool(
            "web",
            hosts
                .iter()
                .map(|h| Backend {
                    id: h.id,
                    address: h.address,
                    state: HostState::Active,
                    weight: 50,
                })
                .collect(),
        );
        Plan {
            pools: vec![PlanPool {
                name: "web".into(),
                hosts,
                keys: vec![ServiceKey::new(vip(), Protocol::Tcp, "shop")],
            }],
            fallback,
        }
    }

    /// Host 1 gets 75 %, host 2 25 %; host 3 drains; host 4 is in neither list.
    fn answer(duration_ms: u32) -> AffinityAllotmentResponse {
        let grant = |id: u32, basis_points| PercentageGrant {
            endpoint: host(id).address,
            host: HostId(id),
            basis_points,
        };
        AffinityAllotmentResponse {
            response: AllotmentResponse {
                request_id: 1,
                vip: vip(),
                protocol: Protocol::Tcp,
                info: "shop".into(),
                allotment: Allotment::Percentages {
                    entries: vec![grant(1, 7500), grant(2, 2500)],
                    duration_ms,
                },
            },
            affinity_only: vec![AffinityOnly {
                endpoint: host(3).address,
                host: HostId(3),
                reason: AffinityOnlyReason::Draining,
            }],
        }
    }

    fn states(b: &Backends) -> Vec<(HostState, u32)> {
        b.pool("web").iter().map(|h| (h.state, h.weight)).collect()
    }

    const STATIC: [(HostState, u32); 4] = [(HostState::Active, 50); 4];

    #[test]
    fn answers_give_shares_draining_and_down_and_expire_into_the_static_configuration() {
        let t0 = Instant::now();
        let plan = plan();
        let mut remote = RemoteBackends::default();
        assert_eq!(remote.status(t0), Status::Waiting);
        let (b, fed) = remote.backends(&plan, t0);
        assert_eq!((states(&b), fed), (STATIC.to_vec(), Fed::Static));

        remote.store(answer(1000), t0);
        let expected = vec![
            (HostState::Active, 7500),
            (HostState::Active, 2500),
            (HostState::Draining, 0),
            (HostState::Down, 0),
        ];
        assert_eq!(remote.status_change(t0), Some((None, Status::Fresh)));
        assert_eq!(remote.status_change(t0), None);
        let (b, fed) = remote.backends(&plan, t0);
        assert_eq!((states(&b), fed), (expected.clone(), Fed::Remote));
        // Silent past the duration: the same backends for two more durations.
        let t = t0 + 2 * SEC;
        assert_eq!(
            remote.status_change(t),
            Some((Some(Status::Fresh), Status::Stale))
        );
        assert_eq!(states(&remote.backends(&plan, t).0), expected);
        let t = t0 + 3 * SEC;
        assert_eq!(states(&remote.backends(&plan, t).0), expected);
        // Then the static configuration.
        let t = t0 + 3 * SEC + Duration::from_millis(1);
        assert_eq!(
            remote.status_change(t),
            Some((Some(Status::Stale), Status::Lost))
        );
        let (b, fed) = remote.backends(&plan, t);
        assert_eq!((states(&b), fed), (STATIC.to_vec(), Fed::Static));
        // An answer brings the allotment back.
        remote.store(answer(1000), t);
        assert_eq!(
            remote.status_change(t),
            Some((Some(Status::Lost), Status::Fresh))
        );
        assert_eq!(states(&remote.backends(&plan, t).0), expected);
        assert_eq!(remote.last_answer_age(t + SEC), Some(SEC));
    }

    #[test]
    fn no_share_keeps_affinity_and_several_keys_take_the_worst() {
        let t0 = Instant::now();
        let mut plan = plan();
        let other = "198.51.100.10:8001".parse().expect("vip");
        plan.pools[0]
            .keys
            .push(ServiceKey::new(other, Protocol::Tcp, "shop"));
        let mut remote = RemoteBackends::default();
        remote.store(answer(5000), t0);
        // The second service: host 1 has no spare capacity there, host 2 drains.
        let mut second = answer(5000);
        second.response.vip = other;
        second.response.allotment = Allotment::Percentages {
            entries: vec![PercentageGrant {
                endpoint: host(3).address,
                host: HostId(3),
                basis_points: 10_000,
            }],
            duration_ms: 5000,
        };
        second.affinity_only = vec![
            AffinityOnly {
                endpoint: host(1).address,
                host: HostId(1),
                reason: AffinityOnlyReason::NoShare,
            },
            AffinityOnly {
                endpoint: host(2).address,
                host: HostId(2),
                reason: AffinityOnlyReason::Draining,
            },
        ];
        remote.store(second, t0);
        assert_eq!(
            states(&remote.backends(&plan, t0).0),
            vec![
                (HostState::Active, 0),
                (HostState::Draining, 0),
                (HostState::Draining, 0),
                (HostState::Down, 0),
            ]
        );
        // A host of another app has no answer of its own: static, and said so.
        plan.pools[0].hosts[3].app = "other".into();
        let (b, fed) = remote.backends(&plan, t0);
        assert_eq!(states(&b)[3], (HostState::Active, 50));
        assert_eq!(fed, Fed::Partly);
        // A pool no service reports rows for: down, as with the local cache.
        plan.pools[0].keys.clear();
        let (b, fed) = remote.backends(&plan, t0);
        assert_eq!(states(&b), vec![(HostState::Down, 0); 4]);
        assert_eq!(fed, Fed::Remote);
        // Answers of keys the plan dropped are forgotten.
        remote.retain(&plan);
        assert_eq!(remote.status(t0), Status::Waiting);
    }

    #[test]
    fn refresh_is_a_quarter_duration_within_bounds() {
        assert_eq!(refresh_every(5 * SEC), Duration::from_millis(500));
        assert_eq!(refresh_every(SEC), Duration::from_millis(250));
        assert_eq!(refresh_every(Duration::ZERO), Duration::from_millis(100));
    }
}
