//! Proptest strategies producing every valid message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use switchyard_wire::allotment::*;
use switchyard_wire::dam::*;
use switchyard_wire::encap::*;
use switchyard_wire::health::*;
use switchyard_wire::migration::*;
use switchyard_wire::plumbing::*;
use switchyard_wire::session::*;
use switchyard_wire::{AppId, FlowTuple, HostId, Message, Protocol, UnitId};

/// Small lists keep cases fast while still covering 0, 1 and many.
const LIST: std::ops::RangeInclusive<usize> = 0..=4;

fn text(max: usize) -> impl Strategy<Value = String> {
    // Arbitrary Unicode (multi-byte included), trimmed to the byte limit.
    "\\PC{0,12}".prop_map(move |s: String| {
        let mut out = String::new();
        for c in s.chars() {
            if out.len() + c.len_utf8() > max {
                break;
            }
            out.push(c);
        }
        out
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max.min(48))
}

pub fn ip(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .boxed()
    } else {
        any::<[u8; 4]>()
            .prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .boxed()
    }
}

pub fn addr_of(v6: bool) -> BoxedStrategy<SocketAddr> {
    (ip(v6), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(ip, port))
        .boxed()
}

pub fn addr() -> BoxedStrategy<SocketAddr> {
    any::<bool>().prop_flat_map(addr_of).boxed()
}

pub fn protocol() -> impl Strategy<Value = Protocol> {
    select(Protocol::ALL)
}

pub fn flow() -> impl Strategy<Value = FlowTuple> {
    any::<bool>().prop_flat_map(|v6| {
        (protocol(), addr_of(v6), addr_of(v6)).prop_map(|(p, c, v)| {
            FlowTuple::new(p, c, v).unwrap_or_else(|e| panic!("same family: {e}"))
        })
    })
}

pub fn app() -> impl Strategy<Value = AppId> {
    (addr(), protocol(), addr(), text(64)).prop_map(|(vip, protocol, endpoint, info)| AppId {
        vip,
        protocol,
        endpoint,
        info,
    })
}

fn host() -> impl Strategy<Value = HostId> {
    any::<u32>().prop_map(HostId)
}

fn unit() -> impl Strategy<Value = UnitId> {
    any::<u32>().prop_map(UnitId)
}

fn directive_state() -> impl Strategy<Value = DirectiveState> {
    select(DirectiveState::ALL)
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    let check = prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(generation, digest)| ContentCheck::Table { generation, digest }),
        vec(
            (any::<u16>(), any::<u64>(), any::<u64>()).prop_map(|(chunk, generation, digest)| {
                ChunkCheck {
                    chunk,
                    generation,
                    digest,
                }
            }),
            LIST
        )
        .prop_map(ContentCheck::Chunks),
    ];
    (
        host(),
        check,
        option::of(text(MAX_DNS_NAME_LEN)),
        option::of(addr()),
        any::<bool>(),
    )
        .prop_map(|(host, check, name, address, forward)| Heartbeat {
            host,
            check,
            name,
            address,
            forward,
        })
}

pub fn status() -> impl Strategy<Value = AppStatus> {
    (select(Health::ALL), 0..=MAX_LOAD, 0..=MAX_CAPACITY)
        .prop_map(|(h, l, c)| AppStatus::new(h, l, c).unwrap_or_else(|e| panic!("in range: {e}")))
}

fn row() -> impl Strategy<Value = Row> {
    (app(), status(), directive_state(), directive_state()).prop_map(
        |(app, status, target, current)| Row {
            app,
            status,
            directive: Directive { target, current },
        },
    )
}

