//! Addresses with prefix lengths ([`Cidr`]) and the guard that keeps every address and route a
//! testbed installs inside the test ranges: IPv4 198.18.0.0/15 (RFC 2544 benchmarking) and IPv6
//! unique-local fc00::/7. Owns parsing and range checks only; nothing here touches the kernel.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The IPv4 range all testbed addresses come from: 198.18.0.0/15.
pub const TEST_NET_V4: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
    prefix_len: 15,
};

/// The IPv6 prefix the [`Topology`](crate::Topology) uses: fd53:7900::/32.
pub const TEST_NET_V6: Cidr = Cidr {
    addr: IpAddr::V6(Ipv6Addr::new(0xfd53, 0x7900, 0, 0, 0, 0, 0, 0)),
    prefix_len: 32,
};

/// Any IPv6 address a testbed accepts lies in the unique-local range fc00::/7.
const ULA: Cidr = Cidr {
    addr: IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)),
    prefix_len: 7,
};

/// An IP address with a prefix length, e.g. `198.18.1.2/24` (interface address) or
/// `198.19.0.0/16` (route destination).
///
/// ```
/// use switchyard_testbed::Cidr;
/// let c: Cidr = "198.18.1.2/24".parse().unwrap();
/// assert_eq!(c.network().to_string(), "198.18.1.0/24");
/// assert!(c.contains("198.18.1.200".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// An address with a prefix length; errors if the length exceeds 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: impl Into<IpAddr>, prefix_len: u8) -> Result<Self> {
        let addr = addr.into();
        if prefix_len > max_len(addr) {
            return Err(Error::Invalid(format!(
                "prefix length {prefix_len} too long for {addr}"
            )));
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// A host prefix: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: impl Into<IpAddr>) -> Self {
        let addr = addr.into();
        Cidr {
            addr,
            prefix_len: max_len(addr),
        }
    }

    /// The address as written (not masked).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network: the address with its host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix_len))),
        };
        Cidr {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies inside this prefix (always false across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask32(self.prefix_len);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask128(self.prefix_len);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// Whether the whole prefix `other` lies inside this one.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }

    /// Errors unless the whole prefix lies in 198.18.0.0/15 or fc00::/7.
    pub(crate) fn check_test_range(&self) -> Result<()> {
        if TEST_NET_V4.covers(self) || ULA.covers(self) {
            Ok(())
        } else {
            Err(Error::OutsideTestRange(self.to_string()))
        }
    }
}

/// Errors unless `ip` may be used as a next hop: inside the test ranges, or IPv6 link-local.
pub(crate) fn check_next_hop(ip: IpAddr) -> Result<()> {
    let link_local = Cidr {
        addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        prefix_len: 10,
    };
    if link_local.contains(ip) {
        return Ok(());
    }
    Cidr::host(ip).check_test_range()
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    /// `ADDR/LEN`, or a bare address meaning a host prefix.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("not an address or CIDR: {s:?}"));
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
                let len: u8 = l.trim().parse().map_err(|_| bad())?;
                Cidr::new(addr, len)
            }
            None => Ok(Cidr::host(s.trim().parse::<IpAddr>().map_err(|_| bad())?)),
        }
    }
}

/// Anything that names a prefix: `"198.18.1.2/24"`, a [`Cidr`], or a bare address (host prefix).
/// Lets the namespace methods take whichever is at hand.
pub trait ToCidr {
    /// Converts, or explains why not.
    fn to_cidr(&self) -> Result<Cidr>;
}

impl ToCidr for Cidr {
    fn to_cidr(&self) -> Result<Cidr> {
        Ok(*self)
    }
}

impl ToCidr for str {
    fn to_cidr(&self) -> Result<Cidr> {
        self.parse()
    }
}

impl ToCidr for String {
    fn to_cidr(&self) -> Result<Cidr> {
        self.parse()
    }
}

impl ToCidr for IpAddr {
    fn to_cidr(&self) -> Result<Cidr> {
        Ok(Cidr::host(*self))
    }
}

impl ToCidr for Ipv4Addr {
    fn to_cidr(&self) -> Result<Cidr> {
        Ok(Cidr::host(*self))
    }
}

impl ToCidr for Ipv6Addr {
    fn to_cidr(&self) -> Result<Cidr> {
        Ok(Cidr::host(*self))
    }
}

impl<T: ToCidr + ?Sized> ToCidr for &T {
    fn to_cidr(&self) -> Result<Cidr> {
        (**self).to_cidr()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "198.18.1.2/24".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.1.2/24");
        assert_eq!(c.network().to_string(), "198.18.1.0/24");
        let v6: Cidr = "fd53:7900:0:1::2/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd53:7900:0:1::/64");
        assert_eq!("198.19.0.10".parse::<Cidr>().unwrap().prefix_len(), 32);
        assert!("198.18.1.2/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn range_guard() {
        for ok in [
            "198.18.0.0/15",
            "198.19.0.10/32",
            "fd53:7900::/32",
            "fc00::1/128",
        ] {
            assert!(
                ok.parse::<Cidr>().unwrap().check_test_range().is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "0.0.0.0/0",
            "198.18.0.0/14",
            "10.0.0.1/8",
            "::/0",
            "2001:db8::1/64",
        ] {
            assert!(
                bad.parse::<Cidr>().unwrap().check_test_range().is_err(),
                "{bad}"
            );
        }
        assert!(check_next_hop("fe80::1".parse().unwrap()).is_ok());
        assert!(check_next_hop("192.168.0.1".parse().unwrap()).is_err());
    }
}
