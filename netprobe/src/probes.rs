//! The probes: which kernel hook each uses, what the running kernel offers,
//! and loading and attaching them. Each probe degrades on its own, with a
//! stated reason; nothing here refuses to start for one missing hook.

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{KProbe, TracePoint},
    Ebpf, EbpfLoader,
};
use netprobe_common::{Config, RAW_MAX};

use crate::{
    btf::Btf,
    decode::Layouts,
    kallsyms::Kallsyms,
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
    /// Kernel functions a kprobe program covers where the tracepoint falls
    /// short on the running kernel (kernel-map.md's attach plans).
    pub kprobe: Option<KprobeSpec>,
}

pub struct KprobeSpec {
    pub program: &'static str,
    pub functions: &'static [&'static str],
    /// What the tracepoint misses that the kprobe sees.
    pub covers: &'static str,
}

impl ProbeSpec {
    pub fn tracepoint_hook(&self) -> String {
        format!("tracepoint {}:{}", self.category, self.tracepoint)
    }
}

pub const DROP: ProbeSpec = ProbeSpec {
    name: "drop",
    program: "kfree_skb",
    category: "skb",
    tracepoint: "kfree_skb",
    kprobe: Some(KprobeSpec {
        program: "tcp_drop",
        functions: &["tcp_drop"],
        covers: "TCP's own drops (tcp_drop frees without the tracepoint)",
    }),
};
pub const RESET_SENT: ProbeSpec = ProbeSpec {
    name: "reset_sent",
    program: "tcp_send_reset",
    category: "tcp",
    tracepoint: "tcp_send_reset",
    kprobe: Some(KprobeSpec {
        program: "send_reset",
        functions: &["tcp_v4_send_reset", "tcp_v6_send_reset"],
        covers: "RSTs sent without a full socket (closed ports)",
    }),
};
pub const RESET_RECEIVED: ProbeSpec = ProbeSpec {
    name: "reset_received",
    program: "tcp_receive_reset",
    category: "tcp",
    tracepoint: "tcp_receive_reset",
    kprobe: None,
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

/// Where the running kernel's BTF is. `NETPROBE_KERNEL_BTF` names another
/// file (tests use a missing one to prove the no-BTF plan).
pub fn kernel_btf_path() -> std::path::PathBuf {
    std::env::var_os("NETPROBE_KERNEL_BTF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into())
}

/// The running kernel's BTF.
pub fn kernel_btf() -> Result<Btf, String> {
    let path = kernel_btf_path();
    let path = path.as_path();
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
pub fn build_config(
    layouts: &Layouts,
    skb: Option<SkbOffsets>,
    sk_state: Option<u32>,
    reset_kprobes: bool,
) -> Config {
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
    if reset_kprobes {
        // The kprobe reports every RST tcp_v{4,6}_send_reset sends; the
        // tracepoint skips those (same skb) and keeps the rest (active resets).
        if let Some(f) = layouts.send_reset.as_ref().and_then(|f| f.field("skbaddr")) {
            if f.size == 8 {
                c.send_reset_skbaddr = f.offset as u32;
            }
        }
    }
    c.receive_reset_len = record_len(&layouts.receive_reset);
    if let Some(state) = sk_state {
        c.sk_state = state;
        if let Some(sk) = layouts
            .receive_reset
            .as_ref()
            .and_then(|f| f.field("skaddr"))
            .filter(|x| x.size == 8)
        {
            c.receive_reset_skaddr = sk.offset as u32;
        }
    }
    if let Some(s) = skb {
        c.skb_head = s.head;
        c.skb_network_header = s.network_header;
        c.skb_transport_header = s.transport_header;
    }
    c
}

/// What the running kernel offers beyond tracepoint formats.
pub struct Offers<'a> {
    /// `Err(why)` when the kernel cannot take kprobes.
    pub kprobes: Result<(), String>,
    pub ksyms: &'a Kallsyms,
    pub skb: Result<SkbOffsets, String>,
    pub sk_state: Result<u32, String>,
}

/// How one probe attaches on this kernel, and what it cannot see here.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The tracepoint's format was found.
    pub tracepoint: bool,
    /// Functions to kprobe with the spec's kprobe program.
    pub kprobes: Vec<&'static str>,
    /// What this kernel costs the probe, in words (empty: nothing).
    pub lost: Vec<String>,
}

/// Whether kprobes can be attached: the kprobe PMU (what aya uses) or the
/// legacy `kprobe_events` file.
pub fn kprobe_support(tracefs_root: &Path) -> Result<(), String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe");
    if pmu.exists() || tracefs_root.join("kprobe_events").exists() {
        Ok(())
    } else {
        Err(format!(
            "this kernel has no kprobes (no {}, no kprobe_events in tracefs: CONFIG_KPROBES is off)",
            pmu.display()
        ))
    }
}

