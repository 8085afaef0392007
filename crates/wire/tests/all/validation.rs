//! Protocol invariants are enforced on both sides: constructors and the
//! encoder refuse invalid values, and the decoder reports them precisely.

use std::net::SocketAddr;

use switchyard_wire::allotment::{
    AffinityAllotmentResponse, AffinityOnly, AffinityOnlyReason, Allotment, AllotmentResponse,
    PercentageGrant,
};
use switchyard_wire::dam::{Atom, AtomMeta, ReturnAtom};
use switchyard_wire::health::{AppStatus, GroupGossip, Health, SendTableSnapshot};
use switchyard_wire::migration::{MigrateConnection, TcpConnectionState, TcpOptions};
use switchyard_wire::plumbing::{Ingress, Miss};
use switchyard_wire::session::{SessionId, SessionUp};
use switchyard_wire::{
    AppId, DecodeError, EncodeError, FlowTuple, HostId, Message, MessageKind, Problem, Protocol,
    UnitId, Wire, Writer,
};

fn v4() -> SocketAddr {
    "192.0.2.1:80".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[2001:db8::1]:443".parse().unwrap()
}

fn app() -> AppId {
    AppId {
        vip: v4(),
        protocol: Protocol::Tcp,
        endpoint: v4(),
        info: "/api".into(),
    }
}

/// The encoder's complaint about `msg`.
fn encode_problem(msg: impl Into<Message>) -> (&'static str, Problem) {
    match msg.into().encode_payload() {
        Err(EncodeError::Invalid { error, .. }) => (error.field, error.problem),
        other => panic!("expected an invariant violation, got {other:?}"),
    }
}

/// Decodes a hand-built payload and returns the error.
fn decode_error(kind: MessageKind, build: impl FnOnce(&mut Writer)) -> DecodeError {
    let mut w = Writer::new();
    build(&mut w);
    let payload = w.finish().unwrap();
    Message::decode_payload(kind, &payload).unwrap_err()
}

fn out_of_range(value: u64, min: u64, max: u64) -> Problem {
    Problem::OutOfRange { value, min, max }
}

fn write_row_with_status(w: &mut Writer, health: u8, load: u8, capacity: u8) {
    w.u32(1); // host
    w.u64(1); // generation
    w.u32(1); // one op
    w.u8(0); // Add
    app().encode(w);
    w.u8(health);
    w.u8(load);
    w.u8(capacity);
    w.u8(0);
    w.u8(0);
}

#[test]
fn app_status_ranges() {
    assert!(AppStatus::new(Health::Healthy, 100, 99).is_ok());
    let e = AppStatus::new(Health::Healthy, 50, 100).unwrap_err();
    assert_eq!(
        (e.field, e.problem),
        ("AppStatus.capacity", out_of_range(100, 0, 99))
    );
    let e = AppStatus::new(Health::Healthy, 101, 0).unwrap_err();
    assert_eq!(
        (e.field, e.problem),
        ("AppStatus.load", out_of_range(101, 0, 100))
    );

    let e = decode_error(MessageKind::RowChange, |w| {
        write_row_with_status(w, 0, 10, 100)
    });
    assert_eq!(e.message, "RowChange");
    assert_eq!(e.field, "AppStatus.capacity");
    assert_eq!(e.problem, out_of_range(100, 0, 99));
    assert_eq!(
        e.to_string(),
        "malformed RowChange payload: AppStatus.capacity: value 100 is outside the allowed range 0..=99"
    );
    let e = decode_error(MessageKind::RowChange, |w| {
        write_row_with_status(w, 0, 101, 1)
    });
    assert_eq!(e.problem, out_of_range(101, 0, 100));
    let e = decode_error(MessageKind::RowChange, |w| {
        write_row_with_status(w, 7, 1, 1)
    });
    assert_eq!((e.field, e.problem), ("Health", Problem::InvalidTag(7)));
}

#[test]
fn mixed_address_families() {
    let e = FlowTuple::new(Protocol::Udp, v4(), v6()).unwrap_err();
    assert_eq!(e.problem, Problem::MixedAddressFamilies);

    let e = decode_error(MessageKind::DeleteRoute, |w| {
        w.u32(1);
        w.u8(Protocol::Tcp.tag());
        w.socket_addr(&v6());
        w.socket_addr(&v4());
    });
    assert_eq!(
        (e.field, e.problem),
        ("FlowTuple", Problem::MixedAddressFamilies)
    );

    let mut state = tcp_state();
    state.remote = v6();
    let (field, problem) = encode_problem(migrate(state));
    assert_eq!(
        (field, problem),
        ("TcpConnectionState.remote", Problem::MixedAddressFamilies)
    );
}

