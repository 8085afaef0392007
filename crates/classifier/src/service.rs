//! What the classifier knows about a virtual service: its VIP and
//! protocol, how packets reach hosts (full NAT with its source addresses and
//! port range, or half-NAT), its session affinity, and the key under which
//! it asks for allotments. Also the classifier-wide [`Settings`] (linger
//! times, idle timeouts).
//!
//! Plain values and their validation only; translating the configuration
//! file is [`ServiceSpec::from_config`]. Which hosts serve a service is not
//! here: that comes from allotments (`switchyard-health`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use switchyard_config::{Affinity, Delivery, Pool, Service, ServiceMode};
use switchyard_health::ServiceKey;
use switchyard_wire::Protocol;

use crate::error::ConfigError;

/// Identifies a service by what a packet carries: VIP address and port, and
/// protocol. IPv6 flow info and scope id are not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId {
    /// VIP address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl ServiceId {
    /// The id of `vip` / `protocol` (normalising the address).
    pub fn new(vip: SocketAddr, protocol: Protocol) -> Self {
        Self {
            vip: SocketAddr::new(vip.ip(), vip.port()),
            protocol,
        }
    }
}

/// An inclusive range of NAT source ports.
///
/// The range **must lie outside the unit's ephemeral port range**
/// (`net.ipv4.ip_local_port_range`, Linux default 32768–60999) and away from
/// ports the unit listens on: replies from hosts to a NAT port are taken by
/// the forwarder, so a local socket on the same address and port would lose
/// them (and the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The default range, 20000–32767: below Linux's default ephemeral
    /// range and above the usual service ports; 12 768 ports per (NAT
    /// source address, host endpoint, protocol).
    pub const DEFAULT: Self = Self {
        first: 20_000,
        last: 32_767,
    };

    /// `first..=last`; fails if empty or if it includes port 0.
    pub fn new(first: u16, last: u16) -> Result<Self, ConfigError> {
        if first == 0 || first > last {
            return Err(ConfigError::InvalidPortRange { first, last });
        }
        Ok(Self { first, last })
    }

    /// First port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// Last port (inclusive).
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Number of ports.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false (a range holds at least one port); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Full-NAT settings of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSpec {
    /// Forwarder-owned source addresses hosts see; a connection uses one of
    /// the same family as its host endpoint.
    pub sources: Vec<IpAddr>,
    /// Ports allocated on each source address.
    pub ports: PortRange,
}

/// How a service's packets reach the chosen host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverySpec {
    /// Full NAT: destination := host, source := (NAT source, allocated port).
    Nat(NatSpec),
    /// Half NAT: destination := host; the host sees the client.
    HalfNat {
        /// The unit's full-NAT sources, if it has any: a new connection whose route the
        /// forwarder's table cannot hold is served with full NAT on the slow path instead
        /// (the host then sees the NAT source), because the host's replies to a client
        /// address cannot be caught without a route. `None`: such connections are dropped
        /// and counted.
        overflow: Option<NatSpec>,
    },
}

/// Session affinity of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinitySpec {
    /// Every new connection is balanced afresh.
    None,
    /// New connections of a client IP go to the host its previous ones went
    /// to, while that binding is younger than `timeout` (refreshed by every
    /// new connection and by the end of each connection).
    ClientIp {
        /// Idle time after which the binding is forgotten.
        timeout: Duration,
    },
}

/// One virtual service as the classifier serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// VIP address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Delivery mode.
    pub delivery: DeliverySpec,
    /// Session affinity.
    pub affinity: AffinitySpec,
    /// Protocol-specific info of the allotment requests: the `app` under
    /// which the pool hosts' agents report the service's rows (a row is
    /// keyed by VIP, protocol and app; [`ServiceSpec::from_config`] takes it
    /// from the pool).
    pub allotment_info: String,
}

