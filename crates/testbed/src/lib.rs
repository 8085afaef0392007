//! Real network topologies on one Linux machine for switchyard's integration tests and
//! benchmarks: network namespaces joined by veth pairs, processes and Rust closures running
//! inside them, faults (killed processes, downed links, dropped packets) and guaranteed
//! teardown.
//!
//! This crate owns the test machinery only; it must not depend on switchyard's own crates.
//! Its hard safety rules, enforced in code:
//!
//! - nothing is created in the root namespace: veth pairs are created directly inside the
//!   testbed's namespaces, and `ip` runs in the root namespace only to add, address and delete
//!   them;
//! - every address and route must lie in 198.18.0.0/15 or fc00::/7 (so no default route and
//!   no traffic leaving the machine), else [`Error::OutsideTestRange`];
//! - on drop (also during a panic) the testbed terminates and reaps its processes, kills
//!   whatever else still lives in its namespaces (only its own descendants can), and deletes
//!   the namespaces. `scripts/check-leftovers.sh` verifies nothing is left.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; faults need nftables. Tested on
//! Linux 6.18. Only [`Process::spawn_here`] (a supervised process in the caller's own
//! namespace, for loopback-only setups) needs neither.
//!
//! # Example
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::{SocketAddr, TcpListener, TcpStream};
//! use switchyard_testbed::{Proto, Testbed, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a test, `let tb = require_testbed!("what it needs");` instead: it skips the test (or
//! // fails it under CI=true) when the machine cannot host namespaces.
//! let tb = Testbed::new("echo example")?;
//! let topo = Topology::builder().clients(1).lb_units(2).hosts(1).build(&tb)?;
//!
//! // A server inside host0: bind there, serve from any thread.
//! let addr = SocketAddr::new(topo.host(0).v4(), 7000);
//! let listener = topo.host(0).ns().enter(|| TcpListener::bind(addr))??;
//! std::thread::spawn(move || {
//!     if let Ok((mut conn, _)) = listener.accept() {
//!         let mut buf = [0; 5];
//!         if conn.read_exact(&mut buf).is_ok() {
//!             let _ = conn.write_all(&buf);
//!         }
//!     }
//! });
//!
//! // A client inside client0, through the router.
//! let mut conn = topo.client(0).ns().enter(|| TcpStream::connect(addr))??;
//! conn.write_all(b"hello")?;
//!
//! // Processes and faults.
//! let sleeper = topo.host(0).ns().spawn(["sleep", "30"])?;
//! let fault = topo.router().ns().drop_percent(30)?;
//! let blocked = topo.host(0).ns().block_port(Proto::Udp, 5353)?;
//! topo.client(0).primary().link().set_down()?;
//! topo.client(0).primary().link().set_up()?;
//! fault.clear()?;
//! sleeper.kill()?;
//! blocked.clear()?;
//! # Ok(()) }
//! ```
//!
//! Lower level: [`Testbed::namespace`], [`Testbed::link`], [`Testbed::bridge`],
//! [`Netns::add_addr`], [`Netns::add_route`], [`Netns::add_multipath_route`], [`Netns::run`],
//! [`Netns::spawn`], [`Netns::enter`], [`Netns::sysctl`].

mod cidr;
mod command;
mod error;
mod exec;
mod faults;
mod link;
mod names;
mod netns;
mod process;
mod skip;
mod testbed;
pub mod topology;

pub use cidr::{Cidr, TEST_NET_V4, TEST_NET_V6, ToCidr};
pub use command::NsCommand;
pub use error::{Error, Result};
pub use exec::Output;
pub use faults::{Fault, NFT_TABLE, Proto};
pub use link::{Bridge, Link, LinkEnd};
pub use names::{MARKER_ENV, NAME_PREFIX};
pub use netns::Netns;
pub use nix::sys::signal::Signal;
pub use process::{DEFAULT_GRACE, Process};
pub use skip::{OnUnavailable, on_unavailable, require, skip_line};
pub use testbed::Testbed;
pub use topology::{Interface, Node, Topology, TopologyBuilder, Vip};
