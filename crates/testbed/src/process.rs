//! Long-running children started inside a namespace ([`Process`]): signalling, killing, waiting,
//! and their captured stdout/stderr files. A child is never signalled after it has been reaped,
//! so a recycled pid can never be hit. Dropping a `Process` terminates it (SIGTERM, then SIGKILL
//! after a grace period) and reaps it; the testbed does the same for any still running at
//! teardown.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::exec::{Prepared, Spec};

/// How long a process gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// A child process running inside a testbed namespace.
///
/// Its stdout and stderr go to files in the testbed's log directory ([`Process::stdout`],
/// [`Process::stderr`]); its environment carries `SWITCHYARD_TESTBED=<testbed name>`. All methods
/// take `&self`, so a `Process` can be shared between threads.
#[derive(Debug)]
pub struct Process {
    shared: Arc<ProcShared>,
}

#[derive(Debug)]
pub(crate) struct ProcShared {
    pid: u32,
    command: String,
    place: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    state: Mutex<ProcState>,
}

#[derive(Debug)]
struct ProcState {
    child: Child,
    status: Option<ExitStatus>,
}

impl ProcShared {
    pub(crate) fn new(
        child: Child,
        command: String,
        place: String,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
    ) -> Arc<Self> {
        Arc::new(ProcShared {
            pid: child.id(),
            command,
            place,
            stdout_path,
            stderr_path,
            state: Mutex::new(ProcState {
                child,
                status: None,
            }),
        })
    }

