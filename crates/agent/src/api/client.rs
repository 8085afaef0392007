//! A minimal client of the local API, over TCP or the Unix socket: one request per
//! connection, the whole body read. For tests, tools and applications written in Rust that
//! report their own status.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where the local API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTarget {
    /// The loopback TCP address.
    Tcp(SocketAddr),
    /// The Unix socket.
    Unix(PathBuf),
}

/// An answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body (JSON for `/v1`, text for `/metrics`).
    pub body: String,
}

impl ApiResponse {
    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request (`method` such as `"GET"`, `path` such as `"/v1/hosts"`, an optional
/// JSON body) and returns the answer.
pub async fn request(
    target: &ApiTarget,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<ApiResponse> {
    match target {
        ApiTarget::Tcp(addr) => {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            exchange(stream, method, path, body).await
        }
        ApiTarget::Unix(path_on_disk) => {
            let stream = UnixStream::connect(path_on_disk)
                .await
                .with_context(|| format!("cannot connect to {}", path_on_disk.display()))?;
            exchange(stream, method, path, body).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<ApiResponse>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost");
    // The API wants the JSON type on every state change, body or not.
    if body.is_some() || switchyard_transport::local_http::is_mutating(method) {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .context("building the request")?;
    let response = sender.send_request(request).await.context("sending")?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    driver.abort();
    Ok(ApiResponse {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
