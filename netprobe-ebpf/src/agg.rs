//! In-kernel aggregation (`netprobe_common::agg`): a flood of one failure
//! (the same drop, reset or error of one flow) is counted per CPU instead
//! of each repeat crossing the ring buffer.
//!
//! Per CPU, a table of `agg::SLOTS` slots in sets of `agg::WAYS` holds the
//! keys of recent records and how often each has been seen since. A
//! repeat within the window only counts. Anything else is written as a
//! record; it takes its set's slot for the same key (whose window has
//! passed), else an empty slot, else the least recently used one, and
//! carries what that slot had counted (`Event::agg_prev`). If the ring
//! buffer is full, the record is counted lost and the slot is left as it
//! was, so no count is dropped. Programs do not nest on a CPU (the
//! kernel's bpf_prog_active guard), so the table needs no lock; the daemon
//! reads each `state` as one word.
//!
//! Storms of flows that do not repeat (spoofed sources, scans) degrade
//! gracefully: past `agg::SETTING_CHURN` new flows per CPU in an epoch, a
//! new flow is keyed by its service (`per_service_key`), and past as many
//! new services, by its peer (`per_peer_key`), in `agg::COARSE_SLOTS`
//! direct-mapped slots after the flows'; what the coarser key left out is
//! counted in the slot's HyperLogLog sketch (`agg::sketch`).

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use netprobe_common::{
    agg,
    headers::{self, IpProto, Ipv4Hdr, Ipv6Hdr, TcpHdr},
    kind, pkt, AggConfig, AggKey, AggTable, Config, Event, AGG_KEY_WORDS, AGG_KINDS, RAW_MAX,
    RAW_WORDS,
};

use crate::{
    config,
    ringbuf::{fill_comm, output, write_volatile, zero},
};

/// Overwritten by the daemon at load, like `CONFIG`.
#[no_mangle]
static AGG_CONFIG: AggConfig = AggConfig::NONE;

/// `agg::SETTING_*`, written by the daemon while it runs.
#[map]
static AGG_SETTINGS: Array<u64> = Array::with_max_entries(agg::SETTINGS, 0);

/// Index 0: each CPU's counts, which the daemon reads.
#[map]
static AGG: PerCpuArray<AggTable> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's slot keys, by slot.
#[map]
static AGG_KEYS: PerCpuArray<AggKey> = PerCpuArray::with_max_entries(agg::ALL_SLOTS as u32, 0);

/// Index 0: each CPU's key under construction; 1: the flow's key, kept
/// while index 0 is made its service's.
#[map]
static AGG_KEY: PerCpuArray<AggKey> = PerCpuArray::with_max_entries(2, 0);

#[inline(always)]
fn setting(at: u32) -> u64 {
    AGG_SETTINGS.get(at).copied().unwrap_or(0)
}

#[inline(always)]
fn agg_config() -> &'static AggConfig {
    // SAFETY: a read-only global; read through a volatile pointer read so the
    // placeholder is not folded in (its tables are read word by word).
    unsafe { &*core::ptr::read_volatile(&(&AGG_CONFIG as *const AggConfig)) }
}

/// The window, when events of `kind` are aggregated now.
#[inline(always)]
pub fn window(kind: u32) -> Option<u64> {
    if kind as usize >= AGG_KINDS || agg_config().kinds & (1 << kind) == 0 {
        return None;
    }
    let w = setting(agg::SETTING_WINDOW_NS);
    (w != 0).then_some(w)
}

