//! [`UdpEndpoint`]: one UDP socket speaking authenticated switchyard frames.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_wire::frame::MAX_UDP_PAYLOAD;
use switchyard_wire::{
    Codec, EncodeError, Envelope, HEADER_LEN, Message, Receiver, ReplayGuard, SenderId, Sequencer,
    TAG_LEN, WireError,
};
use tokio::net::UdpSocket;

use crate::counters::{RejectReason, TransportCounters};

/// Largest datagram this endpoint sends or accepts.
const MAX_DATAGRAM: usize = HEADER_LEN + MAX_UDP_PAYLOAD + TAG_LEN;

/// A sequencer starting at the current Unix time in nanoseconds, so a restarted sender's
/// sequence numbers exceed those of its previous run and receivers do not take them as
/// replays.
pub fn sequencer_from_clock() -> Sequencer {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Sequencer::new(start)
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message cannot be encoded (a value out of range or too large for a datagram).
    #[error("cannot encode {kind}: {source}")]
    Encode {
        /// The message's type name.
        kind: &'static str,
        /// The encoding error.
        source: EncodeError,
    },
    /// The socket refused the datagram.
    #[error("cannot send {kind} to {to}: {source}")]
    Io {
        /// The message's type name.
        kind: &'static str,
        /// The destination.
        to: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
}

/// One datagram taken off the socket.
#[derive(Debug)]
pub struct Received {
    /// Where it came from.
    pub from: SocketAddr,
    /// The authenticated message, or why it was rejected (already counted).
    pub result: Result<Envelope, WireError>,
}

/// A UDP socket that sends and receives authenticated switchyard messages.
///
/// Sending takes `&self` (it can be shared through an `Arc`); receiving needs `&mut self`
/// because the replay window is updated on every accepted frame.
#[derive(Debug)]
pub struct UdpEndpoint {
    socket: UdpSocket,
    codec: Codec,
    sender: SenderId,
    sequencer: Mutex<Sequencer>,
    receiver: Receiver,
    counters: Arc<TransportCounters>,
    buffer: Vec<u8>,
}

impl UdpEndpoint {
    /// Binds `addr` and speaks as `sender`. The codec's payload limit is lowered to what fits
    /// in one datagram.
    pub async fn bind(addr: SocketAddr, codec: Codec, sender: SenderId) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let codec = codec.with_max_payload(MAX_UDP_PAYLOAD);
        Ok(Self {
            socket,
            receiver: Receiver::new(codec.clone(), ReplayGuard::default()),
            codec,
            sender,
            sequencer: Mutex::new(sequencer_from_clock()),
            counters: Arc::new(TransportCounters::default()),
            buffer: vec![0; MAX_DATAGRAM + 1],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Who this endpoint speaks as.
    pub fn sender(&self) -> SenderId {
        self.sender
    }

    /// The endpoint's counters (shared: keep the `Arc` for an API or metrics).
    pub fn counters(&self) -> &Arc<TransportCounters> {
        &self.counters
    }

    /// Seals `message` with a fresh sequence number and sends it to `to`.
    pub async fn send(&self, to: SocketAddr, message: &Message) -> Result<(), SendError> {
        let kind = message.kind().name();
        let sequence = match self.sequencer.lock() {
            Ok(mut s) => s.next_sequence(),
            // A poisoned lock only means another sender panicked mid-increment; the counter
            // itself is still a valid u64, so keep counting from it.
            Err(poisoned) => poisoned.into_inner().next_sequence(),
        };
        let frame = self
            .codec
            .seal(self.sender, sequence, message)
            .map_err(|source| {
                self.counters.send_error();
                SendError::Encode { kind, source }
            })?;
        match self.socket.send_to(&frame, to).await {
            Ok(_) => {
                self.counters.sent(frame.len());
                Ok(())
            }
            Err(source) => {
                self.counters.send_error();
                Err(SendError::Io { kind, to, source })
            }
        }
    }

    /// Waits for the next datagram and opens it. Rejections are counted and returned so the
    /// caller can log them; they never change any state but the counters.
    pub async fn recv(&mut self) -> io::Result<Received> {
        let (len, from) = self.socket.recv_from(&mut self.buffer).await?;
        let result = if len > MAX_DATAGRAM {
            Err(WireError::PayloadTooLong {
                len: len.saturating_sub(HEADER_LEN + TAG_LEN),
                max: MAX_UDP_PAYLOAD,
            })
        } else {
            self.receiver.accept(&self.buffer[..len])
        };
        match &result {
            Ok(_) => self.counters.received(len),
            Err(error) => self.counters.rejected(RejectReason::of(error)),
        }
        Ok(Received { from, result })
    }
}