fn health_message() -> impl Strategy<Value = Message> {
    let row_op = prop_oneof![
        row().prop_map(RowOp::Add),
        row().prop_map(RowOp::Update),
        app().prop_map(RowOp::Delete),
    ];
    prop_oneof![
        heartbeat().prop_map(Message::from),
        host().prop_map(|host| Goodbye { host }.into()),
        (host(), any::<u64>(), vec(row_op, LIST)).prop_map(|(host, generation, ops)| {
            RowChange {
                host,
                generation,
                ops,
            }
            .into()
        }),
        unit().prop_map(|requester| GetTableSnapshot { requester }.into()),
        (host(), any::<u64>(), 1..=u16::MAX, vec(row(), LIST)).prop_flat_map(
            |(host, generation, parts, rows)| {
                (0..parts).prop_map(move |part| {
                    SendTableSnapshot {
                        host,
                        generation,
                        part,
                        parts,
                        rows: rows.clone(),
                    }
                    .into()
                })
            }
        ),
        (
            host(),
            any::<u32>(),
            vec(
                (app(), directive_state()).prop_map(|(app, state)| Postulate { app, state }),
                LIST
            )
        )
            .prop_map(|(host, round, postulates)| PostulateTableState {
                host,
                round,
                postulates
            }
            .into()),
        (
            host(),
            unit(),
            any::<u32>(),
            vec(
                (app(), option::of(directive_state()))
                    .prop_map(|(app, actual)| WrongPostulate { app, actual }),
                LIST
            )
        )
            .prop_map(|(host, unit, round, wrong)| PostulateWrong {
                host,
                unit,
                round,
                wrong
            }
            .into()),
        (host(), vec(heartbeat(), LIST)).prop_map(|(leader, heartbeats)| {
            ConsolidatedHeartbeat { leader, heartbeats }.into()
        }),
        (text(MAX_GROUP_NAME_LEN), bytes(1400)).prop_map(|(group, data)| GroupGossip {
            group,
            data
        }
        .into()),
        (
            host(),
            unit(),
            any::<u32>(),
            option::of(app()),
            prop_oneof![
                directive_state().prop_map(Act::Target),
                (0..=MAX_CAPACITY).prop_map(Act::Capacity),
            ]
        )
            .prop_map(|(host, unit, request, app, act)| DirectiveRequest {
                host,
                unit,
                request,
                app,
                act
            }
            .into()),
        (host(), any::<u32>(), select(ActOutcome::ALL), any::<u16>()).prop_map(
            |(host, request, outcome, rows)| DirectiveReply {
                host,
                request,
                outcome,
                rows
            }
            .into()
        ),
    ]
}

fn allotment_message() -> impl Strategy<Value = Message> {
    let token = (addr(), host(), any::<u32>()).prop_map(|(endpoint, host, tokens)| TokenGrant {
        endpoint,
        host,
        tokens,
    });
    // Up to four shares of at most 2500 basis points each: the sum is valid.
    let share =
        (addr(), host(), 0..=2500u16).prop_map(|(endpoint, host, basis_points)| PercentageGrant {
            endpoint,
            host,
            basis_points,
        });
    let allotment = prop_oneof![
        (vec(token, LIST), any::<u32>()).prop_map(|(entries, valid_for_ms)| Allotment::Tokens {
            entries,
            valid_for_ms
        }),
        (vec(share, LIST), any::<u32>()).prop_map(|(entries, duration_ms)| {
            Allotment::Percentages {
                entries,
                duration_ms,
            }
        }),
    ];
    let request = (
        any::<u64>(),
        addr(),
        protocol(),
        text(64),
        select(AllotmentScheme::ALL),
        any::<u32>(),
    )
        .prop_map(
            |(request_id, vip, protocol, info, scheme, wanted_tokens)| AllotmentRequest {
                request_id,
                vip,
                protocol,
                info,
                scheme,
                wanted_tokens,
            },
        )
        .boxed();
    let response = (any::<u64>(), addr(), protocol(), text(64), allotment)
        .prop_map(
            |(request_id, vip, protocol, info, allotment)| AllotmentResponse {
                request_id,
                vip,
                protocol,
                info,
                allotment,
            },
        )
        .boxed();
    let affinity_only =
        (addr(), host(), select(AffinityOnlyReason::ALL)).prop_map(|(endpoint, host, reason)| {
            AffinityOnly {
                endpoint,
                host,
                reason,
            }
        });
    prop_oneof![
        request.clone().prop_map(Message::from),
        response.clone().prop_map(Message::from),
        request.prop_map(|request| AffinityAllotmentRequest { request }.into()),
        (response, vec(affinity_only, LIST)).prop_map(|(response, affinity_only)| {
            AffinityAllotmentResponse {
                response,
                affinity_only,
            }
            .into()
        }),
    ]
}

