//! `switchyard ctl`: inspects a running cluster through a unit's admin API
//! (HTTP on loopback; see docs/LB.md).

mod act;
mod sessions;
mod watch;

use sessions::percent_encode;

use std::fmt::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use switchyard_lb::admin::api::HostsResponse;
use switchyard_lb::admin::client::{self, ClientError};

/// Arguments of `switchyard ctl`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    switchyard ctl hosts\n  \
    switchyard ctl --unit 127.0.0.1:9180 hosts --json\n  \
    switchyard ctl sessions --client-ip 198.51.100.7\n  \
    switchyard ctl watch\n  \
    switchyard ctl drain web-2          # on web-2's machine, through its agent\n  \
    switchyard ctl --unit 192.0.2.1:9180 drain web-2 --via-unit   # from anywhere, through a unit\n  \
    switchyard ctl capacity web-2 20 --app web --via-unit\n  \
    switchyard ctl --unit 192.0.2.1:9180 --token-file /etc/switchyard/admin.token watch")]
pub struct CtlArgs {
    /// Admin API address of the unit to ask.
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = "127.0.0.1:9180",
        global = true
    )]
    pub unit: String,
    /// How long to wait for the unit's answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout, global = true)]
    pub timeout: Duration,
    /// File holding the unit's admin token (for a unit started with
    /// `--admin-token-file`); sent as `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Subcommands of `switchyard ctl`.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Every host in the unit's health and load cache: health, load, capacity, directive
    /// target/current, handshake state, age of the last heartbeat and tokens per endpoint.
    Hosts {
        /// Print the unit's JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Session tracking: look one session up through the unit's DAM portion (where it is
    /// held, its host, zombie or live), or without a session the unit's summary
    /// (membership, atoms per host, lookup counters).
    Sessions(sessions::SessionsArgs),
    /// A live view of the unit, redrawn every second: every host endpoint's health,
    /// load/capacity, directive (a pending drain as `draining (now active)`),
    /// connections and new connections per second, and the unit's counters.
    Watch(watch::WatchArgs),
    /// Drain a host (or one row with --app) through its agent on this machine, or through
    /// the unit with --via-unit: target `draining`, no new connections once every unit
    /// agrees.
    Drain(act::ActArgs),
    /// Undrain a host (or one row): target `active` (its agent, or --via-unit).
    Undrain(act::ActArgs),
    /// Disable a host (or one row): target `inactive` (its agent, or --via-unit).
    Disable(act::ActArgs),
    /// Set the capacity (0–99) of every row of a host, or one row with --app (its agent,
    /// or --via-unit).
    Capacity(act::CapacityArgs),
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    switchyard_config::parse_duration(text)
        .map_err(|e| format!("{e} (e.g. 500ms, 5s)"))
        .and_then(|d| {
            if d.is_zero() {
                Err("must be longer than zero".to_owned())
            } else {
                Ok(d)
            }
        })
}

/// Runs one ctl command.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = resolve(&args.unit).await?;
        let token = args
            .token_file
            .as_deref()
            .map(switchyard_lb::admin::auth::AdminToken::from_file)
            .transpose()?;
        let token = token.as_ref().map(|t| t.as_str());
        let unit = act::Unit { addr, token };
        match args.command {
            CtlCommand::Hosts { json } => hosts(addr, args.timeout, token, json).await,
            CtlCommand::Sessions(s) => sessions::run(addr, args.timeout, token, s).await,
            CtlCommand::Watch(w) => watch::run(addr, args.timeout, token, w).await,
            CtlCommand::Drain(a) => {
                act::directive(a, unit, args.timeout, act::Directive::Drain).await
            }
            CtlCommand::Undrain(a) => {
                act::directive(a, unit, args.timeout, act::Directive::Undrain).await
            }
            CtlCommand::Disable(a) => {
                act::directive(a, unit, args.timeout, act::Directive::Disable).await
            }
            CtlCommand::Capacity(c) => act::capacity(c, unit, args.timeout).await,
        }
    })
}

async fn resolve(unit: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = unit.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(unit)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("--unit {unit:?} is not an IP:PORT address (e.g. 127.0.0.1:9180)"))
}

pub(super) fn explain(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Refused { addr } => anyhow::anyhow!(
            "no switchyard unit answers at {addr}; is `switchyard lb` running? use --unit IP:PORT to ask another unit's admin API"
        ),
        ClientError::Timeout { addr, timeout } => anyhow::anyhow!(
            "{addr} did not answer within {} ms; is it a switchyard unit's admin API? use --unit IP:PORT or a longer --timeout",
            timeout.as_millis()
        ),
        other => anyhow::Error::new(other),
    }
}