impl ServiceSpec {
    /// The packet-level service `service` of the configuration, served by
    /// `pool` (its `service.pool`), with the full-NAT settings (which live
    /// in the classifying unit's forwarder settings). `Ok(None)` for
    /// services that are not packet-level (request routing, migration).
    ///
    /// Allotments are asked for under the pool hosts' `app`, the info the
    /// agents report the rows with. One key per service: if the pool's hosts
    /// name different apps, the first host's is used and only the hosts of
    /// that app get connections ([`ServiceSpec::other_apps`] tells a driver
    /// to warn).
    pub fn from_config(
        service: &Service,
        pool: &Pool,
        nat: Option<NatSpec>,
    ) -> Result<Option<Self>, ConfigError> {
        let ServiceMode::Packet { delivery } = &service.mode else {
            return Ok(None);
        };
        let delivery = match delivery {
            Delivery::Nat => {
                DeliverySpec::Nat(nat.ok_or_else(|| ConfigError::MissingNatSources {
                    service: service.name.clone(),
                })?)
            }
            Delivery::HalfNat => DeliverySpec::HalfNat { overflow: nat },
            Delivery::Tunnel => {
                return Err(ConfigError::Unsupported {
                    service: service.name.clone(),
                    what: "tunnel delivery",
                });
            }
        };
        let affinity = match &service.affinity {
            Affinity::None => AffinitySpec::None,
            Affinity::ClientIp { timeout } => AffinitySpec::ClientIp { timeout: *timeout },
            _ => {
                return Err(ConfigError::Unsupported {
                    service: service.name.clone(),
                    what: "affinity other than none or client-ip",
                });
            }
        };
        let spec = Self {
            vip: service.vip,
            protocol: service.protocol,
            delivery,
            affinity,
            allotment_info: pool
                .hosts
                .first()
                .map(|h| h.app.clone())
                .unwrap_or_default(),
        };
        spec.validate()?;
        Ok(Some(spec))
    }

    /// Hosts of `pool` whose `app` differs from the allotment info: their
    /// rows are under another key, so they get no connections of this
    /// service.
    pub fn other_apps<'p>(&self, pool: &'p Pool) -> impl Iterator<Item = &'p str> {
        let info = self.allotment_info.clone();
        pool.hosts
            .iter()
            .filter(move |h| h.app != info)
            .map(|h| h.name.as_str())
    }

    /// The service's id.
    pub fn id(&self) -> ServiceId {
        ServiceId::new(self.vip, self.protocol)
    }

    /// The key its allotments are requested under.
    pub fn allotment_key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.protocol, self.allotment_info.clone())
    }

    /// Checks the spec on its own (not against other services).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vip.port() == 0 {
            return Err(ConfigError::InvalidVip(self.vip));
        }
        if let DeliverySpec::Nat(nat) = &self.delivery {
            if nat.sources.is_empty() {
                return Err(ConfigError::MissingNatSources {
                    service: self.vip.to_string(),
                });
            }
            // Validated again in case the range was built by hand.
            PortRange::new(nat.ports.first, nat.ports.last)?;
        }
        if let AffinitySpec::ClientIp { timeout } = self.affinity
            && timeout.is_zero()
        {
            return Err(ConfigError::InvalidSetting {
                field: "affinity.timeout",
                reason: "must be positive",
            });
        }
        Ok(())
    }
}

/// Classifier-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a route stays after a FIN (default 10 s): the peer's FIN,
    /// the last ACKs and retransmissions of the closing handshake still
    /// need it, and deleting at once would turn them into mid-connection
    /// misses (dropped) and leave hosts in LAST_ACK.
    pub fin_linger: Duration,
    /// How long a route stays after an RST (default 2 s): an RST ends the
    /// connection at once, but a retransmitted RST or data already in
    /// flight should still reach the host rather than be dropped.
    pub rst_linger: Duration,
    /// Routes of TCP flows idle this long are deleted (default 15 min).
    pub tcp_idle_timeout: Duration,
    /// Routes of UDP pseudo-connections idle this long are deleted
    /// (default 30 s).
    pub udp_idle_timeout: Duration,
    /// A flow the forwarder could not take (table full) is offered again at
    /// most this often, on its next miss (default 1 s).
    pub plumb_retry_interval: Duration,
    /// Tokens asked for per allotment request (0: the handler's default).
    pub wanted_tokens: u32,
    /// Mixed into where each NAT port pool starts. A driver passes a random value per
    /// process, so a restarted classifier does not hand out the ports its predecessor just
    /// used — hosts may still hold those connections in TIME_WAIT (default 0: a fixed start,
    /// for tests).
    pub nat_port_salt: u64,
    /// A session store is attached (the DAM): a new connection of a client-IP affinity
    /// service whose client has no local binding is parked while the driver looks the
    /// client's session up ([`crate::Action::LookupSession`]), and admitted to the session's
    /// host when it is allotted (default false).
    pub session_lookups: bool,
    /// How long a parked connection waits for the session store's answer before it is
    /// balanced without one (default 250 ms).
    pub session_lookup_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            fin_linger: Duration::from_secs(10),
            rst_linger: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(15 * 60),
            udp_idle_timeout: Duration::from_secs(30),
            plumb_retry_interval: Duration::from_secs(1),
            wanted_tokens: 0,
            nat_port_salt: 0,
            session_lookups: false,
            session_lookup_timeout: Duration::from_millis(250),
        }
    }
}

