//! `GET /v1/sessions?…` (where one session is held, looked up through this unit's DAM
//! portion: a local copy at once, else the owners, then every unit) and
//! `GET /v1/sessions/summary` (membership, counters, atoms per host, host channels); the
//! `switchyard_dam_*` and `switchyard_sessions_*` metrics ([`SessionCollector`], listed in
//! docs/LB.md: DAM gauges and operation counts, `pushes_pending` = replication lag,
//! `replication_copies`, messages by `kind`, sessions per `host`). 503 when the unit does not
//! run the session-store role.
//!
//! The session is named by exactly one parameter: `key` (a `SessionId::key()` in hex),
//! `client_ip=IP`, `cookie=NAME=VALUE`, `user=NAME`, `tls_session_id=HEX`,
//! `custom=KIND:ID` or `four_tuple=PROTO,CLIENT,VIP` (e.g. `tcp,198.51.100.7:40000,203.0.113.10:80`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};
use switchyard_dam::{Holding, Replication};
use switchyard_session_client::Session;
use switchyard_transport::metrics::{
    NO_LABELS, by_kind, counter, counters, gauge, gauges, transport,
};
use switchyard_wire::{Family, SessionId};

use super::AdminState;
use super::api::{ErrorBody, UnitInfo};
use crate::SessionStoreHandle;

/// `GET /v1/sessions?…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLookup {
    /// The unit that answered.
    pub unit: UnitInfo,
    /// The key looked up, hex.
    pub key: String,
    /// The session, when named by type rather than by key.
    pub session: Option<Session>,
    /// Whether a live unit has it.
    pub found: bool,
    /// The host holding the session.
    pub host: Option<u32>,
    /// Its name.
    pub host_name: Option<String>,
    /// Deleted, lingering as a zombie.
    pub zombie: bool,
    /// How this unit held it before the lookup: `owned`, `handoff`, `cached`, or `remote`
    /// (other units were asked); `null` when not found.
    pub holding: Option<String>,
    /// The key's owners among the live units (primary first), by name.
    pub owners: Vec<String>,
    /// The unit that added it.
    pub added_by: Option<String>,
    /// Its version.
    pub version: Option<u64>,
    /// Zombie expiry (Unix ms; 0: never).
    pub expires_at_ms: Option<u64>,
    /// How long the lookup took, in microseconds.
    pub lookup_us: u64,
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Unit id.
    pub id: u32,
    /// Unit name.
    pub name: String,
}

/// Atoms per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAtoms {
    /// Host id.
    pub id: u32,
    /// Host name.
    pub name: Option<String>,
    /// Live atoms of the host this unit holds (owned or handed off).
    pub atoms: u64,
}

/// A host channel this unit serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    /// Host id.
    pub host: u32,
    /// Host name.
    pub name: Option<String>,
    /// Channel number.
    pub channel: u64,
    /// Last message id processed.
    pub last_id: u64,
    /// A resync is being received.
    pub resyncing: bool,
    /// Sessions the host reported through this unit.
    pub sessions: u64,
    /// Milliseconds since the host was last heard from.
    pub last_seen_ms: u64,
}

/// `GET /v1/sessions/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsSummary {
    /// The unit that answered.
    pub unit: UnitInfo,
    /// `0`, `1`, … or `full`.
    pub replication: String,
    /// Live session-store units as this unit sees them.
    pub members: Vec<MemberView>,
    /// Gauges and counts of the DAM portion (`atoms_owned`, `local_hits`,
    /// `remote_queries`, `misses`, `pushes_pending` = replication lag, …).
    pub dam: BTreeMap<String, u64>,
    /// The session role's counts (`ups`, `downs`, `resyncs`, …, `ignored.REASON`).
    pub role: BTreeMap<String, u64>,
    /// Live atoms held here per host.
    pub hosts: Vec<HostAtoms>,
    /// Host channels served here.
    pub channels: Vec<ChannelEntry>,
}

/// Parameters of `/v1/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    key: Option<String>,
    client_ip: Option<String>,
    cookie: Option<String>,
    user: Option<String>,
    tls_session_id: Option<String>,
    custom: Option<String>,
    four_tuple: Option<String>,
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/sessions", get(lookup))
        .route("/v1/sessions/summary", get(summary))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn no_role(state: &AdminState) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "unit {} does not run the session-store role; ask a unit that does",
            state.unit.name
        ),
    )
}

