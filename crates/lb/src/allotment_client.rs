//! Asking health-cache units for allotments over UDP: what the classifier and router roles
//! share on a unit that does not run the health-cache role itself.
//!
//! [`AllotmentClient`] owns one authenticated UDP endpoint on the unit's address (an
//! ephemeral port) and speaks as the unit, so the health-cache units' trust check
//! (`crate::trust`: allotments only for configured units) lets it in. It asks one
//! health-cache unit at a time, in configuration order: a round of requests goes to the
//! unit that answered the round before; a round with no answer at all moves the next round
//! to the next unit. It takes answers only from configured health-cache units, and only
//! the allotment answers; everything else is dropped and counted.
//!
//! What to ask for and what to do with the answers is the roles' business: the classifier
//! asks for tokens per packet service (`crate::classifier_role`), the router for
//! percentages and the affinity-only endpoints per pool (`crate::router_remote`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_config::{Config, Role};
use switchyard_health::ServiceKey;
use switchyard_transport::{Throttle, UdpEndpoint};
use switchyard_wire::allotment::{AllotmentRequest, AllotmentScheme};
use switchyard_wire::{Codec, Message, SenderId, UnitId};

/// How often a log line about refused datagrams or socket errors may be written.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The configuration's health-cache units: id and control address (UDP), in order.
pub fn health_units(config: &Config) -> Vec<(UnitId, SocketAddr)> {
    config
        .units_with_role(Role::HealthCache)
        .map(|u| (u.id, u.control_addr()))
        .collect()
}

/// What the client did, for the roles' admin documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientCounters {
    /// Requests sent.
    pub requests: u64,
    /// Allotment answers taken.
    pub responses: u64,
    /// Datagrams dropped: not authentic, not from a health-cache unit, or not an answer.
    pub refused: u64,
    /// Rounds that moved to the next health-cache unit after an unanswered one.
    pub failovers: u64,
}

/// A UDP client of the health-cache units' allotment service.
#[derive(Debug)]
pub struct AllotmentClient {
    endpoint: UdpEndpoint,
    units: Vec<(UnitId, SocketAddr)>,
    current: usize,
    /// Whether the current round got an answer (true before the first round).
    answered: bool,
    next_id: u64,
    counters: ClientCounters,
    throttle: Throttle,
}

impl AllotmentClient {
    /// Binds the client's socket at `ip` (port 0), speaking as unit `own`, to ask `units`.
    pub async fn bind(
        ip: IpAddr,
        codec: Codec,
        own: UnitId,
        units: Vec<(UnitId, SocketAddr)>,
    ) -> std::io::Result<Self> {
        let endpoint =
            UdpEndpoint::bind(SocketAddr::new(ip, 0), codec, SenderId::from(own)).await?;
        Ok(Self {
            endpoint,
            units,
            current: 0,
            answered: true,
            next_id: 1,
            counters: ClientCounters::default(),
            throttle: Throttle::new(LOG_EVERY),
        })
    }

    /// The health-cache unit the rounds go to now.
    pub fn asking(&self) -> Option<SocketAddr> {
        self.units.get(self.current).map(|(_, addr)| *addr)
    }

    /// What the client did so far.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// Starts a round: one request per service in `keys` with `scheme`, each made into
    /// its message by `wrap` (`Message::from` for a plain [`AllotmentRequest`]). Moves to
    /// the next health-cache unit first when the previous round got no answer.
    pub async fn ask(
        &mut self,
        keys: impl IntoIterator<Item = ServiceKey>,
        scheme: AllotmentScheme,
        wrap: impl Fn(AllotmentRequest) -> Message,
    ) {
        if self.units.is_empty() {
            return;
        }
        if !self.answered {
            self.current = (self.current + 1) % self.units.len();
            self.counters.failovers += 1;
        }
        self.answered = false;
        let to = self.units[self.current].1;
        for key in keys {
            let request = AllotmentRequest {
                request_id: self.next_id,
                vip: key.vip,
                protocol: key.protocol,
                info: key.info,
                scheme,
                wanted_tokens: 0,
            };
            self.next_id += 1;
            self.counters.requests += 1;
            if let Err(error) = self.endpoint.send(to, &wrap(request)).await
                && let Some(suppressed) = self.throttle.event(Instant::now())
            {
                tracing::warn!(%to, %error, suppressed, "cannot ask a health-cache unit for an allotment");
            }
        }
    }

