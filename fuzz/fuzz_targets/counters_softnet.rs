//! `/proc/net/softnet_stat` (hex columns per CPU, no header).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::pipeline::counters::softnet_dropped(&String::from_utf8_lossy(data));
});
