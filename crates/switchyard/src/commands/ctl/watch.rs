//! `switchyard ctl watch`: a live terminal view of one unit — every host endpoint's
//! health, load against capacity, directive and connections, and the unit's counters —
//! redrawn every interval from `/v1/hosts`, `/v1/flows?top=0` and `/v1/counters`. On a
//! terminal each frame replaces the previous one; piped, frames follow each other
//! separated by a blank line. `--count N` stops after N frames.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchyard_lb::admin::api::{CountersResponse, HostsResponse};
use switchyard_lb::admin::client;
use switchyard_lb::admin::flows::FlowsResponse;

use super::explain;

/// Arguments of `switchyard ctl watch`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    switchyard ctl watch\n  \
    switchyard ctl --unit 127.0.0.1:9180 watch --interval 2s\n  \
    switchyard ctl watch --count 1 > snapshot.txt")]
pub struct WatchArgs {
    /// Time between two frames.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::parse_timeout)]
    pub interval: Duration,
    /// Stop after this many frames (0: until Ctrl-C).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
}

/// The key of an endpoint's counters: VIP, protocol, endpoint.
type EndpointKey = (SocketAddr, String, SocketAddr);

/// One poll of the unit.
struct Frame {
    hosts: HostsResponse,
    flows: Option<FlowsResponse>,
    counters: Option<CountersResponse>,
    at: Instant,
}