    /// Starts `spec` as a long-running process with stdin closed and stdout and stderr into
    /// `<log_dir>/<base>.stdout` and `.stderr`; `place` says where it runs, for messages.
    pub(crate) fn spawn(
        spec: &Spec,
        log_dir: &Path,
        base: &str,
        place: String,
    ) -> Result<Arc<Self>> {
        let stdout_path = log_dir.join(format!("{base}.stdout"));
        let stderr_path = log_dir.join(format!("{base}.stderr"));
        let create =
            |p: &Path| File::create(p).map_err(|e| Error::io(format!("create {}", p.display()), e));
        let (out, err) = (create(&stdout_path)?, create(&stderr_path)?);
        let mut prepared = Prepared::new(spec)?;
        prepared.cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        tracing::debug!(%place, command = %spec.command_line(), "spawn");
        let child = prepared.spawn(spec)?;
        Ok(Self::new(
            child,
            spec.command_line(),
            place,
            stdout_path,
            stderr_path,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the child has been reaped (no waiting, no polling).
    pub(crate) fn reaped(&self) -> bool {
        self.lock().status.is_some()
    }

    fn poll(&self, state: &mut ProcState) -> Result<Option<ExitStatus>> {
        if state.status.is_none() {
            state.status = state
                .child
                .try_wait()
                .map_err(|e| Error::io(format!("wait for pid {}", self.pid), e))?;
        }
        Ok(state.status)
    }

    /// Sends `sig` unless the child has already exited; returns whether it was sent. Holding the
    /// lock while signalling guarantees the pid has not been reaped (and so not recycled).
    pub(crate) fn send(&self, sig: Signal) -> Result<bool> {
        let mut state = self.lock();
        if self.poll(&mut state)?.is_some() {
            return Ok(false);
        }
        let pid = i32::try_from(self.pid)
            .map_err(|_| Error::Invalid(format!("pid {} out of range", self.pid)))?;
        kill(Pid::from_raw(pid), sig)
            .map_err(|e| Error::io(format!("send {sig} to pid {}", self.pid), e.into()))?;
        Ok(true)
    }

    /// Waits until the child exits or the deadline passes.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Result<Option<ExitStatus>> {
        let mut nap = Duration::from_micros(500);
        loop {
            if let Some(s) = self.poll(&mut self.lock())? {
                return Ok(Some(s));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    /// SIGTERM (and SIGCONT, in case it was stopped); no waiting.
    pub(crate) fn begin_terminate(&self) -> Result<()> {
        if self.send(Signal::SIGTERM)? {
            self.send(Signal::SIGCONT)?;
        }
        Ok(())
    }

    /// After [`begin_terminate`](Self::begin_terminate): waits until `deadline`, then SIGKILLs
    /// and reaps.
    pub(crate) fn finish_terminate(&self, deadline: Instant) -> Result<ExitStatus> {
        if let Some(s) = self.wait_deadline(deadline)? {
            return Ok(s);
        }
        self.kill_and_reap()
    }

    pub(crate) fn kill_and_reap(&self) -> Result<ExitStatus> {
        self.send(Signal::SIGKILL)?;
        // SIGKILL cannot be caught; the bound only guards against an unkillable (D-state) child.
        self.wait_deadline(Instant::now() + Duration::from_secs(10))?
            .ok_or_else(|| Error::Timeout {
                command: self.command.clone(),
                place: self.place.clone(),
                after: Duration::from_secs(10),
                stderr: "process did not die after SIGKILL".to_owned(),
            })
    }

    pub(crate) fn stderr_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub(crate) fn describe(&self) -> String {
        format!("pid {} `{}` in {}", self.pid, self.command, self.place)
    }
}

impl Process {
    pub(crate) fn new(shared: Arc<ProcShared>) -> Self {
        Process { shared }
    }

    /// Starts `args` as a long-running process in the caller's own network namespace, outside
    /// any testbed: no root needed, for programs that only use loopback (`switchyard demo`
    /// without root). Its stdout and stderr go to `<log_dir>/<label>.stdout` and `.stderr`; its
    /// environment carries `MARKER_ENV=<marker>`, so `scripts/check-leftovers.sh` finds it if it
    /// outlives its owner. Dropping it terminates and reaps it, as for every `Process`; no
    /// testbed teardown stands behind it, so the caller must keep it until it is done.
    pub fn spawn_here<I, S>(args: I, log_dir: &Path, label: &str, marker: &str) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let spec = Spec::new(args, None, marker);
        let shared = ProcShared::spawn(&spec, log_dir, label, "this namespace".to_owned())?;
        Ok(Process::new(shared))
    }

    /// The process id (in the root pid namespace; namespaces here only separate networks).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.shared.command
    }

    /// Sends a signal, e.g. `Signal::SIGSTOP` to freeze a server (a "hung" fault) and
    /// `Signal::SIGCONT` to thaw it. Errors if the process has already exited.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.shared.send(sig)? {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "cannot send {sig}: {} has already exited",
                self.shared.describe()
            )))
        }
    }

    /// Kills it at once with SIGKILL (a crash) and reaps it. Returns its exit status; if it had
    /// already exited, returns that status instead.
    pub fn kill(&self) -> Result<ExitStatus> {
        self.shared.kill_and_reap()
    }

    /// Asks it to stop with SIGTERM, waits up to [`DEFAULT_GRACE`], then SIGKILLs; reaps it.
    pub fn terminate(&self) -> Result<ExitStatus> {
        self.terminate_within(DEFAULT_GRACE)
    }

    /// Like [`terminate`](Self::terminate) with a chosen grace period.
    pub fn terminate_within(&self, grace: Duration) -> Result<ExitStatus> {
        self.shared.begin_terminate()?;
        self.shared.finish_terminate(Instant::now() + grace)
    }

    /// Waits up to `timeout` for it to exit by itself; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.shared.wait_deadline(Instant::now() + timeout)
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        self.shared.poll(&mut self.shared.lock())
    }

    /// True while it has not exited.
    pub fn is_running(&self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Everything it has written to stdout so far.
    pub fn stdout(&self) -> Result<String> {
        read_log(&self.shared.stdout_path)
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> Result<String> {
        read_log(&self.shared.stderr_path)
    }

    /// The file its stdout goes to (removed at teardown).
    pub fn stdout_path(&self) -> &Path {
        &self.shared.stdout_path
    }

    /// The file its stderr goes to (removed at teardown).
    pub fn stderr_path(&self) -> &Path {
        &self.shared.stderr_path
    }

    /// Waits until `needle` appears in its stdout or stderr (e.g. a "listening" line). Fails
    /// early if the process exits first, and after `timeout` otherwise; both errors carry the end
    /// of its stderr.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = |p: &Path| fs::read_to_string(p).is_ok_and(|t| t.contains(needle));
            if found(&self.shared.stdout_path) || found(&self.shared.stderr_path) {
                return Ok(());
            }
            let exited = self.try_status()?;
            if exited.is_some() || Instant::now() >= deadline {
                let what = match exited {
                    Some(s) => format!("exited ({s}) before printing {needle:?}"),
                    None => format!("did not print {needle:?}"),
                };
                return Err(Error::Timeout {
                    command: self.shared.command.clone(),
                    place: self.shared.place.clone(),
                    after: timeout,
                    stderr: format!("{what}; stderr tail: {}", self.shared.stderr_tail(20)),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            tracing::warn!(process = %self.shared.describe(), error = %e, "terminate on drop");
        }
    }
}

fn read_log(path: &Path) -> Result<String> {
    match fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}
