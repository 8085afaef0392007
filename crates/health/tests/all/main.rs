//! Integration tests of the health and load state machines: unit-level
//! behaviour through the public API, and scenarios on a simulated lossy
//! network with simulated time (see `sim.rs`).

mod cache;
mod convergence;
mod datagrams;
mod host;
mod properties;
mod scenarios;
mod sim;
