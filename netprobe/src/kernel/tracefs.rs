//! tracefs: where it is, and the `format` files that describe each
//! tracepoint's record on the running kernel.
//!
//! The parser is pure so it can be fed format files captured from other
//! kernels (see `testdata/kernels/`).

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("no `ID:` line")]
    NoId,
    #[error("line {line}: malformed field description: {text:?}")]
    BadField { line: usize, text: String },
    #[error("no fields")]
    NoFields,
}

/// One `field:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The declaration as written, e.g. `__u8 saddr[28]`.
    pub decl: String,
    /// The name alone, e.g. `saddr`.
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
    /// The `{ N, "NAME" }` tables of each `__print_symbolic(REC->field, ...)`
    /// in the print format, by field name. Entries whose value is not a number
    /// (some kernels print enum names unexpanded) are left out.
    pub symbols: HashMap<String, Vec<(u64, String)>>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Bytes of the record that hold fields (common header included).
    pub fn record_len(&self) -> usize {
        self.fields
            .iter()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }

    /// The kernel's name for `value` of a symbolic `field`.
    pub fn symbol(&self, field: &str, value: u64) -> Option<&str> {
        self.symbols
            .get(field)?
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, n)| n.as_str())
    }

    /// The value the kernel gives the name `name` in a symbolic `field`.
    pub fn symbol_value(&self, field: &str, name: &str) -> Option<u64> {
        self.symbols
            .get(field)?
            .iter()
            .find(|(_, n)| n == name)
            .map(|(v, _)| *v)
    }

    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut name = String::new();
        let mut id = None;
        let mut fields = Vec::new();
        let mut symbols = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("name:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("ID:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("field:") {
                fields.push(parse_field(v).ok_or_else(|| FormatError::BadField {
                    line: i + 1,
                    text: line.chars().take(200).collect(),
                })?);
            } else if let Some(v) = line.strip_prefix("print fmt:") {
                symbols = parse_symbolic(v);
            }
        }
        if fields.is_empty() {
            return Err(FormatError::NoFields);
        }
        Ok(Format {
            name,
            id: id.ok_or(FormatError::NoId)?,
            fields,
            symbols,
        })
    }
}

/// `<decl>;\toffset:N;\tsize:N;\tsigned:N;`
fn parse_field(v: &str) -> Option<Field> {
    let mut parts = v.split(';').map(str::trim);
    let decl = parts.next()?.to_string();
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for p in parts {
        if let Some(n) = p.strip_prefix("offset:") {
            offset = n.trim().parse().ok();
        } else if let Some(n) = p.strip_prefix("size:") {
            size = n.trim().parse().ok();
        } else if let Some(n) = p.strip_prefix("signed:") {
            signed = n.trim() == "1";
        }
    }
    // `u8 saddr[4]` ends in its array size; `__data_loc char[] comm` names
    // the field after the type's brackets.
    let base = if decl.ends_with(']') {
        decl.rsplit_once('[')?.0.trim_end()
    } else {
        decl.as_str()
    };
    let name = base
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let (offset, size): (usize, usize) = (offset?, size?);
    // The field's end (record lengths, decoding) must be a number too.
    offset.checked_add(size)?;
    Some(Field {
        decl,
        name,
        offset,
        size,
        signed,
    })
}

/// Every `__print_symbolic(REC->field, { N, "NAME" }, ...)` in a print format.
fn parse_symbolic(fmt: &str) -> HashMap<String, Vec<(u64, String)>> {
    const OPEN: &str = "__print_symbolic(REC->";
    let mut out: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let mut rest = fmt;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let Some(comma) = rest.find(',') else { break };
        let field = rest[..comma].trim().to_string();
        rest = &rest[comma + 1..];
        let entries = out.entry(field).or_default();
        // Entries until the closing parenthesis of this call.
        loop {
            let trimmed = rest.trim_start();
            let Some(body) = trimmed.strip_prefix('{') else {
                rest = trimmed;
                break;
            };
            let Some(close) = body.find('}') else {
                rest = "";
                break;
            };
            let entry = &body[..close];
            rest = body[close + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
            if let Some((num, name)) = entry.split_once(',') {
                let name = name.trim().trim_matches('"');
                if let Some(v) = parse_number(num.trim()) {
                    entries.push((v, name.to_string()));
                }
            }
        }
    }
    out
}

