//! Incidents: events of one mode and one flow (or one listener) inside a
//! window fold into one record. The first event is written in full as it
//! happens; the repeats are counted, and when the window closes an
//! `incident` record says how many there were, from when to when, with the
//! first event's flow, evidence and advice (design.md: floods fold, nothing
//! is dropped silently).

use crate::families::drop::DropMark;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    pipeline::decode::{Decoded, KernelEvent, Sock},
    pipeline::packet::Flow,
    pipeline::record::Record,
};

/// What makes two events "the same": the kind and mode, the protocol, both
/// addresses and the service port (the lower of the two ports: the
/// client's ephemeral port changes with every connection), or the listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Made from counters (their records fold among themselves).
    counters: bool,
    kind: &'static str,
    mode: &'static str,
    proto: Option<String>,
    a: Option<String>,
    b: Option<String>,
    port: Option<u16>,
    netns: Option<u64>,
}

impl Key {
    /// Records with a mode fold: about kernel events, and made from
    /// counters (apart from the events'); probe and housekeeping records,
    /// and OOM kills (each is a victim), do not.
    fn of(r: &Record) -> Option<Key> {
        let mode = r.mode?;
        if r.kind == "incident" || r.kind == "oom" {
            return None;
        }
        let (a, b, port) = match (&r.addr, r.port) {
            (Some(addr), Some(port)) => (Some(addr.clone()), None, Some(port)),
            _ => (
                r.saddr.clone(),
                r.daddr.clone(),
                match (r.sport, r.dport) {
                    (Some(s), Some(d)) => Some(s.min(d)),
                    (s, d) => s.or(d),
                },
            ),
        };
        Some(Key {
            counters: r.evidence_source() == Some("counters"),
            kind: r.kind,
            mode,
            proto: r.proto.clone(),
            a,
            b,
            port,
            netns: r.netns,
        })
    }
}

struct Open {
    first: Record,
    opened: Instant,
    count: u64,
    last_ts: String,
    /// A later repeat counted by `repeat`: its wall-clock time, formatted
    /// only when the incident is written.
    last_ns: Option<i128>,
    /// Per service (or per peer): what the kernel counted of the distinct
    /// sources (or services) (`agg::sketch`), and those its records named,
    /// with how many named each.
    sketch: netprobe_common::agg::sketch::Sketch,
    sample: Option<Sample>,
}

/// What a per-service or per-peer incident names a sample of.
struct Sample {
    /// Its evidence: "sources" or "ports".
    of: &'static str,
    seen: Vec<(String, u64)>,
    /// Sources: whether the peer is the flows' source (true) or their
    /// destination, when a per-service record has told.
    peer_src: Option<bool>,
}

/// Sources (or ports) an incident keeps count of, and names.
const SAMPLE_KEPT: usize = 64;
const SAMPLE_NAMED: usize = 8;

/// The evidence a per-service record names its source in, and a per-peer
/// record its port; with the incident's estimate of how many, and the
/// words for its message.
const SAMPLES: [(&str, &str, &str); 2] = [
    (
        "sources",
        "distinct_sources",
        "from about {} distinct sources",
    ),
    ("ports", "distinct_ports", "to about {} distinct ports"),
];

impl Open {
    /// Counts what `r` names: a per-service or per-peer record's sample;
    /// once the incident has a sample of sources, the peer of each record
    /// of a single flow that folds into it too (the incident's first among
    /// them: a storm's first flows cross one by one before it folds per
    /// service).
    fn note_sample(&mut self, r: &Record) {
        let ev = r.evidence.as_ref();
        for (of, _, _) in SAMPLES {
            let Some(list) = ev.and_then(|e| e.get(of)).and_then(|v| v.as_array()) else {
                continue;
            };
            if self.sample.is_none() {
                // The side a per-service record left out is the peer's.
                let peer_src = (of == "sources")
                    .then(|| {
                        if r.saddr.is_none() && self.first.saddr.is_some() {
                            Some(true)
                        } else if r.daddr.is_none() && self.first.daddr.is_some() {
                            Some(false)
                        } else {
                            None
                        }
                    })
                    .flatten();
                let mut sample = Sample {
                    of,
                    seen: Vec::new(),
                    peer_src,
                };
                if let Some(a) = sample.peer_of(&self.first) {
                    let a = a.clone();
                    sample.note(&a);
                }
                self.sample = Some(sample);
            }
            let Some(sample) = self.sample.as_mut().filter(|s| s.of == of) else {
                continue;
            };
            for a in list.iter().filter_map(|v| v.as_str()) {
                sample.note(a);
            }
            return;
        }
        // A record of one flow: its peer, where the sample names sources.
        if let Some(sample) = self.sample.as_mut() {
            if let Some(a) = sample.peer_of(r) {
                let a = a.clone();
                sample.note(&a);
            }
        }
    }
}

