//! One operator script: compile it and judge a fixed delta with the sandboxed engine.
//! Run with `-timeout=5`: the sandbox must stop any script within a bounded time.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rhizome_fuzz::policy_script(&String::from_utf8_lossy(data));
});
