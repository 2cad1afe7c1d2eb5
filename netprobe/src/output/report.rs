//! `netprobe report`: the morning summary of a night of records (JSON lines
//! from `netprobe run --output json`, or the journal): what failed, how
//! often, to which flows and listeners, when, and what to change.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::families::catalogue;

/// One mode's events over the period.
#[derive(Debug, Default)]
pub struct ModeSummary {
    pub events: u64,
    pub first: String,
    pub last: String,
    /// Events per flow or listener.
    pub by_target: BTreeMap<String, u64>,
    /// The first record's message, as an example.
    pub example: String,
    /// The most specific advice seen (records with a listener or flow).
    pub advice: Option<String>,
    /// Events that came from counters rather than probes.
    pub from_counters: u64,
    /// OOM windows: what the network suffered after each kill.
    pub windows: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub records: u64,
    pub unreadable: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub modes: BTreeMap<String, ModeSummary>,
    /// Events per hour ("2026-11-22T02") and mode.
    pub hours: BTreeMap<String, BTreeMap<String, u64>>,
    pub lost: u64,
    pub probes_skipped: BTreeMap<String, String>,
    pub probes_attached: u64,
    pub errors: Vec<String>,
}

/// What a record is about: its listener (or socket), or its flow as
/// `client -> service:port`, the service being the side with the lower port
/// whichever way the packet went (a SYN and the RST answering it are one).
fn target(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    if let (Some(addr), Some(port)) = (s("addr"), n("port")) {
        // A listener, or the socket a drop was for.
        return format!("socket {}", join_addr(addr, port));
    }
    let proto = s("proto").unwrap_or("?");
    match (s("saddr"), s("daddr"), n("sport"), n("dport")) {
        (Some(sa), Some(da), Some(sp), Some(dp)) if sp < dp => {
            format!("{proto} {da} -> {}", join_addr(sa, sp))
        }
        (Some(sa), Some(da), _, Some(dp)) => format!("{proto} {sa} -> {}", join_addr(da, dp)),
        _ => match n("netns") {
            Some(ns) => format!("netns {ns}"),
            None => "host".into(),
        },
    }
}

fn join_addr(addr: &str, port: u64) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// Reads JSON lines; records before `since` (an RFC 3339 prefix such as
/// `2026-11-22T02`, compared as text: records are UTC) are left out.
pub fn summarize<'a>(lines: impl Iterator<Item = &'a str>, since: Option<&str>) -> Summary {
    let mut s = Summary::default();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            s.unreadable += 1;
            continue;
        };
        add(&mut s, &v, since);
    }
    s
}

/// Adds one record.
pub fn add(s: &mut Summary, v: &Value, since: Option<&str>) {
    let ts = v.get("ts").and_then(Value::as_str).unwrap_or("");
    if since.is_some_and(|t| ts < t) {
        return;
    }
    s.records += 1;
    if s.first.as_deref().is_none_or(|f| ts < f) {
        s.first = Some(ts.to_string());
    }
    if s.last.as_deref().is_none_or(|l| ts > l) {
        s.last = Some(ts.to_string());
    }
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match kind {
        "lost" => {
            let n = v.get("count").and_then(Value::as_u64).unwrap_or(0);
            s.lost = s.lost.saturating_add(n);
        }
        "probe" => {
            if text("status").as_deref() == Some("attached") {
                s.probes_attached += 1;
            } else if let Some(p) = text("probe") {
                s.probes_skipped
                    .insert(p, text("detail").unwrap_or_default());
            }
        }
        "error" if s.errors.len() < 20 => s.errors.push(text("message").unwrap_or_default()),
        _ => {}
    }
    let Some(mode) = text("mode") else { return };
    // An OOM window's incident counts symptoms, not repeats of its kill
    // (which has its own record): it is told, not added.
    let window = kind == "incident"
        && (text("event").as_deref() == Some("oom")
            || v.get("evidence").is_some_and(|e| {
                e.get("oom_victim_pid").is_some() && e.get("socket_errors").is_some()
            }));
    if window {
        let m = s.modes.entry(mode).or_default();
        if m.windows.len() < 5 {
            m.windows.push(text("message").unwrap_or_default());
        }
        return;
    }
    // An incident's first event was written on its own already.
    let events = match kind {
        "incident" => v
            .get("count")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .saturating_sub(1),
        // A record stands for its count: the minute's retransmissions,
        // and a record written for events counted in the kernel that could
        // not fold (as the metrics count them).
        _ => v.get("count").and_then(Value::as_u64).unwrap_or(1),
    };
    if events == 0 {
        return;
    }
    let m = s.modes.entry(mode.clone()).or_default();
    if m.events == 0 {
        m.first = text("first").unwrap_or_else(|| ts.to_string());
        m.example = text("message").unwrap_or_default();
    }
    m.events = m.events.saturating_add(events);
    m.last = ts.to_string();
    let n = m.by_target.entry(target(v)).or_default();
    *n = n.saturating_add(events);
    let counted = v
        .get("evidence")
        .and_then(|e| e.get("source"))
        .and_then(Value::as_str)
        == Some("counters");
    if counted {
        m.from_counters = m.from_counters.saturating_add(events);
    }
    if let Some(a) = text("advice") {
        if m.advice.is_none() || v.get("addr").is_some() || v.get("daddr").is_some() {
            m.advice = Some(a);
        }
    }
    let hour = ts.get(..13).unwrap_or(ts).to_string();
    let n = s.hours.entry(hour).or_default().entry(mode).or_default();
    *n = n.saturating_add(events);
}

