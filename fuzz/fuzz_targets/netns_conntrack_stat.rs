//! `/proc/net/stat/nf_conntrack` (a header, then a row of hex per CPU).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::kernel::netns::parse_conntrack_stat(&String::from_utf8_lossy(data));
});