/// kernel-map.md's attach plan for one probe: the tracepoint where the
/// kernel has it, and the kprobes where the tracepoint falls short (no
/// `reason` field: before 5.17 for drops, before 6.10 for sent resets).
pub fn plan(spec: &ProbeSpec, fmt: Option<&Format>, offers: &Offers) -> Plan {
    let mut p = Plan {
        tracepoint: fmt.is_some(),
        kprobes: Vec::new(),
        lost: Vec::new(),
    };
    let has_reason = fmt.is_some_and(|f| f.field("reason").is_some());
    if spec.name == DROP.name {
        if let Err(why) = &offers.skb {
            p.lost.push(format!("flows unknown: {why}"));
        }
        if fmt.is_some() && !has_reason {
            p.lost.push(
                "this kernel gives no drop reasons (before 5.17): classified by drop location"
                    .into(),
            );
        }
    }
    if spec.name == RESET_RECEIVED.name {
        if let Err(why) = &offers.sk_state {
            p.lost.push(format!(
                "socket state unknown, refused connections not told apart: {why}"
            ));
        }
    }
    let Some(k) = &spec.kprobe else {
        return p;
    };
    if has_reason {
        return p;
    }
    let blocked = match (&offers.kprobes, &offers.skb) {
        (Err(why), _) => Some(why.clone()),
        (_, Err(why)) => Some(format!("the kprobe needs sk_buff offsets: {why}")),
        _ => None,
    };
    if let Some(why) = blocked {
        p.lost.push(format!("{} not seen: {why}", k.covers));
        return p;
    }
    for f in k.functions {
        if offers.ksyms.has(f) {
            p.kprobes.push(f);
        } else {
            p.lost.push(format!(
                "{} not seen through {f}: not in /proc/kallsyms (inlined or gone on this kernel)",
                k.covers
            ));
        }
    }
    p
}

