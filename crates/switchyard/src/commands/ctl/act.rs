//! `switchyard ctl drain|undrain|disable|capacity`: steer a host.
//!
//! A directive belongs to the host: its agent sets the target and runs the postulate
//! handshake with every unit. By default these commands talk to the agent's local API on
//! the host's own machine — its Unix socket (default `/run/switchyard/agent.sock`) or its
//! loopback TCP address. With `--via-unit` they ask the unit (`--unit`, `--token-file`)
//! instead, which relays the act to the host's agent over the authenticated health
//! protocol (unless the host's configuration says `[agent] unit_acts = false`). Either
//! way, watch the drain at any unit (`switchyard ctl watch`, the dashboard).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use switchyard_agent::api::client::{self as agent_client, ApiTarget};

/// Which host (and row) to steer, and where its agent listens.
#[derive(Debug, clap::Args)]
pub struct ActArgs {
    /// The host, as named in `pools.hosts` (its agent runs on this machine).
    pub host: String,
    /// Only this row of the host (a service name, or an API row's name); default: every
    /// row of the host.
    #[arg(long, value_name = "ROW")]
    pub app: Option<String>,
    /// The agent's local API on its Unix socket (default `/run/switchyard/agent.sock`).
    #[arg(long, value_name = "PATH", conflicts_with = "agent")]
    pub agent_socket: Option<PathBuf>,
    /// The agent's local API on its loopback TCP address instead (e.g. 127.0.0.1:9181).
    #[arg(long, value_name = "IP:PORT")]
    pub agent: Option<SocketAddr>,
    /// Ask the unit (`--unit`) to relay the act to the host's agent, from any machine
    /// that reaches the unit's admin API; --app then names a service.
    #[arg(long, conflicts_with_all = ["agent", "agent_socket"])]
    pub via_unit: bool,
}

/// The unit's admin API, for `--via-unit`.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// Its address.
    pub addr: SocketAddr,
    /// Its bearer token, if it has one.
    pub token: Option<&'a str>,
}

/// `ctl capacity`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub act: ActArgs,
    /// The new capacity, 0–99 (the endpoint's weight in allotments).
    #[arg(value_parser = clap::value_parser!(u8).range(0..=99))]
    pub capacity: u8,
}

/// A directive change.
#[derive(Debug, Clone, Copy)]
pub enum Directive {
    /// Target `draining`.
    Drain,
    /// Target `active`.
    Undrain,
    /// Target `inactive`.
    Disable,
}

impl Directive {
    fn verb(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Undrain => "undrain",
            Self::Disable => "disable",
        }
    }
}

impl ActArgs {
    fn target(&self) -> ApiTarget {
        match (&self.agent, &self.agent_socket) {
            (Some(addr), _) => ApiTarget::Tcp(*addr),
            (None, Some(path)) => ApiTarget::Unix(path.clone()),
            (None, None) => ApiTarget::Unix(PathBuf::from(switchyard_config::DEFAULT_AGENT_SOCKET)),
        }
    }

    fn where_(&self) -> String {
        match self.target() {
            ApiTarget::Tcp(addr) => addr.to_string(),
            ApiTarget::Unix(path) => path.display().to_string(),
        }
    }

    fn host_path(&self) -> String {
        format!("/v1/hosts/{}", super::percent_encode(&self.host))
    }

    fn row_path(&self, row: &str) -> String {
        format!("{}/apps/{}", self.host_path(), super::percent_encode(row))
    }
}

