//! The JSON documents of the agent's session API and their conversion to the wire's
//! [`SessionId`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use switchyard_wire::session::{
    MAX_COOKIE_NAME_LEN, MAX_COOKIE_VALUE_LEN, MAX_CUSTOM_ID_LEN, MAX_CUSTOM_KIND_LEN,
    MAX_TLS_SESSION_ID_LEN, MAX_USER_LEN,
};
use switchyard_wire::{FlowTuple, Protocol, SessionId};

/// A session id as the API writes it: `{"type": "client-ip", "ip": "198.51.100.7"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Session {
    /// A TCP or UDP connection: `{"type":"four-tuple","protocol":"tcp","client":"IP:PORT","vip":"IP:PORT"}`.
    FourTuple {
        /// `tcp` or `udp`.
        protocol: String,
        /// The client's address and port.
        client: SocketAddr,
        /// The virtual service's address and port.
        vip: SocketAddr,
    },
    /// Every connection from one client address: `{"type":"client-ip","ip":"IP"}`.
    ClientIp {
        /// The client address.
        ip: IpAddr,
    },
    /// A TLS session id in hex (1 to 32 bytes): `{"type":"tls-session-id","id":"ab01…"}`.
    TlsSessionId {
        /// The id, hex.
        id: String,
    },
    /// An HTTP cookie: `{"type":"http-cookie","name":"sid","value":"…"}`.
    HttpCookie {
        /// Cookie name.
        name: String,
        /// Cookie value.
        value: String,
    },
    /// A user: `{"type":"user","name":"joe"}`.
    User {
        /// User name.
        name: String,
    },
    /// An application-defined session: `{"type":"custom","kind":"pptp","id":"…"}`.
    Custom {
        /// The application's kind of session.
        kind: String,
        /// The id within the kind (its UTF-8 bytes are the id).
        id: String,
    },
}

/// Why a [`Session`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSession(pub String);

