//! A tracefs `events/<category>/<name>/format` file, then what the daemon
//! does with a parsed format: record lengths and offsets for the programs'
//! CONFIG, and decoding records with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::{
    pipeline::decode::{decode, Layouts},
    kernel::probes::{build_config, BtfOffsets},
    kernel::tracefs::Format};
use netprobe_common::{Event, RAW_MAX};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(f) = Format::parse(&text) else { return };
    let _ = f.record_len();
    for field in &f.fields {
        assert!(f.field(&field.name).is_some());
    }
    for (field, entries) in &f.symbols {
        for (value, name) in entries {
            let _ = f.symbol(field, *value);
            let _ = f.symbol_value(field, name);
        }
    }
    let layouts = Layouts {
        kfree_skb: Some(f.clone()),
        send_reset: Some(f.clone()),
        receive_reset: Some(f.clone()),
        oom: Some(f.clone()),
        retransmit: Some(f.clone()),
        sk_error: Some(f),
    };
    let _ = build_config(&layouts, &BtfOffsets::unavailable("fuzz"), true);
    // SAFETY: Event is plain data; all zeroes is a valid value.
    let mut e: Event = unsafe { std::mem::zeroed() };
    e.raw_len = RAW_MAX as u32;
    for (i, b) in e.raw.iter_mut().enumerate() {
        *b = i as u8;
    }
    for kind in 0..=10 {
        e.kind = kind;
        let _ = decode(&e, &layouts);
    }
});