async fn hosts(
    addr: SocketAddr,
    timeout: Duration,
    token: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        let response = client::get_authorized(addr, "/v1/hosts", timeout, token)
            .await
            .map_err(explain)?;
        if !(200..300).contains(&response.status) {
            let message = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| response.text());
            anyhow::bail!("{addr} answered {}: {message}", response.status);
        }
        let value: serde_json::Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("{addr} sent an answer that is not JSON"))?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let document: HostsResponse = client::get_json_authorized(addr, "/v1/hosts", timeout, token)
        .await
        .map_err(explain)?;
    print!("{}", render_hosts(&document));
    Ok(ExitCode::SUCCESS)
}

fn age(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        format!("{}s ago", ms / 1000)
    }
}

/// The human table of `ctl hosts`.
fn render_hosts(doc: &HostsResponse) -> String {
    let mut out = String::new();
    let endpoints: usize = doc.hosts.iter().map(|h| h.rows.len()).sum();
    let _ = writeln!(
        out,
        "unit {} (id {}): {} host{}, {} endpoint{}",
        doc.unit.name,
        doc.unit.id,
        doc.hosts.len(),
        if doc.hosts.len() == 1 { "" } else { "s" },
        endpoints,
        if endpoints == 1 { "" } else { "s" },
    );
    if doc.hosts.is_empty() {
        let _ = writeln!(out, "no hosts in the cache yet (no heartbeats received)");
        return out;
    }
    let header = [
        "HOST",
        "SERVICE -> ENDPOINT",
        "HEALTH",
        "LOAD",
        "CAP",
        "TARGET/CURRENT",
        "HANDSHAKE",
        "HEARTBEAT",
        "TOKENS",
    ];
    let mut lines: Vec<[String; 9]> = Vec::new();
    for host in &doc.hosts {
        let mut name = match &host.name {
            Some(n) => format!("{n} ({})", host.id),
            None => host.id.to_string(),
        };
        if !host.in_sync || !host.baseline {
            name.push_str(" [resyncing]");
        }
        if !host.alive {
            name.push_str(" [silent]");
        }
        let heartbeat = age(host.last_heartbeat_ms);
        if host.rows.is_empty() {
            lines.push([
                name,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                heartbeat,
                "-".into(),
            ]);
            continue;
        }
        for row in &host.rows {
            let service = if row.info.is_empty() {
                format!("{}/{} -> {}", row.vip, row.protocol, row.endpoint)
            } else {
                format!(
                    "{}/{} [{}] -> {}",
                    row.vip, row.protocol, row.info, row.endpoint
                )
            };
            lines.push([
                name.clone(),
                service,
                row.health.clone(),
                format!("{}%", row.load),
                row.capacity.to_string(),
                format!("{}/{}", row.target, row.current),
                row.handshake.clone(),
                heartbeat.clone(),
                row.tokens.to_string(),
            ]);
        }
    }
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut row = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    row(&header);
    for line in &lines {
        let cells: Vec<&str> = line.iter().map(String::as_str).collect();
        row(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_lb::admin::api::{HostEntry, HostRow, UnitInfo};

    #[test]
    fn the_table_has_one_line_per_endpoint() {
        let doc = HostsResponse {
            unit: UnitInfo {
                name: "lb-1".into(),
                id: 1,
                roles: vec!["health-cache".into()],
                running: vec!["health-cache".into()],
            },
            hosts: vec![HostEntry {
                id: 101,
                name: Some("web-1".into()),
                address: None,
                last_heartbeat_ms: 312,
                alive: true,
                generation: 7,
                in_sync: true,
                baseline: true,
                rows: vec![HostRow {
                    vip: "198.51.100.10:80".parse().expect("addr"),
                    protocol: "tcp".into(),
                    endpoint: "192.0.2.11:8080".parse().expect("addr"),
                    info: String::new(),
                    health: "healthy".into(),
                    load: 20,
                    capacity: 60,
                    target: "draining".into(),
                    current: "active".into(),
                    handshake: "pending".into(),
                    tokens: 0,
                }],
            }],
        };
        let text = render_hosts(&doc);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "unit lb-1 (id 1): 1 host, 1 endpoint");
        assert!(lines[1].starts_with("HOST "), "{text}");
        assert!(lines[2].starts_with("web-1 (101) "), "{text}");
        for cell in [
            "198.51.100.10:80/tcp -> 192.0.2.11:8080",
            "healthy",
            "20%",
            "draining/active",
            "pending",
            "0.3s ago",
        ] {
            assert!(lines[2].contains(cell), "{cell} missing: {text}");
        }
        assert!(lines[2].ends_with(" 0"), "{text}");
    }
}