fn parse_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Where tracefs is mounted, mounting it at the standard place if needed.
pub fn find_or_mount() -> io::Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with static C strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {e}"),
        ));
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// Reads and parses `events/<category>/<name>/format` under `root`.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, String> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            format!("tracepoint {category}:{name} does not exist on this kernel")
        }
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    Format::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(kernel: &str, category: &str, name: &str) -> Format {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/kernels")
            .join(kernel);
        read_format(&root, category, name).unwrap()
    }

    #[test]
    fn kfree_skb_6_18_has_reason_at_36_and_rx_sk() {
        let f = testdata("6.18", "skb", "kfree_skb");
        assert_eq!(f.name, "kfree_skb");
        assert_eq!(f.field("reason").unwrap().offset, 36);
        assert_eq!(f.field("reason").unwrap().size, 4);
        assert_eq!(f.field("skbaddr").unwrap().offset, 8);
        assert_eq!(f.field("location").unwrap().offset, 16);
        assert!(f.field("rx_sk").is_some());
        assert_eq!(f.record_len(), 40);
        assert_eq!(f.symbol("reason", 3), Some("NO_SOCKET"));
        assert_eq!(f.symbol_value("reason", "NOT_SPECIFIED"), Some(2));
        assert_eq!(f.symbol_value("reason", "TCP_LISTEN_OVERFLOW"), Some(40));
    }

    #[test]
    fn kfree_skb_6_1_has_reason_at_28() {
        let f = testdata("6.1", "skb", "kfree_skb");
        assert_eq!(f.field("reason").unwrap().offset, 28);
        assert!(f.field("rx_sk").is_none());
        let ns = f.symbol_value("reason", "NO_SOCKET").unwrap();
        assert_eq!(f.symbol("reason", ns), Some("NO_SOCKET"));
        assert!(f.symbol_value("reason", "NOT_SPECIFIED").is_some());
    }

    #[test]
    fn kfree_skb_5_10_has_no_reason() {
        let f = testdata("5.10", "skb", "kfree_skb");
        assert!(f.field("reason").is_none());
        assert!(!f.symbols.contains_key("reason"));
        assert_eq!(f.field("location").unwrap().offset, 16);
        assert_eq!(f.field("protocol").unwrap().size, 2);
    }

    #[test]
    fn send_reset_layouts_differ_before_and_after_6_10() {
        let new = testdata("6.18", "tcp", "tcp_send_reset");
        assert_eq!(new.field("saddr").unwrap().size, 28);
        assert!(new.field("sport").is_none());
        assert_eq!(new.symbol("reason", 1), Some("NO_SOCKET"));
        // Non-numeric symbolic values (TCP_ESTABLISHED...) are skipped.
        assert!(new.symbols.get("state").is_none_or(|v| v.is_empty()));
        let old = testdata("6.1", "tcp", "tcp_send_reset");
        assert_eq!(old.field("saddr").unwrap().size, 4);
        assert_eq!(old.field("saddr_v6").unwrap().size, 16);
        assert!(old.field("sport").is_some());
        assert!(old.field("reason").is_none());
    }

    #[test]
    fn missing_tracepoint_says_so() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/kernels/5.10");
        let err = read_format(&root, "sock", "inet_sk_error_report").unwrap_err();
        assert_eq!(
            err,
            "tracepoint sock:inet_sk_error_report does not exist on this kernel"
        );
    }

    #[test]
    fn every_truncation_of_real_files_parses_or_errs_cleanly() {
        for kernel in ["5.10", "6.1", "6.12", "6.18"] {
            for (cat, name) in [
                ("skb", "kfree_skb"),
                ("tcp", "tcp_send_reset"),
                ("tcp", "tcp_receive_reset"),
            ] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("testdata/kernels")
                    .join(kernel)
                    .join("events")
                    .join(cat)
                    .join(name)
                    .join("format");
                let text = fs::read_to_string(path).unwrap();
                let full = Format::parse(&text).unwrap();
                assert!(
                    full.record_len() <= netprobe_common::RAW_MAX,
                    "{kernel} {name}"
                );
                for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
                    if let Ok(f) = Format::parse(&text[..cut]) {
                        assert!(f.fields.len() <= full.fields.len());
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("name: x\nID: 1\nformat:\n\tfield:int;\n").is_err());
        assert!(Format::parse("field:int a;\toffset:x;\tsize:4;").is_err());
        let f = Format::parse(
            "name: x\nID: 7\nformat:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n\
             print fmt: \"%s\", __print_symbolic(REC->a, { 1, \"ONE\" }, { 0x10, \"SIXTEEN\" }, {",
        )
        .unwrap();
        assert_eq!(f.symbol("a", 16), Some("SIXTEEN"));
        assert!(f.field("a").unwrap().signed);
        // Truncated or unbalanced symbolic tables stop cleanly.
        let _ = parse_symbolic("__print_symbolic(REC->");
        let _ = parse_symbolic("__print_symbolic(REC->x, { 1, \"A\" ");
        let _ = parse_symbolic("__print_symbolic(REC->x { } }");
    }

    /// Found by `cargo xtask fuzz tracefs_format`: a field whose end is past
    /// usize::MAX made `record_len` (and decoding) overflow.
    #[test]
    fn fields_ending_past_usize_max_are_malformed() {
        let text = "ID:5\nfield:u;offset:18446744073709551615;size:2;";
        assert!(matches!(
            Format::parse(text),
            Err(FormatError::BadField { line: 2, .. })
        ));
        let f = Format::parse("ID:5\nfield:u;offset:18446744073709551613;size:2;").unwrap();
        assert_eq!(f.record_len(), usize::MAX);
    }

    #[test]
    fn data_loc_fields_are_named_after_the_brackets() {
        let f = testdata("6.18", "oom", "mark_victim");
        let comm = f.field("comm").unwrap();
        assert_eq!((comm.offset, comm.size), (12, 4));
        assert!(comm.decl.starts_with("__data_loc"));
        assert!(f.field("char").is_none());
        assert_eq!(f.field("oom_score_adj").unwrap().offset, 64);
        let old = testdata("5.10", "oom", "mark_victim");
        assert!(old.field("comm").is_none() && old.field("pid").is_some());
        // Arrays keep their names.
        let r = testdata("6.18", "tcp", "tcp_send_reset");
        assert_eq!(r.field("saddr").unwrap().size, 28);
    }
}
