//! Allotment protocol (message types `0x2_`, spec FIG. 18).
//!
//! A classifier asks the health and load handler which application
//! endpoints to send new connections of a virtual service to, and gets back
//! either a number of tokens per endpoint (each token admits one connection
//! within a validity period) or a share per endpoint in basis points.
//!
//! A request router also needs the endpoints that take *no new* requests but
//! still serve the ones that have affinity to them (directive target
//! `draining`: spec FIG. 14, "packets for existing requests/connections should
//! continue"), which an allotment cannot say: an endpoint without a grant may
//! be draining, failing or gone. [`AffinityAllotmentRequest`] (`0x22`) asks
//! for the allotment together with that list, and [`AffinityAllotmentResponse`]
//! (`0x23`) carries both. They are new message types rather than a new field
//! of the existing pair because decoders here are strict (a payload must be
//! consumed exactly): a field appended to `AllotmentResponse` would make every
//! classifier of an earlier build reject the answers of a newer unit. With a
//! new pair, earlier classifiers never see it, and a unit of an earlier build
//! rejects the new request as an unknown type (the router then keeps its last
//! allotments for a grace period and falls back to its static configuration).

use std::net::SocketAddr;

use crate::encoding::{Reader, Wire, Writer, wire_enum};
use crate::error::{DecodeError, ValueError};
use crate::types::{HostId, MAX_APP_INFO_LEN, Protocol};

/// Percentage allotments are in basis points; their sum is at most 100 %.
pub const MAX_BASIS_POINTS: u16 = 10_000;

const UNBOUNDED: usize = usize::MAX;

wire_enum! {
    /// How an allotment is expressed.
    pub enum AllotmentScheme {
        /// A number of connections per endpoint.
        Tokens = 0,
        /// A share of connections per endpoint.
        Percentages = 1,
    }
}

/// A classifier asks for an allotment of application endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllotmentRequest {
    /// Correlates the response.
    pub request_id: u64,
    /// Virtual service address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Protocol-specific detail (as in [`crate::AppId::info`]).
    pub info: String,
    /// The scheme wanted.
    pub scheme: AllotmentScheme,
    /// Tokens wanted (token scheme; 0 otherwise).
    pub wanted_tokens: u32,
}

/// The answer to an [`AllotmentRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllotmentResponse {
    /// The request answered.
    pub request_id: u64,
    /// Virtual service address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Protocol-specific detail.
    pub info: String,
    /// The allotment.
    pub allotment: Allotment,
}

/// [`AllotmentRequest`] from a request router that also wants the endpoints
/// that take only affinitized traffic ([`AffinityAllotmentResponse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityAllotmentRequest {
    /// The allotment asked for.
    pub request: AllotmentRequest,
}

/// The answer to an [`AffinityAllotmentRequest`]: the allotment, and the
/// endpoints of alive hosts that get no share of new connections but still
/// serve the ones with affinity to them. An endpoint with a share is not
/// listed; one in neither list takes nothing (failing, inactive, unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityAllotmentResponse {
    /// The allotment, as an [`AllotmentResponse`] would carry it.
    pub response: AllotmentResponse,
    /// Endpoints that keep only their affinitized traffic.
    pub affinity_only: Vec<AffinityOnly>,
}

wire_enum! {
    /// Why an endpoint takes only affinitized traffic.
    pub enum AffinityOnlyReason {
        /// Its directive target is `draining`.
        Draining = 0,
        /// Healthy and active, but allotted no share (no spare capacity).
        NoShare = 1,
    }
}

/// An endpoint that takes only the traffic with affinity to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityOnly {
    /// Application endpoint address and port.
    pub endpoint: SocketAddr,
    /// The host it runs on.
    pub host: HostId,
    /// Why it gets no share.
    pub reason: AffinityOnlyReason,
}

/// Endpoints allotted to a classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allotment {
    /// Connection tokens per endpoint.
    Tokens {
        /// Grants.
        entries: Vec<TokenGrant>,
        /// How long unused tokens stay valid.
        valid_for_ms: u32,
    },
    /// Shares of new connections per endpoint; the basis points sum to at
    /// most [`MAX_BASIS_POINTS`].
    Percentages {
        /// Grants.
        entries: Vec<PercentageGrant>,
        /// How long the shares apply.
        duration_ms: u32,
    },
}

/// Tokens for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrant {
    /// Application endpoint address and port.
    pub endpoint: SocketAddr,
    /// The host it runs on.
    pub host: HostId,
    /// Connections admitted.
    pub tokens: u32,
}

/// Share for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentageGrant {
    /// Application endpoint address and port.
    pub endpoint: SocketAddr,
    /// The host it runs on.
    pub host: HostId,
    /// Share of new connections, in 1/100 of a percent.
    pub basis_points: u16,
}