/// One probe's outcome: `Ok(None)` attached, `Ok(Some(what))` attached but
/// degraded, `Err(why)` skipped.
pub struct ProbeStatus {
    pub spec: &'static ProbeSpec,
    /// The hooks that attached (or, when none did, the ones tried).
    pub hook: String,
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
    /// /proc/kallsyms, for attach plans and drop locations.
    pub ksyms: Kallsyms,
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
            hook: spec.tracepoint_hook(),
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
        ksyms: Kallsyms::load(),
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
    let offers = Offers {
        kprobes: kprobe_support(&root),
        ksyms: &tracer.ksyms,
        skb: btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(SkbOffsets::from_btf),
        sk_state: btf.as_ref().map_err(Clone::clone).and_then(sk_state_offset),
    };
    drop(btf);
    let formats = [
        tracer.layouts.kfree_skb.as_ref(),
        tracer.layouts.send_reset.as_ref(),
        tracer.layouts.receive_reset.as_ref(),
    ];
    let plans: Vec<Plan> = ALL
        .iter()
        .zip(formats)
        .map(|(spec, fmt)| plan(spec, fmt, &offers))
        .collect();
    let config = build_config(
        &tracer.layouts,
        offers.skb.as_ref().ok().copied(),
        offers.sk_state.as_ref().ok().copied(),
        !plans[1].kprobes.is_empty(),
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
    for (spec, plan) in ALL.into_iter().zip(plans) {
        let mut hooks = Vec::new();
        let mut failed = Vec::new();
        let mut lost = plan.lost;
        if plan.tracepoint {
            match attach_tracepoint(&mut ebpf, spec) {
                Ok(()) => hooks.push(spec.tracepoint_hook()),
                Err(why) => failed.push(format!("{}: {why}", spec.tracepoint_hook())),
            }
        } else if let Some((_, why)) = missing.iter().find(|(s, _)| s.name == spec.name) {
            failed.push(why.clone());
        }
        if let (Some(k), false) = (&spec.kprobe, plan.kprobes.is_empty()) {
            let mut attached = Vec::new();
            for f in &plan.kprobes {
                match attach_kprobe(&mut ebpf, k.program, f) {
                    Ok(()) => attached.push(*f),
                    Err(why) => {
                        lost.push(format!("{} not seen through {f}: {why}", k.covers));
                        failed.push(format!("kprobe {f}: {why}"));
                    }
                }
            }
            if !attached.is_empty() {
                hooks.push(format!("kprobe {}", attached.join(", ")));
            }
        }
        let result = if hooks.is_empty() {
            Err(failed.join("; "))
        } else {
            // Kprobe failures are in `lost` already; a tracepoint failure
            // (first in `failed`) is not.
            if plan.tracepoint && !hooks[0].starts_with("tracepoint") {
                lost.insert(0, failed[0].clone());
            }
            Ok((!lost.is_empty()).then(|| lost.join("; ")))
        };
        let hook = if hooks.is_empty() {
            spec.tracepoint_hook()
        } else {
            hooks.join(" + ")
        };
        tracer.statuses.push(ProbeStatus { spec, hook, result });
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

fn attach_kprobe(ebpf: &mut Ebpf, program: &str, function: &str) -> Result<(), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?;
    let kp: &mut KProbe = prog
        .try_into()
        .map_err(|e: aya::programs::ProgramError| error_text(&e))?;
    // One program serves several functions: load it once.
    if kp.fd().is_err() {
        kp.load()
            .map_err(|e| format!("load failed: {}", error_text(&e)))?;
    }
    kp.attach(function, 0)
        .map_err(|e| format!("attach failed: {}", error_text(&e)))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, spec: &ProbeSpec) -> Result<(), String> {
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
        let c = build_config(&layouts("6.18"), None, None, false);
        assert_eq!(
            (c.kfree_skb_reason, c.kfree_skb_min_reason, c.kfree_skb_len),
            (36, 2, 40)
        );
        assert_eq!(c.kfree_skb_skbaddr, 8);
        assert_eq!(c.send_reset_len, 88);
        assert_eq!(c.skb_head, Config::ABSENT);
        let c = build_config(&layouts("6.1"), None, None, false);
        assert_eq!(c.kfree_skb_reason, 28);
        assert_eq!(
            c.kfree_skb_min_reason as u64,
            layouts("6.1")
                .kfree_skb
                .unwrap()
                .symbol_value("reason", "NOT_SPECIFIED")
                .unwrap()
        );
        let c = build_config(&layouts("5.10"), None, None, false);
        assert_eq!(c.kfree_skb_reason, Config::ABSENT);
        assert!(c.kfree_skb_len > 0 && c.send_reset_len > 0);
        let c = build_config(&Layouts::default(), None, None, true);
        assert_eq!(c, Config::DISABLED);
        // The reset tracepoint skips the kprobe's skbs only beside the kprobe.
        let c = build_config(&layouts("6.1"), None, None, true);
        assert_eq!(c.send_reset_skbaddr, 8);
        assert_eq!(
            build_config(&layouts("6.1"), None, None, false).send_reset_skbaddr,
            Config::ABSENT
        );
    }

    #[test]
    fn skb_offsets_from_real_btf() {
        let s = SkbOffsets::from_btf(&crate::btf::test_btf_6_18()).unwrap();
        assert_eq!(s.transport_header + 2, s.network_header);
        let state = sk_state_offset(&crate::btf::test_btf_6_18()).unwrap();
        let c = build_config(&layouts("6.18"), Some(s), Some(state), false);
        assert_eq!((c.receive_reset_skaddr, c.sk_state), (8, state));
        assert_eq!(c.skb_head, s.head);
        assert!(s.head > s.network_header);
    }

    fn ksyms(kernel: &str) -> Kallsyms {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/kernels")
            .join(kernel)
            .join("kallsyms_selected.txt");
        Kallsyms::parse(&std::fs::read_to_string(path).unwrap())
    }

    fn offers(k: &Kallsyms, kprobes: bool) -> Offers<'_> {
        let skb = SkbOffsets {
            head: 200,
            network_header: 182,
            transport_header: 180,
        };
        Offers {
            kprobes: if kprobes {
                Ok(())
            } else {
                Err("no kprobes here".into())
            },
            ksyms: k,
            skb: Ok(skb),
            sk_state: Ok(18),
        }
    }

