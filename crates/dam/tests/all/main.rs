//! Integration tests of the DAM state machine: scenarios on a simulated
//! lossy network with simulated time (see `sim.rs`), and properties of the
//! machine under arbitrary input.

mod properties;
mod scenarios;
mod sim;
