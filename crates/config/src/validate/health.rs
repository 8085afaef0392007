//! `[health]` rules: the timing of the health and load protocol. Every duration is longer
//! than zero, a host may miss a heartbeat without ageing out, the first postulate of a
//! handshake is not sent later than a retry would be, a unit is given up on only after
//! several postulate retries, and the load average's sample weight is in (0, 1].

use std::time::Duration;

use crate::decode::Field;
use crate::diagnostics::codes;
use crate::duration::format_duration;
use crate::model::HealthSettings;
use crate::raw::{At, RawHealth};

use super::Validator;
use super::health_defaults as d;

/// `" (default)"` for a value that was not written.
fn default_mark(field: &Field<Duration>) -> &'static str {
    if field.is_written() { "" } else { " (default)" }
}

impl Validator<'_> {
    /// Builds the health settings; all defaults when the table is absent.
    pub(super) fn health(&mut self, raw: Option<&RawHealth>) -> Option<HealthSettings> {
        let Some(raw) = raw else {
            return Some(HealthSettings::default());
        };
        let at = &raw.at;
        let fields: [(&Field<Duration>, &str); 8] = [
            (&raw.heartbeat_interval, "heartbeat_interval"),
            (&raw.host_dead_after, "host_dead_after"),
            (&raw.load_interval, "load_interval"),
            (&raw.postulate_delay, "postulate_delay"),
            (&raw.postulate_interval, "postulate_interval"),
            (&raw.unit_give_up_after, "unit_give_up_after"),
            (&raw.token_validity, "token_validity"),
            (&raw.percentage_duration, "percentage_duration"),
        ];
        let mut ok = true;
        for (field, key) in fields {
            ok &= self.positive(field, at.field(key), key);
        }
        let heartbeat_interval = Self::duration_or(&raw.heartbeat_interval, d::HEARTBEAT_INTERVAL);
        let host_dead_after = Self::duration_or(&raw.host_dead_after, d::HOST_DEAD_AFTER);
        let postulate_interval = Self::duration_or(&raw.postulate_interval, d::POSTULATE_INTERVAL);
        let unit_give_up_after = Self::duration_or(&raw.unit_give_up_after, d::UNIT_GIVE_UP_AFTER);
        if ok
            && let (Some(heartbeat), Some(dead)) = (heartbeat_interval, host_dead_after)
            && dead < heartbeat.saturating_mul(2)
        {
            ok = false;
            self.too_short(
                at,
                (&raw.host_dead_after, "host_dead_after", dead),
                (&raw.heartbeat_interval, "heartbeat_interval", heartbeat),
                "shorter than twice",
                "a host must be able to miss a heartbeat without ageing out: make host_dead_after at least 2 × heartbeat_interval",
            );
        }
        if ok
            && let (Some(postulate), Some(give_up)) = (postulate_interval, unit_give_up_after)
            && give_up <= postulate
        {
            ok = false;
            self.too_short(
                at,
                (&raw.unit_give_up_after, "unit_give_up_after", give_up),
                (&raw.postulate_interval, "postulate_interval", postulate),
                "not longer than",
                "a unit is given up on only after postulates were resent to it: make unit_give_up_after longer than postulate_interval",
            );
        }
        // Not written: the default, shortened to postulate_interval if that is shorter.
        let postulate_delay = match (&raw.postulate_delay, postulate_interval) {
            (Field::Absent, Some(interval)) => Some(d::POSTULATE_DELAY.min(interval)),
            (Field::Absent, None) => Some(d::POSTULATE_DELAY),
            (other, _) => other.get().copied(),
        };
        if ok
            && raw.postulate_delay.is_written()
            && let (Some(delay), Some(interval)) = (postulate_delay, postulate_interval)
            && delay > interval
        {
            ok = false;
            self.too_short(
                at,
                (&raw.postulate_delay, "postulate_delay", delay),
                (&raw.postulate_interval, "postulate_interval", interval),
                "longer than",
                "the first postulate of a handshake must not wait longer than a retry: make postulate_delay at most postulate_interval",
            );
        }
        let load_smoothing = match &raw.load_smoothing {
            Field::Absent => Some(d::LOAD_SMOOTHING),
            Field::Invalid => None,
            Field::Present(x) => {
                let value = *x.get_ref();
                if value > 0.0 && value <= 1.0 {
                    Some(value)
                } else {
                    self.sink.error(
                        codes::OUT_OF_RANGE,
                        &x.span(),
                        at.field("load_smoothing"),
                        format!("load_smoothing {value} is out of range"),
                        Some(
                            "load_smoothing is the weight of a new load sample: more than 0 and at most 1 (1 disables averaging), e.g. 0.3"
                                .to_owned(),
                        ),
                    );
                    None
                }
            }
        };
        let load_hysteresis = match &raw.load_hysteresis {
            Field::Absent => Some(d::LOAD_HYSTERESIS),
            other => other.get().copied(),
        };
        if !ok || load_smoothing.is_none() {
            return None;
        }
        Some(HealthSettings {
            heartbeat_interval: heartbeat_interval?,
            host_dead_after: host_dead_after?,
            load_interval: Self::duration_or(&raw.load_interval, d::LOAD_INTERVAL)?,
            postulate_delay: postulate_delay?,
            postulate_interval: postulate_interval?,
            unit_give_up_after: unit_give_up_after?,
            token_validity: Self::duration_or(&raw.token_validity, d::TOKEN_VALIDITY)?,
            percentage_duration: Self::duration_or(
                &raw.percentage_duration,
                d::PERCENTAGE_DURATION,
            )?,
            load_hysteresis: load_hysteresis?,
            load_smoothing: load_smoothing?,
        })
    }

    /// Reports that `long` is too short (or too long) compared with `base`, at whichever of the two was
    /// written (`long` first), else at the table.
    fn too_short(
        &mut self,
        at: &At,
        long: (&Field<Duration>, &str, Duration),
        base: (&Field<Duration>, &str, Duration),
        relation: &str,
        hint: &str,
    ) {
        let (span, path) = match (long.0.span(), base.0.span()) {
            (Some(span), _) => (span, at.field(long.1)),
            (None, Some(span)) => (span, at.field(base.1)),
            (None, None) => (at.span.clone(), at.field(long.1)),
        };
        self.sink.error(
            codes::CONFLICTING_SETTINGS,
            &span,
            path,
            format!(
                "{} {}{} is {relation} {} {}{}",
                long.1,
                format_duration(long.2),
                default_mark(long.0),
                base.1,
                format_duration(base.2),
                default_mark(base.0),
            ),
            Some(hint.to_owned()),
        );
    }
}
