//! The OOM killer, for real: a process in a memory cgroup with a small
//! limit touches memory until the kernel kills it, and netprobe must name
//! the victim. Then, inside the OOM window, a TCP flow whose segments stop
//! arriving (an nftables drop rule stands in for the stall) retransmits and
//! times out: netprobe must attribute both to the OOM.

use std::time::Duration;

use std::net::{SocketAddr, TcpListener};

use netprobe_tests::{
    cannot_show, has_flow, kernel, nft, require_root, socket2_free as sock, Daemon, MemCgroup,
    Netns,
};

#[test]
fn oom_kill_in_a_memory_cgroup() {
    if !require_root("oom_kill_in_a_memory_cgroup") {
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
    assert_eq!(oom["family"], "oom_stall");
    assert_eq!(oom["mode"], "oom_stall");
    assert!(oom["message"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {pid}")));
    assert!(oom["advice"].as_str().is_some_and(|a| a.contains("memory")));
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
    // Symptoms inside the window.
    let no_errors = kernel::lacks_tracepoint("sock:inet_sk_error_report");
    let errors = no_errors.is_none();
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
        .expect("the stall rule");
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
    assert_eq!(rtx["mode"], "oom_stall", "{rtx}");
    assert_eq!(rtx["evidence"]["oom_victim_pid"], pid);
    if errors {
        let err = d.wait_for(
            "ETIMEDOUT in the OOM window",
            Duration::from_secs(10),
            |v| v["kind"] == "socket_error" && has_flow(v, &client, &server),
        );
        eprintln!("socket_error: {err}");
        assert_eq!(err["reason"], "ETIMEDOUT");
        assert_eq!(err["mode"], "oom_stall");
    } else {
        cannot_show(
            "oom_kill_in_a_memory_cgroup",
            &format!(
                "the ETIMEDOUT in the OOM window not checked: {}",
                no_errors.unwrap_or_default()
            ),
        );
    }
    d.stop_cleanly();
    // The window, closed at the stop: one incident with the victim and the
    // symptoms counted inside it.
    let stall = d.wait_for("the OOM window's incident", Duration::from_secs(5), |v| {
        v["kind"] == "incident" && v["mode"] == "oom_stall"
    });
    eprintln!("stall: {stall}");
    let e = &stall["evidence"];
    assert_eq!(e["oom_victim_pid"], pid, "{stall}");
    assert!(e["retransmits"].as_u64().unwrap() >= 1, "{stall}");
    if errors {
        assert!(e["ETIMEDOUT"].as_u64().unwrap() >= 1, "{stall}");
    }
    assert_eq!(stall["severity"], "critical");
    assert!(stall["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("OOM kill of pid {pid}")));
    assert!(stall["advice"].as_str().unwrap().contains("memory"));
}
