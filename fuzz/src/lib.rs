//! Shared harness of the wire protocol fuzz targets.
//!
//! Family targets read one selector byte (the index of a message type
//! within the family, modulo the family's size) and decode the rest as that
//! type's payload, bypassing the MAC so the decoders are reached. Whatever
//! decodes must re-encode to exactly the input: the encoding is canonical.
//! The `frame` target opens raw input with a fixed test key.

use std::sync::OnceLock;

use switchyard_wire::{Codec, Family, HEADER_LEN, MacKey, Message};

/// Key of the `frame` target; the seed corpus is sealed with it (see
/// crates/wire/examples/seed_corpus.rs). Not a production secret.
const FUZZ_SECRET: &[u8] = b"switchyard-fuzz-secret-not-for-production";
const FUZZ_CLUSTER: &str = "fuzz";

/// Decodes `data` as a payload of one of `family`'s message types and
/// checks the round trip.
pub fn family_round_trip(family: Family, data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let kinds = family.kinds();
    let kind = kinds[usize::from(selector) % kinds.len()];
    let Ok(message) = Message::decode_payload(kind, payload) else {
        return;
    };
    assert_eq!(message.kind(), kind);
    let encoded = match message.encode_payload() {
        Ok(encoded) => encoded,
        Err(e) => panic!("{kind}: decoded message does not re-encode: {e}"),
    };
    assert_eq!(encoded, payload, "{kind}: encoding is not canonical");
}

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(|| match MacKey::derive(FUZZ_SECRET, FUZZ_CLUSTER) {
        Ok(key) => Codec::new(key),
        Err(e) => panic!("fuzz key: {e}"),
    })
}

/// Opens `data` as a frame; an opened frame must agree with the stream
/// length function and re-seal to exactly the input.
pub fn open_frame(data: &[u8]) {
    let codec = codec();
    let length = codec.frame_len(data);
    let Ok(envelope) = codec.open(data) else {
        return;
    };
    assert_eq!(length.ok(), Some(data.len()));
    assert!(data.len() >= HEADER_LEN);
    match codec.seal(envelope.sender, envelope.sequence, &envelope.message) {
        Ok(frame) => assert_eq!(frame, data, "re-sealed frame differs"),
        Err(e) => panic!("opened message does not re-seal: {e}"),
    }
}

/// Drives a [`switchyard_health::ConsolidatedCache`] and a
/// [`switchyard_health::HostProtocol`] with arbitrary *decoded* messages:
/// whatever passes the codec's MAC could be anything a key holder sends.
///
/// The input is a sequence of records:
/// `[op][time step][sender][len lo][len hi][payload; len]`.
/// - `op % 32` below the number of health and allotment message types (15
///   today, room for 32) picks a type; the payload is decoded as that type
///   (records that do not decode are skipped) and handed to the cache (as
///   from `sender`) and to the host (as from a unit);
/// - other `op` values are local changes at the host, chosen by `op >> 4`
///   (add or update a row, drain, remove, report a load, goodbye),
///   parameterised by `sender` and the payload's first byte;
/// - the time step advances the clock by `step * 37` ms before the record,
///   and due timers run.
///
/// After every record, the machines' outputs are delivered to each other
/// (as a lossless network would), and the cache's application index must
/// match its host tables.
pub fn drive_health_machines(data: &[u8]) {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use switchyard_health::{CacheSettings, ConsolidatedCache, HostProtocol, HostSettings};
    use switchyard_wire::health::{AppStatus, DirectiveState, Health};
    use switchyard_wire::{AppId, HostId, Protocol, SenderId, UnitId};

    const HOST: HostId = HostId(1);
    const UNITS: [UnitId; 2] = [UnitId(100), UnitId(101)];

    let kinds: Vec<_> = Family::Health
        .kinds()
        .iter()
        .chain(Family::Allotment.kinds())
        .copied()
        .collect();
    // Ops whose selector is past the kinds are local changes: keep room for them.
    assert!(kinds.len() < 32, "too many message types for `op % 32`");
    let t0 = Instant::now();
    let mut now = t0;
    let (Ok(mut cache), Ok(mut host)) = (
        ConsolidatedCache::new(CacheSettings::new(UNITS[0]), t0),
        HostProtocol::new(HostSettings::new(HOST, UNITS.to_vec()), t0),
    ) else {
        panic!("default settings are valid");
    };
    let app = |n: u8| AppId {
        vip: SocketAddr::from(([10, 0, 0, 1], 80 + u16::from(n % 2))),
        protocol: if n & 4 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
        endpoint: SocketAddr::from(([192, 168, 0, 1], 8000 + u16::from(n % 8))),
        info: String::new(),
    };
    let mut rest = data;
    while let [op, step, sender, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*step) * 37);
        if host.poll_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now);
        }
        if cache.poll_timeout().is_some_and(|t| t <= now) {
            cache.handle_timeout(now);
        }
        let selector = usize::from(op % 32);
        if let Some(&kind) = kinds.get(selector) {
            if let Ok(message) = Message::decode_payload(kind, payload) {
                // Senders: the host, another host, a unit or a stranger.
                let from = match sender % 4 {
                    0 => SenderId::from(HOST),
                    1 => SenderId(u32::from(*sender)),
                    2 => SenderId::from(UNITS[1]),
                    _ => SenderId(2),
                };
                let _ = cache.handle(now, from, &message);
                let unit = UNITS[usize::from(sender % 2)];
                let _ = host.handle(now, unit, &message);
            }
        } else {
            let n = payload.first().copied().unwrap_or(0);
            let a = app(*sender);
            let result = match (op >> 4) % 8 {
                0 | 1 | 2 => {
                    let health = Health::ALL[usize::from(n % 3)];
                    match AppStatus::new(health, n % 101, n % 100) {
                        Ok(status) => host.set_app(now, a, status),
                        Err(_) => Ok(()),
                    }
                }
                3 | 4 => {
                    let state = DirectiveState::ALL[usize::from(n % 3)];
                    host.set_target(now, &a, state)
                }
                5 => host.remove_app(now, &a),
                6 => host.report_load(now, &a, n).map(|_| ()),
                _ if n == 0xff => {
                    host.goodbye();
                    Ok(())
                }
                _ => Ok(()),
            };
            // Unknown rows are a typed error, never a panic.
            let _ = result;
        }
        // Deliver both ways until quiet (bounded: answers cannot ping-pong
        // forever, but stay safe against a bug turning into a hang).
        for _ in 0..64 {
            let mut quiet = true;
            while let Some(t) = host.poll_transmit() {
                quiet = false;
                if t.to == UNITS[0] {
                    let _ = cache.handle(now, SenderId::from(HOST), &t.message);
                }
            }
            while let Some(t) = cache.poll_transmit() {
                quiet = false;
                if t.to == SenderId::from(HOST) {
                    let _ = host.handle(now, UNITS[0], &t.message);
                }
            }
            if quiet {
                break;
            }
        }
        assert!(cache.index_is_consistent(), "cache index out of step");
        let _ = (cache.poll_timeout(), host.poll_timeout(), host.rows());
    }
}
