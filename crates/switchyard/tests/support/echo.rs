//! [`EchoServer`]: a host's application for the packet-path traffic tests, bound inside the
//! host's namespace, that tells every client which host answered.
//!
//! - TCP, one thread per connection: every line `X\n` the client sends is answered with
//!   `NAME X\n` (`NAME` = the host's name, e.g. `web-2`), for as long as the client keeps the
//!   connection; the server closes its side when the client does (so a test's connection ends
//!   with FINs, never a reset from the server). A line `trickle N MS` (answered like any
//!   other) makes the server keep its side open after the client's FIN: it then sends
//!   `NAME tick-I\n` for I in 0..N, one every MS milliseconds, and closes (a half-closed
//!   connection that still carries data).
//! - UDP: every datagram `X` is answered with `NAME X` to its sender.
//!
//! It listens on every address it is given (the host's IPv4 and IPv6 endpoints) and counts
//! TCP connections accepted, TCP lines answered and UDP datagrams answered.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use switchyard_testbed::Netns;

/// How often blocked server threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What a server has done so far.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// TCP lines answered.
    pub lines: AtomicU64,
    /// UDP datagrams answered.
    pub datagrams: AtomicU64,
    /// TCP connections that ended with an error on the server side (reset, timeout, …).
    pub errors: AtomicU64,
}

/// A running echo server; stopped on drop.
#[derive(Debug)]
pub struct EchoServer {
    name: String,
    stats: Arc<EchoStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds TCP and UDP on every address of `addrs` inside `ns` and answers as `name`.
    pub fn start(ns: &Netns, name: &str, addrs: &[SocketAddr]) -> Self {
        let stats = Arc::new(EchoStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &addr in addrs {
            let (tcp, udp) = ns
                .enter(|| (TcpListener::bind(addr), UdpSocket::bind(addr)))
                .expect("enter the host namespace");
            let tcp = tcp.unwrap_or_else(|e| panic!("echo server cannot bind tcp {addr}: {e}"));
            let udp = udp.unwrap_or_else(|e| panic!("echo server cannot bind udp {addr}: {e}"));
            tcp.set_nonblocking(true).expect("non-blocking listener");
            udp.set_read_timeout(Some(TICK)).expect("udp read timeout");
            let (n, s, f) = (name.to_owned(), Arc::clone(&stats), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("echo tcp {addr}"))
                    .spawn(move || accept_loop(&tcp, &n, &s, &f))
                    .expect("spawn the echo server"),
            );
            let (n, s, f) = (name.to_owned(), Arc::clone(&stats), Arc::clone(&stop));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("echo udp {addr}"))
                    .spawn(move || udp_loop(&udp, &n, &s, &f))
                    .expect("spawn the echo server"),
            );
        }
        Self {
            name: name.to_owned(),
            stats,
            stop,
            threads,
        }
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> &EchoStats {
        &self.stats
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, name: &str, stats: &Arc<EchoStats>, stop: &Arc<AtomicBool>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let (n, s, f) = (name.to_owned(), Arc::clone(stats), Arc::clone(stop));
                match std::thread::Builder::new()
                    .name("echo conn".into())
                    .spawn(move || {
                        if serve(conn, &n, &s, &f).is_err() {
                            s.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }) {
                    Ok(t) => conns.push(t),
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Bounded bookkeeping: forget finished connection threads.
                if conns.len() > 64 {
                    conns.retain(|t| !t.is_finished());
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

fn serve(conn: TcpStream, name: &str, stats: &EchoStats, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(TICK))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let mut trickle: Option<(u32, u64)> = None;
    loop {
        match reader.read_line(&mut line) {
            // The client closed its side: close ours (FIN), after the trickle if asked for.
            Ok(0) => {
                if let Some((n, ms)) = trickle {
                    for i in 0..n {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(ms));
                        writer.write_all(format!("{name} tick-{i}\n").as_bytes())?;
                    }
                }
                return Ok(());
            }
            Ok(_) if line.ends_with('\n') => {
                if let Some(args) = line.trim_end().strip_prefix("trickle ") {
                    let mut it = args.split(' ').map(str::parse::<u64>);
                    if let (Some(Ok(n)), Some(Ok(ms))) = (it.next(), it.next()) {
                        trickle = Some((u32::try_from(n).unwrap_or(u32::MAX).min(1000), ms));
                    }
                }
                writer.write_all(format!("{name} {line}").as_bytes())?;
                stats.lines.fetch_add(1, Ordering::Relaxed);
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn udp_loop(socket: &UdpSocket, name: &str, stats: &EchoStats, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut answer = format!("{name} ").into_bytes();
            answer.extend_from_slice(&buf[..n]);
            if socket.send_to(&answer, from).is_ok() {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