impl Sample {
    fn note(&mut self, a: &str) {
        if let Some((_, n)) = self.seen.iter_mut().find(|(s, _)| s == a) {
            *n += 1;
        } else if self.seen.len() < SAMPLE_KEPT {
            self.seen.push((a.to_string(), 1));
        }
    }

    /// The peer's address in a record of one flow, where the sample names
    /// sources and it is known which side is the peer.
    fn peer_of<'r>(&self, r: &'r Record) -> Option<&'r String> {
        match self.peer_src? {
            true => r.saddr.as_ref(),
            false => r.daddr.as_ref(),
        }
    }
}

pub struct Folder {
    window: Duration,
    open: HashMap<Key, Open>,
    /// Beyond this many open incidents, new ones are written unfolded.
    max_open: usize,
    /// Events already folded, by everything their record is built from: an
    /// identical event is counted into its incident without building a
    /// record (a flood costs a lookup per event).
    shortcuts: HashMap<RepeatKey, Key>,
}

/// Everything a drop's, reset's or socket error's record is made of, apart
/// from when it happened, the task that happened to run and (unless ports
/// are filtered) the client's ephemeral port: what the incident of the
/// first such event would fold anyway (its key keeps the lower port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    kind: u8,
    reason: Option<u64>,
    location: u64,
    flow: Option<Flow>,
    mark: Option<DropMark>,
    tcp_drop: bool,
    sock: Option<Sock>,
    state: Option<i64>,
    no_socket: bool,
    errno: Option<i64>,
    netns: Option<u64>,
}

impl RepeatKey {
    /// None for retransmits, OOM kills and listen overflows, which take
    /// other paths. A segment's TCP timestamp is left out: only a tw_recycle
    /// record shows it, and those never take the shortcut (`offer_keyed`).
    /// `exact_ports` keeps both ports (a port filter looks at either).
    pub fn of(d: &Decoded, exact_ports: bool) -> Option<RepeatKey> {
        use crate::pipeline::service;
        let side = service::side(d);
        use crate::pipeline::decode::Fold;
        let flow = |f: &Option<Flow>| {
            f.map(|f| match d.fold {
                Fold::Service => service::per_service(f, side),
                Fold::Peer => service::per_peer(f),
                Fold::Flow if exact_ports => f,
                Fold::Flow => service::without_client_port(f, side),
            })
        };
        let blank = RepeatKey {
            kind: 0,
            reason: None,
            location: 0,
            flow: None,
            mark: None,
            tcp_drop: false,
            sock: None,
            state: None,
            no_socket: false,
            errno: None,
            netns: d.netns,
        };
        Some(match &d.event {
            KernelEvent::Drop(e) => RepeatKey {
                kind: 1,
                reason: e.reason.as_ref().map(|r| r.value),
                location: e.location,
                flow: flow(&e.flow),
                mark: e.mark,
                tcp_drop: e.tcp_drop,
                sock: if d.fold == crate::pipeline::decode::Fold::Peer {
                    None
                } else {
                    e.sock
                },
                ..blank
            },
            KernelEvent::ResetSent(e) | KernelEvent::ResetReceived(e) => RepeatKey {
                kind: if matches!(d.event, KernelEvent::ResetSent(_)) {
                    2
                } else {
                    3
                },
                reason: e.reason.as_ref().map(|r| r.value),
                flow: flow(&e.flow),
                state: e.state,
                no_socket: e.no_socket,
                ..blank
            },
            KernelEvent::SocketError(e) => RepeatKey {
                kind: 4,
                flow: flow(&e.flow),
                state: e.state,
                errno: e.errno,
                ..blank
            },
            _ => return None,
        })
    }
}