fn bounded(what: &str, value: &str, max: usize) -> Result<(), InvalidSession> {
    if value.is_empty() {
        return Err(InvalidSession(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(InvalidSession(format!(
            "{what} is {} bytes long; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

impl Session {
    /// The wire's session id, or why this one is unusable (empty or too long fields, bad hex,
    /// mixed address families, an unknown protocol).
    pub fn to_wire(&self) -> Result<SessionId, InvalidSession> {
        match self {
            Self::FourTuple {
                protocol,
                client,
                vip,
            } => {
                let protocol = match protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    other => {
                        return Err(InvalidSession(format!(
                            "protocol {other:?} is neither \"tcp\" nor \"udp\""
                        )));
                    }
                };
                FlowTuple::new(protocol, *client, *vip)
                    .map(SessionId::FourTuple)
                    .map_err(|_| {
                        InvalidSession(
                            "client and vip must both be IPv4 or both be IPv6".to_owned(),
                        )
                    })
            }
            Self::ClientIp { ip } => Ok(SessionId::ClientIp(*ip)),
            Self::TlsSessionId { id } => {
                let bytes = hex::decode(id).map_err(|e| {
                    InvalidSession(format!("tls-session-id {id:?} is not hex: {e}"))
                })?;
                if bytes.is_empty() || bytes.len() > MAX_TLS_SESSION_ID_LEN {
                    return Err(InvalidSession(format!(
                        "a TLS session id has 1 to {MAX_TLS_SESSION_ID_LEN} bytes, not {}",
                        bytes.len()
                    )));
                }
                Ok(SessionId::TlsSessionId(bytes))
            }
            Self::HttpCookie { name, value } => {
                bounded("cookie name", name, MAX_COOKIE_NAME_LEN)?;
                if value.len() > MAX_COOKIE_VALUE_LEN {
                    return Err(InvalidSession(format!(
                        "cookie value is {} bytes long; at most {MAX_COOKIE_VALUE_LEN} are allowed",
                        value.len()
                    )));
                }
                Ok(SessionId::HttpCookie {
                    name: name.clone(),
                    value: value.clone(),
                })
            }
            Self::User { name } => {
                bounded("user name", name, MAX_USER_LEN)?;
                Ok(SessionId::User(name.clone()))
            }
            Self::Custom { kind, id } => {
                bounded("custom kind", kind, MAX_CUSTOM_KIND_LEN)?;
                bounded("custom id", id, MAX_CUSTOM_ID_LEN)?;
                Ok(SessionId::Custom {
                    kind: kind.clone(),
                    id: id.as_bytes().to_vec(),
                })
            }
        }
    }

    /// The API form of a wire session id (a custom id that is not UTF-8 is shown lossily).
    pub fn from_wire(id: &SessionId) -> Self {
        match id {
            SessionId::FourTuple(flow) => Self::FourTuple {
                protocol: match flow.protocol() {
                    Protocol::Udp => "udp",
                    _ => "tcp",
                }
                .to_owned(),
                client: flow.client(),
                vip: flow.vip(),
            },
            SessionId::ClientIp(ip) => Self::ClientIp { ip: *ip },
            SessionId::TlsSessionId(bytes) => Self::TlsSessionId {
                id: hex::encode(bytes),
            },
            SessionId::HttpCookie { name, value } => Self::HttpCookie {
                name: name.clone(),
                value: value.clone(),
            },
            SessionId::User(name) => Self::User { name: name.clone() },
            SessionId::Custom { kind, id } => Self::Custom {
                kind: kind.clone(),
                id: String::from_utf8_lossy(id).into_owned(),
            },
        }
    }

    /// The session's type as the API and the configuration's `[sessions.zombie]` name it
    /// (`four-tuple`, `client-ip`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::FourTuple { .. } => "four-tuple",
            Self::ClientIp { .. } => "client-ip",
            Self::TlsSessionId { .. } => "tls-session-id",
            Self::HttpCookie { .. } => "http-cookie",
            Self::User { .. } => "user",
            Self::Custom { .. } => "custom",
        }
    }
}

/// The body of `POST /v1/sessions` (session up) and `POST /v1/sessions/down` or
/// `DELETE /v1/sessions` (session down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReport {
    /// The host the session is on; may be left out when the agent reports for one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The session.
    pub session: Session,
    /// The application (a configured service of the host), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// One session in a host's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The session.
    pub session: Session,
    /// Its application, if reported.
    pub app: Option<String>,
    /// The DAM key (`SessionId::key`), hex.
    pub key: String,
}

/// Where a host's session messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    /// The bound unit's name.
    pub unit: Option<String>,
    /// The bound unit's id.
    pub unit_id: Option<u32>,
    /// The channel number (new after every resync).
    pub channel: u64,
    /// Messages sent but not acknowledged yet.
    pub unacked: u64,
    /// Whether the unit acknowledged the channel's resync (it holds the whole table).
    pub in_sync: bool,
    /// Milliseconds since the bound unit was last heard from.
    pub last_heard_ms: u64,
    /// Channels started (the first one included): resyncs.
    pub resyncs: u64,
    /// Rebinds to another unit.
    pub rebinds: u64,
    /// Resyncs a unit asked for (it had lost the host's channel, e.g. restarted).
    pub resync_requests: u64,
    /// Messages resent.
    pub resent: u64,
}

/// One host's session table and channel (`GET /v1/sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSessions {
    /// Host name.
    pub host: String,
    /// Host id.
    pub id: u32,
    /// The channel to the bound unit.
    pub channel: ChannelView,
    /// Number of sessions.
    pub count: u64,
    /// The sessions, in key order.
    pub sessions: Vec<SessionEntry>,
}

/// `GET /v1/sessions`: every host of the agent.
pub type SessionList = Vec<HostSessions>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_round_trip_through_the_wire_id() {
        let cases = [
            r#"{"type":"client-ip","ip":"198.51.100.7"}"#,
            r#"{"type":"four-tuple","protocol":"udp","client":"198.51.100.7:5000","vip":"203.0.113.1:53"}"#,
            r#"{"type":"tls-session-id","id":"ab01"}"#,
            r#"{"type":"http-cookie","name":"sid","value":"v"}"#,
            r#"{"type":"user","name":"joe"}"#,
            r#"{"type":"custom","kind":"pptp","id":"42"}"#,
        ];
        for text in cases {
            let session: Session = serde_json::from_str(text).expect("valid JSON");
            let wire = session.to_wire().expect("valid session");
            assert_eq!(Session::from_wire(&wire), session, "{text}");
        }
    }

    #[test]
    fn unusable_sessions_say_why() {
        let bad = [
            (r#"{"type":"tls-session-id","id":"zz"}"#, "not hex"),
            (r#"{"type":"tls-session-id","id":""}"#, "1 to 32 bytes"),
            (r#"{"type":"user","name":""}"#, "user name is empty"),
            (
                r#"{"type":"four-tuple","protocol":"sctp","client":"198.51.100.7:1","vip":"203.0.113.1:2"}"#,
                "neither",
            ),
            (
                r#"{"type":"four-tuple","protocol":"tcp","client":"[2001:db8::1]:1","vip":"203.0.113.1:2"}"#,
                "both be IPv4",
            ),
        ];
        for (text, why) in bad {
            let session: Session = serde_json::from_str(text).expect("valid JSON");
            let error = session.to_wire().expect_err(text);
            assert!(error.0.contains(why), "{text}: {error}");
        }
        assert!(serde_json::from_str::<Session>(r#"{"type":"nope"}"#).is_err());
    }
}
