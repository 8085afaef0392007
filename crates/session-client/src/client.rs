//! [`SessionClient`]: blocking HTTP/1.1 requests to the agent's local API, one connection
//! per request (`Connection: close`), over loopback TCP or the Unix socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Session, SessionList, SessionReport};

/// Largest answer read (a big session list).
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent cannot be reached, or the connection failed.
    #[error("cannot talk to the agent at {at}: {source}")]
    Io {
        /// The agent's address or socket.
        at: String,
        /// The error.
        source: std::io::Error,
    },
    /// The agent refused the request (`{"error": ...}` with a status other than 2xx).
    #[error("the agent answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's reason.
        message: String,
    },
    /// The answer is not HTTP or not the expected JSON.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A client of one agent's session API.
#[derive(Debug, Clone)]
pub struct SessionClient {
    target: Target,
    host: Option<String>,
    timeout: Duration,
}

impl SessionClient {
    /// Talks to the agent's loopback TCP address (default `127.0.0.1:9181`).
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            target: Target::Tcp(addr),
            host: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Talks to the agent's Unix socket (default `/run/switchyard/agent.sock`).
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self {
            target: Target::Unix(path.into()),
            host: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Reports for host `name` (needed when the agent reports for several hosts).
    pub fn for_host(mut self, name: impl Into<String>) -> Self {
        self.host = Some(name.into());
        self
    }

    /// Gives up on a request after `timeout` (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Session up: the application opened `session` (of application `app`, a configured
    /// service of the host, if given).
    pub fn up(&self, session: &Session, app: Option<&str>) -> Result<(), ClientError> {
        let body = self.report(session, app)?;
        self.request("POST", "/v1/sessions", Some(&body)).map(drop)
    }

    /// Session down: the application closed `session`. Unknown sessions are an error (404).
    pub fn down(&self, session: &Session) -> Result<(), ClientError> {
        let body = self.report(session, None)?;
        self.request("POST", "/v1/sessions/down", Some(&body))
            .map(drop)
    }

    /// The session tables and channels of every host of the agent.
    pub fn list(&self) -> Result<SessionList, ClientError> {
        let body = self.request("GET", "/v1/sessions", None)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn report(&self, session: &Session, app: Option<&str>) -> Result<Vec<u8>, ClientError> {
        let report = SessionReport {
            host: self.host.clone(),
            session: session.clone(),
            app: app.map(str::to_owned),
        };
        serde_json::to_vec(&report).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn at(&self) -> String {
        match &self.target {
            Target::Tcp(addr) => addr.to_string(),
            Target::Unix(path) => path.display().to_string(),
        }
    }

    /// Sends one request and returns the body of a 2xx answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let io = |source| ClientError::Io {
            at: self.at(),
            source,
        };
        let host = match &self.target {
            Target::Tcp(addr) => addr.to_string(),
            Target::Unix(_) => "localhost".to_owned(),
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if method != "GET" {
            request.push_str("Content-Type: application/json\r\n");
        }
        let body = body.unwrap_or_default();
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        let answer = match &self.target {
            Target::Tcp(addr) => {
                let mut s = TcpStream::connect_timeout(addr, self.timeout).map_err(io)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                exchange(&mut s, &bytes).map_err(io)?
            }
            Target::Unix(path) => {
                let mut s = UnixStream::connect(path).map_err(io)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                exchange(&mut s, &bytes).map_err(io)?
            }
        };
        let (status, body) = parse_response(&answer)?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(ClientError::Refused { status, message })
        }
    }
}

fn exchange<S: Read + Write>(stream: &mut S, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut answer)?;
    Ok(answer)
}

/// Status and body of an HTTP/1.1 answer (plain or chunked body).
fn parse_response(answer: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |what: &str| ClientError::Protocol(what.to_owned());
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let rest = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("malformed chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = data.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).ok(), Some((201, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).ok(), Some((200, b"[1,2]".to_vec())));
        assert!(parse_response(b"garbage").is_err());
        assert!(dechunk(b"zz\r\n").is_none());
    }
}
