//! Typed reading of TOML values with their locations: owns the walk over toml's spanned
//! document tree, the per-value checks that need no context (types, enum keywords, address,
//! duration and integer syntax), and the unknown-field and missing-field errors.
//!
//! Why not serde derive: serde stops at the first unknown field or type error. Reading the
//! spanned tree by hand lets one run report every such error, each at its exact position.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{Sink, choices_hint, closest, codes};
use crate::duration::{UNIT_HINT, parse_duration};

/// Byte range in the configuration text.
pub(crate) type Span = Range<usize>;

/// One field as read: absent, present but unusable (already reported), or usable.
#[derive(Debug, Clone)]
pub(crate) enum Field<T> {
    /// Not written in the file.
    Absent,
    /// Written, but wrong; an error has been reported.
    Invalid,
    /// Written and well-formed.
    Present(Spanned<T>),
}

impl<T> Field<T> {
    /// The value, if present and well-formed.
    pub(crate) fn get(&self) -> Option<&T> {
        self.spanned().map(Spanned::get_ref)
    }

    /// The value with its span, if present and well-formed.
    pub(crate) fn spanned(&self) -> Option<&Spanned<T>> {
        match self {
            Self::Present(v) => Some(v),
            Self::Absent | Self::Invalid => None,
        }
    }

    /// Whether the field was written at all (well-formed or not).
    pub(crate) fn is_written(&self) -> bool {
        !matches!(self, Self::Absent)
    }

    /// The value's span, if present and well-formed.
    pub(crate) fn span(&self) -> Option<Span> {
        self.spanned().map(Spanned::span)
    }
}

/// A value that can be read from one TOML value.
pub(crate) trait Decode: Sized {
    /// What the field expects, for type errors ("a string", "an \"IP:port\" string").
    const EXPECTED: &'static str;

    /// Reads `value`, reporting any problem at `span` under the name `field`.
    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self>;
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Reports a type mismatch.
pub(crate) fn wrong_type(
    sink: &mut Sink,
    expected: &str,
    value: &DeValue<'_>,
    span: &Span,
    field: &str,
) {
    let found = value.type_str();
    let hint = match value {
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)
            if expected.contains("string") =>
        {
            Some("put the value in double quotes".to_owned())
        }
        DeValue::String(s) if expected.contains("integer") && s.trim().parse::<i64>().is_ok() => {
            Some(format!("write the number without quotes: {}", s.trim()))
        }
        DeValue::String(s)
            if expected == "a number" && s.trim().parse::<f64>().is_ok_and(f64::is_finite) =>
        {
            Some(format!("write the number without quotes: {}", s.trim()))
        }
        DeValue::String(_) if expected.contains("boolean") => {
            Some("write true or false without quotes".to_owned())
        }
        DeValue::String(_) if expected.contains("array") => {
            Some("write a list in brackets, e.g. [\"a\", \"b\"]".to_owned())
        }
        _ => None,
    };
    sink.error(
        codes::WRONG_TYPE,
        span,
        field,
        format!("expected {expected}, found {} {found}", article(found)),
        hint,
    );
}

fn text<'v>(
    value: &'v DeValue<'_>,
    expected: &str,
    span: &Span,
    field: &str,
    sink: &mut Sink,
) -> Option<&'v str> {
    match value {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            wrong_type(sink, expected, other, span, field);
            None
        }
    }
}

impl Decode for String {
    const EXPECTED: &'static str = "a string";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        text(value, Self::EXPECTED, span, field, sink).map(str::to_owned)
    }
}

impl Decode for bool {
    const EXPECTED: &'static str = "a boolean (true or false)";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        match value {
            DeValue::Boolean(b) => Some(*b),
            other => {
                wrong_type(sink, Self::EXPECTED, other, span, field);
                None
            }
        }
    }
}

impl Decode for i64 {
    const EXPECTED: &'static str = "an integer";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        match value {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    sink.error(
                        codes::OUT_OF_RANGE,
                        span,
                        field,
                        format!("{} is too large", i.as_str()),
                        None,
                    );
                    None
                }
            },
            other => {
                wrong_type(sink, Self::EXPECTED, other, span, field);
                None
            }
        }
    }
}

impl Decode for f64 {
    const EXPECTED: &'static str = "a number";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let parsed = match value {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .map(f64::from),
            other => {
                wrong_type(sink, Self::EXPECTED, other, span, field);
                return None;
            }
        };
        match parsed {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                sink.error(
                    codes::OUT_OF_RANGE,
                    span,
                    field,
                    "expected a finite number".to_owned(),
                    Some("write a decimal number such as 0.3".to_owned()),
                );
                None
            }
        }
    }
}

