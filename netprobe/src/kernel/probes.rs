//! The probes: which kernel hook each uses, what the running kernel offers,
//! and each probe's plan (tracepoint, kprobes, or skipped with a stated
//! reason). Each probe degrades on its own; nothing here refuses to start
//! for one missing hook. Offsets are read in offsets.rs; loading and
//! attaching is tracer.rs.

use crate::kernel::offsets::BtfOffsets;
use std::path::Path;

use aya::programs::kprobe::KProbeLinkId;

use crate::{kernel::kallsyms::Kallsyms, kernel::tracefs::Format};

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
pub(crate) fn kprobe_hook<'a>(functions: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for f in functions {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    format!("kprobe {}", names.join(", "))
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

pub(crate) fn waiting_for(module: &str) -> String {
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
pub(crate) fn add_without(p: &mut Plan, k: &KprobeSpec) {
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
    pub(crate) fn skipped(spec: &'static ProbeSpec, why: String) -> ProbeStatus {
        ProbeStatus {
            spec,
            hook: spec.first_hook(),
            result: Err(why),
            pending: None,
            links: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families;
    use crate::families::drop::DROP;
    use crate::families::reset::RESET_RECEIVED;
    use crate::families::reset::RESET_SENT;
    use crate::families::{conntrack::CONNTRACK, listen::LISTEN_OVERFLOW};
    use crate::kernel::kallsyms::test_kallsyms as ksyms;
    use crate::kernel::offsets::SkbOffsets;
    use crate::kernel::offsets::SockOffsets;
    use crate::kernel::tracer::format_of;
    use crate::pipeline::decode::test_layouts as layouts;

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
