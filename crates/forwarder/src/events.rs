//! Reading the data plane's ring buffer: misses (a VIP packet with no route, carrying the frame —
//! the "default route" to the classifier) and final packets (FIN/RST of routed flows).
//!
//! [`EventReader`] is a thin blocking reader: [`EventReader::wait`] polls the ring buffer's file
//! descriptor, [`EventReader::try_next`] decodes one record. The agent may instead register the
//! descriptor ([`EventReader::as_fd`]) with its async runtime (tokio `AsyncFd`).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::counters::Hook;
use crate::error::Error;
use crate::flow::{Protocol, addr_from};
use crate::layout::{
    EVENT_FINAL, EVENT_MISS, EVENT_REOPEN, EVENT_REPLY_MISS, EventHeader, FlowKey,
};

use std::net::SocketAddr;

/// A flow as seen on the wire (either direction), decoded from an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireFlow {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Source endpoint.
    pub src: SocketAddr,
    /// Destination endpoint.
    pub dst: SocketAddr,
}

impl WireFlow {
    fn from_key(k: &FlowKey) -> Option<WireFlow> {
        Some(WireFlow {
            proto: Protocol::from_number(k.proto)?,
            src: SocketAddr::new(addr_from(k.saddr, k.family)?, u16::from_be(k.sport)),
            dst: SocketAddr::new(addr_from(k.daddr, k.family)?, u16::from_be(k.dport)),
        })
    }
}

/// A packet to a VIP with no route, dropped by the data plane and handed to the classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    /// The flow (client → VIP).
    pub flow: WireFlow,
    /// The interface the packet arrived on (for reinjection).
    pub ifindex: u32,
    /// The VIP's id.
    pub vip_id: u16,
    /// Which program saw it.
    pub hook: Hook,
    /// TCP flags (0 for UDP); `0x02` alone is a SYN.
    pub tcp_flags: u8,
    /// The frame's full length; `frame` may be shorter (capture limit 1514 bytes).
    pub len: u32,
    /// The captured frame, from the Ethernet header on.
    pub frame: Vec<u8>,
    /// CLOCK_MONOTONIC nanoseconds when seen.
    pub ts_ns: u64,
}

/// A FIN or RST on a routed flow (the packet itself was forwarded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Final {
    /// The flow as seen on the wire: client → VIP, or host → NAT source/client for replies.
    pub flow: WireFlow,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// The VIP's id.
    pub vip_id: u16,
    /// Which program saw it.
    pub hook: Hook,
    /// TCP flags (FIN = 0x01, RST = 0x04).
    pub tcp_flags: u8,
    /// CLOCK_MONOTONIC nanoseconds when seen.
    pub ts_ns: u64,
}

/// One ring-buffer event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A VIP packet without a route.
    Miss(Miss),
    /// A final packet of a routed flow.
    Final(Final),
    /// A packet to one of the forwarder's NAT sources (port in range) without a route: the
    /// reply of a full-NAT flow the table could not hold (`flow` is host → NAT source,
    /// `vip_id` is 0). Dropped by the data plane, like a miss.
    ReplyMiss(Miss),
    /// A SYN without ACK on a routed flow (client → VIP): the client opens the same 4-tuple
    /// again — after an RST, or reusing its port while the route lingers. Forwarded along
    /// the route; the classifier should keep the route for the new connection.
    Reopen(Final),
}

/// Decodes one ring-buffer record; `None` for a record this version does not understand.
pub fn decode(record: &[u8]) -> Option<Event> {
    let h = EventHeader::from_bytes(record)?;
    let flow = WireFlow::from_key(&h.flow)?;
    let hook = Hook::from_raw(h.hook);
    match h.kind {
        EVENT_MISS | EVENT_REPLY_MISS => {
            let cap = usize::try_from(h.cap_len).ok()?;
            let frame = record.get(EventHeader::LEN..EventHeader::LEN.checked_add(cap)?)?;
            let miss = Miss {
                flow,
                ifindex: h.ifindex,
                vip_id: h.vip_id,
                hook,
                tcp_flags: h.tcp_flags,
                len: h.pkt_len,
                frame: frame.to_vec(),
                ts_ns: h.ts_ns,
            };
            Some(if h.kind == EVENT_MISS {
                Event::Miss(miss)
            } else {
                Event::ReplyMiss(miss)
            })
        }
        EVENT_FINAL | EVENT_REOPEN => {
            let f = Final {
                flow,
                ifindex: h.ifindex,
                vip_id: h.vip_id,
                hook,
                tcp_flags: h.tcp_flags,
                ts_ns: h.ts_ns,
            };
            Some(if h.kind == EVENT_FINAL {
                Event::Final(f)
            } else {
                Event::Reopen(f)
            })
        }
        _ => None,
    }
}

/// Reader of the `events` ring buffer. Single consumer: take it once with
/// [`crate::Dataplane::take_events`].
pub struct EventReader {
    ring: RingBuf<MapData>,
    undecodable: u64,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("undecodable", &self.undecodable)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        EventReader {
            ring,
            undecodable: 0,
        }
    }

    /// The next event, if one is queued. Records that cannot be decoded are skipped and counted
    /// ([`EventReader::undecodable`]).
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            let item = self.ring.next()?;
            match decode(&item) {
                Some(e) => return Some(e),
                None => self.undecodable += 1,
            }
        }
    }

    /// Waits until the ring buffer has data or `timeout` passes; true if data may be ready.
    pub fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::Io {
                what: "poll the event ring buffer",
                source: e.into(),
            }),
        }
    }

    /// The next event, waiting up to `timeout` for one.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_next() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait(left.min(Duration::from_millis(50)))?;
        }
    }

    /// Records skipped because they could not be decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}

impl AsFd for EventReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}
