//! Human-readable lines for a terminal.

use std::io::{self, Write};

use super::Sink;
use crate::pipeline::record::Record;

pub struct Text<W: Write> {
    out: W,
    name: &'static str,
}

impl<W: Write> Text<W> {
    pub fn new(out: W, name: &'static str) -> Self {
        Text { out, name }
    }
}

/// Replaces control characters so one record stays one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn format(rec: &Record) -> String {
    let mut line = format!("{} {:<14}", rec.ts, rec.kind);
    if let (Some(f), Some(m)) = (rec.family, rec.mode) {
        line.push_str(&format!(" [{f}/{m}]"));
    }
    line.push(' ');
    line.push_str(&one_line(&rec.message));
    if let Some(a) = &rec.advice {
        line.push_str(" -- ");
        line.push_str(&one_line(a));
    }
    line
}

impl<W: Write> Sink for Text<W> {
    fn name(&self) -> &str {
        self.name
    }

    fn write(&mut self, rec: &Record) -> io::Result<()> {
        let mut line = format(rec);
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_mode_and_advice() {
        let r = Record {
            ts: "T".into(),
            family: Some("reset"),
            mode: Some("no_listener"),
            advice: Some("start it\r\n".into()),
            ..Record::new("drop", "dropped\nthing".into())
        };
        assert_eq!(
            format(&r),
            "T drop           [reset/no_listener] dropped thing -- start it  "
        );
    }
}
