//! Integration tests of the testbed on the real kernel: real namespaces, veths, packets and
//! processes. They need root: without it each test prints `SKIPPED …` and passes, except under
//! `CI=true`, where it fails. Every traffic loop is bounded in count and time, and every address
//! is in 198.18.0.0/15 or fd53:7900::/32.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod ecmp;
mod faults;
mod here;
mod skip;
mod teardown;
mod traffic;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use switchyard_testbed::Netns;

/// Generous limit for any single network wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Binds a TCP listener at `addr` inside `ns` and echoes connections back (each until the peer
/// closes) on a background thread: at most `conns` connections, and for at most 15 s.
pub fn echo_server(ns: &Netns, addr: SocketAddr, conns: usize) -> thread::JoinHandle<()> {
    let listener = ns.enter(|| TcpListener::bind(addr)).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut served = 0;
        while served < conns && Instant::now() < deadline {
            let Ok((mut conn, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(1));
                continue;
            };
            served += 1;
            conn.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    })
}

/// Connects from inside `ns` to `addr`, sends `payload`, and returns what comes back.
pub fn echo_roundtrip(ns: &Netns, addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = ns
        .enter(|| TcpStream::connect_timeout(&addr, PATIENCE))
        .unwrap()?;
    conn.set_read_timeout(Some(PATIENCE))?;
    conn.write_all(payload)?;
    let mut back = vec![0u8; payload.len()];
    conn.read_exact(&mut back)?;
    Ok(back)
}

/// Sends `count` numbered UDP datagrams from `from` to `to` (bound inside `into`) and returns
/// how many distinct ones arrived. Paced in bursts of 50 so that no socket buffer or backlog
/// overflows: every loss is a fault's doing. The receiver stops when all arrived or after
/// 300 ms of silence.
pub fn udp_delivered(from: &Netns, into: &Netns, to: SocketAddr, count: u32) -> usize {
    let rx = into.enter(|| UdpSocket::bind(to)).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let receiver = thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + PATIENCE * 2;
        while seen.len() < count as usize && Instant::now() < deadline {
            match rx.recv(&mut buf) {
                Ok(4) => {
                    seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
                Ok(_) => {}
                Err(_) => break, // silence: whatever was going to arrive has arrived
            }
        }
        seen.len()
    });
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let tx = from.enter(|| UdpSocket::bind(any)).unwrap().unwrap();
    for seq in 0..count {
        // An unreachable destination (link down) makes send fail; that datagram is lost.
        let _ = tx.send_to(&seq.to_be_bytes(), to);
        if seq % 50 == 49 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    receiver.join().unwrap()
}
