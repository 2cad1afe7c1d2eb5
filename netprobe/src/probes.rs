//! The probes: which kernel hook each uses, what the running kernel offers,
//! and loading and attaching them. Each probe degrades on its own, with a
//! stated reason; nothing here refuses to start for one missing hook.

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use netprobe_common::{Config, RAW_MAX};

use crate::{
    btf::Btf,
    decode::Layouts,
    tracefs::{self, Format},
};

/// The eBPF object built by build.rs (empty when built without the toolchain).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));
const EBPF_STATUS: &str = env!("NETPROBE_EBPF_STATUS");

pub struct ProbeSpec {
    /// Stable probe name, as in `probe` records.
    pub name: &'static str,
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
}

impl ProbeSpec {
    pub fn hook(&self) -> String {
        format!("tracepoint {}:{}", self.category, self.tracepoint)
    }
}

pub const DROP: ProbeSpec = ProbeSpec {
    name: "drop",
    program: "kfree_skb",
    category: "skb",
    tracepoint: "kfree_skb",
};
pub const RESET_SENT: ProbeSpec = ProbeSpec {
    name: "reset_sent",
    program: "tcp_send_reset",
    category: "tcp",
    tracepoint: "tcp_send_reset",
};
pub const RESET_RECEIVED: ProbeSpec = ProbeSpec {
    name: "reset_received",
    program: "tcp_receive_reset",
    category: "tcp",
    tracepoint: "tcp_receive_reset",
};
pub const ALL: [&ProbeSpec; 3] = [&DROP, &RESET_SENT, &RESET_RECEIVED];

/// Offsets in `struct sk_buff` the drop program follows to the packet headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOffsets {
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
}

impl SkbOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SkbOffsets, String> {
        let head = btf.member("sk_buff", "head").map_err(|e| e.to_string())?;
        let nh = btf
            .member("sk_buff", "network_header")
            .map_err(|e| e.to_string())?;
        let th = btf
            .member("sk_buff", "transport_header")
            .map_err(|e| e.to_string())?;
        if head.size != 8 || nh.size != 2 || th.size != 2 {
            return Err(format!(
                "unexpected sk_buff member sizes (head {}, network_header {}, transport_header {})",
                head.size, nh.size, th.size
            ));
        }
        Ok(SkbOffsets {
            head: head.offset,
            network_header: nh.offset,
            transport_header: th.offset,
        })
    }
}

/// `offsetof(struct sock_common, skc_state)`, a byte.
pub fn sk_state_offset(btf: &Btf) -> Result<u32, String> {
    let m = btf
        .member("sock_common", "skc_state")
        .map_err(|e| e.to_string())?;
    if m.size != 1 {
        return Err(format!(
            "sock_common.skc_state is {} bytes, expected 1",
            m.size
        ));
    }
    Ok(m.offset)
}

/// The running kernel's BTF.
pub fn kernel_btf() -> Result<Btf, String> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let data = std::fs::read(path)
        .map_err(|e| format!("kernel BTF unavailable ({}: {e})", path.display()))?;
    Btf::parse(data).map_err(|e| format!("kernel BTF unreadable: {e}"))
}

fn record_len(fmt: &Option<Format>) -> u32 {
    fmt.as_ref()
        .map(|f| f.record_len().min(RAW_MAX) as u32)
        .unwrap_or(0)
}

/// The programs' `CONFIG` from the running kernel's layouts. A probe whose
/// format is missing gets length 0, which makes its program a no-op.
pub fn build_config(layouts: &Layouts, skb: Option<SkbOffsets>, sk_state: Option<u32>) -> Config {
    let mut c = Config::DISABLED;
    if let Some(f) = &layouts.kfree_skb {
        c.kfree_skb_len = record_len(&layouts.kfree_skb);
        c.kfree_skb_skbaddr = f
            .field("skbaddr")
            .map_or(Config::ABSENT, |x| x.offset as u32);
        if let Some(r) = f.field("reason").filter(|r| r.size == 4) {
            c.kfree_skb_reason = r.offset as u32;
            c.kfree_skb_min_reason = f.symbol_value("reason", "NOT_SPECIFIED").unwrap_or(0) as u32;
        }
    }
    c.send_reset_len = record_len(&layouts.send_reset);
    c.receive_reset_len = record_len(&layouts.receive_reset);
    if let (Some(f), Some(state)) = (&layouts.receive_reset, sk_state) {
        if let Some(sk) = f.field("skaddr").filter(|x| x.size == 8) {
            c.receive_reset_skaddr = sk.offset as u32;
            c.sk_state = state;
        }
    }
    if let Some(s) = skb {
        c.skb_head = s.head;
        c.skb_network_header = s.network_header;
        c.skb_transport_header = s.transport_header;
    }
    c
}

/// One probe's outcome: `Ok(None)` attached, `Ok(Some(what))` attached but
/// degraded, `Err(why)` skipped.
pub struct ProbeStatus {
    pub spec: &'static ProbeSpec,
    pub result: Result<Option<String>, String>,
}

/// Everything attached, and what the daemon needs to read it.
pub struct Tracer {
    /// Holds the programs and their links; dropping it detaches everything.
    pub ebpf: Option<Ebpf>,
    pub layouts: Layouts,
    pub statuses: Vec<ProbeStatus>,
    pub events: Option<RingBuf<MapData>>,
    pub lost: Option<PerCpuArray<MapData, u64>>,
}

impl Tracer {
    pub fn attached(&self) -> usize {
        self.statuses.iter().filter(|s| s.result.is_ok()).count()
    }
}

