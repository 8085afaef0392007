//! [`Netns`]: a handle to one of a testbed's network namespaces. Owns what happens *inside* one
//! namespace: running commands and closures there, sysctls, addresses, routes (recorded, so that a
//! link brought back up gets them back) and interface state. Every address and route is checked
//! against the test ranges before it reaches the kernel.

use std::ffi::OsStr;
use std::fs;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use crate::cidr::{Cidr, ToCidr, check_next_hop};
use crate::command::NsCommand;
use crate::error::{Error, Result};
use crate::exec::{Output, Spec, execute};
use crate::names::{check_ifname, netns_path};
use crate::process::Process;
use crate::testbed::Shared;

/// What the testbed remembers about one namespace.
#[derive(Debug)]
pub(crate) struct NsState {
    pub(crate) name: String,
    pub(crate) role: String,
    addrs: Mutex<Vec<(String, Cidr)>>,
    routes: Mutex<Vec<RouteRecord>>,
    pub(crate) fault_seq: AtomicU32,
}

/// A route as installed: its destination (the record's key) and the `ip route` arguments.
#[derive(Debug, Clone)]
struct RouteRecord {
    dst: Cidr,
    spec: String,
}

impl NsState {
    pub(crate) fn new(name: String, role: String) -> Self {
        NsState {
            name,
            role,
            addrs: Mutex::new(Vec::new()),
            routes: Mutex::new(Vec::new()),
            fault_seq: AtomicU32::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A network namespace of a [`Testbed`](crate::Testbed).
///
/// Cheap to clone and `Send + Sync`; handles stay valid until the testbed is torn down, after
/// which every operation returns [`Error::TornDown`].
///
/// Sockets created inside [`Netns::enter`] stay in the namespace for their whole life, so the
/// usual pattern for a server is to bind inside `enter` and serve from any thread:
///
/// ```no_run
/// # fn demo(host: &switchyard_testbed::Netns) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = host.enter(|| std::net::TcpListener::bind("198.18.200.100:8080"))??;
/// std::thread::spawn(move || {
///     for conn in listener.incoming() { /* … */ }
/// });
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Netns {
    shared: Arc<Shared>,
    state: Arc<NsState>,
}

impl Netns {
    pub(crate) fn new(shared: Arc<Shared>, state: Arc<NsState>) -> Self {
        Netns { shared, state }
    }

    pub(crate) fn state(&self) -> Arc<NsState> {
        Arc::clone(&self.state)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn belongs_to(&self, shared: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }

    /// The namespace name as `ip netns list` shows it: `<testbed>-<role>`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The role it was created for, e.g. `"client"`.
    pub fn role(&self) -> &str {
        &self.state.role
    }

    /// Its bind-mount file, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.state.name)
    }

    /// A command to run inside this namespace, configurable before [`NsCommand::run`] or
    /// [`NsCommand::spawn`].
    pub fn command<I, S>(&self, args: I) -> NsCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        NsCommand::new(self.clone(), args)
    }

    /// Runs a command inside the namespace (10 s limit) and returns its stdout. A non-zero exit
    /// is an [`Error::Command`] carrying its stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).run()
    }

    /// Runs a command inside the namespace (10 s limit) and returns its output whatever its
    /// exit status.
    pub fn output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).output()
    }

    /// Starts a long-running process inside the namespace. See [`Process`].
    pub fn spawn<I, S>(&self, args: I) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).spawn()
    }

    /// Runs `f` on a fresh thread that has joined this namespace and returns its result. Sockets
    /// created in `f` belong to this namespace for their whole life, wherever they are used
    /// afterwards. A panic in `f` is propagated to the caller.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.shared.ensure_open()?;
        let path = self.path();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let name = self.state.name.clone();
        thread::scope(|s| {
            let handle = thread::Builder::new()
                .name(format!("netns {}", self.state.role))
                .spawn_scoped(s, move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::io(format!("setns into {name}"), e.into()))?;
                    drop(file);
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn namespace thread", e))?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Sets a sysctl inside the namespace, e.g. `ns.sysctl("net.ipv4.ip_forward", "1")`. Keys
    /// use dots, or slashes when a component contains a dot (`net/ipv4/conf/eth0.5/rp_filter`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.sysctls(&[(key, value)])
    }

    /// Sets several sysctls in one go.
    pub fn sysctls(&self, pairs: &[(&str, &str)]) -> Result<()> {
        let paths = pairs
            .iter()
            .map(|(k, v)| Ok((sysctl_path(k)?, *v)))
            .collect::<Result<Vec<_>>>()?;
        self.enter(|| {
            for (path, value) in &paths {
                fs::write(path, value)
                    .map_err(|e| Error::io(format!("write {value:?} to {}", path.display()), e))?;
            }
            Ok(())
        })?
    }

    /// Reads a sysctl inside the namespace (trimmed).
    pub fn sysctl_value(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.enter(|| {
            fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| Error::io(format!("read {}", path.display()), e))
        })?
    }

    /// Adds an IPv4 or IPv6 address to an interface, e.g. `"198.18.1.2/24"` or
    /// `"fd53:7900:0:1::2/64"` (IPv6 without duplicate address detection, so it is usable at
    /// once). Addresses outside the test ranges are refused.
    pub fn add_addr(&self, ifname: &str, addr: impl ToCidr) -> Result<()> {
        check_ifname(ifname)?;
        let addr = addr.to_cidr()?;
        addr.check_test_range()?;
        self.ip_batch(&[addr_line("add", ifname, &addr)])?;
        lock(&self.state.addrs).push((ifname.to_owned(), addr));
        Ok(())
    }

    /// Addresses added through [`add_addr`](Self::add_addr), as (interface, address).
    pub fn addrs(&self) -> Vec<(String, Cidr)> {
        lock(&self.state.addrs).clone()
    }

    /// Adds a route to `dst` through the next hop `via` (same address family).
    pub fn add_route(&self, dst: impl ToCidr, via: impl Into<IpAddr>) -> Result<()> {
        let dst = dst.to_cidr()?.network();
        let via = via.into();
        check_route(&dst, &[via])?;
        self.install_route(dst, format!("{dst} via {via}"))
    }

    /// Adds a route to `dst` straight out of interface `ifname` (no gateway).
    pub fn add_dev_route(&self, dst: impl ToCidr, ifname: &str) -> Result<()> {
        let dst = dst.to_cidr()?.network();
        check_route(&dst, &[])?;
        check_ifname(ifname)?;
        self.install_route(dst, format!("{dst} dev {ifname}"))
    }

    /// Adds an equal-cost multipath route to `dst` over `vias`, and sets
    /// `net.ipv{4,6}.fib_multipath_hash_policy=1` so that flows are spread by their L4 4-tuple.
    pub fn add_multipath_route<I, A>(&self, dst: impl ToCidr, vias: I) -> Result<()>
    where
        I: IntoIterator<Item = A>,
        A: Into<IpAddr>,
    {
        let dst = dst.to_cidr()?.network();
        let vias: Vec<IpAddr> = vias.into_iter().map(Into::into).collect();
        if vias.is_empty() {
            return Err(Error::Invalid(format!(
                "multipath route to {dst} without next hops"
            )));
        }
        check_route(&dst, &vias)?;
        let policy = if dst.is_ipv4() {
            "net.ipv4.fib_multipath_hash_policy"
        } else {
            "net.ipv6.fib_multipath_hash_policy"
        };
        self.sysctl(policy, "1")?;
        let hops: String = vias.iter().map(|v| format!(" nexthop via {v}")).collect();
        self.install_route(dst, format!("{dst}{hops}"))
    }

    /// Removes the route to `dst` (and forgets it, so link up/down no longer restores it).
    pub fn delete_route(&self, dst: impl ToCidr) -> Result<()> {
        let dst = dst.to_cidr()?.network();
        self.ip_batch(&[format!("route del {dst}")])?;
        lock(&self.state.routes).retain(|r| r.dst != dst);
        Ok(())
    }

    fn install_route(&self, dst: Cidr, spec: String) -> Result<()> {
        self.ip_batch(&[format!("route add {spec}")])?;
        let mut routes = lock(&self.state.routes);
        routes.retain(|r| r.dst != dst);
        routes.push(RouteRecord { dst, spec });
        Ok(())
    }

    /// Administratively downs one interface. On a veth this also cuts the peer's carrier. The
    /// kernel withdraws routes through the interface; [`set_link_up`](Self::set_link_up)
    /// restores them.
    pub fn set_link_down(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        self.ip_batch(&[format!("link set {ifname} down")])?;
        Ok(())
    }

    /// Brings an interface up and restores the addresses and routes this testbed installed in
    /// the namespace that the kernel dropped while it was down.
    pub fn set_link_up(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        self.ip_batch(&[format!("link set {ifname} up")])?;
        self.restore();
        Ok(())
    }

    /// Re-applies recorded addresses and routes (`replace`, so present ones are untouched).
    /// Best effort: a route through an interface that is still down cannot come back yet, and
    /// will when that interface comes up.
    pub(crate) fn restore(&self) {
        let mut lines: Vec<String> = lock(&self.state.addrs)
            .iter()
            .map(|(ifname, addr)| addr_line("replace", ifname, addr))
            .collect();
        lines.extend(
            lock(&self.state.routes)
                .iter()
                .map(|r| format!("route replace {}", r.spec)),
        );
        if lines.is_empty() {
            return;
        }
        let mut spec = self.ip_spec(true);
        spec.input = Some(lines.join("\n").into_bytes());
        match execute(&spec) {
            Ok(out) if !out.status.success() => {
                tracing::debug!(ns = %self.name(), stderr = %out.stderr.trim(), "partial restore");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(ns = %self.name(), error = %e, "restore"),
        }
    }

    /// Waits until a TCP connection to `addr` from inside this namespace succeeds (a server is
    /// listening), trying every 20 ms until `timeout`.
    pub fn wait_for_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.enter(|| {
            loop {
                let err = match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(_) => return Ok(()),
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        command: format!("connect to {addr}"),
                        place: format!("namespace {}", self.name()),
                        after: timeout,
                        stderr: err.to_string(),
                    });
                }
                thread::sleep(Duration::from_millis(20));
            }
        })?
    }

    /// Runs `ip -n NAME -batch -` with one command per line; the first failing line fails it.
    pub(crate) fn ip_batch<S: AsRef<str>>(&self, lines: &[S]) -> Result<String> {
        self.shared.ensure_open()?;
        let mut spec = self.ip_spec(false);
        let script: Vec<&str> = lines.iter().map(AsRef::as_ref).collect();
        spec.input = Some(script.join("\n").into_bytes());
        let out = execute(&spec)?;
        spec.check(out)
    }

    fn ip_spec(&self, force: bool) -> Spec {
        let mut args = vec!["ip", "-n", self.name()];
        if force {
            args.push("-force");
        }
        args.extend(["-batch", "-"]);
        Spec::new(args, None, &self.shared.name)
    }
}

