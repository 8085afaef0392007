//! The [`Testbed`]: precondition checks, the record of everything a testbed created, and
//! teardown. Teardown runs on drop (also while a panic unwinds): it terminates and reaps the
//! spawned processes, SIGKILLs anything else still living in the testbed's namespaces (only the
//! testbed's own descendants can be there), deletes the namespaces (which destroys their veths
//! and bridges) and removes the log directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::exec::{self, Spec};
use crate::link::{Bridge, Link, LinkEnd};
use crate::names::{check_ifname, check_role, fresh_testbed_name, netns_path};
use crate::netns::{Netns, NsState};
use crate::process::{DEFAULT_GRACE, ProcShared};

/// A set of network namespaces, links and processes that is removed as a whole when dropped.
///
/// Create one per test with [`Testbed::new`] (or [`crate::require`] in tests, which skips when
/// the machine cannot run it). Names are unique per process and per testbed, so tests may run in
/// parallel.
///
/// Teardown SIGKILLs every process found in the testbed's namespaces, since only the testbed's
/// own descendants belong there: don't `ip netns exec` a shell into a live testbed's namespace
/// unless you are happy for it to end with the test.
#[derive(Debug)]
pub struct Testbed {
    shared: Arc<Shared>,
}

/// State shared by the testbed and every handle ([`Netns`], [`Link`], …) it hands out.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    label: String,
    closed: AtomicBool,
    namespaces: Mutex<Vec<Arc<NsState>>>,
    /// (a, a_if, b, b_if) of every veth pair; states, not handles, to avoid an Arc cycle.
    links: Mutex<Vec<LinkRecord>>,
    processes: Mutex<Vec<Arc<ProcShared>>>,
    log_dir: Mutex<Option<tempfile::TempDir>>,
    log_path: PathBuf,
    seq: AtomicU32,
}

type LinkRecord = (Arc<NsState>, String, Arc<NsState>, String);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::TornDown(self.name.clone()))
        } else {
            Ok(())
        }
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a spawned process so teardown can stop it. If teardown has already begun, the
    /// process is killed at once and an error returned.
    pub(crate) fn register_process(&self, p: Arc<ProcShared>) -> Result<()> {
        let mut procs = lock(&self.processes);
        // Forget processes that have been reaped, so long benchmarks don't accumulate them.
        procs.retain(|p| !p.reaped());
        procs.push(Arc::clone(&p));
        drop(procs);
        if self.closed.load(Ordering::SeqCst) {
            let _ = p.kill_and_reap();
            return Err(Error::TornDown(self.name.clone()));
        }
        Ok(())
    }

    /// `ip ARGS` in the root namespace, marked with this testbed's name.
    pub(crate) fn ip<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        exec::ip(args, &self.name)
    }

    fn teardown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut problems = Vec::new();

        // 1. Our own children: SIGTERM all, one shared grace period, then SIGKILL; reap.
        let procs = std::mem::take(&mut *lock(&self.processes));
        for p in &procs {
            if let Err(e) = p.begin_terminate() {
                problems.push(format!("{}: {e}", p.describe()));
            }
        }
        let deadline = Instant::now() + DEFAULT_GRACE;
        for p in &procs {
            if let Err(e) = p.finish_terminate(deadline) {
                problems.push(format!("{}: {e}", p.describe()));
            }
        }
        if thread::panicking() {
            for p in &procs {
                let tail = p.stderr_tail(20);
                if !tail.is_empty() {
                    eprintln!("--- stderr of {} (last lines) ---\n{tail}", p.describe());
                }
            }
        }

        // 2. Safety net: whatever still lives in our namespaces (grandchildren, daemons that
        // forked) descends from us, since nothing else is ever started there.
        let namespaces = lock(&self.namespaces).clone();
        kill_stragglers(&namespaces, &mut problems);

        // 3. Delete the namespaces; their veths and bridges go with them.
        if !namespaces.is_empty() {
            let script: String = namespaces
                .iter()
                .rev()
                .map(|n| format!("netns del {}\n", n.name))
                .collect();
            let mut spec = Spec::new(["ip", "-force", "-batch", "-"], None, &self.name);
            spec.input = Some(script.into_bytes());
            if let Err(e) = exec::execute(&spec).and_then(|o| spec.check(o)) {
                problems.push(e.to_string());
            }
            for n in &namespaces {
                if netns_path(&n.name).exists() {
                    problems.push(format!("namespace {} still exists", n.name));
                }
            }
        }

        // 4. Logs.
        if let Some(dir) = lock(&self.log_dir).take()
            && let Err(e) = dir.close()
        {
            problems.push(format!("remove log directory: {e}"));
        }

        if problems.is_empty() {
            tracing::debug!(testbed = %self.name, "torn down");
            Ok(())
        } else {
            Err(Error::Teardown {
                testbed: self.name.clone(),
                problems,
            })
        }
    }
}

