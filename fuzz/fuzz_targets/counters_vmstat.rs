//! `/proc/vmstat` (its `oom_kill` line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::pipeline::counters::vmstat_oom_kills(&String::from_utf8_lossy(data));
});