#[test]
fn snapshot_parts() {
    let snapshot = |part, parts| SendTableSnapshot {
        host: HostId(1),
        generation: 1,
        part,
        parts,
        rows: vec![],
    };
    assert_eq!(
        encode_problem(snapshot(0, 0)),
        ("SendTableSnapshot.parts", out_of_range(0, 1, 65535))
    );
    assert_eq!(
        encode_problem(snapshot(3, 3)),
        ("SendTableSnapshot.part", out_of_range(3, 0, 2))
    );
    let e = decode_error(MessageKind::SendTableSnapshot, |w| {
        w.u32(1);
        w.u64(1);
        w.u16(0);
        w.u16(0);
        w.u32(0);
    });
    assert_eq!(e.field, "SendTableSnapshot.parts");
}

#[test]
fn basis_points_sum() {
    let grant = |basis_points| PercentageGrant {
        endpoint: v4(),
        host: HostId(1),
        basis_points,
    };
    let response = |entries| AllotmentResponse {
        request_id: 1,
        vip: v4(),
        protocol: Protocol::Tcp,
        info: String::new(),
        allotment: Allotment::Percentages {
            entries,
            duration_ms: 1000,
        },
    };
    assert!(
        Message::from(response(vec![grant(6000), grant(4000)]))
            .encode_payload()
            .is_ok()
    );
    assert_eq!(
        encode_problem(response(vec![grant(6000), grant(4001)])),
        (
            "Allotment.basis_points (sum)",
            out_of_range(10_001, 0, 10_000)
        )
    );
    let e = decode_error(MessageKind::AllotmentResponse, |w| {
        w.u64(1);
        w.socket_addr(&v4());
        w.u8(6);
        w.string("info", "", 10);
        w.u8(1); // percentages
        w.u32(1);
        w.socket_addr(&v4());
        w.u32(1);
        w.u16(10_001);
        w.u32(1000);
    });
    assert_eq!(e.problem, out_of_range(10_001, 0, 10_000));
}

/// The affinity response is a plain response followed by its list: each kind's decoder
/// takes exactly its own payload, so neither can be mistaken for the other (an earlier
/// build's strict decoder never sees the list), and a bad reason tag is refused.
#[test]
fn affinity_allotment_response_is_strict_about_its_list() {
    let plain = AllotmentResponse {
        request_id: 9,
        vip: v4(),
        protocol: Protocol::Tcp,
        info: "shop".into(),
        allotment: Allotment::Percentages {
            entries: vec![PercentageGrant {
                endpoint: v4(),
                host: HostId(1),
                basis_points: 10_000,
            }],
            duration_ms: 1000,
        },
    };
    let with = AffinityAllotmentResponse {
        response: plain.clone(),
        affinity_only: vec![AffinityOnly {
            endpoint: v6(),
            host: HostId(2),
            reason: AffinityOnlyReason::Draining,
        }],
    };
    let plain_bytes = Message::from(plain.clone()).encode_payload().unwrap();
    let with_bytes = Message::from(with.clone()).encode_payload().unwrap();
    assert!(with_bytes.starts_with(&plain_bytes));
    assert_eq!(
        Message::decode_payload(MessageKind::AffinityAllotmentResponse, &with_bytes).unwrap(),
        Message::from(with)
    );
    // A plain response lacks the list; the list is trailing bytes to a plain decoder.
    assert!(Message::decode_payload(MessageKind::AffinityAllotmentResponse, &plain_bytes).is_err());
    assert!(Message::decode_payload(MessageKind::AllotmentResponse, &with_bytes).is_err());

    let e = decode_error(MessageKind::AffinityAllotmentResponse, |w| {
        plain.encode(w);
        w.u32(1);
        w.socket_addr(&v4());
        w.u32(3);
        w.u8(9); // no such reason
    });
    assert_eq!(e.problem, Problem::InvalidTag(9));
}

fn tcp_state() -> TcpConnectionState {
    TcpConnectionState {
        local: v4(),
        remote: "198.51.100.7:40000".parse().unwrap(),
        send_seq: 1,
        recv_seq: 2,
        mss_clamp: 1460,
        options: TcpOptions {
            sack: true,
            timestamps: true,
            window_scaling: true,
        },
        snd_wscale: 7,
        rcv_wscale: 7,
        timestamp: 3,
        window: None,
        recv_queue: vec![],
        send_queue: b"abc".to_vec(),
        unsent_len: 3,
        consumed: b"GET / HTTP/1.1\r\n".to_vec(),
    }
}

fn migrate(state: TcpConnectionState) -> MigrateConnection {
    MigrateConnection {
        migration_id: 1,
        state,
        flow_id: None,
        app: None,
    }
}

#[test]
fn tcp_state_invariants() {
    assert!(Message::from(migrate(tcp_state())).encode_payload().is_ok());

    let mut state = tcp_state();
    state.unsent_len = 4;
    assert_eq!(
        encode_problem(migrate(state.clone())),
        ("TcpConnectionState.unsent_len", out_of_range(4, 0, 3))
    );

    // The decoder applies the same rule: patch unsent_len in a valid payload.
    let mut payload = Message::from(migrate(tcp_state()))
        .encode_payload()
        .unwrap();
    // Layout tail: unsent_len u32, consumed (u32 len + 16 bytes), flow_id tag, app tag.
    let at = payload.len() - 2 - 16 - 4 - 4;
    payload[at..at + 4].copy_from_slice(&4u32.to_be_bytes());
    let e = Message::decode_payload(MessageKind::MigrateConnection, &payload).unwrap_err();
    assert_eq!(
        (e.field, e.problem),
        ("TcpConnectionState.unsent_len", out_of_range(4, 0, 3))
    );

    let mut state = tcp_state();
    state.snd_wscale = 15;
    assert_eq!(
        encode_problem(migrate(state)),
        ("TcpConnectionState.snd_wscale", out_of_range(15, 0, 14))
    );
}

