//! `/proc/net/netstat` and `/proc/net/snmp` (header/value line pairs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::kernel::netns::parse_pairs(&String::from_utf8_lossy(data));
});
