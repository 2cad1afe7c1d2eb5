//! What netprobe last saw go wrong on each flow: a symptom (a timeout, a
//! retransmission, an unreachable host) that follows a cause on its own
//! flow (a netfilter drop, a reset, a full queue, a neighbour that never
//! answered) is that cause's, never a coincidence elsewhere on the node
//! (design.md: "a symptom with a cause of its own on the same flow keeps
//! that cause").
//!
//! Flows are keyed by their two endpoints in either order, so the SYN a
//! rule dropped and the socket error of the client that sent it meet.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::{families::Mode, pipeline::packet::Flow, pipeline::record::Record};

/// How long a cause stays a flow's: a connect times out after about two
/// minutes of retries at the most (tcp_syn_retries 6).
pub const CAUSE_WINDOW: Duration = Duration::from_secs(150);

/// Flows remembered at most (the oldest go first).
const MAX_FLOWS: usize = 8192;

/// A flow's two endpoints, ordered, and its protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowKey {
    proto: String,
    a: (String, u16),
    b: (String, u16),
}

impl FlowKey {
    fn new(proto: String, s: (String, u16), d: (String, u16)) -> FlowKey {
        let (a, b) = if s <= d { (s, d) } else { (d, s) };
        FlowKey { proto, a, b }
    }

    /// The flow of a record with both addresses and both ports.
    pub fn of(r: &Record) -> Option<FlowKey> {
        Some(FlowKey::new(
            r.proto.clone()?,
            (r.saddr.clone()?, r.sport?),
            (r.daddr.clone()?, r.dport?),
        ))
    }

    /// The flow of a packet, as its record would name it.
    pub fn of_flow(f: &Flow) -> Option<FlowKey> {
        Some(FlowKey::new(
            crate::pipeline::packet::proto_name(f.proto),
            (f.saddr.to_string(), f.sport?),
            (f.daddr.to_string(), f.dport?),
        ))
    }
}

/// A cause seen on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub mode: Mode,
    /// The kind of record that showed it (`drop`, `reset_sent`, ...).
    pub kind: &'static str,
    /// The kernel's drop reason, when it gave one.
    pub reason: Option<String>,
    /// How many such events on the flow.
    pub count: u64,
    pub last: Instant,
}

#[derive(Default)]
pub struct Causes {
    by_flow: HashMap<FlowKey, Cause>,
    order: VecDeque<FlowKey>,
    /// The network namespace each flow's records were seen in: a socket
    /// error's record names no socket, so it takes its flow's.
    netns: HashMap<FlowKey, u64>,
    netns_order: VecDeque<FlowKey>,
}

/// Whether records of this mode are a cause a symptom can have.
fn is_cause(m: Mode) -> bool {
    !matches!(m.family, "other" | "oom_stall")
}

impl Causes {
    /// Notes what `r` (a drop, a reset, an overflow, built in full) shows
    /// on its flow, `times` events of it.
    pub fn note(&mut self, r: &Record, times: u64, now: Instant) {
        if let Some(key) = FlowKey::of(r) {
            self.note_as(key, r, times, now);
        }
    }

    /// Notes `times` events on flow `key` that are like `r` (the record of
    /// the incident they fold into: same kind, mode and reason).
    pub fn note_as(&mut self, key: FlowKey, r: &Record, times: u64, now: Instant) {
        if !matches!(
            r.kind,
            "drop" | "reset_sent" | "reset_received" | "listen_overflow" | "conntrack"
        ) {
            return;
        }
        let (Some(family), Some(mode)) = (r.family, r.mode) else {
            return;
        };
        let m = Mode { family, mode };
        if !is_cause(m) {
            return;
        }
        match self.by_flow.get_mut(&key) {
            Some(c) if c.mode == m => {
                c.count += times;
                c.last = now;
            }
            Some(c) => {
                *c = Cause {
                    mode: m,
                    kind: r.kind,
                    reason: r.reason.clone(),
                    count: times,
                    last: now,
                }
            }
            None => {
                if self.by_flow.len() >= MAX_FLOWS {
                    while let Some(old) = self.order.pop_front() {
                        if self.by_flow.remove(&old).is_some() {
                            break;
                        }
                    }
                }
                self.order.push_back(key.clone());
                self.by_flow.insert(
                    key,
                    Cause {
                        mode: m,
                        kind: r.kind,
                        reason: r.reason.clone(),
                        count: times,
                        last: now,
                    },
                );
            }
        }
    }