impl Settings {
    /// The idle timeout of `protocol`'s flows.
    pub fn idle_timeout(&self, protocol: Protocol) -> Duration {
        match protocol {
            Protocol::Tcp => self.tcp_idle_timeout,
            Protocol::Udp => self.udp_idle_timeout,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, d) in [
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            ("udp_idle_timeout", self.udp_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::InvalidSetting {
                    field,
                    reason: "must be positive",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(mode: ServiceMode, affinity: Affinity) -> Service {
        Service {
            name: "web".into(),
            vip: SocketAddr::from(([198, 19, 0, 10], 80)),
            protocol: Protocol::Tcp,
            mode,
            pool: "p".into(),
            affinity,
        }
    }

    fn pool(apps: &[&str]) -> Pool {
        Pool {
            name: "p".into(),
            health_check: None,
            hosts: apps
                .iter()
                .enumerate()
                .map(|(i, app)| switchyard_config::Host {
                    id: switchyard_config::HostId(u32::try_from(i).expect("few hosts") + 1),
                    name: format!("h{i}"),
                    address: SocketAddr::from(([10, 1, 0, 1], 8080)),
                    app: (*app).into(),
                    capacity: 50,
                    service_manager: None,
                })
                .collect(),
        }
    }

    #[test]
    fn allotments_are_asked_for_under_the_pool_hosts_app() {
        let s = service(
            ServiceMode::Packet {
                delivery: Delivery::HalfNat,
            },
            Affinity::None,
        );
        let shop = pool(&["shop", "shop"]);
        let spec = ServiceSpec::from_config(&s, &shop, None)
            .expect("valid")
            .expect("packet service");
        assert_eq!(spec.allotment_key().info, "shop");
        assert_eq!(spec.other_apps(&shop).count(), 0);
        let mixed = pool(&["shop", "cart", "shop"]);
        let spec = ServiceSpec::from_config(&s, &mixed, None)
            .expect("valid")
            .expect("packet service");
        assert_eq!(spec.allotment_key().info, "shop");
        assert_eq!(spec.other_apps(&mixed).collect::<Vec<_>>(), ["h1"]);
    }

    #[test]
    fn from_config_maps_packet_services_only() {
        let p = pool(&["shop"]);
        let nat = NatSpec {
            sources: vec![IpAddr::from([10, 1, 255, 1])],
            ports: PortRange::DEFAULT,
        };
        let s = service(
            ServiceMode::Packet {
                delivery: Delivery::Nat,
            },
            Affinity::ClientIp {
                timeout: Duration::from_secs(30),
            },
        );
        let spec = ServiceSpec::from_config(&s, &p, Some(nat.clone()))
            .expect("valid")
            .expect("packet service");
        assert_eq!(spec.delivery, DeliverySpec::Nat(nat));
        assert_eq!(
            spec.affinity,
            AffinitySpec::ClientIp {
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(spec.allotment_key().info, "shop");
        assert!(matches!(
            ServiceSpec::from_config(&s, &p, None),
            Err(ConfigError::MissingNatSources { .. })
        ));
        let half = service(
            ServiceMode::Packet {
                delivery: Delivery::HalfNat,
            },
            Affinity::None,
        );
        assert_eq!(
            ServiceSpec::from_config(&half, &p, None)
                .expect("valid")
                .map(|s| s.delivery),
            Some(DeliverySpec::HalfNat { overflow: None })
        );
        let tunnel = service(
            ServiceMode::Packet {
                delivery: Delivery::Tunnel,
            },
            Affinity::None,
        );
        assert!(ServiceSpec::from_config(&tunnel, &p, None).is_err());
        let cookie = service(
            ServiceMode::Packet {
                delivery: Delivery::HalfNat,
            },
            Affinity::Cookie {
                name: "c".into(),
                timeout: Duration::from_secs(1),
            },
        );
        assert!(ServiceSpec::from_config(&cookie, &p, None).is_err());
        let request = service(
            ServiceMode::Request {
                listener: "l".into(),
            },
            Affinity::None,
        );
        assert_eq!(ServiceSpec::from_config(&request, &p, None), Ok(None));
    }
}
