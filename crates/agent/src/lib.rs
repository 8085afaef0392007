//! The switchyard host agent's status determination: owns how the agent learns the health,
//! load and presence of its host's applications, and reports it as [`StatusEvent`]s on a
//! channel.
//!
//! - [`checks`]: the built-in probes (TCP connect, HTTP GET, exec of a command), the
//!   rise/fall state machine, and the [`CheckRunner`] task that probes one application
//!   endpoint every interval.
//! - [`service`]: service-manager watching (a systemd unit's state, a pid file's process),
//!   Linux's counterpart of the spec's control manager; the [`ServiceWatcher`] task.
//! - [`status`]: the event type and [`spawn_status_tasks`], which starts every runner and
//!   watcher a host's rows need (from [`switchyard_config::Config::agent_apps`]).
//!
//! - [`daemon`]: the `switchyard agent` daemon, which feeds these events into one protocol
//!   machine per host (`switchyard-health`) and talks to the LB units over UDP;
//!   [`api`]: its local HTTP API (loopback TCP and a Unix socket), see `docs/AGENT.md`.
//!
//! The status modules need a tokio runtime and touch the network only through the probes.
//!
//! ```no_run
//! # async fn demo(config: switchyard_config::Config) {
//! use switchyard_agent::{StatusOptions, spawn_status_tasks};
//!
//! let (events, mut rx) = tokio::sync::mpsc::channel(64);
//! let apps = config.agent_apps("web-1");
//! let _tasks = spawn_status_tasks(&apps, &events, &StatusOptions::default());
//! while let Some(event) = rx.recv().await {
//!     println!("{event:?}");
//! }
//! # }
//! ```

pub mod api;
pub mod checks;
pub mod daemon;
pub mod group;
pub mod service;
pub mod sessions;
pub mod status;

pub use checks::{CheckRunner, ProbeResult, RiseFall};
pub use service::{ServiceState, ServiceWatcher};
pub use status::{StatusEvent, StatusOptions, StatusTasks, TaskGuard, spawn_status_tasks};
