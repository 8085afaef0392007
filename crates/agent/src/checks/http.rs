//! HTTP check: `GET path` over HTTP/1.1 to the application's endpoint, with the endpoint as
//! `Host`. The application passes if the status is the expected one and, when a body
//! fragment is configured, the body contains it. At most [`MAX_BODY`] bytes of the body are
//! read; connection, request and body together must finish within the timeout.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ProbeResult, one_line, shown};

/// Most body bytes read while looking for the expected fragment.
pub const MAX_BODY: usize = 64 * 1024;

/// `User-Agent` of the probes, so applications can tell them from real traffic.
const AGENT: &str = concat!("switchyard-agent/", env!("CARGO_PKG_VERSION"));

/// What a healthy answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect<'a> {
    /// The status code.
    pub status: u16,
    /// A fragment the body must contain (within its first [`MAX_BODY`] bytes).
    pub body_contains: Option<&'a str>,
}

/// Sends one `GET path` to `endpoint` and judges the answer against `expect`.
pub async fn probe(
    endpoint: SocketAddr,
    path: &str,
    expect: &Expect<'_>,
    timeout: Duration,
) -> ProbeResult {
    match tokio::time::timeout(timeout, exchange(endpoint, path, expect)).await {
        Ok(Ok(result)) => result,
        Ok(Err(problem)) => ProbeResult::fail(format!("GET {path} at {endpoint}: {problem}")),
        Err(_) => ProbeResult::fail(format!(
            "GET {path} at {endpoint}: no complete answer within {}",
            shown(timeout)
        )),
    }
}

/// The request and its answer; `Err` for transport and protocol failures.
async fn exchange(
    endpoint: SocketAddr,
    path: &str,
    expect: &Expect<'_>,
) -> Result<ProbeResult, String> {
    let stream = TcpStream::connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, endpoint.to_string())
        .header(USER_AGENT, AGENT)
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;

    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        if status != expect.status {
            return Ok(ProbeResult::fail(format!(
                "status {status}, expected {}",
                expect.status
            )));
        }
        let Some(fragment) = expect.body_contains else {
            return Ok(ProbeResult::pass(format!("status {status}")));
        };
        judge_body(response.into_body(), fragment, status).await
    };
    // The connection future does the I/O; drive it beside the answer. It may finish first
    // (the server closed after a complete answer); the answer then completes from what was
    // already received.
    let mut answer = pin!(answer);
    let mut connection = pin!(connection);
    tokio::select! {
        result = &mut answer => result,
        done = &mut connection => match done {
            Ok(()) => answer.await,
            Err(e) => Err(format!("connection: {e}")),
        },
    }
}

/// Reads at most [`MAX_BODY`] bytes of `body`, stopping as soon as `fragment` shows up.
async fn judge_body(
    mut body: Incoming,
    fragment: &str,
    status: u16,
) -> Result<ProbeResult, String> {
    let needle = fragment.as_bytes();
    let mut seen: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Only the new bytes (plus an overlap for a fragment split across chunks) need
        // searching.
        let search_from = seen.len().saturating_sub(needle.len().saturating_sub(1));
        let room = MAX_BODY - seen.len();
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if contains(&seen[search_from..], needle) {
            return Ok(ProbeResult::pass(format!(
                "status {status}, body contains \"{}\"",
                one_line(fragment, 60)
            )));
        }
        if seen.len() >= MAX_BODY {
            return Ok(ProbeResult::fail(format!(
                "status {status}, but the first {} KiB of the body do not contain \"{}\"",
                MAX_BODY / 1024,
                one_line(fragment, 60)
            )));
        }
    }
    Ok(ProbeResult::fail(format!(
        "status {status}, but the body ({} bytes) does not contain \"{}\"",
        seen.len(),
        one_line(fragment, 60)
    )))
}

/// Whether `needle` occurs in `haystack`; an empty needle always does.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn finds_fragments() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(contains(b"abc", b""));
        assert!(!contains(b"o", b"ok"));
        assert!(!contains(b"", b"ok"));
    }
}
