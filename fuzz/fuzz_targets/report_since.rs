//! `netprobe report --since ARG` (an RFC 3339 prefix or a span back from
//! now), and the RFC 3339 formatting of any wall-clock instant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::{output::report::since, pipeline::timefmt::rfc3339};

/// 2023-11-14T22:13:20Z: a fixed `now`, so runs reproduce.
const NOW_NS: i128 = 1_700_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let _ = since(&String::from_utf8_lossy(data), NOW_NS);
    if let Some(b) = data.get(..16) {
        let _ = rfc3339(i128::from_le_bytes(b.try_into().unwrap()));
    }
});
