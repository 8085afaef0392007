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
//! It does not own the health and load table, the protocol with the LB units, or the local
//! API: the agent daemon feeds these events into the protocol core (`switchyard-health`).
//! Everything here needs a tokio runtime; nothing here touches the network except the probes
//! themselves.
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

pub mod checks;
pub mod group;
pub mod service;
pub mod status;

pub use checks::{CheckRunner, ProbeResult, RiseFall};
pub use service::{ServiceState, ServiceWatcher};
pub use status::{StatusEvent, StatusOptions, StatusTasks, TaskGuard, spawn_status_tasks};
