//! [`AppServer`]: a tiny HTTP/1.1 application bound inside a testbed namespace, answering
//! every request with `200 ok`, that a test stops (the port closes: connections are
//! refused) and starts again. It is the application behind a pool host that the agent's
//! HTTP check probes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use switchyard_testbed::Netns;

/// The body of every answer (an HTTP check's `body_contains` can look for it).
pub const BODY: &str = "ok\n";

/// A running (or stopped) application server; stopped on drop.
#[derive(Debug)]
pub struct AppServer {
    ns: Netns,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl AppServer {
    /// Binds `addr` inside `ns` and serves until [`AppServer::stop`].
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let mut server = Self {
            ns: ns.clone(),
            addr,
            served: Arc::new(AtomicU64::new(0)),
            running: None,
        };
        server.restart();
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (all runs).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Closes the listening socket (new connections are refused) and waits for the serving
    /// thread to end. Stopping a stopped server does nothing.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            thread.join().expect("application server thread panicked");
        }
    }

    /// Binds the address again and serves. Starting a running server does nothing.
    pub fn restart(&mut self) {
        if self.running.is_some() {
            return;
        }
        let addr = self.addr;
        let listener = self
            .ns
            .enter(|| TcpListener::bind(addr))
            .expect("enter the host namespace")
            .unwrap_or_else(|e| panic!("application server cannot bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::clone(&self.served);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("app {addr}"))
            .spawn(move || serve(listener, &flag, &served))
            .expect("spawn the application server");
        self.running = Some((stop, thread));
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, served: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                if answer(conn).is_ok() {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // The listener closes here: connections are refused from now on.
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )?;
    conn.flush()
}
