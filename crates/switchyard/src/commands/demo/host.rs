//! `switchyard demo-host` (hidden): the demo's built-in host application, a tiny HTTP/1.1
//! server run inside each demo host's namespace. `GET /` answers `hello from NAME`,
//! `GET /health` answers `ok` (the agents' HTTP check); one request per connection.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and take the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// Arguments of `switchyard demo-host`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    switchyard demo-host --name demo-1 --listen 127.0.0.1:8080")]
pub struct DemoHostArgs {
    /// The name it answers with.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Address to listen on (repeat for several; port 0 picks a free port, and the ready line
    /// `demo-host ready name=NAME listen=ADDR,…` names the bound addresses).
    #[arg(long, value_name = "IP:PORT", required = true)]
    pub listen: Vec<SocketAddr>,
}

/// Serves until SIGTERM or SIGINT, then exits 0.
pub fn run(args: DemoHostArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let name: Arc<str> = Arc::from(args.name.as_str());
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut listen = Vec::new();
        for addr in &args.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            // The bound address: port 0 picks one, and the ready line says which.
            let bound = listener
                .local_addr()
                .with_context(|| format!("the address bound for {addr}"))?;
            listen.push(bound.to_string());
            tokio::spawn(serve(listener, Arc::clone(&name), Arc::clone(&limit)));
        }
        eprintln!(
            "demo-host ready name={} listen={}",
            args.name,
            listen.join(",")
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn serve(listener: TcpListener, name: Arc<str>, limit: Arc<Semaphore>) {
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((conn, _)) => {
                let name = Arc::clone(&name);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(conn, &name)).await;
                    drop(permit);
                });
            }
            Err(e) => {
                eprintln!("demo-host: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and writes the answer, then closes.
async fn answer(mut conn: TcpStream, name: &str) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(&mut conn, 431, "request head too large\n").await;
        }
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = route(&head, name);
    respond(&mut conn, status, &body).await
}

/// The status and body for a request head.
fn route(head: &[u8], name: &str) -> (u16, String) {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|t| t.split('?').next().unwrap_or_default());
    match (method, path) {
        ("GET", Some("/")) => (200, format!("hello from {name}\n")),
        ("GET", Some("/health")) => (200, "ok\n".to_owned()),
        ("GET", Some(_)) => (404, "not found: try / or /health\n".to_owned()),
        (_, Some(_)) => (405, "only GET\n".to_owned()),
        _ => (400, "bad request\n".to_owned()),
    }
}

async fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes() {
        let get = |path: &str| route(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes(), "demo-2");
        assert_eq!(get("/"), (200, "hello from demo-2\n".to_owned()));
        assert_eq!(get("/health"), (200, "ok\n".to_owned()));
        assert_eq!(get("/?x=1").0, 200);
        assert_eq!(get("/other").0, 404);
        assert_eq!(route(b"POST / HTTP/1.1\r\n\r\n", "h").0, 405);
        assert_eq!(route(b"\r\n\r\n", "h").0, 400);
    }
}
