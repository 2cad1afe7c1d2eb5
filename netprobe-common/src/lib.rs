//! Records shared by netprobe's kernel programs and its daemon.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and free of implicit padding, so the
//! kernel side can write it into the ring buffer and the daemon can read it back
//! byte for byte. Event kinds have fixed numeric ids: never renumber them.
#![no_std]

#[cfg(feature = "inject")]
extern crate std;

/// A raw socket (IP_HDRINCL) that sends whole IPv4 packets, such as
/// [`headers::syn`]'s: userspace only (the `inject` feature).
#[cfg(feature = "inject")]
pub mod inject {
    use std::{
        io,
        mem::size_of,
        net::Ipv4Addr,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };

    pub struct Injector(OwnedFd);

    impl Injector {
        pub fn new() -> io::Result<Injector> {
            // SAFETY: socket(2); owned at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_RAW,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a descriptor just opened, owned from here.
            Ok(Injector(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
            // SAFETY: a zeroed sockaddr_in with family and address.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
            // SAFETY: sendto from a valid buffer to a valid sockaddr_in.
            let n = unsafe {
                libc::sendto(
                    self.0.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    &sin as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }
}

/// Bytes of the tracepoint record copied verbatim. The daemon decodes them with
/// the field offsets of the running kernel's `format` file, so the kernel side
/// needs no per-kernel layout knowledge. 128 covers every record we read
/// (tcp_send_reset on 6.10+ is the largest at 88 bytes).
pub const RAW_MAX: usize = 128;
/// Bytes copied from the packet's network header (IPv6 header is 40).
pub const NET_MAX: usize = 40;
/// Bytes copied from the packet's transport header (a TCP header without options).
pub const TRANSPORT_MAX: usize = 20;
/// The most TCP options a header can carry (data offset 15 words).
pub const TCP_OPTIONS_MAX: usize = 40;

/// The copied network and transport headers, seen through network-types'
/// layouts, by the kernel programs (the aggregation key) and the daemon
/// (the flow) alike.
pub mod headers {
    use core::mem::{align_of, size_of};

    pub use network_types::{
        ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
        tcp::TcpHdr,
        udp::UdpHdr,
    };

    use super::{NET_MAX, TRANSPORT_MAX};

    /// A header made of bytes only: alignment 1, and any bytes are one.
    ///
    /// # Safety
    /// Implement only for such types.
    pub unsafe trait Header: Sized {}
    // SAFETY: network-types lays these out as byte arrays and bytes.
    unsafe impl Header for Ipv4Hdr {}
    // SAFETY: as above.
    unsafe impl Header for Ipv6Hdr {}
    // SAFETY: as above (the flags are a two-byte array).
    unsafe impl Header for TcpHdr {}
    // SAFETY: as above.
    unsafe impl Header for UdpHdr {}

    const _: () = assert!(
        align_of::<Ipv4Hdr>() == 1
            && align_of::<Ipv6Hdr>() == 1
            && align_of::<TcpHdr>() == 1
            && align_of::<UdpHdr>() == 1
    );
    // The copies hold a whole IPv6 header and a TCP header without options.
    const _: () = assert!(size_of::<Ipv6Hdr>() <= NET_MAX && size_of::<Ipv4Hdr>() <= NET_MAX);
    const _: () = assert!(size_of::<TcpHdr>() == TRANSPORT_MAX);

    /// The header at the start of `bytes`, if they are long enough.
    #[inline(always)]
    pub fn view<T: Header>(bytes: &[u8]) -> Option<&T> {
        if bytes.len() < size_of::<T>() {
            return None;
        }
        // SAFETY: long enough; `Header` promises alignment 1 and no
        // invalid bit patterns.
        Some(unsafe { &*(bytes.as_ptr() as *const T) })
    }

    /// The IP version of a network header (its first four bits).
    #[inline(always)]
    pub fn ip_version(net: &[u8]) -> u8 {
        match view::<Ipv4Hdr>(net) {
            Some(h) => h.version(),
            None => 0,
        }
    }

    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK
    /// 0x10, URG 0x20, ECE 0x40, CWR 0x80).
    #[inline(always)]
    pub fn tcp_flags(t: &TcpHdr) -> u8 {
        (t.fin()
            | t.syn() << 1
            | t.rst() << 2
            | t.psh() << 3
            | t.ack() << 4
            | t.urg() << 5
            | t.ece() << 6
            | t.cwr() << 7) as u8
    }

    /// The Internet checksum (RFC 1071) of `parts`, taken as one run of
    /// bytes.
    pub fn checksum(parts: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        let mut odd: Option<u8> = None;
        for part in parts {
            for &b in *part {
                match odd.take() {
                    Some(hi) => sum += u16::from_be_bytes([hi, b]) as u32,
                    None => odd = Some(b),
                }
            }
        }
        if let Some(hi) = odd {
            sum += u16::from_be_bytes([hi, 0]) as u32;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A TCP SYN as an IPv4 packet with correct checksums (no options), for
    /// sending through a raw socket: what a client at `src` would send to
    /// `dst`, with any source address.
    pub fn syn(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32) -> [u8; 40] {
        let mut p = [0u8; 40];
        p[..12].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        p[12..16].copy_from_slice(&src.0);
        p[16..20].copy_from_slice(&dst.0);
        let ip = checksum(&[&p[..20]]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        p[20..22].copy_from_slice(&src.1.to_be_bytes());
        p[22..24].copy_from_slice(&dst.1.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        // A 20-byte header, SYN, a window of 1024.
        p[32..36].copy_from_slice(&[5 << 4, 0x02, 4, 0]);
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src.0);
        pseudo[4..8].copy_from_slice(&dst.0);
        pseudo[9] = 6;
        pseudo[11] = 20;
        let tcp = checksum(&[&pseudo, &p[20..]]);
        p[36..38].copy_from_slice(&tcp.to_be_bytes());
        p
    }

    /// Whether the protocol's header starts with the two ports.
    #[inline(always)]
    pub fn has_ports(proto: u8) -> bool {
        proto == IpProto::Tcp as u8
            || proto == IpProto::Udp as u8
            || proto == IpProto::Sctp as u8
            || proto == IpProto::UdpLite as u8
    }

    /// (source, destination) ports of a transport header of a protocol
    /// that has them (UDP, SCTP and UDP-Lite put them where TCP does).
    #[inline(always)]
    pub fn ports(transport: &[u8]) -> Option<(u16, u16)> {
        let u = view::<UdpHdr>(transport)?;
        Some((u.src_port(), u.dst_port()))
    }
}

/// Fixed ids of the kernel hooks that produce records.
pub mod kind {
    /// `skb:kfree_skb` tracepoint: a packet dropped.
    pub const KFREE_SKB: u32 = 1;
    /// `tcp:tcp_send_reset` tracepoint: this host sends a RST.
    pub const TCP_SEND_RESET: u32 = 2;
    /// `tcp:tcp_receive_reset` tracepoint: a RST arrived for a socket of this host.
    pub const TCP_RECEIVE_RESET: u32 = 3;
    /// kprobe on `tcp_v4_send_reset`/`tcp_v6_send_reset`: this host sends a
    /// RST in answer to the segment in `net`/`transport` (kernels before
    /// 6.10, whose tracepoint misses resets sent without a full socket).
    /// `raw` is empty; `sk_state` is the socket's state, `pkt::NO_SOCKET`
    /// set when there was none.
    pub const KPROBE_SEND_RESET: u32 = 4;
    /// kprobe on `tcp_drop(sk, skb)` (kernels up to 5.18 that did not inline
    /// it): `raw` holds the caller's address (8 bytes, native order), the drop
    /// location.
    pub const KPROBE_TCP_DROP: u32 = 5;
    /// kprobes on `tcp_conn_request` (a SYN) and `tcp_v{4,6}_syn_recv_sock`
    /// (the handshake's last ACK) when the listener's accept queue is full:
    /// the kernel is about to drop the segment. `raw[0]` is
    /// `LISTEN_AT_SYN` or `LISTEN_AT_ACK`; `sock` is the listener.
    pub const KPROBE_LISTEN_OVERFLOW: u32 = 6;
    /// `oom:mark_victim` tracepoint: the OOM killer chose a victim. `raw`
    /// holds the record and its `comm` string (a `__data_loc`).
    pub const OOM_MARK_VICTIM: u32 = 7;
    /// `tcp:tcp_retransmit_skb` tracepoint: a segment was retransmitted.
    pub const TCP_RETRANSMIT: u32 = 8;
    /// `sock:inet_sk_error_report` tracepoint (5.14+): a socket got an error
    /// (ETIMEDOUT, ECONNRESET, ...).
    pub const SK_ERROR_REPORT: u32 = 9;
}

/// `raw[0]` of `kind::KPROBE_LISTEN_OVERFLOW`.
pub const LISTEN_AT_SYN: u8 = 1;
pub const LISTEN_AT_ACK: u8 = 2;

/// `Event::pkt_flags` bits: which packet header copies are valid.
pub mod pkt {
    /// `net` holds `NET_MAX` bytes from the skb's network header.
    pub const NET: u32 = 1;
    /// `transport` holds `TRANSPORT_MAX` bytes from the skb's transport header.
    pub const TRANSPORT: u32 = 2;
    /// The hook had no socket (a RST sent for a segment nobody owned).
    pub const NO_SOCKET: u32 = 4;
    /// A drop of the very skb a no-socket RST was just sent for (kernels
    /// without drop reasons: it names the drop NO_SOCKET).
    pub const AFTER_NO_SOCKET_RST: u32 = 8;
    /// `sock` holds the socket the hook had (the receiving socket of a drop
    /// from 6.11, a listener for listen overflows).
    pub const SOCK: u32 = 16;
    /// A drop of the skb conntrack had just failed to allocate an entry for
    /// (`__nf_conntrack_alloc` returned an error: the table is full).
    pub const CONNTRACK_FULL: u32 = 32;
    /// A drop of the skb whose conntrack entry `__nf_conntrack_confirm`
    /// could not insert (a clash it could not resolve, a chain too long).
    pub const CONNTRACK_INSERT_FAILED: u32 = 64;
    /// `tcp_options` holds the bytes after the transport header's first 20.
    pub const TCP_OPTIONS: u32 = 128;
}

/// What the programs read of a socket (offsets from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// `skc_family` (AF_INET 2, AF_INET6 10).
    pub family: u16,
    /// `skc_num`: the local port, host order.
    pub port: u16,
    /// `skc_state`.
    pub state: u8,
    pub _pad: [u8; 3],
    /// `skc_rcv_saddr` (first 4 bytes) or `skc_v6_rcv_saddr`.
    pub addr: [u8; 16],
    /// `sk_ack_backlog` and `sk_max_ack_backlog`: the accept queue.
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    /// `sk_rcvbuf` and `sk_rmem_alloc` (bytes).
    pub rcvbuf: u32,
    pub rmem_alloc: u32,
}

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// How many bytes of `raw` the kernel filled.
    pub raw_len: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()`: often a softirq's innocent bystander.
    pub pid_tgid: u64,
    /// `bpf_get_current_comm()`: untrusted bytes, escape before printing.
    pub comm: [u8; 16],
    /// [`pkt`] bits.
    pub pkt_flags: u32,
    /// CPU the event fired on.
    pub cpu: u32,
    /// The tracepoint record, as the kernel laid it out.
    pub raw: [u8; RAW_MAX],
    /// Start of the packet's network header, when the hook has an skb.
    pub net: [u8; NET_MAX],
    /// Start of the packet's transport header, when the hook has an skb.
    pub transport: [u8; TRANSPORT_MAX],
    /// The 40 bytes after a TCP header's first 20 (its options, where its
    /// data offset says it has some); valid with `pkt::TCP_OPTIONS`.
    pub tcp_options: [u8; TCP_OPTIONS_MAX],
    /// `skb->network_header` as read (offset from `skb->head`; 0xffff: unset).
    pub network_header: u16,
    /// `skb->transport_header` as read (offset from `skb->head`; 0xffff: unset).
    pub transport_header: u16,
    /// The socket's TCP state (`sk->__sk_common.skc_state`) where the hook
    /// has a socket and BTF gave the offset; 0 (no TCP state) otherwise.
    pub sk_state: u32,
    /// The inode number of the packet's network namespace (through the
    /// skb's device), 0 when unknown.
    pub netns: u32,
    /// Valid when `pkt::SOCK` is set.
    pub sock: SockInfo,
    /// In-kernel aggregation (see [`agg`]): this record's generation in
    /// its slot, 0 when the record was not aggregated (every repeat of it
    /// comes as a record of its own).
    pub agg_gen: u32,
    /// The slot of its CPU's [`AggTable`] that counts its repeats.
    pub agg_slot: u32,
    /// What the slot held before, as [`AggTable::state`] had it: the
    /// generation this record ended and its final repeat count (0: none).
    pub agg_prev: u64,
    /// When that aggregation's last repeat happened (`bpf_ktime_get_ns`).
    pub agg_prev_last_ns: u64,
    /// The distinct flows that generation counted ([`agg::sketch`]), when
    /// it was per service.
    pub agg_prev_sketch: agg::sketch::Sketch,
    /// What this record's slot counts ([`agg::FOLD_FLOW`], `FOLD_SERVICE`
    /// or `FOLD_PEER`): past [`agg::SETTING_CHURN`] its repeats are other
    /// flows to the same service, or from the same peer to other ports.
    pub agg_fold: u32,
    pub _pad: u32,
}

/// In-kernel aggregation: a program that sees the same event again on the
/// same CPU (the same [`AggKey`]) within the window counts it in a slot of
/// its CPU's [`AggTable`] instead of writing a record. The record that
/// next takes the slot carries the final count (`Event::agg_prev`); the
/// daemon also reads the tables once a second, so a count is never held
/// back for long.
pub mod agg {
    /// Slots per CPU: `SETS` sets of `WAYS`; a key lives in the set its
    /// hash names, and a new key takes the set's empty or least recently
    /// used slot.
    pub const SLOTS: usize = 512;
    /// Slots after those, direct-mapped, for keys per service or per peer
    /// (`SETTING_CHURN`): a storm's few services, apart from its flows.
    pub const COARSE_SLOTS: usize = 64;
    pub const ALL_SLOTS: usize = SLOTS + COARSE_SLOTS;
    pub const WAYS: usize = 8;
    pub const SETS: usize = SLOTS / WAYS;
    /// Bits of `AggSlot::state` below the generation: the repeat count.
    pub const COUNT_BITS: u32 = 40;
    pub const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
    /// Generations wrap at 24 bits, skipping 0.
    pub const GEN_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;
    /// `AGG_SETTINGS` indexes (an array map the daemon writes at run time).
    /// The window in nanoseconds; 0 turns aggregation off (every event is
    /// a record).
    pub const SETTING_WINDOW_NS: u32 = 0;
    /// Non-zero: keep both ports in the key (a port filter looks at either);
    /// otherwise only the lower, service port is.
    pub const SETTING_KEEP_PORTS: u32 = 1;
    /// New flows a CPU may write as records in one `CHURN_EPOCH_NS`; past
    /// that (or after an epoch that went past it), a new flow is counted
    /// in its service's slot instead (the peer's address left out of the
    /// key), and its distinct flows in the slot's sketch. 0: never.
    pub const SETTING_CHURN: u32 = 2;
    pub const SETTINGS: u32 = 3;
    pub const CHURN_EPOCH_NS: u64 = 100_000_000;

    /// What a slot counts: one flow; one service's new flows (the CPU saw
    /// more than `SETTING_CHURN` new flows in an epoch); one peer's new
    /// services (it also saw more than that many new services: a scan).
    pub const FOLD_FLOW: u32 = 0;
    pub const FOLD_SERVICE: u32 = 1;
    pub const FOLD_PEER: u32 = 2;

    /// A HyperLogLog sketch of `sketch::REGISTERS` five-bit registers, 12
    /// to a word: the distinct flows a per-service slot counted. Sketches
    /// merge by taking each register's maximum, so a slot's, a CPU's and
    /// the daemon's views union without counting a flow twice.
    pub mod sketch {
        pub const REGISTERS: u64 = 24;
        pub type Sketch = [u64; 2];

        /// Register `i`'s value.
        #[inline(always)]
        pub fn register(sketch: &Sketch, i: u64) -> u64 {
            (sketch[(i / 12) as usize & 1] >> (5 * (i % 12))) & 0x1f
        }

        /// Adds the flow whose key hashed to `h`.
        #[inline(always)]
        pub fn add(sketch: &mut Sketch, h: u64) {
            // A second mix: the set index used the hash's low bits.
            let g = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            // The high half picks the register, the low half's leading
            // zeros (plus one, at most 31) are its rank.
            let i = ((g >> 32) * REGISTERS) >> 32;
            // Without a loop or branches (cheap for the kernel's verifier):
            // smear the highest set bit down, count the ones left.
            let mut x = g & 0xffff_ffff;
            x |= x >> 1;
            x |= x >> 2;
            x |= x >> 4;
            x |= x >> 8;
            x |= x >> 16;
            x -= (x >> 1) & 0x5555_5555;
            x = (x & 0x3333_3333) + ((x >> 2) & 0x3333_3333);
            x = (x + (x >> 4)) & 0x0f0f_0f0f;
            let ones = (x.wrapping_mul(0x0101_0101) >> 24) & 0xff;
            // Leading zeros of the low 32 bits, plus one: 1 to 33; at most
            // 31 (five bits).
            let rank = (33 - ones).min(31);
            let (w, shift) = ((i / 12) as usize & 1, 5 * (i % 12));
            if rank > (sketch[w] >> shift) & 0x1f {
                sketch[w] = (sketch[w] & !(0x1f << shift)) | rank << shift;
            }
        }

        pub fn merge(a: &Sketch, b: &Sketch) -> Sketch {
            let mut out = [0; 2];
            let mut i = 0;
            while i < REGISTERS {
                let (x, y) = (register(a, i), register(b, i));
                out[(i / 12) as usize] |= if x > y { x } else { y } << (5 * (i % 12));
                i += 1;
            }
            out
        }
    }

    /// The generation and count packed in `state` words.
    pub const fn split(state: u64) -> (u64, u64) {
        (state >> COUNT_BITS, state & COUNT_MASK)
    }
}

/// Kinds are indexed 0..AGG_KINDS in [`AggConfig`]'s tables.
pub const AGG_KINDS: usize = 10;
/// `raw` in 8-byte words.
pub const RAW_WORDS: usize = RAW_MAX / 8;
/// Words of an [`AggKey`].
pub const AGG_KEY_WORDS: usize = 29;

/// What makes two events the same for in-kernel aggregation: everything
/// the daemon builds a record from, apart from when it happened, the task,
/// kernel object addresses, per-packet header fields (IP id, checksum,
/// sequence numbers, TCP options) and, unless ports are kept, the client's
/// ephemeral port. Word 0: kind and `pkt_flags`; 1: `sk_state` and
/// `netns`; 2: the ports word; 3..19: `raw` under its kind's mask; 19..24:
/// the network header's flow fields; 24..29: the socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AggKey {
    pub w: [u64; AGG_KEY_WORDS],
}

/// One per CPU: the counts of its slots (their keys are in a map of
/// their own, which the daemon never reads).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AggTable {
    /// Generation << `agg::COUNT_BITS` | repeats counted since the
    /// generation's record; 0: an empty slot. One word, so the daemon
    /// reads it whole.
    pub state: [u64; agg::ALL_SLOTS],
    /// When the generation's record was written, and its last repeat.
    pub first_ns: [u64; agg::ALL_SLOTS],
    pub last_ns: [u64; agg::ALL_SLOTS],
    /// Per-service slots: the distinct flows counted ([`agg::sketch`]).
    pub sketch: [agg::sketch::Sketch; agg::ALL_SLOTS],
    /// The CPU's churn: when its epoch began, the new flows in it, whether
    /// the last epoch was past `SETTING_CHURN`; the same for new services
    /// among those; and per-service and per-peer records written in all.
    pub churn_epoch_ns: u64,
    pub churn_new: u64,
    pub churn_hot: u64,
    pub churn_services: u64,
    pub services_hot: u64,
    pub per_service_records: u64,
    pub per_peer_records: u64,
    /// Scratch: what the sketch of the slot a record takes starts with.
    pub sketch_seed: u64,
}

/// Where the aggregation key's parts are, per event kind, on the running
/// kernel: built by the daemon from the `format` files, like [`Config`],
/// and written into the programs' read-only `AGG_CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggConfig {
    /// Bit `k` set: events of kind `k` may be aggregated.
    pub kinds: u32,
    /// Bit `k` set: kind `k`'s ports in `raw` are big-endian (inside a
    /// sockaddr) rather than host order.
    pub ports_be: u32,
    /// The drop reason value of PAWS rejections (`TCP_RFC7323_PAWS`), or
    /// `Config::ABSENT`: never aggregated, each segment's TCP timestamp
    /// counts (the daemon counts clocks behind a NAT address).
    pub paws_reason: u32,
    pub _pad: u32,
    /// Per kind: offsets in `raw` of the two ports (`Config::ABSENT`: none).
    pub port_a: [u32; AGG_KINDS],
    pub port_b: [u32; AGG_KINDS],
    /// Per kind: a byte mask for each word of `raw` (the fields that are
    /// part of the key; ports are masked out and keyed apart).
    pub raw_mask: [[u64; RAW_WORDS]; AGG_KINDS],
    /// The same, for a per-service key: without the addresses.
    pub service_mask: [[u64; RAW_WORDS]; AGG_KINDS],
}

impl AggConfig {
    /// Nothing is aggregated.
    pub const NONE: AggConfig = AggConfig {
        kinds: 0,
        ports_be: 0,
        paws_reason: Config::ABSENT,
        _pad: 0,
        port_a: [Config::ABSENT; AGG_KINDS],
        port_b: [Config::ABSENT; AGG_KINDS],
        raw_mask: [[0; RAW_WORDS]; AGG_KINDS],
        service_mask: [[0; RAW_WORDS]; AGG_KINDS],
    };
}

/// Where the fields the kernel programs need live on the running kernel.
/// Filled by the daemon from tracefs `format` files and BTF, then written into
/// the programs' read-only `CONFIG` global before load, so the verifier sees
/// constants. `ABSENT` marks a field this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Record size of `skb:kfree_skb` (bytes to copy, at most `RAW_MAX`).
    pub kfree_skb_len: u32,
    /// Offset of `skbaddr` in the `kfree_skb` record.
    pub kfree_skb_skbaddr: u32,
    /// Offset of `reason` in the `kfree_skb` record, or `ABSENT` (before 5.17).
    pub kfree_skb_reason: u32,
    /// Drops with `reason <= kfree_skb_min_reason` are not reported
    /// (NOT_SPECIFIED and below: SKB_NOT_DROPPED_YET, SKB_CONSUMED).
    pub kfree_skb_min_reason: u32,
    /// QUEUE_PURGE's value (6.4+), or `ABSENT`: the queues a socket still
    /// holds when it is destroyed (the last FIN of every closed
    /// connection), freed with a drop reason but no failure. Not reported.
    pub kfree_skb_purge_reason: u32,
    /// Record size of `tcp:tcp_send_reset`.
    pub send_reset_len: u32,
    /// Record size of `tcp:tcp_receive_reset`.
    pub receive_reset_len: u32,
    /// `offsetof(struct sk_buff, head)`, or `ABSENT` when BTF is unavailable.
    pub skb_head: u32,
    /// `offsetof(struct sk_buff, network_header)` (a `__u16`).
    pub skb_network_header: u32,
    /// `offsetof(struct sk_buff, transport_header)` (a `__u16`).
    pub skb_transport_header: u32,
    /// Offset of `skaddr` in the `tcp_receive_reset` record.
    pub receive_reset_skaddr: u32,
    /// Offset of `skbaddr` in the `tcp_send_reset` record, when the reset
    /// kprobes run beside the tracepoint: a RST the kprobe already reported
    /// (same skb) is not reported again. `ABSENT` otherwise.
    pub send_reset_skbaddr: u32,
    /// `offsetof(struct sock_common, skc_state)` (a byte), or `ABSENT`.
    pub sk_state: u32,
    /// Offset of `rx_sk` in the `kfree_skb` record (6.11+), or `ABSENT`.
    pub kfree_skb_rx_sk: u32,
    /// `struct sock_common` / `struct sock` members for `SockInfo`, or
    /// `ABSENT` (then no socket is read): skc_family, skc_num,
    /// skc_rcv_saddr, skc_v6_rcv_saddr, sk_ack_backlog, sk_max_ack_backlog,
    /// sk_rcvbuf, sk_backlog.rmem_alloc.
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_rcvbuf: u32,
    pub sk_rmem_alloc: u32,
    /// Bytes of the `oom:mark_victim` record to copy (fixed part and its
    /// `comm` string), 0 when absent.
    pub oom_len: u32,
    /// Record sizes of `tcp:tcp_retransmit_skb` and
    /// `sock:inet_sk_error_report`, 0 when absent.
    pub retransmit_len: u32,
    pub sk_error_len: u32,
    /// Offset of `error` (an int) in the `inet_sk_error_report` record, or
    /// `ABSENT`: reports of error 0 (a socket closing after its error was
    /// read) are not failures and are not sent.
    pub sk_error_error: u32,
    /// The packet's network namespace: `sk_buff.dev`, `net_device.nd_net.net`
    /// and `net.ns.inum`, or `ABSENT` (then `Event::netns` stays 0).
    pub skb_dev: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    /// Offset of `location` in the `kfree_skb` record, or `ABSENT`.
    pub kfree_skb_location: u32,
    /// `offsetof(struct sock_common, skc_net.net)`: a socket's namespace
    /// (with `net_ns_inum`), or `ABSENT`.
    pub sk_net: u32,
    /// Offsets of `skaddr` and `skbaddr` in the `tcp_send_reset` record,
    /// and of `skaddr` in `tcp_retransmit_skb`, for their namespace; or
    /// `ABSENT`.
    pub send_reset_sk: u32,
    pub send_reset_skb: u32,
    pub retransmit_skaddr: u32,
    /// Before drop reasons (5.17): the text addresses `[start, end)` of
    /// `sk_stream_kill_queues` (from kallsyms), whose frees are a
    /// destroyed socket's queues, what QUEUE_PURGE names from 6.4; not
    /// reported. 0 and 0 when unknown or when the kernel gives reasons.
    pub purge_start: u64,
    pub purge_end: u64,
}

impl Config {
    pub const ABSENT: u32 = u32::MAX;

    /// A configuration under which every program exits at once.
    pub const DISABLED: Config = Config {
        kfree_skb_len: 0,
        kfree_skb_skbaddr: Self::ABSENT,
        kfree_skb_reason: Self::ABSENT,
        kfree_skb_min_reason: 0,
        kfree_skb_purge_reason: Self::ABSENT,
        send_reset_len: 0,
        receive_reset_len: 0,
        skb_head: Self::ABSENT,
        skb_network_header: Self::ABSENT,
        skb_transport_header: Self::ABSENT,
        receive_reset_skaddr: Self::ABSENT,
        send_reset_skbaddr: Self::ABSENT,
        sk_state: Self::ABSENT,
        kfree_skb_rx_sk: Self::ABSENT,
        skc_family: Self::ABSENT,
        skc_num: Self::ABSENT,
        skc_rcv_saddr: Self::ABSENT,
        skc_v6_rcv_saddr: Self::ABSENT,
        sk_ack_backlog: Self::ABSENT,
        sk_max_ack_backlog: Self::ABSENT,
        sk_rcvbuf: Self::ABSENT,
        sk_rmem_alloc: Self::ABSENT,
        oom_len: 0,
        retransmit_len: 0,
        sk_error_len: 0,
        sk_error_error: Self::ABSENT,
        skb_dev: Self::ABSENT,
        dev_nd_net: Self::ABSENT,
        net_ns_inum: Self::ABSENT,
        kfree_skb_location: Self::ABSENT,
        sk_net: Self::ABSENT,
        send_reset_sk: Self::ABSENT,
        send_reset_skb: Self::ABSENT,
        retransmit_skaddr: Self::ABSENT,
        purge_start: 0,
        purge_end: 0,
    };
}

/// Index into the per-CPU `LOST` counter array: ring buffer reservations that failed.
pub const LOST_RINGBUF_FULL: u32 = 0;
/// Index into `LOST`: drops skipped in the kernel by design, never lost:
/// a reason at or below NOT_SPECIFIED (5.17+; a free that is no failure).
pub const SKIPPED_NOT_SPECIFIED: u32 = 1;
/// Index into `LOST`: drops skipped in the kernel by design: a destroyed
/// socket's queue purge (reason QUEUE_PURGE, or a free inside
/// `sk_stream_kill_queues` before 5.17).
pub const SKIPPED_QUEUE_PURGE: u32 = 2;
/// Number of slots in `LOST`.
pub const LOST_SLOTS: u32 = 3;

/// Indexes into the per-CPU `SKB_SLOT` array: skbs one program leaves for
/// another running after it on the same CPU.
pub mod slot {
    /// The skb the reset kprobe last answered (the tracepoint skips it).
    pub const RESET_ANY: u32 = 0;
    /// The skb the reset kprobe last answered without a socket (the drop
    /// program marks its drop `AFTER_NO_SOCKET_RST`).
    pub const RESET_NO_SOCKET: u32 = 1;
    /// `nf_conntrack_in`'s skb, stashed at entry for `__nf_conntrack_alloc`'s
    /// return.
    pub const CT_IN: u32 = 2;
    /// The skb conntrack could not allocate an entry for (table full): its
    /// drop is marked `CONNTRACK_FULL`.
    pub const CT_FULL: u32 = 3;
    /// `__nf_conntrack_confirm`'s skb, stashed at entry for its return.
    pub const CT_CONFIRM: u32 = 4;
    /// The skb whose conntrack entry could not be inserted: its drop is
    /// marked `CONNTRACK_INSERT_FAILED`.
    pub const CT_INSERT_FAILED: u32 = 5;
    pub const COUNT: u32 = 6;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), Copy, with explicit padding fields and no pointers.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::AggConfig {}
    unsafe impl aya::Pod for super::AggTable {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn header_views() {
        use headers::*;
        // A SYN from 127.0.0.2:40000 to 127.0.0.1:8081, data offset 10
        // words (options follow), as a capture shows it.
        let tcp: [u8; 20] = [
            0x9c, 0x40, 0x1f, 0x91, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xd7, 0, 0, 0, 0,
        ];
        let t = view::<TcpHdr>(&tcp).unwrap();
        assert_eq!(t.doff(), 10);
        assert_eq!(tcp_flags(t), 0x02);
        assert_eq!(ports(&tcp), Some((40000, 8081)));
        let mut rst_ack = tcp;
        rst_ack[13] = 0x14;
        assert_eq!(tcp_flags(view::<TcpHdr>(&rst_ack).unwrap()), 0x14);
        assert!(view::<TcpHdr>(&tcp[..19]).is_none());
        assert_eq!(ports(&tcp[..3]), None);
        let v4: [u8; 20] = [
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 2, 127, 0, 0, 1,
        ];
        let ip = view::<Ipv4Hdr>(&v4).unwrap();
        assert_eq!((ip_version(&v4), ip.ihl(), ip.proto), (4, 20, 6));
        assert_eq!(ip.src_addr(), core::net::Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(ip_version(&[]), 0);
        assert!(has_ports(6) && has_ports(17) && has_ports(132) && has_ports(136));
        assert!(!has_ports(1) && !has_ports(58));
        // A SYN checks out: its IP and TCP checksums fold to zero.
        let p = syn(([127, 9, 8, 7], 40000), ([127, 0, 0, 1], 8081), 5);
        assert_eq!(checksum(&[&p[..20]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
        let tcp = view::<TcpHdr>(&p[20..]).unwrap();
        assert_eq!(
            (ports(&p[20..]), tcp.syn(), tcp.ack()),
            (Some((40000, 8081)), 1, 0)
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(
            size_of::<Event>(),
            4 + 4
                + 8
                + 8
                + 16
                + 4
                + 4
                + RAW_MAX
                + NET_MAX
                + TRANSPORT_MAX
                + TCP_OPTIONS_MAX
                + 2
                + 2
                + 4
                + 4
                + 40
                + 24
                + 24
        );
        assert_eq!(size_of::<AggTable>(), 5 * 8 * agg::ALL_SLOTS + 64);
        assert_eq!(size_of::<AggKey>(), AGG_KEY_WORDS * 8);
        assert_eq!(
            size_of::<AggConfig>(),
            16 + 2 * 4 * AGG_KINDS + 2 * 8 * RAW_WORDS * AGG_KINDS
        );
        assert_eq!(agg::split(5 << agg::COUNT_BITS | 7), (5, 7));
        let (mut a, mut b) = ([0; 2], [0; 2]);
        agg::sketch::add(&mut a, 1);
        agg::sketch::add(&mut b, 1 << 40);
        assert_ne!(a, [0; 2]);
        let once = a;
        agg::sketch::add(&mut a, 1);
        assert_eq!(a, once);
        assert_eq!(agg::sketch::merge(&a, &a), a);
        let ab = agg::sketch::merge(&a, &b);
        agg::sketch::add(&mut b, 1);
        assert_eq!(ab, b);
        assert_eq!(size_of::<SockInfo>(), 40);
        assert_eq!(size_of::<Event>() % 8, 0);
        // The aggregation reads `raw` a word at a time.
        assert_eq!(core::mem::offset_of!(Event, raw) % 8, 0);
        assert_eq!(align_of::<Event>(), 8);
        assert_eq!(size_of::<Config>(), 34 * 4 + 2 * 8);
    }
}