    /// Remembers `r`'s namespace for its flow, or gives `r` the one its
    /// flow was seen in when it has none.
    pub fn netns(&mut self, r: &mut Record) {
        let Some(key) = FlowKey::of(r) else {
            return;
        };
        match r.netns {
            Some(ns) => {
                if self.netns.insert(key.clone(), ns).is_none() {
                    self.netns_order.push_back(key);
                    if self.netns.len() > MAX_FLOWS {
                        while let Some(old) = self.netns_order.pop_front() {
                            if self.netns.remove(&old).is_some() {
                                break;
                            }
                        }
                    }
                }
            }
            None => r.netns = self.netns.get(&key).copied(),
        }
    }

    /// The cause seen on `r`'s flow within `CAUSE_WINDOW` of `now`.
    pub fn of(&self, r: &Record, now: Instant) -> Option<&Cause> {
        let c = self.by_flow.get(&FlowKey::of(r)?)?;
        (now.saturating_duration_since(c.last) <= CAUSE_WINDOW).then_some(c)
    }
}

/// What the cause of an unreachable host was, in words.
fn unreachable_because(c: &Cause) -> String {
    match c.mode.family {
        "netfilter" => "a netfilter rule rejected its packets (REJECT with an ICMP unreachable, \
                        or DROP)"
            .into(),
        "unreachable" => match c.reason.as_deref() {
            Some(r) if r.starts_with("NEIGH_") => format!("the neighbour never answered ({r})"),
            Some(r) => format!("no route ({r})"),
            None => "the neighbour or the route failed".into(),
        },
        _ => format!("{} on this flow", c.mode.mode),
    }
}

/// Gives a symptom (a socket error, a retransmission) the cause seen on
/// its flow, and says so in the record: an unreachable host keeps its
/// mode and names why; anything else becomes the cause's mode (a timeout
/// after a rule dropped the flow's packets is the rule's).
pub fn attribute(r: &mut Record, c: &Cause) {
    r.evidence("cause", c.mode.mode);
    r.evidence("cause_events", c.count);
    if let Some(reason) = &c.reason {
        r.evidence("cause_reason", reason.clone());
    }
    if r.mode == Some("unreachable") {
        r.message.push_str(&format!(": {}", unreachable_because(c)));
        return;
    }
    if r.mode != Some(c.mode.mode) {
        r.set_mode(c.mode);
    }
    r.message.push_str(&format!(
        ", after {} {} event(s) on this flow ({})",
        c.count, c.mode.mode, c.kind
    ));
}

