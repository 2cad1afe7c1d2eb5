//! `/proc/kallsyms`, then symbolising addresses with it (the first 8 bytes,
//! and each parsed symbol's neighbourhood).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::kernel::kallsyms::Kallsyms;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let k = Kallsyms::parse(&text);
    let _ = k.is_empty();
    let mut addrs = vec![0, 1, u64::MAX];
    if let Some(b) = data.get(..8) {
        addrs.push(u64::from_ne_bytes(b.try_into().unwrap()));
    }
    for line in text.lines().take(64) {
        let mut it = line.split_ascii_whitespace();
        if let Some(a) = it.next().and_then(|a| u64::from_str_radix(a, 16).ok()) {
            addrs.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
        }
        if let Some(name) = it.nth(1) {
            let _ = k.has(name);
        }
    }
    for a in addrs {
        let _ = k.describe(a);
    }
});
