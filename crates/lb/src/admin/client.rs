//! A small HTTP/1.1 client for a unit's admin API (hyper over a tokio
//! `TcpStream`), used by `switchyard ctl` and tests. One request per
//! connection; the whole exchange is bounded by a timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::api::ErrorBody;

/// Default time a request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the address.
    #[error("connection to {addr} refused")]
    Refused {
        /// The address.
        addr: SocketAddr,
    },
    /// No complete answer in time.
    #[error("{addr} did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The address.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// Another connection error.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: hyper::Error,
    },
    /// The unit answered with an error status.
    #[error("{addr} answered {status}: {message}")]
    Status {
        /// The address.
        addr: SocketAddr,
        /// The HTTP status.
        status: u16,
        /// The error message of the answer (or its text).
        message: String,
    },
    /// The answer is not the expected document.
    #[error("{addr} sent an answer that is not the expected JSON document: {source}")]
    Decode {
        /// The address.
        addr: SocketAddr,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl AdminResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` from the admin API at `addr`, whatever the status.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<AdminResponse, ClientError> {
    get_authorized(addr, path, timeout, None).await
}

/// [`get`] with `Authorization: Bearer <token>` when `token` is given (a unit started
/// with an admin token).
pub async fn get_authorized(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<AdminResponse, ClientError> {
    send_authorized(addr, "GET", path, None, timeout, token).await
}

/// `method path` with an optional JSON `body` (state changes carry
/// `Content-Type: application/json`, as the API requires) and an optional bearer token,
/// whatever the status.
pub async fn send_authorized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<AdminResponse, ClientError> {
    match tokio::time::timeout(timeout, exchange(addr, method, path, body, token)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { addr, timeout }),
    }
}

/// `GET path` and decode the JSON answer; an error status becomes
/// [`ClientError::Status`] with the answer's `error` message.
pub async fn get_json<T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<T, ClientError> {
    get_json_authorized(addr, path, timeout, None).await
}

/// [`get_json`] with an optional bearer token ([`get_authorized`]).
pub async fn get_json_authorized<T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<T, ClientError> {
    let response = get_authorized(addr, path, timeout, token).await?;
    decode(addr, &response)
}

/// [`send_authorized`], decoding the JSON answer; an error status becomes
/// [`ClientError::Status`] with the answer's `error` message.
pub async fn send_json_authorized<T: DeserializeOwned>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
    token: Option<&str>,
) -> Result<T, ClientError> {
    let response = send_authorized(addr, method, path, body, timeout, token).await?;
    decode(addr, &response)
}

fn decode<T: DeserializeOwned>(
    addr: SocketAddr,
    response: &AdminResponse,
) -> Result<T, ClientError> {
    if !(200..300).contains(&response.status) {
        let message = serde_json::from_slice::<ErrorBody>(&response.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| response.text());
        return Err(ClientError::Status {
            addr,
            status: response.status,
            message,
        });
    }
    serde_json::from_slice(&response.body).map_err(|source| ClientError::Decode { addr, source })
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<AdminResponse, ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            ClientError::Refused { addr }
        } else {
            ClientError::Connect { addr, source }
        }
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ClientError::Http { addr, source })?;
    let driver = tokio::spawn(async move {
        // Errors surface through the request future as well.
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() || switchyard_transport::local_http::is_mutating(method) {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(ClientError::Status {
                addr,
                status: StatusCode::BAD_REQUEST.as_u16(),
                message: format!("invalid request {method} {path:?}: {e}"),
            });
        }
    };
    let result = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok::<_, hyper::Error>(AdminResponse {
            status,
            content_type,
            body,
        })
    }
    .await
    .map_err(|source| ClientError::Http { addr, source });
    driver.abort();
    result
}
