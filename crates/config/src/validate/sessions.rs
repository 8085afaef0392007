//! Rules of `[sessions]`: positive durations and a rebind timeout longer than the resend and
//! keepalive intervals (else a host would leave a unit that answers). That the session port
//! collides with no other port of a session-store unit is a rule of [`super::ports`].

use std::time::Duration;

use super::Validator;
use crate::decode::Field;
use crate::diagnostics::codes;
use crate::sessions::{RawSessions, SessionSettings, ZombieTimes};

impl Validator<'_> {
    /// `[sessions]`, all defaults when absent. Problems are reported and the defaults kept
    /// for the fields concerned (the caller fails on any reported error).
    pub(super) fn sessions(&mut self, raw: Option<&RawSessions>) -> SessionSettings {
        let d = SessionSettings::default();
        let Some(raw) = raw else {
            return d;
        };
        let at = &raw.at;
        for (field, key) in [
            (&raw.resend_interval, "resend_interval"),
            (&raw.keepalive_interval, "keepalive_interval"),
            (&raw.rebind_after, "rebind_after"),
            (&raw.cache_ttl, "cache_ttl"),
        ] {
            self.positive(field, at.field(key), key);
        }
        let get = |f: &Field<Duration>, default: Duration| match f.get() {
            Some(v) if !v.is_zero() => *v,
            _ => default,
        };
        let mut zombie = ZombieTimes::default();
        if let Some(z) = &raw.zombie {
            for (key, field) in &z.times {
                let slot = match *key {
                    "four_tuple" => &mut zombie.four_tuple,
                    "client_ip" => &mut zombie.client_ip,
                    "tls_session_id" => &mut zombie.tls_session_id,
                    "http_cookie" => &mut zombie.http_cookie,
                    "user" => &mut zombie.user,
                    _ => &mut zombie.custom,
                };
                if let Some(v) = field.get() {
                    *slot = *v;
                }
                if let Some(v) = field.spanned()
                    && *v.get_ref() > Duration::from_secs(u64::from(u32::MAX) / 1000)
                {
                    self.sink.error(
                        codes::OUT_OF_RANGE,
                        &v.span(),
                        z.at.field(key),
                        format!("zombie time {key} is longer than the wire allows (49 days)"),
                        Some(
                            "zombie times are short: the protocol's dead time, e.g. \"60s\""
                                .to_owned(),
                        ),
                    );
                }
            }
        }
        let settings = SessionSettings {
            replication: raw.replication.get().copied().unwrap_or(d.replication),
            port: raw.port.get().copied().unwrap_or(d.port),
            resend_interval: get(&raw.resend_interval, d.resend_interval),
            keepalive_interval: get(&raw.keepalive_interval, d.keepalive_interval),
            rebind_after: get(&raw.rebind_after, d.rebind_after),
            cache_size: raw.cache_size.get().copied().unwrap_or(d.cache_size),
            cache_ttl: get(&raw.cache_ttl, d.cache_ttl),
            zombie,
        };
        let longest = settings.resend_interval.max(settings.keepalive_interval);
        if settings.rebind_after <= longest {
            let span = raw
                .rebind_after
                .span()
                .or_else(|| raw.resend_interval.span())
                .or_else(|| raw.keepalive_interval.span())
                .unwrap_or_else(|| at.span.clone());
            self.sink.error(
                codes::CONFLICTING_SETTINGS,
                &span,
                at.field("rebind_after"),
                format!(
                    "rebind_after ({}) must be longer than resend_interval and keepalive_interval ({})",
                    crate::format_duration(settings.rebind_after),
                    crate::format_duration(longest)
                ),
                Some("a host would leave a unit that answers; make rebind_after a few intervals long, e.g. \"3s\"".to_owned()),
            );
        }
        settings
    }
}
