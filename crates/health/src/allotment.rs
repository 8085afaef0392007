//! Allotments (FIG. 18, consumed as in FIG. 30): which application
//! endpoints new connections of a virtual service go to.
//!
//! Unit side: [`allot`] turns the cached rows of one service into a token
//! or percentage allotment. Eligible endpoints are those of alive hosts
//! whose health is healthy and whose directive *target* is active; each
//! weighs its spare capacity, `capacity × (100 − load)`. Draining,
//! inactive, failing, unknown and fully loaded endpoints get nothing.
//! Shares are split by the largest-remainder method, so they sum exactly
//! to the total.
//!
//! For request routers, [`allot_with_affinity`] adds the endpoints that get
//! no share but still serve traffic with affinity to them: healthy ones
//! whose directive target is draining, and healthy active ones allotted
//! nothing (no spare capacity).
//!
//! Consumer side (classifier, request router): [`TokenAllotment`] spends
//! one token per connection from the endpoint with the most tokens left
//! (the spec's suggestion; ties by order) until the tokens run out or go
//! stale; [`PercentageAllotment`] uses smooth weighted selection so the
//! actual shares stay close to the allotted ones at every point, until the
//! duration ends. [`AllotmentSource`] is the seam between consumers and
//! whoever computes allotments (a local cache now, a remote unit later).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_wire::HostId;
use switchyard_wire::allotment::{
    AffinityAllotmentResponse, AffinityOnly, AffinityOnlyReason, Allotment, AllotmentRequest,
    AllotmentResponse, AllotmentScheme, MAX_BASIS_POINTS, PercentageGrant, TokenGrant,
};
use switchyard_wire::health::{DirectiveState, Health, MAX_LOAD, Row};

use crate::error::HealthError;

/// How a unit computes allotments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllotmentPolicy {
    /// Tokens handed out when a request asks for 0.
    pub default_tokens: u32,
    /// Validity of token allotments.
    pub token_valid_for: Duration,
    /// Duration of percentage allotments.
    pub percentage_duration: Duration,
}

impl Default for AllotmentPolicy {
    fn default() -> Self {
        Self {
            default_tokens: 100,
            token_valid_for: Duration::from_secs(2),
            percentage_duration: Duration::from_secs(5),
        }
    }
}

/// Something that answers allotment requests: a local
/// [`crate::ConsolidatedCache`], or a client of a remote unit.
pub trait AllotmentSource {
    /// The allotment for `request` at `now`.
    fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse;
}

/// Spare capacity of an endpoint: `capacity × (100 − load)` if it is
/// healthy and its target directive is active, else 0.
pub fn spare_capacity(row: &Row) -> u64 {
    if row.status.health() != Health::Healthy || row.directive.target != DirectiveState::Active {
        return 0;
    }
    u64::from(row.status.capacity()) * u64::from(MAX_LOAD.saturating_sub(row.status.load()))
}

/// Splits `total` over `weights` in proportion, by the largest-remainder
/// method: floors first, then one more unit to the largest remainders (ties
/// to the earlier weight). The result sums to `total` unless every weight
/// is 0 (then all shares are 0).
pub fn largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(total) * u128::from(*w);
        let floor = exact / sum;
        given += floor;
        // floor ≤ total, so it fits in u64.
        shares.push(u64::try_from(floor).unwrap_or(u64::MAX));
        remainders.push((exact % sum, i));
    }
    // Largest remainder first; equal remainders keep input order.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = u128::from(total) - given;
    for &(_, i) in remainders
        .iter()
        .take(usize::try_from(left).unwrap_or(usize::MAX))
    {
        shares[i] += 1;
    }
    shares
}

fn millis(d: Duration) -> u32 {
    u32::try_from(crate::millis(d)).unwrap_or(u32::MAX)
}

