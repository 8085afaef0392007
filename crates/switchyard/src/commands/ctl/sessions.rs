//! `switchyard ctl sessions`: looks a session up through a unit's DAM portion
//! (`GET /v1/sessions?…`), or shows the unit's session-store summary (membership, atoms per
//! host, counters: `GET /v1/sessions/summary`).

use std::fmt::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use switchyard_lb::admin::client;
use switchyard_lb::admin::sessions::{SessionLookup, SessionsSummary};

/// Arguments of `switchyard ctl sessions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    switchyard ctl sessions\n  \
    switchyard ctl sessions --client-ip 198.51.100.7\n  \
    switchyard ctl sessions --cookie SID=b7595cc9 --json")]
#[group(id = "session", multiple = false)]
pub struct SessionsArgs {
    /// Look up a client-IP session.
    #[arg(long, value_name = "IP", group = "session")]
    pub client_ip: Option<String>,
    /// Look up an HTTP cookie session.
    #[arg(long, value_name = "NAME=VALUE", group = "session")]
    pub cookie: Option<String>,
    /// Look up a user session.
    #[arg(long, value_name = "NAME", group = "session")]
    pub user: Option<String>,
    /// Look up a TLS session id (hex).
    #[arg(long, value_name = "HEX", group = "session")]
    pub tls_session_id: Option<String>,
    /// Look up an application-defined session.
    #[arg(long, value_name = "KIND:ID", group = "session")]
    pub custom: Option<String>,
    /// Look up a connection, e.g. `tcp,198.51.100.7:40000,203.0.113.10:80`.
    #[arg(long, value_name = "PROTO,CLIENT,VIP", group = "session")]
    pub four_tuple: Option<String>,
    /// Look up a raw DAM key (hex).
    #[arg(long, value_name = "HEX", group = "session")]
    pub key: Option<String>,
    /// Print the unit's JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl SessionsArgs {
    /// The query string naming the session, if any.
    fn query(&self) -> Option<String> {
        [
            ("client_ip", &self.client_ip),
            ("cookie", &self.cookie),
            ("user", &self.user),
            ("tls_session_id", &self.tls_session_id),
            ("custom", &self.custom),
            ("four_tuple", &self.four_tuple),
            ("key", &self.key),
        ]
        .into_iter()
        .find_map(|(name, value)| {
            value
                .as_ref()
                .map(|v| format!("{name}={}", percent_encode(v)))
        })
    }
}

