//! Decodes and round-trips payloads of the migration family's message types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_wire::Family;

fuzz_target!(|data: &[u8]| switchyard_fuzz::family_round_trip(Family::Migration, data));
