//! Validation of the local API's request documents, before anything reaches a host's
//! driver: row names, value ranges, application ids that fit the wire. Every error is a
//! 400 with a message that names the field and the allowed range.

use switchyard_health::AppKey;
use switchyard_wire::AppId;
use switchyard_wire::health::{Health, MAX_CAPACITY, MAX_LOAD};
use switchyard_wire::types::MAX_APP_INFO_LEN;

use super::ApiError;
use super::model::{NewRow, StatusUpdate};

/// Rows one host may have that were added through the API (configured rows do not
/// count). Beyond it, `POST /v1/hosts/{host}/apps` answers 409: a runaway client must not
/// grow the table, its snapshots and every unit's cache without bound.
pub const MAX_API_ROWS_PER_HOST: usize = 4096;

/// Longest row name, in bytes.
pub const MAX_ROW_NAME_LEN: usize = 64;

/// Default capacity of a row added through the API without one.
const DEFAULT_CAPACITY: u8 = switchyard_config::DEFAULT_CAPACITY;

/// A validated `POST /v1/hosts/{host}/apps` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidRow {
    /// The row's name, trimmed.
    pub name: String,
    /// The application id.
    pub app: AppId,
    /// Its wire key.
    pub key: AppKey,
    /// Initial health.
    pub health: Health,
    /// Initial load.
    pub load: u8,
    /// Capacity.
    pub capacity: u8,
}

/// A validated `PUT …/status` document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ValidStatus {
    /// New health.
    pub health: Option<Health>,
    /// A raw load sample.
    pub load: Option<u8>,
    /// New capacity.
    pub capacity: Option<u8>,
}

/// Checks a new row.
pub(crate) fn new_row(row: NewRow) -> Result<ValidRow, ApiError> {
    let name = row.name.trim().to_owned();
    if name.is_empty() || name.len() > MAX_ROW_NAME_LEN || name.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "name must be 1 to {MAX_ROW_NAME_LEN} characters without '/'"
        )));
    }
    if row.info.len() > MAX_APP_INFO_LEN {
        return Err(ApiError::BadRequest(format!(
            "info: {} bytes, at most {MAX_APP_INFO_LEN} allowed",
            row.info.len()
        )));
    }
    let capacity = capacity_value(row.capacity)?.unwrap_or(DEFAULT_CAPACITY);
    let load = load_value(row.load)?.unwrap_or(0);
    let health = row.health.map_or(Health::Unknown, Health::from);
    let app = AppId {
        vip: row.vip,
        protocol: row.protocol.into(),
        endpoint: row.endpoint,
        info: row.info,
    };
    let key = AppKey::new(&app).map_err(|e| ApiError::BadRequest(format!("info: {e}")))?;
    Ok(ValidRow {
        name,
        app,
        key,
        health,
        load,
        capacity,
    })
}

/// Checks an application's report.
pub(crate) fn status_update(update: StatusUpdate) -> Result<ValidStatus, ApiError> {
    Ok(ValidStatus {
        health: update.health.map(Health::from),
        load: load_value(update.load)?,
        capacity: capacity_value(update.capacity)?,
    })
}

fn capacity_value(value: Option<i64>) -> Result<Option<u8>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|c| *c <= MAX_CAPACITY)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "capacity {v} is out of range: expected 0 to {MAX_CAPACITY}"
                ))
            }),
    }
}

fn load_value(value: Option<i64>) -> Result<Option<u8>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|l| *l <= MAX_LOAD)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "load {v} is out of range: expected 0 to {MAX_LOAD} (percent)"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::ApiProtocol;

    fn row(name: &str, info: &str) -> NewRow {
        NewRow {
            name: name.to_owned(),
            vip: "198.51.100.10:80".parse().expect("vip"),
            protocol: ApiProtocol::Tcp,
            endpoint: "127.0.0.1:8080".parse().expect("endpoint"),
            info: info.to_owned(),
            capacity: None,
            health: None,
            load: None,
        }
    }

    #[test]
    fn names_ranges_and_info_are_checked() {
        let ok = new_row(row("  api ", "")).expect("valid");
        assert_eq!(ok.name, "api");
        assert_eq!(ok.capacity, DEFAULT_CAPACITY);
        assert_eq!(ok.health, Health::Unknown);
        for bad in ["", "a/b", &"x".repeat(65)] {
            assert!(new_row(row(bad, "")).is_err(), "{bad:?} accepted");
        }
        assert!(new_row(row("big", &"i".repeat(MAX_APP_INFO_LEN))).is_ok());
        let err = new_row(row("big", &"i".repeat(MAX_APP_INFO_LEN + 1))).expect_err("too long");
        assert!(err.to_string().contains("at most 1024"), "{err}");
        let update = |load, capacity| StatusUpdate {
            health: None,
            load,
            capacity,
        };
        assert!(status_update(update(Some(100), Some(99))).is_ok());
        assert!(status_update(update(Some(101), None)).is_err());
        assert!(status_update(update(None, Some(100))).is_err());
        assert!(status_update(update(Some(-1), None)).is_err());
    }
}