#[test]
fn length_and_count_limits() {
    let up = |session, metadata| SessionUp {
        message_id: 1,
        session,
        host: HostId(1),
        app: None,
        metadata,
    };
    assert_eq!(
        encode_problem(up(SessionId::TlsSessionId(vec![0; 33]), vec![])),
        (
            "SessionId.tls_session_id",
            Problem::TooLong { len: 33, max: 32 }
        )
    );
    let many = vec![(String::from("k"), String::from("v")); 33];
    assert_eq!(
        encode_problem(up(SessionId::User("joe".into()), many)),
        (
            "SessionUp.metadata",
            Problem::TooMany { count: 33, max: 32 }
        )
    );
    let miss = Miss {
        ingress: Ingress {
            ifindex: 1,
            queue: 1,
        },
        packet: vec![0; 65_536],
    };
    assert_eq!(
        encode_problem(miss),
        (
            "Miss.packet",
            Problem::TooLong {
                len: 65_536,
                max: 65_535
            }
        )
    );

    let e = decode_error(MessageKind::SessionDown, |w| {
        w.u64(1);
        w.u8(2); // TLS session id
        w.u32(33);
        w.raw(&[0; 33]);
        w.u32(1);
    });
    assert_eq!(e.problem, Problem::TooLong { len: 33, max: 32 });

    let gossip = GroupGossip {
        group: "g".repeat(64),
        data: vec![1, 2, 3],
    };
    assert_eq!(
        encode_problem(gossip),
        ("GroupGossip.group", Problem::TooLong { len: 64, max: 63 })
    );
    let e = decode_error(MessageKind::GroupGossip, |w| {
        w.u16(64);
        w.raw(&[b'g'; 64]);
        w.u32(0);
    });
    assert_eq!(
        (e.field, e.problem),
        ("GroupGossip.group", Problem::TooLong { len: 64, max: 63 })
    );
}

#[test]
fn return_atom_key_must_match() {
    let ret = ReturnAtom {
        call_id: 1,
        key: b"a".to_vec(),
        atom: Some(Atom {
            key: b"b".to_vec(),
            data: vec![],
            meta: AtomMeta {
                added_by: UnitId(1),
                version: 1,
                zombie: false,
                expires_at_ms: 0,
            },
        }),
    };
    let (field, problem) = encode_problem(ret);
    assert_eq!(field, "ReturnAtom.atom.key");
    assert!(matches!(problem, Problem::Inconsistent(_)));
}

#[test]
fn decoding_errors_name_field_and_problem() {
    // Invalid UTF-8 in a heartbeat's DNS name.
    let e = decode_error(MessageKind::Heartbeat, |w| {
        w.u32(1);
        w.u8(0);
        w.u64(1);
        w.u64(2);
        w.u8(1);
        w.u16(2);
        w.raw(&[0xc3, 0x28]);
        w.u8(0);
        w.u8(0);
    });
    assert_eq!(
        (e.field, e.problem),
        ("Heartbeat.name", Problem::InvalidUtf8)
    );

    // Truncated field.
    let e = decode_error(MessageKind::Goodbye, |w| w.u16(1));
    assert_eq!(
        (e.field, e.problem),
        (
            "HostId",
            Problem::Truncated {
                needed: 4,
                remaining: 2
            }
        )
    );

    // Trailing bytes.
    let e = decode_error(MessageKind::Goodbye, |w| {
        w.u32(1);
        w.u8(0);
    });
    assert_eq!(e.problem, Problem::TrailingBytes(1));

    // A boolean that is neither 0 nor 1.
    let e = decode_error(MessageKind::Heartbeat, |w| {
        w.u32(1);
        w.u8(0);
        w.u64(1);
        w.u64(2);
        w.u8(0);
        w.u8(0);
        w.u8(2);
    });
    assert_eq!(
        (e.field, e.problem),
        ("Heartbeat.forward", Problem::InvalidTag(2))
    );

    // Unknown TCP option bits.
    let mut payload = Message::from(migrate(tcp_state()))
        .encode_payload()
        .unwrap();
    // migration_id 8, local 7, remote 7, seqs 8, mss 2 → options at 32.
    payload[32] = 0x80;
    let e = Message::decode_payload(MessageKind::MigrateConnection, &payload).unwrap_err();
    assert_eq!(e.field, "TcpOptions");

    // A list count the remaining input cannot hold is refused up front.
    let e = decode_error(MessageKind::EncapMapping, |w| w.u32(u32::MAX));
    assert!(matches!(e.problem, Problem::Truncated { .. }));
}
