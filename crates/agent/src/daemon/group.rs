//! A host driver's part in its host group (spec FIG. 16), present only when the
//! configuration names the host in a `[[host_groups]]` entry: the group machine
//! ([`HostGroup`]), the heartbeat relay ([`HeartbeatRelay`]) and the gossip endpoint.
//!
//! - Gossip has its own [`UdpEndpoint`] on the group's `gossip_port`, speaking as the host
//!   (same codec and sender id as the host's agent endpoint) with its own replay state, so
//!   gossip frames are never opened by the agent endpoint's receiver and vice versa.
//! - The host driver ([`super::host`]) feeds gossip datagrams and timer deadlines to the
//!   group, routes every message of its protocol machine through the relay, and hands the
//!   heartbeats that members send to its agent endpoint to the relay. This module owns the
//!   counting and logging of what the group refuses and reports.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_transport::{Received, Throttle, TransportCounters, UdpEndpoint};
use switchyard_wire::health::Heartbeat;
use switchyard_wire::{HostId, Message, SenderId};

use crate::api::model::GroupJson;
use crate::group::relay::RelayCounters;
use crate::group::{
    GroupCounters, GroupEvent, GroupSettings, HeartbeatRelay, HostGroup, RelayMode, RelayRejected,
    RelaySettings,
};

/// At most one log line per this interval for each kind of repeated complaint.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters the driver keeps about its group beside the group machine's and the relay's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupDriverCounters {
    /// Authentic datagrams on the gossip port that are not group gossip.
    pub gossip_not_gossip: u64,
    /// Gossip datagrams that could not be sent.
    pub gossip_send_errors: u64,
    /// Relayed messages whose destination has no address (not a configured member or unit).
    pub unroutable: u64,
}

/// Everything countable about a host's group, for `/v1/counters` and `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct GroupCountersView {
    /// The group's name.
    pub name: String,
    /// Whether this host leads (or is alone).
    pub leading: bool,
    /// Live members, this host included.
    pub members: usize,
    /// The group machine's counters.
    pub group: GroupCounters,
    /// The relay's counters.
    pub relay: RelayCounters,
    /// The driver's counters.
    pub driver: GroupDriverCounters,
    /// The gossip endpoint's transport counters.
    pub transport: Arc<TransportCounters>,
}

/// One host's membership in its group, with its gossip endpoint. See the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct GroupDriver {
    host: String,
    pub(crate) group: HostGroup,
    pub(crate) relay: HeartbeatRelay,
    endpoint: UdpEndpoint,
    /// Names of the configured members, by id.
    names: BTreeMap<HostId, String>,
    counters: GroupDriverCounters,
    refused_log: Throttle,
    rejected_log: Throttle,
    relay_log: Throttle,
    send_log: Throttle,
    recv_log: Throttle,
}

impl GroupDriver {
    /// Joins the group of `settings` at `now`: binds the gossip endpoint on
    /// `settings.me.gossip` with `endpoint`'s codec and sender id (the host's agent
    /// endpoint), and queues the first announcements.
    pub(crate) async fn start(
        host: &str,
        settings: GroupSettings,
        endpoint: &UdpEndpoint,
        codec: switchyard_wire::Codec,
        heartbeat_interval: Duration,
        names: BTreeMap<HostId, String>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let me = settings.me;
        let name = settings.group.clone();
        let gossip = UdpEndpoint::bind(me.gossip, codec, endpoint.sender())
            .await
            .with_context(|| {
                format!(
                    "host {host}: cannot bind the gossip address {} of host group {name:?}",
                    me.gossip
                )
            })?;
        let group = HostGroup::new(settings, Instant::now())
            .with_context(|| format!("host {host}: host group {name:?}"))?;
        let relay = HeartbeatRelay::new(RelaySettings::new(me.host, heartbeat_interval));
        Ok(Self {
            host: host.to_owned(),
            group,
            relay,
            endpoint: gossip,
            names,
            counters: GroupDriverCounters::default(),
            refused_log: Throttle::new(LOG_EVERY),
            rejected_log: Throttle::new(LOG_EVERY),
            relay_log: Throttle::new(LOG_EVERY),
            send_log: Throttle::new(LOG_EVERY),
            recv_log: Throttle::new(LOG_EVERY),
        })
    }

    /// The gossip endpoint's local address.
    pub(crate) fn gossip_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Waits for the next gossip datagram.
    pub(crate) async fn recv(&mut self) -> io::Result<Received> {
        self.endpoint.recv().await
    }

    /// A host's name, or its id when it is not a configured member.
    fn name_of(&self, host: HostId) -> String {
        self.names
            .get(&host)
            .cloned()
            .unwrap_or_else(|| host.to_string())
    }

