//! The probes: which kernel hook each uses, what the running kernel offers,
//! and loading and attaching them. Each probe degrades on its own, with a
//! stated reason; nothing here refuses to start for one missing hook.

use crate::families;
use crate::families::drop::DROP;
use crate::families::oom::OOM;
use crate::families::reset::RESET_RECEIVED;
use crate::families::reset::RESET_SENT;
use crate::families::symptoms::RETRANSMIT;
use crate::families::symptoms::SOCKET_ERROR;

use std::path::Path;

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{kprobe::KProbeLinkId, KProbe, TracePoint},
    Ebpf, EbpfLoader,
};
use netprobe_common::{agg, AggTable, Config, RAW_MAX};

use crate::{
    kernel::btf::Btf,
    kernel::kallsyms::Kallsyms,
    kernel::tracefs::{self, Format},
    pipeline::decode::Layouts,
};

/// The eBPF object built by build.rs (empty when built without the toolchain).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));
const EBPF_STATUS: &str = env!("NETPROBE_EBPF_STATUS");

pub struct ProbeSpec {
    /// Stable probe name, as in `probe` records.
    pub name: &'static str,
    pub tracepoint: Option<TracepointSpec>,
    /// kprobes for what the tracepoint misses on the running kernel, or the
    /// probe's only hooks (kernel-map.md's attach plans).
    pub kprobe: Option<KprobeSpec>,
    /// What the probe loses on a kernel that lacks one of these.
    pub needs: &'static [Need],
}

/// Something a probe reads beyond its tracepoint's record, and what it
/// loses (in words, for its `probe` record) where the kernel lacks it.
pub enum Need {
    /// Part of the BTF offsets; the loss is followed by why they are missing.
    Btf(BtfPart, &'static str),
    /// A field of the tracepoint's format.
    Field(&'static str, &'static str),
}

#[derive(Clone, Copy)]
pub enum BtfPart {
    Skb,
    SkState,
}

pub struct TracepointSpec {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
}

pub struct KprobeSpec {
    /// (program in the eBPF object, kernel function it attaches to).
    pub targets: &'static [(&'static str, &'static str)],
    /// What the kprobes see that the tracepoint does not.
    pub covers: &'static str,
    /// Wanted only where the tracepoint's format has no `reason` field.
    pub only_without_reason: bool,
    /// Also reads `struct sock` members (needs their BTF offsets).
    pub needs_sock: bool,
    /// What still shows the failure when the kprobes cannot attach.
    pub without: Option<&'static str>,
    /// The module the functions live in, when it may load after netprobe
    /// starts: the probe then waits for it (kprobe-only probes).
    pub module: Option<&'static str>,
}

impl ProbeSpec {
    /// The hook named when none attached: the tracepoint, else the kprobes.
    pub fn first_hook(&self) -> String {
        match (&self.tracepoint, &self.kprobe) {
            (Some(t), _) => t.hook(),
            (None, Some(k)) => kprobe_hook(k.targets.iter().map(|(_, f)| *f)),
            (None, None) => "none".into(),
        }
    }
}

impl TracepointSpec {
    pub fn hook(&self) -> String {
        format!("tracepoint {}:{}", self.category, self.name)
    }
}

/// `kprobe f, g`: each function once (a kprobe and a kretprobe share one).
fn kprobe_hook<'a>(functions: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for f in functions {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    format!("kprobe {}", names.join(", "))
}

/// Offsets in `struct sk_buff` the drop program follows to the packet headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOffsets {
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
    /// `sk_buff.dev`, `net_device.nd_net.net`, `net.ns.inum`: the packet's
    /// namespace; `None` where BTF lacks one (no network namespaces).
    pub netns: Option<(u32, u32, u32)>,
}

impl SkbOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SkbOffsets, String> {
        let netns = (|| -> Result<(u32, u32, u32), String> {
            Ok((
                sized(btf, "sk_buff", "dev", 8)?,
                sized(btf, "net_device", "nd_net.net", 8)?,
                sized(btf, "net", "ns.inum", 4)?,
            ))
        })()
        .ok();
        Ok(SkbOffsets {
            head: sized(btf, "sk_buff", "head", 8)?,
            network_header: sized(btf, "sk_buff", "network_header", 2)?,
            transport_header: sized(btf, "sk_buff", "transport_header", 2)?,
            netns,
        })
    }
}

/// `offsetof(struct sock_common, skc_state)`, a byte.
pub fn sk_state_offset(btf: &Btf) -> Result<u32, String> {
    sized(btf, "sock_common", "skc_state", 1)
}

fn sized(btf: &Btf, strukt: &str, member: &str, size: u32) -> Result<u32, String> {
    let m = btf.member(strukt, member).map_err(|e| e.to_string())?;
    if m.size != size {
        return Err(format!(
            "{strukt}.{member} is {} bytes, expected {size}",
            m.size
        ));
    }
    Ok(m.offset)
}

