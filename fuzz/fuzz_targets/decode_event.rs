//! Ring-buffer records: `read_event` on the bytes as received, then
//! `decode` with the tracepoint layouts of each kernel kept under
//! netprobe/testdata/kernels. The first byte picks the kernel (or none) and
//! the event kind; the rest fills the event (zero-padded to its size).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netprobe::{
    pipeline::decode::{decode, read_event, Layouts},
    kernel::tracefs::Format};
use netprobe_common::Event;

macro_rules! format_of {
    ($kernel:literal, $path:literal) => {
        Format::parse(include_str!(concat!(
            "../../netprobe/testdata/kernels/",
            $kernel,
            "/events/",
            $path,
            "/format"
        )))
        .ok()
    };
}

macro_rules! layouts {
    ($kernel:literal) => {
        Layouts {
            kfree_skb: format_of!($kernel, "skb/kfree_skb"),
            send_reset: format_of!($kernel, "tcp/tcp_send_reset"),
            receive_reset: format_of!($kernel, "tcp/tcp_receive_reset"),
            oom: format_of!($kernel, "oom/mark_victim"),
            retransmit: format_of!($kernel, "tcp/tcp_retransmit_skb"),
            sk_error: None,
        }
    };
}

fn all_layouts() -> &'static [Layouts; 5] {
    static L: OnceLock<[Layouts; 5]> = OnceLock::new();
    L.get_or_init(|| {
        let with_sk_error = |mut l: Layouts, f: Option<Format>| {
            l.sk_error = f;
            l
        };
        [
            // 5.10 has no sock:inet_sk_error_report.
            layouts!("5.10"),
            with_sk_error(
                layouts!("6.1"),
                format_of!("6.1", "sock/inet_sk_error_report"),
            ),
            with_sk_error(
                layouts!("6.12"),
                format_of!("6.12", "sock/inet_sk_error_report"),
            ),
            with_sk_error(
                layouts!("6.18"),
                format_of!("6.18", "sock/inet_sk_error_report"),
            ),
            Layouts::default(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = read_event(data);
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = vec![0u8; size_of::<Event>()];
    let n = rest.len().min(bytes.len());
    bytes[..n].copy_from_slice(&rest[..n]);
    let mut e = read_event(&bytes).expect("a whole event");
    let layouts = &all_layouts()[pick as usize % 5];
    // Kinds 1..=9 exist; 0 and 10 are unknown ones.
    e.kind = u32::from(pick / 5 % 11);
    if let Ok(d) = decode(&e, layouts) {
        let _ = format!("{d:?}");
    }
});
