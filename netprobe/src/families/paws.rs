//! TCP timestamp (PAWS) rejections, the tw_recycle family: the PAWS
//! counters of each namespace, and the NAT clocks the PAWS drops show.
//! Counter-derived (the drops themselves come through the drop family).

use crate::families::Counters;

use crate::kernel::netns::Snapshot;
use crate::pipeline::counters::{counter_record, delta, evidence, listing, moved_of};
use crate::pipeline::record::Record;

use serde_json::Value;

use super::{
    catalogue::{Entry, Severity},
    m, Mode,
};

pub const TW_RECYCLE: Mode = m("tw_recycle", "tw_recycle");

/// The TCP timestamp clocks seen per source address among PAWS
/// rejections: clients behind one NAT address each have their own clock
/// (an offset from real time), so rejected SYNs from one address whose
/// TSvals sit far apart come from several machines.
#[derive(Default)]
pub struct NatClocks {
    by_addr: std::collections::HashMap<String, Vec<i64>>,
}

/// Offsets closer than this are one clock (TSvals tick in ms on Linux).
const CLOCK_APART_MS: i64 = 60_000;

const CLOCK_ADDRS_MAX: usize = 4096;

const CLOCKS_MAX: usize = 16;

impl NatClocks {
    /// Notes a rejected TSval from `addr` at `now_ms`; returns how many
    /// distinct clocks that address has shown.
    pub fn observe(&mut self, addr: &str, tsval: u32, now_ms: i64) -> usize {
        if !self.by_addr.contains_key(addr) && self.by_addr.len() >= CLOCK_ADDRS_MAX {
            return 1;
        }
        let offset = i64::from(tsval) - now_ms;
        let clocks = self.by_addr.entry(addr.to_string()).or_default();
        match clocks
            .iter()
            .position(|c| (*c - offset).abs() < CLOCK_APART_MS)
        {
            Some(i) => clocks[i] = offset,
            None if clocks.len() < CLOCKS_MAX => clocks.push(offset),
            None => {}
        }
        clocks.len()
    }

    /// Adds the clock count to a PAWS drop record that carries its TSval,
    /// and says so when rejected SYNs from one address show several.
    pub fn annotate(&mut self, r: &mut Record, now_ms: i64) {
        if r.mode != Some("tw_recycle") {
            return;
        }
        let tsval = r
            .evidence
            .as_ref()
            .and_then(|e| e.get("tsval"))
            .and_then(Value::as_u64);
        let (Some(tsval), Some(addr)) = (tsval, r.saddr.clone()) else {
            return;
        };
        let clocks = self.observe(&addr, tsval as u32, now_ms);
        r.evidence("timestamp_clocks", clocks);
        if clocks > 1 && r.tcp_flags.as_deref() == Some("SYN") {
            r.message.push_str(&format!(
                "; {clocks} different timestamp clocks in SYNs from {addr}: clients behind NAT"
            ));
        }
    }
}

/// The timestamp-rejection counters (`PAWS`'s kernel names).
pub const COUNTERS: Counters = Counters {
    triggers: &[
        "TcpExt.PAWSPassive",
        "TcpExt.PAWSActive",
        "TcpExt.PAWSEstab",
        "TcpExt.PAWSTimewait",
    ],
    evidence: &["TcpExt.ListenDrops"],
    read: from_counters,
};

/// The timestamp-rejection counters that moved.
pub fn from_counters(netns: u64, prev: &Snapshot, cur: &Snapshot, out: &mut Vec<Record>) {
    let moved = moved_of(&PAWS, prev, cur);
    if !moved.is_empty() {
        out.push(paws_record(netns, prev, cur, &moved));
    }
}

/// The timestamp-rejection counters, and their names in records.
pub const PAWS: [(&str, &str); 4] = [
    ("TcpExt.PAWSPassive", "PAWSPassive"),
    ("TcpExt.PAWSActive", "PAWSActive"),
    ("TcpExt.PAWSEstab", "PAWSEstab"),
    ("TcpExt.PAWSTimewait", "PAWSTimewait"),
];

