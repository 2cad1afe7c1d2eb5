//! JSON lines: one record per line, fields as design.md names them.

use std::io::{self, Write};

use super::Sink;
use crate::pipeline::record::Record;

pub struct Json<W: Write> {
    out: W,
    name: &'static str,
    buf: Vec<u8>,
}

impl<W: Write> Json<W> {
    pub fn new(out: W, name: &'static str) -> Self {
        Json {
            out,
            name,
            buf: Vec::with_capacity(512),
        }
    }
}

impl<W: Write> Sink for Json<W> {
    fn name(&self) -> &str {
        self.name
    }

    fn write(&mut self, rec: &Record) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, rec)?;
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_record_with_contract_names() {
        let mut s = Json::new(Vec::new(), "mem");
        let r = Record {
            family: Some("reset"),
            mode: Some("no_listener"),
            saddr: Some("127.0.0.2".into()),
            sport: Some(1),
            ..Record::new("drop", "a\nb".into())
        };
        s.write(&r).unwrap();
        s.write(&r).unwrap();
        let text = String::from_utf8(s.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["kind"], "drop");
        assert_eq!(v["mode"], "no_listener");
        assert_eq!(v["message"], "a\nb");
        assert_eq!(v["sport"], 1);
        assert!(v.get("dport").is_none());
    }
}
