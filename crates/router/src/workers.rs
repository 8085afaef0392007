//! The router's worker threads. Each runs a single-threaded tokio runtime and serves the
//! client connections handed to it together with the host connections their requests
//! borrow (see `upstream`: idle host connections are kept per worker), so a request is
//! read, forwarded, answered and its host connection returned to the pool on one thread.
//! On a multi-threaded runtime the client connection's task and the host connection's
//! task were woken on different cores for every request.
//!
//! A listener's accept loop runs on one worker and gives each new connection to the
//! worker with the fewest open connections (itself on a tie), as HAProxy spreads accepted
//! connections over its threads. Busy workers therefore get no new connections; a
//! connection never moves once placed.
//!
//! The threads end when the router (its last clone and every connection task holding it)
//! is dropped; tasks still on a worker then (idle host connections) are dropped with it.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

thread_local! {
    /// The index of the worker running on this thread (0 elsewhere).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The worker this code runs on (0 outside the router's workers: any worker's pools may
/// be used from anywhere, only less cheaply).
pub(crate) fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The router's worker threads.
#[derive(Debug)]
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Round robin of the listeners' accept loops over the workers.
    next_acceptor: AtomicUsize,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Client connections this worker serves right now.
    open: Arc<AtomicUsize>,
    /// Dropped with the router: the thread's runtime then ends.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("router-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(index));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            });
        }
        Ok(Self {
            workers,
            next_acceptor: AtomicUsize::new(0),
        })
    }

    /// The worker the next listener's accept loop runs on.
    pub(crate) fn next_acceptor(&self) -> usize {
        self.next_acceptor.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    /// Runs `task` on worker `index`.
    pub(crate) fn spawn<F>(&self, index: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.workers[index % self.workers.len()].handle.spawn(task)
    }

    /// The worker that should serve a new connection accepted on worker `here`, with the
    /// guard that counts the connection as open there until dropped.
    pub(crate) fn place(&self, here: usize) -> (usize, OpenConnection) {
        let load = |i: usize| self.workers[i].open.load(Ordering::Relaxed);
        let mut best = here % self.workers.len();
        for i in 0..self.workers.len() {
            if load(i) < load(best) {
                best = i;
            }
        }
        let open = self.workers[best].open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        (best, OpenConnection(open))
    }
}

/// One open client connection on a worker.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_connections_go_to_the_least_loaded_worker_and_stay_home_on_a_tie() {
        let workers = Workers::start(3).expect("workers");
        let (first, a) = workers.place(1);
        assert_eq!(
            first, 1,
            "a tie keeps the connection on the accepting worker"
        );
        let (second, b) = workers.place(1);
        assert_ne!(second, 1);
        let (third, _c) = workers.place(1);
        assert_ne!(third, 1);
        assert_ne!(third, second);
        drop(a);
        drop(b);
        assert_eq!(workers.place(2).0, 0, "closed connections no longer count");
    }

    #[test]
    fn tasks_run_on_the_worker_they_are_given_to() {
        let workers = Workers::start(2).expect("workers");
        let rt = Builder::new_current_thread().build().expect("runtime");
        for i in 0..2 {
            let ran_on = rt.block_on(workers.spawn(i, async { current() }));
            assert_eq!(ran_on.expect("task"), i);
        }
    }
}
