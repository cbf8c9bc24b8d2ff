//! One DeltaFilter as JSON text: strict decode; a refused object names the field at fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rhizome_fuzz::filter_parse(&String::from_utf8_lossy(data));
});
