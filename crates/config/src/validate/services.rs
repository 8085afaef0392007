//! Service rules: unique VIPs, pool and listener references, which delivery and listener
//! each mode takes, affinity settings, and the unit roles the services need.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::decode::{Field, Keyword};
use crate::diagnostics::codes;
use crate::model::{Affinity, Protocol, Role, Service, ServiceMode, Unit};
use crate::raw::{AffinityKind, ModeKind, RawAffinity, RawService};

use super::{DEFAULT_AFFINITY_TIMEOUT, Names, Validator};

impl Validator<'_> {
    pub(super) fn services(
        &mut self,
        raw: &[RawService],
        pools: &Names,
        listeners: &Names,
    ) -> Option<Vec<Service>> {
        let _ = self.names("service", raw.iter().map(|s| (&s.name, &s.at)));
        let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
        let mut out = Some(Vec::with_capacity(raw.len()));
        for service in raw {
            let mut ok = true;
            if let (Some(vip), Some(protocol)) = (service.vip.spanned(), service.protocol.get()) {
                let key = (*vip.get_ref(), protocol.0);
                let shown = format!("{}/{}", vip.get_ref(), protocol.0.keyword());
                if let Some(first) = vips.get(&key) {
                    ok = false;
                    self.sink.error(
                        codes::DUPLICATE_VIP,
                        &vip.span(),
                        service.at.field("vip"),
                        format!("VIP {shown} is already used by {first}"),
                        Some("each VIP:port/protocol belongs to one service; change the port or merge the services".to_owned()),
                    );
                } else {
                    let owner = match service.name.get() {
                        Some(name) => format!("service \"{name}\""),
                        None => service.at.path.clone(),
                    };
                    vips.insert(key, owner);
                }
            }
            let built = self.service(service, pools, listeners);
            match (built, out.as_mut(), ok) {
                (Some(s), Some(list), true) => list.push(s),
                _ => out = None,
            }
        }
        out
    }

    pub(super) fn service(
        &mut self,
        raw: &RawService,
        pools: &Names,
        listeners: &Names,
    ) -> Option<Service> {
        let at = &raw.at;
        let mut ok = true;
        if let Some(vip) = raw.vip.spanned()
            && vip.get_ref().ip().is_unspecified()
        {
            ok = false;
            self.sink.error(
                codes::BAD_ADDRESS,
                &vip.span(),
                at.field("vip"),
                format!("VIP {} is the unspecified address", vip.get_ref()),
                Some(
                    "a VIP is the address clients connect to, e.g. \"198.51.100.10:80\"".to_owned(),
                ),
            );
        }
        ok &= self.reference(
            &raw.pool,
            at.field("pool"),
            pools,
            codes::UNDEFINED_POOL,
            "pool",
            "pools",
        );
        let mode = self.mode(raw, listeners);
        let affinity = raw.mode.get().and_then(|mode| self.affinity(raw, mode.0));
        if !ok {
            return None;
        }
        Some(Service {
            name: raw.name.get()?.clone(),
            vip: *raw.vip.get()?,
            protocol: raw.protocol.get()?.0,
            mode: mode?,
            pool: raw.pool.get()?.clone(),
            affinity: affinity?,
        })
    }

    pub(super) fn mode(&mut self, raw: &RawService, listeners: &Names) -> Option<ServiceMode> {
        let at = &raw.at;
        let mode = raw.mode.get()?.0;
        let word = mode.keyword();
        let mut ok = true;
        if mode != ModeKind::Packet
            && let Some(protocol) = raw.protocol.spanned()
            && protocol.get_ref().0 == Protocol::Udp
        {
            ok = false;
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &protocol.span(),
                at.field("protocol"),
                format!("{word} mode needs TCP, but the service is UDP"),
                Some("UDP services use `mode = \"packet\"`".to_owned()),
            );
        }
        let delivery = match mode {
            ModeKind::Request => {
                if raw.delivery.is_written() {
                    ok = false;
                    self.not_applicable(
                        &raw.delivery,
                        at.field("delivery"),
                        "`delivery` does not apply to request mode".to_owned(),
                        "the request router terminates the connection and opens its own to the host; remove `delivery`",
                    );
                }
                None
            }
            ModeKind::Packet | ModeKind::Migrate => match &raw.delivery {
                Field::Absent => {
                    self.missing(
                        at,
                        "delivery",
                        format!("{word}-mode service has no `delivery`"),
                        "add `delivery = \"nat\"`, \"half-nat\" or \"tunnel\"".to_owned(),
                    );
                    return None;
                }
                Field::Invalid => return None,
                Field::Present(d) => Some(d.get_ref().0),
            },
        };
        let listener = match mode {
            ModeKind::Request => match &raw.listener {
                Field::Absent => {
                    self.missing(
                        at,
                        "listener",
                        "request-mode service has no `listener`".to_owned(),
                        "add `listener = \"NAME\"` naming a [[listeners]] entry".to_owned(),
                    );
                    return None;
                }
                Field::Invalid => return None,
                Field::Present(l) => {
                    ok &= self.reference(
                        &raw.listener,
                        at.field("listener"),
                        listeners,
                        codes::UNDEFINED_LISTENER,
                        "listener",
                        "listeners",
                    );
                    Some(l.get_ref().clone())
                }
            },
            ModeKind::Packet | ModeKind::Migrate => {
                if raw.listener.is_written() {
                    ok = false;
                    self.not_applicable(
                        &raw.listener,
                        at.field("listener"),
                        format!("`listener` only applies to request mode, not to {word} mode"),
                        "remove `listener`, or set `mode = \"request\"`",
                    );
                }
                None
            }
        };
        if !ok {
            return None;
        }
        match (mode, delivery, listener) {
            (ModeKind::Packet, Some(delivery), _) => Some(ServiceMode::Packet { delivery }),
            (ModeKind::Migrate, Some(delivery), _) => Some(ServiceMode::Migrate { delivery }),
            (ModeKind::Request, _, Some(listener)) => Some(ServiceMode::Request { listener }),
            _ => None,
        }
    }

    pub(super) fn affinity(&mut self, raw: &RawService, mode: ModeKind) -> Option<Affinity> {
        let Some(affinity) = raw.affinity.as_ref() else {
            return Some(Affinity::None);
        };
        let RawAffinity {
            at,
            kind,
            timeout,
            cookie,
            header,
        } = affinity;
        let kind = kind.spanned()?;
        let word = kind.get_ref().0.keyword();
        let mut ok = true;
        let needs_content = matches!(
            kind.get_ref().0,
            AffinityKind::Cookie | AffinityKind::Header | AffinityKind::TlsSession
        );
        if needs_content && mode == ModeKind::Packet {
            ok = false;
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &kind.span(),
                at.field("kind"),
                format!("{word} affinity needs to read the connection's content, which packet mode never does"),
                Some("use `mode = \"request\"` or `mode = \"migrate\"`, or client-ip affinity".to_owned()),
            );
        }
        if kind.get_ref().0 == AffinityKind::AppCookie && mode != ModeKind::Request {
            ok = false;
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &kind.span(),
                at.field("kind"),
                format!("{word} affinity is applied by the request router, which serves request mode only"),
                Some("use `mode = \"request\"`, or client-ip affinity".to_owned()),
            );
        }
        if kind.get_ref().0 == AffinityKind::None && timeout.is_written() {
            ok = false;
            self.not_applicable(
                timeout,
                at.field("timeout"),
                "`timeout` does not apply to affinity kind \"none\"".to_owned(),
                "remove `timeout`, or choose an affinity kind",
            );
        }
        if !self.positive(timeout, at.field("timeout"), "affinity timeout") {
            ok = false;
        }
        let named = |this: &mut Self,
                     field: &Field<String>,
                     key: &str,
                     wanted: &[AffinityKind]|
         -> Option<String> {
            let is_wanted = wanted.contains(&kind.get_ref().0);
            match field {
                Field::Absent if is_wanted => {
                    this.missing(
                        at,
                        key,
                        format!("{word} affinity has no `{key}` name"),
                        format!("add `{key} = \"NAME\"` inside the affinity table"),
                    );
                    None
                }
                Field::Absent => Some(String::new()),
                Field::Invalid => None,
                Field::Present(name) if !is_wanted => {
                    this.sink.error(
                        codes::CONFLICTING_SETTINGS,
                        &name.span(),
                        at.field(key),
                        format!("`{key}` does not apply to {word} affinity"),
                        Some(format!(
                            "remove `{key}`, or set `kind = {}`",
                            wanted
                                .iter()
                                .map(|k| format!("\"{}\"", k.keyword()))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        )),
                    );
                    None
                }
                Field::Present(name) => {
                    let text = name.get_ref();
                    if text.is_empty() || !text.chars().all(is_token_char) {
                        this.sink.error(
                            codes::BAD_VALUE,
                            &name.span(),
                            at.field(key),
                            format!("\"{text}\" is not a valid {key} name"),
                            Some("use letters, digits and !#$%&'*+-.^_`|~ only, e.g. \"SWITCHYARD\" or \"X-Session\"".to_owned()),
                        );
                        None
                    } else {
                        Some(text.clone())
                    }
                }
            }
        };
        let cookie = named(
            self,
            cookie,
            "cookie",
            &[AffinityKind::Cookie, AffinityKind::AppCookie],
        );
        let header = named(self, header, "header", &[AffinityKind::Header]);
        let (Some(cookie), Some(header), true) = (cookie, header, ok) else {
            return None;
        };
        let timeout = match timeout {
            Field::Absent => DEFAULT_AFFINITY_TIMEOUT,
            other => *other.get()?,
        };
        Some(match kind.get_ref().0 {
            AffinityKind::None => Affinity::None,
            AffinityKind::ClientIp => Affinity::ClientIp { timeout },
            AffinityKind::FourTuple => Affinity::FourTuple { timeout },
            AffinityKind::TlsSession => Affinity::TlsSession { timeout },
            AffinityKind::Cookie => Affinity::Cookie {
                name: cookie,
                timeout,
            },
            AffinityKind::AppCookie => Affinity::AppCookie {
                name: cookie,
                timeout,
            },
            AffinityKind::Header => Affinity::Header {
                name: header,
                timeout,
            },
        })
    }

    /// The services need units with the roles that carry them out.
    pub(super) fn roles_needed(
        &mut self,
        units: &[Unit],
        raw: &[RawService],
        services: &[Service],
    ) {
        let has = |role: Role| units.iter().any(|u| u.has_role(role));
        let mut reported = HashSet::new();
        for (service, raw) in services.iter().zip(raw) {
            let needed: &[Role] = match service.mode {
                ServiceMode::Packet { .. } | ServiceMode::Migrate { .. } => {
                    &[Role::Forwarder, Role::Classifier]
                }
                ServiceMode::Request { .. } => &[Role::Router],
            };
            for &role in needed {
                if has(role) || !reported.insert(role) {
                    continue;
                }
                let span = raw.mode.span().unwrap_or_else(|| raw.at.span.clone());
                let mode = match service.mode {
                    ServiceMode::Packet { .. } => "packet",
                    ServiceMode::Request { .. } => "request",
                    ServiceMode::Migrate { .. } => "migrate",
                };
                self.sink.error(
                    codes::MISSING_ROLE,
                    &span,
                    raw.at.field("mode"),
                    format!(
                        "service \"{}\" uses {mode} mode, but no unit has the {} role",
                        service.name,
                        role.keyword()
                    ),
                    Some(match units {
                        [only] => format!(
                            "add \"{}\" to the roles of unit \"{}\"",
                            role.keyword(),
                            only.name
                        ),
                        _ => format!(
                            "add \"{}\" to the roles of one of the {} units",
                            role.keyword(),
                            units.len()
                        ),
                    }),
                );
            }
            if matches!(service.affinity, Affinity::AppCookie { .. })
                && !has(Role::SessionStore)
                && let Some(affinity) = &raw.affinity
            {
                let span = affinity
                    .kind
                    .span()
                    .unwrap_or_else(|| affinity.at.span.clone());
                self.sink.error(
                    codes::MISSING_ROLE,
                    &span,
                    affinity.at.field("kind"),
                    format!(
                        "service \"{}\" uses app-cookie affinity, which looks sessions up through session tracking, but no unit has the session-store role",
                        service.name
                    ),
                    Some("add \"session-store\" to the roles of the units that run the router".to_owned()),
                );
            }
        }
    }
}

/// RFC 9110 `tchar`, the characters of header names and cookie names.
pub(super) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}