pub fn session_id() -> impl Strategy<Value = SessionId> {
    prop_oneof![
        flow().prop_map(SessionId::FourTuple),
        any::<bool>()
            .prop_flat_map(ip)
            .prop_map(SessionId::ClientIp),
        bytes(MAX_TLS_SESSION_ID_LEN).prop_map(SessionId::TlsSessionId),
        (text(MAX_COOKIE_NAME_LEN), text(64))
            .prop_map(|(name, value)| SessionId::HttpCookie { name, value }),
        text(MAX_USER_LEN).prop_map(SessionId::User),
        (text(MAX_CUSTOM_KIND_LEN), bytes(MAX_CUSTOM_ID_LEN))
            .prop_map(|(kind, id)| SessionId::Custom { kind, id }),
    ]
}

fn session_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            session_id(),
            host(),
            option::of(app()),
            vec((text(MAX_METADATA_KEY_LEN), text(64)), LIST)
        )
            .prop_map(|(message_id, session, host, app, metadata)| SessionUp {
                message_id,
                session,
                host,
                app,
                metadata
            }
            .into()),
        (any::<u64>(), session_id(), host()).prop_map(|(message_id, session, host)| {
            SessionDown {
                message_id,
                session,
                host,
            }
            .into()
        }),
        any::<u64>().prop_map(|up_to| SessionAck { up_to }.into()),
        (any::<u64>(), any::<u64>(), host(), any::<u64>()).prop_map(
            |(channel, message_id, host, sessions)| SessionResync {
                channel,
                message_id,
                host,
                sessions,
            }
            .into()
        ),
        (any::<u64>(), host(), any::<u64>()).prop_map(|(channel, host, next_id)| {
            SessionKeepalive {
                channel,
                host,
                next_id,
            }
            .into()
        }),
        any::<u64>().prop_map(|known_channel| SessionResyncRequest { known_channel }.into()),
    ]
}

fn atom_with_key(key: Vec<u8>) -> impl Strategy<Value = Atom> {
    (bytes(64), unit(), any::<u64>(), any::<bool>(), any::<u64>()).prop_map(
        move |(data, added_by, version, zombie, expires_at_ms)| Atom {
            key: key.clone(),
            data,
            meta: AtomMeta {
                added_by,
                version,
                zombie,
                expires_at_ms,
            },
        },
    )
}

fn dam_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), bytes(40).prop_flat_map(atom_with_key))
            .prop_map(|(call_id, atom)| AddAtom { call_id, atom }.into()),
        (any::<u64>(), bytes(40), any::<u32>()).prop_map(|(call_id, key, zombie_ms)| {
            DeleteAtom {
                call_id,
                key,
                zombie_ms,
            }
            .into()
        }),
        (any::<u64>(), bytes(40)).prop_map(|(call_id, key)| QueryAtom { call_id, key }.into()),
        (any::<u64>(), bytes(40)).prop_flat_map(|(call_id, key)| {
            option::of(atom_with_key(key.clone())).prop_map(move |atom| {
                ReturnAtom {
                    call_id,
                    key: key.clone(),
                    atom,
                }
                .into()
            })
        }),
    ]
}