impl Allotment {
    fn validate(&self) -> Result<(), ValueError> {
        match self {
            Self::Tokens { .. } => Ok(()),
            Self::Percentages { entries, .. } => {
                let sum: u64 = entries.iter().map(|e| u64::from(e.basis_points)).sum();
                ValueError::check_range(
                    "Allotment.basis_points (sum)",
                    sum,
                    0,
                    MAX_BASIS_POINTS.into(),
                )
            }
        }
    }
}

impl Wire for TokenGrant {
    fn encode(&self, w: &mut Writer) {
        w.socket_addr(&self.endpoint);
        self.host.encode(w);
        w.u32(self.tokens);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            endpoint: r.socket_addr("TokenGrant.endpoint")?,
            host: HostId::decode(r)?,
            tokens: r.u32("TokenGrant.tokens")?,
        })
    }
}

impl Wire for PercentageGrant {
    fn encode(&self, w: &mut Writer) {
        w.socket_addr(&self.endpoint);
        self.host.encode(w);
        w.u16(self.basis_points);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            endpoint: r.socket_addr("PercentageGrant.endpoint")?,
            host: HostId::decode(r)?,
            basis_points: r.u16("PercentageGrant.basis_points")?,
        })
    }
}

impl Wire for Allotment {
    fn encode(&self, w: &mut Writer) {
        w.check(self.validate());
        match self {
            Self::Tokens {
                entries,
                valid_for_ms,
            } => {
                AllotmentScheme::Tokens.encode(w);
                w.list_of("Allotment.entries", entries, UNBOUNDED);
                w.u32(*valid_for_ms);
            }
            Self::Percentages {
                entries,
                duration_ms,
            } => {
                AllotmentScheme::Percentages.encode(w);
                w.list_of("Allotment.entries", entries, UNBOUNDED);
                w.u32(*duration_ms);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let allotment = match AllotmentScheme::decode(r)? {
            AllotmentScheme::Tokens => Self::Tokens {
                entries: r.list_of("Allotment.entries", UNBOUNDED)?,
                valid_for_ms: r.u32("Allotment.valid_for_ms")?,
            },
            AllotmentScheme::Percentages => Self::Percentages {
                entries: r.list_of("Allotment.entries", UNBOUNDED)?,
                duration_ms: r.u32("Allotment.duration_ms")?,
            },
        };
        r.check(allotment.validate())?;
        Ok(allotment)
    }
}

impl Wire for AllotmentRequest {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.request_id);
        w.socket_addr(&self.vip);
        self.protocol.encode(w);
        w.string("AllotmentRequest.info", &self.info, MAX_APP_INFO_LEN);
        self.scheme.encode(w);
        w.u32(self.wanted_tokens);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            request_id: r.u64("AllotmentRequest.request_id")?,
            vip: r.socket_addr("AllotmentRequest.vip")?,
            protocol: Protocol::decode(r)?,
            info: r.string("AllotmentRequest.info", MAX_APP_INFO_LEN)?,
            scheme: AllotmentScheme::decode(r)?,
            wanted_tokens: r.u32("AllotmentRequest.wanted_tokens")?,
        })
    }
}

impl Wire for AllotmentResponse {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.request_id);
        w.socket_addr(&self.vip);
        self.protocol.encode(w);
        w.string("AllotmentResponse.info", &self.info, MAX_APP_INFO_LEN);
        self.allotment.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            request_id: r.u64("AllotmentResponse.request_id")?,
            vip: r.socket_addr("AllotmentResponse.vip")?,
            protocol: Protocol::decode(r)?,
            info: r.string("AllotmentResponse.info", MAX_APP_INFO_LEN)?,
            allotment: Allotment::decode(r)?,
        })
    }
}

impl Wire for AffinityOnly {
    fn encode(&self, w: &mut Writer) {
        w.socket_addr(&self.endpoint);
        self.host.encode(w);
        self.reason.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            endpoint: r.socket_addr("AffinityOnly.endpoint")?,
            host: HostId::decode(r)?,
            reason: AffinityOnlyReason::decode(r)?,
        })
    }
}

impl Wire for AffinityAllotmentRequest {
    fn encode(&self, w: &mut Writer) {
        self.request.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            request: AllotmentRequest::decode(r)?,
        })
    }
}

impl Wire for AffinityAllotmentResponse {
    fn encode(&self, w: &mut Writer) {
        self.response.encode(w);
        w.list_of(
            "AffinityAllotmentResponse.affinity_only",
            &self.affinity_only,
            UNBOUNDED,
        );
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            response: AllotmentResponse::decode(r)?,
            affinity_only: r.list_of("AffinityAllotmentResponse.affinity_only", UNBOUNDED)?,
        })
    }
}
