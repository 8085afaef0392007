//! Datagram sizing: every message the host side sends is split so that its
//! encoded payload stays within a target size
//! ([`crate::HostSettings::max_datagram_payload`], by default
//! [`DEFAULT_MAX_DATAGRAM_PAYLOAD`] bytes).
//!
//! The target is far below what the codec accepts
//! (`switchyard_wire::frame::MAX_UDP_PAYLOAD`) on purpose: a sealed frame
//! adds `switchyard_wire::frame::FRAME_OVERHEAD` bytes, and IP and UDP
//! headers come on top, so 1200 bytes of payload keeps each datagram within
//! a 1280-byte IPv6 minimum MTU plus headers, and away from IP
//! fragmentation (where losing one fragment loses the whole datagram).
//!
//! Message overheads are measured by encoding; item sizes follow the wire
//! format's layout (checked against the encoder by this module's tests), so
//! sizing a large table costs no extra encoding. Splitting:
//! - **snapshot parts** ([`switchyard_wire::health::SendTableSnapshot`]):
//!   rows are packed into parts by encoded size;
//! - **row changes**: a change too large for one datagram becomes several
//!   `RowChange`s with *consecutive* generations, one per chunk, so a unit
//!   applies them in order and a lost or reordered chunk is detected as a
//!   gap like any other;
//! - **postulates**: a round is sent as several `PostulateTableState`
//!   messages, each with its own round number; units answer each, and the
//!   host merges the answers (see [`crate::handshake`]). Postulates are
//!   sized for the larger of the postulate and of a unit's answer objecting
//!   to every row in it, so answers fit too.
//!
//! One item larger than the target on its own (a row whose info is close to
//! `switchyard_wire::MAX_APP_INFO_LEN`) goes alone in its message, which
//! still fits `MAX_UDP_PAYLOAD` by a wide margin.

use std::net::SocketAddr;

use switchyard_wire::health::{
    Postulate, PostulateTableState, PostulateWrong, Row, RowChange, RowOp, SendTableSnapshot,
};
use switchyard_wire::{AppId, HostId, Message, UnitId};

/// Default target for a message's encoded payload, in bytes.
pub const DEFAULT_MAX_DATAGRAM_PAYLOAD: usize = 1200;

/// Smallest accepted target: a message header and one small item.
pub const MIN_DATAGRAM_PAYLOAD: usize = 256;

fn len(message: Message) -> usize {
    // Messages built from valid rows always encode; an invalid one counts
    // as huge so it travels alone (and fails loudly when sealed).
    message.encode_payload().map_or(usize::MAX / 4, |p| p.len())
}

/// Bytes a snapshot part takes without rows.
pub(crate) fn snapshot_base() -> usize {
    len(Message::from(SendTableSnapshot {
        host: HostId(0),
        generation: 0,
        part: 0,
        parts: 1,
        rows: Vec::new(),
    }))
}

fn addr_len(addr: &SocketAddr) -> usize {
    // Family tag, address, port.
    1 + if addr.is_ipv4() { 4 } else { 16 } + 2
}

/// Encoded bytes of an application id.
fn app_len(app: &AppId) -> usize {
    // VIP, protocol tag, endpoint, u16-prefixed info.
    addr_len(&app.vip) + 1 + addr_len(&app.endpoint) + 2 + app.info.len()
}

/// Bytes one row adds to a snapshot part.
pub(crate) fn row_len(row: &Row) -> usize {
    // Application, status (health, load, capacity), directive (2 states).
    app_len(&row.app) + 3 + 2
}

/// Bytes a row change takes without ops.
pub(crate) fn row_change_base() -> usize {
    len(Message::from(RowChange {
        host: HostId(0),
        generation: 0,
        ops: Vec::new(),
    }))
}

/// Bytes one op adds to a row change.
pub(crate) fn op_len(op: &RowOp) -> usize {
    // Op tag, then the row or the deleted application.
    1 + match op {
        RowOp::Add(row) | RowOp::Update(row) => row_len(row),
        RowOp::Delete(app) => app_len(app),
    }
}

/// Bytes a postulate message, or a unit's answer to it, takes without
/// entries (the larger of the two).
pub(crate) fn postulate_base() -> usize {
    let ask = len(Message::from(PostulateTableState {
        host: HostId(0),
        round: 0,
        postulates: Vec::new(),
    }));
    let answer = len(Message::from(PostulateWrong {
        host: HostId(0),
        unit: UnitId(0),
        round: 0,
        wrong: Vec::new(),
    }));
    ask.max(answer)
}