/// The session a query names, as the API form (when typed) and the DAM key.
pub fn parse_query(q: &LookupQuery) -> Result<(Option<Session>, Vec<u8>), String> {
    let given = [
        &q.key,
        &q.client_ip,
        &q.cookie,
        &q.user,
        &q.tls_session_id,
        &q.custom,
        &q.four_tuple,
    ]
    .iter()
    .filter(|v| v.is_some())
    .count();
    if given != 1 {
        return Err("name the session with exactly one of key, client_ip, cookie, user, tls_session_id, custom, four_tuple".to_owned());
    }
    if let Some(key) = &q.key {
        let bytes = hex::decode(key).map_err(|e| format!("key: {key:?} is not hex: {e}"))?;
        return Ok((None, bytes));
    }
    let session = if let Some(ip) = &q.client_ip {
        Session::ClientIp {
            ip: ip
                .parse()
                .map_err(|_| format!("client_ip: {ip:?} is not an IP address"))?,
        }
    } else if let Some(cookie) = &q.cookie {
        let (name, value) = cookie
            .split_once('=')
            .ok_or_else(|| format!("cookie: {cookie:?} is not NAME=VALUE"))?;
        Session::HttpCookie {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    } else if let Some(user) = &q.user {
        Session::User { name: user.clone() }
    } else if let Some(id) = &q.tls_session_id {
        Session::TlsSessionId { id: id.clone() }
    } else if let Some(custom) = &q.custom {
        let (kind, id) = custom
            .split_once(':')
            .ok_or_else(|| format!("custom: {custom:?} is not KIND:ID"))?;
        Session::Custom {
            kind: kind.to_owned(),
            id: id.to_owned(),
        }
    } else if let Some(tuple) = &q.four_tuple {
        let parts: Vec<&str> = tuple.split(',').collect();
        let [protocol, client, vip] = parts[..] else {
            return Err(format!("four_tuple: {tuple:?} is not PROTOCOL,CLIENT,VIP"));
        };
        Session::FourTuple {
            protocol: protocol.to_owned(),
            client: client
                .parse()
                .map_err(|_| format!("four_tuple: {client:?} is not IP:PORT"))?,
            vip: vip
                .parse()
                .map_err(|_| format!("four_tuple: {vip:?} is not IP:PORT"))?,
        }
    } else {
        return Err("no session named".to_owned());
    };
    let id: SessionId = session.to_wire().map_err(|e| e.to_string())?;
    Ok((Some(session), id.key()))
}

fn holding_name(h: Option<Holding>) -> &'static str {
    match h {
        Some(Holding::Owned) => "owned",
        Some(Holding::Handoff) => "handoff",
        Some(Holding::Cached) => "cached",
        _ => "remote",
    }
}