fn plumbing_message() -> impl Strategy<Value = Message> {
    let delivery = prop_oneof![
        addr().prop_map(|source| Delivery::Nat { source }),
        Just(Delivery::HalfNat),
        any::<u32>().prop_map(|flow_id| Delivery::Tunnel { flow_id }),
    ];
    let route = (flow(), host(), addr(), delivery, any::<u32>()).prop_map(
        |(flow, host, target, delivery, idle_timeout_ms)| Route {
            flow,
            host,
            target,
            delivery,
            idle_timeout_ms,
        },
    );
    prop_oneof![
        vec(route, LIST).prop_map(|routes| AddRoute { routes }.into()),
        vec(flow(), LIST).prop_map(|flows| DeleteRoute { flows }.into()),
        (any::<u32>(), any::<u32>(), bytes(1500)).prop_map(|(ifindex, queue, packet)| {
            Miss {
                ingress: Ingress { ifindex, queue },
                packet,
            }
            .into()
        }),
        (flow(), select(FinalReason::ALL))
            .prop_map(|(flow, reason)| FinalPacket { flow, reason }.into()),
        (flow(), select(RefusalReason::ALL)).prop_map(|(flow, reason)| RouteRefused {
            flow,
            reason
        }
        .into()),
    ]
}

pub fn tcp_state() -> impl Strategy<Value = TcpConnectionState> {
    let window = (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup)| TcpWindow {
                snd_wl1,
                snd_wnd,
                max_window,
                rcv_wnd,
                rcv_wup,
            },
        );
    let addrs = any::<bool>().prop_flat_map(|v6| (addr_of(v6), addr_of(v6)));
    let options = any::<[bool; 3]>().prop_map(|[sack, timestamps, window_scaling]| TcpOptions {
        sack,
        timestamps,
        window_scaling,
    });
    let queues = (bytes(64), bytes(64), bytes(64)).prop_flat_map(|(recv, send, consumed)| {
        let len = send.len() as u32;
        (0..=len).prop_map(move |unsent| (recv.clone(), send.clone(), unsent, consumed.clone()))
    });
    (
        addrs,
        (any::<u32>(), any::<u32>(), any::<u16>(), options),
        (0..=MAX_WINDOW_SCALE, 0..=MAX_WINDOW_SCALE, any::<u32>()),
        option::of(window),
        queues,
    )
        .prop_map(
            |(
                (local, remote),
                (send_seq, recv_seq, mss_clamp, options),
                (snd_wscale, rcv_wscale, timestamp),
                window,
                (recv_queue, send_queue, unsent_len, consumed),
            )| TcpConnectionState {
                local,
                remote,
                send_seq,
                recv_seq,
                mss_clamp,
                options,
                snd_wscale,
                rcv_wscale,
                timestamp,
                window,
                recv_queue,
                send_queue,
                unsent_len,
                consumed,
            },
        )
}

fn migration_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            tcp_state(),
            option::of(any::<u32>()),
            option::of(app())
        )
            .prop_map(|(migration_id, state, flow_id, app)| MigrateConnection {
                migration_id,
                state,
                flow_id,
                app
            }
            .into()),
        any::<u64>().prop_map(|migration_id| MigrateAck { migration_id }.into()),
        (
            any::<u64>(),
            select(NackReason::ALL),
            text(MAX_NACK_DETAIL_LEN)
        )
            .prop_map(|(migration_id, reason, detail)| MigrateNack {
                migration_id,
                reason,
                detail
            }
            .into()),
        any::<u64>().prop_map(|migration_id| MigratedClosed { migration_id }.into()),
    ]
}

fn encap_message() -> impl Strategy<Value = Message> {
    (
        vec(
            (any::<u32>(), flow()).prop_map(|(flow_id, flow)| FlowMapping { flow_id, flow }),
            LIST,
        ),
        vec(any::<u32>(), LIST),
    )
        .prop_map(|(add, remove)| EncapMapping { add, remove }.into())
}

/// Any valid message of any family.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        health_message(),
        allotment_message(),
        session_message(),
        dam_message(),
        plumbing_message(),
        migration_message(),
        encap_message(),
    ]
}
