//! Raw BTF bytes (`/sys/kernel/btf/vmlinux`, or the file NETPROBE_KERNEL_BTF
//! names), then every member lookup the daemon makes in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netprobe::{kernel::btf::Btf, kernel::probes::BtfOffsets};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data.to_vec()) else {
        return;
    };
    let _ = btf.type_count();
    let _ = btf.member("sk_buff", "no_such.member");
    let _ = BtfOffsets::read(&Ok(btf));
});
