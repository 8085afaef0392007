//! The table content digest both sides compute identically: xxh3-64 with a
//! fixed seed over the wire encodings of the rows, concatenated in canonical
//! order (ascending by the wire encoding of the application id, see
//! [`crate::AppKey`]). The generation is not part of the digest; heartbeats
//! carry it separately. Row encodings are self-delimiting, so concatenation
//! is unambiguous.
//!
//! Never use std's `DefaultHasher` for this: its output may differ between
//! Rust releases and therefore between a host and a unit.

use switchyard_wire::health::{Directive, Row};
use xxhash_rust::xxh3::Xxh3;

use crate::table::AppKey;

/// Seed of the table digest ("SWYDHLTH" in ASCII). Changing it changes the
/// protocol: hosts and units of different seeds resync forever.
pub const DIGEST_SEED: u64 = 0x5357_5944_484c_5448;

/// Streaming digest over rows given in canonical order.
#[derive(Clone)]
pub struct TableDigest {
    hasher: Xxh3,
}

impl std::fmt::Debug for TableDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableDigest")
            .field("value", &self.finish())
            .finish()
    }
}

impl Default for TableDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl TableDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self {
            hasher: Xxh3::with_seed(DIGEST_SEED),
        }
    }

    /// Adds one row; `key` must be the row's [`AppKey`]. Callers add rows in
    /// ascending key order.
    pub fn add(&mut self, key: &AppKey, row: &Row) {
        self.hasher.update(key.as_bytes());
        self.hasher.update(&row_tail(row));
    }

    /// The digest value.
    pub fn finish(&self) -> u64 {
        self.hasher.digest()
    }
}

/// The wire encoding of a row after its application id: status (health tag,
/// load, capacity) then directive (target tag, current tag). Kept in step
/// with `switchyard_wire`'s encoding by a test.
fn row_tail(row: &Row) -> [u8; 5] {
    let Directive { target, current } = row.directive;
    [
        row.status.health().tag(),
        row.status.load(),
        row.status.capacity(),
        target.tag(),
        current.tag(),
    ]
}

/// Digest of rows given in canonical order.
pub fn digest<'a>(rows: impl IntoIterator<Item = (&'a AppKey, &'a Row)>) -> u64 {
    let mut d = TableDigest::new();
    for (key, row) in rows {
        d.add(key, row);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_wire::health::{AppStatus, DirectiveState, Health};
    use switchyard_wire::{AppId, Protocol, Wire, Writer};

    use super::*;

    fn row(port: u16, load: u8) -> Row {
        Row {
            app: AppId {
                vip: SocketAddr::from(([10, 0, 0, 1], 80)),
                protocol: Protocol::Tcp,
                endpoint: SocketAddr::from(([192, 168, 1, 2], port)),
                info: "/api".into(),
            },
            status: AppStatus::new(Health::Healthy, load, 50).expect("valid"),
            directive: Directive {
                target: DirectiveState::Draining,
                current: DirectiveState::Active,
            },
        }
    }

    fn keyed(rows: &[Row]) -> Vec<(AppKey, Row)> {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| (AppKey::new(&r.app).expect("valid"), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn hashes_exactly_the_wire_encoding_of_rows() {
        let rows = keyed(&[row(8080, 10), row(8081, 20)]);
        let mut w = Writer::new();
        for (_, r) in &rows {
            r.encode(&mut w);
        }
        let bytes = w.finish().expect("encodable");
        let expected = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, DIGEST_SEED);
        assert_eq!(digest(rows.iter().map(|(k, r)| (k, r))), expected);
    }

    #[test]
    fn empty_table_and_known_value_are_stable() {
        // Fixed values: a change here is a wire-protocol change.
        assert_eq!(digest(std::iter::empty()), 0x35a7_7149_ca27_5661);
        let rows = keyed(&[row(8080, 10)]);
        assert_eq!(
            digest(rows.iter().map(|(k, r)| (k, r))),
            0xf508_35f4_9397_1936
        );
    }

    #[test]
    fn content_changes_change_the_digest() {
        let a = keyed(&[row(8080, 10), row(8081, 20)]);
        let b = keyed(&[row(8080, 10), row(8081, 21)]);
        let one = keyed(&[row(8080, 10)]);
        let da = digest(a.iter().map(|(k, r)| (k, r)));
        assert_ne!(da, digest(b.iter().map(|(k, r)| (k, r))));
        assert_ne!(da, digest(one.iter().map(|(k, r)| (k, r))));
    }
}
