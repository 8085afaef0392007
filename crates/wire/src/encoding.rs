//! Primitive payload encoding: [`Reader`], [`Writer`] and the [`Wire`] trait.
//!
//! Owns the byte-level rules every message follows (all integers big-endian):
//!
//! | value          | encoding                                                   |
//! |----------------|------------------------------------------------------------|
//! | `bool`         | u8, 0 or 1                                                 |
//! | string         | u16 length + UTF-8 bytes                                   |
//! | byte blob      | u32 length + bytes                                         |
//! | list           | u32 count + elements                                       |
//! | `Option<T>`    | u8 tag 0 (none) or 1 (some) + `T`                          |
//! | enum           | u8 tag (+ variant fields)                                  |
//! | `IpAddr`       | u8 tag 4 or 6 + 4 or 16 address bytes                      |
//! | `SocketAddr`   | `IpAddr` + u16 port (IPv6 flow info and scope id are not carried) |
//!
//! Decoding is total: any input yields a value or a [`DecodeError`], never a
//! panic. Lengths and counts are checked against their limit and against the
//! remaining input *before* anything is allocated. Every tag is strict (a
//! boolean 2 is an error), so the encoding is canonical: a value decoded from
//! some bytes re-encodes to exactly those bytes. No message type is
//! recursive, so decoding needs no depth bound.
//!
//! The [`Writer`] enforces the same limits as the [`Reader`]: it records the
//! first broken invariant and [`Writer::finish`] reports it, so a peer never
//! receives a value it would reject.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{DecodeError, Problem, ValueError};

/// Upper bound on speculative list preallocation; longer lists grow as their
/// elements are actually decoded (each consumes input), so a forged count
/// cannot reserve memory the payload does not back.
const PREALLOC_LIMIT: usize = 256;

/// A value with a wire encoding.
pub trait Wire: Sized {
    /// Appends the encoding of `self`. Invariant violations are recorded in
    /// the writer (see [`Writer::finish`]).
    fn encode(&self, w: &mut Writer);
    /// Reads one value, consuming exactly its encoding.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Cursor over an untrusted payload. Every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `context` names the top-level value (usually the
    /// message type) in errors.
    pub fn new(buf: &'a [u8], context: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            context,
        }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error about `field` in this reader's context.
    pub fn error(&self, field: &'static str, problem: Problem) -> DecodeError {
        DecodeError {
            message: self.context,
            field,
            problem,
        }
    }

    /// Lifts a [`ValueError`] (from a shared validation rule) into this
    /// reader's context.
    pub fn check<T>(&self, result: Result<T, ValueError>) -> Result<T, DecodeError> {
        result.map_err(|e| self.error(e.field, e.problem))
    }

