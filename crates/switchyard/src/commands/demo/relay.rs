//! The admin relay: makes the LB unit's admin API, which listens on loopback inside the
//! unit's namespace, reachable on loopback in the root namespace (so `curl` and
//! `switchyard ctl hosts` work as against any unit). Each accepted connection is joined to a
//! connection opened by a thread that lives in the unit's namespace (a socket keeps the
//! namespace it was created in). Only loopback, only to the admin API, bounded in number
//! and lifetime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_testbed::Netns;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Relayed connections at once; more are refused (closed).
const MAX_CONNECTIONS: usize = 32;
/// Time to connect to the admin API inside the namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest life of one relayed connection.
const MAX_LIFETIME: Duration = Duration::from_secs(300);

type Connect = oneshot::Sender<std::io::Result<std::net::TcpStream>>;

/// The running relay; stops when dropped.
#[derive(Debug)]
pub struct Relay {
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays connections accepted on `listener` (root namespace, loopback) to `target` inside
/// `ns`.
pub fn start(listener: TcpListener, ns: Netns, target: SocketAddr) -> Relay {
    let (connect_tx, mut connect_rx) = mpsc::channel::<Connect>(MAX_CONNECTIONS);
    // The connector: a thread in the unit's namespace opening connections on request. It
    // ends when the relay task (the only sender) is gone.
    std::thread::spawn(move || {
        let result = ns.enter(move || {
            while let Some(reply) = connect_rx.blocking_recv() {
                let _ = reply.send(std::net::TcpStream::connect_timeout(
                    &target,
                    CONNECT_TIMEOUT,
                ));
            }
        });
        if let Err(e) = result {
            eprintln!("switchyard demo: the admin relay cannot enter the unit's namespace: {e}");
        }
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Reap finished connections so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                continue; // too many at once: closed at once
            };
            let connect_tx = connect_tx.clone();
            tasks.spawn(async move {
                let _ = tokio::time::timeout(MAX_LIFETIME, relay_one(client, connect_tx)).await;
                drop(permit);
            });
        }
    });
    Relay { task }
}

async fn relay_one(mut client: TcpStream, connect: mpsc::Sender<Connect>) -> std::io::Result<()> {
    let (reply_tx, reply_rx) = oneshot::channel();
    connect
        .send(reply_tx)
        .await
        .map_err(|_| std::io::Error::other("the relay's connector has stopped"))?;
    let upstream = reply_rx
        .await
        .map_err(|_| std::io::Error::other("the relay's connector has stopped"))??;
    upstream.set_nonblocking(true)?;
    let mut upstream = TcpStream::from_std(upstream)?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
