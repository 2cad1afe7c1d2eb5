//! The daemon's side of in-kernel aggregation (`netprobe_common::agg`).
//!
//! Each CPU's programs count repeats of a record they wrote (same key,
//! inside the window) in a slot of their table instead of writing them.
//! Those repeats are owed to that record. They arrive two ways:
//! - the record that next takes the slot carries the final count of the
//!   generation it ends (`agg_prev`);
//! - once a second the daemon reads every CPU's table.
//!
//! `Credits` remembers, per slot, the aggregated record it handled last and
//! how much of its count it has credited, so each repeat is credited once.
//! A count is credited only when the daemon holds that generation's record;
//! if the record is still queued, its count waits for the next read.

use netprobe_common::{
    agg::{self, sketch::Sketch},
    kind, AggConfig, AggTable, Config, Event, AGG_KINDS, RAW_MAX,
};

use crate::{
    kernel::tracefs::Field,
    pipeline::decode::{Decoded, Layouts},
};

/// How long a CPU counts repeats of one record before the next repeat is
/// written as a record again (carrying the count so far). The counts reach
/// the daemon each second anyway (it reads the tables), so the window only
/// sets how often a flood sends a fresh record: each record that crosses
/// costs the daemon a wakeup. Measured in the 10-minute soak: with 1 s,
/// 154,583 of 3,639,290 events crossed and the main thread used 1.91 s.
pub const WINDOW_NS: u64 = 10_000_000_000;

/// New flows a CPU writes as records of their own in one
/// `agg::CHURN_EPOCH_NS` (100 ms) before new flows count per service: 500
/// a second per CPU. A record that crosses costs the daemon about 4.5 us
/// (BENCHMARKS.md, the distinct-flow storm), so a CPU's storm of new flows
/// costs it at most about 0.2% of a core before it folds.
pub const CHURN_LIMIT: u64 = 50;

/// The kernel programs' `AGG_CONFIG` for the running kernel's formats.
///
/// A kind's key holds every field of its record except the common header
/// (task, flags), kernel object addresses (pointers other than the drop
/// `location`, which is a code address) and socket cookies: a field the
/// daemon does not know yet is kept in the key, which can only make
/// aggregation rarer, never merge events that differ. The two ports are
/// keyed apart, so that the client's ephemeral one can be left out:
/// `sport`/`dport` (host order) or, from 6.10, the port inside the
/// `saddr`/`daddr` sockaddrs (network order). OOM kills are never
/// aggregated.
pub fn build_config(layouts: &Layouts) -> AggConfig {
    let mut c = AggConfig::NONE;
    let formats = [
        (kind::KFREE_SKB, &layouts.kfree_skb),
        (kind::TCP_SEND_RESET, &layouts.send_reset),
        (kind::TCP_RECEIVE_RESET, &layouts.receive_reset),
        (kind::TCP_RETRANSMIT, &layouts.retransmit),
        (kind::SK_ERROR_REPORT, &layouts.sk_error),
    ];
    for (k, fmt) in formats {
        let Some(fmt) = fmt else { continue };
        let k = k as usize;
        c.kinds |= 1 << k;
        for f in &fmt.fields {
            if !keyed(f) {
                continue;
            }
            let sockaddr = (f.name == "saddr" || f.name == "daddr") && f.size == 28;
            for b in f.offset..(f.offset + f.size).min(RAW_MAX) {
                // sin_port and sin6_port: bytes 2 and 3 of either sockaddr.
                if !(sockaddr && (b == f.offset + 2 || b == f.offset + 3)) {
                    c.raw_mask[k][b / 8] |= 0xff << (8 * (b % 8));
                    if !address(f) {
                        c.service_mask[k][b / 8] |= 0xff << (8 * (b % 8));
                    }
                }
            }
        }
        let port = |name: &str| fmt.field(name).filter(|f| f.size == 2);
        let sockaddr = |name: &str| fmt.field(name).filter(|f| f.size == 28);
        if let (Some(a), Some(b)) = (port("sport"), port("dport")) {
            (c.port_a[k], c.port_b[k]) = (a.offset as u32, b.offset as u32);
        } else if let (Some(a), Some(b)) = (sockaddr("saddr"), sockaddr("daddr")) {
            (c.port_a[k], c.port_b[k]) = (a.offset as u32 + 2, b.offset as u32 + 2);
            c.ports_be |= 1 << k;
        }
    }
    // The kprobes' records: the flow is in the packet headers; raw holds
    // the drop's caller (8 bytes) or the listen stage (1 byte).
    for k in [
        kind::KPROBE_SEND_RESET,
        kind::KPROBE_TCP_DROP,
        kind::KPROBE_LISTEN_OVERFLOW,
    ] {
        c.kinds |= 1 << k;
    }
    for (k, mask) in [
        (kind::KPROBE_TCP_DROP, u64::MAX),
        (kind::KPROBE_LISTEN_OVERFLOW, 0xff),
    ] {
        c.raw_mask[k as usize][0] = mask;
        c.service_mask[k as usize][0] = mask;
    }
    c.paws_reason = layouts
        .kfree_skb
        .as_ref()
        .and_then(|f| f.symbol_value("reason", "TCP_RFC7323_PAWS"))
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(Config::ABSENT);
    c
}

