//! Test frames and checksum checks, shared by the forwarder's tests and benchmarks and by the
//! classifier's tests: [`FrameSpec`] builds Ethernet/IPv4|IPv6/TCP|UDP frames with correct
//! checksums (IPv4 options, UDP zero checksums and other variations on request), and
//! [`verify_checksums`] recomputes every checksum of a frame from scratch — independently of
//! the data plane's incremental updates — so a rewrite can be checked by full recomputation.
//!
//! Plain safe Rust; no root needed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::flow::Protocol;

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Ethernet header length.
pub const ETH_LEN: usize = 14;

/// A frame to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// TCP or UDP.
    pub proto: Protocol,
    /// Source endpoint (its family decides IPv4 or IPv6).
    pub src: SocketAddr,
    /// Destination endpoint.
    pub dst: SocketAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// TCP flags (ignored for UDP).
    pub tcp_flags: u8,
    /// Transport payload.
    pub payload: Vec<u8>,
    /// IPv4 options (padded to a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    /// IPv4 identification.
    pub ip_id: u16,
    /// IPv6 flow label (20 bits).
    pub flow_label: u32,
    /// Send a UDP checksum of zero ("no checksum"; meaningful for IPv4 only).
    pub udp_zero_checksum: bool,
}

impl FrameSpec {
    /// A TCP segment from `src` to `dst` (SYN, TTL 64, no payload).
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> FrameSpec {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            proto: Protocol::Tcp,
            src,
            dst,
            ttl: 64,
            tcp_flags: tcp_flags::SYN,
            payload: Vec::new(),
            ipv4_options: Vec::new(),
            ip_id: 0x1234,
            flow_label: 0x5_4321,
            udp_zero_checksum: false,
        }
    }

    /// A UDP datagram from `src` to `dst` (TTL 64, 5 bytes of payload).
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> FrameSpec {
        FrameSpec {
            proto: Protocol::Udp,
            payload: b"hello".to_vec(),
            ..FrameSpec::tcp(src, dst)
        }
    }

    /// With these MAC addresses.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// With these endpoints.
    pub fn endpoints(mut self, src: SocketAddr, dst: SocketAddr) -> Self {
        self.src = src;
        self.dst = dst;
        self
    }

    /// With this TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// With these TCP flags.
    pub fn flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    /// With this payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// With these IPv4 options.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    /// With a zero UDP checksum.
    pub fn udp_zero_checksum(mut self) -> Self {
        self.udp_zero_checksum = true;
        self
    }

    fn l4(&self, src: &[u8], dst: &[u8]) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.src.port().to_be_bytes());
        l4.extend_from_slice(&self.dst.port().to_be_bytes());
        let csum_at = match self.proto {
            Protocol::Tcp => {
                l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                let ack = if self.tcp_flags & tcp_flags::ACK != 0 {
                    0x0a0b_0c0du32
                } else {
                    0
                };
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push(5 << 4); // data offset 5
                l4.push(self.tcp_flags);
                l4.extend_from_slice(&64240u16.to_be_bytes()); // window
                l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                16
            }
            Protocol::Udp => {
                let len = u16::try_from(8 + self.payload.len()).unwrap_or(u16::MAX);
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                6
            }
        };
        l4.extend_from_slice(&self.payload);
        if !(self.proto == Protocol::Udp && self.udp_zero_checksum) {
            let len = u32::try_from(l4.len()).unwrap_or(u32::MAX);
            let mut c = transport_checksum(src, dst, self.proto.number(), len, &l4);
            if c == 0 && self.proto == Protocol::Udp {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        l4
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let l4 = self.l4(&s.octets(), &d.octets());
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0); // end of options list
                }
                let ihl = 20 + opts.len();
                let tot = u16::try_from(ihl + l4.len()).unwrap_or(u16::MAX);
                let mut ip = Vec::with_capacity(ihl);
                ip.push(0x40 | u8::try_from(ihl / 4).unwrap_or(15));
                ip.push(0); // tos
                ip.extend_from_slice(&tot.to_be_bytes());
                ip.extend_from_slice(&self.ip_id.to_be_bytes());
                ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
                ip.push(self.ttl);
                ip.push(self.proto.number());
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&opts);
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                f.extend_from_slice(&l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let l4 = self.l4(&s.octets(), &d.octets());
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let first = 0x6000_0000u32 | (self.flow_label & 0x000f_ffff);
                f.extend_from_slice(&first.to_be_bytes());
                let plen = u16::try_from(l4.len()).unwrap_or(u16::MAX);
                f.extend_from_slice(&plen.to_be_bytes());
                f.push(self.proto.number());
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&l4);
            }
            // Mixed families cannot be expressed; build IPv4 from the mapped form is not
            // wanted either: produce an Ethernet frame with no IP payload.
            _ => f.extend_from_slice(&0x88b5u16.to_be_bytes()),
        }
        f
    }
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`, computed plainly: big-endian
/// 16-bit words, a wide accumulator, one fold at the end.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// The TCP/UDP checksum over the pseudo-header (`src`, `dst`: 4 or 16 bytes) and `segment`.
pub fn transport_checksum(src: &[u8], dst: &[u8], proto: u8, len: u32, segment: &[u8]) -> u16 {
    if src.len() == 4 {
        let len16 = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        checksum(&[src, dst, &[0, proto], &len16, segment])
    } else {
        checksum(&[src, dst, &len.to_be_bytes(), &[0, 0, 0, proto], segment])
    }
}

/// Why a frame's checksums do not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    /// The frame is not Ethernet + IPv4/IPv6 + TCP/UDP, or is truncated.
    NotParsable(&'static str),
    /// The IPv4 header checksum is wrong (found, correct).
    Ipv4Header(u16, u16),
    /// The TCP/UDP checksum is wrong (found, correct).
    Transport(u16, u16),
}

impl fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChecksumError::NotParsable(why) => write!(f, "not parsable: {why}"),
            ChecksumError::Ipv4Header(found, want) => {
                write!(
                    f,
                    "IPv4 header checksum {found:#06x}, should be {want:#06x}"
                )
            }
            ChecksumError::Transport(found, want) => {
                write!(f, "TCP/UDP checksum {found:#06x}, should be {want:#06x}")
            }
        }
    }
}

impl std::error::Error for ChecksumError {}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Recomputes the IPv4 header checksum and the TCP/UDP checksum of an Ethernet frame from
/// scratch and compares them with the frame's. A zero UDP checksum over IPv4 ("none") passes.
pub fn verify_checksums(frame: &[u8]) -> Result<(), ChecksumError> {
    let ethertype = be16(frame, 12).ok_or(ChecksumError::NotParsable("short Ethernet"))?;
    let ip = frame
        .get(ETH_LEN..)
        .ok_or(ChecksumError::NotParsable("short"))?;
    let (src, dst, proto, l4): (&[u8], &[u8], u8, &[u8]) = match ethertype {
        0x0800 => {
            let ihl =
                usize::from(ip.first().ok_or(ChecksumError::NotParsable("no IPv4"))? & 0x0f) * 4;
            let tot = usize::from(be16(ip, 2).ok_or(ChecksumError::NotParsable("short IPv4"))?);
            if ihl < 20 || tot < ihl || ip.len() < tot {
                return Err(ChecksumError::NotParsable("bad IPv4 lengths"));
            }
            let mut hdr = ip[..ihl].to_vec();
            let found = be16(&hdr, 10).unwrap_or(0);
            hdr[10] = 0;
            hdr[11] = 0;
            let want = checksum(&[&hdr]);
            if found != want {
                return Err(ChecksumError::Ipv4Header(found, want));
            }
            (&ip[12..16], &ip[16..20], ip[9], &ip[ihl..tot])
        }
        0x86dd => {
            if ip.len() < 40 {
                return Err(ChecksumError::NotParsable("short IPv6"));
            }
            let plen = usize::from(be16(ip, 4).unwrap_or(0));
            let l4 = ip
                .get(40..40 + plen)
                .ok_or(ChecksumError::NotParsable("short IPv6 payload"))?;
            (&ip[8..24], &ip[24..40], ip[6], l4)
        }
        _ => return Err(ChecksumError::NotParsable("not IP")),
    };
    let csum_at = match proto {
        6 => 16,
        17 => 6,
        _ => return Err(ChecksumError::NotParsable("not TCP/UDP")),
    };
    let found = be16(l4, csum_at).ok_or(ChecksumError::NotParsable("short L4"))?;
    if proto == 17 && found == 0 && src.len() == 4 {
        return Ok(());
    }
    let mut seg = l4.to_vec();
    seg[csum_at] = 0;
    seg[csum_at + 1] = 0;
    let len = u32::try_from(seg.len()).unwrap_or(u32::MAX);
    let mut want = transport_checksum(src, dst, proto, len, &seg);
    if proto == 17 && want == 0 {
        want = 0xffff;
    }
    if found != want {
        return Err(ChecksumError::Transport(found, want));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (before complement).
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
    }

    #[test]
    fn built_frames_verify_and_corruption_is_caught() {
        for spec in [
            FrameSpec::tcp(sa("198.18.1.2:40000"), sa("198.19.0.10:80")),
            FrameSpec::udp(sa("198.18.1.2:40000"), sa("198.19.0.10:53")),
            FrameSpec::tcp(sa("[fd53:7900::2]:40000"), sa("[fd53:7900:ff::10]:80")).payload(b"x"),
            FrameSpec::udp(sa("[fd53:7900::2]:40000"), sa("[fd53:7900:ff::10]:53")),
            FrameSpec::tcp(sa("198.18.1.2:1"), sa("198.19.0.10:80"))
                .ipv4_options(&[1, 1, 1, 1, 7, 3, 4]),
        ] {
            let mut f = spec.build();
            assert_eq!(verify_checksums(&f), Ok(()), "{spec:?}");
            let last = f.len() - 1;
            f[last] ^= 0x40;
            if spec.payload.is_empty() {
                // Flip a port byte instead.
                f[last] ^= 0x40;
                let at = f.len() - 20 + 1;
                f[at] ^= 1;
            }
            assert!(
                matches!(verify_checksums(&f), Err(ChecksumError::Transport(..))),
                "{spec:?}"
            );
        }
        let zero = FrameSpec::udp(sa("198.18.1.2:1"), sa("198.19.0.10:53"))
            .udp_zero_checksum()
            .build();
        assert_eq!(verify_checksums(&zero), Ok(()));
        let mut bad_ip = FrameSpec::tcp(sa("198.18.1.2:1"), sa("198.19.0.10:80")).build();
        bad_ip[ETH_LEN + 8] = 3; // TTL without fixing the checksum
        assert!(matches!(
            verify_checksums(&bad_ip),
            Err(ChecksumError::Ipv4Header(..))
        ));
    }
}
