//! The classifier of switchyard (spec FIGS. 26–30) as a sans-I/O state
//! machine: it decides, on the first packet of a connection, which host
//! serves it, and keeps the forwarder's routes in step with the
//! connections' lives.
//!
//! This crate owns the *decision*: session affinity, token consumption,
//! NAT port allocation, the connection inventory, route lingering and
//! expiry, and the counters of all of it. It owns no sockets, maps, rings
//! or clocks: every input carries `now`, outputs are [`Action`]s taken with
//! [`Classifier::poll_action`], deadlines come from
//! [`Classifier::poll_timeout`]. It must not depend on the forwarder's BPF
//! loading: flows and routes are `switchyard-wire`'s [`FlowTuple`] and
//! [`plumbing::Route`](switchyard_wire::plumbing::Route) (what the route
//! plumbing protocol carries); the driver converts to the forwarder's
//! `Flow`/`Route`.
//!
//! Layout: [`decision`] (the machine, its inputs and actions),
//! [`inventory`] (connections), [`nat_ports`] (full-NAT source ports),
//! [`affinity`] (client-IP bindings), [`service`] (service specs and
//! settings), [`counters`], [`error`].
//!
//! # Driving the classifier
//!
//! A driver (the forwarder agent, or `switchyard lb`) owns one
//! [`Classifier`], the forwarder (local `Dataplane` or a plumbing client)
//! and an [`AllotmentSource`](switchyard_health::AllotmentSource) (the
//! unit's health cache). It:
//!
//! 1. turns each forwarder event into an input: a miss into
//!    [`Classifier::on_miss`] (parse the flow and TCP flags, keep the frame
//!    and ingress interface); a final packet into [`Classifier::on_final`]
//!    (map a reply-direction flow with [`Inventory::flow_of_reply`] first);
//!    periodically, for each `(protocol, timeout)` of
//!    [`Classifier::idle_timeouts`], the forwarder's idle flows into
//!    [`Classifier::on_idle`];
//! 2. after every input drains [`Classifier::poll_action`] **in order**:
//!    `PlumbRoute` → add the route (if that fails, call
//!    [`Classifier::on_plumb_failed`] *before* polling the next action, so
//!    the packet that follows is switched to the slow path); `Deliver` →
//!    reinject the frame into the forwarder ([`DeliveryPath::Forwarder`])
//!    or rewrite and send it itself ([`DeliveryPath::SlowPath`]);
//!    `DeleteRoute` → remove the route;
//! 3. sleeps until the next event or [`Classifier::poll_timeout`] and then
//!    calls [`Classifier::handle_timeout`].
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! use switchyard_classifier::{
//!     Action, AffinitySpec, Classifier, DeliverySpec, DeliveryPath, FinalReason, MissPacket, Side,
//!     NatSpec, PortRange, ServiceSpec, Settings, TcpFlags, Transport,
//! };
//! use switchyard_health::AllotmentSource;
//! use switchyard_wire::allotment::{Allotment, AllotmentRequest, AllotmentResponse, TokenGrant};
//! use switchyard_wire::plumbing::Delivery;
//! use switchyard_wire::{FlowTuple, HostId, Protocol};
//!
//! /// One healthy host (a real driver passes the unit's health cache).
//! struct OneHost;
//! impl AllotmentSource for OneHost {
//!     fn allot(&mut self, r: &AllotmentRequest, _now: Instant) -> AllotmentResponse {
//!         AllotmentResponse {
//!             request_id: r.request_id,
//!             vip: r.vip,
//!             protocol: r.protocol,
//!             info: r.info.clone(),
//!             allotment: Allotment::Tokens {
//!                 entries: vec![TokenGrant {
//!                     endpoint: SocketAddr::from(([10, 1, 0, 1], 8080)),
//!                     host: HostId(1),
//!                     tokens: 100,
//!                 }],
//!                 valid_for_ms: 2000,
//!             },
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let mut classifier = Classifier::new(Settings::default())?;
//! let vip = SocketAddr::from(([198, 19, 0, 10], 80));
//! classifier.set_service(ServiceSpec {
//!     vip,
//!     protocol: Protocol::Tcp,
//!     delivery: DeliverySpec::Nat(NatSpec {
//!         sources: vec!["10.1.255.1".parse()?],
//!         ports: PortRange::DEFAULT,
//!     }),
//!     affinity: AffinitySpec::None,
//!     allotment_info: String::new(),
//! })?;
//!
//! // The forwarder missed a SYN.
//! let flow = FlowTuple::new(Protocol::Tcp, SocketAddr::from(([192, 0, 2, 7], 40000)), vip)?;
//! let syn = MissPacket {
//!     flow,
//!     transport: Transport::Tcp(TcpFlags::from_bits(TcpFlags::SYN)),
//!     ingress_ifindex: 3,
//!     frame: vec![0; 74],
//! };
//! classifier.on_miss(now, &mut OneHost, syn);
//!
//! // Plumb, then deliver the SYN itself.
//! let Some(Action::PlumbRoute(route)) = classifier.poll_action() else { panic!() };
//! assert_eq!(route.target, SocketAddr::from(([10, 1, 0, 1], 8080)));
//! assert!(matches!(route.delivery, Delivery::Nat { source } if source.ip().to_string() == "10.1.255.1"));
//! let Some(Action::Deliver(d)) = classifier.poll_action() else { panic!() };
//! assert_eq!((d.path, d.ingress_ifindex), (DeliveryPath::Forwarder, 3));
//! assert_eq!(classifier.nat_ports_in_use(), 1);
//!
//! // Both sides close: the route lingers, then goes with its NAT port.
//! classifier.on_final(now, &flow, FinalReason::Fin, Side::Client);
//! classifier.on_final(now, &flow, FinalReason::Fin, Side::Host);
//! let later = classifier.poll_timeout().expect("linger deadline");
//! assert_eq!(later, now + Duration::from_secs(10));
//! classifier.handle_timeout(later);
//! assert_eq!(classifier.poll_action(), Some(Action::DeleteRoute(flow)));
//! assert_eq!(classifier.nat_ports_in_use(), 0);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod affinity;
pub mod counters;
pub mod decision;
pub mod error;
pub mod inventory;
pub mod nat_ports;
pub mod service;
pub mod sessions;
mod timers;

pub use affinity::{AffinityKey, AffinityTable, Binding};
pub use counters::{Counters, Malformed, MidConnection, Rejections, ServiceCounters};
pub use decision::{
    Action, Classifier, Deliver, DeliveryPath, FoundRoute, MissPacket, NoRouteLookup, PlumbFailure,
    RouteLookup, TcpFlags, Transport, host_sees,
};
pub use error::ConfigError;
pub use inventory::{Connection, ConnectionState, FinalReason, Inventory, Side};
pub use nat_ports::{NatError, NatPorts};
pub use service::{
    AffinitySpec, DeliverySpec, NatSpec, PortRange, ServiceId, ServiceSpec, Settings,
};

pub use switchyard_wire::FlowTuple;
