//! Packet-path rules: each unit's `forwarder` table (interfaces only on forwarder units, NAT
//! sources only on classifier units and required there when a service uses full NAT, the NAT
//! port range, the plumbing port), the `[classifier]` route lifetimes, and the per-service
//! firewalls (packet services only; prefixes without host bits; a burst needs a rate).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use toml::Spanned;

use crate::decode::{Field, Span};
use crate::diagnostics::codes;
use crate::model::{
    ClassifierSettings, Delivery, Firewall, ForwarderSettings, PortSpan, Prefix, Role, Service,
    ServiceMode, Unit,
};
use crate::raw::{RawClassifier, RawForwarder, RawService, RawUnit};

use super::Validator;

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
const MAX_IFNAME_LEN: usize = 15;

impl Validator<'_> {
    /// The unit's packet path settings; defaults when the table is absent. `None` when an
    /// error was reported.
    pub(super) fn forwarder_settings(
        &mut self,
        unit: &RawUnit,
        roles: &[Role],
    ) -> Option<ForwarderSettings> {
        let defaults = ForwarderSettings::default();
        let Some(raw) = &unit.forwarder else {
            return Some(defaults);
        };
        let forwards = roles.contains(&Role::Forwarder);
        let classifies = roles.contains(&Role::Classifier);
        let at = &raw.at;
        let mut ok = true;
        if !forwards && !classifies {
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &at.span,
                at.path.clone(),
                "forwarder settings on a unit with neither the forwarder nor the classifier role"
                    .to_owned(),
                Some("remove the table, or give the unit the forwarder role".to_owned()),
            );
            return None;
        }
        for (present, key, hint) in [
            (
                raw.interfaces.is_written(),
                "interfaces",
                "only a forwarder attaches to interfaces; remove it or add the forwarder role",
            ),
            (
                raw.attach.is_written(),
                "attach",
                "only a forwarder attaches; remove it or add the forwarder role",
            ),
            (
                raw.max_flows.is_written(),
                "max_flows",
                "only a forwarder holds a routing table; remove it or add the forwarder role",
            ),
        ] {
            if present && !forwards {
                ok = false;
                let span = raw_span(raw, key).unwrap_or_else(|| at.span.clone());
                self.sink.error(
                    codes::CONFLICTING_SETTINGS,
                    &span,
                    at.field(key),
                    format!("`{key}` is set on a unit without the forwarder role"),
                    Some(hint.to_owned()),
                );
            }
        }
        if raw.nat_sources.is_written() && !classifies {
            ok = false;
            let span = raw.nat_sources.span().unwrap_or_else(|| at.span.clone());
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                at.field("nat_sources"),
                "`nat_sources` is set on a unit without the classifier role".to_owned(),
                Some("the classifier allocates NAT sources: set them on the unit that classifies for this forwarder (and route them to this unit)".to_owned()),
            );
        }
        let interfaces = match &raw.interfaces {
            Field::Absent => {
                if forwards {
                    ok = false;
                    self.missing(
                        at,
                        "interfaces",
                        "forwarder settings have no `interfaces`".to_owned(),
                        "list the interfaces VIP traffic arrives on and host traffic leaves by, e.g. interfaces = [\"eth0\", \"eth1\"]".to_owned(),
                    );
                }
                Vec::new()
            }
            Field::Invalid => {
                ok = false;
                Vec::new()
            }
            Field::Present(list) => {
                let path = at.field("interfaces");
                if list.get_ref().is_empty() {
                    ok = false;
                    self.empty_list(
                        &list.span(),
                        path.clone(),
                        "the forwarder has no interfaces".to_owned(),
                        "list at least one interface, e.g. [\"eth0\"]",
                    );
                }
                ok &= self
                    .no_duplicate_entries(list.get_ref(), &path, |n| format!("interface \"{n}\""));
                for (i, name) in list.get_ref().iter().enumerate() {
                    let text = name.get_ref();
                    if text.is_empty()
                        || text.len() > MAX_IFNAME_LEN
                        || text
                            .chars()
                            .any(|c| c == '/' || c.is_whitespace() || c == ':')
                    {
                        ok = false;
                        self.sink.error(
                            codes::BAD_NAME,
                            &name.span(),
                            format!("{path}[{i}]"),
                            format!("\"{text}\" is not an interface name"),
                            Some(format!("interface names are 1 to {MAX_IFNAME_LEN} characters without '/', ':' or spaces")),
                        );
                    }
                }
                list.get_ref().iter().map(|n| n.get_ref().clone()).collect()
            }
        };
        let nat_sources: Vec<IpAddr> = match &raw.nat_sources {
            Field::Present(list) => {
                let path = at.field("nat_sources");
                if list.get_ref().is_empty() {
                    ok = false;
                    self.empty_list(
                        &list.span(),
                        path.clone(),
                        "no NAT source addresses".to_owned(),
                        "list at least one address, or remove `nat_sources`",
                    );
                }
                ok &= self.no_duplicate_entries(list.get_ref(), &path, |a| format!("address {a}"));
                for (i, a) in list.get_ref().iter().enumerate() {
                    let ip = a.get_ref();
                    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                        ok = false;
                        self.sink.error(
                            codes::BAD_ADDRESS,
                            &a.span(),
                            format!("{path}[{i}]"),
                            format!("{ip} cannot be a NAT source"),
                            Some(
                                "use a unicast address that routes from the hosts to the forwarder"
                                    .to_owned(),
                            ),
                        );
                    }
                }
                list.get_ref().iter().map(|a| *a.get_ref()).collect()
            }
            Field::Invalid => {
                ok = false;
                Vec::new()
            }
            Field::Absent => Vec::new(),
        };
        let nat_ports = match &raw.nat_ports {
            Field::Absent => Some(defaults.nat_ports),
            Field::Invalid => None,
            Field::Present(text) => {
                let parsed = parse_port_span(text.get_ref());
                if parsed.is_none() {
                    self.sink.error(
                        codes::BAD_VALUE,
                        &text.span(),
                        at.field("nat_ports"),
                        format!("nat_ports \"{}\" is not a port range", text.get_ref()),
                        Some("write FIRST-LAST with 1 ≤ FIRST ≤ LAST ≤ 65535, e.g. \"20000-32767\" (keep it below the ephemeral range, 32768-60999 on Linux)".to_owned()),
                    );
                }
                parsed
            }
        };
        let plumbing_port = match &raw.plumbing_port {
            Field::Absent => Some(defaults.plumbing_port),
            Field::Invalid => None,
            Field::Present(p) => Some(*p.get_ref()),
        };
        let attach = match &raw.attach {
            Field::Absent => Some(defaults.attach),
            other => other.get().map(|k| k.0),
        };
        let max_flows = match &raw.max_flows {
            Field::Absent => Some(defaults.max_flows),
            other => other.get().copied(),
        };
        if !ok {
            return None;
        }
        Some(ForwarderSettings {
            interfaces,
            attach: attach?,
            max_flows: max_flows?,
            nat_sources,
            nat_ports: nat_ports?,
            plumbing_port: plumbing_port?,
        })
    }

    /// A classifying unit that writes forwarder settings must list NAT sources when a
    /// service uses full NAT.
    pub(super) fn nat_sources_needed(
        &mut self,
        raw: &[RawUnit],
        units: &[Unit],
        services: &[Service],
    ) {
        let Some(service) = services.iter().find(|s| {
            matches!(
                s.mode,
                ServiceMode::Packet {
                    delivery: Delivery::Nat
                } | ServiceMode::Migrate {
                    delivery: Delivery::Nat
                }
            )
        }) else {
            return;
        };
        for (unit, built) in raw.iter().zip(units) {
            let Some(table) = &unit.forwarder else {
                continue;
            };
            if built.has_role(Role::Classifier) && built.forwarder.nat_sources.is_empty() {
                self.missing(
                    &table.at,
                    "nat_sources",
                    format!(
                        "unit \"{}\" classifies, and service \"{}\" uses full NAT, but the unit has no `nat_sources`",
                        built.name, service.name
                    ),
                    "list the source addresses hosts see, e.g. nat_sources = [\"198.18.200.10\"]; they must route back to the forwarder".to_owned(),
                );
            }
        }
    }

    /// `[classifier]`; defaults when absent.
    pub(super) fn classifier(&mut self, raw: Option<&RawClassifier>) -> Option<ClassifierSettings> {
        let d = ClassifierSettings::default();
        let Some(raw) = raw else {
            return Some(d);
        };
        let at = &raw.at;
        let mut ok = true;
        for (field, key) in [
            (&raw.tcp_idle_timeout, "tcp_idle_timeout"),
            (&raw.udp_idle_timeout, "udp_idle_timeout"),
        ] {
            ok &= self.positive(field, at.field(key), key);
        }
        let get = |f: &Field<Duration>, default: Duration| Self::duration_or(f, default);
        let settings = ClassifierSettings {
            tcp_idle_timeout: get(&raw.tcp_idle_timeout, d.tcp_idle_timeout)?,
            udp_idle_timeout: get(&raw.udp_idle_timeout, d.udp_idle_timeout)?,
            fin_linger: get(&raw.fin_linger, d.fin_linger)?,
            rst_linger: get(&raw.rst_linger, d.rst_linger)?,
        };
        ok.then_some(settings)
    }

    /// The firewalls of `raw` services (built ones in `services`, same order, when every
    /// service built).
    pub(super) fn firewalls(
        &mut self,
        raw: &[RawService],
        services: Option<&[Service]>,
    ) -> Option<BTreeMap<String, Firewall>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (i, service) in raw.iter().enumerate() {
            let Some(fw) = &service.firewall else {
                continue;
            };
            let at = &fw.at;
            let built = services.and_then(|s| s.get(i));
            if let Some(built) = built
                && !matches!(built.mode, ServiceMode::Packet { .. })
            {
                ok = false;
                self.sink.error(
                    codes::CONFLICTING_SETTINGS,
                    &at.span,
                    at.path.clone(),
                    format!("service \"{}\" has a firewall but is not a packet service", built.name),
                    Some("the forwarder enforces firewalls, so only mode = \"packet\" services take one".to_owned()),
                );
            }
            let allow = self.prefixes(&fw.allow, at.field("allow"));
            let deny = self.prefixes(&fw.deny, at.field("deny"));
            let rate = fw.new_connections_per_second.get().copied();
            let burst = fw.burst.get().copied();
            if let Some(span) = fw.burst.span()
                && !fw.new_connections_per_second.is_written()
            {
                ok = false;
                self.sink.error(
                    codes::CONFLICTING_SETTINGS,
                    &span,
                    at.field("burst"),
                    "`burst` without `new_connections_per_second`".to_owned(),
                    Some("a burst is the bucket size of the per-source rate limit: set new_connections_per_second too".to_owned()),
                );
            }
            if fw.new_connections_per_second.is_written() && rate.is_none()
                || fw.burst.is_written() && burst.is_none()
            {
                ok = false;
            }
            match (allow, deny, built) {
                (Some(allow), Some(deny), Some(built)) => {
                    out.insert(
                        built.name.clone(),
                        Firewall {
                            allow,
                            deny,
                            new_connections_per_second: rate,
                            burst,
                        },
                    );
                }
                _ => ok = false,
            }
        }
        (ok && services.is_some()).then_some(out)
    }

    fn prefixes(
        &mut self,
        field: &Field<Vec<Spanned<String>>>,
        path: String,
    ) -> Option<Vec<Prefix>> {
        let list = match field {
            Field::Absent => return Some(Vec::new()),
            Field::Invalid => return None,
            Field::Present(list) => list,
        };
        let mut out = Vec::new();
        let mut ok = self.no_duplicate_entries(list.get_ref(), &path, |p| format!("prefix {p}"));
        for (i, text) in list.get_ref().iter().enumerate() {
            match parse_prefix(text.get_ref()) {
                Ok(p) => out.push(p),
                Err(problem) => {
                    ok = false;
                    self.sink.error(
                        codes::BAD_ADDRESS,
                        &text.span(),
                        format!("{path}[{i}]"),
                        format!("\"{}\" {problem}", text.get_ref()),
                        Some("write ADDRESS/LENGTH with the host bits zero, e.g. \"198.18.0.0/15\" or \"2001:db8::/32\"; a single address needs /32 or /128".to_owned()),
                    );
                }
            }
        }
        ok.then_some(out)
    }
}

