//! `netprobe report` input: JSON lines as `netprobe run --output json`
//! writes them, and the same lines read as `journalctl -o json` entries;
//! then the rendered summary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::output::report::{add, from_journal, render, summarize, Summary};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = summarize(text.lines(), None);
    let _ = render(&s);
    let mut s = Summary::default();
    for line in text.lines() {
        if let Some(v) = serde_json::from_str(line)
            .ok()
            .and_then(|e| from_journal(&e))
        {
            add(&mut s, &v, Some("2026-11-22T02"));
        }
    }
    let _ = render(&s);
});