    /// Succeeds only if the whole input was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error("payload", Problem::TrailingBytes(n))),
        }
    }

    /// Consumes `n` raw bytes.
    pub fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(self.error(
                field,
                Problem::Truncated {
                    needed: n,
                    remaining,
                },
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        // `take` returned exactly N bytes, so the lengths match.
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    /// Reads a u8.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// Reads a boolean (0 or 1).
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(self.error(field, Problem::InvalidTag(tag))),
        }
    }

    /// Reads a string of at most `max` bytes.
    pub fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(self.too_long(field, len, max));
        }
        let bytes = self.take(field, len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.error(field, Problem::InvalidUtf8)),
        }
    }

    /// Reads a byte blob of at most `max` bytes.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)?;
        // A length that does not fit usize is certainly longer than the input.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(self.too_long(field, len, max));
        }
        Ok(self.take(field, len)?.to_vec())
    }

    fn too_long(&self, field: &'static str, len: usize, max: usize) -> DecodeError {
        self.error(
            field,
            Problem::TooLong {
                len: len as u64,
                max: max as u64,
            },
        )
    }

    /// Reads an IP address.
    pub fn ip(&mut self, field: &'static str) -> Result<IpAddr, DecodeError> {
        match self.u8(field)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?))),
            tag => Err(self.error(field, Problem::InvalidTag(tag))),
        }
    }

    /// Reads a socket address (IP address and port).
    pub fn socket_addr(&mut self, field: &'static str) -> Result<SocketAddr, DecodeError> {
        let ip = self.ip(field)?;
        let port = self.u16(field)?;
        Ok(SocketAddr::new(ip, port))
    }

    /// Reads an optional value.
    pub fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(field)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a list of at most `max` elements.
    pub fn list<T>(
        &mut self,
        field: &'static str,
        max: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = usize::try_from(self.u32(field)?).unwrap_or(usize::MAX);
        if count > max {
            return Err(self.error(
                field,
                Problem::TooMany {
                    count: count as u64,
                    max: max as u64,
                },
            ));
        }
        // Every element encodes to at least one byte.
        let remaining = self.remaining();
        if count > remaining {
            return Err(self.error(
                field,
                Problem::Truncated {
                    needed: count,
                    remaining,
                },
            ));
        }
        let mut items = Vec::with_capacity(count.min(PREALLOC_LIMIT));
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    /// Reads a list of [`Wire`] values.
    pub fn list_of<T: Wire>(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Vec<T>, DecodeError> {
        self.list(field, max, T::decode)
    }
}

/// Payload builder. Records the first invariant violation instead of
/// panicking; [`Writer::finish`] reports it.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    error: Option<ValueError>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that appends to `buf` (lets callers reuse allocations).
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf, error: None }
    }

    /// Bytes written so far (including any initial buffer content).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Records an invariant violation (the first one wins).
    pub fn fail(&mut self, field: &'static str, problem: Problem) {
        if self.error.is_none() {
            self.error = Some(ValueError::new(field, problem));
        }
    }

    /// Records the error of a shared validation rule, if any.
    pub fn check(&mut self, result: Result<(), ValueError>) {
        if let Err(e) = result
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    /// The bytes, or the first invariant violation.
    pub fn finish(self) -> Result<Vec<u8>, ValueError> {
        match self.error {
            None => Ok(self.buf),
            Some(e) => Err(e),
        }
    }

    /// The bytes and the first violation, if any (lets callers restore a
    /// reused buffer after a failure).
    pub(crate) fn into_parts(self) -> (Vec<u8>, Option<ValueError>) {
        (self.buf, self.error)
    }

    /// Writes raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes a u8.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Writes a big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.raw(&v.to_be_bytes());
    }

    /// Writes a big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }

    /// Writes a big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }

    /// Writes a boolean.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// Writes a string of at most `max` bytes (`max` itself is capped by the
    /// u16 length prefix).
    pub fn string(&mut self, field: &'static str, s: &str, max: usize) {
        let max = max.min(usize::from(u16::MAX));
        match u16::try_from(s.len()) {
            Ok(len) if s.len() <= max => {
                self.u16(len);
                self.raw(s.as_bytes());
            }
            _ => self.fail(field, too_long(s.len(), max)),
        }
    }

    /// Writes a byte blob of at most `max` bytes (capped by the u32 prefix).
    pub fn blob(&mut self, field: &'static str, bytes: &[u8], max: usize) {
        match u32::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= max => {
                self.u32(len);
                self.raw(bytes);
            }
            _ => self.fail(field, too_long(bytes.len(), max)),
        }
    }

    /// Writes an IP address.
    pub fn ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.raw(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.raw(&v6.octets());
            }
        }
    }

    /// Writes a socket address. IPv6 flow info and scope id are dropped.
    pub fn socket_addr(&mut self, addr: &SocketAddr) {
        self.ip(&addr.ip());
        self.u16(addr.port());
    }

    /// Writes an optional value.
    pub fn option<T>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match value {
            None => self.bool(false),
            Some(v) => {
                self.bool(true);
                write(self, v);
            }
        }
    }

    /// Writes a list of at most `max` elements.
    pub fn list<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        max: usize,
        mut write: impl FnMut(&mut Self, &T),
    ) {
        match u32::try_from(items.len()) {
            Ok(count) if items.len() <= max => {
                self.u32(count);
                for item in items {
                    write(self, item);
                }
            }
            _ => self.fail(
                field,
                Problem::TooMany {
                    count: items.len() as u64,
                    max: max as u64,
                },
            ),
        }
    }

    /// Writes a list of [`Wire`] values.
    pub fn list_of<T: Wire>(&mut self, field: &'static str, items: &[T], max: usize) {
        self.list(field, items, max, |w, item| item.encode(w));
    }
}