/// Computes the allotment for `request` over `endpoints` (each endpoint's
/// host and cached row; callers pass only rows of alive hosts for the
/// requested service).
pub fn allot<'a>(
    request: &AllotmentRequest,
    endpoints: impl IntoIterator<Item = (HostId, &'a Row)>,
    policy: &AllotmentPolicy,
) -> AllotmentResponse {
    let eligible: Vec<(HostId, SocketAddr, u64)> = endpoints
        .into_iter()
        .map(|(host, row)| (host, row.app.endpoint, spare_capacity(row)))
        .filter(|(_, _, w)| *w > 0)
        .collect();
    let weights: Vec<u64> = eligible.iter().map(|e| e.2).collect();
    let allotment = match request.scheme {
        AllotmentScheme::Tokens => {
            let total = match request.wanted_tokens {
                0 => policy.default_tokens,
                n => n,
            };
            let shares = largest_remainder(u64::from(total), &weights);
            Allotment::Tokens {
                entries: eligible
                    .iter()
                    .zip(shares)
                    .filter(|(_, s)| *s > 0)
                    .map(|(&(host, endpoint, _), s)| TokenGrant {
                        endpoint,
                        host,
                        // Each share is at most `total`, a u32.
                        tokens: u32::try_from(s).unwrap_or(u32::MAX),
                    })
                    .collect(),
                valid_for_ms: millis(policy.token_valid_for),
            }
        }
        AllotmentScheme::Percentages => {
            let shares = largest_remainder(u64::from(MAX_BASIS_POINTS), &weights);
            Allotment::Percentages {
                entries: eligible
                    .iter()
                    .zip(shares)
                    .filter(|(_, s)| *s > 0)
                    .map(|(&(host, endpoint, _), s)| PercentageGrant {
                        endpoint,
                        host,
                        // Each share is at most 10 000.
                        basis_points: u16::try_from(s).unwrap_or(MAX_BASIS_POINTS),
                    })
                    .collect(),
                duration_ms: millis(policy.percentage_duration),
            }
        }
    };
    AllotmentResponse {
        request_id: request.request_id,
        vip: request.vip,
        protocol: request.protocol,
        info: request.info.clone(),
        allotment,
    }
}

/// [`allot`], plus the endpoints that get no share but keep the traffic with
/// affinity to them: healthy with directive target draining
/// ([`AffinityOnlyReason::Draining`]), or healthy and active but allotted
/// nothing ([`AffinityOnlyReason::NoShare`]). Failing, unknown and inactive
/// endpoints are in neither list.
pub fn allot_with_affinity<'a>(
    request: &AllotmentRequest,
    endpoints: impl IntoIterator<Item = (HostId, &'a Row)>,
    policy: &AllotmentPolicy,
) -> AffinityAllotmentResponse {
    let endpoints: Vec<(HostId, &Row)> = endpoints.into_iter().collect();
    let response = allot(request, endpoints.iter().copied(), policy);
    let granted: Vec<(HostId, SocketAddr)> = match &response.allotment {
        Allotment::Tokens { entries, .. } => entries.iter().map(|e| (e.host, e.endpoint)).collect(),
        Allotment::Percentages { entries, .. } => {
            entries.iter().map(|e| (e.host, e.endpoint)).collect()
        }
    };
    let affinity_only = endpoints
        .iter()
        .filter(|(_, row)| row.status.health() == Health::Healthy)
        .filter_map(|&(host, row)| {
            let reason = match row.directive.target {
                DirectiveState::Draining => AffinityOnlyReason::Draining,
                DirectiveState::Active if !granted.contains(&(host, row.app.endpoint)) => {
                    AffinityOnlyReason::NoShare
                }
                _ => return None,
            };
            Some(AffinityOnly {
                endpoint: row.app.endpoint,
                host,
                reason,
            })
        })
        .collect();
    AffinityAllotmentResponse {
        response,
        affinity_only,
    }
}

/// An application endpoint chosen for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Application address and port.
    pub endpoint: SocketAddr,
    /// The host it runs on.
    pub host: HostId,
}

