//! The JSON views of a host driver's rows and host ([`crate::api::model`]), built from the
//! driver's remembered rows and the protocol machine's table.

use std::time::Instant;

use switchyard_health::millis;

use crate::api::ApiError;
use crate::api::model::{
    CheckJson, DirectiveJson, HandshakeJson, HostJson, RowJson, ServiceJson, UnitJson,
};

use super::super::group::GroupDriver;
use super::{Entry, HostDriver, Origin, Service};

impl HostDriver {
    /// The JSON of row `index`, or an internal error if there is none.
    pub(super) fn json_at(&self, index: usize) -> Result<RowJson, ApiError> {
        self.rows
            .get(index)
            .map(|e| self.row_json(e))
            .ok_or_else(|| ApiError::Internal("row vanished".to_owned()))
    }

    fn row_json(&self, e: &Entry) -> RowJson {
        let now = Instant::now();
        let view = self.protocol.row(&e.app);
        let (health, load, capacity, current, published) = match &view {
            Some(v) => (
                v.row.status.health(),
                v.row.status.load(),
                v.row.status.capacity(),
                Some(v.row.directive.current),
                v.published == Some(v.row),
            ),
            None => (e.health, e.load, e.capacity, None, false),
        };
        let handshake = view.and_then(|v| v.handshake).map(|h| HandshakeJson {
            target: h.target.into(),
            round: h.round,
            first_round: h.first_round,
            agreed: self.unit_names(&h.agreed),
            waiting: self.unit_names(&h.waiting),
            given_up: self.unit_names(&h.given_up),
            blocked: h.blocked,
            age_ms: millis(now.saturating_duration_since(h.started_at)),
        });
        RowJson {
            name: e.name.clone(),
            origin: match e.origin {
                Origin::Config => "config",
                Origin::Api => "api",
            }
            .to_owned(),
            present: current.is_some(),
            vip: e.app.vip,
            protocol: e.app.protocol.into(),
            endpoint: e.app.endpoint,
            info: e.app.info.clone(),
            health: health.into(),
            load,
            capacity,
            directive: DirectiveJson {
                target: e.target.into(),
                current: current.map(Into::into),
            },
            published,
            handshake,
            check: e.check.as_ref().map(|c| CheckJson {
                health: c.health.into(),
                load: c.load,
                detail: c.detail.clone(),
                age_ms: millis(now.saturating_duration_since(c.at)),
            }),
            service: match &e.service {
                Service::Unmanaged => None,
                Service::Unknown => Some(ServiceJson {
                    state: "unknown".to_owned(),
                    reason: None,
                }),
                Service::Up => Some(ServiceJson {
                    state: "up".to_owned(),
                    reason: None,
                }),
                Service::Down(reason) => Some(ServiceJson {
                    state: "down".to_owned(),
                    reason: Some(reason.clone()),
                }),
            },
        }
    }

    pub(super) fn view(&self) -> HostJson {
        HostJson {
            name: self.name.clone(),
            id: self.host().0,
            listen: self.listen,
            generation: self.protocol.published().generation(),
            published_rows: self.protocol.published().len(),
            units: self
                .units
                .iter()
                .map(|(id, u)| UnitJson {
                    name: u.name.clone(),
                    id: id.0,
                    address: u.address,
                })
                .collect(),
            rows: self.rows.iter().map(|e| self.row_json(e)).collect(),
            group: self.group.as_ref().map(GroupDriver::json),
        }
    }
}
