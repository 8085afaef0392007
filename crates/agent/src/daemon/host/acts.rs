//! Units' acts: an operator drains, undrains or disables a host (or one of its
//! applications), or sets its capacity, on a unit's admin API; the unit relays it as a
//! [`DirectiveRequest`] and the driver carries it out exactly as the local API would (the
//! postulate handshake then moves every unit to the new directive), then answers with a
//! [`DirectiveReply`]. Acts are idempotent, so a repeated request is harmless.
//!
//! The frame is authenticated and comes from a configured unit (the caller checked);
//! `[agent] unit_acts = false` refuses every act.

use std::time::Instant;

use switchyard_wire::UnitId;
use switchyard_wire::health::{Act, ActOutcome, DirectiveReply, DirectiveRequest};

use super::{Destination, HostDriver};

impl HostDriver {
    /// Carries out `request` from `unit` and answers it.
    pub(super) async fn on_unit_act(
        &mut self,
        unit: UnitId,
        unit_name: &str,
        request: &DirectiveRequest,
    ) {
        let (outcome, rows) = self.unit_act(unit_name, request);
        if outcome == ActOutcome::Applied {
            self.counters.unit_acts += 1;
        } else {
            self.counters.unit_acts_refused += 1;
        }
        let reply = DirectiveReply {
            host: self.host(),
            request: request.request,
            outcome,
            rows,
        };
        // The act's changes go out first, so the reply follows the handshake's start.
        self.transmit().await;
        self.send(Destination::Unit(unit), &reply.into()).await;
    }

    fn unit_act(&mut self, unit_name: &str, request: &DirectiveRequest) -> (ActOutcome, u16) {
        let act = request.act.as_str();
        if request.host != self.host() {
            tracing::warn!(host = %self.name, unit = %unit_name, addressed = %request.host, act, "act for another host refused");
            return (ActOutcome::NoSuchApp, 0);
        }
        if !self.unit_acts {
            tracing::warn!(host = %self.name, unit = %unit_name, act, "act from a unit refused: the configuration says [agent] unit_acts = false; change directives through the local API");
            return (ActOutcome::Refused, 0);
        }
        let indexes: Vec<usize> = match &request.app {
            None => (0..self.rows.len()).collect(),
            Some(app) => match self.index_of_app(app) {
                Some(index) => vec![index],
                None => {
                    tracing::warn!(host = %self.name, unit = %unit_name, vip = %app.vip, endpoint = %app.endpoint, act, "act for an application this host does not have refused");
                    return (ActOutcome::NoSuchApp, 0);
                }
            },
        };
        let by = format!("unit {unit_name}");
        match request.act {
            Act::Target(state) => self.set_target(&indexes, state, &by),
            Act::Capacity(capacity) => {
                let now = Instant::now();
                for &index in &indexes {
                    let Some(health) = self.rows.get(index).map(|e| e.health) else {
                        continue;
                    };
                    self.update_status(now, index, health, capacity, &by);
                }
            }
        }
        let rows = u16::try_from(indexes.len()).unwrap_or(u16::MAX);
        (ActOutcome::Applied, rows)
    }
}