// Every kind has its row in AggConfig's tables.
const _: () = assert!(AGG_KINDS > kind::SK_ERROR_REPORT as usize);

/// Whether a field of a record is part of its aggregation key.
fn keyed(f: &Field) -> bool {
    let pointer = f.decl.contains('*');
    !(f.name.starts_with("common_")
        || (pointer && f.name != "location")
        || f.name.ends_with("cookie")
        || f.name == "sport"
        || f.name == "dport")
}

/// Whether a keyed field is an address (left out of a per-service key):
/// `saddr`, `daddr` and their `_v6` forms, sockaddrs included.
fn address(f: &Field) -> bool {
    matches!(f.name.as_str(), "saddr" | "daddr" | "saddr_v6" | "daddr_v6")
}

/// How many distinct flows `sketch` (`agg::sketch`: 24 HyperLogLog
/// registers) has seen: the standard estimate, with linear counting while
/// it is small. One standard error is about 21%.
pub fn distinct_estimate(sketch: &Sketch) -> u64 {
    use netprobe_common::agg::sketch::{register, REGISTERS};
    let m = REGISTERS as f64;
    let regs = (0..REGISTERS).map(|i| register(sketch, i));
    let zeros = regs.clone().filter(|&r| r == 0).count() as f64;
    let sum: f64 = regs.map(|r| 2f64.powi(-(r as i32))).sum();
    let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
    let e = if raw <= 2.5 * m && zeros > 0.0 {
        m * (m / zeros).ln()
    } else {
        raw
    };
    e.round() as u64
}

/// Repeats owed to an earlier record.
#[derive(Debug, PartialEq, Eq)]
pub struct Credit<'a> {
    /// The record they repeat; `None` when it was not handled (it could
    /// not be decoded, or was still queued at exit): the repeats are then
    /// lost with it, and counted so.
    pub of: Option<&'a Decoded>,
    pub times: u64,
    /// When the last of them happened (`bpf_ktime_get_ns`).
    pub last_ns: u64,
    /// A per-service record's: the distinct flows its slot has counted so
    /// far (`agg::sketch`), 0 otherwise.
    pub sketch: Sketch,
}

/// What the daemon knows of one slot of one CPU's table (24 bytes while
/// it holds no record: a table per CPU is 12 KiB).
#[derive(Default)]
struct Slot {
    gen: u64,
    credited: u64,
    last: Option<Box<Decoded>>,
}

#[derive(Default)]
pub struct Credits {
    /// By CPU, then slot (`agg::ALL_SLOTS` per CPU).
    slots: Vec<Slot>,
    /// Repeats credited so far, in all.
    pub total: u64,
    /// Records the kernel wrote per service and per peer, in all
    /// (`AggTable`'s, as last read).
    pub per_service_records: u64,
    pub per_peer_records: u64,
}