/// A symptom of an unreachable host with no cause on this host.
pub fn unreachable_uncaused(r: &mut Record) {
    if r.mode == Some("unreachable") {
        r.evidence("cause", "none_seen");
        r.message.push_str(
            ": no drop on this host explains it (an ICMP unreachable from the network, or no \
             route)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families;

    fn rec(kind: &'static str, s: (&str, u16), d: (&str, u16), m: Mode) -> Record {
        let mut r = Record {
            kind,
            proto: Some("tcp".into()),
            saddr: Some(s.0.into()),
            sport: Some(s.1),
            daddr: Some(d.0.into()),
            dport: Some(d.1),
            ..Record::default()
        };
        r.set_mode(m);
        r
    }

    #[test]
    fn a_cause_is_found_from_either_direction_within_its_window() {
        let t0 = Instant::now();
        let mut c = Causes::default();
        let syn = rec(
            "drop",
            ("127.0.0.2", 40000),
            ("127.0.0.1", 9000),
            families::drop::NETFILTER_DROP,
        );
        c.note(&syn, 3, t0);
        // The client's socket error, from its own side.
        let err = rec(
            "socket_error",
            ("127.0.0.2", 40000),
            ("127.0.0.1", 9000),
            families::OTHER,
        );
        let found = c.of(&err, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(
            (found.mode, found.kind, found.count),
            (families::drop::NETFILTER_DROP, "drop", 3)
        );
        let reverse = rec(
            "retransmit",
            ("127.0.0.1", 9000),
            ("127.0.0.2", 40000),
            families::OTHER,
        );
        assert!(c.of(&reverse, t0).is_some());
        // Another client port is another flow.
        let other = rec(
            "socket_error",
            ("127.0.0.2", 40001),
            ("127.0.0.1", 9000),
            families::OTHER,
        );
        assert!(c.of(&other, t0).is_none());
        // Too late.
        assert!(c
            .of(&err, t0 + CAUSE_WINDOW + Duration::from_secs(1))
            .is_none());
    }

    #[test]
    fn unmapped_drops_and_symptoms_are_no_cause() {
        let t0 = Instant::now();
        let mut c = Causes::default();
        let f = (("10.0.0.1", 1), ("10.0.0.2", 2));
        c.note(&rec("drop", f.0, f.1, families::OTHER), 1, t0);
        c.note(
            &rec("socket_error", f.0, f.1, families::reset::NO_LISTENER),
            1,
            t0,
        );
        assert!(c
            .of(&rec("retransmit", f.0, f.1, families::OTHER), t0)
            .is_none());
        // A later cause of another mode replaces the first.
        c.note(
            &rec("drop", f.0, f.1, families::drop::NETFILTER_DROP),
            1,
            t0,
        );
        c.note(
            &rec("reset_sent", f.0, f.1, families::reset::NO_LISTENER),
            2,
            t0,
        );
        let found = c
            .of(&rec("retransmit", f.0, f.1, families::OTHER), t0)
            .unwrap();
        assert_eq!((found.mode, found.count), (families::reset::NO_LISTENER, 2));
    }

    #[test]
    fn symptoms_take_their_flows_cause() {
        let t0 = Instant::now();
        let f = (("127.0.0.2", 40000), ("127.0.0.1", 9000));
        let cause = |m: Mode, reason: Option<&str>| Cause {
            mode: m,
            kind: "drop",
            reason: reason.map(str::to_string),
            count: 2,
            last: t0,
        };
        // A timeout after a rule's drops is the rule's.
        let mut timeout = rec("socket_error", f.0, f.1, families::OTHER);
        timeout.message = "socket error ETIMEDOUT".into();
        attribute(
            &mut timeout,
            &cause(families::drop::NETFILTER_DROP, Some("NETFILTER_DROP")),
        );
        assert_eq!(timeout.mode, Some("netfilter_drop"));
        assert_eq!(timeout.family, Some("netfilter"));
        assert_eq!(
            timeout.message,
            "socket error ETIMEDOUT, after 2 netfilter_drop event(s) on this flow (drop)"
        );
        let e = timeout.evidence.as_ref().unwrap();
        assert_eq!(e["cause"], "netfilter_drop");
        assert_eq!(e["cause_reason"], "NETFILTER_DROP");
        // An unreachable host keeps its mode and says why.
        let mut unreach = rec("socket_error", f.0, f.1, families::symptoms::UNREACHABLE);
        attribute(&mut unreach, &cause(families::drop::NETFILTER_DROP, None));
        assert_eq!(unreach.mode, Some("unreachable"));
        assert!(unreach.message.ends_with(
            ": a netfilter rule rejected its packets (REJECT with an ICMP unreachable, or DROP)"
        ));
        let mut neigh = rec("socket_error", f.0, f.1, families::symptoms::UNREACHABLE);
        attribute(
            &mut neigh,
            &cause(families::symptoms::UNREACHABLE, Some("NEIGH_FAILED")),
        );
        assert!(neigh
            .message
            .ends_with(": the neighbour never answered (NEIGH_FAILED)"));
        let mut alone = rec("socket_error", f.0, f.1, families::symptoms::UNREACHABLE);
        unreachable_uncaused(&mut alone);
        assert_eq!(alone.evidence.unwrap()["cause"], "none_seen");
    }

    #[test]
    fn a_record_without_a_namespace_takes_its_flows() {
        let mut c = Causes::default();
        let f = (("10.0.0.1", 40000), ("10.0.0.2", 80));
        let mut rst = rec("reset_received", f.1, f.0, families::reset::NO_LISTENER);
        rst.netns = Some(4026532177);
        c.netns(&mut rst);
        let mut err = rec("socket_error", f.0, f.1, families::reset::NO_LISTENER);
        c.netns(&mut err);
        assert_eq!(err.netns, Some(4026532177));
        let mut other = rec(
            "socket_error",
            ("10.0.0.1", 40001),
            f.1,
            families::reset::NO_LISTENER,
        );
        c.netns(&mut other);
        assert_eq!(other.netns, None);
    }

    #[test]
    fn the_oldest_flows_go_first() {
        let t0 = Instant::now();
        let mut c = Causes::default();
        for port in 0..MAX_FLOWS as u16 + 10 {
            c.note(
                &rec(
                    "drop",
                    ("10.0.0.1", port),
                    ("10.0.0.2", 80),
                    families::drop::NETFILTER_DROP,
                ),
                1,
                t0,
            );
        }
        assert_eq!(c.by_flow.len(), MAX_FLOWS);
        let first = rec(
            "retransmit",
            ("10.0.0.1", 0),
            ("10.0.0.2", 80),
            families::OTHER,
        );
        assert!(c.of(&first, t0).is_none());
        let last = rec(
            "retransmit",
            ("10.0.0.1", MAX_FLOWS as u16 + 9),
            ("10.0.0.2", 80),
            families::OTHER,
        );
        assert!(c.of(&last, t0).is_some());
    }
}