/// The `struct sock_common` / `struct sock` members the programs read into
/// `SockInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockOffsets {
    pub family: u32,
    pub num: u32,
    pub rcv_saddr: u32,
    pub v6_rcv_saddr: u32,
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    pub rcvbuf: u32,
    pub rmem_alloc: u32,
    /// `skc_net.net`, where the kernel has network namespaces.
    pub net: Option<u32>,
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<SockOffsets, String> {
        Ok(SockOffsets {
            family: sized(btf, "sock_common", "skc_family", 2)?,
            num: sized(btf, "sock_common", "skc_num", 2)?,
            rcv_saddr: sized(btf, "sock_common", "skc_rcv_saddr", 4)?,
            v6_rcv_saddr: sized(btf, "sock_common", "skc_v6_rcv_saddr", 16)?,
            ack_backlog: sized(btf, "sock", "sk_ack_backlog", 4)?,
            max_ack_backlog: sized(btf, "sock", "sk_max_ack_backlog", 4)?,
            rcvbuf: sized(btf, "sock", "sk_rcvbuf", 4)?,
            rmem_alloc: sized(btf, "sock", "sk_backlog.rmem_alloc", 4)?,
            net: sized(btf, "sock_common", "skc_net.net", 8).ok(),
        })
    }
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
    let data = std::fs::read(&path)
        .map_err(|e| format!("kernel BTF unavailable ({}: {e})", path.display()))?;
    Btf::parse(data).map_err(|e| format!("kernel BTF unreadable: {e}"))
}

/// Everything the programs need from BTF; each part `Err(why)` on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfOffsets {
    pub skb: Result<SkbOffsets, String>,
    pub sk_state: Result<u32, String>,
    pub sock: Result<SockOffsets, String>,
}

impl BtfOffsets {
    pub fn read(btf: &Result<Btf, String>) -> BtfOffsets {
        match btf {
            Ok(b) => BtfOffsets {
                skb: SkbOffsets::from_btf(b),
                sk_state: sk_state_offset(b),
                sock: SockOffsets::from_btf(b),
            },
            Err(why) => BtfOffsets::unavailable(why),
        }
    }

    pub fn unavailable(why: &str) -> BtfOffsets {
        BtfOffsets {
            skb: Err(why.to_string()),
            sk_state: Err(why.to_string()),
            sock: Err(why.to_string()),
        }
    }
}

fn record_len(fmt: &Option<Format>) -> u32 {
    fmt.as_ref()
        .map(|f| f.record_len().min(RAW_MAX) as u32)
        .unwrap_or(0)
}

/// Bytes after a record's fixed part that hold its `__data_loc` strings
/// (mark_victim's `comm`: at most 16, after padding to 8).
const DATA_LOC_SLACK: u32 = 32;

