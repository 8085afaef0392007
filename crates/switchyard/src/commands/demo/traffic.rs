//! The demo's traffic generator: `GET /` over HTTP/1.1, one new TCP connection per request,
//! at a fixed rate, counting the answers by the host that gave them (`hello from demo-2`).
//! The same requests fit both shapes: as root they go from inside the client namespace to
//! the VIPs (the packet path: forwarder, classifier, NAT to a host), without root to the
//! request router's listener on loopback (which routes each request). Bounded: at most
//! [`MAX_RATE`] requests per second, [`MAX_IN_FLIGHT`] at once, [`MAX_REQUESTS`] in all, each
//! request limited in time; it stops when told to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use switchyard_testbed::Netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

/// Highest `--rate`.
pub const MAX_RATE: u32 = 200;
/// Requests in flight at once; a tick finding them all busy is counted as skipped.
const MAX_IN_FLIGHT: usize = 64;
/// Requests in one run of the generator.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// Time limit of one request (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024;

/// What the generator has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests started.
    pub sent: u64,
    /// Answers by host name.
    pub by_host: BTreeMap<String, u64>,
    /// Requests that failed (time-out, reset, bad answer).
    pub failed: u64,
    /// Ticks skipped because [`MAX_IN_FLIGHT`] requests were still running.
    pub skipped: u64,
    /// The latest failure.
    pub last_error: Option<String>,
}

impl Tally {
    /// Requests answered by any host.
    pub fn answered(&self) -> u64 {
        self.by_host.values().sum()
    }

    /// Answers from `host`.
    pub fn count(&self, host: &str) -> u64 {
        self.by_host.get(host).copied().unwrap_or(0)
    }
}

/// A running generator.
#[derive(Debug)]
pub struct Traffic {
    tally: Arc<Mutex<Tally>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Traffic {
    /// Starts sending `rate` requests per second (1..=[`MAX_RATE`]) from inside `ns` (`None`:
    /// from the demo's own namespace), alternating between `targets`.
    pub fn start(ns: Option<Netns>, targets: Vec<SocketAddr>, rate: u32) -> Self {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::clone(&tally);
        let thread = std::thread::spawn(move || {
            let inner = Arc::clone(&shared);
            let run = move || generate(&targets, rate, &inner, stopped);
            let result = match ns {
                Some(ns) => ns.enter(run).map_err(|e| e.to_string()),
                None => Ok(run()),
            };
            let error = match result {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e,
            };
            lock(&shared).last_error = Some(format!("the traffic generator stopped: {error}"));
        });
        Self {
            tally,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of the counts so far.
    pub fn tally(&self) -> Tally {
        lock(&self.tally).clone()
    }

    /// Stops sending, lets the requests in flight finish (bounded by their time limit) and
    /// returns the final counts.
    pub fn finish(mut self) -> Tally {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.tally()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The generator's loop, on a current-thread runtime of this thread (so every socket it
/// opens belongs to the namespace the thread is in).
fn generate(
    targets: &[SocketAddr],
    rate: u32,
    tally: &Arc<Mutex<Tally>>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rate = rate.clamp(1, MAX_RATE);
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        for n in 0..MAX_REQUESTS {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() {
                break;
            }
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                lock(tally).skipped += 1;
                continue;
            };
            let Some(&target) = targets.get(n as usize % targets.len().max(1)) else {
                break;
            };
            lock(tally).sent += 1;
            let tally = Arc::clone(tally);
            tokio::spawn(async move {
                let result = tokio::time::timeout(REQUEST_TIMEOUT, request(target))
                    .await
                    .unwrap_or_else(|_| Err(format!("{target}: no answer within 3 s")));
                let mut t = lock(&tally);
                match result {
                    Ok(host) => *t.by_host.entry(host).or_default() += 1,
                    Err(e) => {
                        t.failed += 1;
                        t.last_error = Some(e);
                    }
                }
                drop(permit);
            });
        }
        // Let the requests in flight finish; each is bounded by REQUEST_TIMEOUT.
        let _ = tokio::time::timeout(
            REQUEST_TIMEOUT + Duration::from_secs(1),
            limit.acquire_many(MAX_IN_FLIGHT as u32),
        )
        .await;
    });
    Ok(())
}

/// One `GET /` on a new connection; returns the name of the host that answered.
async fn request(target: SocketAddr) -> Result<String, String> {
    let fail = |what: &str, e: std::io::Error| format!("{target}: {what}: {e}");
    let mut conn = TcpStream::connect(target)
        .await
        .map_err(|e| fail("connect", e))?;
    let host = match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let head = format!(
        "GET / HTTP/1.1\r\nhost: {host}\r\nuser-agent: switchyard-demo\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes())
        .await
        .map_err(|e| fail("send", e))?;
    let mut answer = Vec::new();
    (&mut conn)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| fail("receive", e))?;
    host_of(&String::from_utf8_lossy(&answer)).ok_or_else(|| {
        let first = String::from_utf8_lossy(&answer);
        let first = first.lines().next().unwrap_or("(empty answer)");
        format!("{target}: unexpected answer {first:?}")
    })
}

/// The host named by a demo host's answer (`HTTP/1.1 200 OK … hello from demo-2`).
pub fn host_of(answer: &str) -> Option<String> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    let name = body.trim().strip_prefix("hello from ")?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn answers_name_their_host() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\nhello from demo-2\n";
        assert_eq!(host_of(ok).as_deref(), Some("demo-2"));
        assert_eq!(
            host_of("HTTP/1.1 404 Not Found\r\n\r\nhello from x\n"),
            None
        );
        assert_eq!(host_of("HTTP/1.1 200 OK\r\n\r\nsomething else\n"), None);
        assert_eq!(host_of("garbage"), None);
    }
}
