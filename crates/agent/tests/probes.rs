//! The built-in probes against real sockets, real HTTP servers and real processes, all on
//! loopback and bounded in time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_agent::checks::{exec, http, run_probe, tcp};
use switchyard_agent::service::pidfile::process_alive;
use switchyard_config::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const SHORT: Duration = Duration::from_millis(500);

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
}

#[tokio::test]
async fn tcp_passes_when_something_listens_and_fails_when_not() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let open = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let result = tcp::probe(open, SHORT).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.load, None);

    let closed = closed_port().await;
    let result = tcp::probe(closed, SHORT).await;
    assert!(!result.ok, "{result:?}");
    assert!(result.detail.contains(&closed.to_string()), "{result:?}");

    // Through the dispatch used by the runner.
    assert!(run_probe(&Probe::Tcp, open, SHORT).await.ok);
}

/// How the test HTTP server answers every request.
#[derive(Debug, Clone)]
enum Answer {
    /// A complete response with `Content-Length`.
    Fixed { status: u16, body: &'static str },
    /// A chunked response, one chunk per part.
    Chunked { parts: Vec<&'static str> },
    /// Reads the request and never answers.
    Silent,
    /// Status 200 and a chunked body that never ends, starting with `prefix`.
    Endless { prefix: &'static str },
}

/// A small HTTP/1.1 server on 127.0.0.1 speaking just enough of the protocol; returns its
/// address and the request heads it received.
async fn http_server(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let _ = respond(stream, answer, seen).await;
            });
        }
    });
    (address, heads)
}

async fn respond(
    mut stream: TcpStream,
    answer: Answer,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    if let Ok(mut heads) = seen.lock() {
        heads.push(String::from_utf8_lossy(&head).into_owned());
    }
    match answer {
        Answer::Fixed { status, body } => {
            let response = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await?;
        }
        Answer::Chunked { parts } => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            for part in parts {
                stream
                    .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                    .await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Answer::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
        Answer::Endless { prefix } => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            stream
                .write_all(format!("{:x}\r\n{prefix}\r\n", prefix.len()).as_bytes())
                .await?;
            let filler = vec![b'x'; 8192];
            loop {
                stream.write_all(b"2000\r\n").await?;
                stream.write_all(&filler).await?;
                stream.write_all(b"\r\n").await?;
            }
        }
    }
    stream.shutdown().await
}

fn expect(status: u16, body_contains: Option<&str>) -> http::Expect<'_> {
    http::Expect {
        status,
        body_contains,
    }
}

#[tokio::test]
async fn http_passes_on_the_expected_status_and_sends_host() {
    let (address, heads) = http_server(Answer::Fixed {
        status: 200,
        body: "fine",
    })
    .await;
    let result = http::probe(address, "/healthz", &expect(200, None), SHORT).await;
    assert!(result.ok, "{result:?}");
    let heads = heads.lock().map(|h| h.clone()).unwrap_or_default();
    let head = heads.first().map_or("", String::as_str);
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("host: {address}\r\n")),
        "{head:?}"
    );
}