    fn plans(kernel: &str, kprobes: bool) -> [Plan; 3] {
        let l = layouts(kernel);
        let k = ksyms(kernel);
        let o = offers(&k, kprobes);
        [
            plan(&DROP, l.kfree_skb.as_ref(), &o),
            plan(&RESET_SENT, l.send_reset.as_ref(), &o),
            plan(&RESET_RECEIVED, l.receive_reset.as_ref(), &o),
        ]
    }

    #[test]
    fn attach_plans_follow_each_kernel() {
        // 6.18 (this host, no kprobes): tracepoints say everything.
        let [drop, rst, rcv] = plans("6.18", false);
        assert!(drop.tracepoint && drop.kprobes.is_empty() && drop.lost.is_empty());
        assert!(rst.tracepoint && rst.kprobes.is_empty() && rst.lost.is_empty());
        assert!(rcv.tracepoint && rcv.lost.is_empty());
        let [_, rst, _] = plans("6.12", true);
        assert!(rst.kprobes.is_empty(), "6.12's tracepoint has reasons");
        // 6.1: reasons for drops, but the reset tracepoint needs a socket.
        let [drop, rst, _] = plans("6.1", true);
        assert!(drop.kprobes.is_empty() && drop.lost.is_empty());
        assert_eq!(rst.kprobes, ["tcp_v4_send_reset", "tcp_v6_send_reset"]);
        assert!(rst.tracepoint && rst.lost.is_empty());
        // 5.10: no reasons, tcp_drop inlined (absent from kallsyms).
        let [drop, rst, _] = plans("5.10", true);
        assert!(drop.tracepoint && drop.kprobes.is_empty());
        assert!(drop.lost.iter().any(|l| l.contains("no drop reasons")));
        assert!(drop
            .lost
            .iter()
            .any(|l| l.contains("tcp_drop: not in /proc/kallsyms")));
        assert_eq!(rst.kprobes.len(), 2);
        // 6.1 without kprobes: the tracepoint alone, and why it falls short.
        let [_, rst, _] = plans("6.1", false);
        assert!(rst.tracepoint && rst.kprobes.is_empty());
        assert_eq!(
            rst.lost,
            ["RSTs sent without a full socket (closed ports) not seen: no kprobes here"]
        );
    }

    #[test]
    fn without_btf_tracepoints_still_attach() {
        let l = layouts("6.1");
        let k = ksyms("6.1");
        let o = Offers {
            skb: Err("kernel BTF unavailable".into()),
            sk_state: Err("kernel BTF unavailable".into()),
            ..offers(&k, true)
        };
        let drop = plan(&DROP, l.kfree_skb.as_ref(), &o);
        assert!(drop.tracepoint);
        assert_eq!(drop.lost, ["flows unknown: kernel BTF unavailable"]);
        let rst = plan(&RESET_SENT, l.send_reset.as_ref(), &o);
        assert!(rst.tracepoint && rst.kprobes.is_empty());
        assert!(rst.lost[0].contains("the kprobe needs sk_buff offsets"));
        let rcv = plan(&RESET_RECEIVED, l.receive_reset.as_ref(), &o);
        assert!(rcv.tracepoint && rcv.lost[0].starts_with("socket state unknown"));
        // A kernel without the tracepoint at all, with kprobes: kprobes only.
        let rst = plan(&RESET_SENT, None, &offers(&k, true));
        assert!(!rst.tracepoint);
        assert_eq!(rst.kprobes.len(), 2);
    }
}