impl Folder {
    pub fn new(window: Duration) -> Folder {
        Folder {
            window,
            open: HashMap::new(),
            max_open: 4096,
            shortcuts: HashMap::new(),
        }
    }

    /// Counts `times` events identical to one already folded into an open
    /// incident, and returns that incident's first record; `None` when
    /// there is none (build its record and `offer` it).
    /// `sketch`: the distinct flows of a per-service repeat (0 otherwise).
    pub fn repeat(
        &mut self,
        raw: &RepeatKey,
        times: u64,
        wall_ns: i128,
        sketch: netprobe_common::agg::sketch::Sketch,
    ) -> Option<&Record> {
        let key = self.shortcuts.get(raw)?;
        if !self.open.contains_key(key) {
            self.shortcuts.remove(raw);
            return None;
        }
        let o = self.open.get_mut(key)?;
        o.count += times;
        o.last_ns = Some(wall_ns);
        o.sketch = netprobe_common::agg::sketch::merge(&o.sketch, &sketch);
        Some(&o.first)
    }

    /// `offer_times`, remembering `raw` for `repeat` while the record's
    /// incident is open. Not for tw_recycle: each rejected segment's
    /// timestamp feeds the count of clocks per address (clients behind NAT).
    pub fn offer_keyed(
        &mut self,
        raw: Option<RepeatKey>,
        r: &Record,
        now: Instant,
        times: u64,
        sketch: netprobe_common::agg::sketch::Sketch,
    ) -> Option<u64> {
        let write = self.offer_times(r, now, times);
        let raw = raw.filter(|_| r.mode != Some(crate::families::paws::TW_RECYCLE.mode));
        if let Some(key) = Key::of(r) {
            if let Some(o) = self.open.get_mut(&key) {
                o.sketch = netprobe_common::agg::sketch::merge(&o.sketch, &sketch);
                if let Some(raw) = raw.filter(|_| self.shortcuts.len() < 4 * self.max_open) {
                    self.shortcuts.insert(raw, key);
                }
            }
        }
        write
    }

    /// No folding at all (`--every-event`): every record is written.
    pub fn unfolded() -> Folder {
        Folder {
            max_open: 0,
            ..Folder::new(Duration::from_secs(1))
        }
    }

    /// Forgets every shortcut (the filter changed: what was admitted may
    /// not be now).
    pub fn forget_shortcuts(&mut self) {
        self.shortcuts.clear();
    }

    /// A new window, for incidents opened from now on (a config reload).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Whether `r` is to be written now: the first of its kind in a window
    /// (or one that does not fold); a repeat is counted instead.
    pub fn offer(&mut self, r: &Record, now: Instant) -> bool {
        self.offer_times(r, now, 1).is_some()
    }

    /// `offer` for `r` and `times - 1` repeats of it (counted in the
    /// kernel): `Some(n)` when `r` is to be written, standing for `n`
    /// events (more than 1 only when it cannot fold), `None` when it folded.
    pub fn offer_times(&mut self, r: &Record, now: Instant, times: u64) -> Option<u64> {
        let Some(key) = Key::of(r) else {
            return Some(times);
        };
        if let Some(o) = self.open.get_mut(&key) {
            o.count += times;
            o.last_ts.clone_from(&r.ts);
            o.last_ns = None;
            o.note_sample(r);
            // The incident shows the worst figure of each piece of
            // evidence, and the sum of each counter's deltas.
            let counters = key.counters;
            if let (Some(first), Some(new)) = (o.first.evidence.as_mut(), &r.evidence) {
                for (k, v) in new {
                    let (old, n) = (first.get(k).and_then(|x| x.as_u64()), v.as_u64());
                    match (old, n) {
                        (Some(old), Some(n))
                            if counters && crate::pipeline::counters::is_delta(k) =>
                        {
                            first.insert(k, old.saturating_add(n).into());
                        }
                        (Some(old), Some(n)) if n > old => {
                            first.insert(k, v.clone());
                        }
                        (None, Some(_)) if counters => {
                            first.insert(k, v.clone());
                        }
                        _ => {}
                    }
                }
            }
            return None;
        }
        if self.open.len() < self.max_open {
            let mut o = Open {
                first: r.clone(),
                opened: now,
                count: times,
                last_ts: r.ts.clone(),
                last_ns: None,
                sketch: [0; 2],
                sample: None,
            };
            o.note_sample(r);
            self.open.insert(key, o);
            return Some(1);
        }
        Some(times)
    }