fn raw_span(raw: &RawForwarder, key: &str) -> Option<Span> {
    match key {
        "interfaces" => raw.interfaces.span(),
        "attach" => raw.attach.span(),
        "max_flows" => raw.max_flows.span(),
        _ => None,
    }
}

/// `"FIRST-LAST"`.
fn parse_port_span(text: &str) -> Option<PortSpan> {
    let (a, b) = text.split_once('-')?;
    let first: u16 = a.trim().parse().ok()?;
    let last: u16 = b.trim().parse().ok()?;
    (first >= 1 && first <= last).then_some(PortSpan { first, last })
}

/// `"ADDRESS/LENGTH"` with zero host bits.
fn parse_prefix(text: &str) -> Result<Prefix, &'static str> {
    let (a, l) = text.split_once('/').ok_or("has no /LENGTH")?;
    let addr: IpAddr = a.parse().map_err(|_| "is not an IP address prefix")?;
    let len: u8 = l.parse().map_err(|_| "has an unreadable prefix length")?;
    let (bits, max) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    if len > max {
        return Err("has a prefix length beyond the address size");
    }
    let host_mask = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    if bits & host_mask != 0 {
        return Err("has host bits set after the prefix length");
    }
    Ok(Prefix { addr, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_port_ranges_parse_strictly() {
        assert_eq!(parse_prefix("198.18.0.0/15").map(|p| p.len), Ok(15));
        assert!(parse_prefix("198.18.0.1/15").is_err());
        assert!(parse_prefix("198.18.0.1/33").is_err());
        assert!(parse_prefix("198.18.0.1").is_err());
        assert_eq!(parse_prefix("2001:db8::/32").map(|p| p.len), Ok(32));
        assert_eq!(parse_prefix("0.0.0.0/0").map(|p| p.len), Ok(0));
        assert_eq!(parse_prefix("2001:db8::1/128").map(|p| p.len), Ok(128));
        assert_eq!(
            parse_port_span("20000-32767"),
            Some(PortSpan {
                first: 20000,
                last: 32767
            })
        );
        assert_eq!(parse_port_span("0-10"), None);
        assert_eq!(parse_port_span("10-9"), None);
        assert_eq!(parse_port_span("10"), None);
    }
}