async fn call(
    args: &ActArgs,
    timeout: Duration,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Value> {
    let target = args.target();
    let response = tokio::time::timeout(
        timeout,
        agent_client::request(&target, method, path, body),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the agent at {} did not answer in time", args.where_()))?
    .with_context(|| {
        format!(
            "no switchyard agent answers at {}; run this on the host's machine, or give --agent-socket PATH or --agent IP:PORT",
            args.where_()
        )
    })?;
    let value: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    if !(200..300).contains(&response.status) {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| response.body.clone(), str::to_owned);
        anyhow::bail!(
            "the agent at {} answered {} to {method} {path}: {message}",
            args.where_(),
            response.status
        );
    }
    Ok(value)
}

/// One line per row: name, directive and capacity as the agent answered.
fn describe(host: &str, rows: &Value) -> String {
    let rows: Vec<&Value> = match rows {
        Value::Array(list) => list.iter().collect(),
        Value::Object(map) if map.contains_key("rows") => map["rows"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    };
    let mut out = String::new();
    for row in rows {
        let name = row.get("name").and_then(Value::as_str).unwrap_or("?");
        let target = row["directive"]["target"].as_str().unwrap_or("?");
        let current = row["directive"]["current"].as_str().unwrap_or("absent");
        let capacity = row.get("capacity").and_then(Value::as_u64).unwrap_or(0);
        let progress = if target == current {
            String::new()
        } else {
            format!(" (now {current}; waiting for every unit to agree)")
        };
        out.push_str(&format!(
            "{host}/{name}: target {target}{progress}, capacity {capacity}\n"
        ));
    }
    out
}

/// Sends the act to the unit, which relays it to the host's agent; the line to print.
async fn via_unit(
    args: &ActArgs,
    unit: Unit<'_>,
    timeout: Duration,
    method: &str,
    verb: &str,
    mut body: serde_json::Map<String, Value>,
) -> anyhow::Result<String> {
    if let Some(service) = &args.app {
        body.insert("service".to_owned(), Value::String(service.clone()));
    }
    let path = format!("{}/{verb}", args.host_path());
    let body = Value::Object(body).to_string();
    let answer: Value = switchyard_lb::admin::client::send_json_authorized(
        unit.addr,
        method,
        &path,
        Some(&body),
        timeout,
        unit.token,
    )
    .await
    .map_err(super::explain)?;
    let rows = answer["rows"].as_u64().unwrap_or(0);
    let what = match (answer["target"].as_str(), answer["capacity"].as_u64()) {
        (Some(target), _) => {
            format!("target {target}; the current directive follows when every unit holds it")
        }
        (None, Some(capacity)) => format!("capacity {capacity}"),
        _ => "done".to_owned(),
    };
    let scope = args
        .app
        .as_deref()
        .map_or_else(String::new, |s| format!(" (service {s})"));
    Ok(format!(
        "{}{scope}: {verb} relayed by the unit at {}, applied to {rows} row(s): {what}\n",
        args.host, unit.addr
    ))
}

/// `ctl drain|undrain|disable HOST [--app ROW] [--via-unit]`.
pub async fn directive(
    args: ActArgs,
    unit: Unit<'_>,
    timeout: Duration,
    directive: Directive,
) -> anyhow::Result<ExitCode> {
    if args.via_unit {
        let line = via_unit(
            &args,
            unit,
            timeout,
            "POST",
            directive.verb(),
            Default::default(),
        )
        .await?;
        print!("{line}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = match &args.app {
        Some(row) => format!("{}/{}", args.row_path(row), directive.verb()),
        None => format!("{}/{}", args.host_path(), directive.verb()),
    };
    let rows = call(&args, timeout, "POST", &path, None).await?;
    print!("{}", describe(&args.host, &rows));
    Ok(ExitCode::SUCCESS)
}

/// `ctl capacity HOST N [--app ROW] [--via-unit]`: every row of the host, or one.
pub async fn capacity(
    args: CapacityArgs,
    unit: Unit<'_>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let act = &args.act;
    if act.via_unit {
        let mut body = serde_json::Map::new();
        body.insert("capacity".to_owned(), Value::from(args.capacity));
        let line = via_unit(act, unit, timeout, "PUT", "capacity", body).await?;
        print!("{line}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<String> = match &act.app {
        Some(row) => vec![row.clone()],
        None => {
            let host = call(act, timeout, "GET", &act.host_path(), None).await?;
            host["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    if rows.is_empty() {
        anyhow::bail!("host {} has no rows at its agent", act.host);
    }
    let body = serde_json::json!({ "capacity": args.capacity }).to_string();
    let mut out = String::new();
    for row in rows {
        let path = format!("{}/status", act.row_path(&row));
        let answer = call(act, timeout, "PUT", &path, Some(&body)).await?;
        out.push_str(&describe(&act.host, &answer));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_rows_and_a_pending_handshake() {
        let rows = serde_json::json!([
            {"name": "web", "capacity": 61, "directive": {"target": "draining", "current": "active"}},
            {"name": "api", "capacity": 50, "directive": {"target": "active", "current": "active"}}
        ]);
        let text = describe("web-1", &rows);
        assert!(
            text.contains("web-1/web: target draining (now active; waiting"),
            "{text}"
        );
        assert!(
            text.contains("web-1/api: target active, capacity 50"),
            "{text}"
        );
    }

    #[test]
    fn paths_are_encoded() {
        let args = ActArgs {
            host: "web 1".into(),
            app: None,
            agent_socket: None,
            agent: None,
            via_unit: false,
        };
        assert_eq!(args.row_path("a/b"), "/v1/hosts/web%201/apps/a%2Fb");
        assert!(matches!(args.target(), ApiTarget::Unix(p) if p.ends_with("agent.sock")));
    }
}
