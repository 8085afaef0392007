//! The demo's console: commands typed on standard input (`d N`, `u N`, `q`, …) and the
//! status line (requests per host, and each host's health and directive as the load
//! balancer sees them).

use std::fmt::Write as _;
use std::io::BufRead;

use switchyard_lb::admin::api::{HostRow, HostsResponse};
use tokio::sync::mpsc;

use super::shape::{HOSTS, Pools, host_name};
use super::traffic::Tally;

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Drain host N (1-based): no new connections, existing ones finish.
    Drain(usize),
    /// Undrain host N.
    Undrain(usize),
    /// Print the status now.
    Status,
    /// Print the commands.
    Help,
    /// Stop the demo.
    Quit,
}

/// The commands, as the banner and `h` show them.
pub const HELP: &str =
    "d N: drain host N   u N: undrain host N   Enter: status   h: help   q: quit";

/// Parses one input line.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let number = |word: Option<&str>| -> Result<usize, String> {
        let word = word.ok_or_else(|| format!("{verb}: which host? (1-{HOSTS})"))?;
        match word.parse::<usize>() {
            Ok(n) if (1..=HOSTS).contains(&n) => Ok(n),
            _ => Err(format!("no host {word:?}: the hosts are 1-{HOSTS}")),
        }
    };
    let command = match verb {
        "" => Command::Status,
        "d" | "drain" => Command::Drain(number(words.next())?),
        "u" | "undrain" => Command::Undrain(number(words.next())?),
        "s" | "status" => Command::Status,
        "h" | "help" | "?" => Command::Help,
        "q" | "quit" | "exit" => Command::Quit,
        other => return Err(format!("unknown command {other:?} ({HELP})")),
    };
    if words.next().is_some() {
        return Err(format!("too many words in {line:?} ({HELP})"));
    }
    Ok(command)
}

/// Reads commands from standard input on a thread of its own. The channel closes at the end
/// of the input (a closed or empty stdin, `/dev/null`): the demo then simply takes no
/// commands. Lines that are not commands are answered on stderr.
pub fn commands() -> mpsc::Receiver<Command> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            match parse(&line) {
                Ok(command) => {
                    if tx.blocking_send(command).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("{e}"),
            }
        }
    });
    rx
}

/// How the unit sees one demo host: health and directive of its rows, one per pool.
fn host_state(hosts: &HostsResponse, n: usize, pools: Pools) -> String {
    let row = |name: &str| -> Option<(bool, &HostRow)> {
        let host = hosts
            .hosts
            .iter()
            .find(|h| h.name.as_deref() == Some(name))?;
        Some((host.alive, host.rows.first()?))
    };
    let describe = |state: Option<(bool, &HostRow)>| match state {
        None => "not heard from".to_owned(),
        Some((false, _)) => "silent".to_owned(),
        Some((true, r)) if r.target == r.current => format!("{} {}", r.health, r.target),
        Some((true, r)) => format!("{} {} (now {})", r.health, r.target, r.current),
    };
    let states: Vec<String> = pools
        .names(n)
        .iter()
        .map(|name| describe(row(name)))
        .collect();
    match states.as_slice() {
        [v4, v6] if v4 != v6 => format!("{v4}, v6 {v6}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The status line: `status 12s | demo-1 80 req healthy active | … | failed 0`. Requests
/// only with traffic; states from the unit's `/v1/hosts`, or the reason it did not answer.
pub fn status_line(
    elapsed_secs: u64,
    tally: Option<&Tally>,
    hosts: Result<&HostsResponse, &str>,
    pools: Pools,
) -> String {
    let mut line = format!("status {elapsed_secs:>3}s");
    for n in 1..=HOSTS {
        let name = host_name(n);
        let _ = write!(line, " | {name}");
        if let Some(t) = tally {
            let _ = write!(line, " {} req", t.count(&name));
        }
        if let Ok(hosts) = hosts {
            let _ = write!(line, " {}", host_state(hosts, n, pools));
        }
    }
    if let Some(t) = tally {
        let _ = write!(line, " | failed {}", t.failed);
    }
    if let Err(e) = hosts {
        let _ = write!(line, " | admin API: {e}");
    }
    line
}

/// The final summary: `summary: requests=N answered=N failed=N demo-1=N demo-2=N demo-3=N`.
pub fn summary_line(tally: &Tally) -> String {
    let mut line = format!(
        "summary: requests={} answered={} failed={}",
        tally.sent,
        tally.answered(),
        tally.failed
    );
    for n in 1..=HOSTS {
        let name = host_name(n);
        let _ = write!(line, " {name}={}", tally.count(&name));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("d 2"), Ok(Command::Drain(2)));
        assert_eq!(parse("  undrain 3 "), Ok(Command::Undrain(3)));
        assert_eq!(parse("q"), Ok(Command::Quit));
        assert_eq!(parse(""), Ok(Command::Status));
        assert_eq!(parse("h"), Ok(Command::Help));
        assert!(parse("d").is_err());
        assert!(parse("d 0").is_err());
        assert!(parse("d 4").is_err());
        assert!(parse("d x").is_err());
        assert!(parse("d 1 2").is_err());
        assert!(parse("reboot").is_err());
    }

    fn hosts(rows: &[(&str, &str, &str)]) -> HostsResponse {
        let hosts: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, (name, target, current))| {
                serde_json::json!({
                    "id": i, "name": name, "address": null, "last_heartbeat_ms": 10,
                    "alive": true, "generation": 1, "in_sync": true, "baseline": true,
                    "rows": [{
                        "vip": "127.0.0.1:8080", "protocol": "tcp", "endpoint": "127.0.0.1:1",
                        "info": "demo", "health": "healthy", "load": 0, "capacity": 50,
                        "target": target, "current": current, "handshake": "complete",
                        "tokens": 50
                    }]
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "unit": {"name": "lb-1", "id": 1, "roles": [], "running": []},
            "hosts": hosts
        }))
        .expect("a /v1/hosts answer")
    }

    #[test]
    fn status_shows_each_pool_the_shape_has() {
        let answer = hosts(&[
            ("demo-1", "draining", "active"),
            ("demo-1-v6", "draining", "draining"),
            ("demo-2", "active", "active"),
        ]);
        assert_eq!(
            status_line(4, None, Ok(&answer), Pools::V4AndV6),
            "status   4s | demo-1 healthy draining (now active), v6 healthy draining \
             | demo-2 healthy active, v6 not heard from | demo-3 not heard from"
        );
        assert_eq!(
            status_line(4, None, Ok(&answer), Pools::V4),
            "status   4s | demo-1 healthy draining (now active) | demo-2 healthy active \
             | demo-3 not heard from"
        );
        assert_eq!(
            status_line(6, None, Err("connection refused"), Pools::V4),
            "status   6s | demo-1 | demo-2 | demo-3 | admin API: connection refused"
        );
    }

    #[test]
    fn summary_names_every_host() {
        let mut tally = Tally {
            sent: 5,
            failed: 1,
            ..Tally::default()
        };
        tally.by_host.insert("demo-1".to_owned(), 3);
        tally.by_host.insert("demo-3".to_owned(), 1);
        assert_eq!(
            summary_line(&tally),
            "summary: requests=5 answered=4 failed=1 demo-1=3 demo-2=0 demo-3=1"
        );
    }
}
