//! Drives the health protocol's state machines (a unit's consolidated cache
//! and a host's protocol machine) with arbitrary decoded messages, local
//! changes and time steps; see `switchyard_fuzz::drive_health_machines`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard_fuzz::drive_health_machines(data));