fn addr_line(verb: &str, ifname: &str, addr: &Cidr) -> String {
    let nodad = if addr.is_ipv4() { "" } else { " nodad" };
    format!("addr {verb} {addr} dev {ifname}{nodad}")
}

fn check_route(dst: &Cidr, vias: &[IpAddr]) -> Result<()> {
    dst.check_test_range()?;
    for via in vias {
        if via.is_ipv4() != dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "next hop {via} and destination {dst} differ in address family"
            )));
        }
        check_next_hop(*via)?;
    }
    Ok(())
}

fn sysctl_path(key: &str) -> Result<PathBuf> {
    let valid = !key.is_empty()
        && !key.contains("..")
        && !key.starts_with(['/', '.'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if !valid {
        return Err(Error::Invalid(format!("sysctl key {key:?}")));
    }
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    Ok(PathBuf::from("/proc/sys").join(rel))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.5/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.5/rp_filter")
        );
        assert!(sysctl_path("../etc/passwd").is_err());
        assert!(sysctl_path("/etc").is_err());
    }

    #[test]
    fn route_guard() {
        let dst: Cidr = "198.19.0.10/32".parse().unwrap();
        assert!(check_route(&dst, &["198.18.101.2".parse().unwrap()]).is_ok());
        assert!(check_route(&dst, &["fd53:7900::1".parse().unwrap()]).is_err());
        assert!(check_route(&"0.0.0.0/0".parse().unwrap(), &[]).is_err());
    }
}
