//! The request router's session directory when the unit also runs the session-store role:
//! [`DamSessions`] answers the router's lookups from the unit's DAM
//! ([`SessionStoreHandle::lookup`]: a local copy at once, else the owners are asked) and
//! records its client-IP and header affinity choices as atoms that expire after the
//! affinity timeout ([`SessionStoreHandle::record`]). The router bounds every lookup
//! (`switchyard_router::LOOKUP_TIMEOUT`) and counts the results.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_router::{LookupFuture, SessionDirectory, SessionEntry};
use switchyard_wire::{HostId, SessionId};

use crate::SessionStoreHandle;

/// The unit's session store as the router's [`SessionDirectory`].
#[derive(Debug, Clone)]
pub struct DamSessions(pub SessionStoreHandle);

impl SessionDirectory for DamSessions {
    fn lookup<'a>(&'a self, session: &'a SessionId) -> LookupFuture<'a> {
        Box::pin(async move {
            let found = self.0.lookup(&session.key()).await?;
            Some(SessionEntry {
                host: found.host,
                zombie: found.zombie,
                expires_in: expires_in(found.atom.meta.expires_at_ms, unix_ms_now()),
            })
        })
    }

    fn record(&self, session: &SessionId, host: HostId, ttl: Duration) {
        self.0.record(&session.key(), host, Some(ttl));
    }
}

/// Time left until `expires_at_ms` (Unix ms; 0 never expires) at `now_ms`.
fn expires_in(expires_at_ms: u64, now_ms: u64) -> Option<Duration> {
    (expires_at_ms != 0).then(|| Duration::from_millis(expires_at_ms.saturating_sub(now_ms)))
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_comes_from_the_atom_expiry() {
        assert_eq!(expires_in(0, 5_000), None);
        assert_eq!(expires_in(8_000, 5_000), Some(Duration::from_secs(3)));
        assert_eq!(expires_in(4_000, 5_000), Some(Duration::ZERO));
    }
}