impl Decode for Duration {
    const EXPECTED: &'static str = "a duration string such as \"2s\"";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let s = match value {
            DeValue::String(s) => s,
            other => {
                sink.error(
                    codes::BAD_DURATION,
                    span,
                    field,
                    format!(
                        "expected {}, found {} {}",
                        Self::EXPECTED,
                        article(other.type_str()),
                        other.type_str()
                    ),
                    Some(UNIT_HINT.to_owned()),
                );
                return None;
            }
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(message) => {
                sink.error(
                    codes::BAD_DURATION,
                    span,
                    field,
                    message,
                    Some(UNIT_HINT.to_owned()),
                );
                None
            }
        }
    }
}

impl Decode for SocketAddr {
    const EXPECTED: &'static str = "an \"IP:port\" string";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let s = text(value, Self::EXPECTED, span, field, sink)?;
        match s.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                sink.error(
                    codes::BAD_ADDRESS,
                    span,
                    field,
                    format!("\"{s}\" has port 0"),
                    Some("use a port from 1 to 65535".to_owned()),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                sink.error(
                    codes::BAD_ADDRESS,
                    span,
                    field,
                    format!("\"{s}\" is not an IP:port address"),
                    Some(socket_hint(s)),
                );
                None
            }
        }
    }
}

fn socket_hint(s: &str) -> String {
    if let Ok(ip) = s.parse::<IpAddr>() {
        // "2001:db8::1:80" parses as an IPv6 address; the operator most likely meant port 80.
        if let (IpAddr::V6(_), Some((address, port))) = (ip, s.rsplit_once(':'))
            && address.parse::<std::net::Ipv6Addr>().is_ok()
            && port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return format!(
                "IPv6 addresses go in brackets before the port: write \"[{address}]:{port}\""
            );
        }
        return format!("add a port, e.g. \"{}\"", with_port(s));
    }
    if s.matches(':').count() >= 2 && !s.starts_with('[') {
        return "write IPv6 addresses in brackets before the port, e.g. \"[2001:db8::1]:443\""
            .to_owned();
    }
    if s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains("::") {
        return "use a literal IP address, not a host name: e.g. \"192.0.2.10:80\" or \"[2001:db8::10]:80\""
            .to_owned();
    }
    "write an IPv4 or bracketed IPv6 address and a port, e.g. \"192.0.2.10:80\" or \"[2001:db8::10]:80\""
        .to_owned()
}

fn with_port(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:80")
    } else {
        format!("{ip}:80")
    }
}

impl Decode for IpAddr {
    const EXPECTED: &'static str = "an IP address string";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let s = text(value, Self::EXPECTED, span, field, sink)?;
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let hint = if s.parse::<SocketAddr>().is_ok() {
                    "write the address without a port, e.g. \"192.0.2.1\" or \"2001:db8::1\""
                } else {
                    "write an IPv4 or IPv6 address without a port, e.g. \"192.0.2.1\" or \"2001:db8::1\""
                };
                sink.error(
                    codes::BAD_ADDRESS,
                    span,
                    field,
                    format!("\"{s}\" is not an IP address"),
                    Some(hint.to_owned()),
                );
                None
            }
        }
    }
}

/// An enum written as one of a fixed set of keywords.
pub(crate) trait Keyword: Sized + Copy + 'static {
    /// What the keyword selects, for messages ("mode", "role").
    const WHAT: &'static str;
    /// Every keyword with its value.
    const ALL: &'static [(&'static str, Self)];

    /// The keyword written for `self`.
    fn keyword(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(k, _)| k)
    }
}

/// A keyword-valued field; wraps the enum so that [`Decode`] can be implemented once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kw<K>(pub(crate) K);

impl<K: Keyword> Decode for Kw<K> {
    const EXPECTED: &'static str = "a string";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let s = text(value, Self::EXPECTED, span, field, sink)?;
        if let Some((_, v)) = K::ALL.iter().find(|(k, _)| *k == s) {
            return Some(Kw(*v));
        }
        let names: Vec<&str> = K::ALL.iter().map(|(k, _)| *k).collect();
        sink.error(
            codes::BAD_VALUE,
            span,
            field,
            format!("unknown {} \"{s}\"", K::WHAT),
            Some(choices_hint(s, &format!("the {}s are", K::WHAT), &names)),
        );
        None
    }
}

impl<T: Decode> Decode for Vec<Spanned<T>> {
    const EXPECTED: &'static str = "an array";

