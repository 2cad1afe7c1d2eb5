//! The OOM killer, for real: a process in a memory cgroup with a small
//! limit touches memory until the kernel kills it, and netprobe must name
//! the victim.

use std::time::Duration;

use netprobe_tests::{require_root, Daemon, MemCgroup};

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
    let mut d = Daemon::start(&["--output", "json"], &[]);
    d.wait_ready();
    let (pid, how) = cg.run_hog(1 << 30);
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
    if let Some(rss) = oom.get("evidence").and_then(|e| e.get("anon_rss_kb")) {
        // Kernels from about 6.9 (and Debian's 6.1) give the victim's memory.
        let kb = rss.as_u64().unwrap();
        assert!(
            kb > 16 << 10 && kb < 64 << 10,
            "anon-rss {kb} kB near the 32 MiB limit"
        );
        assert!(oom["comm"].as_str().is_some_and(|c| !c.is_empty()));
    }
    match oom.get("cgroup") {
        // Read from /proc when the record is written, if the victim is
        // still there (it usually is not: it was killed and reaped).
        Some(cg) => assert!(cg.as_str().unwrap().ends_with(cg_name.as_str()), "{oom}"),
        None => eprintln!("oom: the victim was gone from /proc before its cgroup was read"),
    }
    let st = d.stop_with(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
}
