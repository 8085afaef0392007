//! The harness of switchyard's real-process cluster tests (`health_cluster.rs` and the
//! request-router and forwarder cluster tests that reuse it).
//!
//! - [`cluster`]: a namespace testbed (clients — router — LB units — hosts) running
//!   `switchyard lb` in every LB unit namespace and `switchyard agent` in every host
//!   namespace from one generated cluster configuration; typed access to each unit's admin
//!   API and each agent's local API; the convergence check "every unit's cache equals the
//!   hosts' tables"; a state dump (units, agents, process logs) printed when a test fails.
//! - [`echo`]: a threaded TCP/UDP echo server naming its host in every answer, for the
//!   packet-path traffic tests.
//! - [`line_conn`]: a connection to a VIP exchanging tagged lines with the echo server,
//!   checking every answer comes from the same host.
//! - [`app`]: a tiny HTTP application to run inside a namespace and stop/start, as the
//!   checked application behind a pool host.
//! - [`http`]: for the request-router tests, an application naming itself in every answer
//!   (in a namespace or on loopback) and a keep-alive client with affinity cookies.
//! - [`local`]: `switchyard` processes on loopback, without namespaces (no root needed).
//! - [`scrape`]: a `/metrics` scrape parsed as OpenMetrics, with family and value checks.
//! - [`wait`]: polling with deadlines (`wait_until`, `hold_for`) whose failures name what
//!   was awaited and the last state observed — never sleeps as assertions.
//!
//! Every test file that uses it says `mod support;`; not every file uses every helper.

#![allow(dead_code)]

pub mod app;
pub mod cluster;
pub mod echo;
pub mod http;
pub mod line_conn;
pub mod local;
pub mod scrape;
pub mod wait;