fn too_long(len: usize, max: usize) -> Problem {
    Problem::TooLong {
        len: len as u64,
        max: max as u64,
    }
}

/// Defines a field-less enum encoded as a u8 tag, with `tag`, `from_tag`,
/// `ALL` and a [`Wire`] impl that rejects unknown tags.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $tag:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in tag order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The variant's wire tag.
            pub const fn tag(self) -> u8 {
                match self {
                    $(Self::$variant => $tag),+
                }
            }

            /// The variant with wire tag `tag`, if any.
            pub const fn from_tag(tag: u8) -> Option<Self> {
                match tag {
                    $($tag => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::encoding::Wire for $name {
            fn encode(&self, w: &mut $crate::encoding::Writer) {
                w.u8(self.tag());
            }

            fn decode(
                r: &mut $crate::encoding::Reader<'_>,
            ) -> Result<Self, $crate::error::DecodeError> {
                let tag = r.u8(stringify!($name))?;
                Self::from_tag(tag).ok_or_else(|| {
                    r.error(stringify!($name), $crate::error::Problem::InvalidTag(tag))
                })
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0x1234);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.bool(true);
        w.string("s", "héllo", 16);
        w.blob("b", &[1, 2, 3], 16);
        w.socket_addr(&"[2001:db8::1]:443".parse().unwrap());
        w.socket_addr(&"192.0.2.1:80".parse().unwrap());
        w.option(Some(&5u32), |w, v| w.u32(*v));
        w.list("l", &[1u16, 2, 3], 3, |w, v| w.u16(*v));
        let bytes = w.finish().unwrap();

        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("a").unwrap(), 0x1234);
        assert_eq!(r.u32("a").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("a").unwrap(), u64::MAX - 1);
        assert!(r.bool("a").unwrap());
        assert_eq!(r.string("s", 16).unwrap(), "héllo");
        assert_eq!(r.blob("b", 16).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            r.socket_addr("x").unwrap(),
            "[2001:db8::1]:443".parse().unwrap()
        );
        assert_eq!(r.socket_addr("x").unwrap(), "192.0.2.1:80".parse().unwrap());
        assert_eq!(r.option("o", |r| r.u32("v")).unwrap(), Some(5));
        assert_eq!(r.list("l", 3, |r| r.u16("v")).unwrap(), vec![1, 2, 3]);
        r.finish().unwrap();
    }

    #[test]
    fn strict_tags() {
        let mut r = Reader::new(&[2], "test");
        assert_eq!(r.bool("flag").unwrap_err().problem, Problem::InvalidTag(2));
        let mut r = Reader::new(&[5, 0, 0, 0, 0], "test");
        assert_eq!(r.ip("addr").unwrap_err().problem, Problem::InvalidTag(5));
    }

    #[test]
    fn limits_checked_before_allocation() {
        // A count of 4 billion with four bytes of input left.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], "test");
        let err = r.list("items", usize::MAX, |r| r.u8("x")).unwrap_err();
        assert!(matches!(err.problem, Problem::Truncated { .. }));

        let mut r = Reader::new(&[0, 0, 0, 9], "test");
        let err = r.list("items", 8, |r| r.u8("x")).unwrap_err();
        assert_eq!(err.problem, Problem::TooMany { count: 9, max: 8 });

        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff], "test");
        let err = r.blob("blob", 100).unwrap_err();
        assert!(matches!(err.problem, Problem::TooLong { max: 100, .. }));

        let mut r = Reader::new(&[0, 3, 0xff, 0xfe, 0xfd], "test");
        assert_eq!(r.string("s", 10).unwrap_err().problem, Problem::InvalidUtf8);
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut r = Reader::new(&[1, 2], "Goodbye");
        r.u8("x").unwrap();
        let err = r.finish().unwrap_err();
        assert_eq!(err.problem, Problem::TrailingBytes(1));
        assert_eq!(
            err.to_string(),
            "malformed Goodbye payload: payload: 1 unexpected bytes after the message"
        );
    }

    #[test]
    fn writer_records_first_violation() {
        let mut w = Writer::new();
        w.string("first", "toolong", 3);
        w.blob("second", &[0; 10], 2);
        let err = w.finish().unwrap_err();
        assert_eq!(err.field, "first");
        assert_eq!(err.problem, Problem::TooLong { len: 7, max: 3 });
    }
}
