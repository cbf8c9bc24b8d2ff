//! One federation frame, as a peer's text message: decode, round trip, and the deltas and filter it carries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rhizome_fuzz::frame_decode(&String::from_utf8_lossy(data));
});