#[tokio::test]
async fn http_fails_on_another_status() {
    let (address, _) = http_server(Answer::Fixed {
        status: 503,
        body: "ok",
    })
    .await;
    let result = http::probe(address, "/", &expect(200, Some("ok")), SHORT).await;
    assert!(!result.ok, "{result:?}");
    assert!(
        result.detail.contains("status 503, expected 200"),
        "{result:?}"
    );

    // A check may expect something other than 200.
    let result = http::probe(address, "/", &expect(503, None), SHORT).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn http_checks_the_body_when_asked() {
    let (address, _) = http_server(Answer::Fixed {
        status: 200,
        body: "{\"status\":\"ok\"}",
    })
    .await;
    let found = http::probe(address, "/", &expect(200, Some("\"ok\"")), SHORT).await;
    assert!(found.ok, "{found:?}");
    let missing = http::probe(address, "/", &expect(200, Some("ready")), SHORT).await;
    assert!(!missing.ok, "{missing:?}");
    assert!(
        missing.detail.contains("does not contain \"ready\""),
        "{missing:?}"
    );
}

#[tokio::test]
async fn http_finds_a_fragment_split_across_chunks() {
    let (address, _) = http_server(Answer::Chunked {
        parts: vec!["status: hea", "lthy and", " well"],
    })
    .await;
    let result = http::probe(address, "/", &expect(200, Some("healthy")), SHORT).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn http_gives_up_on_a_server_that_never_answers() {
    let (address, _) = http_server(Answer::Silent).await;
    let started = Instant::now();
    let result = http::probe(address, "/", &expect(200, None), Duration::from_millis(200)).await;
    assert!(!result.ok, "{result:?}");
    assert!(result.detail.contains("within 200ms"), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_reads_a_huge_body_only_up_to_the_limit() {
    let (address, _) = http_server(Answer::Endless { prefix: "ok " }).await;
    let started = Instant::now();
    // Found early: no need to read on.
    let result = http::probe(
        address,
        "/",
        &expect(200, Some("ok")),
        Duration::from_secs(3),
    )
    .await;
    assert!(result.ok, "{result:?}");
    // Never found: the probe stops at the limit, well before the timeout.
    let result = http::probe(
        address,
        "/",
        &expect(200, Some("ready")),
        Duration::from_secs(3),
    )
    .await;
    assert!(!result.ok, "{result:?}");
    assert!(result.detail.contains("first 64 KiB"), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_fails_when_nothing_listens() {
    let closed = closed_port().await;
    let result = http::probe(closed, "/", &expect(200, None), SHORT).await;
    assert!(!result.ok, "{result:?}");
    assert!(result.detail.contains("connect"), "{result:?}");
}

fn command(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn somewhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[tokio::test]
async fn exec_passes_on_exit_zero_and_reports_load() {
    let result = exec::probe(
        &command(&["sh", "-c", "echo load=42; exit 0"]),
        somewhere(),
        SHORT,
    )
    .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.load, Some(42));
    assert!(result.detail.contains("status 0"), "{result:?}");
}

#[tokio::test]
async fn exec_fails_on_a_nonzero_exit() {
    let result = exec::probe(
        &command(&["sh", "-c", "echo broken; exit 3"]),
        somewhere(),
        SHORT,
    )
    .await;
    assert!(!result.ok, "{result:?}");
    assert!(result.detail.contains("status 3: broken"), "{result:?}");
}

#[tokio::test]
async fn exec_ignores_load_text_that_is_not_a_load() {
    let result = exec::probe(
        &command(&["sh", "-c", "echo load=abc; echo load=250; echo loads=7"]),
        somewhere(),
        SHORT,
    )
    .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.load, None);
}

#[tokio::test]
async fn exec_kills_a_command_that_overruns_and_everything_it_started() -> std::io::Result<()> {
    let started = Instant::now();
    let result = exec::probe(
        &command(&["sleep", "10"]),
        somewhere(),
        Duration::from_millis(200),
    )
    .await;
    assert!(!result.ok, "{result:?}");
    assert!(
        result.detail.contains("did not finish within 200ms"),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A shell whose own child holds the output open: the whole group goes.
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("background.pid");
    let script = format!("sleep 10 & echo $! > {}; wait", pid_file.display());
    let started = Instant::now();
    let result = exec::probe(
        &command(&["sh", "-c", &script]),
        somewhere(),
        Duration::from_millis(300),
    )
    .await;
    assert!(!result.ok, "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)?
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no background pid: {e}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_alive(pid).is_up() {
        assert!(Instant::now() < deadline, "background sleep {pid} survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn exec_reports_a_program_that_cannot_run() {
    let result = exec::probe(
        &command(&["/nonexistent/switchyard-check"]),
        somewhere(),
        SHORT,
    )
    .await;
    assert!(!result.ok, "{result:?}");
    assert!(
        result
            .detail
            .starts_with("cannot run /nonexistent/switchyard-check"),
        "{result:?}"
    );
    assert!(!exec::probe(&[], somewhere(), SHORT).await.ok);
}

#[tokio::test]
async fn exec_gets_the_endpoint_and_bounded_output() {
    let result = exec::probe(
        &command(&[
            "sh",
            "-c",
            "echo \"$SWITCHYARD_ENDPOINT $SWITCHYARD_ADDRESS $SWITCHYARD_PORT\"",
        ]),
        "[::1]:8443".parse().unwrap_or_else(|e| panic!("{e}")),
        SHORT,
    )
    .await;
    assert!(
        result.detail.ends_with(": [::1]:8443 ::1 8443"),
        "{result:?}"
    );

    // A megabyte of output: the command is not blocked on a full pipe, and a load printed
    // after the first 64 KiB is not seen.
    let result = exec::probe(
        &command(&["sh", "-c", "yes x | head -c 1000000; echo load=7"]),
        somewhere(),
        Duration::from_secs(3),
    )
    .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.load, None);
    assert!(result.detail.chars().count() < 200, "{result:?}");
}