/// A token allotment being spent by a classifier.
#[derive(Debug, Clone)]
pub struct TokenAllotment {
    entries: Vec<(Endpoint, u32)>,
    /// Tokens granted to each entry (same order).
    granted: Vec<u32>,
    remaining: u64,
    expires_at: Option<Instant>,
}

impl TokenAllotment {
    /// Starts spending a token allotment received at `now`; fails for a
    /// percentage allotment.
    pub fn new(response: &AllotmentResponse, now: Instant) -> Result<Self, HealthError> {
        let Allotment::Tokens {
            entries,
            valid_for_ms,
        } = &response.allotment
        else {
            return Err(HealthError::WrongScheme {
                expected: AllotmentScheme::Tokens,
            });
        };
        let entries: Vec<(Endpoint, u32)> = entries
            .iter()
            .map(|g| {
                (
                    Endpoint {
                        endpoint: g.endpoint,
                        host: g.host,
                    },
                    g.tokens,
                )
            })
            .collect();
        Ok(Self {
            remaining: entries.iter().map(|e| u64::from(e.1)).sum(),
            granted: entries.iter().map(|e| e.1).collect(),
            entries,
            expires_at: now.checked_add(Duration::from_millis(u64::from(*valid_for_ms))),
        })
    }

    /// Spends one token from the endpoint with the largest share of its
    /// grant left (ties: the earlier entry). `None` once the tokens are used
    /// up or stale.
    ///
    /// So every prefix of the draws follows the grant within about one
    /// token per endpoint: an allotment that expires half spent (a service
    /// with few new connections per validity period) still spreads them by
    /// weight, where drawing from the fullest endpoint first would give all
    /// of them to the heaviest.
    pub fn draw(&mut self, now: Instant) -> Option<Endpoint> {
        if self.is_expired(now) {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, (_, left)) in self.entries.iter().enumerate() {
            // left_i / granted_i > left_b / granted_b, without division.
            let fuller = |b: usize| {
                u64::from(*left) * u64::from(self.granted[b])
                    > u64::from(self.entries[b].1) * u64::from(self.granted[i])
            };
            if *left > 0 && best.is_none_or(fuller) {
                best = Some(i);
            }
        }
        let (endpoint, left) = &mut self.entries[best?];
        *left -= 1;
        self.remaining -= 1;
        Some(*endpoint)
    }

    /// Tokens left (also when stale).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Tokens left for each endpoint.
    pub fn entries(&self) -> &[(Endpoint, u32)] {
        &self.entries
    }

    /// Whether the tokens are stale at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// Whether [`Self::draw`] would return `None` at `now`: time for a new
    /// request.
    pub fn is_exhausted(&self, now: Instant) -> bool {
        self.remaining == 0 || self.is_expired(now)
    }
}

/// A percentage allotment being applied by a classifier.
#[derive(Debug, Clone)]
pub struct PercentageAllotment {
    /// Endpoint, basis points, running credit.
    entries: Vec<(Endpoint, i64, i64)>,
    total: i64,
    expires_at: Option<Instant>,
}

impl PercentageAllotment {
    /// Starts applying a percentage allotment received at `now`; fails for
    /// a token allotment.
    pub fn new(response: &AllotmentResponse, now: Instant) -> Result<Self, HealthError> {
        let Allotment::Percentages {
            entries,
            duration_ms,
        } = &response.allotment
        else {
            return Err(HealthError::WrongScheme {
                expected: AllotmentScheme::Percentages,
            });
        };
        let entries: Vec<(Endpoint, i64, i64)> = entries
            .iter()
            .filter(|g| g.basis_points > 0)
            .map(|g| {
                (
                    Endpoint {
                        endpoint: g.endpoint,
                        host: g.host,
                    },
                    i64::from(g.basis_points),
                    0,
                )
            })
            .collect();
        Ok(Self {
            total: entries.iter().map(|e| e.1).sum(),
            entries,
            expires_at: now.checked_add(Duration::from_millis(u64::from(*duration_ms))),
        })
    }