/// Bytes one postulate adds to its message, or to an answer objecting to
/// it (the larger of the two).
pub(crate) fn postulate_len(p: &Postulate) -> usize {
    // A postulate is the application and a state; an objection the
    // application and an optional state (presence flag and state).
    app_len(&p.app) + 2
}

/// Splits `items` into consecutive chunks, in order, so that `base` plus
/// the sizes of a chunk's items stays within `max`; an item too large on
/// its own gets a chunk of its own. No chunks for no items.
pub(crate) fn chunk_by_size<T>(
    items: Vec<T>,
    base: usize,
    max: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = base;
    for item in items {
        let n = size(&item);
        if !current.is_empty() && used.saturating_add(n) > max {
            chunks.push(std::mem::take(&mut current));
            used = base;
        }
        used = used.saturating_add(n);
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use switchyard_wire::health::{AppStatus, Directive, DirectiveState, Health, WrongPostulate};
    use switchyard_wire::{AppId, Protocol};

    use super::*;

    fn row(k: u16, info: usize) -> Row {
        let endpoint = if k.is_multiple_of(2) {
            SocketAddr::from(([192, 168, 1, 2], k))
        } else {
            SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], k))
        };
        Row {
            app: AppId {
                vip: SocketAddr::from(([10, 0, 0, 1], 80)),
                protocol: Protocol::Tcp,
                endpoint,
                info: "i".repeat(info),
            },
            status: AppStatus::new(Health::Healthy, 10, 50).expect("valid"),
            directive: Directive {
                target: DirectiveState::Active,
                current: DirectiveState::Active,
            },
        }
    }

    #[test]
    fn sizes_add_up_to_the_encoded_message() {
        let rows: Vec<Row> = (0..5).map(|k| row(k, usize::from(k) * 100)).collect();
        let expected = snapshot_base() + rows.iter().map(row_len).sum::<usize>();
        let m = Message::from(SendTableSnapshot {
            host: HostId(9),
            generation: u64::MAX,
            part: 3,
            parts: 7,
            rows: rows.clone(),
        });
        assert_eq!(m.encode_payload().expect("encodes").len(), expected);
        let mut ops: Vec<RowOp> = rows.iter().cloned().map(RowOp::Update).collect();
        ops.push(RowOp::Add(rows[1].clone()));
        ops.push(RowOp::Delete(rows[3].app.clone()));
        let expected = row_change_base() + ops.iter().map(op_len).sum::<usize>();
        let m = Message::from(RowChange {
            host: HostId(9),
            generation: 1,
            ops,
        });
        assert_eq!(m.encode_payload().expect("encodes").len(), expected);
        let postulates: Vec<Postulate> = rows
            .iter()
            .map(|r| Postulate {
                app: r.app.clone(),
                state: DirectiveState::Draining,
            })
            .collect();
        let expected = postulate_base() + postulates.iter().map(postulate_len).sum::<usize>();
        let ask = Message::from(PostulateTableState {
            host: HostId(9),
            round: 7,
            postulates: postulates.clone(),
        });
        let answer = Message::from(PostulateWrong {
            host: HostId(9),
            unit: UnitId(3),
            round: 7,
            wrong: postulates
                .iter()
                .map(|p| WrongPostulate {
                    app: p.app.clone(),
                    actual: Some(DirectiveState::Inactive),
                })
                .collect(),
        });
        let ask = ask.encode_payload().expect("encodes").len();
        let answer = answer.encode_payload().expect("encodes").len();
        assert!(ask <= expected);
        assert_eq!(answer, expected, "an answer objecting to everything");
    }

    #[test]
    fn chunks_stay_within_the_target_and_keep_order() {
        let sizes = [100usize, 300, 600, 50, 2000, 10, 10];
        let chunks = chunk_by_size(sizes.to_vec(), 20, 1000, |s| *s);
        assert_eq!(
            chunks,
            vec![vec![100, 300], vec![600, 50], vec![2000], vec![10, 10]]
        );
        assert!(chunk_by_size(Vec::<usize>::new(), 20, 1000, |s| *s).is_empty());
    }
}
