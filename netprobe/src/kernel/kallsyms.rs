//! Turning kernel text addresses (the drop `location`) into `function+0xoff`,
//! from `/proc/kallsyms`. Addresses read as zero without privilege
//! (kptr_restrict); then nothing is symbolised and the address is shown.

/// Text symbols sorted by address, names packed in one string.
#[derive(Default)]
pub struct Kallsyms {
    syms: Vec<(u64, u32, u16)>,
    names: String,
}

impl Kallsyms {
    /// Parses `/proc/kallsyms` text: `ADDR TYPE NAME [MODULE]` per line.
    /// Malformed lines are skipped.
    pub fn parse(text: &str) -> Kallsyms {
        let mut k = Kallsyms::default();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(ty, "t" | "T") || name.len() > u16::MAX as usize {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let Ok(at) = u32::try_from(k.names.len()) else {
                break;
            };
            k.names.push_str(name);
            k.syms.push((addr, at, name.len() as u16));
        }
        k.syms.sort_unstable_by_key(|s| s.0);
        k.syms.shrink_to_fit();
        k.names.shrink_to_fit();
        k
    }

    pub fn load() -> Kallsyms {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|t| Kallsyms::parse(&t))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The symbol containing `addr`, and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, at, len) = self.syms[i];
        let name = self.names.get(at as usize..at as usize + len as usize)?;
        Some((name, addr - start))
    }

    /// Whether symbol `sym` is called `name`.
    fn named(&self, sym: &(u64, u32, u16), name: &str) -> bool {
        let (_, at, len) = *sym;
        self.names.get(at as usize..at as usize + len as usize) == Some(name)
    }

    /// The index of the first text symbol of this exact name.
    fn position(&self, name: &str) -> Option<usize> {
        self.syms.iter().position(|s| self.named(s, name))
    }

    /// True if the kernel has a text symbol of this exact name.
    pub fn has(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// The addresses of the function `name`: from its symbol to the next
    /// symbol above it. None when unknown, or when the name is not unique
    /// (static functions of the same name in several files).
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.position(name)?;
        let start = self.syms[i].0;
        let rest = &self.syms[i + 1..];
        if rest.iter().any(|s| self.named(s, name)) {
            return None;
        }
        let end = rest.iter().map(|s| s.0).find(|&a| a > start)?;
        Some((start, end))
    }

    /// `name+0xoff`, or the bare address when unknown.
    pub fn describe(&self, addr: u64) -> String {
        Self::render(self.lookup(addr), addr)
    }

    /// `describe` for an address already looked up.
    pub fn render(found: Option<(&str, u64)>, addr: u64) -> String {
        match found {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }
}

/// The selected kallsyms of a kernel kept under `testdata/kernels/<kernel>/`.
#[cfg(test)]
pub(crate) fn test_kallsyms(kernel: &str) -> Kallsyms {
    Kallsyms::parse(&crate::testdata(&format!(
        "kernels/{kernel}/kallsyms_selected.txt"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81a00000 T tcp_v4_rcv
ffffffff81a00800 t tcp_v4_send_reset
ffffffff81a01000 D some_data
ffffffff81a02000 T nf_hook_slow
zzzz T broken
ffffffffc0001000 t nf_conntrack_in\t[nf_conntrack]
";

    #[test]
    fn symbolises_locations() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.describe(0xffffffff81a001a4), "tcp_v4_rcv+0x1a4");
        assert_eq!(k.describe(0xffffffff81a00800), "tcp_v4_send_reset+0x0");
        // Data symbols are not functions: the address belongs to the previous text symbol.
        assert_eq!(k.describe(0xffffffff81a01010), "tcp_v4_send_reset+0x810");
        assert_eq!(k.describe(0xffffffffc0001004), "nf_conntrack_in+0x4");
        assert_eq!(k.describe(0x10), "0x10");
        assert!(k.has("nf_hook_slow"));
        assert!(!k.has("broken"));
        assert!(!k.has("some_data"));
        // A function's addresses run to the next text symbol.
        assert_eq!(
            k.range("tcp_v4_send_reset"),
            Some((0xffffffff81a00800, 0xffffffff81a02000))
        );
        assert_eq!(k.range("nope"), None);
        let twice = Kallsyms::parse(
            "ffffffff81000000 t dup\nffffffff81000100 T x\nffffffff81000200 t dup\n",
        );
        assert_eq!(twice.range("dup"), None, "not unique");
    }

    #[test]
    fn unprivileged_kallsyms_has_no_addresses() {
        let k = Kallsyms::parse("0000000000000000 T tcp_v4_rcv\n0000000000000000 T x\n");
        assert!(k.is_empty());
        assert_eq!(k.describe(0xffffffff81a001a4), "0xffffffff81a001a4");
    }
}