/// SIGKILLs every process (other than ourselves) whose network namespace is one of ours, then
/// waits up to two seconds for them to go.
fn kill_stragglers(namespaces: &[Arc<NsState>], problems: &mut Vec<String>) {
    let ids: Vec<(u64, u64)> = namespaces
        .iter()
        .filter_map(|n| fs::metadata(netns_path(&n.name)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ids.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = pids_in(&ids);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            problems.push(format!("processes still in namespaces: {pids:?}"));
            return;
        }
        for pid in pids {
            tracing::debug!(pid, "killing straggler in testbed namespace");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Pids whose network namespace (dev, inode) is in `ids`; never our own pid.
fn pids_in(ids: &[(u64, u64)]) -> Vec<i32> {
    let me = std::process::id();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| ids.contains(&(m.dev(), m.ino())))
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// Checks, once per process, that testbeds can run here.
fn preconditions() -> std::result::Result<(), String> {
    static CHECK: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    CHECK.get_or_init(check_preconditions).clone()
}

fn check_preconditions() -> std::result::Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    for (bit, name) in [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ] {
        if cap_eff & (1 << bit) == 0 {
            return Err(format!(
                "needs root ({name} is missing); run the tests as root"
            ));
        }
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`ip -V` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Err(e) => {
            return Err(format!(
                "iproute2 `ip` not found ({e}); apt-get install iproute2"
            ));
        }
    }
    // A throwaway thread tries to create a network namespace; it vanishes with the thread.
    thread::spawn(|| unshare(CloneFlags::CLONE_NEWNET))
        .join()
        .map_err(|_| "namespace probe panicked".to_owned())?
        .map_err(|e| format!("cannot create a network namespace: {e}"))
}

impl Testbed {
    /// Checks that this machine can host testbeds (root, `ip` installed, network namespaces
    /// permitted) and returns an empty testbed, or [`Error::Unavailable`] saying why not.
    /// `label` says what it is for; it appears in the log directory's name and in messages.
    pub fn new(label: &str) -> Result<Testbed> {
        preconditions().map_err(|reason| Error::Unavailable { reason })?;
        let name = fresh_testbed_name();
        let clean: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-{clean}-"))
            .tempdir()
            .map_err(|e| Error::io("create log directory", e))?;
        let log_path = dir.path().to_owned();
        tracing::debug!(testbed = %name, label, "created");
        Ok(Testbed {
            shared: Arc::new(Shared {
                name,
                label: label.to_owned(),
                closed: AtomicBool::new(false),
                namespaces: Mutex::new(Vec::new()),
                links: Mutex::new(Vec::new()),
                processes: Mutex::new(Vec::new()),
                log_dir: Mutex::new(Some(dir)),
                log_path,
                seq: AtomicU32::new(0),
            }),
        })
    }

    /// The unique name, `sy-<pid hex>-<counter>`; every namespace name starts with it.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The label given to [`Testbed::new`].
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// Where spawned processes' stdout/stderr files live (removed at teardown).
    pub fn log_dir(&self) -> &Path {
        &self.shared.log_path
    }

    /// Creates a namespace for `role` (unique within this testbed; `a-z 0-9 - _`), named
    /// `<testbed>-<role>`, with loopback up, IPv6 duplicate address detection off (addresses
    /// are usable at once) and IPv6 addresses kept across link down/up.
    pub fn namespace(&self, role: &str) -> Result<Netns> {
        self.shared.ensure_open()?;
        check_role(role)?;
        let name = format!("{}-{role}", self.shared.name);
        let state = {
            let mut namespaces = lock(&self.shared.namespaces);
            if namespaces.iter().any(|n| n.role == role) {
                return Err(Error::Invalid(format!(
                    "testbed {} already has a namespace {role:?}",
                    self.shared.name
                )));
            }
            self.shared.ip(&["netns", "add", &name])?;
            let state = Arc::new(NsState::new(name, role.to_owned()));
            // Recorded before anything else can fail, so teardown removes it.
            namespaces.push(Arc::clone(&state));
            state
        };
        let ns = Netns::new(Arc::clone(&self.shared), state);
        ns.ip_batch(&["link set lo up"])?;
        ns.sysctls(&[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.keep_addr_on_down", "1"),
            ("net.ipv6.conf.default.keep_addr_on_down", "1"),
        ])?;
        Ok(ns)
    }

    /// Joins two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b` (the same namespace
    /// is allowed). Both ends are brought up. Interface names need only be unique inside their
    /// namespace.
    pub fn link(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<Link> {
        self.shared.ensure_open()?;
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        self.check_own(a)?;
        self.check_own(b)?;
        self.shared.ip(&[
            "-n",
            a.name(),
            "link",
            "add",
            a_if,
            "up",
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ])?;
        b.ip_batch(&[&format!("link set {b_if} up")])?;
        let link = Link::new(
            LinkEnd::new(a.clone(), a_if.to_owned()),
            LinkEnd::new(b.clone(), b_if.to_owned()),
        );
        lock(&self.shared.links).push((a.state(), a_if.to_owned(), b.state(), b_if.to_owned()));
        Ok(link)
    }

    /// Creates bridge `name` in `ns` (STP and multicast snooping off, so it forwards at once)
    /// and enslaves `ports` (interfaces already in `ns`), bringing everything up.
    pub fn bridge(&self, ns: &Netns, name: &str, ports: &[&str]) -> Result<Bridge> {
        self.shared.ensure_open()?;
        self.check_own(ns)?;
        check_ifname(name)?;
        let mut lines = vec![format!(
            "link add {name} up type bridge stp_state 0 mcast_snooping 0"
        )];
        for p in ports {
            check_ifname(p)?;
            lines.push(format!("link set {p} master {name} up"));
        }
        ns.ip_batch(&lines)?;
        Ok(Bridge::new(
            ns.clone(),
            name.to_owned(),
            ports.iter().map(|p| (*p).to_owned()).collect(),
        ))
    }

    /// Handles to every namespace created so far, in creation order.
    pub fn namespaces(&self) -> Vec<Netns> {
        lock(&self.shared.namespaces)
            .iter()
            .map(|s| Netns::new(Arc::clone(&self.shared), Arc::clone(s)))
            .collect()
    }

    /// Every veth pair created so far, in creation order.
    pub fn links(&self) -> Vec<Link> {
        let handle = |s: &Arc<NsState>| Netns::new(Arc::clone(&self.shared), Arc::clone(s));
        lock(&self.shared.links)
            .iter()
            .map(|(a, a_if, b, b_if)| {
                Link::new(
                    LinkEnd::new(handle(a), a_if.clone()),
                    LinkEnd::new(handle(b), b_if.clone()),
                )
            })
            .collect()
    }

    /// Tears everything down now and reports anything that could not be removed. Dropping the
    /// testbed does the same but can only print such problems.
    pub fn teardown(self) -> Result<()> {
        self.shared.teardown()
    }

    fn check_own(&self, ns: &Netns) -> Result<()> {
        if ns.belongs_to(&self.shared) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "namespace {} belongs to another testbed",
                ns.name()
            )))
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.shared.teardown() {
            // Straight to the process's stderr: the harness may not show captured output.
            let _ = std::io::stderr().write_all(format!("testbed teardown: {e}\n").as_bytes());
        }
    }
}
