//! Property test of the state machines on stable (the fuzz target
//! `health_machines` does the same with libFuzzer): arbitrary well-formed
//! messages from arbitrary senders, local changes and time steps never make
//! a consolidated cache or a host protocol panic, and the cache's
//! application index always matches its host tables.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchyard_health::{CacheSettings, ConsolidatedCache, HostProtocol, HostSettings};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentScheme};
use switchyard_wire::health::{
    AppStatus, ContentCheck, Directive, DirectiveState, GetTableSnapshot, Goodbye, Health,
    Heartbeat, Postulate, PostulateTableState, PostulateWrong, Row, RowChange, RowOp,
    SendTableSnapshot, WrongPostulate,
};
use switchyard_wire::{AppId, HostId, Message, Protocol, SenderId, UnitId};

const HOST: HostId = HostId(1);
const UNITS: [UnitId; 2] = [UnitId(100), UnitId(101)];

fn app(n: u8) -> AppId {
    AppId {
        vip: SocketAddr::from(([10, 0, 0, 1], 80 + u16::from(n % 2))),
        protocol: if n & 4 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
        endpoint: SocketAddr::from(([192, 168, 0, 1], 8000 + u16::from(n % 8))),
        info: if n & 8 == 0 {
            String::new()
        } else {
            "/a".into()
        },
    }
}

fn host_id() -> impl Strategy<Value = HostId> {
    prop_oneof![Just(HostId(1)), Just(HostId(2)), Just(HostId(3))]
}

fn unit_id() -> impl Strategy<Value = UnitId> {
    prop_oneof![Just(UNITS[0]), Just(UNITS[1]), Just(UnitId(7))]
}

fn state() -> impl Strategy<Value = DirectiveState> {
    prop::sample::select(DirectiveState::ALL)
}

fn row() -> impl Strategy<Value = Row> {
    (
        any::<u8>(),
        prop::sample::select(Health::ALL),
        0..=100u8,
        0..=99u8,
        state(),
        state(),
    )
        .prop_map(|(n, health, load, capacity, target, current)| Row {
            app: app(n),
            status: AppStatus::new(health, load, capacity).expect("in range"),
            directive: Directive { target, current },
        })
}

fn op() -> impl Strategy<Value = RowOp> {
    prop_oneof![
        row().prop_map(RowOp::Add),
        row().prop_map(RowOp::Update),
        any::<u8>().prop_map(|n| RowOp::Delete(app(n))),
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (host_id(), 0..12u64, any::<u64>(), any::<bool>()).prop_map(
        |(host, generation, digest, name)| Heartbeat {
            host,
            check: ContentCheck::Table { generation, digest },
            name: name.then(|| "h.example".into()),
            address: None,
            forward: false,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        heartbeat().prop_map(Message::from),
        host_id().prop_map(|host| Message::from(Goodbye { host })),
        (host_id(), 0..12u64, prop::collection::vec(op(), 0..5)).prop_map(
            |(host, generation, ops)| Message::from(RowChange {
                host,
                generation,
                ops
            })
        ),
        unit_id().prop_map(|requester| Message::from(GetTableSnapshot { requester })),
        (
            host_id(),
            0..12u64,
            1..4u16,
            any::<u16>(),
            prop::collection::vec(row(), 0..4)
        )
            .prop_map(|(host, generation, parts, part, rows)| {
                Message::from(SendTableSnapshot {
                    host,
                    generation,
                    part: part % parts,
                    parts,
                    rows,
                })
            }),
        (
            host_id(),
            0..8u32,
            prop::collection::vec((any::<u8>(), state()), 0..4)
        )
            .prop_map(|(host, round, ps)| Message::from(PostulateTableState {
                host,
                round,
                postulates: ps
                    .into_iter()
                    .map(|(n, state)| Postulate { app: app(n), state })
                    .collect(),
            })),
        (
            host_id(),
            unit_id(),
            0..8u32,
            prop::collection::vec((any::<u8>(), prop::option::of(state())), 0..4)
        )
            .prop_map(|(host, unit, round, ws)| Message::from(PostulateWrong {
                host,
                unit,
                round,
                wrong: ws
                    .into_iter()
                    .map(|(n, actual)| WrongPostulate {
                        app: app(n),
                        actual
                    })
                    .collect(),
            })),
        (any::<u8>(), any::<bool>(), 0..200u32).prop_map(|(n, tokens, wanted_tokens)| {
            let a = app(n);
            Message::from(AllotmentRequest {
                request_id: u64::from(n),
                vip: a.vip,
                protocol: a.protocol,
                info: a.info,
                scheme: if tokens {
                    AllotmentScheme::Tokens
                } else {
                    AllotmentScheme::Percentages
                },
                wanted_tokens,
            })
        }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// A message to the cache from `from` and to the host from a unit.
    Deliver { from: u8, message: Box<Message> },
    /// A local change at the host.
    Local { what: u8, n: u8, value: u8 },
    /// Time passes.
    Wait(Duration),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u8>(), message()).prop_map(|(from, message)| Step::Deliver { from, message: Box::new(message) }),
        3 => (0..7u8, any::<u8>(), any::<u8>()).prop_map(|(what, n, value)| Step::Local { what, n, value }),
        2 => (0..40_000u64).prop_map(|ms| Step::Wait(Duration::from_millis(ms))),
    ]
}

fn run(steps: Vec<Step>) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut cache = ConsolidatedCache::new(CacheSettings::new(UNITS[0]), t0).expect("valid");
    let mut host = HostProtocol::new(HostSettings::new(HOST, UNITS.to_vec()), t0).expect("valid");
    for step in steps {
        match step {
            Step::Deliver { from, message } => {
                let sender = match from % 4 {
                    0 => SenderId::from(HOST),
                    1 => SenderId::from(HostId(2)),
                    2 => SenderId::from(UNITS[1]),
                    _ => SenderId(u32::from(from)),
                };
                let _ = cache.handle(now, sender, &message);
                let _ = host.handle(now, UNITS[usize::from(from % 2)], &message);
            }
            Step::Local { what, n, value } => {
                let a = app(n);
                let _ = match what {
                    0 | 1 => {
                        let health = Health::ALL[usize::from(value % 3)];
                        let status = AppStatus::new(health, value % 101, value % 100);
                        host.set_app(now, a, status.expect("in range"))
                    }
                    2 | 3 => host.set_target(now, &a, DirectiveState::ALL[usize::from(value % 3)]),
                    4 => host.remove_app(now, &a),
                    5 => host.report_load(now, &a, value).map(|_| ()),
                    _ => {
                        if value == 0 {
                            host.goodbye();
                        }
                        Ok(())
                    }
                };
            }
            Step::Wait(d) => now += d,
        }
        if host.poll_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now);
        }
        if cache.poll_timeout().is_some_and(|t| t <= now) {
            cache.handle_timeout(now);
        }
        // A lossless network between the host and unit 0.
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
        for view in host.handshakes() {
            assert!(
                !view.blocked || view.given_up.is_empty(),
                "blocked yet given up"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_messages_and_time_never_break_the_machines(
        steps in prop::collection::vec(step(), 1..60)
    ) {
        run(steps);
    }
}
