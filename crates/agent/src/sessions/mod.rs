//! Session tracking on the host (spec FIGS. 20–21): applications report sessions up and
//! down through the local API (`/v1/sessions`); each host keeps its session table — the
//! authoritative one — and tells the session-store unit it is bound to over a reliable
//! channel ([`channel`]: message ids, cumulative acknowledgements, resends, a resync of the
//! whole table on every new channel, rebinding when the unit stops answering).
//!
//! One driver task per host owns the host's [`SessionChannel`] and a UDP endpoint of its own
//! (an ephemeral port on the agent's listen address, speaking as the host), and serialises
//! API commands, datagrams and deadlines. Messages go to each session-store unit at
//! `address:[sessions] port`; messages from anyone but a configured session-store unit are
//! counted and ignored.

pub mod channel;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use switchyard_config::{Config, Role};
use switchyard_session_client::{ChannelView, HostSessions, Session, SessionEntry};
use switchyard_transport::UdpEndpoint;
use switchyard_wire::{AppId, Codec, HostId, SenderId, SessionId, UnitId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use channel::{
    BINDING_SEED, ChannelCounters, ChannelSettings, ReportError, SessionChannel, binding_order,
};

/// A request to a host's session driver.
#[derive(Debug)]
pub(crate) enum SessionCommand {
    /// Session up.
    Up(
        SessionId,
        Option<(String, AppId)>,
        oneshot::Sender<Result<bool, ReportError>>,
    ),
    /// Session down.
    Down(SessionId, oneshot::Sender<Result<(), ReportError>>),
    /// The table and channel.
    View(oneshot::Sender<HostSessions>),
}

/// One host's session driver as the API sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionHost {
    pub name: String,
    /// The host's configured services by name, for `app`.
    pub apps: Arc<BTreeMap<String, AppId>>,
    pub commands: mpsc::Sender<SessionCommand>,
}

#[derive(Debug, Clone)]
struct UnitAddr {
    name: String,
    addr: SocketAddr,
}

/// Starts one session driver per host.
pub(crate) async fn start(
    config: &Config,
    hosts: &[(String, HostId, BTreeMap<String, AppId>)],
    listen: SocketAddr,
    codec: Codec,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Vec<SessionHost>, Vec<JoinHandle<()>>)> {
    let sessions = config.sessions;
    let units: BTreeMap<UnitId, UnitAddr> = config
        .units_with_role(Role::SessionStore)
        .map(|u| {
            (
                u.id,
                UnitAddr {
                    name: u.name.clone(),
                    addr: SocketAddr::new(u.address, sessions.port),
                },
            )
        })
        .collect();
    let first_channel = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for (i, (name, id, apps)) in hosts.iter().enumerate() {
        let bind = SocketAddr::new(listen.ip(), 0);
        let endpoint = UdpEndpoint::bind(bind, codec.clone(), SenderId::from(*id))
            .await
            .with_context(|| format!("cannot bind {bind} for host {name}'s session channel"))?;
        let mut settings = ChannelSettings::new(
            *id,
            units.keys().copied().collect(),
            first_channel.wrapping_add((i as u64) << 32),
        );
        settings.resend_interval = sessions.resend_interval;
        settings.keepalive_interval = sessions.keepalive_interval;
        settings.rebind_after = sessions.rebind_after;
        let channel = SessionChannel::new(settings, Instant::now());
        let bound = channel
            .bound()
            .and_then(|u| units.get(&u))
            .map(|u| u.name.clone());
        tracing::info!(host = %name, bound = ?bound, units = units.len(), "session channel started");
        let (tx, rx) = mpsc::channel(256);
        out.push(SessionHost {
            name: name.clone(),
            apps: Arc::new(apps.clone()),
            commands: tx,
        });
        let driver = Driver {
            name: name.clone(),
            channel,
            endpoint,
            units: units.clone(),
        };
        tasks.push(tokio::spawn(driver.run(rx, shutdown.clone())));
    }
    Ok((out, tasks))
}

struct Driver {
    name: String,
    channel: SessionChannel,
    endpoint: UdpEndpoint,
    units: BTreeMap<UnitId, UnitAddr>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<SessionCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        self.send_queued().await;
        loop {
            let deadline = self
                .channel
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                () = &mut stop => break,
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    self.command(command);
                }
                received = self.endpoint.recv() => match received {
                    Ok(received) => match received.result {
                        Ok(envelope) => {
                            let unit = UnitId(envelope.sender.0);
                            if self.units.contains_key(&unit) {
                                self.channel.handle(Instant::now(), unit, &envelope.message);
                            } else {
                                tracing::debug!(host = %self.name, sender = %envelope.sender, "session message from a sender that is not a session-store unit; ignored");
                            }
                        }
                        Err(error) => tracing::debug!(host = %self.name, %error, from = %received.from, "session datagram rejected"),
                    },
                    Err(error) => {
                        tracing::warn!(host = %self.name, %error, "session endpoint receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = sleep_until(deadline) => self.channel.handle_timeout(Instant::now()),
            }
            self.send_queued().await;
        }
    }

    fn command(&mut self, command: SessionCommand) {
        let now = Instant::now();
        match command {
            SessionCommand::Up(session, app, reply) => {
                let _ = reply.send(self.channel.up(now, session, app));
            }
            SessionCommand::Down(session, reply) => {
                let _ = reply.send(self.channel.down(now, &session).map(drop));
            }
            SessionCommand::View(reply) => {
                let _ = reply.send(self.view(now));
            }
        }
    }

    fn view(&self, now: Instant) -> HostSessions {
        let c = self.channel.counters();
        let bound = self.channel.bound();
        HostSessions {
            host: self.name.clone(),
            id: self.channel.host().0,
            channel: ChannelView {
                unit: bound
                    .and_then(|u| self.units.get(&u))
                    .map(|u| u.name.clone()),
                unit_id: bound.map(|u| u.0),
                channel: self.channel.channel(),
                unacked: self.channel.unacked() as u64,
                in_sync: self.channel.in_sync(),
                last_heard_ms: u64::try_from(
                    now.saturating_duration_since(self.channel.last_heard())
                        .as_millis(),
                )
                .unwrap_or(u64::MAX),
                resyncs: c.resyncs,
                rebinds: c.rebinds,
                resync_requests: c.resync_requests,
                resent: c.resent,
            },
            count: self.channel.len() as u64,
            sessions: self
                .channel
                .sessions()
                .map(|(key, e)| SessionEntry {
                    session: Session::from_wire(&e.session),
                    app: e.app.as_ref().map(|(n, _)| n.clone()),
                    key: hex_key(key),
                })
                .collect(),
        }
    }

    async fn send_queued(&mut self) {
        while let Some((unit, message)) = self.channel.poll_transmit() {
            let Some(to) = self.units.get(&unit).map(|u| u.addr) else {
                continue;
            };
            if let Err(error) = self.endpoint.send(to, &message).await {
                tracing::debug!(host = %self.name, %error, "session message not sent");
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Lower-case hex of a key.
pub fn hex_key(key: &[u8]) -> String {
    use std::fmt::Write;
    key.iter()
        .fold(String::with_capacity(key.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
