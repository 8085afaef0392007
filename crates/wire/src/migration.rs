//! Connection migration protocol (message types `0x6_`, spec FIGS. 32 to 37).
//!
//! After a classifier has accepted a TCP connection and peeked at its data,
//! it moves the connection to the chosen host: [`MigrateConnection`] carries
//! the `TCP_REPAIR`-style state needed to recreate the socket (sequence
//! numbers, negotiated options, windows and queued bytes) plus the bytes the
//! classifier already consumed. The target answers [`MigrateAck`] or
//! [`MigrateNack`], and later reports the end of the migrated connection
//! with [`MigratedClosed`] so the origin can clean up its state.

use std::net::SocketAddr;

use crate::encoding::{Reader, Wire, Writer, wire_enum};
use crate::error::{DecodeError, Problem, ValueError};
use crate::frame::MAX_PAYLOAD;
use crate::types::{AppId, check_same_family};

/// Largest TCP window scale shift (RFC 7323 §2.3).
pub const MAX_WINDOW_SCALE: u8 = 14;
/// Maximum length of a queue or consumed-bytes blob.
pub const MAX_QUEUE_LEN: usize = MAX_PAYLOAD;
/// Maximum length of [`MigrateNack::detail`].
pub const MAX_NACK_DETAIL_LEN: usize = 1024;

const OPT_SACK: u8 = 1;
const OPT_TIMESTAMPS: u8 = 2;
const OPT_WINDOW_SCALING: u8 = 4;
const OPT_ALL: u8 = OPT_SACK | OPT_TIMESTAMPS | OPT_WINDOW_SCALING;

/// Moves a TCP connection to the receiving host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConnection {
    /// Correlates the answer and later notifications.
    pub migration_id: u64,
    /// The connection state to restore.
    pub state: TcpConnectionState,
    /// Flow id if subsequent packets will be tunneled (FIG. 38).
    pub flow_id: Option<u32>,
    /// The application the connection is for, if known.
    pub app: Option<AppId>,
}

/// Everything needed to recreate a TCP socket with `TCP_REPAIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnectionState {
    /// Local (VIP side) address and port.
    pub local: SocketAddr,
    /// Remote (client) address and port; same family as `local`.
    pub remote: SocketAddr,
    /// Next sequence number to send (`write_seq`).
    pub send_seq: u32,
    /// Next sequence number expected (`rcv_nxt`).
    pub recv_seq: u32,
    /// Clamped maximum segment size.
    pub mss_clamp: u16,
    /// Options negotiated in the handshake.
    pub options: TcpOptions,
    /// Send window scale, at most [`MAX_WINDOW_SCALE`].
    pub snd_wscale: u8,
    /// Receive window scale, at most [`MAX_WINDOW_SCALE`].
    pub rcv_wscale: u8,
    /// Timestamp clock value.
    pub timestamp: u32,
    /// Window state (`TCP_REPAIR_WINDOW`), if captured.
    pub window: Option<TcpWindow>,
    /// Received bytes not yet read by an application.
    pub recv_queue: Vec<u8>,
    /// Bytes written but not yet acknowledged.
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never sent.
    pub unsent_len: u32,
    /// Bytes the classifier already read from the client; the target
    /// application must see them first.
    pub consumed: Vec<u8>,
}

/// TCP options negotiated in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpOptions {
    /// Selective acknowledgements.
    pub sack: bool,
    /// Timestamps.
    pub timestamps: bool,
    /// Window scaling.
    pub window_scaling: bool,
}

/// Window state as in Linux `struct tcp_repair_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpWindow {
    /// Segment sequence number used for the last window update.
    pub snd_wl1: u32,
    /// Send window.
    pub snd_wnd: u32,
    /// Largest window ever advertised by the peer.
    pub max_window: u32,
    /// Receive window.
    pub rcv_wnd: u32,
    /// `rcv_nxt` at the last window update.
    pub rcv_wup: u32,
}

/// The target restored the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateAck {
    /// The migration.
    pub migration_id: u64,
}

/// The target could not restore the connection; the origin resets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateNack {
    /// The migration.
    pub migration_id: u64,
    /// Why.
    pub reason: NackReason,
    /// Human-readable detail for logs.
    pub detail: String,
}

wire_enum! {
    /// Why a migration failed.
    pub enum NackReason {
        /// Nothing listens on the local address.
        NoListener = 0,
        /// The kernel refused the restored state.
        RestoreFailed = 1,
        /// The application did not accept the connection.
        Refused = 2,
        /// Something else; see the detail.
        Other = 3,
    }
}

/// A migrated connection ended on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigratedClosed {
    /// The migration.
    pub migration_id: u64,
}

impl TcpConnectionState {
    fn validate(&self) -> Result<(), ValueError> {
        check_same_family("TcpConnectionState.remote", &self.local, &self.remote)?;
        let max = MAX_WINDOW_SCALE.into();
        ValueError::check_range(
            "TcpConnectionState.snd_wscale",
            self.snd_wscale.into(),
            0,
            max,
        )?;
        ValueError::check_range(
            "TcpConnectionState.rcv_wscale",
            self.rcv_wscale.into(),
            0,
            max,
        )?;
        ValueError::check_range(
            "TcpConnectionState.unsent_len",
            self.unsent_len.into(),
            0,
            self.send_queue.len() as u64,
        )
    }
}

