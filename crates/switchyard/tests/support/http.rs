//! HTTP for the request-router tests: [`NamedApp`], a keep-alive application that names
//! itself in every answer (in a testbed namespace or on loopback), and [`Client`], a
//! keep-alive HTTP/1.1 client that sends the router's affinity cookie and reads the one it
//! sets; [`requests`] counts answers per host name.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use switchyard_testbed::Netns;

/// Longest a connect or a read of the client may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A keep-alive HTTP/1.1 application answering `GET /healthz` with `ok` and everything else
/// with its name; stopping closes the listener and every open connection.
pub struct NamedApp {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NamedApp {
    /// Binds `addr` inside `ns` (on this machine's stack when `None`; port 0 picks one)
    /// and serves until stopped.
    pub fn start(ns: Option<&Netns>, addr: SocketAddr, name: &str) -> Self {
        let listener = match ns {
            Some(ns) => ns
                .enter(|| TcpListener::bind(addr))
                .expect("enter the host namespace"),
            None => TcpListener::bind(addr),
        }
        .unwrap_or_else(|e| panic!("application cannot bind {addr}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("bound address");
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, n) = (served.clone(), stop.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !f.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (s, f, n) = (s.clone(), f.clone(), n.clone());
                        conns.push(std::thread::spawn(move || serve_conn(c, &n, &s, &f)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            for c in conns {
                let _ = c.join();
            }
        });
        Self {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered with its name (health checks not counted).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection, and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NamedApp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_conn(conn: TcpStream, name: &str, served: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        // Request line and headers; a read timeout only looks at the stop flag.
        let mut head = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line.clone());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let health = head.first().is_some_and(|l| l.starts_with("GET /healthz"));
        let body = if health {
            "ok\n".to_owned()
        } else {
            served.fetch_add(1, Ordering::Relaxed);
            format!("{name}\n")
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// One answer: status, body (trimmed), the affinity cookie it set (if any).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub set_cookie: Option<String>,
}

/// A keep-alive HTTP/1.1 connection to the router.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Self, String> {
        let conn =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = conn.try_clone().map_err(|e| e.to_string())?;
        Ok(Self {
            reader: BufReader::new(conn),
            writer,
        })
    }

    /// `GET path`, with `Cookie: cookie` if given.
    pub fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<Answer, String> {
        let cookie = cookie.map_or_else(String::new, |c| format!("Cookie: {c}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: www.test\r\n{cookie}\r\n");
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| format!("status line: {e}"))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut set_cookie = None;
        loop {
            line.clear();
            self.reader
                .read_line(&mut line)
                .map_err(|e| format!("header: {e}"))?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| format!("bad length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("set-cookie") {
                set_cookie = value.split(';').next().map(str::to_owned);
            }
        }
        let mut body = vec![0u8; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("body: {e}"))?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
            set_cookie,
        })
    }
}

/// `n` requests to `addr`, each on a new connection (or all on one with `keep_alive`),
/// with `cookie` if given, from this thread (and so its namespace). Returns the answers per
/// host name, or the first few failures.
pub fn requests(
    addr: SocketAddr,
    n: usize,
    keep_alive: bool,
    cookie: Option<&str>,
) -> Result<BTreeMap<String, usize>, Vec<String>> {
    let mut by_host = BTreeMap::new();
    let mut failures = Vec::new();
    let mut conn: Option<Client> = None;
    for i in 0..n {
        let result = (|| {
            if !keep_alive || conn.is_none() {
                conn = Some(Client::connect(addr)?);
            }
            let c = conn.as_mut().ok_or("no connection")?;
            c.get(&format!("/r/{i}"), cookie)
        })();
        match result {
            Ok(a) if a.status == 200 => *by_host.entry(a.body).or_insert(0) += 1,
            Ok(a) => failures.push(format!("request {i}: status {} {}", a.status, a.body)),
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
        if failures.len() >= 5 {
            break;
        }
    }
    if failures.is_empty() {
        Ok(by_host)
    } else {
        Err(failures)
    }
}
