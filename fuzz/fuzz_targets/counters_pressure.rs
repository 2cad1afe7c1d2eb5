//! `/proc/pressure/memory` (the PSI `some` and `full` avg10 figures).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::pipeline::counters::memory_pressure(&String::from_utf8_lossy(data));
});
