//! Session tracking protocol (message types `0x3_`, spec FIGS. 20 and 21).
//!
//! A host's session tracking infrastructure tells the load balancing unit
//! it is bound to when an application opens ([`SessionUp`]) or closes
//! ([`SessionDown`]) a session, over a reliable channel; the unit
//! acknowledges cumulatively ([`SessionAck`]). Also owns [`SessionId`] and
//! its canonical key, by which the DAM stores session atoms.
//!
//! # Channels
//!
//! Message ids grow monotonically for the life of a host agent's process. A
//! *channel* is one host's conversation with one unit: it starts with a
//! [`SessionResync`] (a new channel number, the message id it takes, and
//! how many [`SessionUp`]s follow it carrying the host's whole session
//! table), after which ups and downs take the following ids. The unit
//! processes a channel's messages strictly in id order and acknowledges the
//! highest it processed ([`SessionAck`]); the host resends what is not
//! acknowledged. An idle host sends [`SessionKeepalive`]s so it notices a
//! silent unit; a unit that does not know a host's channel (it restarted)
//! answers with a [`SessionResyncRequest`] and the host starts a new
//! channel. A host starts a new channel after every (re)connection and
//! rebinding as well.

use std::net::IpAddr;

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{DecodeError, Problem};
use crate::types::{AppId, FlowTuple, HostId};

/// Maximum TLS session id length (RFC 5246 §7.4.1.2).
pub const MAX_TLS_SESSION_ID_LEN: usize = 32;
/// Maximum length of an HTTP cookie name.
pub const MAX_COOKIE_NAME_LEN: usize = 256;
/// Maximum length of an HTTP cookie value.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;
/// Maximum length of a user name.
pub const MAX_USER_LEN: usize = 256;
/// Maximum length of a custom session kind.
pub const MAX_CUSTOM_KIND_LEN: usize = 64;
/// Maximum length of a custom session id.
pub const MAX_CUSTOM_ID_LEN: usize = 1024;
/// Maximum number of metadata entries in a [`SessionUp`].
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Maximum length of a metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Maximum length of a metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;

/// Identifies a session whose requests must reach the same host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionId {
    /// A transport connection.
    FourTuple(FlowTuple),
    /// Every connection from one client address.
    ClientIp(IpAddr),
    /// A TLS session id (at most [`MAX_TLS_SESSION_ID_LEN`] bytes).
    TlsSessionId(Vec<u8>),
    /// An HTTP cookie.
    HttpCookie {
        /// Cookie name.
        name: String,
        /// Cookie value.
        value: String,
    },
    /// An authenticated user.
    User(String),
    /// An application-defined session.
    Custom {
        /// Application-defined kind, e.g. `"pptp"`.
        kind: String,
        /// The session id within that kind.
        id: Vec<u8>,
    },
}

impl SessionId {
    /// Canonical byte key of the session, used to key DAM atoms.
    ///
    /// The key is a variant tag followed by the variant's fields; variable
    /// length fields carry a u64 length prefix. It is injective (distinct
    /// ids never share a key) and stable for protocol version 1, and it
    /// does not depend on the limits the wire encoding enforces.
    pub fn key(&self) -> Vec<u8> {
        fn var(w: &mut Writer, bytes: &[u8]) {
            w.u64(bytes.len() as u64);
            w.raw(bytes);
        }
        let mut w = Writer::new();
        match self {
            // Fixed-size wire encodings are already canonical.
            Self::FourTuple(flow) => {
                w.u8(0);
                flow.encode(&mut w);
            }
            Self::ClientIp(ip) => {
                w.u8(1);
                w.ip(ip);
            }
            Self::TlsSessionId(id) => {
                w.u8(2);
                var(&mut w, id);
            }
            Self::HttpCookie { name, value } => {
                w.u8(3);
                var(&mut w, name.as_bytes());
                var(&mut w, value.as_bytes());
            }
            Self::User(user) => {
                w.u8(4);
                var(&mut w, user.as_bytes());
            }
            Self::Custom { kind, id } => {
                w.u8(5);
                var(&mut w, kind.as_bytes());
                var(&mut w, id);
            }
        }
        // Only limit-free writes were used above, so no error was recorded.
        w.into_parts().0
    }
}

impl Wire for SessionId {
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::FourTuple(flow) => {
                w.u8(0);
                flow.encode(w);
            }
            Self::ClientIp(ip) => {
                w.u8(1);
                w.ip(ip);
            }
            Self::TlsSessionId(id) => {
                w.u8(2);
                w.blob("SessionId.tls_session_id", id, MAX_TLS_SESSION_ID_LEN);
            }
            Self::HttpCookie { name, value } => {
                w.u8(3);
                w.string("SessionId.cookie_name", name, MAX_COOKIE_NAME_LEN);
                w.string("SessionId.cookie_value", value, MAX_COOKIE_VALUE_LEN);
            }
            Self::User(user) => {
                w.u8(4);
                w.string("SessionId.user", user, MAX_USER_LEN);
            }
            Self::Custom { kind, id } => {
                w.u8(5);
                w.string("SessionId.custom_kind", kind, MAX_CUSTOM_KIND_LEN);
                w.blob("SessionId.custom_id", id, MAX_CUSTOM_ID_LEN);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("SessionId")? {
            0 => FlowTuple::decode(r).map(Self::FourTuple),
            1 => r.ip("SessionId.client_ip").map(Self::ClientIp),
            2 => r
                .blob("SessionId.tls_session_id", MAX_TLS_SESSION_ID_LEN)
                .map(Self::TlsSessionId),
            3 => Ok(Self::HttpCookie {
                name: r.string("SessionId.cookie_name", MAX_COOKIE_NAME_LEN)?,
                value: r.string("SessionId.cookie_value", MAX_COOKIE_VALUE_LEN)?,
            }),
            4 => r.string("SessionId.user", MAX_USER_LEN).map(Self::User),
            5 => Ok(Self::Custom {
                kind: r.string("SessionId.custom_kind", MAX_CUSTOM_KIND_LEN)?,
                id: r.blob("SessionId.custom_id", MAX_CUSTOM_ID_LEN)?,
            }),
            tag => Err(r.error("SessionId", Problem::InvalidTag(tag))),
        }
    }
}