    /// Chooses the endpoint for one new connection by smooth weighted
    /// selection: every endpoint earns its share, the one with the most
    /// credit is chosen and pays the total. `None` once the duration is
    /// over, or if nothing was allotted.
    pub fn draw(&mut self, now: Instant) -> Option<Endpoint> {
        if self.is_expired(now) || self.entries.is_empty() {
            return None;
        }
        let mut best = 0;
        for i in 0..self.entries.len() {
            self.entries[i].2 += self.entries[i].1;
            if self.entries[i].2 > self.entries[best].2 {
                best = i;
            }
        }
        self.entries[best].2 -= self.total;
        Some(self.entries[best].0)
    }

    /// Whether the duration is over at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use switchyard_wire::health::{AppStatus, Directive};
    use switchyard_wire::{AppId, Protocol};

    use super::*;

    fn row(port: u16, health: Health, load: u8, capacity: u8, target: DirectiveState) -> Row {
        Row {
            app: AppId {
                vip: SocketAddr::from(([10, 0, 0, 1], 80)),
                protocol: Protocol::Tcp,
                endpoint: SocketAddr::from(([192, 168, 1, port as u8], port)),
                info: String::new(),
            },
            status: AppStatus::new(health, load, capacity).expect("valid"),
            directive: Directive {
                target,
                current: DirectiveState::Active,
            },
        }
    }

    fn request(scheme: AllotmentScheme, wanted_tokens: u32) -> AllotmentRequest {
        AllotmentRequest {
            request_id: 7,
            vip: SocketAddr::from(([10, 0, 0, 1], 80)),
            protocol: Protocol::Tcp,
            info: String::new(),
            scheme,
            wanted_tokens,
        }
    }

