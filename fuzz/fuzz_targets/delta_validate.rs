//! One delta as JSON text: decode and validate; a refused object names the field at fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rhizome_fuzz::delta_validate(&String::from_utf8_lossy(data));
});