/// An application opened a session on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUp {
    /// Per-channel message number, acknowledged by [`SessionAck`].
    pub message_id: u64,
    /// The session.
    pub session: SessionId,
    /// The host holding the session context.
    pub host: HostId,
    /// The application, if known.
    pub app: Option<AppId>,
    /// Optional key/value detail, at most [`MAX_METADATA_ENTRIES`] entries.
    pub metadata: Vec<(String, String)>,
}

/// An application closed a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDown {
    /// Per-channel message number, acknowledged by [`SessionAck`].
    pub message_id: u64,
    /// The session.
    pub session: SessionId,
    /// The host that held the session context.
    pub host: HostId,
}

/// The unit has processed every session message up to and including
/// `up_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAck {
    /// Highest message id processed (cumulative).
    pub up_to: u64,
}

/// Starts channel `channel` of `host` at `message_id`: the next `sessions`
/// messages (ids `message_id + 1 ..= message_id + sessions`) are
/// [`SessionUp`]s carrying the host's whole session table; once they are
/// processed, sessions the unit had recorded for the host and that were not
/// among them are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionResync {
    /// Channel number, chosen by the host, new for every channel.
    pub channel: u64,
    /// The message id of this message; the channel's first.
    pub message_id: u64,
    /// The host.
    pub host: HostId,
    /// Number of [`SessionUp`]s making up the table.
    pub sessions: u64,
}

/// An idle host's liveness probe on its channel: the unit answers with a
/// [`SessionAck`] if it knows the channel, else with a
/// [`SessionResyncRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeepalive {
    /// The host's current channel.
    pub channel: u64,
    /// The host.
    pub host: HostId,
    /// The id the host's next message will take (everything below was
    /// sent).
    pub next_id: u64,
}

/// The unit does not know the host's current channel (it restarted, or
/// never saw the channel's [`SessionResync`]): the host should start a new
/// channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionResyncRequest {
    /// The channel the unit knows for the host (0: none).
    pub known_channel: u64,
}

impl Wire for SessionResync {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.channel);
        w.u64(self.message_id);
        self.host.encode(w);
        w.u64(self.sessions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            channel: r.u64("SessionResync.channel")?,
            message_id: r.u64("SessionResync.message_id")?,
            host: HostId::decode(r)?,
            sessions: r.u64("SessionResync.sessions")?,
        })
    }
}

impl Wire for SessionKeepalive {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.channel);
        self.host.encode(w);
        w.u64(self.next_id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            channel: r.u64("SessionKeepalive.channel")?,
            host: HostId::decode(r)?,
            next_id: r.u64("SessionKeepalive.next_id")?,
        })
    }
}

impl Wire for SessionResyncRequest {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.known_channel);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            known_channel: r.u64("SessionResyncRequest.known_channel")?,
        })
    }
}

impl Wire for SessionUp {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.message_id);
        self.session.encode(w);
        self.host.encode(w);
        w.option(self.app.as_ref(), |w, app| app.encode(w));
        w.list(
            "SessionUp.metadata",
            &self.metadata,
            MAX_METADATA_ENTRIES,
            |w, (key, value)| {
                w.string("SessionUp.metadata.key", key, MAX_METADATA_KEY_LEN);
                w.string("SessionUp.metadata.value", value, MAX_METADATA_VALUE_LEN);
            },
        );
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            message_id: r.u64("SessionUp.message_id")?,
            session: SessionId::decode(r)?,
            host: HostId::decode(r)?,
            app: r.option("SessionUp.app", AppId::decode)?,
            metadata: r.list("SessionUp.metadata", MAX_METADATA_ENTRIES, |r| {
                Ok((
                    r.string("SessionUp.metadata.key", MAX_METADATA_KEY_LEN)?,
                    r.string("SessionUp.metadata.value", MAX_METADATA_VALUE_LEN)?,
                ))
            })?,
        })
    }
}

impl Wire for SessionDown {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.message_id);
        self.session.encode(w);
        self.host.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            message_id: r.u64("SessionDown.message_id")?,
            session: SessionId::decode(r)?,
            host: HostId::decode(r)?,
        })
    }
}

impl Wire for SessionAck {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.up_to);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            up_to: r.u64("SessionAck.up_to")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_across_variants_and_field_splits() {
        let ids = [
            SessionId::User("ab".into()),
            SessionId::HttpCookie {
                name: "a".into(),
                value: "b".into(),
            },
            SessionId::HttpCookie {
                name: "ab".into(),
                value: String::new(),
            },
            SessionId::Custom {
                kind: "a".into(),
                id: b"b".to_vec(),
            },
            SessionId::TlsSessionId(b"ab".to_vec()),
            SessionId::ClientIp("192.0.2.1".parse().expect("literal address")),
        ];
        let keys: std::collections::HashSet<_> = ids.iter().map(SessionId::key).collect();
        assert_eq!(keys.len(), ids.len());
    }
}