/// The summary as text, worst first.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let period = match (&s.first, &s.last) {
        (Some(f), Some(l)) => format!("{f} .. {l}"),
        _ => "no records".into(),
    };
    out.push_str(&format!(
        "netprobe report: {period} ({} records{})\n",
        s.records,
        if s.unreadable > 0 {
            format!(", {} unreadable lines skipped", s.unreadable)
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "probes: {} attached, {} skipped\n",
        s.probes_attached,
        s.probes_skipped.len()
    ));
    for (p, why) in &s.probes_skipped {
        out.push_str(&format!("  skipped {p}: {}\n", shorten(why, 150)));
    }
    if s.modes.is_empty() {
        out.push_str("\nNo failures recorded.\n");
    }
    let mut modes: Vec<(&String, &ModeSummary)> = s.modes.iter().collect();
    modes.sort_by_key(|(name, m)| {
        let sev = catalogue::by_mode(name).map_or(catalogue::Severity::Notice, |e| e.severity);
        (
            std::cmp::Reverse(sev),
            std::cmp::Reverse(m.events),
            (*name).clone(),
        )
    });
    for (name, m) in &modes {
        let entry = catalogue::by_mode(name);
        out.push_str(&format!(
            "\n{name}: {} event{} ({}, {}), {} .. {}{}\n",
            m.events,
            if m.events == 1 { "" } else { "s" },
            entry.map_or("unknown mode", |e| e.title),
            entry.map_or("notice", |e| e.severity.name()),
            m.first,
            m.last,
            if m.from_counters > 0 {
                format!("; {} from counters only", m.from_counters)
            } else {
                String::new()
            }
        ));
        let mut worst: Vec<(&String, &u64)> = m.by_target.iter().collect();
        worst.sort_by_key(|(t, n)| (std::cmp::Reverse(**n), (*t).clone()));
        for (t, n) in worst.iter().take(5) {
            out.push_str(&format!("  {n:>7}  {t}\n"));
        }
        if worst.len() > 5 {
            out.push_str(&format!("  ({} more)\n", worst.len() - 5));
        }
        out.push_str(&format!("  e.g. {}\n", shorten(&m.example, 300)));
        for w in &m.windows {
            out.push_str(&format!("  window: {}\n", shorten(w, 300)));
        }
        if let Some(a) = m.advice.as_deref().or(entry.map(|e| e.advice)) {
            out.push_str(&format!("  advice: {}\n", shorten(a, 400)));
        }
    }
    if !s.hours.is_empty() {
        out.push_str("\ntimeline (events per hour, UTC):\n");
        for (hour, modes) in &s.hours {
            let list: Vec<String> = modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
            out.push_str(&format!("  {hour}h  {}\n", list.join(", ")));
        }
    }
    if s.lost > 0 {
        out.push_str(&format!(
            "\n{} events were lost (counted, not written): see the `lost` records\n",
            s.lost
        ));
    }
    if !s.errors.is_empty() {
        out.push_str("\nnetprobe's own errors:\n");
        for e in &s.errors {
            out.push_str(&format!("  {}\n", shorten(e, 200)));
        }
    }
    out
}

