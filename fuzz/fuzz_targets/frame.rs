//! Opens raw input as a frame with the fixed fuzz key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard_fuzz::open_frame(data));