    /// The incidents whose window has closed by `now` (those with repeats).
    pub fn closed(&mut self, now: Instant) -> Vec<Record> {
        let window = self.window;
        let done: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, o)| now.duration_since(o.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<(Instant, Record)> = done
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .filter(|o| o.count > 1)
            .map(|o| (o.opened, incident(o)))
            .collect();
        let open = &self.open;
        self.shortcuts.retain(|_, k| open.contains_key(k));
        out.sort_by_key(|(at, _)| *at);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Every open incident with repeats, at shutdown.
    pub fn flush(&mut self) -> Vec<Record> {
        self.closed(Instant::now() + self.window)
    }
}

fn incident(mut o: Open) -> Record {
    let mut sources = String::new();
    if let Some(mut sample) = o.sample.take() {
        // The most named first; the estimate is never below those named.
        sample.seen.sort_by_key(|s| std::cmp::Reverse(s.1));
        let named: Vec<String> = sample
            .seen
            .iter()
            .take(SAMPLE_NAMED)
            .map(|(a, _)| a.clone())
            .collect();
        let distinct =
            crate::pipeline::kagg::distinct_estimate(&o.sketch).max(sample.seen.len() as u64);
        if let Some((of, estimate, words)) = SAMPLES.into_iter().find(|(of, ..)| *of == sample.of) {
            sources = format!(
                ", {} (among them {})",
                words.replace("{}", &distinct.to_string()),
                named.join(", ")
            );
            o.first.evidence(of, named);
            o.first.evidence(estimate, distinct);
        }
    }
    let f = o.first;
    let last_ts = o
        .last_ns
        .map_or(o.last_ts, crate::pipeline::timefmt::rfc3339);
    Record {
        ts: last_ts.clone(),
        kind: "incident",
        message: format!(
            "{} times between {} and {}{sources}: {}",
            o.count, f.ts, last_ts, f.message
        ),
        count: Some(o.count),
        event: Some(f.kind),
        first: Some(f.ts.clone()),
        last: Some(last_ts),
        // The first event's diagnosis, flow and evidence.
        location: None,
        tcp_flags: None,
        ..f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{self, drop::DropEvent, symptoms::SocketEvent};

    fn drop_to(sport: u16, dport: u16, ts: &str) -> Record {
        let mut r = Record {
            ts: ts.into(),
            kind: "drop",
            message: format!("dropped UDP 127.0.0.1:{sport} -> 127.0.0.1:{dport}"),
            proto: Some("udp".into()),
            saddr: Some("127.0.0.1".into()),
            daddr: Some("127.0.0.1".into()),
            sport: Some(sport),
            dport: Some(dport),
            ..Record::default()
        };
        r.set_mode(families::buffers::RCVBUF_FULL);
        r
    }

    #[test]
    fn repeats_of_one_flow_fold_into_one_incident() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        assert!(f.offer(&drop_to(40000, 53, "t1"), t0));
        // Another client port to the same service: the same incident.
        assert!(!f.offer(&drop_to(40001, 53, "t2"), t0));
        assert!(!f.offer(&drop_to(40002, 53, "t3"), t0));
        // Another service: its own.
        assert!(f.offer(&drop_to(40000, 54, "t4"), t0));
        assert!(f.closed(t0 + Duration::from_secs(59)).is_empty());
        let done = f.closed(t0 + Duration::from_secs(60));
        // The one with repeats; the single event was written already.
        assert_eq!(done.len(), 1);
        let i = &done[0];
        // It names the kind it folds; its count includes the first.
        assert_eq!(
            (i.kind, i.event, i.mode, i.count),
            ("incident", Some("drop"), Some("rcvbuf_full"), Some(3))
        );
        assert_eq!(
            (i.first.as_deref(), i.last.as_deref()),
            (Some("t1"), Some("t3"))
        );
        assert_eq!(i.dport, Some(53));
        assert!(i.advice.is_some());
        assert!(
            i.message
                .starts_with("3 times between t1 and t3: dropped UDP"),
            "{}",
            i.message
        );
        // The window closed: the next one opens a new incident.
        assert!(f.offer(&drop_to(40003, 53, "t5"), t0 + Duration::from_secs(61)));
    }

    fn decoded(e: &DropEvent, netns: Option<u64>) -> Decoded {
        Decoded {
            ts_ns: 1,
            pid: 7,
            comm: b"app".to_vec(),
            netns,
            fold: Default::default(),
            event: KernelEvent::Drop(e.clone()),
        }
    }

    fn udp_drop(sport: u16, rmem_alloc: u32) -> DropEvent {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        DropEvent {
            reason: None,
            location: 0xffff_ffff_8100_0000,
            flow: Some(Flow {
                proto: 17,
                saddr: lo,
                sport: Some(sport),
                daddr: lo,
                dport: Some(53),
                tcp_flags: None,
            }),
            mark: None,
            tcp_ts: None,
            tcp_drop: false,
            sock: Some(Sock {
                addr: lo,
                port: 53,
                state: 7,
                accept_queue: 0,
                accept_queue_max: 0,
                rmem_alloc,
                rcvbuf: 2304,
            }),
        }
    }

    #[test]
    fn identical_drops_are_counted_without_a_record_while_their_incident_is_open() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        let key = |e: &DropEvent| RepeatKey::of(&decoded(e, Some(4026531840)), false);
        let first = udp_drop(40000, 2304);
        // Nothing folded yet: the record must be built.
        assert!(f.repeat(&key(&first).unwrap(), 1, 0, [0; 2]).is_none());
        assert!(f
            .offer_keyed(key(&first), &drop_to(40000, 53, "t1"), t0, 1, [0; 2])
            .is_some());
        assert!(f.repeat(&key(&first).unwrap(), 1, 2, [0; 2]).is_some());
        assert!(f.repeat(&key(&first).unwrap(), 1, 3, [0; 2]).is_some());
        // Anything else in the record differs (the queue's figure, the
        // namespace): built, and folded by its record.
        assert!(f
            .repeat(&key(&udp_drop(40000, 1152)).unwrap(), 1, 9, [0; 2])
            .is_none());
        assert!(f
            .repeat(
                &RepeatKey::of(&decoded(&first, None), false).unwrap(),
                1,
                9,
                [0; 2]
            )
            .is_none());
        // Another client port is the same incident (its key keeps the
        // lower port), unless ports are filtered.
        assert!(f
            .repeat(
                &RepeatKey::of(&decoded(&udp_drop(40009, 2304), Some(4026531840)), true).unwrap(),
                1,
                9,
                [0; 2]
            )
            .is_none());
        assert_eq!(
            f.offer_keyed(
                key(&udp_drop(40001, 1152)),
                &drop_to(40001, 53, "t4"),
                t0,
                1,
                [0; 2]
            ),
            None
        );
        assert!(f
            .repeat(&key(&udp_drop(40002, 1152)).unwrap(), 1, 5, [0; 2])
            .is_some());
        let done = f.closed(t0 + Duration::from_secs(60));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].count, Some(5));
        // The last was counted, not built: its time is formatted now.
        assert_eq!(
            (done[0].first.as_deref(), done[0].last.as_deref()),
            (
                Some("t1"),
                Some(crate::pipeline::timefmt::rfc3339(5).as_str())
            )
        );
        // The incident closed: its shortcuts went with it.
        assert!(f.repeat(&key(&first).unwrap(), 1, 6, [0; 2]).is_none());
        assert!(f.shortcuts.is_empty());
        // A new incident; a filter change forgets the shortcuts.
        let later = t0 + Duration::from_secs(61);
        assert!(f
            .offer_keyed(key(&first), &drop_to(40000, 53, "t7"), later, 1, [0; 2])
            .is_some());
        assert!(f.repeat(&key(&first).unwrap(), 1, 8, [0; 2]).is_some());
        f.forget_shortcuts();
        assert!(f.repeat(&key(&first).unwrap(), 1, 9, [0; 2]).is_none());
        // A rejected segment's TCP timestamp feeds the NAT clock count: a
        // tw_recycle record never takes the shortcut.
        let mut paws = udp_drop(40000, 0);
        paws.tcp_ts = Some((1, 2));
        let paws_key = RepeatKey::of(&decoded(&paws, None), false);
        let mut rejected = drop_to(40000, 80, "t10");
        rejected.set_mode(families::paws::TW_RECYCLE);
        assert!(f
            .offer_keyed(paws_key.clone(), &rejected, later, 1, [0; 2])
            .is_some());
        assert!(f.repeat(&paws_key.unwrap(), 1, 11, [0; 2]).is_none());
        // Retransmits are summed elsewhere.
        let retransmit = Decoded {
            fold: Default::default(),
            event: KernelEvent::Retransmit(SocketEvent {
                flow: first.flow,
                state: Some(1),
                errno: None,
            }),
            ..decoded(&first, None)
        };
        assert_eq!(RepeatKey::of(&retransmit, false), None);
    }

    #[test]
    fn counter_records_fold_apart_from_events_and_sum_their_deltas() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        // The same listener overflowing sample after sample.
        let sample = |overflows: u64, queue: u64, ts: &str| {
            let mut r = Record {
                ts: ts.into(),
                kind: "listen_overflow",
                addr: Some("127.0.0.1".into()),
                port: Some(8080),
                netns: Some(7),
                ..Record::default()
            };
            r.set_mode(families::listen::ACCEPT_QUEUE_FULL);
            r.evidence("source", "counters");
            r.evidence("ListenOverflows", overflows);
            r.evidence("accept_queue", queue);
            r
        };
        assert!(f.offer(&sample(3, 2, "t1"), t0));
        assert!(!f.offer(&sample(4, 5, "t2"), t0));
        assert!(!f.offer(&sample(1, 1, "t3"), t0));
        // An event record of the same listener is not the counters'.
        let mut event = sample(0, 0, "t4");
        event.evidence = None;
        assert!(f.offer(&event, t0));
        let done = f.flush();
        assert_eq!(done.len(), 1);
        let i = &done[0];
        assert_eq!(
            (i.kind, i.event, i.count),
            ("incident", Some("listen_overflow"), Some(3))
        );
        let e = i.evidence.as_ref().unwrap();
        // Deltas summed (3 + 4 + 1), levels at their worst.
        assert_eq!(
            (&e["ListenOverflows"], &e["accept_queue"]),
            (&8.into(), &5.into())
        );
        assert_eq!(
            (i.first.as_deref(), i.last.as_deref()),
            (Some("t1"), Some("t3"))
        );
    }

    #[test]
    fn probes_and_overflowing_keys_are_written() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        let probe = Record::new("probe", "probe drop attached".into());
        assert!(f.offer(&probe, t0) && f.offer(&probe, t0));
        f.max_open = 1;
        assert!(f.offer(&drop_to(40000, 53, "t1"), t0));
        // No room to track another: written in full, never lost.
        assert!(f.offer(&drop_to(40000, 54, "t2"), t0));
        assert!(f.offer(&drop_to(40000, 54, "t3"), t0));
        assert!(!f.offer(&drop_to(40001, 53, "t4"), t0));
        assert_eq!(f.flush().len(), 1);
    }

    #[test]
    fn repeats_counted_in_the_kernel_fold_like_repeats_seen_one_by_one() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        let key = |e: &DropEvent| RepeatKey::of(&decoded(e, Some(4026531840)), false);
        let first = udp_drop(40000, 2304);
        // A record and 4 repeats of it: written once, an incident of 5.
        assert_eq!(
            f.offer_keyed(key(&first), &drop_to(40000, 53, "t1"), t0, 5, [0; 2]),
            Some(1)
        );
        // 10 more later, by the shortcut; 2 more by their record.
        assert!(f.repeat(&key(&first).unwrap(), 10, 7, [0; 2]).is_some());
        assert_eq!(f.offer_times(&drop_to(40001, 53, "t2"), t0, 2), None);
        let done = f.flush();
        assert_eq!(done[0].count, Some(17));
        // Without folding, the record stands for all of them.
        let mut every = Folder::unfolded();
        assert_eq!(every.offer_times(&drop_to(40000, 53, "t1"), t0, 3), Some(3));
        assert_eq!(every.offer_times(&drop_to(40000, 53, "t1"), t0, 1), Some(1));
        assert!(every.flush().is_empty());
    }

    #[test]
    fn a_per_service_incident_names_its_sources_and_estimates_them() {
        use netprobe_common::agg::sketch;
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        let per_service = |source: &str, ts: &str| {
            let mut r = drop_to(40000, 53, ts);
            r.saddr = None;
            r.sport = None;
            r.evidence("per_service", true);
            r.evidence("sources", vec![source.to_string()]);
            r
        };
        assert!(f.offer(&per_service("10.0.0.1", "t1"), t0));
        assert!(!f.offer(&per_service("10.0.0.2", "t2"), t0));
        assert!(!f.offer(&per_service("10.0.0.2", "t3"), t0));
        // The kernel's sketch of 1000 sources, credited as repeats.
        let mut sk = [0u64; 2];
        for i in 0..1000u64 {
            sketch::add(&mut sk, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i << 40);
        }
        let key = RepeatKey::of(&decoded(&udp_drop(40000, 1152), None), false).unwrap();
        assert_eq!(
            f.offer_keyed(
                Some(key.clone()),
                &per_service("10.0.0.3", "t4"),
                t0,
                1,
                [0; 2]
            ),
            None
        );
        assert!(f.repeat(&key, 997, 5, sk).is_some());
        let done = f.flush();
        assert_eq!(done.len(), 1);
        let i = &done[0];
        assert_eq!(i.count, Some(1001));
        let ev = i.evidence.as_ref().unwrap();
        // The most named first.
        assert_eq!(ev["sources"][0], "10.0.0.2");
        assert_eq!(ev["sources"].as_array().unwrap().len(), 3);
        let distinct = ev["distinct_sources"].as_u64().unwrap();
        assert!((500..=2000).contains(&distinct), "{distinct}");
        assert!(
            i.message.contains(&format!(
                "from about {distinct} distinct sources (among them 10.0.0.2, "
            )),
            "{}",
            i.message
        );
    }

    #[test]
    fn the_first_flows_of_a_storm_are_among_its_sources() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        // Records that name the service's socket fold by it.
        let at_service = |ts: &str| {
            let mut r = drop_to(40000, 53, ts);
            (r.addr, r.port) = (Some("127.0.0.1".into()), Some(53));
            r
        };
        let flow_from = |src: &str, ts: &str| {
            let mut r = at_service(ts);
            r.saddr = Some(src.into());
            r
        };
        // A storm's first flow crosses on its own, then one per service.
        assert!(f.offer(&flow_from("10.0.0.9", "t1"), t0));
        let mut per_service = at_service("t2");
        (per_service.saddr, per_service.sport) = (None, None);
        per_service.evidence("per_service", true);
        per_service.evidence("sources", vec!["10.0.0.1".to_string()]);
        assert!(!f.offer(&per_service, t0));
        assert!(!f.offer(&flow_from("10.0.0.8", "t3"), t0));
        let done = f.flush();
        let ev = done[0].evidence.as_ref().unwrap();
        let named: Vec<&str> = ev["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(named, ["10.0.0.9", "10.0.0.1", "10.0.0.8"]);
        assert_eq!(ev["distinct_sources"], 3);
    }
}