    /// Handles one datagram from the gossip endpoint.
    pub(crate) async fn on_datagram(&mut self, received: io::Result<Received>) {
        let now = Instant::now();
        let received = match received {
            Ok(r) => r,
            Err(error) => {
                if let Some(suppressed) = self.recv_log.event(now) {
                    tracing::warn!(host = %self.host, group = %self.group.name(), %error, suppressed, "cannot receive gossip");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        };
        let envelope = match received.result {
            Ok(envelope) => envelope,
            Err(error) => {
                if let Some(suppressed) = self.rejected_log.event(now) {
                    tracing::warn!(host = %self.host, group = %self.group.name(), from = %received.from, %error, suppressed, "gossip datagram rejected");
                }
                return;
            }
        };
        let Message::GroupGossip(gossip) = &envelope.message else {
            self.counters.gossip_not_gossip += 1;
            if let Some(suppressed) = self.refused_log.event(now) {
                tracing::info!(host = %self.host, group = %self.group.name(), from = %received.from, message = envelope.message.kind().name(), suppressed, "message on the gossip port that is not group gossip ignored");
            }
            return;
        };
        if let Err(reason) = self.group.handle_gossip(now, envelope.sender, gossip)
            && let Some(suppressed) = self.refused_log.event(now)
        {
            tracing::info!(host = %self.host, group = %self.group.name(), from = %received.from, %reason, suppressed, "gossip refused");
        }
    }

    /// Hands a heartbeat a member sent to this host's agent address to the relay.
    pub(crate) fn on_member_heartbeat(
        &mut self,
        now: Instant,
        from: SenderId,
        from_addr: SocketAddr,
        hb: Heartbeat,
    ) -> Result<(), RelayRejected> {
        let view = self.group.view();
        let result = self.relay.handle_member_heartbeat(now, &view, from, hb);
        if let Err(reason) = &result
            && let Some(suppressed) = self.relay_log.event(now)
        {
            tracing::info!(host = %self.host, group = %self.group.name(), from = %from_addr, %reason, suppressed, "member heartbeat refused");
        }
        result
    }

    /// Counts a relayed message that has no destination address.
    pub(crate) fn unroutable(&mut self, to: HostId) {
        self.counters.unroutable += 1;
        if let Some(suppressed) = self.send_log.event(Instant::now()) {
            tracing::warn!(host = %self.host, group = %self.group.name(), to = %self.name_of(to), suppressed, "no agent address for the group member; heartbeat dropped");
        }
    }

    /// Sends every queued gossip datagram and logs every queued group event.
    pub(crate) async fn flush(&mut self) {
        while let Some((to, gossip)) = self.group.poll_gossip() {
            if let Err(error) = self.endpoint.send(to, &Message::from(gossip)).await {
                self.counters.gossip_send_errors += 1;
                if let Some(suppressed) = self.send_log.event(Instant::now()) {
                    tracing::warn!(host = %self.host, group = %self.group.name(), %to, %error, suppressed, "cannot send gossip");
                }
            }
        }
        while let Some(event) = self.group.poll_event() {
            self.log_event(&event);
        }
    }

    fn log_event(&self, event: &GroupEvent) {
        let group = self.group.name();
        let host = &self.host;
        match event {
            GroupEvent::MemberUp(member) => {
                let member = self.name_of(*member);
                tracing::info!(%host, %group, %member, live = self.group.members().len(), "host group member {member} is up");
            }
            GroupEvent::MemberDown(member) => {
                let member = self.name_of(*member);
                tracing::info!(%host, %group, %member, live = self.group.members().len(), "host group member {member} is down");
            }
            GroupEvent::LeaderChanged { from, to } => {
                let (from, to_name) = (self.name_of(*from), self.name_of(*to));
                if *to == self.group.me() {
                    tracing::info!(%host, %group, previous = %from, "host group leader is now {to_name} (this host): it sends the group's consolidated heartbeats");
                } else {
                    tracing::info!(%host, %group, previous = %from, "host group leader is now {to_name}: this host's heartbeats go through it");
                }
            }
            GroupEvent::Rejoined { generation } => {
                tracing::info!(%host, %group, generation, "this host was declared down by its host group and rejoined");
            }
        }
    }

    /// Leaves the group (clean shutdown) and sends the farewell gossip.
    pub(crate) async fn leave(&mut self) {
        self.group.leave(Instant::now());
        self.flush().await;
        tracing::info!(host = %self.host, group = %self.group.name(), "left the host group");
    }

    /// The group as the local API shows it.
    pub(crate) fn json(&self) -> GroupJson {
        let view = self.group.view();
        let mode = match self.relay.mode(&view) {
            RelayMode::Direct => "direct",
            RelayMode::Lead => "lead",
            RelayMode::Member { .. } => "member",
        };
        GroupJson {
            name: self.group.name().to_owned(),
            leader: self.name_of(view.leader),
            leader_id: view.leader.0,
            members: view.live.iter().map(|h| self.name_of(*h)).collect(),
            configured: self.names.values().cloned().collect(),
            mode: mode.to_owned(),
            gossip: self.gossip_addr().ok(),
            generation: self.group.identity().generation(),
        }
    }

    /// The counters as the local API shows them.
    pub(crate) fn counters(&self) -> GroupCountersView {
        let view = self.group.view();
        GroupCountersView {
            name: self.group.name().to_owned(),
            leading: view.is_leader(),
            members: view.live.len(),
            group: self.group.counters(),
            relay: self.relay.counters().clone(),
            driver: self.counters.clone(),
            transport: Arc::clone(self.endpoint.counters()),
        }
    }
}
