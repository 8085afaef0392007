//! A TCP connection to a VIP that exchanges tagged lines with the echo server
//! ([`super::echo`]), which answers `HOST TAG`: it learns which host serves it and checks
//! every later answer comes from the same host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// The host name of an answer line `NAME TAG\n` to `TAG\n`.
pub fn host_of(answer: &str, tag: &str) -> std::io::Result<String> {
    let mut parts = answer.trim_end().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(host), Some(t)) if t == tag && answer.ends_with('\n') => Ok(host.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "answer {answer:?} to {tag:?}"
        ))),
    }
}

/// A connection exchanging lines with one host.
pub struct LineConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The host that answered the first exchange.
    pub host: String,
    /// Names the connection in tags and errors.
    pub name: String,
    exchanges: u64,
}

impl LineConn {
    /// Connects (in the calling thread's namespace) and does one exchange.
    pub fn open(vip: SocketAddr, name: String, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&vip, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut conn = Self {
            stream,
            reader,
            host: String::new(),
            name,
            exchanges: 0,
        };
        conn.host = conn.round_trip()?;
        Ok(conn)
    }

    fn round_trip(&mut self) -> std::io::Result<String> {
        let tag = format!("{}-{}", self.name, self.exchanges);
        self.stream.write_all(format!("{tag}\n").as_bytes())?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        self.exchanges += 1;
        host_of(&answer, &tag)
    }

    /// One exchange that must be answered by the connection's host.
    pub fn exchange(&mut self) -> std::io::Result<()> {
        let host = self.round_trip()?;
        if host == self.host {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{} moved from {} to {host}",
                self.name, self.host
            )))
        }
    }

    /// A last exchange; then the client closes first and reads the server's FIN. Returns
    /// the number of exchanges.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.exchange()?;
        self.stream.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest)?;
        if rest.is_empty() {
            Ok(self.exchanges)
        } else {
            Err(std::io::Error::other("bytes after the last answer"))
        }
    }
}