    fn decode(value: &DeValue<'_>, span: &Span, field: &str, sink: &mut Sink) -> Option<Self> {
        let DeValue::Array(items) = value else {
            wrong_type(sink, Self::EXPECTED, value, span, field);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_span = item.span();
            match T::decode(item.get_ref(), &item_span, &format!("{field}[{i}]"), sink) {
                Some(v) => out.push(Spanned::new(item_span, v)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// One TOML table being read, with its location and field path.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a, 'i> {
    table: &'a DeTable<'i>,
    /// Span of the table header (or of the inline table), where missing fields are reported.
    pub(crate) span: Span,
    /// Field path of the table, e.g. `services[1]`; empty for the document root.
    pub(crate) path: String,
}

impl<'a, 'i> Node<'a, 'i> {
    /// The document root.
    pub(crate) fn root(table: &'a DeTable<'i>) -> Self {
        Self {
            table,
            span: 0..0,
            path: String::new(),
        }
    }

    /// Field path of `key` in this table.
    pub(crate) fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports every key that is not in `allowed`.
    pub(crate) fn check_fields(&self, sink: &mut Sink, what: &str, allowed: &[&str]) {
        for key in self.table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let list = allowed.join(", ");
            let hint = match closest(name, allowed.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? expected one of: {list}"),
                None => format!("expected one of: {list}"),
            };
            sink.error(
                codes::UNKNOWN_FIELD,
                &key.span(),
                self.field(name),
                format!("unknown field `{name}` in {what}"),
                Some(hint),
            );
        }
    }

    /// Whether `key` is written in this table.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Span of the value of `key`, if written.
    pub(crate) fn value_span(&self, key: &str) -> Option<Span> {
        self.table.get(key).map(Spanned::span)
    }

    /// Reads an optional field.
    pub(crate) fn optional<T: Decode>(&self, sink: &mut Sink, key: &str) -> Field<T> {
        match self.table.get(key) {
            None => Field::Absent,
            Some(value) => {
                let span = value.span();
                match T::decode(value.get_ref(), &span, &self.field(key), sink) {
                    Some(v) => Field::Present(Spanned::new(span, v)),
                    None => Field::Invalid,
                }
            }
        }
    }

    /// Reads a required field, reporting `missing-field` when it is absent.
    pub(crate) fn required<T: Decode>(&self, sink: &mut Sink, what: &str, key: &str) -> Field<T> {
        let field = self.optional(sink, key);
        if !field.is_written() {
            self.missing(sink, what, key);
        }
        field
    }

    /// Reports that `key` is missing from this table.
    pub(crate) fn missing(&self, sink: &mut Sink, what: &str, key: &str) {
        let at = if self.path.is_empty() {
            "the file".to_owned()
        } else {
            format!("`{}`", self.path)
        };
        sink.error(
            codes::MISSING_FIELD,
            &self.span,
            self.field(key),
            format!("{what} has no `{key}`"),
            Some(format!("add `{key} = …` to {at}")),
        );
    }

    /// Reads an integer field in `lo..=hi`; `default` applies when absent.
    pub(crate) fn integer<T>(&self, sink: &mut Sink, key: &str, lo: T, hi: T) -> Field<T>
    where
        T: Copy + Into<i64> + TryFrom<i64> + std::fmt::Display,
    {
        match self.optional::<i64>(sink, key) {
            Field::Absent => Field::Absent,
            Field::Invalid => Field::Invalid,
            Field::Present(n) => {
                let span = n.span();
                let value = *n.get_ref();
                match T::try_from(value) {
                    Ok(v) if value >= lo.into() && value <= hi.into() => {
                        Field::Present(Spanned::new(span, v))
                    }
                    _ => {
                        sink.error(
                            codes::OUT_OF_RANGE,
                            &span,
                            self.field(key),
                            format!("{key} {value} is out of range"),
                            Some(format!("{key} must be between {lo} and {hi}")),
                        );
                        Field::Invalid
                    }
                }
            }
        }
    }

    /// Reads a sub-table (`[a.b]` or `b = { … }`).
    pub(crate) fn table(&self, sink: &mut Sink, key: &str) -> Option<Node<'a, 'i>> {
        let value = self.table.get(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(Node {
                table: t,
                span: value.span(),
                path: self.field(key),
            }),
            other => {
                wrong_type(sink, "a table", other, &value.span(), &self.field(key));
                None
            }
        }
    }

    /// Reads an array of tables (`[[a.b]]` or `b = [{ … }, …]`); absent means empty.
    pub(crate) fn tables(&self, sink: &mut Sink, key: &str) -> Vec<Node<'a, 'i>> {
        let Some(value) = self.table.get(key) else {
            return Vec::new();
        };
        let path = self.field(key);
        let DeValue::Array(items) = value.get_ref() else {
            let hint = format!("write each entry as a [[{path}]] table");
            let found = value.get_ref().type_str();
            sink.error(
                codes::WRONG_TYPE,
                &value.span(),
                path,
                format!(
                    "expected an array of tables, found {} {found}",
                    article(found)
                ),
                Some(hint),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item.get_ref() {
                DeValue::Table(t) => out.push(Node {
                    table: t,
                    span: item.span(),
                    path: item_path,
                }),
                other => wrong_type(sink, "a table", other, &item.span(), &item_path),
            }
        }
        out
    }
}
