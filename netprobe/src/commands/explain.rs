//! `netprobe explain WHAT`: what a mode, a drop reason or a counter means,
//! how netprobe sees it and what to change, from the catalogue.

use crate::families::catalogue::{by_mode, by_reason, entries};

/// `netprobe explain WHAT`: a mode, a kernel drop-reason name (any case),
/// or a counter. `Err` lists what is known.
pub fn explain(what: &str) -> Result<String, String> {
    let key = what.trim();
    let upper = key.to_ascii_uppercase();
    let reason = upper.strip_prefix("SKB_DROP_REASON_").unwrap_or(&upper);
    let (entry, via) = if let Some(e) = by_mode(&key.to_ascii_lowercase()) {
        (e, None)
    } else if let Some(e) = by_reason(reason) {
        (e, Some(format!("drop reason {reason}")))
    } else if let Some(e) =
        entries().find(|e| e.counters.iter().any(|c| c.eq_ignore_ascii_case(key)))
    {
        (e, Some(format!("counter {key}")))
    } else {
        let modes: Vec<&str> = entries().map(|e| e.mode.mode).collect();
        return Err(format!(
            "netprobe knows no mode, drop reason or counter called {key:?}; modes: {}",
            modes.join(", ")
        ));
    };
    let mut s = String::new();
    if let Some(via) = via {
        s.push_str(&format!("{via} -> mode {}\n\n", entry.mode.mode));
    }
    s.push_str(&format!(
        "{} ({}, family {}, severity {})\n\n",
        entry.mode.mode,
        entry.title,
        entry.mode.family,
        entry.severity.name()
    ));
    for (head, text) in [
        ("What it means", entry.meaning),
        ("How netprobe detects it", entry.detection),
        ("What to change", entry.advice),
    ] {
        s.push_str(head);
        s.push('\n');
        s.push_str(&wrap(text, 78, "  "));
        s.push('\n');
    }
    if !entry.reasons.is_empty() {
        s.push_str(&format!(
            "Kernel drop reasons: {}\n",
            entry.reasons.join(", ")
        ));
    }
    if !entry.counters.is_empty() {
        s.push_str(&format!("Counters: {}\n", entry.counters.join(", ")));
    }
    Ok(s)
}

/// Words of `text` in lines of at most `width` columns, each indented.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_takes_modes_reasons_and_counters() {
        let t = explain("tw_recycle").unwrap();
        assert!(
            t.starts_with(
                "tw_recycle (TCP timestamp (PAWS) rejection, family tw_recycle, severity warning)"
            ),
            "{t}"
        );
        assert!(t.contains("net.ipv4.tcp_tw_recycle=0"));
        assert!(t.lines().all(|l| l.len() <= 100), "{t}");
        let t = explain("skb_drop_reason_tcp_listen_overflow").unwrap();
        assert!(
            t.starts_with("drop reason TCP_LISTEN_OVERFLOW -> mode accept_queue_full\n"),
            "{t}"
        );
        assert!(t.contains("net.core.somaxconn"));
        let t = explain("PAWSPassive").unwrap();
        assert!(
            t.starts_with("counter PAWSPassive -> mode tw_recycle"),
            "{t}"
        );
        let e = explain("bogus\u{1b}[31m").unwrap_err();
        assert!(
            e.contains("no mode, drop reason or counter called \"bogus\\u{1b}[31m\""),
            "{e}"
        );
        assert!(e.contains("conntrack_insert_failed"));
    }
}