impl Credits {
    fn slot(&mut self, cpu: u32, slot: u32) -> Option<&mut Slot> {
        // Bounds: a slot index from the kernel, CPUs as Linux numbers them.
        if slot as usize >= agg::ALL_SLOTS || cpu >= 1 << 16 {
            return None;
        }
        let i = cpu as usize * agg::ALL_SLOTS + slot as usize;
        if self.slots.len() <= i {
            self.slots
                .resize_with((cpu as usize + 1) * agg::ALL_SLOTS, Slot::default);
        }
        self.slots.get_mut(i)
    }

    /// What `state` (a slot's generation and count) owes beyond what was
    /// credited, when the daemon holds that generation's record.
    fn owed(
        &mut self,
        cpu: u32,
        slot: u32,
        state: u64,
        last_ns: u64,
        sketch: Sketch,
    ) -> Option<Credit<'_>> {
        let (gen, count) = agg::split(state);
        let s = self.slot(cpu, slot)?;
        if gen == 0 || gen != s.gen || count <= s.credited {
            return None;
        }
        let times = count - s.credited;
        s.credited = count;
        self.total += times;
        let s = self.slot(cpu, slot)?;
        Some(Credit {
            of: s.last.as_deref(),
            times,
            last_ns,
            sketch,
        })
    }

    /// Before handling `e`: the final count of the generation it ended in
    /// its slot, if any is still owed.
    pub fn ended_by(&mut self, e: &Event) -> Option<Credit<'_>> {
        if e.agg_gen == 0 || e.agg_prev == 0 {
            return None;
        }
        self.owed(
            e.cpu,
            e.agg_slot,
            e.agg_prev,
            e.agg_prev_last_ns,
            e.agg_prev_sketch,
        )
    }

    /// After handling `e` (decoded as `d`): it is its slot's generation now.
    pub fn started_by(&mut self, e: &Event, d: Option<Decoded>) {
        if e.agg_gen == 0 {
            return;
        }
        if let Some(s) = self.slot(e.cpu, e.agg_slot) {
            *s = Slot {
                gen: e.agg_gen as u64,
                credited: 0,
                last: d.map(Box::new),
            };
        }
    }

    /// One CPU's table as read from the kernel at `now_ns`
    /// (CLOCK_MONOTONIC): calls `credit` for what each slot owes, and
    /// forgets the records of slots whose window has passed and whose
    /// count is all credited (the kernel counts no more repeats of them).
    pub fn read_table(
        &mut self,
        cpu: u32,
        t: &AggTable,
        now_ns: u64,
        mut credit: impl FnMut(Credit<'_>),
    ) {
        for i in 0..agg::ALL_SLOTS {
            if let Some(c) = self.owed(cpu, i as u32, t.state[i], t.last_ns[i], t.sketch[i]) {
                credit(c);
            }
            let (gen, count) = agg::split(t.state[i]);
            let done = now_ns.saturating_sub(t.first_ns[i]) > 2 * WINDOW_NS;
            if let Some(s) = self.slot(cpu, i as u32) {
                if s.last.is_some() && s.gen == gen && s.credited == count && done {
                    s.last = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::symptoms::SocketEvent;
    use crate::pipeline::decode::KernelEvent;

    /// Which bytes of `raw` kind `k`'s mask keeps.
    fn kept(c: &AggConfig, k: u32) -> Vec<usize> {
        (0..RAW_MAX)
            .filter(|b| c.raw_mask[k as usize][b / 8] >> (8 * (b % 8)) & 0xff == 0xff)
            .collect()
    }

    #[test]
    fn keys_from_real_formats() {
        use crate::pipeline::decode::test_layouts;
        let c = build_config(&test_layouts("6.18"));
        assert_eq!(c.kinds & 1 << kind::OOM_MARK_VICTIM, 0);
        // kfree_skb: location, protocol, reason; not skbaddr, rx_sk.
        let drop = kept(&c, kind::KFREE_SKB);
        assert_eq!(
            drop,
            [16..24, 32..34, 36..40]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            c.paws_reason as u64,
            test_layouts("6.18")
                .kfree_skb
                .unwrap()
                .symbol_value("reason", "TCP_RFC7323_PAWS")
                .unwrap()
        );
        // tcp_send_reset (6.10+): state, reason, the sockaddrs but their
        // ports, which are keyed apart (network order).
        let k = kind::TCP_SEND_RESET;
        let mut want: Vec<usize> = (24..88).collect();
        want.retain(|b| ![34, 35, 62, 63].contains(b));
        assert_eq!(kept(&c, k), want);
        assert_eq!((c.port_a[k as usize], c.port_b[k as usize]), (34, 62));
        assert_ne!(c.ports_be & 1 << k, 0);
        // tcp_receive_reset: no skaddr, ports or sock_cookie.
        let k = kind::TCP_RECEIVE_RESET;
        assert_eq!(kept(&c, k), (20..62).collect::<Vec<_>>());
        assert_eq!((c.port_a[k as usize], c.port_b[k as usize]), (16, 18));
        assert_eq!(c.ports_be & 1 << k, 0);
        // Before drop reasons: no PAWS value; the daemon keys by location.
        let old = build_config(&test_layouts("5.10"));
        assert_eq!(old.paws_reason, Config::ABSENT);
        assert_eq!(
            kept(&old, kind::KPROBE_TCP_DROP),
            (0..8).collect::<Vec<_>>()
        );
        let k = kind::TCP_SEND_RESET as usize;
        assert_eq!(old.ports_be & 1 << k, 0);
        assert_ne!(old.port_a[k], Config::ABSENT);
    }

    fn state(gen: u64, count: u64) -> u64 {
        gen << agg::COUNT_BITS | count
    }

    fn event(cpu: u32, slot: u32, gen: u32, prev: u64) -> Event {
        // SAFETY: Event is plain data; all zeroes is a valid value.
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.cpu = cpu;
        e.agg_slot = slot;
        e.agg_gen = gen;
        e.agg_prev = prev;
        e.agg_prev_last_ns = 99;
        e
    }

    fn decoded(ts: u64) -> Decoded {
        Decoded {
            ts_ns: ts,
            pid: 1,
            comm: b"x".to_vec(),
            netns: None,
            fold: Default::default(),
            event: KernelEvent::Retransmit(SocketEvent {
                flow: None,
                state: None,
                errno: None,
            }),
        }
    }

    /// A table whose slot `i` holds `st` (first seen at 0, last at `last`).
    fn table(i: usize, st: u64, last: u64) -> Box<AggTable> {
        let mut t = Box::new(AggTable {
            state: [0; agg::ALL_SLOTS],
            first_ns: [0; agg::ALL_SLOTS],
            last_ns: [0; agg::ALL_SLOTS],
            sketch: [[0; 2]; agg::ALL_SLOTS],
            churn_epoch_ns: 0,
            churn_new: 0,
            churn_hot: 0,
            churn_services: 0,
            services_hot: 0,
            per_service_records: 0,
            per_peer_records: 0,
            sketch_seed: 0,
        });
        t.state[i] = st;
        t.last_ns[i] = last;
        t
    }

    /// Reads `t` as CPU `cpu`'s table: (record time, times, last) owed.
    fn read(c: &mut Credits, cpu: u32, t: &AggTable, now: u64) -> Vec<(Option<u64>, u64, u64)> {
        let mut got = Vec::new();
        c.read_table(cpu, t, now, |cr| {
            got.push((cr.of.map(|d| d.ts_ns), cr.times, cr.last_ns))
        });
        got
    }

    #[test]
    fn each_repeat_is_credited_once() {
        let mut c = Credits::default();
        let first = event(1, 17, 7, 0);
        assert_eq!(c.ended_by(&first), None);
        c.started_by(&first, Some(decoded(10)));
        // The table says 5 so far, then 8: 5, then 3 more.
        assert_eq!(
            read(&mut c, 1, &table(17, state(7, 5), 50), 60),
            [(Some(10), 5, 50)]
        );
        assert_eq!(
            read(&mut c, 1, &table(17, state(7, 8), 80), 90),
            [(Some(10), 3, 80)]
        );
        // Another CPU's slot 17 is another slot.
        assert_eq!(read(&mut c, 0, &table(17, state(7, 8), 80), 90), []);
        // The record that next takes the slot ends generation 7 at 10.
        let next = event(1, 17, 8, state(7, 10));
        let cr = c.ended_by(&next).unwrap();
        assert_eq!(
            (cr.of.map(|d| d.ts_ns), cr.times, cr.last_ns),
            (Some(10), 2, 99)
        );
        c.started_by(&next, Some(decoded(20)));
        // A late read of the old generation owes nothing.
        assert_eq!(read(&mut c, 1, &table(17, state(7, 10), 1), 90), []);
        assert_eq!(c.total, 10);
    }

    #[test]
    fn a_generation_not_yet_handled_waits() {
        let mut c = Credits::default();
        c.started_by(&event(0, 3, 3, 0), Some(decoded(1)));
        // The slot already holds generation 4, whose record is still queued.
        assert_eq!(read(&mut c, 0, &table(3, state(4, 6), 9), 10), []);
        // Its record ends generation 3 with no repeats; 4's count then
        // comes with the next read.
        let second = event(0, 3, 4, state(3, 0));
        assert_eq!(c.ended_by(&second), None);
        c.started_by(&second, Some(decoded(2)));
        assert_eq!(
            read(&mut c, 0, &table(3, state(4, 6), 9), 10),
            [(Some(2), 6, 9)]
        );
    }

    #[test]
    fn undecodable_records_are_owed_as_such_and_unaggregated_ones_pass() {
        let mut c = Credits::default();
        c.started_by(&event(0, 0, 1, 0), None);
        let cr = c.ended_by(&event(0, 0, 2, state(1, 4))).unwrap();
        assert_eq!((cr.of, cr.times), (None, 4));
        // A record outside aggregation changes nothing.
        let plain = event(0, 0, 0, 0);
        assert_eq!(c.ended_by(&plain), None);
        c.started_by(&plain, Some(decoded(5)));
        // Out-of-range slots from a bad record are ignored.
        assert_eq!(c.ended_by(&event(0, 9999, 2, state(1, 4))), None);
    }

    /// splitmix64: distinct, well-mixed keys' hashes.
    fn mixed(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn the_sketch_estimates_distinct_flows_within_a_factor_of_two() {
        use netprobe_common::agg::sketch;
        assert_eq!(distinct_estimate(&[0; 2]), 0);
        for n in [1u64, 10, 100, 10_000, 600_000, 5_000_000] {
            // Spread over 8 slots' sketches, each flow seen three times,
            // then merged as the daemon merges them.
            let mut parts = [[0u64; 2]; 8];
            for i in 0..n {
                for _ in 0..3 {
                    sketch::add(&mut parts[(i % 8) as usize], mixed(i));
                }
            }
            let all = parts.iter().fold([0; 2], |a, b| sketch::merge(&a, b));
            let e = distinct_estimate(&all) as f64;
            let r = e / n as f64;
            assert!((0.5..=2.0).contains(&r), "{n} flows estimated as {e}");
        }
    }

    #[test]
    fn an_idle_slot_is_small() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn records_of_finished_slots_are_forgotten() {
        let mut c = Credits::default();
        c.started_by(&event(0, 5, 1, 0), Some(decoded(1)));
        let t = table(5, state(1, 3), 7);
        assert_eq!(read(&mut c, 0, &t, 100), [(Some(1), 3, 7)]);
        assert!(c.slots[5].last.is_some(), "inside the window");
        assert_eq!(read(&mut c, 0, &t, 3 * WINDOW_NS), []);
        assert!(c.slots[5].last.is_none(), "window passed, all credited");
    }
}