    /// [`AllotmentClient::recv`] on `client`; never resolves without one (a role's select
    /// loop then has no answers to wait for).
    pub async fn answer(client: &mut Option<Self>) -> Message {
        match client {
            Some(c) => c.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The next allotment answer (`AllotmentResponse` or `AffinityAllotmentResponse`)
    /// from a configured health-cache unit. Cancel-safe: a datagram is either returned or
    /// dropped whole.
    pub async fn recv(&mut self) -> Message {
        loop {
            let received = match self.endpoint.recv().await {
                Ok(r) => r,
                Err(error) => {
                    if let Some(suppressed) = self.throttle.event(Instant::now()) {
                        tracing::warn!(%error, suppressed, "allotment socket receive error");
                    }
                    // Do not spin on a persistent socket error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let from = received.from;
            match received.result {
                Ok(envelope)
                    if self
                        .units
                        .iter()
                        .any(|(id, _)| SenderId::from(*id) == envelope.sender)
                        && matches!(
                            envelope.message,
                            Message::AllotmentResponse(_) | Message::AffinityAllotmentResponse(_)
                        ) =>
                {
                    self.answered = true;
                    self.counters.responses += 1;
                    return envelope.message;
                }
                Ok(envelope) => {
                    self.counters.refused += 1;
                    if let Some(suppressed) = self.throttle.event(Instant::now()) {
                        tracing::warn!(%from, sender = %envelope.sender, kind = envelope.message.kind().name(), suppressed, "datagram on the allotment socket that is no health-cache unit's answer ignored");
                    }
                }
                Err(error) => {
                    self.counters.refused += 1;
                    if let Some(suppressed) = self.throttle.event(Instant::now()) {
                        tracing::warn!(%from, %error, suppressed, "allotment datagram rejected");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_wire::allotment::{Allotment, AllotmentResponse};
    use switchyard_wire::{MacKey, Protocol};

    fn codec() -> Codec {
        Codec::new(
            MacKey::derive(b"allotment client tests: not a production secret", "test")
                .expect("key"),
        )
    }

    fn key() -> ServiceKey {
        ServiceKey::new(
            "198.51.100.10:80".parse().expect("vip"),
            Protocol::Tcp,
            "shop",
        )
    }

    async fn unit(id: u32) -> UdpEndpoint {
        UdpEndpoint::bind("127.0.0.1:0".parse().expect("addr"), codec(), SenderId(id))
            .await
            .expect("bind")
    }

    fn answer(request: &AllotmentRequest) -> Message {
        Message::from(AllotmentResponse {
            request_id: request.request_id,
            vip: request.vip,
            protocol: request.protocol,
            info: request.info.clone(),
            allotment: Allotment::Percentages {
                entries: Vec::new(),
                duration_ms: 1000,
            },
        })
    }

    async fn request_at(unit: &mut UdpEndpoint) -> (SocketAddr, AllotmentRequest) {
        let received = tokio::time::timeout(Duration::from_secs(5), unit.recv())
            .await
            .expect("a request in time")
            .expect("receive");
        let Ok(envelope) = received.result else {
            panic!("authentic request expected")
        };
        let Message::AllotmentRequest(r) = envelope.message else {
            panic!("allotment request expected")
        };
        (received.from, r)
    }

    #[tokio::test]
    async fn unanswered_rounds_move_to_the_next_unit_and_strangers_are_ignored() {
        let mut first = unit(1).await;
        let mut second = unit(2).await;
        let stranger = unit(9).await;
        let units = vec![
            (UnitId(1), first.local_addr().expect("addr")),
            (UnitId(2), second.local_addr().expect("addr")),
        ];
        let mut client =
            AllotmentClient::bind("127.0.0.1".parse().expect("ip"), codec(), UnitId(5), units)
                .await
                .expect("client");
        assert_eq!(client.asking(), Some(first.local_addr().expect("addr")));

        // Round 1 reaches the first unit, which does not answer.
        client
            .ask([key()], AllotmentScheme::Percentages, Message::from)
            .await;
        let (_, r1) = request_at(&mut first).await;
        assert_eq!(
            (r1.scheme, r1.info.as_str()),
            (AllotmentScheme::Percentages, "shop")
        );
        // Round 2 goes to the second unit, which answers; a stranger's answer is dropped.
        client
            .ask([key()], AllotmentScheme::Percentages, Message::from)
            .await;
        let (from, r2) = request_at(&mut second).await;
        assert_ne!(r1.request_id, r2.request_id);
        stranger.send(from, &answer(&r2)).await.expect("send");
        second.send(from, &answer(&r2)).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), client.recv())
            .await
            .expect("an answer in time");
        assert_eq!(got, answer(&r2));
        // Answered: round 3 stays with the second unit.
        client
            .ask([key()], AllotmentScheme::Percentages, Message::from)
            .await;
        request_at(&mut second).await;
        let c = client.counters();
        assert_eq!(
            (c.requests, c.responses, c.refused, c.failovers),
            (3, 1, 1, 1)
        );
    }
}
