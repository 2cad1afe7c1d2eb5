//! Loading the eBPF object and attaching each probe as its plan says
//! (tracepoint, kprobes, or skipped with its reason), following kernel
//! modules that load later; the Tracer owns the maps the daemon reads.

use crate::families;
use crate::families::drop::DROP;
use crate::families::oom::OOM;
use crate::families::reset::{RESET_RECEIVED, RESET_SENT};
use crate::families::symptoms::{RETRANSMIT, SOCKET_ERROR};
use crate::kernel::offsets::{build_config, kernel_btf, purge_range, BtfOffsets};
use crate::kernel::probes::{
    kprobe_hook, kprobe_support, plan, read_live_modules, waiting_for, Offers, Plan, ProbeSpec,
    ProbeStatus, TracepointSpec,
};
use netprobe_common::{agg, AggTable};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{kprobe::KProbeLinkId, KProbe, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::{
    kernel::kallsyms::Kallsyms,
    kernel::tracefs::{self, Format},
    pipeline::decode::Layouts,
};

/// The eBPF object built by build.rs (empty when built without the toolchain).
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netprobe.bpf.o"));

pub(crate) const EBPF_STATUS: &str = env!("NETPROBE_EBPF_STATUS");

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
    /// Whether this kernel counts a kprobe or tracepoint program's skipped
    /// runs (`misses_counted`), or why not.
    pub misses: Result<(), String>,
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
    /// (0), keeping both ports in its key or only the service port; past
    /// `churn` new flows per CPU in an epoch, new flows count per service
    /// (`agg::SETTING_CHURN`; 0: never).
    pub fn set_aggregation(
        &mut self,
        window_ns: u64,
        keep_ports: bool,
        churn: u64,
    ) -> Result<(), String> {
        let settings = self
            .agg_settings
            .as_mut()
            .ok_or("the AGG_SETTINGS map could not be opened")?;
        settings
            .set(agg::SETTING_KEEP_PORTS, u64::from(keep_ports), 0)
            .and_then(|()| settings.set(agg::SETTING_CHURN, churn, 0))
            .and_then(|()| settings.set(agg::SETTING_WINDOW_NS, window_ns, 0))
            .map_err(|e| format!("cannot write AGG_SETTINGS: {}", error_text(&e)))
    }

    /// The most bytes the ring buffer has held unread (sampled as records
    /// are written), if it can be read.
    pub fn ring_buffer_peak(&self) -> Option<u64> {
        let per_cpu = self.rb_peak.as_ref()?.get(&0, 0).ok()?;
        per_cpu.iter().copied().max()
    }

    /// Each loaded program's runs and run time, as the kernel counts them
    /// while `kernel.bpf_stats_enabled` is 1 (BPF_OBJ_GET_INFO_BY_FD), and
    /// its skipped runs where the kernel counts them, by program name.
    pub fn program_costs(&self) -> Vec<ProgramCost> {
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        ebpf.programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                let misses = match (&self.misses, p.fd()) {
                    (Ok(()), Ok(fd)) => recursion_misses(std::os::fd::AsFd::as_fd(fd)),
                    _ => None,
                };
                Some(ProgramCost {
                    program: name.to_string(),
                    runs: info.run_count(),
                    run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    misses,
                })
            })
            .collect()
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

/// What one of netprobe's programs has cost the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCost {
    pub program: String,
    pub runs: u64,
    pub run_ns: u64,
    /// Runs the kernel skipped because another BPF program was running on
    /// that CPU (`recursion_misses`); None where the kernel does not count
    /// them for netprobe's programs.
    pub misses: Option<u64>,
}

/// Whether this kernel counts the runs of a kprobe or tracepoint program it
/// skips because another BPF program is running on the CPU (the kprobe's
/// nmissed, bcc#4198). 6.7 started counting them in `recursion_misses`
/// (trace_call_bpf) in the same change that gave a kprobe link's info a
/// `missed` field, so BTF having that field is the running kernel's word.
/// Before it, such runs are skipped without a count.
pub(crate) fn misses_counted(btf: &Result<crate::kernel::btf::Btf, String>) -> Result<(), String> {
    let btf = btf.as_ref().map_err(|why| why.clone())?;
    btf.member("bpf_link_info", "perf_event.kprobe.missed")
        .map(|_| ())
        .map_err(|_| {
            "this kernel skips a kprobe or tracepoint program's run while another BPF program runs on the CPU without counting it (its BTF has no bpf_link_info.perf_event.kprobe.missed, which came with the count in 6.7)".to_string()
        })
}

/// A program's `recursion_misses` (BPF_OBJ_GET_INFO_BY_FD), if the kernel's
/// `bpf_prog_info` reaches that far. aya's ProgramInfo does not expose it.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use aya_obj::generated::{bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    use std::os::fd::AsRawFd;
    /// `union bpf_attr`'s `info` member.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain integers; all zeros is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        info_len: u32::try_from(size_of::<bpf_prog_info>()).ok()?,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: attr points at a live InfoAttr of the size passed, and its
    // `info` at a bpf_prog_info of `info_len` bytes, which the kernel fills.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            size_of::<InfoAttr>(),
        )
    };
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (r == 0 && attr.info_len as usize >= end).then_some(info.recursion_misses)
}

/// Shortens aya errors (a verifier log can be very long) for a record: the
/// start, which says what failed, and the end, where a verifier log says
/// why.
pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    const HEAD: usize = 300;
    const TAIL: usize = 900;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if s.len() > HEAD + TAIL + 5 {
        let mut head = HEAD;
        while !s.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = s.len() - TAIL;
        while !s.is_char_boundary(tail) {
            tail += 1;
        }
        s = format!("{} ... {}", &s[..head], &s[tail..]);
    }
    s
}

pub(crate) fn all_skipped(why: &str) -> Vec<ProbeStatus> {
    families::probes()
        .map(|spec| ProbeStatus::skipped(spec, why.to_string()))
        .collect()
}

/// The format of `spec`'s tracepoint among `layouts`.
pub(crate) fn format_of<'a>(spec: &ProbeSpec, layouts: &'a Layouts) -> Option<&'a Format> {
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
        misses: Err("netprobe's programs are not loaded".to_string()),
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
    let btf = kernel_btf();
    tracer.misses = misses_counted(&btf);
    let offers = Offers {
        kprobes: kprobe_support(&root),
        ksyms: &tracer.ksyms,
        btf: BtfOffsets::read(&btf),
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
pub(crate) fn take_map<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Option<T> {
    ebpf.take_map(name).and_then(|m| T::try_from(m).ok())
}

/// Attaches what `plan` says; the probe is attached when any hook is.
pub(crate) fn attach_plan(ebpf: &mut Ebpf, spec: &'static ProbeSpec, plan: Plan) -> ProbeStatus {
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

pub(crate) fn attach_kprobe(
    ebpf: &mut Ebpf,
    program: &str,
    function: &str,
) -> Result<KProbeLinkId, String> {
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

pub(crate) fn attach_tracepoint(ebpf: &mut Ebpf, t: &TracepointSpec) -> Result<(), String> {
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
    fn a_kernel_that_counts_skipped_runs_is_told_by_its_btf() {
        // 6.18's real BTF has the kprobe link's `missed`; a BTF that cannot
        // be read says why, and is never taken as counting.
        assert_eq!(
            misses_counted(&Ok(crate::kernel::btf::test_btf_6_18())),
            Ok(())
        );
        let why = misses_counted(&Err("kernel BTF unavailable".into())).unwrap_err();
        assert!(why.contains("unavailable"), "{why}");
    }
}
