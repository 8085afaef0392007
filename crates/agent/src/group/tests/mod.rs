//! Tests of the group machine and the relay with simulated time and an
//! in-memory network (lossless and lossy), and end to end with the real
//! health protocol and consolidated caches.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod end_to_end;
mod membership;
mod relay;
mod sim;
