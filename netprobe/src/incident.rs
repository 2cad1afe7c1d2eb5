//! Incidents: events of one mode and one flow (or one listener) inside a
//! window fold into one record. The first event is written in full as it
//! happens; the repeats are counted, and when the window closes an
//! `incident` record says how many there were, from when to when, with the
//! first event's flow, evidence and advice (design.md: floods fold, nothing
//! is dropped silently).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::record::Record;

/// What makes two events "the same": the kind and mode, the protocol, both
/// addresses and the service port (the lower of the two ports: the
/// client's ephemeral port changes with every connection), or the listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    mode: &'static str,
    proto: Option<String>,
    a: Option<String>,
    b: Option<String>,
    port: Option<u16>,
    netns: Option<u64>,
}

impl Key {
    /// Records about kernel events with a mode fold; counter records (their
    /// own sums), probe and housekeeping records do not.
    fn of(r: &Record) -> Option<Key> {
        let mode = r.mode?;
        if r.kind == "incident" || r.evidence_source() == Some("counters") {
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
}

pub struct Folder {
    window: Duration,
    open: HashMap<Key, Open>,
    /// Beyond this many open incidents, new ones are written unfolded.
    max_open: usize,
}

impl Folder {
    pub fn new(window: Duration) -> Folder {
        Folder {
            window,
            open: HashMap::new(),
            max_open: 4096,
        }
    }

    /// A new window, for incidents opened from now on (a config reload).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Whether `r` is to be written now: the first of its kind in a window
    /// (or one that does not fold); a repeat is counted instead.
    pub fn offer(&mut self, r: &Record, now: Instant) -> bool {
        let Some(key) = Key::of(r) else {
            return true;
        };
        if let Some(o) = self.open.get_mut(&key) {
            o.count += 1;
            o.last_ts.clone_from(&r.ts);
            // The incident shows the worst figure of each piece of evidence.
            if let (Some(first), Some(new)) = (o.first.evidence.as_mut(), &r.evidence) {
                for (k, v) in new {
                    let worse = match (first.get(k).and_then(|x| x.as_u64()), v.as_u64()) {
                        (Some(old), Some(n)) => n > old,
                        _ => false,
                    };
                    if worse {
                        first.insert(k, v.clone());
                    }
                }
            }
            return false;
        }
        if self.open.len() < self.max_open {
            self.open.insert(
                key,
                Open {
                    first: r.clone(),
                    opened: now,
                    count: 1,
                    last_ts: r.ts.clone(),
                },
            );
        }
        true
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
        out.sort_by_key(|(at, _)| *at);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Every open incident with repeats, at shutdown.
    pub fn flush(&mut self) -> Vec<Record> {
        self.closed(Instant::now() + self.window)
    }
}

fn incident(o: Open) -> Record {
    let f = o.first;
    Record {
        ts: o.last_ts.clone(),
        kind: "incident",
        message: format!(
            "{} times between {} and {}: {}",
            o.count, f.ts, o.last_ts, f.message
        ),
        count: Some(o.count),
        first: Some(f.ts.clone()),
        last: Some(o.last_ts),
        // The first event's diagnosis, flow and evidence.
        location: None,
        tcp_flags: None,
        ..f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;

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
        r.set_mode(classify::RCVBUF_FULL);
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
        assert_eq!(
            (i.kind, i.mode, i.count),
            ("incident", Some("rcvbuf_full"), Some(3))
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

    #[test]
    fn counters_probes_and_overflowing_keys_are_written() {
        let t0 = Instant::now();
        let mut f = Folder::new(Duration::from_secs(60));
        let probe = Record::new("probe", "probe drop attached".into());
        assert!(f.offer(&probe, t0) && f.offer(&probe, t0));
        let mut counted = drop_to(1, 2, "t");
        counted.evidence("source", "counters");
        assert!(f.offer(&counted, t0) && f.offer(&counted, t0));
        f.max_open = 1;
        assert!(f.offer(&drop_to(40000, 53, "t1"), t0));
        // No room to track another: written in full, never lost.
        assert!(f.offer(&drop_to(40000, 54, "t2"), t0));
        assert!(f.offer(&drop_to(40000, 54, "t3"), t0));
        assert!(!f.offer(&drop_to(40001, 53, "t4"), t0));
        assert_eq!(f.flush().len(), 1);
    }
}