/// At most `max` bytes of `text` (on a character boundary), control
/// characters escaped: records come from untrusted names.
fn shorten(text: &str, max: usize) -> String {
    let mut s = crate::pipeline::record::escape_bytes(text.as_bytes());
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A journal entry (`journalctl -o json`) as the record it was: the
/// `NETPROBE_*` fields, lower-cased, with numbers and `evidence` restored.
pub fn from_journal(entry: &Value) -> Option<Value> {
    let obj = entry.as_object()?;
    let mut rec = serde_json::Map::new();
    for (k, v) in obj {
        let Some(field) = k.strip_prefix("NETPROBE_") else {
            continue;
        };
        let Some(text) = v.as_str() else { continue };
        let name = field.to_ascii_lowercase();
        let number = matches!(
            name.as_str(),
            "sport" | "dport" | "port" | "pid" | "count" | "netns" | "attached" | "skipped"
        );
        let value = match text.parse::<u64>() {
            Ok(n) if number => Value::from(n),
            _ if name == "evidence" => {
                serde_json::from_str(text).unwrap_or(Value::String(text.into()))
            }
            _ => Value::String(text.into()),
        };
        rec.insert(name, value);
    }
    if let Some(m) = obj.get("MESSAGE").and_then(Value::as_str) {
        rec.insert("message".into(), Value::String(m.into()));
    }
    rec.contains_key("kind").then_some(Value::Object(rec))
}

/// `--since`: an RFC 3339 time (or a prefix of one, UTC), or a span back
/// from now (`90m`, `8h`, `2d`).
pub fn since(arg: &str, now_unix_ns: i128) -> Result<String, String> {
    let arg = arg.trim();
    let span = |unit: u64| -> Option<u64> {
        arg[..arg.len() - 1]
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
    };
    let secs = match arg.chars().last() {
        Some('s') => span(1),
        Some('m') => span(60),
        Some('h') => span(3600),
        Some('d') => span(86400),
        _ => None,
    };
    if let Some(secs) = secs {
        return Ok(crate::pipeline::timefmt::rfc3339(
            now_unix_ns.saturating_sub(i128::from(secs) * 1_000_000_000),
        ));
    }
    let b = arg.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if digits(0..4) && (arg.len() == 4 || b[4] == b'-') && arg.is_ascii() {
        return Ok(arg.to_string());
    }
    Err(format!(
        "--since {arg:?}: give an RFC 3339 UTC time (2026-11-22T02:00) or a span (90m, 8h, 2d)"
    ))
}

/// `netprobe report [FILE|-] [--since]`: prints the summary; the journal
/// (`journalctl -o json`) when no file is given.
pub fn run(file: Option<&str>, since_arg: Option<&str>) -> i32 {
    use std::io::{BufRead, BufReader, Read};
    let since = match since_arg.map(|a| since(a, crate::pipeline::timefmt::now_unix_ns())) {
        Some(Err(why)) => {
            tracing::error!("{why}");
            return 2;
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let mut s = Summary::default();
    let mut take = |reader: &mut dyn BufRead, journal: bool| -> std::io::Result<()> {
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str::<Value>(&line).ok();
            let v = if journal {
                v.and_then(|e| from_journal(&e))
            } else {
                v
            };
            match v {
                Some(v) => add(&mut s, &v, since.as_deref()),
                None if !journal => s.unreadable += 1,
                None => {}
            }
        }
        Ok(())
    };
    let result = match file {
        Some("-") => take(&mut std::io::stdin().lock(), false),
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => take(&mut BufReader::new(f), false),
            Err(e) => {
                tracing::error!("cannot read {path}: {e}");
                return 1;
            }
        },
        None => {
            let child = std::process::Command::new("journalctl")
                .args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=netprobe"])
                .stdout(std::process::Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(
                        "cannot run journalctl ({e}); give the JSON log as FILE or - instead"
                    );
                    return 1;
                }
            };
            let out = child.stdout.take().expect("piped stdout");
            let r = take(&mut BufReader::new(out.take(u64::MAX)), true);
            let _ = child.wait();
            r
        }
    };
    if let Err(e) = result {
        tracing::error!("reading the records failed: {e}");
        return 1;
    }
    crate::print_out(&render(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A night as the daemon writes it: probe records, a PAWS flood folded
    /// into an incident, closed-port drops, a counter record, a loss.
    const NIGHT: &str = r#"{"ts":"2026-11-22T01:59:58.000001Z","kind":"probe","message":"probe drop attached","probe":"drop","status":"attached"}
{"ts":"2026-11-22T01:59:58.000002Z","kind":"probe","message":"probe listen_overflow skipped","probe":"listen_overflow","status":"skipped","detail":"no kprobes"}
{"ts":"2026-11-22T02:10:04.100000Z","kind":"drop","message":"dropped TCP 10.0.3.7:40001 -> 10.0.0.5:80 (SYN): its TCP timestamp is older","family":"tw_recycle","mode":"tw_recycle","severity":"warning","proto":"tcp","saddr":"10.0.3.7","sport":40001,"daddr":"10.0.0.5","dport":80,"advice":"Set net.ipv4.tcp_tw_recycle=0"}
not json at all
{"ts":"2026-11-22T02:11:04.100000Z","kind":"incident","message":"312 times between ...","family":"tw_recycle","mode":"tw_recycle","proto":"tcp","saddr":"10.0.3.7","sport":40001,"daddr":"10.0.0.5","dport":80,"count":312,"first":"2026-11-22T02:10:04.100000Z","last":"2026-11-22T02:11:04.000000Z"}
{"ts":"2026-11-22T03:00:00.000000Z","kind":"drop","message":"dropped TCP 10.0.9.9:51000 -> 10.0.0.5:9200 (SYN): no socket listens","family":"reset","mode":"no_listener","proto":"tcp","saddr":"10.0.9.9","sport":51000,"daddr":"10.0.0.5","dport":9200}
{"ts":"2026-11-22T03:00:01.000000Z","kind":"reset_sent","message":"RST sent TCP 10.0.0.5:9200 -> 10.0.9.9:51002 (no socket)","family":"reset","mode":"no_listener","proto":"tcp","saddr":"10.0.0.5","sport":9200,"daddr":"10.0.9.9","dport":51002}
{"ts":"2026-11-22T03:05:00.000000Z","kind":"conntrack","message":"conntrack table full in netns 7","family":"queue_full","mode":"conntrack_table_full","netns":7,"evidence":{"source":"counters","drop":3}}
{"ts":"2026-11-22T03:05:01.000000Z","kind":"lost","message":"4 events lost","count":4}
{"ts":"2026-11-22T03:06:00.000000Z","kind":"oom","message":"the OOM killer chose pid 42 (logstash) to kill","mode":"oom_stall","pid":42}
{"ts":"2026-11-22T03:07:00.000000Z","kind":"incident","message":"OOM kill of pid 42 (logstash): in the 60 s after it, 12 TCP retransmission(s), 1 socket error(s) (1 ETIMEDOUT), 0 dropped packet(s)","mode":"oom_stall","pid":42,"count":13,"evidence":{"oom_victim_pid":42,"retransmits":12,"socket_errors":1,"drops":0}}"#;

    #[test]
    fn a_night_summarised_worst_first() {
        let s = summarize(NIGHT.lines(), None);
        assert_eq!((s.records, s.unreadable, s.lost), (10, 1, 4));
        // The kill is one event; its window is told beside it.
        let oom = &s.modes["oom_stall"];
        assert_eq!((oom.events, oom.windows.len()), (1, 1));
        let paws = &s.modes["tw_recycle"];
        // The first event, then 311 more folded into the incident.
        assert_eq!(paws.events, 312);
        assert_eq!(paws.by_target["tcp 10.0.3.7 -> 10.0.0.5:80"], 312);
        assert_eq!(paws.first, "2026-11-22T02:10:04.100000Z");
        // Both directions of one service are one target: a SYN to
        // 10.0.0.5:9200, and a RST from it.
        assert_eq!(
            s.modes["no_listener"].by_target["tcp 10.0.9.9 -> 10.0.0.5:9200"],
            2
        );
        assert_eq!(s.modes["conntrack_table_full"].from_counters, 1);
        assert_eq!(s.hours["2026-11-22T02"]["tw_recycle"], 312);
        let text = render(&s);
        assert!(text.starts_with(
            "netprobe report: 2026-11-22T01:59:58.000001Z .. 2026-11-22T03:07:00.000000Z (10 records, 1 unreadable lines skipped)\nprobes: 1 attached, 1 skipped\n  skipped listen_overflow: no kprobes\n"
        ), "{text}");
        let paws_at = text
            .find("\ntw_recycle: 312 events (TCP timestamp (PAWS) rejection, warning)")
            .unwrap();
        let closed_at = text.find("\nno_listener: 2 events").unwrap();
        assert!(paws_at < closed_at, "worst first:\n{text}");
        assert!(text.contains("      312  tcp 10.0.3.7 -> 10.0.0.5:80\n"));
        assert!(text.contains("  advice: Set net.ipv4.tcp_tw_recycle=0\n"));
        assert!(text.contains("; 1 from counters only\n"));
        assert!(text.contains("  2026-11-22T02h  tw_recycle 312\n"));
        assert!(text.contains("\n4 events were lost"));
        assert!(
            text.contains("\noom_stall: 1 event (OOM kill stalling the network, critical)"),
            "{text}"
        );
        assert!(
            text.contains("  window: OOM kill of pid 42 (logstash): in the 60 s after it, 12 TCP")
        );
        // --since leaves the earlier night out.
        let s = summarize(NIGHT.lines(), Some("2026-11-22T03"));
        assert_eq!(s.records, 6);
        assert!(!s.modes.contains_key("tw_recycle"));
    }

    /// Counts near u64::MAX (a hostile or corrupt log) saturate instead of
    /// overflowing.
    #[test]
    fn huge_counts_saturate() {
        let max = u64::MAX;
        let lost = format!(r#"{{"ts":"t","kind":"lost","count":{max}}}"#);
        let folded = format!(
            r#"{{"ts":"t","kind":"retransmit","mode":"m","count":{max},"evidence":{{"source":"counters"}}}}"#
        );
        let lines = [&lost, &lost, &folded, &folded];
        let s = summarize(lines.iter().map(|l| l.as_str()), None);
        assert_eq!(s.lost, max);
        let m = &s.modes["m"];
        assert_eq!((m.events, m.from_counters), (max, max));
        assert_eq!(m.by_target["host"], max);
        assert_eq!(s.hours["t"]["m"], max);
        assert!(render(&s).contains(&format!("m: {max} events")));
    }

    #[test]
    fn since_takes_times_and_spans() {
        let now: i128 = 1_700_000_000_000_000_000;
        assert_eq!(since("2026-11-22T02", now).unwrap(), "2026-11-22T02");
        assert_eq!(
            since("2h", now).unwrap(),
            crate::pipeline::timefmt::rfc3339(now - 7200 * 1_000_000_000)
        );
        assert!(since("yesterday", now).is_err());
        assert!(since("h", now).is_err());
        assert!(since("99999999999999999999d", now).is_err());
    }

    #[test]
    fn hostile_text_is_escaped() {
        let line = r#"{"ts":"t","kind":"drop","mode":"other","message":"evil\u001b[2J\nname"}"#;
        let text = render(&summarize(std::iter::once(line), None));
        assert!(text.contains("e.g. evil\\x1b[2J\\x0aname\n"), "{text}");
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn journal_entries_become_records() {
        let e: Value = serde_json::from_str(
            r#"{"MESSAGE":"dropped","SYSLOG_IDENTIFIER":"netprobe","NETPROBE_KIND":"drop","NETPROBE_MODE":"no_listener","NETPROBE_DPORT":"9","NETPROBE_SADDR":"127","NETPROBE_TS":"2026-11-22T03:00:00Z","NETPROBE_EVIDENCE":"{\"source\":\"counters\"}"}"#,
        )
        .unwrap();
        let r = from_journal(&e).unwrap();
        assert_eq!(r["kind"], "drop");
        assert_eq!(r["dport"], 9);
        assert_eq!(r["saddr"], "127");
        assert_eq!(r["message"], "dropped");
        assert_eq!(r["evidence"]["source"], "counters");
        assert!(from_journal(&serde_json::json!({"MESSAGE": "other program"})).is_none());
    }
}