impl Frame {
    fn new_connections(&self) -> HashMap<EndpointKey, u64> {
        self.flows
            .as_ref()
            .and_then(|f| f.classifier.as_ref())
            .map(|c| {
                c.endpoints
                    .iter()
                    .map(|e| ((e.vip, e.protocol.clone(), e.endpoint), e.new_connections))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs the view.
pub async fn run(
    addr: SocketAddr,
    timeout: Duration,
    token: Option<&str>,
    args: WatchArgs,
) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<Frame> = None;
    let mut shown = 0u64;
    loop {
        let hosts: HostsResponse = client::get_json_authorized(addr, "/v1/hosts", timeout, token)
            .await
            .map_err(explain)?;
        // The packet roles and counters are optional parts of the view.
        let flows = client::get_json_authorized(addr, "/v1/flows?top=0", timeout, token)
            .await
            .ok();
        let counters = client::get_json_authorized(addr, "/v1/counters", timeout, token)
            .await
            .ok();
        let frame = Frame {
            hosts,
            flows,
            counters,
            at: Instant::now(),
        };
        shown += 1;
        let text = render(&frame, previous.as_ref(), shown);
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear, then the frame: a plain redraw, no terminal library.
            let _ = write!(out, "\x1b[H\x1b[2J{text}");
        } else {
            if shown > 1 {
                let _ = writeln!(out);
            }
            let _ = write!(out, "{text}");
        }
        let _ = out.flush();
        drop(out);
        previous = Some(frame);
        if args.count != 0 && shown >= args.count {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// A directive for the view: `active`, `draining`, or `draining (now active)` while the
/// handshake is pending.
fn directive(target: &str, current: &str) -> String {
    if target == current {
        target.to_owned()
    } else {
        format!("{target} (now {current})")
    }
}

/// One frame of the view; `previous` gives the rates.
fn render(frame: &Frame, previous: Option<&Frame>, number: u64) -> String {
    let mut out = String::new();
    let doc = &frame.hosts;
    let _ = writeln!(
        out,
        "unit {} (id {}) · roles {} · {} host{} · frame {number}",
        doc.unit.name,
        doc.unit.id,
        doc.unit.roles.join(", "),
        doc.hosts.len(),
        if doc.hosts.len() == 1 { "" } else { "s" },
    );
    let connections: HashMap<SocketAddr, u64> = frame
        .flows
        .as_ref()
        .and_then(|f| f.forwarder.as_ref())
        .map(|f| f.hosts.iter().map(|h| (h.endpoint, h.flows)).collect())
        .unwrap_or_default();
    let now_new = frame.new_connections();
    let (before_new, seconds) = match previous {
        Some(p) => (
            p.new_connections(),
            frame.at.saturating_duration_since(p.at).as_secs_f64(),
        ),
        None => (HashMap::new(), 0.0),
    };
    let header = [
        "HOST",
        "ENDPOINT",
        "HEALTH",
        "LOAD/CAP",
        "DIRECTIVE",
        "CONNS",
        "NEW/S",
    ];
    let mut lines: Vec<[String; 7]> = Vec::new();
    for host in &doc.hosts {
        let mut name = match &host.name {
            Some(n) => format!("{n} ({})", host.id),
            None => host.id.to_string(),
        };
        if !host.alive {
            name.push_str(" [silent]");
        }
        for row in &host.rows {
            let key = (row.vip, row.protocol.clone(), row.endpoint);
            let rate = match (now_new.get(&key), before_new.get(&key)) {
                (Some(now), Some(before)) if seconds > 0.0 && now >= before => {
                    format!("{:.1}", (now - before) as f64 / seconds)
                }
                _ => "-".to_owned(),
            };
            lines.push([
                name.clone(),
                format!("{}/{} -> {}", row.vip, row.protocol, row.endpoint),
                row.health.clone(),
                format!("{}%/{}", row.load, row.capacity),
                directive(&row.target, &row.current),
                connections
                    .get(&row.endpoint)
                    .map_or_else(|| "-".to_owned(), u64::to_string),
                rate,
            ]);
        }
    }
    if lines.is_empty() {
        let _ = writeln!(out, "no hosts in the cache yet (no heartbeats received)");
    } else {
        let mut widths = header.map(str::len);
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut table = |cells: &[&str]| {
            let mut text = String::new();
            for (cell, w) in cells.iter().zip(widths) {
                let _ = write!(text, "{cell:<w$}  ");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        table(&header);
        for line in &lines {
            let cells: Vec<&str> = line.iter().map(String::as_str).collect();
            table(&cells);
        }
    }
    if let Some(c) = &frame.counters {
        let _ = writeln!(
            out,
            "health: {} hosts ({} in sync), {} endpoints; received {} datagrams, rejected {}; snapshots {}",
            c.state.hosts,
            c.state.hosts_in_sync,
            c.state.endpoints,
            c.transport.received,
            c.transport.rejected_total,
            c.cache.snapshots_completed,
        );
    }
    if let Some(f) = &frame.flows {
        if let Some(fw) = &f.forwarder {
            let packets: u64 = fw.vips.iter().map(|v| v.packets).sum();
            let _ = writeln!(out, "forwarder: {} flows, {packets} packets", fw.flows);
        }
        if let Some(cl) = &f.classifier {
            let _ = writeln!(out, "classifier: {} connections", cl.connections);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_lb::admin::api::{HostEntry, HostRow, UnitInfo};

    fn hosts(target: &str, current: &str) -> HostsResponse {
        HostsResponse {
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
                last_heartbeat_ms: 100,
                alive: true,
                generation: 1,
                in_sync: true,
                baseline: true,
                rows: vec![HostRow {
                    vip: "198.51.100.10:80".parse().expect("vip"),
                    protocol: "tcp".into(),
                    endpoint: "192.0.2.11:8080".parse().expect("endpoint"),
                    info: "shop".into(),
                    health: "healthy".into(),
                    load: 37,
                    capacity: 61,
                    target: target.into(),
                    current: current.into(),
                    handshake: "complete".into(),
                    tokens: 100,
                }],
            }],
        }
    }

    #[test]
    fn a_frame_shows_load_against_capacity_and_a_pending_drain() {
        let frame = Frame {
            hosts: hosts("draining", "active"),
            flows: None,
            counters: None,
            at: Instant::now(),
        };
        let text = render(&frame, None, 3);
        assert!(text.starts_with("unit lb-1 (id 1)"), "{text}");
        assert!(text.contains("frame 3"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("web-1 (101)"))
            .unwrap_or_else(|| panic!("no line for web-1: {text}"));
        for part in [
            "healthy",
            "37%/61",
            "draining (now active)",
            "192.0.2.11:8080",
        ] {
            assert!(line.contains(part), "{part:?} missing: {line}");
        }
        let empty = Frame {
            hosts: HostsResponse {
                hosts: Vec::new(),
                ..hosts("active", "active")
            },
            flows: None,
            counters: None,
            at: Instant::now(),
        };
        assert!(render(&empty, None, 1).contains("no hosts in the cache yet"));
    }
}