/// Writes `e` unless it repeats a key this CPU counts, within `window`.
/// Not inlined: one copy serves every program.
#[inline(never)]
pub fn offer(e: &mut Event, window: u64) {
    let (Some(key), Some(t)) = (AGG_KEY.get_ptr_mut(0), AGG.get_ptr_mut(0)) else {
        fill_comm(e);
        output(e);
        return;
    };
    // SAFETY: this CPU's entries; programs do not nest on a CPU.
    let (key, t) = unsafe { (&mut *key, &mut *t) };
    if !key_of(e, setting(agg::SETTING_KEEP_PORTS) != 0, key) {
        // Not aggregated: written as it is, no slot touched.
        fill_comm(e);
        output(e);
        return;
    }
    let now = e.ts_ns;
    let (i, hit) = lookup(t, key, hash(key), now, window);
    if hit {
        return;
    }
    // Through memory: the verifier then goes on from one state, whichever
    // way the set's loop ended.
    write_volatile(&mut e.agg_slot, i as u32);
    // SAFETY: this CPU's scratch record.
    let mut i = unsafe { core::ptr::read_volatile(&e.agg_slot) } as usize;
    // A new flow. While this CPU sees too many, it is counted in its
    // service's slot instead (its source in the slot's sketch); while the
    // CPU also sees too many new services, in its peer's (its service in
    // the sketch). What the record is counted per, and its sketch's seed,
    // go through memory (`e.agg_fold`, `t.sketch_seed`): read back below,
    // they are unknown to the verifier, which then checks the record's
    // writing once rather than once per way here.
    let churn = setting(agg::SETTING_CHURN);
    if churn != 0 {
        if now.wrapping_sub(t.churn_epoch_ns) >= agg::CHURN_EPOCH_NS {
            t.churn_hot = (t.churn_new > churn) as u64;
            t.services_hot = (t.churn_services > churn) as u64;
            t.churn_epoch_ns = now;
            t.churn_new = 0;
            t.churn_services = 0;
        }
        t.churn_new += 1;
        if t.churn_hot != 0 || t.churn_new > churn {
            match coarser(e, t, key, i, now, window, churn) {
                Some(slot) => i = slot,
                None => return,
            }
        }
    }
    if i >= agg::ALL_SLOTS {
        return;
    }
    let (last_gen, _) = agg::split(t.state[i]);
    let mut gen = (last_gen + 1) & agg::GEN_MASK;
    if gen == 0 {
        gen = 1;
    }
    e.agg_gen = gen as u32;
    e.agg_slot = i as u32;
    e.agg_prev = t.state[i];
    e.agg_prev_last_ns = t.last_ns[i];
    e.agg_prev_sketch[0] = t.sketch[i][0];
    e.agg_prev_sketch[1] = t.sketch[i][1];
    // SAFETY (both): fields of this CPU's map entries.
    let fold = unsafe { core::ptr::read_volatile(&e.agg_fold) };
    let seed = unsafe { core::ptr::read_volatile(&t.sketch_seed) };
    fill_comm(e);
    if !output(e) {
        return;
    }
    let Some(slot_key) = AGG_KEYS.get_ptr_mut(i as u32) else {
        return;
    };
    // SAFETY: this CPU's entry.
    copy(key, unsafe { &mut *slot_key });
    t.state[i] = gen << agg::COUNT_BITS;
    t.first_ns[i] = now;
    t.last_ns[i] = now;
    t.sketch[i] = [0; 2];
    if fold != agg::FOLD_FLOW {
        if fold == agg::FOLD_SERVICE {
            t.per_service_records += 1;
        } else {
            t.per_peer_records += 1;
        }
        agg::sketch::add(&mut t.sketch[i], seed);
    }
}

