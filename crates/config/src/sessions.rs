//! `[sessions]`: session tracking and the distributed atom manager (DAM) — the schema as
//! written ([`RawSessions`], read by [`read`]) and the typed settings ([`SessionSettings`])
//! that host agents and session-store units run with. The rules live in
//! `validate/sessions.rs`.

use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{Decode, Field, Node, Span};
use crate::diagnostics::{Sink, codes};
use crate::raw::At;

/// Defaults of the `[sessions]` table.
pub mod session_defaults {
    use std::time::Duration;

    /// Copies kept beyond the first: 1 (each session on two units).
    pub const REPLICATION: u16 = 1;
    /// UDP port of session messages, DAM calls and the units' membership gossip.
    pub const PORT: u16 = 9174;
    /// Time between resends of unacknowledged session messages.
    pub const RESEND_INTERVAL: Duration = Duration::from_millis(500);
    /// Time between an idle host's keepalives.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
    /// Silence of the bound unit after which a host binds to another.
    pub const REBIND_AFTER: Duration = Duration::from_secs(3);
    /// Cache entries per unit.
    pub const CACHE_SIZE: u32 = 100_000;
    /// Life of a cache entry.
    pub const CACHE_TTL: Duration = Duration::from_secs(60);
    /// Zombie time of a TCP connection (TIME_WAIT on Linux).
    pub const ZOMBIE_FOUR_TUPLE: Duration = Duration::from_secs(60);
    /// Zombie time of every other session type.
    pub const ZOMBIE_OTHER: Duration = Duration::from_secs(30);
}

/// How many copies of each session atom the session-store units keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionReplication {
    /// `n` copies beyond the first (`0`: one copy).
    Level(u16),
    /// Every session-store unit holds every atom.
    Full,
}

/// How long a deleted session stays as a zombie, per session type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZombieTimes {
    /// TCP/UDP four-tuples.
    pub four_tuple: Duration,
    /// Client IP addresses.
    pub client_ip: Duration,
    /// TLS session ids.
    pub tls_session_id: Duration,
    /// HTTP cookies.
    pub http_cookie: Duration,
    /// Users.
    pub user: Duration,
    /// Application-defined sessions.
    pub custom: Duration,
}

impl Default for ZombieTimes {
    fn default() -> Self {
        use session_defaults as d;
        Self {
            four_tuple: d::ZOMBIE_FOUR_TUPLE,
            client_ip: d::ZOMBIE_OTHER,
            tls_session_id: d::ZOMBIE_OTHER,
            http_cookie: d::ZOMBIE_OTHER,
            user: d::ZOMBIE_OTHER,
            custom: d::ZOMBIE_OTHER,
        }
    }
}

/// Session tracking (`[sessions]`), shared by host agents and session-store units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Replication level of the DAM.
    pub replication: SessionReplication,
    /// UDP port on each session-store unit's `address`: hosts' session messages, DAM calls
    /// between units and the units' membership gossip.
    pub port: u16,
    /// A host resends unacknowledged session messages this often.
    pub resend_interval: Duration,
    /// An idle host probes its unit this often.
    pub keepalive_interval: Duration,
    /// A host whose unit answered nothing for this long binds to another session-store
    /// unit (longer than `resend_interval` and `keepalive_interval`).
    pub rebind_after: Duration,
    /// Most cache entries per unit.
    pub cache_size: u32,
    /// Life of a cache entry.
    pub cache_ttl: Duration,
    /// Zombie time per session type.
    pub zombie: ZombieTimes,
}

impl Default for SessionSettings {
    fn default() -> Self {
        use session_defaults as d;
        Self {
            replication: SessionReplication::Level(d::REPLICATION),
            port: d::PORT,
            resend_interval: d::RESEND_INTERVAL,
            keepalive_interval: d::KEEPALIVE_INTERVAL,
            rebind_after: d::REBIND_AFTER,
            cache_size: d::CACHE_SIZE,
            cache_ttl: d::CACHE_TTL,
            zombie: ZombieTimes::default(),
        }
    }
}