/// Runs `ctl sessions` against the unit at `addr` (with its admin `token`, if it has one).
pub async fn run(
    addr: SocketAddr,
    timeout: Duration,
    token: Option<&str>,
    args: SessionsArgs,
) -> anyhow::Result<ExitCode> {
    let path = match args.query() {
        Some(query) => format!("/v1/sessions?{query}"),
        None => "/v1/sessions/summary".to_owned(),
    };
    let response = client::get_authorized(addr, &path, timeout, token)
        .await
        .map_err(super::explain)?;
    if !(200..300).contains(&response.status) {
        let message = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| response.text());
        anyhow::bail!("{addr} answered {}: {message}", response.status);
    }
    if args.json {
        let value: serde_json::Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("{addr} sent an answer that is not JSON"))?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.query().is_some() {
        let doc: SessionLookup = serde_json::from_slice(&response.body)
            .with_context(|| format!("{addr} sent an unexpected answer"))?;
        print!("{}", render_lookup(&doc));
        // Not found: exit 1, so scripts can test for a session.
        return Ok(if doc.found {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let doc: SessionsSummary = serde_json::from_slice(&response.body)
        .with_context(|| format!("{addr} sent an unexpected answer"))?;
    print!("{}", render_summary(&doc));
    Ok(ExitCode::SUCCESS)
}

fn render_lookup(doc: &SessionLookup) -> String {
    let mut out = String::new();
    let owners = doc.owners.join(", ");
    if !doc.found {
        let _ = writeln!(
            out,
            "not found (asked through unit {}; owners would be {owners}); key {}",
            doc.unit.name, doc.key
        );
        return out;
    }
    let host = match (&doc.host_name, doc.host) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (None, Some(id)) => id.to_string(),
        _ => "?".to_owned(),
    };
    let state = if doc.zombie { "zombie" } else { "live" };
    let _ = writeln!(
        out,
        "host {host}, {state}; unit {} held it as {} (lookup {} µs)",
        doc.unit.name,
        doc.holding.as_deref().unwrap_or("-"),
        doc.lookup_us
    );
    let _ = writeln!(
        out,
        "owners {owners}; added by {}; version {}; key {}",
        doc.added_by.as_deref().unwrap_or("-"),
        doc.version.unwrap_or(0),
        doc.key
    );
    out
}

fn render_summary(doc: &SessionsSummary) -> String {
    let mut out = String::new();
    let members: Vec<&str> = doc.members.iter().map(|m| m.name.as_str()).collect();
    let get = |k: &str| doc.dam.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "unit {} (id {}): replication {}, members {}",
        doc.unit.name,
        doc.unit.id,
        doc.replication,
        members.join(", ")
    );
    let _ = writeln!(
        out,
        "atoms: {} owned, {} handoff, {} cached, {} zombies; replication lag {} pushes",
        get("atoms_owned"),
        get("atoms_handoff"),
        get("atoms_cached"),
        get("zombies"),
        get("pushes_pending")
    );
    let _ = writeln!(
        out,
        "lookups: {} local hits, {} cache hits, {} remote queries ({} found, {} misses)",
        get("local_hits"),
        get("cache_hits"),
        get("remote_queries"),
        get("remote_found"),
        get("misses")
    );
    let _ = writeln!(out, "HOST            ATOMS  CHANNEL HERE");
    for h in &doc.hosts {
        let name = h.name.clone().unwrap_or_else(|| h.id.to_string());
        let channel = doc
            .channels
            .iter()
            .find(|c| c.host == h.id)
            .map_or("-".to_owned(), |c| {
                format!("yes ({} sessions, last id {})", c.sessions, c.last_id)
            });
        let _ = writeln!(
            out,
            "{:<15} {:>5}  {channel}",
            format!("{name} ({})", h.id),
            h.atoms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_args() -> SessionsArgs {
        SessionsArgs {
            client_ip: None,
            cookie: None,
            user: None,
            tls_session_id: None,
            custom: None,
            four_tuple: None,
            key: None,
            json: false,
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("SID=a b&c"), "SID%3Da%20b%26c");
        let args = SessionsArgs {
            cookie: Some("SID=x".into()),
            ..summary_args()
        };
        assert_eq!(args.query().as_deref(), Some("cookie=SID%3Dx"));
    }

    /// `--token-file` reaches `ctl sessions` too: a unit with an admin token answers it.
    #[tokio::test]
    async fn a_token_unit_answers_with_the_token_only() {
        const TOKEN: &str = "ctl-sessions-test-token-0123456789";
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            dir.path().join("cluster.key"),
            "ctl tests: not a production secret",
        )
        .expect("secret");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let path = dir.path().join("cluster.toml");
        let text = format!(
            r#"[cluster]
id = "ctl-test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb-1"
id = 1
address = "127.0.0.1"
roles = ["session-store"]

[sessions]
port = {port}
"#
        );
        std::fs::write(&path, text).expect("configuration");
        let config = switchyard_config::load_file(&path)
            .unwrap_or_else(|d| panic!("test configuration rejected:\n{d}"));
        let options = switchyard_lb::UnitOptions {
            unit: "lb-1".to_owned(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            control: None,
        };
        let token = switchyard_lb::admin::auth::AdminToken::new(TOKEN).expect("token");
        let unit =
            switchyard_lb::RunningUnit::start_with_admin_token(&config, options, Some(token))
                .await
                .expect("the unit starts");
        let addr = unit.admin_addr();
        let timeout = Duration::from_secs(5);
        let with = run(addr, timeout, Some(TOKEN), summary_args()).await;
        let without = run(addr, timeout, None, summary_args()).await;
        unit.shutdown().await;
        assert_eq!(with.expect("the summary with the token"), ExitCode::SUCCESS);
        let error = without.expect_err("no token").to_string();
        assert!(error.contains("401"), "{error}");
    }
}
