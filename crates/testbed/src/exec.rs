//! Running programs: either `ip` in the root namespace (only ever to manage the testbed's own
//! namespaces, never to configure the root namespace) or any program inside a testbed namespace
//! (the child calls setns(2) between fork and exec). Owns timeouts, stdin feeding and output
//! capture for short commands; long-running children belong to [`crate::process`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::names::{MARKER_ENV, netns_path};

/// Default limit for one short command.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished command printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

/// A fully described invocation.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
    pub input: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Namespace to run in; `None` = the caller's (root) namespace.
    pub netns: Option<String>,
    /// Testbed name for the [`MARKER_ENV`] marker.
    pub marker: String,
}

impl Spec {
    pub(crate) fn new<I, S>(args: I, netns: Option<String>, marker: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Spec {
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            envs: Vec::new(),
            input: None,
            timeout: DEFAULT_TIMEOUT,
            netns,
            marker: marker.to_owned(),
        }
    }

    pub(crate) fn command_line(&self) -> String {
        command_line(&self.args)
    }

    pub(crate) fn place(&self) -> String {
        place(self.netns.as_deref())
    }

    /// Turns a finished command into its stdout, or an error carrying its stderr.
    pub(crate) fn check(&self, out: Output) -> Result<String> {
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::Command {
                command: self.command_line(),
                place: self.place(),
                status: out.status.to_string(),
                stderr: out.stderr.trim().to_owned(),
            })
        }
    }
}

pub(crate) fn place(netns: Option<&str>) -> String {
    match netns {
        Some(n) => format!("namespace {n}"),
        None => "root namespace".to_owned(),
    }
}

/// Shell-style rendering for messages.
pub(crate) fn command_line(args: &[OsString]) -> String {
    args.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `Command` ready to spawn, plus the namespace file its pre-exec hook uses. The file must stay
/// open until the spawn returns, so the two travel together.
pub(crate) struct Prepared {
    pub cmd: Command,
    _netns: Option<File>,
}

impl Prepared {
    pub(crate) fn new(spec: &Spec) -> Result<Self> {
        let (program, rest) = spec
            .args
            .split_first()
            .ok_or_else(|| Error::Invalid("empty command".to_owned()))?;
        let mut cmd = Command::new(program);
        cmd.args(rest);
        cmd.env(MARKER_ENV, &spec.marker);
        for (k, v) in &spec.envs {
            cmd.env(k, v);
        }
        let netns = match &spec.netns {
            Some(name) => {
                let path = netns_path(name);
                let file = File::open(&path)
                    .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
                join_netns_before_exec(&mut cmd, &file);
                Some(file)
            }
            None => None,
        };
        Ok(Prepared { cmd, _netns: netns })
    }

    pub(crate) fn spawn(mut self, spec: &Spec) -> Result<Child> {
        self.cmd.spawn().map_err(|source| Error::Spawn {
            command: spec.command_line(),
            source,
        })
    }
}

fn join_netns_before_exec(cmd: &mut Command, ns: &File) {
    let fd = ns.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec. It only calls setns(2) and reads
    // errno, both async-signal-safe; it allocates nothing and takes no locks. `fd` is owned by a
    // File that `Prepared` keeps open until `spawn` returns, so the child has it open (it is
    // O_CLOEXEC, so the exec'd program does not keep it). setns itself is a plain syscall on an
    // open descriptor; no memory is passed to the kernel.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Runs a short command to completion (or its timeout) and captures its output.
pub(crate) fn execute(spec: &Spec) -> Result<Output> {
    tracing::debug!(place = %spec.place(), command = %spec.command_line(), "run");
    let mut prepared = Prepared::new(spec)?;
    prepared
        .cmd
        .stdin(if spec.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = prepared.spawn(spec)?;

    if let (Some(input), Some(mut stdin)) = (spec.input.clone(), child.stdin.take()) {
        // A thread, so that a child that fills its stdout before reading all stdin cannot
        // deadlock us. A write error means the child exited early; its status tells the story.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        read_in_background(out, false, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        read_in_background(err, true, tx);
    }

    let deadline = Instant::now() + spec.timeout;
    let status = wait_until(&mut child, deadline)
        .map_err(|e| Error::io(format!("wait for `{}`", spec.command_line()), e))?;

    // A grandchild may hold the pipes open; don't wait for it for long.
    let grace = if status.is_some() {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let (stdout, stderr) = collect(&rx, Instant::now() + grace);
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(Error::Timeout {
            command: spec.command_line(),
            place: spec.place(),
            after: spec.timeout,
            stderr: stderr.trim().to_owned(),
        }),
    }
}

/// Polls the child until it exits (returns its status) or the deadline passes (kills and reaps it,
/// returns `None`). Polling rather than a waiter thread keeps the pid ours until we reap it.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

fn read_in_background<R: Read + Send + 'static>(
    mut pipe: R,
    is_stderr: bool,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
) {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send((is_stderr, buf));
    });
}

fn collect(rx: &mpsc::Receiver<(bool, Vec<u8>)>, deadline: Instant) -> (String, String) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((false, b)) => stdout = b,
            Ok((true, b)) => stderr = b,
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs `ip ARGS` in the root namespace. Used only with `netns add/del`, `-n NAME …` and
/// `-batch` scripts that address the testbed's own namespaces.
pub(crate) fn ip<I, S>(args: I, marker: &str) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut spec = Spec::new(std::iter::once(OsStr::new("ip").to_owned()), None, marker);
    spec.args
        .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    let out = execute(&spec)?;
    spec.check(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let args: Vec<OsString> = ["nft", "-f", "-", "a b", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(command_line(&args), r"nft -f - 'a b' 'it'\''s'");
    }

    #[test]
    fn runs_captures_and_times_out() {
        let mut spec = Spec::new(["sh", "-c", "cat; echo err >&2; exit 3"], None, "sy-test");
        spec.input = Some(b"hello".to_vec());
        let out = execute(&spec).unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        let err = spec.check(out).unwrap_err().to_string();
        assert!(err.contains("err"), "{err}");

        let mut slow = Spec::new(["sleep", "5"], None, "sy-test");
        slow.timeout = Duration::from_millis(100);
        let started = Instant::now();
        assert!(matches!(execute(&slow), Err(Error::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));

        let marker = Spec::new(["sh", "-c", "echo $SWITCHYARD_TESTBED"], None, "sy-x");
        assert_eq!(execute(&marker).unwrap().stdout, "sy-x\n");
    }
}
