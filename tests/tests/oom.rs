//! The OOM killer, for real, and the evidence a stall needs.
//! - A memory-cgroup kill (a process in a 32 MiB cgroup touches memory
//!   until the kernel kills it) while an unrelated flow times out behind an
//!   nftables DROP rule: the kill is `oom_kill` (confined to its cgroup, no
//!   stall seen), with its victim and cgroup; the flow's retransmissions
//!   and its ETIMEDOUT are the rule's (`netfilter_drop`), not the OOM's.
//!   Scenario 1 of issue 15: a coincidence that must not be blamed.
//! - A global kill (the guest runs out of memory: only in the kernel
//!   matrix's VMs), with a many-threaded victim, and a connection whose SYN
//!   is retransmitted during the window with no cause of its own: the kill
//!   stalled the node (`global_kill`), and the retransmission is its.

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    process::Command,
    time::Duration,
};

use netprobe_tests::{
    cannot_show, has_flow, kernel, nft, not_run_here, require_root, run_ok, socket2_free as sock,
    Daemon, MemCgroup, Netns,
};

#[test]
fn a_cgroup_kill_does_not_take_a_timeout_with_a_cause_of_its_own() {
    const NAME: &str = "a_cgroup_kill_does_not_take_a_timeout_with_a_cause_of_its_own";
    if !require_root(NAME) {
        return;
    }
    let cg_name = format!("netprobe-test-oom-{}", std::process::id());
    let cg = match MemCgroup::new(&cg_name, 32 << 20) {
        Ok(cg) => cg,
        Err(why) => panic!("cannot make a memory cgroup here: {why}"),
    };
    let mut d = Daemon::json();
    let (pid, how) = cg.run_hog(1 << 30).expect("fork the memory hog");
    assert_eq!(how, "killed by signal 9", "the hog was not OOM-killed");
    let oom = d.wait_for("oom", Duration::from_secs(10), |v| {
        v["kind"] == "oom" && v["pid"] == pid
    });
    eprintln!("oom: {oom}");
    // Confined to its cgroup's limit, and no stall seen: an OOM kill.
    assert_eq!(oom["family"], "oom_stall");
    assert_eq!(oom["mode"], "oom_kill", "{oom}");
    assert_eq!(oom["severity"], "warning", "{oom}");
    assert_eq!(oom["evidence"]["confined_to_cgroup"], true, "{oom}");
    assert!(oom["message"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {pid}")));
    assert!(oom["advice"].as_str().is_some_and(|a| a.contains("memory")));
    // The victim is named for what it is (where the kernel or /proc give
    // its name).
    if let Some(comm) = oom["comm"].as_str() {
        assert_eq!(comm, "memory-hog", "{oom}");
    }
    let rss_field =
        kernel::format("oom:mark_victim").is_some_and(|f| kernel::format_has_field(&f, "anon_rss"));
    if rss_field {
        // Kernels from about 6.9 (and Debian's 6.1) give the victim's memory.
        let kb = oom["evidence"]["anon_rss_kb"]
            .as_u64()
            .expect("anon_rss_kb");
        assert!(
            kb > 16 << 10 && kb < 64 << 10,
            "anon-rss {kb} kB near the 32 MiB limit"
        );
        assert!(oom["comm"].as_str().is_some_and(|c| !c.is_empty()));
    }
    // The victim's memory cgroup: from /proc while the victim is there,
    // else from the cgroup's OOM kill count.
    assert!(
        oom["cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with(cg_name.as_str())),
        "{oom}"
    );
    // Inside the window, a flow that a rule drops until it times out.
    let no_errors = kernel::lacks_tracepoint("sock:inet_sk_error_report");
    d.assert_attached_unless("socket_error", &no_errors);
    let ns = Netns::new();
    let (client, server, _keep) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        let c = sock::tcp_v4();
        sock::bind(&c, "127.0.0.2:0".parse::<SocketAddr>().unwrap());
        sock::connect(&c, server).expect("connect");
        let (s, _) = l.accept().unwrap();
        nft(&format!(
            "table inet netprobe_stall {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {} drop\n  }}\n}}\n",
            server.port()
        ))
        .expect("the drop rule");
        // Give up after 1.5 s without an acknowledgement: ETIMEDOUT.
        sock::set_int(&c, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1500);
        sock::send(&c, b"are you there").expect("send");
        std::thread::sleep(Duration::from_millis(2500));
        (sock::local_addr(&c), server, (l, c, s))
    });
    let rtx = d.wait_for(
        "retransmit in the OOM window",
        Duration::from_secs(10),
        |v| v["kind"] == "retransmit" && has_flow(v, &client, &server),
    );
    eprintln!("retransmit: {rtx}");
    assert_eq!(
        rtx["mode"], "netfilter_drop",
        "the rule's, not the OOM's: {rtx}"
    );
    assert_eq!(rtx["evidence"]["cause"], "netfilter_drop", "{rtx}");
    assert!(rtx["evidence"].get("oom_victim_pid").is_none(), "{rtx}");
    match &no_errors {
        None => {
            let err = d.wait_for(
                "ETIMEDOUT in the OOM window",
                Duration::from_secs(10),
                |v| v["kind"] == "socket_error" && has_flow(v, &client, &server),
            );
            eprintln!("socket_error: {err}");
            assert_eq!(err["reason"], "ETIMEDOUT");
            assert_eq!(
                err["mode"], "netfilter_drop",
                "the rule's, not the OOM's: {err}"
            );
        }
        Some(fact) => cannot_show(NAME, &format!("the ETIMEDOUT not checked: {fact}")),
    }
    d.stop_cleanly();
    // The window, closed at the stop: no stall, and the symptoms it saw
    // had a cause of their own; the rule's drops are not the OOM's.
    let window = d.wait_for("the OOM window's incident", Duration::from_secs(5), |v| {
        v["kind"] == "incident" && v["pid"] == pid
    });
    eprintln!("window: {window}");
    assert_eq!(window["mode"], "oom_kill", "{window}");
    assert_eq!(window["event"], "oom", "{window}");
    let e = &window["evidence"];
    assert_eq!(e["stall_evidence"], "none", "{window}");
    assert!(e["symptoms_with_cause"].as_u64().unwrap() >= 1, "{window}");
    assert!(window["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("OOM kill of pid {pid}")));
    assert!(window["message"]
        .as_str()
        .unwrap()
        .contains("no network stall seen"));
}

/// The helper the global OOM test runs as its victim (this executable,
/// again): `NETPROBE_OOM_HOG_THREADS` threads touch memory until the kernel
/// kills them all. Without the variable it does nothing and says so.
#[test]
#[ignore = "a helper: the global OOM test runs it as its victim"]
fn memory_hog_helper() {
    let Some(threads) = std::env::var("NETPROBE_OOM_HOG_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
    else {
        not_run_here(
            "memory_hog_helper",
            "a helper, run only as the victim of global_oom_stalls_the_node",
        );
        return;
    };
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(|| {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                loop {
                    keep.push(vec![0x5a; 1 << 20]);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

#[test]
#[ignore = "runs the whole machine out of memory: only in the kernel matrix's VMs"]
fn global_oom_stalls_the_node() {
    const NAME: &str = "global_oom_stalls_the_node";
    if !require_root(NAME) {
        return;
    }
    assert!(
        std::env::var_os("NETPROBE_GUEST").is_some(),
        "refusing to run this host out of memory: this test runs in the kernel matrix's VMs"
    );
    // Neither this test (nor the `timeout` /init runs it under) nor the
    // daemon is to be the victim.
    std::fs::write("/proc/self/oom_score_adj", "-1000").unwrap();
    let parent = std::os::unix::process::parent_id();
    let _ = std::fs::write(format!("/proc/{parent}/oom_score_adj"), "-1000");
    let mut d = Daemon::json();
    std::fs::write(format!("/proc/{}/oom_score_adj", d.pid()), "-1000").unwrap();
    // The victim: in a cgroup of its own with no limit, so the kill is
    // counted there and no cgroup's limit is what ran out.
    let cg = MemCgroup::new(
        &format!("netprobe-test-global-{}", std::process::id()),
        1 << 50,
    )
    .expect("a memory cgroup without a limit");
    let adj = std::ffi::CString::new("/proc/self/oom_score_adj").unwrap();
    let procs = std::ffi::CString::new(cg.procs.as_os_str().as_encoded_bytes()).unwrap();
    let mut hog = Command::new(std::env::current_exe().unwrap());
    // Its own output stays off the console the matrix reads.
    hog.args(["--exact", "memory_hog_helper", "--include-ignored"])
        .env("NETPROBE_OOM_HOG_THREADS", "32")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only open, write and close, on paths
    // made before the fork (no allocation): the child makes itself the OOM
    // killer's choice and joins the cgroup ("0": the writer itself).
    unsafe {
        hog.pre_exec(move || {
            for (path, value) in [(&adj, &b"1000"[..]), (&procs, &b"0"[..])] {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, value.as_ptr().cast(), value.len()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let mut hog = hog.spawn().expect("the hog");
    let st = hog.wait().unwrap();
    eprintln!("hog: {st}");
    let oom = d.wait_for("the global kill", Duration::from_secs(60), |v| {
        v["kind"] == "oom" && v["pid"] == hog.id()
    });
    eprintln!("oom: {oom}");
    assert_eq!(oom["mode"], "oom_stall", "{oom}");
    assert_eq!(oom["severity"], "critical", "{oom}");
    assert_eq!(oom["evidence"]["stall_evidence"], "global_kill", "{oom}");
    // A SYN sent into a dummy device nobody answers on: retransmitted a
    // second later with no drop, no reset, no cause of its own.
    let ns = Netns::new();
    let (client, server, _keep) = ns.run(|| {
        for args in [
            &["link", "add", "npdum0", "type", "dummy"][..],
            &["addr", "add", "10.97.0.1/24", "dev", "npdum0"],
            &["link", "set", "npdum0", "up"],
        ] {
            run_ok("ip", args).expect("a dummy device");
        }
        let server: SocketAddr = "10.97.0.2:80".parse().unwrap();
        let c = sock::tcp_v4();
        sock::set_nonblocking(&c);
        let _ = sock::connect(&c, server);
        (sock::local_addr(&c), server, c)
    });
    let rtx = d.wait_for(
        "the SYN retransmitted in the window",
        Duration::from_secs(30),
        |v| v["kind"] == "retransmit" && has_flow(v, &client, &server),
    );
    eprintln!("retransmit: {rtx}");
    assert_eq!(rtx["mode"], "oom_stall", "{rtx}");
    assert_eq!(rtx["evidence"]["stall_evidence"], "global_kill", "{rtx}");
    // The shortage may take more than the hog (the kernel kills until it
    // has memory): the retransmission is the stall of one of those kills,
    // each of which carries the global evidence.
    let victims: Vec<u64> = d
        .seen
        .iter()
        .filter(|v| v["kind"] == "oom")
        .inspect(|v| eprintln!("kill: {v}"))
        .inspect(|v| assert_eq!(v["evidence"]["stall_evidence"], "global_kill", "{v}"))
        .filter_map(|v| v["pid"].as_u64())
        .collect();
    let victim = rtx["evidence"]["oom_victim_pid"].as_u64().unwrap();
    assert!(victims.contains(&victim), "{rtx} {victims:?}");
    d.stop_cleanly();
    let window = d.wait_for("the stall's incident", Duration::from_secs(5), |v| {
        v["kind"] == "incident" && v["event"] == "oom" && v["pid"] == victim
    });
    eprintln!("window: {window}");
    assert_eq!(window["mode"], "oom_stall", "{window}");
    assert_eq!(
        window["evidence"]["stall_evidence"], "global_kill",
        "{window}"
    );
    assert!(
        window["evidence"]["retransmits"].as_u64().unwrap() >= 1,
        "{window}"
    );
}
