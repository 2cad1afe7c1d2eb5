//! Conntrack, in the kernel matrix's throwaway VMs only (NETPROBE_GUEST=1):
//! every scenario changes something global (nf_conntrack_max, the hash
//! table's size, the module itself), which a host must not have done to it.
//! On a host each test says why it is ignored.
//! - Table full: in a namespace where an nftables rule makes conntrack
//!   track, TCP connections fill a table lowered to 4 entries; the next SYN
//!   is dropped for want of an entry. Counters name it per namespace, and
//!   where the conntrack probe attached, the dropped SYN itself.
//! - Insert failed: two threads send the same new TCP segment at once, so
//!   two unconfirmed entries of one flow race to `__nf_conntrack_confirm`;
//!   TCP allows no clash resolution and the loser is dropped. A race: where
//!   it does not happen within its bound, the test says so (n/a).
//! - The module loaded after netprobe started: the probe waits for it.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Barrier,
    },
    thread,
    time::Duration,
};

use netprobe_tests::{
    cannot_show, kernel, nft,
    rawtcp::{self, Injector},
    require_root, run_ok, socket2_free as sock, Daemon, Netns, Resident,
};

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

#[test]
#[ignore = "changes global conntrack settings: runs only in the kernel matrix's VMs"]
fn conntrack_table_full() {
    if !require_root("conntrack_table_full") {
        return;
    }
    guest_only();
    let mut d = Daemon::json();
    let ns = Netns::new();
    let _resident = tracked(&ns);
    let max = Restore::set(MAX, "4")
        .expect("lower nf_conntrack_max (nf_conntrack is loaded in the guest)");
    let _keep = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let mut keep = Vec::new();
        let mut refused = 0;
        // Established connections are assured: early drop cannot evict them.
        for _ in 0..8 {
            let c = sock::tcp_v4();
            sock::set_nonblocking(&c);
            let _ = sock::connect(&c, at);
            if !sock::wait_connected(&c, 500) {
                refused += 1;
            }
            keep.push(c);
        }
        assert!(refused > 0, "every connection got a conntrack entry");
        (l, keep)
    });
    let full = d.wait_for("conntrack table full", Duration::from_secs(10), |v| {
        v["mode"] == "conntrack_table_full" && v["evidence"]["source"] == "counters"
    });
    drop(max);
    eprintln!("conntrack: {full}");
    assert_eq!(full["kind"], "conntrack");
    assert_eq!(full["family"], "queue_full");
    let e = &full["evidence"];
    assert!(e["drop"].as_u64().unwrap() >= 1, "{full}");
    assert_eq!(e["nf_conntrack_max"], 4, "{full}");
    assert!(full["netns"].as_u64().is_some());
    // The dropped SYN itself: conntrack's own drop where the conntrack
    // probe's kprobes can attach; elsewhere it is a netfilter drop, and the
    // conntrack diagnosis of the packet cannot be shown.
    let excuse = kernel::lacks_kprobe_on("__nf_conntrack_confirm");
    d.assert_attached_unless("conntrack", &excuse);
    let (kind, mode) = match &excuse {
        None => ("conntrack", "conntrack_table_full"),
        Some(fact) => {
            cannot_show(
                "conntrack_table_full",
                &format!("the dropped SYN named conntrack_table_full not checked: {fact}"),
            );
            ("drop", "netfilter_drop")
        }
    };
    let drop = d.wait_for("the dropped SYN", Duration::from_secs(10), |v| {
        v["kind"] == kind && v["mode"] == mode && v["tcp_flags"] == "SYN"
    });
    eprintln!("drop: {drop}");
    assert_eq!(drop["daddr"], "127.0.0.1", "{drop}");
    d.stop_cleanly();
}

fn guest_only() {
    assert!(
        std::env::var_os("NETPROBE_GUEST").is_some(),
        "refusing to change this host's global conntrack settings: this test runs in the kernel \
         matrix's VMs (cargo xtask vm)"
    );
}

