//! `/proc/PID/cgroup` text to its memory cgroup path, and cgroup paths to
//! the container id and pod UID they name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::{kernel::containers::from_cgroup, kernel::procinfo::memory_cgroup};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(path) = memory_cgroup(&text) {
        let _ = from_cgroup(&path);
    }
    let _ = from_cgroup(&text);
});
