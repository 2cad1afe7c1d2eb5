//! `/proc/modules` (the live modules kprobe-only probes wait for).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::kernel::probes::live_modules(&String::from_utf8_lossy(data));
});