/// Makes conntrack track `ns`'s outgoing packets (an nftables rule with a
/// ct expression), and keeps a process there so netprobe samples it.
fn tracked(ns: &Netns) -> Resident {
    ns.run(|| {
        let resident = Resident::here();
        nft("table inet netprobe_ct {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    ct state new accept\n  }\n}\n")
            .expect("nft: a rule that makes conntrack track");
        resident
    })
}

/// Puts a global file back as it was when the test ends, however it ends.
struct Restore(&'static str, String);

impl Restore {
    fn set(path: &'static str, value: &str) -> Result<Restore, String> {
        let old = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        std::fs::write(path, value).map_err(|e| format!("write {value} to {path}: {e}"))?;
        Ok(Restore(path, old.trim().to_string()))
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.0, &self.1) {
            eprintln!("cannot restore {} to {}: {e}", self.0, self.1);
        }
    }
}

#[test]
#[ignore = "changes global conntrack settings: runs only in the kernel matrix's VMs"]
fn conntrack_insert_failed() {
    if !require_root("conntrack_insert_failed") {
        return;
    }
    guest_only();
    let mut d = Daemon::json();
    let ns = Netns::new();
    let _resident = tracked(&ns);
    // The race behind the UDP/DNS SNAT incident: two packets of one new flow
    // on two CPUs at once. Both get an unconfirmed entry; the second to reach
    // __nf_conntrack_confirm clashes with the first. TCP allows no clash
    // resolution, so the loser is dropped (insert_failed). Two threads send
    // the same forged segment (a new 4-tuple each round) through raw
    // sockets, released together; bounded to 4000 rounds.
    let (refused, rounds): (BTreeSet<u16>, u32) = ns.run(|| {
        // The segments leave through a dummy device, which frees them as
        // sent: the only drops are the race's.
        for args in [
            &["link", "add", "npct0", "type", "dummy"][..],
            &["addr", "add", "10.77.0.1/24", "dev", "npct0"],
            &["link", "set", "npct0", "up"],
        ] {
            run_ok("ip", args).expect("a dummy device in the namespace");
        }
        let barrier = Arc::new(Barrier::new(2));
        let total = Arc::new(AtomicUsize::new(0));
        let dst: SocketAddrV4 = "10.77.0.2:9".parse().unwrap();
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, total) = (barrier.clone(), total.clone());
                thread::spawn(move || {
                    let raw = Injector::new().expect("raw socket");
                    let mut refused = BTreeSet::new();
                    for (round, port) in (20000..24000u16).enumerate() {
                        let src = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), port);
                        let segment = rawtcp::forge(src, dst, 1, 1, (1, 1), b"x");
                        barrier.wait();
                        if raw.send(&segment, *dst.ip()).is_err() {
                            refused.insert(port);
                            total.fetch_add(1, Ordering::Relaxed);
                        }
                        // Both threads see the same total here, and stop
                        // together once the race has been lost.
                        barrier.wait();
                        if total.load(Ordering::Relaxed) >= 1 {
                            return (refused, round as u32 + 1);
                        }
                        barrier.wait();
                    }
                    (refused, 4000)
                })
            })
            .collect();
        let mut all = BTreeSet::new();
        let mut rounds = 0;
        for r in racers {
            let (refused, n) = r.join().unwrap();
            all.extend(refused);
            rounds = rounds.max(n);
        }
        (all, rounds)
    });
    eprintln!(
        "{} segments refused in {rounds} rounds: {refused:?}",
        refused.len()
    );
    if refused.is_empty() {
        cannot_show(
            "conntrack_insert_failed",
            "the two-CPU race did not happen in 4000 rounds on this machine",
        );
        d.stop_cleanly();
        return;
    }
    let counted = d.wait_for("the insert_failed counter", Duration::from_secs(10), |v| {
        v["kind"] == "conntrack"
            && v["mode"] == "conntrack_insert_failed"
            && v["evidence"]["source"] == "counters"
    });
    eprintln!("counters: {counted}");
    assert!(
        counted["evidence"]["insert_failed"].as_u64().unwrap() >= 1,
        "{counted}"
    );
    let excuse = kernel::lacks_kprobe_on("__nf_conntrack_confirm");
    d.assert_attached_unless("conntrack", &excuse);
    if let Some(fact) = excuse {
        cannot_show(
            "conntrack_insert_failed",
            &format!("the refused segment's own record not checked: {fact}"),
        );
        d.stop_cleanly();
        return;
    }
    // The refused segment itself, with its flow.
    let drop = d.wait_for("a refused segment", Duration::from_secs(10), |v| {
        v["kind"] == "conntrack" && v["mode"] == "conntrack_insert_failed" && v["proto"] == "tcp"
    });
    eprintln!("drop: {drop}");
    assert_eq!(drop["family"], "conntrack");
    assert_eq!(
        (&drop["daddr"], &drop["dport"]),
        (&"10.77.0.2".into(), &9.into())
    );
    let port = drop["sport"].as_u64().unwrap() as u16;
    assert!(
        refused.contains(&port),
        "{port} was not refused: {refused:?}"
    );
    d.stop_cleanly();
}

