//! Writes the fuzz seed corpus: a few valid payloads per message type for
//! each family target, and sealed frames for the `frame` target.
//!
//! ```text
//! cargo run -p switchyard-wire --example seed_corpus -- fuzz/corpus
//! ```
//!
//! A family target's input is one selector byte (the index of the message
//! type within the family) followed by a payload; see `fuzz/src/lib.rs`.
//! Output is deterministic, so re-running it only changes files when the
//! encoding changes.

use std::error::Error;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use switchyard_wire::allotment::*;
use switchyard_wire::dam::*;
use switchyard_wire::encap::*;
use switchyard_wire::health::*;
use switchyard_wire::migration::*;
use switchyard_wire::plumbing::*;
use switchyard_wire::session::*;
use switchyard_wire::{
    AppId, Codec, Family, FlowTuple, HostId, MacKey, Message, Protocol, SenderId, UnitId,
};

/// Key of the fuzz `frame` target (also in fuzz/fuzz_targets/frame.rs and
/// the crate's corpus test). Not a production secret.
const FUZZ_SECRET: &[u8] = b"switchyard-fuzz-secret-not-for-production";
const FUZZ_CLUSTER: &str = "fuzz";

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: seed_corpus <corpus-dir>")?;
    let out = Path::new(&out);
    let messages = samples()?;

    for &family in Family::ALL {
        let dir = out.join(family.name());
        reset_dir(&dir)?;
        for (i, msg) in messages.iter().enumerate() {
            let kind = msg.kind();
            let Some(selector) = family.kinds().iter().position(|&k| k == kind) else {
                continue;
            };
            let mut bytes = vec![u8::try_from(selector)?];
            bytes.extend(msg.encode_payload()?);
            fs::write(dir.join(format!("{}-{i:02}", kind.name())), bytes)?;
        }
    }

    let codec = Codec::new(MacKey::derive(FUZZ_SECRET, FUZZ_CLUSTER)?);
    let dir = out.join("frame");
    reset_dir(&dir)?;
    for (i, msg) in messages.iter().enumerate() {
        let frame = codec.seal(SenderId(7), 1_000 + i as u64, msg)?;
        fs::write(dir.join(format!("{}-{i:02}", msg.kind().name())), frame)?;
    }
    println!(
        "wrote seeds for {} messages into {}",
        messages.len(),
        out.display()
    );
    Ok(())
}

/// Removes previously generated seeds (plain files) so renamed or dropped
/// samples do not linger.
fn reset_dir(dir: &Path) -> Result<(), Box<dyn Error>> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn addr(s: &str) -> Result<SocketAddr, Box<dyn Error>> {
    Ok(s.parse()?)
}

