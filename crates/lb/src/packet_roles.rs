//! Starts the packet-level roles of a unit — forwarder and classifier — and wires them: in
//! one unit the forwarder's events reach the classifier over a channel and the classifier
//! drives the data plane directly; a forwarder-only unit talks to its classifier unit over the
//! plumbing port; a classifier without a local health cache asks a health-cache unit for
//! allotments over UDP.
//!
//! A unit that lists the forwarder role without `forwarder.interfaces` does not start the
//! forwarder (the configuration is still valid: host agents read the same file); it says so
//! in the log.

use std::time::Duration;

use switchyard_config::{Config, Role, Unit};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::HealthCacheHandle;
use crate::classifier_role::{self, Allotments, ClassifierError, ClassifierStats};
use crate::forwarder_role::{self, ClassifierLink, ForwarderError, ForwarderHandle};

/// The packet roles a unit runs.
#[derive(Debug, Default)]
pub struct PacketRoles {
    /// The data plane, if the forwarder runs.
    pub forwarder: Option<ForwarderHandle>,
    /// The classifier's published state, if it runs.
    pub classifier: Option<ClassifierStats>,
    /// Their tasks.
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Names of the roles started.
    pub running: Vec<&'static str>,
}

/// Why a packet role did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketRoleError {
    /// The forwarder.
    #[error(transparent)]
    Forwarder(#[from] ForwarderError),
    /// The classifier.
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    /// The cluster key.
    #[error("cannot derive the cluster key: {0}")]
    Key(#[from] switchyard_wire::KeyError),
}

/// Starts the unit's forwarder and classifier roles, if it has them.
pub async fn start(
    config: &Config,
    unit: &Unit,
    health: Option<HealthCacheHandle>,
    sessions: Option<crate::SessionStoreHandle>,
    stop: watch::Receiver<bool>,
) -> Result<PacketRoles, PacketRoleError> {
    let mut roles = PacketRoles::default();
    let forwards = unit.has_role(Role::Forwarder);
    let classifies = unit.has_role(Role::Classifier);
    if !forwards && !classifies {
        return Ok(roles);
    }
    let codec = switchyard_transport::cluster_codec(config)?;
    let (tx, rx) = mpsc::channel(classifier_role::INPUT_QUEUE);
    if classifies {
        // Checked here so a bad configuration stops the unit; the thread builds its own.
        classifier_role::build(config, unit, sessions.is_some())?;
    }
    if forwards {
        if unit.forwarder.interfaces.is_empty() {
            tracing::warn!(
                unit = %unit.name,
                "forwarder role configured without interfaces; the forwarder is not started: add [cluster.units.forwarder] interfaces = [\"eth0\", …]"
            );
        } else {
            let link = match config.classifier_of(unit) {
                Some(c) if c.id == unit.id => ClassifierLink::Local(tx),
                Some(c) => ClassifierLink::Remote {
                    unit: c.id,
                    addr: c.plumbing_addr(),
                },
                None => {
                    return Err(ClassifierError::Config(format!(
                        "unit {} forwards but has no classifier",
                        unit.name
                    ))
                    .into());
                }
            };
            let remote = matches!(link, ClassifierLink::Remote { .. });
            let (handle, task) =
                forwarder_role::start(config, unit, link, codec.clone(), stop.clone()).await?;
            tracing::info!(
                unit = %unit.name,
                interfaces = %unit.forwarder.interfaces.join(","),
                attach = ?unit.forwarder.attach,
                max_flows = unit.forwarder.max_flows,
                classifier = %if remote { unit.classifier.clone().unwrap_or_default() } else { "local".to_owned() },
                "forwarder role attached"
            );
            roles.forwarder = Some(handle);
            roles.tasks.push(("forwarder", task));
            roles.running.push("forwarder");
        }
    }
    if classifies {
        let allotments = match health {
            Some(h) => Allotments::Local(h),
            None => Allotments::Remote {
                units: crate::allotment_client::health_units(config),
                token_validity: config
                    .health_settings()
                    .token_validity
                    .max(Duration::from_millis(100)),
            },
        };
        let (stats, task) = classifier_role::start(
            config,
            unit,
            rx,
            roles.forwarder.clone(),
            allotments,
            sessions,
            codec,
            stop,
        );
        tracing::info!(unit = %unit.name, "classifier role running");
        roles.classifier = Some(stats);
        roles.tasks.push(("classifier", task));
        roles.running.push("classifier");
    }
    Ok(roles)
}