/// PAWS rejections: segments (or SYNs, PAWSPassive) whose TCP timestamp is
/// older than the one the kernel remembers. With tcp_tw_recycle=1 (kernels
/// before 4.12) PAWSPassive rising with ListenDrops is the NAT incident.
pub fn paws_record(
    netns: u64,
    prev: &Snapshot,
    cur: &Snapshot,
    moved: &[(&'static str, u64)],
) -> Record {
    let mut r = counter_record("drop", Some(netns), TW_RECYCLE);
    for &(name, d) in moved {
        evidence(&mut r, &[(name, d.into())]);
    }
    let listen_drops = delta(prev, cur, "TcpExt.ListenDrops");
    if listen_drops > 0 {
        evidence(&mut r, &[("ListenDrops", listen_drops.into())]);
    }
    for (name, v) in [
        ("tcp_timestamps", cur.timestamps),
        ("tcp_tw_recycle", cur.tw_recycle),
    ] {
        if let Some(v) = v {
            evidence(&mut r, &[(name, v.into())]);
        }
    }
    let (total, what) = listing(moved);
    let passive = delta(prev, cur, "TcpExt.PAWSPassive");
    // The NAT signature: every SYN rejected by timestamp is a dropped SYN.
    let in_step = if passive > 0 && passive == listen_drops {
        format!(
            "; ListenDrops +{listen_drops} in step: SYNs of clients behind NAT (one address, \
             several timestamp clocks) are dropped"
        )
    } else {
        String::new()
    };
    let recycle = match cur.tw_recycle {
        Some(1) => "; tcp_tw_recycle=1 is on".to_string(),
        Some(_) => "; tcp_tw_recycle is off".to_string(),
        None => String::new(),
    };
    r.message = format!(
        "the kernel rejected {total} segment(s) by TCP timestamp (PAWS) in netns {netns}: \
         {what}{in_step}{recycle}"
    );
    if cur.tw_recycle == Some(1) {
        r.advice = Some(
            "Set net.ipv4.tcp_tw_recycle=0: with it on, clients behind one NAT address whose \
             clocks differ have their SYNs dropped silently."
                .into(),
        );
    }
    r
}

/// The catalogue entries of this family's modes.
pub const ENTRIES: &[Entry] = &[Entry {
    mode: TW_RECYCLE,
    severity: Severity::Warning,
    title: "TCP timestamp (PAWS) rejection",
    meaning: "A segment carried a TCP timestamp older than the last one the kernel saw on its \
                  connection or from its peer, and was dropped (PAWS, RFC 7323). Behind NAT many \
                  clients share one address with different timestamp clocks; with \
                  net.ipv4.tcp_tw_recycle=1 (kernels before 4.12) their SYNs are dropped \
                  silently, and the clients only see connect timeouts.",
    detection: "Drop reasons TCP_RFC7323_PAWS, _PAWS_ACK, _TW_PAWS and _TSECR (5.17+); the \
                    PAWSPassive, PAWSActive, PAWSEstab and PAWSTimewait counters of each network \
                    namespace, with tcp_timestamps and tcp_tw_recycle.",
    advice: "Set net.ipv4.tcp_tw_recycle=0 where it exists (4.11 and older). Look for NAT or a \
                 load balancer in front of this host that mixes clients with different timestamp \
                 clocks; turning TCP timestamps off on those clients is the last resort.",
    reasons: &[
        "TCP_RFC7323_PAWS",
        "TCP_RFC7323_PAWS_ACK",
        "TCP_RFC7323_TW_PAWS",
        "TCP_RFC7323_TSECR",
    ],
    locations: &[],
    counters: &["PAWSPassive", "PAWSActive", "PAWSEstab", "PAWSTimewait"],
}];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::Record;

    #[test]
    fn nat_clocks_count_distinct_offsets_per_address() {
        let mut c = NatClocks::default();
        let now = 1_000_000_000;
        assert_eq!(c.observe("10.0.3.7", 5_000, now), 1);
        // The same clock a second later.
        assert_eq!(c.observe("10.0.3.7", 6_000, now + 1_000), 1);
        // Two more machines behind the same address, hours apart.
        assert_eq!(c.observe("10.0.3.7", 9_000_000, now + 1_000), 2);
        assert_eq!(c.observe("10.0.3.7", 400_000_000, now + 2_000), 3);
        assert_eq!(c.observe("10.0.3.8", 5_000, now), 1);
        let mut r = Record {
            kind: "drop",
            message: "dropped TCP 10.0.3.7:40000 -> 10.0.0.5:80 (SYN)".into(),
            saddr: Some("10.0.3.7".into()),
            tcp_flags: Some("SYN".into()),
            ..Record::default()
        };
        r.set_mode(TW_RECYCLE);
        r.evidence("tsval", 77_777_777);
        c.annotate(&mut r, now + 3_000);
        assert_eq!(r.evidence.as_ref().unwrap()["timestamp_clocks"], 4);
        assert!(
            r.message.ends_with(
                "; 4 different timestamp clocks in SYNs from 10.0.3.7: clients behind NAT"
            ),
            "{}",
            r.message
        );
    }
}
