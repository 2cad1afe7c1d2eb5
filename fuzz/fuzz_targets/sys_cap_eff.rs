//! `/proc/self/status` (its `CapEff:` line), and the privilege check on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::kernel::sys::{missing_privilege, parse_cap_eff};

fuzz_target!(|data: &[u8]| {
    if let Some(caps) = parse_cap_eff(&String::from_utf8_lossy(data)) {
        let _ = missing_privilege(caps);
    }
});
