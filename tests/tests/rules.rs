//! Netfilter rule bloat (seed 004: 180,000 leaked iptables rules on the
//! sick node, 200-300 on its neighbours). Rules are counted in each
//! namespace when netprobe starts and once a minute after:
//! - 20,000 iptables-legacy rules in a namespace, against the default limit
//!   of 10,000: `netfilter_rule_bloat` for that namespace, with the count,
//!   and `netprobe check` lists it; a namespace with a handful beside it
//!   is not named (where iptables-legacy is installed: the host row);
//! - 1,500 nftables rules against a configured `rule_limit` of 1,000 (every
//!   row: nft is in the guests too).

use std::{io::Write, process::Command, process::Stdio, time::Duration};

use netprobe_tests::{netprobe_bin, nft, not_run_here, require_root, Daemon, Netns, Resident};
use serde_json::Value;

fn bloat_of(d: &mut Daemon, inode: u64) -> Value {
    d.wait_for("rule bloat", Duration::from_secs(30), |v| {
        v["mode"] == "netfilter_rule_bloat" && v["netns"] == inode
    })
}

#[test]
fn iptables_rules_far_above_the_limit_are_rule_bloat() {
    const NAME: &str = "iptables_rules_far_above_the_limit_are_rule_bloat";
    if !require_root(NAME) {
        return;
    }
    let Some(restore) = [
        "/usr/sbin/iptables-legacy-restore",
        "/sbin/iptables-legacy-restore",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists()) else {
        not_run_here(
            NAME,
            "no iptables-legacy here (the guests have nft only; the host row runs it)",
        );
        return;
    };
    let (bloated, quiet) = (Netns::new(), Netns::new());
    let load = |ns: &Netns, rules: usize| {
        ns.run(move || {
            let mut child = Command::new(restore)
                .stdin(Stdio::piped())
                .spawn()
                .expect("iptables-legacy-restore");
            let mut stdin = child.stdin.take().unwrap();
            let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
            for i in 0..rules {
                text.push_str(&format!(
                    "-A INPUT -s 10.{}.{}.1/32 -p tcp --dport 8080 -j ACCEPT\n",
                    i / 250 % 250,
                    i % 250
                ));
            }
            text.push_str("COMMIT\n");
            stdin.write_all(text.as_bytes()).unwrap();
            drop(stdin);
            assert!(child.wait().unwrap().success(), "iptables-legacy-restore");
            Resident::here()
        })
    };
    let _r1 = load(&bloated, 20_000);
    let _r2 = load(&quiet, 10);
    // The preflight lists both namespaces' counts.
    let out = Command::new(netprobe_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("rules       netns {}:", bloated.inode())))
        .unwrap_or_else(|| panic!("no rule count for the namespace: {text}"));
    assert!(
        line.contains(": 20004 (0 nftables, 20004 iptables-legacy entries)"),
        "{line}"
    );
    let mut d = Daemon::json();
    let r = bloat_of(&mut d, bloated.inode());
    eprintln!("bloat: {r}");
    assert_eq!(r["kind"], "rule_count", "{r}");
    assert_eq!(r["family"], "netfilter", "{r}");
    let e = &r["evidence"];
    assert_eq!(e["iptables_legacy_entries"], 20004, "{r}");
    assert_eq!(e["bloat"], "limit", "{r}");
    assert_eq!(e["rule_limit"], 10000, "{r}");
    assert_eq!(e["largest_chain"], "ip filter", "{r}");
    assert!(r["advice"].as_str().unwrap().contains("uniq -cd"), "{r}");
    // The namespace with ten rules beside it is not named.
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(5), |_| true);
    assert!(
        !all.iter()
            .any(|v| v["mode"] == "netfilter_rule_bloat" && v["netns"] == quiet.inode()),
        "a quiet namespace named"
    );
}

#[test]
fn nftables_rules_above_a_configured_limit_are_rule_bloat() {
    if !require_root("nftables_rules_above_a_configured_limit_are_rule_bloat") {
        return;
    }
    let ns = Netns::new();
    let _resident = ns.run(|| {
        let mut script =
            String::from("table inet netprobe_bloat {\n chain c {\n  type filter hook input priority 0; policy accept;\n }\n}\n");
        for i in 0..1_500 {
            script.push_str(&format!(
                "add rule inet netprobe_bloat c ip saddr 10.{}.{}.9 tcp dport 80 accept\n",
                i / 250,
                i % 250
            ));
        }
        nft(&script).expect("1,500 nftables rules");
        Resident::here()
    });
    let dir = std::env::temp_dir().join(format!("netprobe-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("netprobe.toml");
    std::fs::write(&config, "rule_limit = 1000\n").unwrap();
    let mut d = Daemon::start(
        &["--output", "json", "--config", config.to_str().unwrap()],
        &[],
    );
    d.wait_ready();
    let r = bloat_of(&mut d, ns.inode());
    eprintln!("bloat: {r}");
    let e = &r["evidence"];
    assert_eq!(e["nftables_rules"], 1500, "{r}");
    assert_eq!(e["rule_limit"], 1000, "{r}");
    assert_eq!(e["largest_chain"], "inet netprobe_bloat c", "{r}");
    d.stop_cleanly();
    let _ = std::fs::remove_dir_all(&dir);
}