/// A new flow on a CPU past its churn: counts it in its service's slot (or,
/// past the churn of services too, its peer's) if that slot is there;
/// else returns the slot its record is to take, with `e.agg_fold` and
/// `t.sketch_seed` set (`flow_slot`, the flow's own, where neither
/// applies: both ports kept).
#[inline(always)]
fn coarser(
    e: &mut Event,
    t: &mut AggTable,
    key: &mut AggKey,
    flow_slot: usize,
    now: u64,
    window: u64,
    churn: u64,
) -> Option<usize> {
    let Some(fine) = AGG_KEY.get_ptr_mut(1) else {
        return Some(flow_slot);
    };
    // SAFETY: this CPU's entry, apart from the key's.
    let fine = unsafe { &mut *fine };
    copy(key, fine);
    let Some(src) = per_service_key(e, key) else {
        return Some(flow_slot);
    };
    let (i, hit) = lookup_coarse(t, key, now, window);
    if hit {
        agg::sketch::add(&mut t.sketch[i], src);
        return None;
    }
    t.churn_services += 1;
    if t.services_hot == 0 && t.churn_services <= churn {
        write_volatile(&mut e.agg_fold, agg::FOLD_SERVICE);
        write_volatile(&mut t.sketch_seed, src);
        return Some(i);
    }
    copy(fine, key);
    let service = per_peer_key(key);
    let (i, hit) = lookup_coarse(t, key, now, window);
    if hit {
        agg::sketch::add(&mut t.sketch[i], service);
        return None;
    }
    write_volatile(&mut e.agg_fold, agg::FOLD_PEER);
    write_volatile(&mut t.sketch_seed, service);
    Some(i)
}

/// Looks a per-service or per-peer `key` up in its direct-mapped slot past
/// the flows' (`agg::COARSE_SLOTS`): (the slot, true) when it is there
/// inside its window (the repeat is counted); else (the slot, false), which
/// a record of it is to take from whatever it held.
#[inline(always)]
fn lookup_coarse(t: &mut AggTable, key: &AggKey, now: u64, window: u64) -> (usize, bool) {
    let i = agg::SLOTS + (hash(key) as usize & (agg::COARSE_SLOTS - 1));
    let st = t.state[i];
    if st != 0
        && AGG_KEYS.get(i as u32).is_some_and(|k| same(k, key))
        && now.wrapping_sub(t.first_ns[i]) < window
    {
        t.state[i] = st + 1;
        t.last_ns[i] = now;
        return (i, true);
    }
    (i, false)
}

/// Looks `key` (hashed to `h`) up in its set: (its slot, true) when it is
/// there inside its window (the repeat is counted); else (the slot a record
/// of it is to take, false): its own slot whose window has passed, an
/// empty one, or the least recently used.
#[inline(always)]
fn lookup(t: &mut AggTable, key: &AggKey, h: u64, now: u64, window: u64) -> (usize, bool) {
    let base = (h as usize & (agg::SETS - 1)) * agg::WAYS;
    let mut take = base;
    let mut oldest = u64::MAX;
    let mut w = 0;
    while w < agg::WAYS {
        let i = (base + w) & (agg::SLOTS - 1);
        let st = t.state[i];
        if st == 0 {
            if oldest != 0 {
                (take, oldest) = (i, 0);
            }
        } else if AGG_KEYS.get(i as u32).is_some_and(|k| same(k, key)) {
            if now.wrapping_sub(t.first_ns[i]) < window {
                t.state[i] = st + 1;
                t.last_ns[i] = now;
                return (i, true);
            }
            // Its window has passed: a record again, in the same slot.
            return (i, false);
        } else if t.last_ns[i] < oldest {
            (take, oldest) = (i, t.last_ns[i]);
        }
        w += 1;
    }
    (take, false)
}

