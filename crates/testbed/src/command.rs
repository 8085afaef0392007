//! [`NsCommand`]: a command bound to a namespace, with its timeout, stdin and environment, that
//! can either run to completion or be spawned as a [`Process`]. Owns the log files of spawned
//! processes.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::exec::{Output, Spec, execute};
use crate::netns::Netns;
use crate::process::{ProcShared, Process};

/// A command to run inside a [`Netns`], built by [`Netns::command`].
///
/// ```no_run
/// # fn demo(ns: &switchyard_testbed::Netns) -> switchyard_testbed::Result<()> {
/// use std::time::Duration;
/// let rules = ns.command(["nft", "-f", "-"]).input("list ruleset\n").timeout(Duration::from_secs(2)).run()?;
/// let server = ns.command(["python3", "-m", "http.server", "8080"]).env("PYTHONUNBUFFERED", "1").spawn()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NsCommand {
    ns: Netns,
    spec: Spec,
}

impl NsCommand {
    pub(crate) fn new<I, S>(ns: Netns, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let spec = Spec::new(args, Some(ns.name().to_owned()), &ns.shared().name);
        NsCommand { ns, spec }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.spec.args.push(arg.as_ref().to_owned());
        self
    }

    /// Sets an environment variable (on top of the inherited environment and the
    /// `SWITCHYARD_TESTBED` marker).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.spec
            .envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Bytes fed to stdin by [`run`](Self::run) / [`output`](Self::output) (spawned processes
    /// get an empty stdin).
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.spec.input = Some(bytes.into());
        self
    }

    /// Time limit for [`run`](Self::run) / [`output`](Self::output) (default 10 s); the command
    /// is killed when it expires.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.spec.timeout = limit;
        self
    }

    /// Runs to completion; returns stdout, or [`Error::Command`] with stderr on failure.
    pub fn run(&self) -> Result<String> {
        let out = self.output()?;
        self.spec.check(out)
    }

    /// Runs to completion; returns the output whatever the exit status.
    pub fn output(&self) -> Result<Output> {
        self.ns.shared().ensure_open()?;
        execute(&self.spec)
    }

    /// Starts the command as a long-running [`Process`]; stdout and stderr go to files in the
    /// testbed's log directory. The testbed stops it at teardown if it is still running.
    pub fn spawn(&self) -> Result<Process> {
        let shared = self.ns.shared();
        shared.ensure_open()?;
        let program = self
            .spec
            .args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let program: String = program
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let base = format!("{:03}-{}-{program}", shared.next_seq(), self.ns.role());
        let proc = ProcShared::spawn(&self.spec, shared.log_path(), &base, self.spec.place())?;
        shared.register_process(Arc::clone(&proc))?;
        Ok(Process::new(proc))
    }
}