fn samples() -> Result<Vec<Message>, Box<dyn Error>> {
    let vip4 = addr("203.0.113.10:443")?;
    let vip6 = addr("[2001:db8::10]:443")?;
    let host4 = addr("10.0.0.7:8443")?;
    let host6 = addr("[fd00::7]:8443")?;
    let client4 = addr("198.51.100.23:51515")?;
    let client6 = addr("[2001:db8:1::23]:51515")?;
    let flow4 = FlowTuple::new(Protocol::Tcp, client4, vip4)?;
    let flow6 = FlowTuple::new(Protocol::Udp, client6, vip6)?;
    let app = AppId {
        vip: vip4,
        protocol: Protocol::Tcp,
        endpoint: host4,
        info: "/shop/".into(),
    };
    let app6 = AppId {
        vip: vip6,
        protocol: Protocol::Udp,
        endpoint: host6,
        info: String::new(),
    };
    let row = Row {
        app: app.clone(),
        status: AppStatus::new(Health::Healthy, 42, 99)?,
        directive: Directive {
            target: DirectiveState::Draining,
            current: DirectiveState::Active,
        },
    };
    let row6 = Row {
        app: app6.clone(),
        status: AppStatus::new(Health::Unknown, 0, 0)?,
        directive: Directive {
            target: DirectiveState::Inactive,
            current: DirectiveState::Inactive,
        },
    };
    let heartbeat = Heartbeat {
        host: HostId(7),
        check: ContentCheck::Table {
            generation: 12,
            digest: 0xfeed_f00d,
        },
        name: Some("web-07.example.net".into()),
        address: Some(host4),
        forward: false,
    };
    let chunked = Heartbeat {
        host: HostId(8),
        check: ContentCheck::Chunks(vec![
            ChunkCheck {
                chunk: 0,
                generation: 3,
                digest: 1,
            },
            ChunkCheck {
                chunk: 1,
                generation: 5,
                digest: 2,
            },
        ]),
        name: None,
        address: None,
        forward: true,
    };
    let atom = Atom {
        key: SessionId::FourTuple(flow4).key(),
        data: b"10.0.0.7".to_vec(),
        meta: AtomMeta {
            added_by: UnitId(2),
            version: 4,
            zombie: false,
            expires_at_ms: 0,
        },
    };
    let state = TcpConnectionState {
        local: vip4,
        remote: client4,
        send_seq: 0x1000_0000,
        recv_seq: 0x2000_0000,
        mss_clamp: 1460,
        options: TcpOptions {
            sack: true,
            timestamps: true,
            window_scaling: true,
        },
        snd_wscale: 7,
        rcv_wscale: 9,
        timestamp: 123_456,
        window: Some(TcpWindow {
            snd_wl1: 0x2000_0000,
            snd_wnd: 65_535,
            max_window: 65_535,
            rcv_wnd: 29_200,
            rcv_wup: 0x2000_0000,
        }),
        recv_queue: b"Host: shop".to_vec(),
        send_queue: b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        unsent_len: 4,
        consumed: b"GET /shop/cart HTTP/1.1\r\n".to_vec(),
    };

    let messages: Vec<Message> = vec![
        heartbeat.clone().into(),
        chunked.clone().into(),
        Goodbye { host: HostId(7) }.into(),
        Goodbye {
            host: HostId(u32::MAX),
        }
        .into(),
        RowChange {
            host: HostId(7),
            generation: 13,
            ops: vec![
                RowOp::Add(row.clone()),
                RowOp::Update(row6.clone()),
                RowOp::Delete(app6.clone()),
            ],
        }
        .into(),
        RowChange {
            host: HostId(7),
            generation: 14,
            ops: vec![],
        }
        .into(),
        GetTableSnapshot {
            requester: UnitId(2),
        }
        .into(),
        GetTableSnapshot {
            requester: UnitId(0),
        }
        .into(),
        SendTableSnapshot {
            host: HostId(7),
            generation: 14,
            part: 1,
            parts: 2,
            rows: vec![row.clone(), row6],
        }
        .into(),
        PostulateTableState {
            host: HostId(7),
            round: 3,
            postulates: vec![Postulate {
                app: app.clone(),
                state: DirectiveState::Draining,
            }],
        }
        .into(),
        PostulateWrong {
            host: HostId(7),
            unit: UnitId(2),
            round: 3,
            wrong: vec![
                WrongPostulate {
                    app: app.clone(),
                    actual: Some(DirectiveState::Active),
                },
                WrongPostulate {
                    app: app6.clone(),
                    actual: None,
                },
            ],
        }
        .into(),
        ConsolidatedHeartbeat {
            leader: HostId(1),
            heartbeats: vec![heartbeat, chunked],
        }
        .into(),
        AllotmentRequest {
            request_id: 77,
            vip: vip4,
            protocol: Protocol::Tcp,
            info: "/shop/".into(),
            scheme: AllotmentScheme::Tokens,
            wanted_tokens: 100,
        }
        .into(),
        AllotmentRequest {
            request_id: 78,
            vip: vip6,
            protocol: Protocol::Udp,
            info: String::new(),
            scheme: AllotmentScheme::Percentages,
            wanted_tokens: 0,
        }
        .into(),
        AllotmentResponse {
            request_id: 77,
            vip: vip4,
            protocol: Protocol::Tcp,
            info: "/shop/".into(),
            allotment: Allotment::Tokens {
                entries: vec![TokenGrant {
                    endpoint: host4,
                    host: HostId(7),
                    tokens: 60,
                }],
                valid_for_ms: 5_000,
            },
        }
        .into(),
        AllotmentResponse {
            request_id: 78,
            vip: vip6,
            protocol: Protocol::Udp,
            info: String::new(),
            allotment: Allotment::Percentages {
                entries: vec![
                    PercentageGrant {
                        endpoint: host6,
                        host: HostId(7),
                        basis_points: 7_500,
                    },
                    PercentageGrant {
                        endpoint: host6,
                        host: HostId(8),
                        basis_points: 2_500,
                    },
                ],
                duration_ms: 10_000,
            },
        }
        .into(),
        SessionUp {
            message_id: 1,
            session: SessionId::FourTuple(flow4),
            host: HostId(7),
            app: Some(app.clone()),
            metadata: vec![("type".into(), "TCP".into())],
        }
        .into(),
        SessionUp {
            message_id: 2,
            session: SessionId::HttpCookie {
                name: "sid".into(),
                value: "{b7595cc9-e68b-4eb0-9bf1-bb717b31d447}".into(),
            },
            host: HostId(7),
            app: None,
            metadata: vec![],
        }
        .into(),
        SessionUp {
            message_id: 3,
            session: SessionId::Custom {
                kind: "pptp".into(),
                id: vec![1, 2, 3],
            },
            host: HostId(8),
            app: None,
            metadata: vec![],
        }
        .into(),
        SessionDown {
            message_id: 4,
            session: SessionId::ClientIp(client6.ip()),
            host: HostId(7),
        }
        .into(),
        SessionDown {
            message_id: 5,
            session: SessionId::TlsSessionId(vec![0xab; 32]),
            host: HostId(7),
        }
        .into(),
        SessionDown {
            message_id: 6,
            session: SessionId::User("joe_user".into()),
            host: HostId(7),
        }
        .into(),
        SessionAck { up_to: 6 }.into(),
        SessionAck { up_to: u64::MAX }.into(),
        AddAtom {
            call_id: 1,
            atom: atom.clone(),
        }
        .into(),
        DeleteAtom {
            call_id: 2,
            key: atom.key.clone(),
            zombie_ms: 240_000,
        }
        .into(),
        QueryAtom {
            call_id: 3,
            key: atom.key.clone(),
        }
        .into(),
        QueryAtom {
            call_id: 5,
            key: vec![],
        }
        .into(),
        ReturnAtom {
            call_id: 3,
            key: atom.key.clone(),
            atom: Some(atom.clone()),
        }
        .into(),
        ReturnAtom {
            call_id: 4,
            key: b"missing".to_vec(),
            atom: None,
        }
        .into(),
        AddRoute {
            routes: vec![
                Route {
                    flow: flow4,
                    host: HostId(7),
                    target: host4,
                    delivery: Delivery::Nat {
                        source: addr("10.0.0.1:40000")?,
                    },
                    idle_timeout_ms: 300_000,
                },
                Route {
                    flow: flow6,
                    host: HostId(8),
                    target: host6,
                    delivery: Delivery::Tunnel { flow_id: 0xdead },
                    idle_timeout_ms: 0,
                },
                Route {
                    flow: flow4,
                    host: HostId(7),
                    target: host4,
                    delivery: Delivery::HalfNat,
                    idle_timeout_ms: 60_000,
                },
            ],
        }
        .into(),
        DeleteRoute {
            flows: vec![flow4, flow6],
        }
        .into(),
        Miss {
            ingress: Ingress {
                ifindex: 3,
                queue: 1,
            },
            packet: vec![
                0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 23, 203, 0, 113, 10,
            ],
        }
        .into(),
        FinalPacket {
            flow: flow4,
            reason: FinalReason::Fin,
        }
        .into(),
        FinalPacket {
            flow: flow6,
            reason: FinalReason::IdleTimeout,
        }
        .into(),
        MigrateConnection {
            migration_id: 9,
            state: state.clone(),
            flow_id: Some(0xdead),
            app: Some(app),
        }
        .into(),
        MigrateConnection {
            migration_id: 10,
            state: TcpConnectionState {
                window: None,
                unsent_len: 0,
                options: TcpOptions::default(),
                ..state
            },
            flow_id: None,
            app: None,
        }
        .into(),
        MigrateAck { migration_id: 9 }.into(),
        MigrateAck { migration_id: 0 }.into(),
        MigrateNack {
            migration_id: 10,
            reason: NackReason::NoListener,
            detail: "nothing listens on 203.0.113.10:443".into(),
        }
        .into(),
        MigratedClosed { migration_id: 9 }.into(),
        MigrateNack {
            migration_id: 11,
            reason: NackReason::Other,
            detail: "restore: état invalide".into(),
        }
        .into(),
        EncapMapping {
            add: vec![
                FlowMapping {
                    flow_id: 0xdead,
                    flow: flow4,
                },
                FlowMapping {
                    flow_id: 0xbeef,
                    flow: flow6,
                },
            ],
            remove: vec![1, 2],
        }
        .into(),
        EncapMapping {
            add: vec![],
            remove: vec![],
        }
        .into(),
        // Later additions go last so existing seed file names stay stable.
        GroupGossip {
            group: "web-east".into(),
            data: vec![0x01, 0x00, 0x07, 0x0a, 0x00, 0x00, 0x07, 0x1e, 0x61],
        }
        .into(),
        GroupGossip {
            group: String::new(),
            data: vec![],
        }
        .into(),
        SessionResync {
            channel: 0x1795_6676_0219_2992,
            message_id: 7,
            host: HostId(7),
            sessions: 2,
        }
        .into(),
        SessionKeepalive {
            channel: 0x1795_6676_0219_2992,
            host: HostId(7),
            next_id: 10,
        }
        .into(),
        SessionResyncRequest { known_channel: 0 }.into(),
        RouteRefused {
            flow: flow4,
            reason: RefusalReason::TableFull,
        }
        .into(),
        AffinityAllotmentRequest {
            request: AllotmentRequest {
                request_id: 79,
                vip: vip4,
                protocol: Protocol::Tcp,
                info: "shop".into(),
                scheme: AllotmentScheme::Percentages,
                wanted_tokens: 0,
            },
        }
        .into(),
        AffinityAllotmentResponse {
            response: AllotmentResponse {
                request_id: 79,
                vip: vip4,
                protocol: Protocol::Tcp,
                info: "shop".into(),
                allotment: Allotment::Percentages {
                    entries: vec![PercentageGrant {
                        endpoint: host4,
                        host: HostId(7),
                        basis_points: 10_000,
                    }],
                    duration_ms: 5_000,
                },
            },
            affinity_only: vec![
                AffinityOnly {
                    endpoint: host6,
                    host: HostId(8),
                    reason: AffinityOnlyReason::Draining,
                },
                AffinityOnly {
                    endpoint: host4,
                    host: HostId(9),
                    reason: AffinityOnlyReason::NoShare,
                },
            ],
        }
        .into(),
    ];
    Ok(messages)
}