/// The modules that use `name` (the `deps` column of /proc/modules).
fn users_of(name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/modules").ok()?;
    let line = text.lines().find(|l| l.split(' ').next() == Some(name))?;
    let deps = line.split(' ').nth(3)?;
    Some(
        deps.split(',')
            .filter(|d| !d.is_empty() && *d != "-")
            .map(str::to_string)
            .collect(),
    )
}

/// Unloads `name` and everything using it; returns what to load back, in
/// order. Bounded retries: namespaces of earlier tests still dying hold
/// references for a moment.
fn unload(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    for user in users_of(name).unwrap_or_default() {
        unload(&user, out)?;
    }
    let mut last = String::new();
    for _ in 0..50 {
        match run_ok("rmmod", &[name]) {
            Ok(()) => {
                out.insert(0, name.to_string());
                return Ok(());
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

#[test]
#[ignore = "changes global conntrack settings: runs only in the kernel matrix's VMs"]
fn conntrack_probe_waits_for_the_module() {
    const NAME: &str = "conntrack_probe_waits_for_the_module";
    if !require_root(NAME) {
        return;
    }
    guest_only();
    if users_of("nf_conntrack").is_none() {
        cannot_show(NAME, "nf_conntrack is not a loaded module on this kernel");
        return;
    }
    let mut reload = Vec::new();
    unload("nf_conntrack", &mut reload).expect("unload nf_conntrack");
    let mut d = Daemon::json();
    let waiting = d.probe("conntrack").clone();
    eprintln!("before: {waiting}");
    assert_eq!(waiting["status"], "skipped", "{waiting}");
    if kernel::lacks_kprobes().is_none() {
        assert!(
            waiting["detail"]
                .as_str()
                .unwrap()
                .contains("waiting for module nf_conntrack"),
            "{waiting}"
        );
    }
    if let Some(fact) = kernel::lacks_kprobes() {
        // No kprobes on this kernel: nothing to wait for.
        assert!(
            waiting["detail"].as_str().unwrap().contains("kprobes"),
            "{waiting}"
        );
        cannot_show(NAME, &fact);
        for m in &reload {
            let _ = run_ok("insmod", &[&guest_module(m)]);
        }
        return;
    }
    for m in &reload {
        run_ok("insmod", &[&guest_module(m)]).expect("load the module back");
    }
    let attached = d.wait_for(
        "the conntrack probe attaching",
        Duration::from_secs(10),
        |v| v["kind"] == "probe" && v["probe"] == "conntrack" && v["status"] == "attached",
    );
    eprintln!("after: {attached}");
    assert!(attached["hook"]
        .as_str()
        .unwrap()
        .contains("__nf_conntrack_confirm"));
    d.stop_cleanly();
}

/// Where /init put the guest's modules.
fn guest_module(name: &str) -> String {
    let dir = std::env::var("NETPROBE_GUEST_MODULES").expect("NETPROBE_GUEST_MODULES set by /init");
    format!("{dir}/{name}.ko")
}
