//! One datagram of a sock_diag (NETLINK_SOCK_DIAG) dump, as received.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netprobe::kernel::netns::parse_diag(data);
});
