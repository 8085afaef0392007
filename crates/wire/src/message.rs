//! The [`Message`] enum over every protocol family, the [`MessageKind`]
//! type codes and the [`Family`] grouping.
//!
//! A type code's high nibble is its family. This module is the one place
//! that maps codes to payload types; adding a message means adding one
//! line to the table below.

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{DecodeError, EncodeError};
use crate::{allotment, dam, encap, health, migration, plumbing, session};

macro_rules! messages {
    (
        $(
            $(#[$fmeta:meta])*
            $family:ident = $fcode:literal, $fname:literal {
                $(
                    $(#[$mmeta:meta])*
                    $name:ident = $code:literal => $ty:ty
                ),+ $(,)?
            }
        ),+ $(,)?
    ) => {
        /// A protocol family: one concern, one module, one fuzz target.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Family {
            $( $(#[$fmeta])* $family ),+
        }

        impl Family {
            /// Every family, in code order.
            pub const ALL: &'static [Family] = &[$(Family::$family),+];

            /// The family's code (the high nibble of its message types).
            pub const fn code(self) -> u8 {
                match self {
                    $(Family::$family => $fcode),+
                }
            }

            /// Short lowercase name, e.g. `"health"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Family::$family => $fname),+
                }
            }

            /// The message types of this family, in code order.
            pub const fn kinds(self) -> &'static [MessageKind] {
                match self {
                    $(Family::$family => &[$(MessageKind::$name),+]),+
                }
            }
        }

        /// A message type code, as carried in the frame header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum MessageKind {
            $($( $(#[$mmeta])* $name = $code, )+)+
        }

        impl MessageKind {
            /// Every message type, in code order.
            pub const ALL: &'static [MessageKind] = &[$($(MessageKind::$name),+),+];

            /// The type for a code, if this version defines it.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($($code => Some(MessageKind::$name),)+)+
                    _ => None,
                }
            }

            /// The type code.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// The message type's name, e.g. `"Heartbeat"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $($(MessageKind::$name => stringify!($name),)+)+
                }
            }

            /// The family the type belongs to.
            pub const fn family(self) -> Family {
                match self {
                    $($(MessageKind::$name)|+ => Family::$family,)+
                }
            }
        }

        /// Any message of any family.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $($( $(#[$mmeta])* $name($ty), )+)+
        }

        impl Message {
            /// The message's type.
            pub fn kind(&self) -> MessageKind {
                match self {
                    $($(Message::$name(_) => MessageKind::$name,)+)+
                }
            }

            fn encode_into(&self, w: &mut Writer) {
                match self {
                    $($(Message::$name(m) => m.encode(w),)+)+
                }
            }

            fn decode_from(kind: MessageKind, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(match kind {
                    $($(MessageKind::$name => Message::$name(<$ty>::decode(r)?),)+)+
                })
            }
        }

        $($(
            impl From<$ty> for Message {
                fn from(m: $ty) -> Self {
                    Message::$name(m)
                }
            }
        )+)+
    };
}