/// Turns a flow's key into its service's: the addresses left out (the
/// record's own fields under the kind's service mask, the packet's), the
/// service's port, the reason and the local socket kept. Returns what was
/// left out, hashed: the packet's two addresses in either order hash
/// alike, so a SYN and the RST that answers it are one source. None when
/// the key keeps both ports (a port filter looks at the client's too).
#[inline(always)]
fn per_service_key(e: &Event, key: &mut AggKey) -> Option<u64> {
    if setting(agg::SETTING_KEEP_PORTS) != 0 {
        return None;
    }
    let k = e.kind as usize;
    if k >= AGG_KINDS {
        return None;
    }
    let ac = agg_config();
    let w0 = word_at(key, 0);
    write_volatile(&mut key.w[0], w0 | 1 << 31);
    let mut src: u64 = 0;
    let mut i = 0;
    while i < RAW_WORDS {
        // Word by word through memory (see `same`).
        let w = word_at(key, 3 + i);
        let kept = w & ac.service_mask[k][i];
        src = (src ^ (w ^ kept)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        write_volatile(&mut key.w[3 + i], kept);
        i += 1;
    }
    // IPv4: word 20 is source | destination << 32; IPv6: words 20-21 and
    // 22-23. Each half folded onto the other: the same either way round.
    let (a, b) = (
        word_at(key, 20) ^ word_at(key, 22),
        word_at(key, 21) ^ word_at(key, 23),
    );
    let fold = |x: u64| (x ^ (x >> 32)) & 0xffff_ffff;
    src = (src ^ fold(a) ^ fold(b) << 32).wrapping_mul(0xff51_afd7_ed55_8ccd);
    // Stores, not a memset call: values live across a call are spilled to
    // the stack (see `same`).
    write_volatile(&mut key.w[20], 0);
    write_volatile(&mut key.w[21], 0);
    write_volatile(&mut key.w[22], 0);
    write_volatile(&mut key.w[23], 0);
    Some(src ^ (src >> 29))
}

/// Turns a flow's key into its peer's: the ports and the local socket left
/// out, the addresses, reason and flags kept. Returns what was left out,
/// hashed: the service, for the slot's sketch.
#[inline(always)]
fn per_peer_key(key: &mut AggKey) -> u64 {
    const PORTS: u64 = (1 << 48) - 1;
    let w0 = word_at(key, 0);
    write_volatile(&mut key.w[0], w0 | 1 << 30);
    let w2 = word_at(key, 2);
    let mut service = (w2 & PORTS).wrapping_mul(0xff51_afd7_ed55_8ccd);
    write_volatile(&mut key.w[2], w2 & !PORTS);
    let mut i = 24;
    while i < AGG_KEY_WORDS {
        service = (service ^ word_at(key, i)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        write_volatile(&mut key.w[i], 0);
        i += 1;
    }
    service ^ (service >> 29)
}

/// Word by word, not a memcpy call (see `per_service_key`).
#[inline(always)]
fn copy(from: &AggKey, to: &mut AggKey) {
    let mut j = 0;
    while j < AGG_KEY_WORDS {
        write_volatile(&mut to.w[j], word_at(from, j));
        j += 1;
    }
}

/// Spreads keys over the sets (not a fingerprint: keys are compared whole).
/// One multiply per word, and a final fold of the high bits into the low
/// ones the set is taken from (a per-word shift as well cost 10-25 ns per
/// event, measured).
/// Four independent lanes: each multiply waits only for its own lane's
/// last, not for every word before it.
#[inline(always)]
fn hash(key: &AggKey) -> u64 {
    const M: u64 = 0xff51_afd7_ed55_8ccd;
    let mut h: [u64; 4] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0x85eb_ca77_c2b2_ae63,
    ];
    let mut i = 0;
    while i < AGG_KEY_WORDS {
        h[i % 4] = (h[i % 4] ^ word_at(key, i)).wrapping_mul(M);
        i += 1;
    }
    let x = (h[0] ^ h[1].rotate_left(16) ^ h[2].rotate_left(32) ^ h[3].rotate_left(48))
        .wrapping_mul(M);
    x ^ (x >> 29) ^ (x >> 47)
}

/// Word `i` of a key in map memory, read there (see `same`).
#[inline(always)]
fn word_at(key: &AggKey, i: usize) -> u64 {
    if i >= AGG_KEY_WORDS {
        return 0;
    }
    // SAFETY: in bounds (checked above).
    unsafe { core::ptr::read_volatile(key.w.as_ptr().add(i)) }
}

/// Compares two keys in map memory. The words are read where they are
/// compared (volatile reads): hoisted out of the set's loop, the key's
/// words would be kept on the stack, which a kprobe's chain of calls
/// cannot spare (the verifier's 512 bytes for all frames).
#[inline(always)]
fn same(a: &AggKey, b: &AggKey) -> bool {
    let mut i = 0;
    while i < AGG_KEY_WORDS {
        if word_at(a, i) != word_at(b, i) {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        if at + i < bytes.len() {
            b[i] = bytes[at + i];
        }
        i += 1;
    }
    u64::from_ne_bytes(b)
}

/// Word `i` of `e.raw`, read whole (`raw` is 8-aligned in `Event`).
#[inline(always)]
fn raw_word(e: &Event, i: usize) -> u64 {
    const { assert!(core::mem::offset_of!(Event, raw) % 8 == 0 && align_of::<Event>() == 8) };
    if i >= RAW_WORDS {
        return 0;
    }
    // SAFETY: inside `raw` (checked above), on an 8-byte boundary.
    unsafe { e.raw.as_ptr().cast::<u64>().add(i).read() }
}

#[inline(always)]
fn port_at(raw: &[u8; RAW_MAX], off: u32, big_endian: bool) -> Option<u16> {
    let off = off as usize;
    if off + 1 >= RAW_MAX {
        return None;
    }
    let b = [raw[off], raw[off + 1]];
    Some(if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_ne_bytes(b)
    })
}

/// TCP_SYN_SENT.
const SYN_SENT: u32 = 2;

/// The ports word: the lower port and which side it was on (where nothing
/// says which end is the service), or
/// both ports when `keep` (a port filter is set).
#[inline(always)]
fn ports_word(a: u16, b: u16, keep: bool) -> u64 {
    let (a, b) = (a as u64, b as u64);
    if keep {
        (1 << 40) | (a << 16) | b
    } else if a < b {
        (2 << 40) | a
    } else if b < a {
        (3 << 40) | b
    } else {
        (4 << 40) | a
    }
}

/// The ports word of a service port the kernel told (tag 5: the flow's
/// destination, 6: its source): the client's port is left out wherever it
/// lies (the daemon's service.rs follows the same rules).
#[inline(always)]
fn service_word(port: u16, tag: u64, keep: bool, a: u16, b: u16) -> u64 {
    if keep {
        ports_word(a, b, true)
    } else {
        (tag << 40) | port as u64
    }
}

/// Socket errors of a connecting socket, whose peer is the service:
/// ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN.
#[inline(always)]
fn connecting_error(err: i32) -> bool {
    matches!(err.unsigned_abs(), 111 | 113 | 101 | 112)
}

/// Fills `key` from `e`; false when `e` is not to be aggregated (a PAWS
/// rejection, a packet whose flow the key cannot be sure of).
#[inline(always)]
fn key_of(e: &Event, keep_ports: bool, key: &mut AggKey) -> bool {
    let ac = agg_config();
    let k = e.kind as usize;
    if k >= AGG_KINDS {
        return false;
    }
    let cfg = config();
    // A PAWS rejection's TCP timestamp is the evidence: every one counts.
    if e.kind == kind::KFREE_SKB && cfg.kfree_skb_reason != Config::ABSENT {
        let off = cfg.kfree_skb_reason as usize;
        if off + 4 <= RAW_MAX {
            let r =
                u32::from_ne_bytes([e.raw[off], e.raw[off + 1], e.raw[off + 2], e.raw[off + 3]]);
            if r == ac.paws_reason {
                return false;
            }
        }
    } else if (e.kind == kind::KFREE_SKB || e.kind == kind::KPROBE_TCP_DROP)
        && e.pkt_flags & pkt::TCP_OPTIONS != 0
    {
        // Without drop reasons a PAWS drop cannot be told apart here.
        return false;
    }
    zero(key);
    key.w[0] = e.kind as u64 | (e.pkt_flags as u64) << 32;
    key.w[1] = e.sk_state as u64 | (e.netns as u64) << 32;
    // The record's fields, under the kind's mask.
    let mut any_raw = false;
    let mut i = 0;
    while i < RAW_WORDS {
        let m = ac.raw_mask[k][i];
        if m != 0 {
            any_raw = true;
            key.w[3 + i] = raw_word(e, i) & m;
        }
        i += 1;
    }
    if any_raw && e.raw_len == 0 {
        return false;
    }
    let (pa, pb) = (ac.port_a[k], ac.port_b[k]);
    if pa != Config::ABSENT && pb != Config::ABSENT {
        let be = ac.ports_be & (1 << k) != 0;
        let (Some(a), Some(b)) = (port_at(&e.raw, pa, be), port_at(&e.raw, pb, be)) else {
            return false;
        };
        // The service, where the event says which end it is: a RST's
        // sender; the peer of a socket refused while connecting.
        let err_off = cfg.sk_error_error as usize;
        key.w[2] = if e.kind == kind::TCP_SEND_RESET {
            service_word(a, 6, keep_ports, a, b)
        } else if e.kind == kind::TCP_RECEIVE_RESET && e.sk_state == SYN_SENT {
            service_word(b, 5, keep_ports, a, b)
        } else if e.kind == kind::SK_ERROR_REPORT
            && cfg.sk_error_error != Config::ABSENT
            && err_off + 4 <= RAW_MAX
            && connecting_error(i32::from_ne_bytes([
                e.raw[err_off],
                e.raw[err_off + 1],
                e.raw[err_off + 2],
                e.raw[err_off + 3],
            ]))
        {
            service_word(b, 5, keep_ports, a, b)
        } else {
            ports_word(a, b, keep_ports)
        };
    }
    // The packet's flow: what the daemon's packet parser reads.
    if e.pkt_flags & pkt::NET != 0 {
        let version = headers::ip_version(&e.net);
        let (proto, hdr_len) = if let (4, Some(ip)) = (version, headers::view::<Ipv4Hdr>(&e.net)) {
            // Version and header length, protocol, both addresses.
            key.w[19] = ip.vihl as u64 | (ip.proto as u64) << 8;
            key.w[20] = u32::from_ne_bytes(ip.src_addr) as u64
                | (u32::from_ne_bytes(ip.dst_addr) as u64) << 32;
            (ip.proto, ip.ihl() as u16)
        } else if let (6, Some(ip)) = (version, headers::view::<Ipv6Hdr>(&e.net)) {
            // The first byte, next header, both addresses.
            key.w[19] = ip.vcf[0] as u64 | (ip.next_hdr as u64) << 8;
            key.w[20] = word(&ip.src_addr, 0);
            key.w[21] = word(&ip.src_addr, 8);
            key.w[22] = word(&ip.dst_addr, 0);
            key.w[23] = word(&ip.dst_addr, 8);
            (ip.next_hdr, Ipv6Hdr::LEN as u16)
        } else {
            return false;
        };
        if headers::has_ports(proto) {
            // Only when the transport header copy is the one the daemon
            // reads the ports from.
            let (nh, th) = (e.network_header, e.transport_header);
            if e.pkt_flags & pkt::TRANSPORT == 0
                || nh == 0xffff
                || th == 0xffff
                || (th as u32) < nh as u32 + hdr_len as u32
            {
                return false;
            }
            let Some((a, b)) = headers::ports(&e.transport) else {
                return false;
            };
            let tcp = if proto == IpProto::Tcp as u8 {
                headers::view::<TcpHdr>(&e.transport)
            } else {
                None
            };
            let flags = tcp.map_or(0, headers::tcp_flags);
            // A connection request goes to the service; a segment the reset
            // kprobe answers went to the closed port.
            let to_service = tcp.is_some_and(|t| t.syn() == 1 && t.ack() == 0)
                || e.kind == kind::KPROBE_SEND_RESET;
            let word = if to_service {
                service_word(b, 5, keep_ports, a, b)
            } else {
                ports_word(a, b, keep_ports)
            };
            key.w[2] = word | (flags as u64) << 48;
        }
    }
    let s = &e.sock;
    key.w[24] = s.family as u64 | (s.port as u64) << 16 | (s.state as u64) << 32;
    key.w[25] = word(&s.addr, 0);
    key.w[26] = word(&s.addr, 8);
    key.w[27] = s.ack_backlog as u64 | (s.max_ack_backlog as u64) << 32;
    key.w[28] = s.rcvbuf as u64 | (s.rmem_alloc as u64) << 32;
    true
}