/// Shortens aya errors (a verifier log can be very long) for a record.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if s.len() > 600 {
        let mut cut = 600;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn all_skipped(why: &str) -> Vec<ProbeStatus> {
    ALL.iter()
        .map(|spec| ProbeStatus {
            spec,
            result: Err(why.to_string()),
        })
        .collect()
}

/// Loads the embedded object with this kernel's configuration and attaches
/// every probe the kernel can take.
pub fn start() -> Tracer {
    let mut tracer = Tracer {
        ebpf: None,
        layouts: Layouts::default(),
        statuses: Vec::new(),
        events: None,
        lost: None,
    };
    if EBPF_OBJECT.is_empty() {
        tracer.statuses = all_skipped(&format!(
            "this netprobe binary was built without its eBPF programs ({EBPF_STATUS}); rebuild with `cargo xtask build`"
        ));
        return tracer;
    }
    let root = match tracefs::find_or_mount() {
        Ok(r) => r,
        Err(e) => {
            tracer.statuses = all_skipped(&e.to_string());
            return tracer;
        }
    };
    let mut missing: Vec<(&'static ProbeSpec, String)> = Vec::new();
    let mut read = |spec: &'static ProbeSpec| match tracefs::read_format(
        &root,
        spec.category,
        spec.tracepoint,
    ) {
        Ok(f) => Some(f),
        Err(why) => {
            missing.push((spec, why));
            None
        }
    };
    tracer.layouts = Layouts {
        kfree_skb: read(&DROP),
        send_reset: read(&RESET_SENT),
        receive_reset: read(&RESET_RECEIVED),
    };
    let btf = kernel_btf();
    let skb = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(SkbOffsets::from_btf);
    let sk_state = btf.as_ref().map_err(Clone::clone).and_then(sk_state_offset);
    drop(btf);
    let config = build_config(
        &tracer.layouts,
        skb.as_ref().ok().copied(),
        sk_state.as_ref().ok().copied(),
    );
    let mut ebpf = match EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .load(EBPF_OBJECT)
    {
        Ok(b) => b,
        Err(e) => {
            tracer.statuses = all_skipped(&format!(
                "loading the eBPF object failed: {}",
                error_text(&e)
            ));
            return tracer;
        }
    };
    for spec in ALL {
        let result = if let Some((_, why)) = missing.iter().find(|(s, _)| s.name == spec.name) {
            Err(why.clone())
        } else {
            attach(&mut ebpf, spec).map(|()| {
                let mut lost = Vec::new();
                if spec.name == RESET_RECEIVED.name {
                    if let Err(why) = &sk_state {
                        lost.push(format!("socket state unknown, refused connections not told apart: {why}"));
                    }
                }
                if spec.name == DROP.name {
                    if let Err(why) = &skb {
                        lost.push(format!("flows unknown: {why}"));
                    }
                    if config.kfree_skb_reason == Config::ABSENT {
                        lost.push("this kernel gives no drop reasons (before 5.17): classified by drop location".into());
                    }
                }
                (!lost.is_empty()).then(|| lost.join("; "))
            })
        };
        tracer.statuses.push(ProbeStatus { spec, result });
    }
    tracer.events = ebpf
        .take_map("EVENTS")
        .and_then(|m| RingBuf::try_from(m).ok());
    tracer.lost = ebpf
        .take_map("LOST")
        .and_then(|m| PerCpuArray::try_from(m).ok());
    if tracer.events.is_none() {
        for s in &mut tracer.statuses {
            s.result = Err("the EVENTS ring buffer could not be opened".into());
        }
    }
    tracer.ebpf = Some(ebpf);
    tracer
}

fn attach(ebpf: &mut Ebpf, spec: &ProbeSpec) -> Result<(), String> {
    let prog = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| format!("program {} missing from the eBPF object", spec.program))?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|e: aya::programs::ProgramError| error_text(&e))?;
    tp.load()
        .map_err(|e| format!("load failed: {}", error_text(&e)))?;
    tp.attach(spec.category, spec.tracepoint)
        .map_err(|e| format!("attach failed: {}", error_text(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_layouts as layouts;

    #[test]
    fn config_follows_each_kernels_format() {
        let c = build_config(&layouts("6.18"), None, None);
        assert_eq!(
            (c.kfree_skb_reason, c.kfree_skb_min_reason, c.kfree_skb_len),
            (36, 2, 40)
        );
        assert_eq!(c.kfree_skb_skbaddr, 8);
        assert_eq!(c.send_reset_len, 88);
        assert_eq!(c.skb_head, Config::ABSENT);
        let c = build_config(&layouts("6.1"), None, None);
        assert_eq!(c.kfree_skb_reason, 28);
        assert_eq!(
            c.kfree_skb_min_reason as u64,
            layouts("6.1")
                .kfree_skb
                .unwrap()
                .symbol_value("reason", "NOT_SPECIFIED")
                .unwrap()
        );
        let c = build_config(&layouts("5.10"), None, None);
        assert_eq!(c.kfree_skb_reason, Config::ABSENT);
        assert!(c.kfree_skb_len > 0 && c.send_reset_len > 0);
        let c = build_config(&Layouts::default(), None, Some(12));
        assert_eq!(c, Config::DISABLED);
    }

    #[test]
    fn skb_offsets_from_real_btf() {
        let s = SkbOffsets::from_btf(&crate::btf::test_btf_6_18()).unwrap();
        assert_eq!(s.transport_header + 2, s.network_header);
        let state = sk_state_offset(&crate::btf::test_btf_6_18()).unwrap();
        let c = build_config(&layouts("6.18"), Some(s), Some(state));
        assert_eq!((c.receive_reset_skaddr, c.sk_state), (8, state));
        assert_eq!(c.skb_head, s.head);
        assert!(s.head > s.network_header);
    }
}