messages! {
    /// Health and load reporting (FIGS. 15, 16).
    Health = 0x1, "health" {
        /// [`health::Heartbeat`].
        Heartbeat = 0x10 => health::Heartbeat,
        /// [`health::Goodbye`].
        Goodbye = 0x11 => health::Goodbye,
        /// [`health::RowChange`].
        RowChange = 0x12 => health::RowChange,
        /// [`health::GetTableSnapshot`].
        GetTableSnapshot = 0x13 => health::GetTableSnapshot,
        /// [`health::SendTableSnapshot`].
        SendTableSnapshot = 0x14 => health::SendTableSnapshot,
        /// [`health::PostulateTableState`].
        PostulateTableState = 0x15 => health::PostulateTableState,
        /// [`health::PostulateWrong`].
        PostulateWrong = 0x16 => health::PostulateWrong,
        /// [`health::ConsolidatedHeartbeat`].
        ConsolidatedHeartbeat = 0x17 => health::ConsolidatedHeartbeat,
        /// [`health::GroupGossip`].
        GroupGossip = 0x18 => health::GroupGossip,
        /// [`health::DirectiveRequest`].
        DirectiveRequest = 0x19 => health::DirectiveRequest,
        /// [`health::DirectiveReply`].
        DirectiveReply = 0x1a => health::DirectiveReply,
    },
    /// Endpoint allotments for classifiers and request routers (FIG. 18).
    Allotment = 0x2, "allotment" {
        /// [`allotment::AllotmentRequest`].
        AllotmentRequest = 0x20 => allotment::AllotmentRequest,
        /// [`allotment::AllotmentResponse`].
        AllotmentResponse = 0x21 => allotment::AllotmentResponse,
        /// [`allotment::AffinityAllotmentRequest`].
        AffinityAllotmentRequest = 0x22 => allotment::AffinityAllotmentRequest,
        /// [`allotment::AffinityAllotmentResponse`].
        AffinityAllotmentResponse = 0x23 => allotment::AffinityAllotmentResponse,
    },
    /// Session up/down notifications (FIGS. 20, 21).
    Session = 0x3, "session" {
        /// [`session::SessionUp`].
        SessionUp = 0x30 => session::SessionUp,
        /// [`session::SessionDown`].
        SessionDown = 0x31 => session::SessionDown,
        /// [`session::SessionAck`].
        SessionAck = 0x32 => session::SessionAck,
        /// [`session::SessionResync`].
        SessionResync = 0x33 => session::SessionResync,
        /// [`session::SessionKeepalive`].
        SessionKeepalive = 0x34 => session::SessionKeepalive,
        /// [`session::SessionResyncRequest`].
        SessionResyncRequest = 0x35 => session::SessionResyncRequest,
    },
    /// Distributed atom manager calls (FIGS. 22 to 23B).
    Dam = 0x4, "dam" {
        /// [`dam::AddAtom`].
        AddAtom = 0x40 => dam::AddAtom,
        /// [`dam::DeleteAtom`].
        DeleteAtom = 0x41 => dam::DeleteAtom,
        /// [`dam::QueryAtom`].
        QueryAtom = 0x42 => dam::QueryAtom,
        /// [`dam::ReturnAtom`].
        ReturnAtom = 0x43 => dam::ReturnAtom,
    },
    /// Route plumbing between classifiers and forwarders (FIGS. 27 to 29).
    Plumbing = 0x5, "plumbing" {
        /// [`plumbing::AddRoute`].
        AddRoute = 0x50 => plumbing::AddRoute,
        /// [`plumbing::DeleteRoute`].
        DeleteRoute = 0x51 => plumbing::DeleteRoute,
        /// [`plumbing::Miss`].
        Miss = 0x52 => plumbing::Miss,
        /// [`plumbing::FinalPacket`].
        FinalPacket = 0x53 => plumbing::FinalPacket,
        /// [`plumbing::RouteRefused`].
        RouteRefused = 0x54 => plumbing::RouteRefused,
    },
    /// TCP connection migration (FIGS. 32 to 37).
    Migration = 0x6, "migration" {
        /// [`migration::MigrateConnection`].
        MigrateConnection = 0x60 => migration::MigrateConnection,
        /// [`migration::MigrateAck`].
        MigrateAck = 0x61 => migration::MigrateAck,
        /// [`migration::MigrateNack`].
        MigrateNack = 0x62 => migration::MigrateNack,
        /// [`migration::MigratedClosed`].
        MigratedClosed = 0x63 => migration::MigratedClosed,
    },
    /// Flow-id encapsulation mappings (FIG. 38).
    Encap = 0x7, "encap" {
        /// [`encap::EncapMapping`].
        EncapMapping = 0x70 => encap::EncapMapping,
    },
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.code())
    }
}

impl Message {
    /// Encodes the payload alone (no frame, no tag).
    pub fn encode_payload(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish().map_err(|error| EncodeError::Invalid {
            message: self.kind().name(),
            error,
        })
    }

    /// Appends the payload to `w`; the caller checks `w` for errors.
    pub(crate) fn encode_payload_into(&self, w: &mut Writer) {
        self.encode_into(w);
    }

    /// Decodes a payload of type `kind` without any frame. The whole payload
    /// must be consumed. Used by the codec after authentication, and by the
    /// fuzz targets to reach the decoders past the MAC.
    pub fn decode_payload(kind: MessageKind, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, kind.name());
        let message = Self::decode_from(kind, &mut r)?;
        r.finish()?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_consistent() {
        for &kind in MessageKind::ALL {
            assert_eq!(MessageKind::from_code(kind.code()), Some(kind));
            assert_eq!(kind.code() >> 4, kind.family().code(), "{kind}");
            assert!(kind.family().kinds().contains(&kind));
        }
        let total: usize = Family::ALL.iter().map(|f| f.kinds().len()).sum();
        assert_eq!(total, MessageKind::ALL.len());
        assert_eq!(MessageKind::from_code(0x00), None);
        assert_eq!(MessageKind::from_code(0x1b), None);
    }
}