async fn lookup(
    State(state): State<AdminState>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Response {
    let Some(store) = state.sessions.clone() else {
        return no_role(&state);
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let (session, key) = match parse_query(&query) {
        Ok(v) => v,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let started = Instant::now();
    let found = store.lookup(&key).await;
    let lookup_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let name = |u| {
        store
            .unit_name(u)
            .map_or_else(|| u.to_string(), str::to_owned)
    };
    let owners = store.owners(&key).into_iter().map(name).collect();
    let doc = SessionLookup {
        unit: state.unit.clone(),
        key: hex::encode(&key),
        session,
        found: found.is_some(),
        host: found.as_ref().map(|f| f.host.0),
        host_name: found
            .as_ref()
            .and_then(|f| store.host_name(f.host).map(str::to_owned)),
        zombie: found.as_ref().is_some_and(|f| f.zombie),
        holding: found.as_ref().map(|f| holding_name(f.holding).to_owned()),
        owners,
        added_by: found.as_ref().map(|f| name(f.atom.meta.added_by)),
        version: found.as_ref().map(|f| f.atom.meta.version),
        expires_at_ms: found.as_ref().map(|f| f.atom.meta.expires_at_ms),
        lookup_us,
    };
    Json(doc).into_response()
}

fn dam_map(c: &switchyard_dam::DamCounters) -> BTreeMap<String, u64> {
    [
        ("atoms_owned", c.atoms_owned),
        ("atoms_handoff", c.atoms_handoff),
        ("atoms_cached", c.atoms_cached),
        ("zombies", c.zombies),
        ("memory_bytes", c.memory_bytes),
        ("pushes_pending", c.pushes_pending),
        ("rebalance_pending", c.rebalance_pending),
        ("queries_pending", c.queries_pending),
        ("adds", c.adds),
        ("deletes", c.deletes),
        ("deletes_forwarded", c.deletes_forwarded),
        ("local_hits", c.local_hits),
        ("cache_hits", c.cache_hits),
        ("remote_queries", c.remote_queries),
        ("remote_found", c.remote_found),
        ("misses", c.misses),
        ("queries_served", c.queries_served),
        ("pushes_sent", c.pushes_sent),
        ("push_retries", c.push_retries),
        ("pushes_acked", c.pushes_acked),
        ("pushes_dropped", c.pushes_dropped),
        ("stale_updates", c.stale_updates),
        ("expired", c.expired),
        ("evicted", c.evicted),
        ("membership_changes", c.membership_changes),
        ("ignored", c.ignored),
        ("messages_sent", c.sent.total()),
        ("messages_received", c.received.total()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn role_map(c: &crate::session_role::RoleCounters) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = [
        ("ups", c.ups),
        ("downs", c.downs),
        ("resyncs", c.resyncs),
        ("resync_deletes", c.resync_deletes),
        ("resync_requests", c.resync_requests),
        ("duplicates", c.duplicates),
        ("gaps", c.gaps),
        ("keepalives", c.keepalives),
        ("dam_errors", c.dam_errors),
        ("send_errors", c.send_errors),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (reason, n) in &c.ignored {
        m.insert(format!("ignored.{reason}"), *n);
    }
    m
}

fn replication_name(r: Replication) -> String {
    match r {
        Replication::Level(n) => n.to_string(),
        Replication::Full => "full".to_owned(),
    }
}

async fn summary(State(state): State<AdminState>) -> Response {
    let Some(store) = state.sessions.clone() else {
        return no_role(&state);
    };
    let s = store.summary();
    let doc = SessionsSummary {
        unit: state.unit.clone(),
        replication: replication_name(s.replication),
        members: s
            .members
            .iter()
            .map(|u| MemberView {
                id: u.0,
                name: store
                    .unit_name(*u)
                    .map_or_else(|| u.to_string(), str::to_owned),
            })
            .collect(),
        dam: dam_map(&s.dam),
        role: role_map(&s.role),
        hosts: s
            .atoms_per_host
            .iter()
            .map(|(h, n)| HostAtoms {
                id: h.0,
                name: store.host_name(*h).map(str::to_owned),
                atoms: *n,
            })
            .collect(),
        channels: s
            .channels
            .iter()
            .map(|c| ChannelEntry {
                host: c.host.0,
                name: store.host_name(c.host).map(str::to_owned),
                channel: c.channel,
                last_id: c.last_id,
                resyncing: c.resyncing,
                sessions: c.sessions,
                last_seen_ms: u64::try_from(c.last_seen.as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
    };
    Json(doc).into_response()
}

/// The DAM's gauges (everything else in [`dam_map`] is a counter).
const DAM_GAUGES: [&str; 8] = [
    "atoms_owned",
    "atoms_handoff",
    "atoms_cached",
    "zombies",
    "memory_bytes",
    "pushes_pending",
    "rebalance_pending",
    "queries_pending",
];

/// The DAM counts that have families by message kind instead.
const DAM_BY_KIND: [&str; 2] = ["messages_sent", "messages_received"];

/// The `switchyard_dam_*` and `switchyard_sessions_*` families, read from the role's
/// summary at scrape time.
#[derive(Debug)]
pub struct SessionCollector(pub SessionStoreHandle);

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let store = &self.0;
        let s = store.summary();
        for (name, value) in dam_map(&s.dam) {
            if DAM_BY_KIND.contains(&name.as_str()) {
                continue;
            }
            let metric = format!("switchyard_dam_{name}");
            let help = dam_help(&name);
            if DAM_GAUGES.contains(&name.as_str()) {
                gauge(e, &metric, help, value)?;
            } else {
                counter(e, &metric, help, value)?;
            }
        }
        for (name, help, counts) in [
            (
                "switchyard_dam_messages_sent",
                "DAM messages queued for other units, by kind (add, delete, query, return atom).",
                &s.dam.sent,
            ),
            (
                "switchyard_dam_messages_received",
                "DAM messages handled, by kind (ignored ones included).",
                &s.dam.received,
            ),
        ] {
            counters(e, name, help, by_kind(Family::Dam, counts.iter()))?;
        }
        gauge(
            e,
            "switchyard_dam_members",
            "Live session-store units as this unit sees them, itself included.",
            s.members.len() as u64,
        )?;
        gauge(
            e,
            "switchyard_dam_replication_copies",
            "Copies each atom is kept in by its owners: the replication level plus one, at most the live units.",
            s.replication.copies(s.members.len()) as u64,
        )?;
        gauges(
            e,
            "switchyard_sessions_atoms",
            "Live sessions held here (owned or handed off), per host.",
            s.atoms_per_host.iter().map(|(host, n)| {
                (
                    [
                        ("host", host.0.to_string()),
                        ("host_name", store.host_name(*host).unwrap_or("").to_owned()),
                    ],
                    *n,
                )
            }),
        )?;
        let c = &s.role;
        for (name, help, value) in [
            ("ups", "Session up messages applied.", c.ups),
            ("downs", "Session down messages applied.", c.downs),
            ("resyncs", "Host resyncs completed.", c.resyncs),
            (
                "resync_deletes",
                "Sessions deleted by a resync (the host no longer had them).",
                c.resync_deletes,
            ),
            (
                "resync_requests",
                "Resyncs asked of hosts (a gap or an unknown channel).",
                c.resync_requests,
            ),
            ("duplicates", "Host messages seen again.", c.duplicates),
            ("gaps", "Gaps in a host channel's message ids.", c.gaps),
            ("keepalives", "Host channel keepalives.", c.keepalives),
            ("dam_errors", "DAM calls that failed.", c.dam_errors),
            (
                "send_errors",
                "Messages that could not be sent.",
                c.send_errors,
            ),
        ] {
            counter(e, &format!("switchyard_sessions_{name}"), help, value)?;
        }
        counters(
            e,
            "switchyard_sessions_ignored",
            "Host session messages ignored, by reason.",
            c.ignored
                .iter()
                .map(|(reason, n)| ([("reason", *reason)], *n)),
        )?;
        transport(
            e,
            "switchyard_sessions",
            &[(NO_LABELS, s.transport.clone())],
        )
    }
}

fn dam_help(name: &str) -> &'static str {
    match name {
        "atoms_owned" => "Atoms this unit owns (zombies included).",
        "atoms_handoff" => "Atoms held until their new owners acknowledge them.",
        "atoms_cached" => "Atoms cached from remote queries.",
        "zombies" => "Deleted atoms lingering as zombies.",
        "memory_bytes" => "Estimated memory of the atoms held.",
        "pushes_pending" => {
            "Replication lag: pushes (atom, owner) queued or awaiting an acknowledgement."
        }
        "rebalance_pending" => "Atoms whose owners are to be recomputed after a membership change.",
        "queries_pending" => "Remote queries waiting for answers.",
        "adds" => "Add atom calls.",
        "deletes" => "Delete atom calls that turned an atom into a zombie.",
        "deletes_forwarded" => "Delete atom calls for keys held elsewhere (forwarded).",
        "local_hits" => "Queries answered from an owned copy.",
        "cache_hits" => "Queries answered from the cache.",
        "remote_queries" => "Queries that asked other units.",
        "remote_found" => "Remote queries that found the atom.",
        "misses" => "Remote queries nobody could answer.",
        "queries_served" => "Query atom calls answered for other units.",
        "pushes_sent" => "Replica copies pushed to owners (first attempts and retries).",
        "push_retries" => "Pushes retried after a missing acknowledgement.",
        "pushes_acked" => "Replica copies acknowledged by their owners.",
        "pushes_dropped" => "Pushes given up (the target left or no longer owns the key).",
        "stale_updates" => "Incoming atoms older than the copy held (never applied).",
        "expired" => "Atoms removed because they expired.",
        "evicted" => "Cache entries evicted for space.",
        "membership_changes" => "Membership changes applied.",
        "ignored" => "DAM messages ignored.",
        _ => "DAM count.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_exactly_one_session() {
        let q = LookupQuery {
            client_ip: Some("198.51.100.7".into()),
            ..LookupQuery::default()
        };
        let (session, key) = parse_query(&q).expect("valid");
        assert_eq!(
            session,
            Some(Session::ClientIp {
                ip: "198.51.100.7".parse().expect("literal")
            })
        );
        assert_eq!(
            key,
            SessionId::ClientIp("198.51.100.7".parse().expect("literal")).key()
        );
        let both = LookupQuery {
            client_ip: Some("198.51.100.7".into()),
            user: Some("joe".into()),
            ..LookupQuery::default()
        };
        assert!(parse_query(&both).is_err());
        assert!(parse_query(&LookupQuery::default()).is_err());
        for bad in [
            LookupQuery {
                cookie: Some("novalue".into()),
                ..LookupQuery::default()
            },
            LookupQuery {
                key: Some("xyz".into()),
                ..LookupQuery::default()
            },
            LookupQuery {
                four_tuple: Some("tcp,1.2.3.4:5".into()),
                ..LookupQuery::default()
            },
        ] {
            assert!(parse_query(&bad).is_err(), "{bad:?}");
        }
    }
}