impl Decode for SessionReplication {
    const EXPECTED: &'static str = "an integer (0 to 255) or \"full\"";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        match value {
            DeValue::Integer(_) => {
                let n = i64::decode(value, span, field, sink)?;
                match u8::try_from(n) {
                    Ok(n) => Some(Self::Level(u16::from(n))),
                    Err(_) => {
                        sink.error(
                            codes::OUT_OF_RANGE,
                            span,
                            field,
                            format!("replication {n} is out of range"),
                            Some(
                                "replication is 0 (one copy) to 255 extra copies, or \"full\""
                                    .to_owned(),
                            ),
                        );
                        None
                    }
                }
            }
            DeValue::String(s) if s.as_ref() == "full" => Some(Self::Full),
            DeValue::String(s) => {
                sink.error(
                    codes::BAD_VALUE,
                    span,
                    field,
                    format!("replication {s:?} is neither a level nor \"full\""),
                    Some("write a number of extra copies (e.g. 1) or \"full\"".to_owned()),
                );
                None
            }
            other => {
                sink.error(
                    codes::WRONG_TYPE,
                    span,
                    field,
                    format!(
                        "replication: expected {}, found {}",
                        Self::EXPECTED,
                        other.type_str()
                    ),
                    Some("e.g. replication = 1, or replication = \"full\"".to_owned()),
                );
                None
            }
        }
    }
}

/// `[sessions]` as written.
#[derive(Debug)]
pub(crate) struct RawSessions {
    pub(crate) at: At,
    pub(crate) replication: Field<SessionReplication>,
    pub(crate) port: Field<u16>,
    pub(crate) resend_interval: Field<Duration>,
    pub(crate) keepalive_interval: Field<Duration>,
    pub(crate) rebind_after: Field<Duration>,
    pub(crate) cache_size: Field<u32>,
    pub(crate) cache_ttl: Field<Duration>,
    pub(crate) zombie: Option<RawZombie>,
}

/// `[sessions.zombie]` as written.
#[derive(Debug)]
pub(crate) struct RawZombie {
    pub(crate) at: At,
    /// (key, value) per session type, in [`ZOMBIE_KEYS`] order.
    pub(crate) times: Vec<(&'static str, Field<Duration>)>,
}

/// The keys of `[sessions.zombie]`.
pub(crate) const ZOMBIE_KEYS: [&str; 6] = [
    "four_tuple",
    "client_ip",
    "tls_session_id",
    "http_cookie",
    "user",
    "custom",
];

fn at(node: &Node<'_, '_>) -> At {
    At {
        span: node.span.clone(),
        path: node.path.clone(),
    }
}

/// Reads `[sessions]`.
pub(crate) fn read(node: &Node<'_, '_>, sink: &mut Sink) -> RawSessions {
    node.check_fields(
        sink,
        "[sessions]",
        &[
            "replication",
            "port",
            "resend_interval",
            "keepalive_interval",
            "rebind_after",
            "cache_size",
            "cache_ttl",
            "zombie",
        ],
    );
    let zombie = node.table(sink, "zombie").map(|z| {
        z.check_fields(sink, "[sessions.zombie]", &ZOMBIE_KEYS);
        RawZombie {
            at: at(&z),
            times: ZOMBIE_KEYS
                .iter()
                .map(|&key| (key, z.optional(sink, key)))
                .collect(),
        }
    });
    RawSessions {
        at: at(node),
        replication: node.optional(sink, "replication"),
        port: node.integer(sink, "port", 1, u16::MAX),
        resend_interval: node.optional(sink, "resend_interval"),
        keepalive_interval: node.optional(sink, "keepalive_interval"),
        rebind_after: node.optional(sink, "rebind_after"),
        cache_size: node.integer(sink, "cache_size", 1, 100_000_000),
        cache_ttl: node.optional(sink, "cache_ttl"),
        zombie,
    }
}