impl Wire for TcpOptions {
    fn encode(&self, w: &mut Writer) {
        let mut bits = 0;
        for (on, bit) in [
            (self.sack, OPT_SACK),
            (self.timestamps, OPT_TIMESTAMPS),
            (self.window_scaling, OPT_WINDOW_SCALING),
        ] {
            if on {
                bits |= bit;
            }
        }
        w.u8(bits);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bits = r.u8("TcpOptions")?;
        if bits & !OPT_ALL != 0 {
            return Err(r.error(
                "TcpOptions",
                Problem::OutOfRange {
                    value: bits.into(),
                    min: 0,
                    max: OPT_ALL.into(),
                },
            ));
        }
        Ok(Self {
            sack: bits & OPT_SACK != 0,
            timestamps: bits & OPT_TIMESTAMPS != 0,
            window_scaling: bits & OPT_WINDOW_SCALING != 0,
        })
    }
}

impl Wire for TcpWindow {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.snd_wl1);
        w.u32(self.snd_wnd);
        w.u32(self.max_window);
        w.u32(self.rcv_wnd);
        w.u32(self.rcv_wup);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            snd_wl1: r.u32("TcpWindow.snd_wl1")?,
            snd_wnd: r.u32("TcpWindow.snd_wnd")?,
            max_window: r.u32("TcpWindow.max_window")?,
            rcv_wnd: r.u32("TcpWindow.rcv_wnd")?,
            rcv_wup: r.u32("TcpWindow.rcv_wup")?,
        })
    }
}

impl Wire for TcpConnectionState {
    fn encode(&self, w: &mut Writer) {
        w.check(self.validate());
        w.socket_addr(&self.local);
        w.socket_addr(&self.remote);
        w.u32(self.send_seq);
        w.u32(self.recv_seq);
        w.u16(self.mss_clamp);
        self.options.encode(w);
        w.u8(self.snd_wscale);
        w.u8(self.rcv_wscale);
        w.u32(self.timestamp);
        w.option(self.window.as_ref(), |w, window| window.encode(w));
        w.blob(
            "TcpConnectionState.recv_queue",
            &self.recv_queue,
            MAX_QUEUE_LEN,
        );
        w.blob(
            "TcpConnectionState.send_queue",
            &self.send_queue,
            MAX_QUEUE_LEN,
        );
        w.u32(self.unsent_len);
        w.blob("TcpConnectionState.consumed", &self.consumed, MAX_QUEUE_LEN);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let state = Self {
            local: r.socket_addr("TcpConnectionState.local")?,
            remote: r.socket_addr("TcpConnectionState.remote")?,
            send_seq: r.u32("TcpConnectionState.send_seq")?,
            recv_seq: r.u32("TcpConnectionState.recv_seq")?,
            mss_clamp: r.u16("TcpConnectionState.mss_clamp")?,
            options: TcpOptions::decode(r)?,
            snd_wscale: r.u8("TcpConnectionState.snd_wscale")?,
            rcv_wscale: r.u8("TcpConnectionState.rcv_wscale")?,
            timestamp: r.u32("TcpConnectionState.timestamp")?,
            window: r.option("TcpConnectionState.window", TcpWindow::decode)?,
            recv_queue: r.blob("TcpConnectionState.recv_queue", MAX_QUEUE_LEN)?,
            send_queue: r.blob("TcpConnectionState.send_queue", MAX_QUEUE_LEN)?,
            unsent_len: r.u32("TcpConnectionState.unsent_len")?,
            consumed: r.blob("TcpConnectionState.consumed", MAX_QUEUE_LEN)?,
        };
        r.check(state.validate())?;
        Ok(state)
    }
}

impl Wire for MigrateConnection {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.migration_id);
        self.state.encode(w);
        w.option(self.flow_id.as_ref(), |w, id| w.u32(*id));
        w.option(self.app.as_ref(), |w, app| app.encode(w));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            migration_id: r.u64("MigrateConnection.migration_id")?,
            state: TcpConnectionState::decode(r)?,
            flow_id: r.option("MigrateConnection.flow_id", |r| {
                r.u32("MigrateConnection.flow_id")
            })?,
            app: r.option("MigrateConnection.app", AppId::decode)?,
        })
    }
}

impl Wire for MigrateAck {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.migration_id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            migration_id: r.u64("MigrateAck.migration_id")?,
        })
    }
}

impl Wire for MigrateNack {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.migration_id);
        self.reason.encode(w);
        w.string("MigrateNack.detail", &self.detail, MAX_NACK_DETAIL_LEN);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            migration_id: r.u64("MigrateNack.migration_id")?,
            reason: NackReason::decode(r)?,
            detail: r.string("MigrateNack.detail", MAX_NACK_DETAIL_LEN)?,
        })
    }
}

impl Wire for MigratedClosed {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.migration_id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            migration_id: r.u64("MigratedClosed.migration_id")?,
        })
    }
}
