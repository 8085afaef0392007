//! A host's health-and-load table (FIG. 13A): rows keyed by [`AppKey`] (the
//! canonical wire encoding of the application id) plus a table generation.
//! Used for the host's published table and, per host, in the consolidated
//! cache. Owns the canonical row order the digest relies on; knows nothing
//! of messages or time.

use std::collections::BTreeMap;
use std::collections::btree_map;

use switchyard_wire::health::{ContentCheck, Row, RowOp};
use switchyard_wire::{AppId, ValueError, Wire, Writer};

use crate::digest;

/// An application id in canonical form: its wire encoding. [`AppId`] has no
/// ordering, and two ids that differ only in what the wire does not carry
/// (IPv6 flow info, scope id) are the same application on the wire; keying
/// by the encoding makes both sides agree on identity and on order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppKey(Box<[u8]>);

impl AppKey {
    /// The key of `app`; fails if `app` cannot be encoded (info too long).
    pub fn new(app: &AppId) -> Result<Self, ValueError> {
        let mut w = Writer::new();
        app.encode(&mut w);
        w.finish().map(|bytes| Self(bytes.into_boxed_slice()))
    }

    /// The wire encoding of the application id.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Rows of one host plus the table generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    generation: u64,
    rows: BTreeMap<AppKey, Row>,
}

impl Table {
    /// An empty table at `generation`.
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            rows: BTreeMap::new(),
        }
    }

    /// The table generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `app`, if any.
    pub fn get(&self, app: &AppId) -> Option<&Row> {
        AppKey::new(app).ok().and_then(|k| self.rows.get(&k))
    }

    /// The row with key `key`, if any.
    pub fn get_by_key(&self, key: &AppKey) -> Option<&Row> {
        self.rows.get(key)
    }

    /// Rows in canonical order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &Row> + '_ {
        self.rows.values()
    }

    /// Keys and rows in canonical order.
    pub fn entries(&self) -> btree_map::Iter<'_, AppKey, Row> {
        self.rows.iter()
    }

    /// Content digest of the rows (see [`crate::digest`]).
    pub fn digest(&self) -> u64 {
        digest::digest(self.rows.iter())
    }

    /// The content check a heartbeat carries for this table.
    pub fn check(&self) -> ContentCheck {
        ContentCheck::Table {
            generation: self.generation,
            digest: self.digest(),
        }
    }

    /// Inserts or replaces a row; returns the previous one.
    pub(crate) fn insert(&mut self, key: AppKey, row: Row) -> Option<Row> {
        self.rows.insert(key, row)
    }

    /// Removes a row; returns it.
    pub(crate) fn remove(&mut self, key: &AppKey) -> Option<Row> {
        self.rows.remove(key)
    }

    /// Removes every row.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }

    /// Whether two tables hold the same rows (generation not compared).
    pub fn same_rows(&self, other: &Table) -> bool {
        self.rows == other.rows
    }
}

/// The key an op acts on.
pub(crate) fn op_key(op: &RowOp) -> Result<AppKey, ValueError> {
    match op {
        RowOp::Add(row) | RowOp::Update(row) => AppKey::new(&row.app),
        RowOp::Delete(app) => AppKey::new(app),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_wire::Protocol;

    use super::*;

    fn app(port: u16, info: &str) -> AppId {
        AppId {
            vip: SocketAddr::from(([10, 0, 0, 1], 80)),
            protocol: Protocol::Tcp,
            endpoint: SocketAddr::from(([192, 168, 1, 2], port)),
            info: info.into(),
        }
    }

    #[test]
    fn key_orders_by_encoding_and_ignores_scope_id() {
        assert!(AppKey::new(&app(1, "")).expect("ok") < AppKey::new(&app(2, "")).expect("ok"));
        let mut a = app(1, "");
        let mut b = a.clone();
        let v6: SocketAddr = "[fe80::1]:80".parse().expect("addr");
        a.endpoint = v6;
        let mut scoped = v6;
        if let SocketAddr::V6(s) = &mut scoped {
            s.set_scope_id(3);
        }
        b.endpoint = scoped;
        assert_ne!(a, b);
        assert_eq!(AppKey::new(&a).expect("ok"), AppKey::new(&b).expect("ok"));
    }

    #[test]
    fn overlong_info_is_rejected() {
        let long = "x".repeat(switchyard_wire::types::MAX_APP_INFO_LEN + 1);
        assert!(AppKey::new(&app(1, &long)).is_err());
    }
}
