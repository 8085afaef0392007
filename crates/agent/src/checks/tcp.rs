//! TCP check: the application passes if a TCP connection to its endpoint opens within the
//! timeout. The connection is closed at once; nothing is sent.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ProbeResult, shown};

/// Opens (and closes) one TCP connection to `endpoint`.
pub async fn probe(endpoint: SocketAddr, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
        Ok(Ok(_stream)) => ProbeResult::pass(format!("connected to {endpoint}")),
        Ok(Err(e)) => ProbeResult::fail(format!("connect to {endpoint}: {e}")),
        Err(_) => ProbeResult::fail(format!(
            "connect to {endpoint}: no answer within {}",
            shown(timeout)
        )),
    }
}
