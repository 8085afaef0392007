//! DAM function calls (message types `0x4_`, spec FIGS. 22 to 23B).
//!
//! The distributed atom manager replicates session information between
//! load balancing units as whole atoms (key, data, metadata). Units add,
//! delete (into a zombie state), query and return atoms with these calls;
//! `call_id` correlates a [`ReturnAtom`] with its [`QueryAtom`].

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{DecodeError, Problem, ValueError};
use crate::types::UnitId;

/// Maximum atom key length (a [`crate::SessionId::key`] fits easily).
pub const MAX_ATOM_KEY_LEN: usize = 8192;
/// Maximum atom data length.
pub const MAX_ATOM_DATA_LEN: usize = 65_536;

/// One atomic DAM entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    /// Key, usually a [`crate::SessionId::key`].
    pub key: Vec<u8>,
    /// Data, usually the route to the host holding the session.
    pub data: Vec<u8>,
    /// Bookkeeping used to resolve collisions and age atoms out.
    pub meta: AtomMeta,
}

/// Atom metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomMeta {
    /// The unit that added the atom.
    pub added_by: UnitId,
    /// Version, to resolve collisions (higher wins).
    pub version: u64,
    /// Deleted, kept so late packets still reach the session's host.
    pub zombie: bool,
    /// Expiry time in Unix milliseconds; 0 means never.
    pub expires_at_ms: u64,
}

/// Adds (or replicates) an atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddAtom {
    /// Call id.
    pub call_id: u64,
    /// The atom.
    pub atom: Atom,
}

/// Deletes an atom; it lingers as a zombie for `zombie_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteAtom {
    /// Call id.
    pub call_id: u64,
    /// Key of the atom.
    pub key: Vec<u8>,
    /// How long the atom stays as a zombie (0: remove at once).
    pub zombie_ms: u32,
}

/// Asks other DAM portions for an atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAtom {
    /// Call id, echoed by [`ReturnAtom`].
    pub call_id: u64,
    /// Key of the atom.
    pub key: Vec<u8>,
}

/// Answers a [`QueryAtom`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAtom {
    /// Call id of the query.
    pub call_id: u64,
    /// Key queried.
    pub key: Vec<u8>,
    /// The atom, whose key equals `key`; `None` if not found.
    pub atom: Option<Atom>,
}

impl ReturnAtom {
    fn validate(&self) -> Result<(), ValueError> {
        match &self.atom {
            Some(atom) if atom.key != self.key => Err(ValueError::new(
                "ReturnAtom.atom.key",
                Problem::Inconsistent("returned atom's key differs from the queried key"),
            )),
            _ => Ok(()),
        }
    }
}

fn encode_key(w: &mut Writer, field: &'static str, key: &[u8]) {
    w.blob(field, key, MAX_ATOM_KEY_LEN);
}

fn decode_key(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    r.blob(field, MAX_ATOM_KEY_LEN)
}

impl Wire for AtomMeta {
    fn encode(&self, w: &mut Writer) {
        self.added_by.encode(w);
        w.u64(self.version);
        w.bool(self.zombie);
        w.u64(self.expires_at_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            added_by: UnitId::decode(r)?,
            version: r.u64("AtomMeta.version")?,
            zombie: r.bool("AtomMeta.zombie")?,
            expires_at_ms: r.u64("AtomMeta.expires_at_ms")?,
        })
    }
}

impl Wire for Atom {
    fn encode(&self, w: &mut Writer) {
        encode_key(w, "Atom.key", &self.key);
        w.blob("Atom.data", &self.data, MAX_ATOM_DATA_LEN);
        self.meta.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            key: decode_key(r, "Atom.key")?,
            data: r.blob("Atom.data", MAX_ATOM_DATA_LEN)?,
            meta: AtomMeta::decode(r)?,
        })
    }
}

impl Wire for AddAtom {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.call_id);
        self.atom.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            call_id: r.u64("AddAtom.call_id")?,
            atom: Atom::decode(r)?,
        })
    }
}

impl Wire for DeleteAtom {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.call_id);
        encode_key(w, "DeleteAtom.key", &self.key);
        w.u32(self.zombie_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            call_id: r.u64("DeleteAtom.call_id")?,
            key: decode_key(r, "DeleteAtom.key")?,
            zombie_ms: r.u32("DeleteAtom.zombie_ms")?,
        })
    }
}

impl Wire for QueryAtom {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.call_id);
        encode_key(w, "QueryAtom.key", &self.key);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            call_id: r.u64("QueryAtom.call_id")?,
            key: decode_key(r, "QueryAtom.key")?,
        })
    }
}

impl Wire for ReturnAtom {
    fn encode(&self, w: &mut Writer) {
        w.check(self.validate());
        w.u64(self.call_id);
        encode_key(w, "ReturnAtom.key", &self.key);
        w.option(self.atom.as_ref(), |w, atom| atom.encode(w));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ret = Self {
            call_id: r.u64("ReturnAtom.call_id")?,
            key: decode_key(r, "ReturnAtom.key")?,
            atom: r.option("ReturnAtom.atom", Atom::decode)?,
        };
        r.check(ret.validate())?;
        Ok(ret)
    }
}