    #[test]
    fn largest_remainder_sums_exactly_and_breaks_ties_by_order() {
        assert_eq!(largest_remainder(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(100, &[40, 35, 25]), vec![40, 35, 25]);
        assert_eq!(largest_remainder(7, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(0, &[3, 4]), vec![0, 0]);
        let s = largest_remainder(10_000, &[80 * 50, 50 * 50, 20 * 50]);
        assert_eq!(s, vec![5334, 3333, 1333]);
        assert_eq!(s.iter().sum::<u64>(), 10_000);
        let big = largest_remainder(u64::from(u32::MAX), &[u64::MAX, u64::MAX, 1]);
        assert_eq!(big.iter().sum::<u64>(), u64::from(u32::MAX));
    }

    #[test]
    fn spare_capacity_excludes_ineligible_endpoints() {
        use DirectiveState::*;
        use Health::*;
        assert_eq!(spare_capacity(&row(1, Healthy, 20, 50, Active)), 4000);
        assert_eq!(spare_capacity(&row(1, Healthy, 100, 50, Active)), 0);
        assert_eq!(spare_capacity(&row(1, Healthy, 20, 0, Active)), 0);
        assert_eq!(spare_capacity(&row(1, Failing, 20, 50, Active)), 0);
        assert_eq!(spare_capacity(&row(1, Unknown, 20, 50, Active)), 0);
        assert_eq!(spare_capacity(&row(1, Healthy, 20, 50, Draining)), 0);
        assert_eq!(spare_capacity(&row(1, Healthy, 20, 50, Inactive)), 0);
    }

    #[test]
    fn token_allotment_follows_spare_capacity() {
        use DirectiveState::*;
        let rows = [
            row(1, Health::Healthy, 20, 50, Active),
            row(2, Health::Healthy, 50, 50, Active),
            row(3, Health::Healthy, 80, 50, Active),
            row(4, Health::Healthy, 0, 50, Draining),
        ];
        let resp = allot(
            &request(AllotmentScheme::Tokens, 0),
            rows.iter().map(|r| (HostId(1), r)),
            &AllotmentPolicy::default(),
        );
        assert_eq!(resp.request_id, 7);
        let Allotment::Tokens {
            entries,
            valid_for_ms,
        } = resp.allotment
        else {
            panic!("tokens")
        };
        assert_eq!(valid_for_ms, 2000);
        let tokens: Vec<u32> = entries.iter().map(|e| e.tokens).collect();
        assert_eq!(tokens, vec![54, 33, 13]);
        assert!(entries.iter().all(|e| e.endpoint.port() != 4));
    }

    #[test]
    fn percentages_sum_to_ten_thousand_or_are_empty() {
        use DirectiveState::*;
        let rows = [
            row(1, Health::Healthy, 10, 30, Active),
            row(2, Health::Healthy, 33, 70, Active),
            row(3, Health::Healthy, 90, 99, Active),
        ];
        let resp = allot(
            &request(AllotmentScheme::Percentages, 0),
            rows.iter().map(|r| (HostId(1), r)),
            &AllotmentPolicy::default(),
        );
        let Allotment::Percentages {
            entries,
            duration_ms,
        } = resp.allotment
        else {
            panic!("percentages")
        };
        assert_eq!(duration_ms, 5000);
        assert_eq!(
            entries
                .iter()
                .map(|e| u32::from(e.basis_points))
                .sum::<u32>(),
            10_000
        );
        let none = allot(
            &request(AllotmentScheme::Percentages, 0),
            [(HostId(1), &row(1, Health::Failing, 10, 30, Active))],
            &AllotmentPolicy::default(),
        );
        assert_eq!(
            none.allotment,
            Allotment::Percentages {
                entries: vec![],
                duration_ms: 5000
            }
        );
    }

    #[test]
    fn affinity_allotment_lists_draining_and_unshared_endpoints() {
        use DirectiveState::*;
        use Health::*;
        let rows = [
            row(1, Healthy, 20, 50, Active),
            row(2, Healthy, 20, 50, Draining),
            row(3, Healthy, 100, 50, Active),
            row(4, Failing, 0, 50, Draining),
            row(5, Healthy, 0, 50, Inactive),
        ];
        let resp = allot_with_affinity(
            &request(AllotmentScheme::Percentages, 0),
            rows.iter()
                .map(|r| (HostId(u32::from(r.app.endpoint.port())), r)),
            &AllotmentPolicy::default(),
        );
        let Allotment::Percentages { entries, .. } = &resp.response.allotment else {
            panic!("percentages")
        };
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.host, e.basis_points))
                .collect::<Vec<_>>(),
            vec![(HostId(1), 10_000)]
        );
        assert_eq!(
            resp.affinity_only
                .iter()
                .map(|a| (a.host, a.reason))
                .collect::<Vec<_>>(),
            vec![
                (HostId(2), AffinityOnlyReason::Draining),
                (HostId(3), AffinityOnlyReason::NoShare),
            ]
        );
        // The same allotment as a plain request gets.
        let plain = allot(
            &request(AllotmentScheme::Percentages, 0),
            rows.iter()
                .map(|r| (HostId(u32::from(r.app.endpoint.port())), r)),
            &AllotmentPolicy::default(),
        );
        assert_eq!(resp.response, plain);
    }

    fn token_response(tokens: &[u32], valid_for_ms: u32) -> AllotmentResponse {
        let req = request(AllotmentScheme::Tokens, 0);
        AllotmentResponse {
            request_id: 1,
            vip: req.vip,
            protocol: req.protocol,
            info: String::new(),
            allotment: Allotment::Tokens {
                entries: tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| TokenGrant {
                        endpoint: SocketAddr::from(([192, 168, 1, 1], i as u16)),
                        host: HostId(i as u32),
                        tokens: *t,
                    })
                    .collect(),
                valid_for_ms,
            },
        }
    }

    #[test]
    fn tokens_are_drawn_in_proportion_to_the_grant_until_exhausted() {
        let t0 = Instant::now();
        let mut a = TokenAllotment::new(&token_response(&[2, 3, 0], 1000), t0).expect("tokens");
        assert_eq!(a.remaining(), 5);
        let hosts: Vec<u32> = std::iter::from_fn(|| a.draw(t0).map(|e| e.host.0)).collect();
        // All of both grants left: the earlier entry (host 0); then 1/2 < 3/3: host 1;
        // 1/2 < 2/3: host 1; 1/2 > 1/3: host 0; host 1.
        assert_eq!(hosts, vec![0, 1, 1, 0, 1]);
        assert_eq!(a.remaining(), 0);
        assert!(a.is_exhausted(t0));
        assert_eq!(a.draw(t0), None);
    }

    #[test]
    fn every_prefix_of_the_draws_follows_the_grant() {
        let t0 = Instant::now();
        let grant = [60u32, 30, 10];
        let mut a = TokenAllotment::new(&token_response(&grant, 1000), t0).expect("tokens");
        let mut drawn = [0u32; 3];
        for n in 1..=100u32 {
            let host = a.draw(t0).expect("tokens left").host.0 as usize;
            drawn[host] += 1;
            for (k, g) in grant.iter().enumerate() {
                // Within one token of n × share.
                let ideal = f64::from(n) * f64::from(*g) / 100.0;
                assert!(
                    (f64::from(drawn[k]) - ideal).abs() <= 1.0,
                    "after {n} draws {drawn:?}"
                );
            }
        }
        assert_eq!(drawn, grant);
    }

    #[test]
    fn stale_tokens_are_not_spent() {
        let t0 = Instant::now();
        let mut a = TokenAllotment::new(&token_response(&[5], 1000), t0).expect("tokens");
        assert!(a.draw(t0 + Duration::from_millis(999)).is_some());
        assert_eq!(a.draw(t0 + Duration::from_millis(1000)), None);
        assert_eq!(a.remaining(), 4);
        assert!(a.is_exhausted(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn wrong_scheme_is_rejected() {
        let t0 = Instant::now();
        let tokens = token_response(&[1], 10);
        assert!(matches!(
            PercentageAllotment::new(&tokens, t0),
            Err(HealthError::WrongScheme { .. })
        ));
    }

    #[test]
    fn percentage_draws_track_the_shares_closely_and_expire() {
        let t0 = Instant::now();
        let req = request(AllotmentScheme::Percentages, 0);
        let resp = AllotmentResponse {
            request_id: 1,
            vip: req.vip,
            protocol: req.protocol,
            info: String::new(),
            allotment: Allotment::Percentages {
                entries: [5000u16, 3000, 2000, 0]
                    .iter()
                    .enumerate()
                    .map(|(i, bp)| PercentageGrant {
                        endpoint: SocketAddr::from(([192, 168, 1, 1], i as u16)),
                        host: HostId(i as u32),
                        basis_points: *bp,
                    })
                    .collect(),
                duration_ms: 5000,
            },
        };
        let mut a = PercentageAllotment::new(&resp, t0).expect("percentages");
        let mut counts = [0u32; 4];
        for n in 1..=1000u32 {
            let e = a.draw(t0).expect("endpoint");
            counts[e.host.0 as usize] += 1;
            // Smooth: after every draw each share is within one connection.
            for (i, bp) in [5000u32, 3000, 2000, 0].iter().enumerate() {
                let ideal = f64::from(n) * f64::from(*bp) / 10_000.0;
                assert!(
                    (f64::from(counts[i]) - ideal).abs() <= 1.0,
                    "{n}: {counts:?}"
                );
            }
        }
        assert_eq!(counts, [500, 300, 200, 0]);
        assert_eq!(a.draw(t0 + Duration::from_secs(5)), None);
    }
}
