//! `netprobe check`: can netprobe run here, and what will it see?

use std::io::Write;

use crate::{kernel::sys, kernel::tracefs};

/// Prints the report to `w`; returns the exit code (non-zero only when
/// netprobe cannot run at all).
pub fn check(w: &mut dyn Write) -> std::io::Result<i32> {
    writeln!(w, "netprobe check")?;
    writeln!(w, "  kernel      {}", sys::kernel_release())?;
    let caps = sys::cap_eff();
    let missing = caps.map_or(
        Some("cannot read /proc/self/status".into()),
        sys::missing_privilege,
    );
    match (&missing, caps) {
        (None, Some(c)) => writeln!(w, "  privileges  ok (CapEff {c:016x})")?,
        (Some(why), _) => writeln!(w, "  privileges  MISSING: {why}")?,
        (None, None) => unreachable!(),
    }
    let btf = crate::kernel::offsets::kernel_btf_path();
    match std::fs::metadata(&btf) {
        Ok(m) => writeln!(w, "  BTF         {} ({} bytes)", btf.display(), m.len())?,
        Err(e) => writeln!(
            w,
            "  BTF         absent ({}: {e}): tracepoint probes only, degraded as listed below",
            btf.display()
        )?,
    }
    if let Some(why) = missing {
        writeln!(w, "  probes      not tried: no privilege")?;
        sysctls(w)?;
        writeln!(w, "netprobe cannot run here: {why}")?;
        return Ok(1);
    }
    match tracefs::find_or_mount() {
        Ok(p) => writeln!(w, "  tracefs     {}", p.display())?,
        Err(e) => writeln!(w, "  tracefs     unavailable: {e}")?,
    }
    let tracer = crate::kernel::tracer::start();
    if crate::kernel::tracer::Tracer::PROBE_LOG {
        writeln!(
            w,
            "  probe log   on: the programs write aya-log lines (a probe-log build)"
        )?;
    }
    for s in &tracer.statuses {
        let (status, detail) = match &s.result {
            Ok(None) => ("attached", String::new()),
            Ok(Some(lost)) => ("attached", format!(" (degraded: {lost})")),
            Err(why) => ("skipped", format!(": {why}")),
        };
        writeln!(
            w,
            "  probe       {:<15} {status:<9} {}{detail}",
            s.spec.name, &s.hook
        )?;
    }
    let stats = match crate::kernel::sys::bpf_stats_enabled() {
        Some(true) => "on: each program's runs and run time are counted (--metrics netprobe_program_*, and the summary record)".to_string(),
        Some(false) => "off: the kernel does not count the programs' runs and run time (sysctl kernel.bpf_stats_enabled=1 turns it on, at some cost per run)".to_string(),
        None => format!("absent on Linux {} (5.1+): the programs' cost cannot be counted", crate::kernel::sys::kernel_release()),
    };
    writeln!(w, "  bpf_stats   {stats}")?;
    let misses = match &tracer.misses {
        Ok(()) => "counted: a run the kernel skips because another BPF program is running on the CPU is counted per program (--metrics netprobe_program_misses_total, and the summary record)".to_string(),
        Err(why) => format!("not counted: {why}"),
    };
    writeln!(w, "  misses      {misses}")?;
    sysctls(w)?;
    rules(w)?;
    let attached = tracer.attached();
    drop(tracer);
    if attached == 0 {
        writeln!(
            w,
            "netprobe can run in counters-only mode: no probe attaches on this kernel, so it will see no kernel events and diagnose from procfs counters and sysctls alone"
        )?;
    } else {
        writeln!(
            w,
            "netprobe can run: {attached} of {} probes attach",
            crate::families::probes().count()
        )?;
    }
    Ok(0)
}

/// The netfilter rules of each network namespace (the first 64 found),
/// largest first: where rule bloat would show.
fn rules(w: &mut dyn Write) -> std::io::Result<()> {
    let spaces = crate::kernel::netns::discover(
        std::path::Path::new("/proc"),
        std::path::Path::new("/run/netns"),
    );
    let nftables = Some(crate::kernel::netfilter::nftables_present());
    let mut counted: Vec<(u64, crate::kernel::netfilter::RuleCounts)> = spaces
        .iter()
        .take(64)
        .filter_map(|ns| {
            Some((
                ns.inode,
                crate::kernel::netns::sample(
                    ns,
                    &crate::kernel::netns::Reading {
                        keep: &|_| false,
                        wants: &|_| Default::default(),
                        rules: nftables,
                    },
                )
                .ok()?
                .rules?,
            ))
        })
        .collect();
    counted.sort_by_key(|(_, c)| std::cmp::Reverse(c.total()));
    for (inode, c) in &counted {
        let nft: u64 = c.nft.values().sum();
        let legacy: u64 = c.legacy.values().sum();
        write!(
            w,
            "  rules       netns {inode}: {}{} ({nft} nftables, {legacy} iptables-legacy entries)",
            if c.nft_capped { "at least " } else { "" },
            c.total()
        )?;
        if let Some((chain, n)) = c.largest() {
            write!(w, "; largest {chain} {n}")?;
        }
        for e in &c.errors {
            write!(w, "; {e}")?;
        }
        writeln!(w)?;
    }
    if spaces.len() > counted.len() {
        writeln!(
            w,
            "  rules       {} more namespaces not counted here",
            spaces.len() - counted.len()
        )?;
    }
    Ok(())
}

fn sysctls(w: &mut dyn Write) -> std::io::Result<()> {
    for name in sys::SYSCTLS {
        let v =
            sys::sysctl(name).unwrap_or_else(|| "(not on this kernel or module not loaded)".into());
        writeln!(w, "  sysctl      {name} = {v}")?;
    }
    Ok(())
}