/// The programs' `CONFIG` from the running kernel's layouts. A probe whose
/// format is missing gets length 0, which makes its program a no-op.
pub fn build_config(layouts: &Layouts, btf: &BtfOffsets, reset_kprobes: bool) -> Config {
    let mut c = Config::DISABLED;
    if let Some(f) = &layouts.kfree_skb {
        c.kfree_skb_len = record_len(&layouts.kfree_skb);
        c.kfree_skb_skbaddr = f
            .field("skbaddr")
            .map_or(Config::ABSENT, |x| x.offset as u32);
        if let Some(r) = f.field("reason").filter(|r| r.size == 4) {
            c.kfree_skb_reason = r.offset as u32;
            c.kfree_skb_min_reason = f.symbol_value("reason", "NOT_SPECIFIED").unwrap_or(0) as u32;
            c.kfree_skb_purge_reason = f
                .symbol_value("reason", "QUEUE_PURGE")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(Config::ABSENT);
        }
        if let Some(r) = f.field("rx_sk").filter(|r| r.size == 8) {
            c.kfree_skb_rx_sk = r.offset as u32;
        }
        if let Some(l) = f.field("location").filter(|l| l.size == 8) {
            c.kfree_skb_location = l.offset as u32;
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
    if let Ok(state) = btf.sk_state {
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
    if let Ok(s) = btf.skb {
        c.skb_head = s.head;
        c.skb_network_header = s.network_header;
        c.skb_transport_header = s.transport_header;
        if let Some((dev, nd_net, inum)) = s.netns {
            (c.skb_dev, c.dev_nd_net, c.net_ns_inum) = (dev, nd_net, inum);
        }
    }
    if let Ok(s) = btf.sock {
        c.skc_family = s.family;
        c.skc_num = s.num;
        c.skc_rcv_saddr = s.rcv_saddr;
        c.skc_v6_rcv_saddr = s.v6_rcv_saddr;
        c.sk_ack_backlog = s.ack_backlog;
        c.sk_max_ack_backlog = s.max_ack_backlog;
        c.sk_rcvbuf = s.rcvbuf;
        c.sk_rmem_alloc = s.rmem_alloc;
        // A socket's namespace needs struct net's inode offset too.
        if c.net_ns_inum != Config::ABSENT {
            c.sk_net = s.net.unwrap_or(Config::ABSENT);
        }
    }
    if layouts.oom.is_some() {
        c.oom_len = (record_len(&layouts.oom) + DATA_LOC_SLACK).min(RAW_MAX as u32);
    }
    c.retransmit_len = record_len(&layouts.retransmit);
    // Pointers in the records the programs follow to a namespace.
    let pointer = |f: &Option<crate::kernel::tracefs::Format>, name: &str| {
        f.as_ref()
            .and_then(|f| f.field(name))
            .filter(|x| x.size == 8)
            .map_or(Config::ABSENT, |x| x.offset as u32)
    };
    c.retransmit_skaddr = pointer(&layouts.retransmit, "skaddr");
    c.send_reset_sk = pointer(&layouts.send_reset, "skaddr");
    c.send_reset_skb = pointer(&layouts.send_reset, "skbaddr");
    c.sk_error_len = record_len(&layouts.sk_error);
    if let Some(e) = layouts
        .sk_error
        .as_ref()
        .and_then(|f| f.field("error"))
        .filter(|e| e.size == 4)
    {
        c.sk_error_error = e.offset as u32;
    }
    c
}

/// The function whose frees are a destroyed socket's queues (6.4+ names
/// them QUEUE_PURGE).
const PURGE_FUNCTION: &str = "sk_stream_kill_queues";

/// On a kernel without drop reasons, the text addresses of
/// `PURGE_FUNCTION`, whose frees the drop program skips: the last FIN of
/// every cleanly closed connection, not a failure. (0, 0) where the kernel
/// gives reasons (QUEUE_PURGE says it) or kallsyms does not know it.
pub fn purge_range(layouts: &Layouts, ksyms: &Kallsyms) -> (u64, u64) {
    let Some(f) = &layouts.kfree_skb else {
        return (0, 0);
    };
    if f.field("reason").is_some() || f.field("location").is_none_or(|l| l.size != 8) {
        return (0, 0);
    }
    ksyms.range(PURGE_FUNCTION).unwrap_or((0, 0))
}

/// What the running kernel offers beyond tracepoint formats.
pub struct Offers<'a> {
    /// `Err(why)` when the kernel cannot take kprobes.
    pub kprobes: Result<(), String>,
    pub ksyms: &'a Kallsyms,
    pub btf: BtfOffsets,
    /// Live modules (/proc/modules).
    pub modules: &'a [String],
}

/// How one probe attaches on this kernel, and what it cannot see here.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The tracepoint's format was found.
    pub tracepoint: bool,
    /// (program, function) pairs to kprobe.
    pub kprobes: Vec<(&'static str, &'static str)>,
    /// What this kernel costs the probe, in words (empty: nothing).
    pub lost: Vec<String>,
    /// Why nothing can attach, when the plan has no hook at all.
    pub none: Option<String>,
    /// The module this kprobe-only probe waits for (not loaded yet).
    pub pending: Option<&'static str>,
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
/// `reason` field: before 5.17 for drops, before 6.10 for sent resets) or
/// where they are the probe's only hooks. `fmt` is the tracepoint's format,
/// `Err(why)` when it is missing.
pub fn plan(spec: &ProbeSpec, fmt: Result<&Format, &str>, offers: &Offers) -> Plan {
    let mut p = Plan {
        tracepoint: spec.tracepoint.is_some() && fmt.is_ok(),
        kprobes: Vec::new(),
        lost: Vec::new(),
        none: None,
        pending: None,
    };
    let has_reason = fmt.is_ok_and(|f| f.field("reason").is_some());
    for need in spec.needs {
        match need {
            Need::Btf(part, loss) => {
                let offsets = match part {
                    BtfPart::Skb => offers.btf.skb.as_ref().err(),
                    BtfPart::SkState => offers.btf.sk_state.as_ref().err(),
                };
                if let Some(why) = offsets {
                    p.lost.push(format!("{loss}: {why}"));
                }
            }
            Need::Field(field, loss) => {
                if fmt.is_ok_and(|f| f.field(field).is_none()) {
                    p.lost.push(loss.to_string());
                }
            }
        }
    }
    let tracepoint_missing = match (&spec.tracepoint, fmt) {
        (Some(_), Err(why)) => Some(why.to_string()),
        _ => None,
    };
    let Some(k) = &spec.kprobe else {
        p.none = tracepoint_missing;
        return p;
    };
    if k.only_without_reason && has_reason {
        return p;
    }
    let blocked = match (&offers.kprobes, &offers.btf.skb, &offers.btf.sock) {
        (Err(why), _, _) => Some(why.clone()),
        (_, Err(why), _) => Some(format!("the kprobes need sk_buff offsets: {why}")),
        (_, _, Err(why)) if k.needs_sock => {
            Some(format!("the kprobes need struct sock offsets: {why}"))
        }
        _ => None,
    };
    if let Some(why) = blocked {
        if p.tracepoint {
            p.lost.push(format!("{} not seen: {why}", k.covers));
        } else {
            p.none = Some(match tracepoint_missing {
                Some(tp) => format!("{tp}; {why}"),
                None => why,
            });
            add_without(&mut p, k);
        }
        return p;
    }
    if let Some(m) = k.module {
        let unloaded = !offers.modules.iter().any(|x| x == m)
            && !k.targets.iter().any(|(_, f)| offers.ksyms.has(f));
        if unloaded && !p.tracepoint {
            p.pending = Some(m);
            p.none = Some(waiting_for(m));
            add_without(&mut p, k);
            return p;
        }
    }
    for &(program, f) in k.targets {
        if offers.ksyms.has(f) {
            p.kprobes.push((program, f));
        } else {
            p.lost.push(format!(
                "{} not seen through {f}: not in /proc/kallsyms (inlined or gone on this kernel)",
                k.covers
            ));
        }
    }
    if !p.tracepoint && p.kprobes.is_empty() {
        p.none = Some(p.lost.join("; "));
    }
    add_without(&mut p, k);
    p
}

fn waiting_for(module: &str) -> String {
    format!("waiting for module {module} to load (attaches when it does)")
}

/// The live modules in `/proc/modules` text (`NAME SIZE REFS DEPS STATE
/// ADDR`, parsed by procfs); modules still loading or going away are left
/// out. Line by line, so one odd line costs only itself.
pub fn live_modules(text: &str) -> Vec<String> {
    use procfs::FromRead as _;
    let mut live: Vec<String> = text
        .lines()
        .filter_map(|l| procfs::KernelModules::from_read(l.as_bytes()).ok())
        .flat_map(|m| m.0.into_values())
        .filter(|m| m.state == "Live")
        .map(|m| m.name)
        .collect();
    live.sort();
    live
}

pub fn read_live_modules() -> Vec<String> {
    std::fs::read_to_string("/proc/modules")
        .map(|t| live_modules(&t))
        .unwrap_or_default()
}

/// Says, in a skipped probe's reason, what still shows its failure.
fn add_without(p: &mut Plan, k: &KprobeSpec) {
    if let (Some(none), Some(without)) = (&mut p.none, k.without) {
        none.push_str("; ");
        none.push_str(without);
    }
}

/// One probe's outcome: `Ok(None)` attached, `Ok(Some(what))` attached but
/// degraded, `Err(why)` skipped.
pub struct ProbeStatus {
    pub spec: &'static ProbeSpec,
    /// The hooks that attached (or, when none did, the ones tried).
    pub hook: String,
    pub result: Result<Option<String>, String>,
    /// The module a skipped probe waits for.
    pub pending: Option<&'static str>,
    /// The kprobe links, (program, link), so a probe on a module that goes
    /// away can detach and wait for it again.
    pub links: Vec<(&'static str, KProbeLinkId)>,
}

impl ProbeStatus {
    fn skipped(spec: &'static ProbeSpec, why: String) -> ProbeStatus {
        ProbeStatus {
            spec,
            hook: spec.first_hook(),
            result: Err(why),
            pending: None,
            links: Vec::new(),
        }
    }
}

/// Everything attached, and what the daemon needs to read it.
pub struct Tracer {
    /// Holds the programs and their links; dropping it detaches everything.
    pub ebpf: Option<Ebpf>,
    pub layouts: Layouts,
    pub statuses: Vec<ProbeStatus>,
    pub events: Option<RingBuf<MapData>>,
    pub lost: Option<PerCpuArray<MapData, u64>>,
    /// In-kernel aggregation: each CPU's slot, and the settings.
    pub agg: Option<PerCpuArray<MapData, AggTable>>,
    pub agg_settings: Option<Array<MapData, u64>>,
    /// Per CPU, the most bytes the ring buffer held unread after a write.
    pub rb_peak: Option<PerCpuArray<MapData, u64>>,
    /// /proc/kallsyms, for attach plans and drop locations.
    pub ksyms: Kallsyms,
    /// The programs' aya-log lines (`probe-log` builds only).
    #[cfg(feature = "probe-log")]
    pub probe_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Tracer {
    pub fn attached(&self) -> usize {
        self.statuses.iter().filter(|s| s.result.is_ok()).count()
    }

    /// Passes the programs' aya-log lines on as diagnostics (nothing
    /// without the `probe-log` feature).
    pub fn flush_probe_log(&mut self) {
        #[cfg(feature = "probe-log")]
        if let Some(l) = self.probe_log.as_mut() {
            l.flush();
        }
    }

    /// Whether the programs carry aya-log lines (`probe-log` builds).
    pub const PROBE_LOG: bool = cfg!(feature = "probe-log");

    /// Turns in-kernel aggregation on (a window in nanoseconds) or off
    /// (0), keeping both ports in its key or only the service port.
    pub fn set_aggregation(&mut self, window_ns: u64, keep_ports: bool) -> Result<(), String> {
        let settings = self
            .agg_settings
            .as_mut()
            .ok_or("the AGG_SETTINGS map could not be opened")?;
        settings
            .set(agg::SETTING_KEEP_PORTS, u64::from(keep_ports), 0)
            .and_then(|()| settings.set(agg::SETTING_WINDOW_NS, window_ns, 0))
            .map_err(|e| format!("cannot write AGG_SETTINGS: {}", error_text(&e)))
    }

    /// The most bytes the ring buffer has held unread (sampled as records
    /// are written), if it can be read.
    pub fn ring_buffer_peak(&self) -> Option<u64> {
        let per_cpu = self.rb_peak.as_ref()?.get(&0, 0).ok()?;
        per_cpu.iter().copied().max()
    }

    /// Each CPU's aggregation table, by CPU number.
    pub fn agg_tables(&self) -> Vec<AggTable> {
        self.agg
            .as_ref()
            .and_then(|m| m.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().copied().collect())
            .unwrap_or_default()
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
    families::probes()
        .map(|spec| ProbeStatus::skipped(spec, why.to_string()))
        .collect()
}

/// The format of `spec`'s tracepoint among `layouts`.
fn format_of<'a>(spec: &ProbeSpec, layouts: &'a Layouts) -> Option<&'a Format> {
    match spec.name {
        n if n == DROP.name => layouts.kfree_skb.as_ref(),
        n if n == RESET_SENT.name => layouts.send_reset.as_ref(),
        n if n == RESET_RECEIVED.name => layouts.receive_reset.as_ref(),
        n if n == OOM.name => layouts.oom.as_ref(),
        n if n == RETRANSMIT.name => layouts.retransmit.as_ref(),
        n if n == SOCKET_ERROR.name => layouts.sk_error.as_ref(),
        _ => None,
    }
}

/// The ring buffer's size unless `--ring-buffer` says otherwise.
/// Measured: a burst of records that cannot be aggregated (refused
/// connections to 30,000 different ports, 120,000 records in 0.65 s on
/// the project's 2-core machine) left up to 4.36 MB unread while the
/// daemon kept up on average (0.7 to 4.4 MB over runs); 8 MiB holds the
/// worst of them twice. A flood of one flow, counted in the kernel, peaks
/// at one record (360 bytes).
pub const DEFAULT_RING_BUFFER: u32 = 1 << 23;

/// `--ring-buffer`: bytes, with an optional K or M suffix; the kernel wants
/// a power of two, at least a page.
pub fn parse_ring_buffer(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size (e.g. 4M, 256K, 65536)"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    if !n.is_power_of_two() || n < page || n > 1 << 30 {
        return Err(format!(
            "`{s}`: the ring buffer must be a power of two from {page} bytes to 1G"
        ));
    }
    Ok(n as u32)
}

/// Loads the embedded object with this kernel's configuration and attaches
/// every probe the kernel can take.
pub fn start() -> Tracer {
    start_with(DEFAULT_RING_BUFFER)
}

/// As `start`, with a ring buffer of `ring_bytes`.
pub fn start_with(ring_bytes: u32) -> Tracer {
    let mut tracer = Tracer {
        ebpf: None,
        layouts: Layouts::default(),
        statuses: Vec::new(),
        events: None,
        lost: None,
        agg: None,
        agg_settings: None,
        rb_peak: None,
        ksyms: Kallsyms::load(),
        #[cfg(feature = "probe-log")]
        probe_log: None,
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
    let mut missing: Vec<(&'static str, String)> = Vec::new();
    let mut read = |spec: &'static ProbeSpec| {
        let t = spec.tracepoint.as_ref()?;
        match tracefs::read_format(&root, t.category, t.name) {
            Ok(f) => Some(f),
            Err(why) => {
                missing.push((spec.name, why));
                None
            }
        }
    };
    tracer.layouts = Layouts {
        kfree_skb: read(&DROP),
        send_reset: read(&RESET_SENT),
        receive_reset: read(&RESET_RECEIVED),
        oom: read(&OOM),
        retransmit: read(&RETRANSMIT),
        sk_error: read(&SOCKET_ERROR),
    };
    let modules = read_live_modules();
    let offers = Offers {
        kprobes: kprobe_support(&root),
        ksyms: &tracer.ksyms,
        btf: BtfOffsets::read(&kernel_btf()),
        modules: &modules,
    };
    let plans: Vec<Plan> = families::probes()
        .map(|spec| {
            let fmt = format_of(spec, &tracer.layouts).ok_or_else(|| {
                missing
                    .iter()
                    .find(|(n, _)| *n == spec.name)
                    .map_or("no tracepoint", |(_, why)| why.as_str())
            });
            plan(spec, fmt, &offers)
        })
        .collect();
    let reset_kprobes = families::probes()
        .zip(&plans)
        .any(|(spec, p)| spec.name == RESET_SENT.name && !p.kprobes.is_empty());
    let mut config = build_config(&tracer.layouts, &offers.btf, reset_kprobes);
    (config.purge_start, config.purge_end) = purge_range(&tracer.layouts, &tracer.ksyms);
    let agg_config = crate::pipeline::kagg::build_config(&tracer.layouts);
    let mut ebpf = match EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .override_global("AGG_CONFIG", &agg_config, true)
        .map_max_entries("EVENTS", ring_bytes)
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
    for (spec, plan) in families::probes().zip(plans) {
        let status = attach_plan(&mut ebpf, spec, plan);
        tracer.statuses.push(status);
    }
    tracer.events = take_map(&mut ebpf, "EVENTS");
    tracer.lost = take_map(&mut ebpf, "LOST");
    tracer.agg = take_map(&mut ebpf, "AGG");
    tracer.agg_settings = take_map(&mut ebpf, "AGG_SETTINGS");
    tracer.rb_peak = take_map(&mut ebpf, "RB_PEAK");
    #[cfg(feature = "probe-log")]
    {
        tracer.probe_log = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("the programs' aya-log lines cannot be read: {e}");
                None
            }
        };
    }
    if tracer.events.is_none() {
        for s in &mut tracer.statuses {
            s.result = Err("the EVENTS ring buffer could not be opened".into());
        }
    }
    tracer.ebpf = Some(ebpf);
    tracer
}

/// The map `name` of the loaded object, as the type the daemon reads it
/// as; None when it is missing or of another type.
fn take_map<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Option<T> {
    ebpf.take_map(name).and_then(|m| T::try_from(m).ok())
}

/// Attaches what `plan` says; the probe is attached when any hook is.
fn attach_plan(ebpf: &mut Ebpf, spec: &'static ProbeSpec, plan: Plan) -> ProbeStatus {
    if let Some(why) = plan.none {
        return ProbeStatus {
            pending: plan.pending,
            ..ProbeStatus::skipped(spec, why)
        };
    }
    let mut hooks = Vec::new();
    let mut lost = plan.lost;
    let mut failed = Vec::new();
    if let (Some(t), true) = (&spec.tracepoint, plan.tracepoint) {
        match attach_tracepoint(ebpf, t) {
            Ok(()) => hooks.push(t.hook()),
            Err(why) => {
                let why = format!("{}: {why}", t.hook());
                lost.insert(0, why.clone());
                failed.push(why);
            }
        }
    }
    let mut attached = Vec::new();
    let mut links = Vec::new();
    if let Some(k) = &spec.kprobe {
        for (program, f) in plan.kprobes {
            match attach_kprobe(ebpf, program, f) {
                Ok(link) => {
                    links.push((program, link));
                    if !attached.contains(&f) {
                        attached.push(f);
                    }
                }
                Err(why) => {
                    lost.push(format!("{} not seen through {f}: {why}", k.covers));
                    failed.push(format!("kprobe {f}: {why}"));
                }
            }
        }
    }
    if !attached.is_empty() {
        hooks.push(kprobe_hook(attached.into_iter()));
    }
    if hooks.is_empty() {
        return ProbeStatus::skipped(spec, failed.join("; "));
    }
    ProbeStatus {
        spec,
        hook: hooks.join(" + "),
        result: Ok((!lost.is_empty()).then(|| lost.join("; "))),
        pending: None,
        links,
    }
}

/// Follows the modules kprobe-only probes live in, given the live modules:
/// a waiting probe attaches once its module has loaded; an attached one
/// detaches when its module is gone (the kernel disarms those kprobes) and
/// waits for it again. Returns the indexes of the statuses that changed.
pub fn follow_modules(tracer: &mut Tracer, live: &[String]) -> Vec<usize> {
    let Some(ebpf) = tracer.ebpf.as_mut() else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (i, st) in tracer.statuses.iter_mut().enumerate() {
        let Some(k) = &st.spec.kprobe else { continue };
        let Some(m) = k.module else { continue };
        let loaded = live.iter().any(|x| x == m);
        if st.pending.is_some() && loaded {
            let plan = Plan {
                tracepoint: false,
                kprobes: k.targets.to_vec(),
                lost: Vec::new(),
                none: None,
                pending: None,
            };
            *st = attach_plan(ebpf, st.spec, plan);
            changed.push(i);
        } else if st.pending.is_none() && !st.links.is_empty() && !loaded {
            for (program, link) in st.links.drain(..) {
                if let Some(kp) = ebpf
                    .program_mut(program)
                    .and_then(|p| <&mut KProbe>::try_from(p).ok())
                {
                    let _ = kp.detach(link);
                }
            }
            *st = ProbeStatus {
                pending: Some(m),
                ..ProbeStatus::skipped(st.spec, format!("module {m} unloaded; {}", waiting_for(m)))
            };
            changed.push(i);
        }
    }
    changed
}

fn attach_kprobe(ebpf: &mut Ebpf, program: &str, function: &str) -> Result<KProbeLinkId, String> {
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
        .map_err(|e| format!("attach failed: {}", error_text(&e)))
}

fn attach_tracepoint(ebpf: &mut Ebpf, t: &TracepointSpec) -> Result<(), String> {
    let prog = ebpf
        .program_mut(t.program)
        .ok_or_else(|| format!("program {} missing from the eBPF object", t.program))?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|e: aya::programs::ProgramError| error_text(&e))?;
    tp.load()
        .map_err(|e| format!("load failed: {}", error_text(&e)))?;
    tp.attach(t.category, t.name)
        .map_err(|e| format!("attach failed: {}", error_text(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::{conntrack::CONNTRACK, listen::LISTEN_OVERFLOW};
    use crate::pipeline::decode::test_layouts as layouts;

    fn none() -> BtfOffsets {
        BtfOffsets::unavailable("no BTF in this test")
    }

    #[test]
    fn ring_buffer_sizes() {
        assert_eq!(parse_ring_buffer("4M"), Ok(4 << 20));
        assert_eq!(parse_ring_buffer("256k"), Ok(256 << 10));
        assert_eq!(parse_ring_buffer("65536"), Ok(65536));
        assert!(parse_ring_buffer("3M")
            .unwrap_err()
            .contains("power of two"));
        assert!(parse_ring_buffer("1").unwrap_err().contains("power of two"));
        assert!(parse_ring_buffer("2G").is_err());
        assert!(parse_ring_buffer("x").unwrap_err().contains("not a size"));
        assert!(parse_ring_buffer("99999999999999999999M").is_err());
    }

    #[test]
    fn config_follows_each_kernels_format() {
        let c = build_config(&layouts("6.18"), &none(), false);
        assert_eq!(
            (c.kfree_skb_reason, c.kfree_skb_min_reason, c.kfree_skb_len),
            (36, 2, 40)
        );
        assert_eq!(c.kfree_skb_skbaddr, 8);
        // QUEUE_PURGE (6.4+) from the format file: 104 on 6.18, 91 on 6.12.
        assert_eq!(c.kfree_skb_purge_reason, 104);
        assert_eq!(
            build_config(&layouts("6.12"), &none(), false).kfree_skb_purge_reason,
            91
        );
        assert_eq!(
            build_config(&layouts("6.1"), &none(), false).kfree_skb_purge_reason,
            Config::ABSENT
        );
        assert_eq!(c.send_reset_len, 88);
        assert_eq!(c.skb_head, Config::ABSENT);
        assert_eq!(c.sk_error_error, 8);
        let c = build_config(&layouts("6.1"), &none(), false);
        assert_eq!(c.kfree_skb_reason, 28);
        assert_eq!(
            c.kfree_skb_min_reason as u64,
            layouts("6.1")
                .kfree_skb
                .unwrap()
                .symbol_value("reason", "NOT_SPECIFIED")
                .unwrap()
        );
        let c = build_config(&layouts("5.10"), &none(), false);
        assert_eq!(c.kfree_skb_reason, Config::ABSENT);
        assert!(c.kfree_skb_len > 0 && c.send_reset_len > 0);
        let c = build_config(&Layouts::default(), &none(), true);
        assert_eq!(c, Config::DISABLED);
        // The reset tracepoint skips the kprobe's skbs only beside the kprobe.
        let c = build_config(&layouts("6.1"), &none(), true);
        assert_eq!(c.send_reset_skbaddr, 8);
        assert_eq!(
            build_config(&layouts("6.1"), &none(), false).send_reset_skbaddr,
            Config::ABSENT
        );
    }

    #[test]
    fn skb_offsets_from_real_btf() {
        let s = SkbOffsets::from_btf(&crate::kernel::btf::test_btf_6_18()).unwrap();
        assert_eq!(s.transport_header + 2, s.network_header);
        // 6.18's sk_buff.dev, net_device.nd_net.net, net.ns.inum.
        assert_eq!(s.netns, Some((16, 264, 176)));
        let state = sk_state_offset(&crate::kernel::btf::test_btf_6_18()).unwrap();
        let sock = SockOffsets::from_btf(&crate::kernel::btf::test_btf_6_18()).unwrap();
        let btf = BtfOffsets {
            skb: Ok(s),
            sk_state: Ok(state),
            sock: Ok(sock),
        };
        let c = build_config(&layouts("6.18"), &btf, false);
        assert_eq!(c.kfree_skb_rx_sk, 24, "rx_sk on 6.18");
        assert_eq!((c.skb_dev, c.dev_nd_net, c.net_ns_inum), (16, 264, 176));
        assert_eq!((c.skc_num, c.sk_rmem_alloc), (sock.num, sock.rmem_alloc));
        assert!(c.sk_max_ack_backlog != Config::ABSENT && c.sk_rcvbuf != Config::ABSENT);
        // mark_victim's fixed part and its comm string.
        assert!(c.oom_len >= 66 + 16 && c.oom_len as usize <= RAW_MAX);
        assert_eq!(
            build_config(&layouts("6.1"), &btf, false).kfree_skb_rx_sk,
            Config::ABSENT
        );
        assert_eq!((c.receive_reset_skaddr, c.sk_state), (8, state));
        // A socket's namespace: skc_net.net inside sock_common, and the
        // records' socket and skb pointers (6.18's formats).
        assert!(sock.net.is_some_and(|n| n < 136), "{:?}", sock.net);
        assert_eq!(c.sk_net, sock.net.unwrap());
        assert_eq!((c.send_reset_skb, c.send_reset_sk), (8, 16));
        assert_ne!(c.retransmit_skaddr, Config::ABSENT);
        assert_eq!(c.skb_head, s.head);
        assert!(s.head > s.network_header);
    }

    #[test]
    fn the_purge_is_found_by_location_only_without_reasons() {
        // The 6.18 kallsyms lines stand in for a kernel without reasons:
        // the function's range is the same lookup.
        let k = ksyms("6.18");
        assert_eq!(
            purge_range(&layouts("5.10"), &k),
            (0xffff_ffff_81e4_d970, 0xffff_ffff_81e4_da60)
        );
        assert_eq!(
            purge_range(&layouts("6.18"), &k),
            (0, 0),
            "QUEUE_PURGE says it"
        );
        assert_eq!(purge_range(&layouts("5.10"), &Kallsyms::default()), (0, 0));
        let c = build_config(&layouts("5.10"), &none(), false);
        assert_eq!(c.kfree_skb_location, 16);
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
            netns: None,
        };
        Offers {
            kprobes: if kprobes {
                Ok(())
            } else {
                Err("no kprobes here".into())
            },
            ksyms: k,
            modules: &[],
            btf: BtfOffsets {
                skb: Ok(skb),
                sk_state: Ok(18),
                sock: SockOffsets::from_btf(&crate::kernel::btf::test_btf_6_18()),
            },
        }
    }

    /// Each probe's plan, in the registry's order (eight probes).
    fn plans(kernel: &str, kprobes: bool) -> [Plan; 8] {
        let l = layouts(kernel);
        let k = ksyms(kernel);
        let o = offers(&k, kprobes);
        let all: Vec<Plan> = families::probes()
            .map(|spec| plan(spec, format_of(spec, &l).ok_or("absent"), &o))
            .collect();
        all.try_into()
            .unwrap_or_else(|v: Vec<Plan>| panic!("{} probes", v.len()))
    }

    #[test]
    fn attach_plans_follow_each_kernel() {
        // 6.18 (this host, no kprobes): tracepoints say everything.
        let [drop, rst, rcv, listen, oom, retransmit, errors, _] = plans("6.18", false);
        assert!(retransmit.tracepoint && retransmit.none.is_none());
        assert!(errors.tracepoint && errors.none.is_none());
        assert!(drop.tracepoint && drop.kprobes.is_empty() && drop.lost.is_empty());
        assert!(rst.tracepoint && rst.kprobes.is_empty() && rst.lost.is_empty());
        assert!(rcv.tracepoint && rcv.lost.is_empty());
        // Kprobes only: skipped here, with why.
        assert!(!listen.tracepoint && listen.kprobes.is_empty());
        assert!(listen
            .none
            .as_deref()
            .unwrap()
            .starts_with("no kprobes here; overflows at the handshake's last step"));
        assert!(oom.tracepoint && oom.lost.is_empty() && oom.none.is_none());
        let [_, rst, _, listen, _, _, _, _] = plans("6.12", true);
        // (The kallsyms lines captured from 6.12 do not include
        // tcp_v6_syn_recv_sock: a missing function is a stated loss.)
        assert_eq!(
            listen.kprobes,
            [
                ("conn_request", "tcp_conn_request"),
                ("syn_recv_sock", "tcp_v4_syn_recv_sock"),
            ]
        );
        assert!(listen.none.is_none());
        assert!(listen.lost[0].contains("through tcp_v6_syn_recv_sock: not in /proc/kallsyms"));
        assert!(rst.kprobes.is_empty(), "6.12's tracepoint has reasons");
        // 6.1: reasons for drops, but the reset tracepoint needs a socket.
        let [drop, rst, _, _, _, _, _, _] = plans("6.1", true);
        assert!(drop.kprobes.is_empty() && drop.lost.is_empty());
        assert_eq!(
            rst.kprobes,
            [
                ("send_reset", "tcp_v4_send_reset"),
                ("send_reset", "tcp_v6_send_reset")
            ]
        );
        assert!(rst.tracepoint && rst.lost.is_empty());
        // 5.10: no reasons, tcp_drop inlined (absent from kallsyms).
        let [drop, rst, _, _, oom, _, errors, _] = plans("5.10", true);
        // 5.10 has no sock:inet_sk_error_report (5.14+): skipped, saying so.
        assert!(
            errors.none.as_deref().is_some_and(|w| w.contains("absent")),
            "{errors:?}"
        );
        assert!(oom.lost[0].contains("pid only"), "{:?}", oom.lost);
        assert!(drop.tracepoint && drop.kprobes.is_empty());
        assert!(drop.lost.iter().any(|l| l.contains("no drop reasons")));
        assert!(drop
            .lost
            .iter()
            .any(|l| l.contains("tcp_drop: not in /proc/kallsyms")));
        assert_eq!(rst.kprobes.len(), 2);
        // 6.1 without kprobes: the tracepoint alone, and why it falls short.
        let [_, rst, _, _, _, _, _, _] = plans("6.1", false);
        assert!(rst.tracepoint && rst.kprobes.is_empty());
        assert_eq!(
            rst.lost,
            ["RSTs sent without a full socket (closed ports) not seen: no kprobes here"]
        );
    }

    #[test]
    fn conntrack_waits_for_its_module_then_attaches_what_kallsyms_has() {
        // 6.1 before nf_conntrack loads: nothing of it in kallsyms.
        let k = ksyms("6.1");
        let p = plan(&CONNTRACK, Err("no tracepoint"), &offers(&k, true));
        assert_eq!(p.pending, Some("nf_conntrack"));
        assert!(p.kprobes.is_empty());
        let why = p.none.unwrap();
        assert!(
            why.starts_with("waiting for module nf_conntrack to load"),
            "{why}"
        );
        assert!(why.contains("conntrack counters"), "{why}");
        // 6.18 has it built in (only __nf_conntrack_confirm was captured):
        // no module to wait for, the entry and return probes of confirm.
        let k = ksyms("6.18");
        let p = plan(&CONNTRACK, Err("no tracepoint"), &offers(&k, true));
        assert_eq!(p.pending, None);
        assert_eq!(
            p.kprobes,
            [
                ("ct_confirm", "__nf_conntrack_confirm"),
                ("ct_confirm_ret", "__nf_conntrack_confirm")
            ]
        );
        assert_eq!(p.lost.len(), 2, "{:?}", p.lost);
        // Without kprobes: skipped for that, not waiting.
        let p = plan(&CONNTRACK, Err("no tracepoint"), &offers(&k, false));
        assert_eq!(p.pending, None);
        assert!(p.none.unwrap().contains("no kprobes here"));
        // The module loaded (its functions not yet in this kallsyms copy):
        // no longer waiting; the attach says what is missing.
        let live = vec!["nf_conntrack".to_string()];
        let k = ksyms("6.1");
        let o = Offers {
            modules: &live,
            ..offers(&k, true)
        };
        let p = plan(&CONNTRACK, Err("no tracepoint"), &o);
        assert_eq!(p.pending, None);
        assert!(p.none.unwrap().contains("not in /proc/kallsyms"));
    }

    #[test]
    fn live_modules_from_a_real_proc_modules() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/kernels/6.1/proc_modules");
        let text = std::fs::read_to_string(path).unwrap();
        let live = live_modules(&text);
        assert_eq!(live.len(), 10);
        assert!(live.iter().any(|m| m == "nf_conntrack"));
        // Going away or still loading: not live; short lines are skipped.
        let text = text
            .replace(
                "nf_conntrack 188416 1 nft_ct, Live",
                "nf_conntrack 188416 1 nft_ct, Unloading",
            )
            .replace("veth 36864 0 - Live", "veth 36864 0 - Loading");
        let live = live_modules(&format!("{text}garbage\n"));
        assert_eq!(live.len(), 8);
        assert!(!live.iter().any(|m| m == "nf_conntrack" || m == "veth"));
    }

    #[test]
    fn without_btf_tracepoints_still_attach() {
        let l = layouts("6.1");
        let k = ksyms("6.1");
        let o = Offers {
            btf: BtfOffsets::unavailable("kernel BTF unavailable"),
            ..offers(&k, true)
        };
        let drop = plan(&DROP, Ok(l.kfree_skb.as_ref().unwrap()), &o);
        assert!(drop.tracepoint);
        assert_eq!(drop.lost, ["flows unknown: kernel BTF unavailable"]);
        let rst = plan(&RESET_SENT, Ok(l.send_reset.as_ref().unwrap()), &o);
        assert!(rst.tracepoint && rst.kprobes.is_empty());
        assert!(rst.lost[0].contains("the kprobes need sk_buff offsets"));
        let rcv = plan(&RESET_RECEIVED, Ok(l.receive_reset.as_ref().unwrap()), &o);
        assert!(rcv.tracepoint && rcv.lost[0].starts_with("socket state unknown"));
        let listen = plan(&LISTEN_OVERFLOW, Err("no tracepoint"), &o);
        assert!(listen.none.unwrap().contains("need sk_buff offsets"));
        // A kernel without the tracepoint at all, with kprobes: kprobes only.
        let rst = plan(&RESET_SENT, Err("not in tracefs"), &offers(&k, true));
        assert!(!rst.tracepoint && rst.none.is_none());
        assert_eq!(rst.kprobes.len(), 2);
        // Neither: skipped, saying both.
        let o = offers(&k, false);
        let rst = plan(&RESET_SENT, Err("not in tracefs"), &o);
        assert_eq!(rst.none.as_deref(), Some("not in tracefs; no kprobes here"));
    }
}
