//! Overnight faults, each made to happen for real: SIGTERM, SIGHUP with a
//! good and a bad config, privileges after attach, the metrics endpoint, a
//! full disk, hostile process names.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netprobe_tests::{
    cannot_show, connect_to_closed_port, emulated, netprobe_bin, not_run_here, patience,
    require_root, Daemon, Netns,
};
use serde_json::Value;

fn closed_port_here(ns: &Netns) -> SocketAddr {
    ns.run(|| connect_to_closed_port("127.0.0.2", "127.0.0.1"))
        .1
}

fn about_port(v: &Value, port: u16) -> bool {
    v["dport"] == port || v["sport"] == port
}

#[test]
fn sigterm_writes_a_summary_and_exits_within_a_second() {
    if !require_root("sigterm_writes_a_summary_and_exits_within_a_second") {
        return;
    }
    let mut d = Daemon::json();
    let ns = Netns::new();
    let server = closed_port_here(&ns);
    d.wait_for("closed port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, server.port())
    });
    let t = Instant::now();
    let st = d.stop_with(libc::SIGTERM, patience(Duration::from_secs(5)));
    let took = t.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(st.code(), Some(0), "{st}");
    let summary = d.wait_for("summary", Duration::from_secs(2), |v| {
        v["kind"] == "summary"
            && v["message"]
                .as_str()
                .unwrap()
                .starts_with("netprobe stopped")
    });
    assert!(
        summary["evidence"]["no_listener"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert_eq!(summary["evidence"]["lost"], 0, "{summary}");
    // Detaching kprobes patches kernel text (ftrace, stop_machine), which
    // TCG's emulation stretches to seconds (2 to 12 s seen on 6.1 with its
    // nine kprobes): there the 1 s contract cannot be judged, and only a
    // hang (the stop's own bound above) fails.
    if emulated() {
        cannot_show(
            "sigterm_writes_a_summary_and_exits_within_a_second",
            &format!(
                "the 1 s exit bound not checked: this guest runs under TCG emulation \
                 (netprobe.accel=tcg in /proc/cmdline), where it took {took:.1?}"
            ),
        );
        return;
    }
    assert!(
        took < Duration::from_secs(1),
        "netprobe took {took:?} to exit after SIGTERM (the contract is under a second)"
    );
}

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_bad() {
    if !require_root("sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_bad") {
        return;
    }
    let ns = Netns::new();
    // Two closed ports in the namespace; the config first admits only the
    // first, then only the second.
    let (a, b) = ns.run(|| {
        let a = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let b = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        (a.port(), b.port())
    });
    let dir = std::env::temp_dir().join(format!("netprobe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("netprobe.toml");
    std::fs::write(&path, format!("[filter]\nports = [{a}]\n")).unwrap();
    let mut d = Daemon::start(
        &["--output", "json", "--config", path.to_str().unwrap()],
        &[],
    );
    d.wait_ready();
    let refuse = |ns: &Netns, port: u16| {
        ns.run(move || {
            let s = std::net::TcpStream::connect(("127.0.0.1", port));
            assert!(s.is_err(), "port {port} is closed");
        })
    };
    refuse(&ns, b);
    refuse(&ns, a);
    d.wait_for("the admitted port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, a)
    });
    assert!(
        !d.seen
            .iter()
            .any(|v| v["mode"].is_string() && about_port(v, b)),
        "port {b} is filtered out: {:?}",
        d.seen
    );

    // A bad file: refused with why, the old filter stays.
    std::fs::write(&path, "[filter]\nports = [\"not a port\"]\n").unwrap();
    d.signal(libc::SIGHUP);
    let err = d.wait_for("the refusal", Duration::from_secs(10), |v| {
        v["kind"] == "error" && v["message"].as_str().unwrap().contains("not reloaded")
    });
    assert!(
        err["message"].as_str().unwrap().contains("netprobe.toml"),
        "{err}"
    );
    refuse(&ns, b);
    refuse(&ns, a);
    let n_a = |d: &Daemon| {
        d.seen
            .iter()
            .filter(|v| v["mode"] == "no_listener" && about_port(v, a) && v["kind"] != "incident")
            .count()
    };
    // (Repeats of port a fold into an incident; nothing of b may appear.)
    d.collect(Duration::from_secs(2), |_| true);
    assert!(
        !d.seen
            .iter()
            .any(|v| v["mode"].is_string() && about_port(v, b)),
        "the old filter stays after a bad reload: {:?}",
        d.seen
    );

    // A good file: in force at once.
    std::fs::write(&path, format!("[filter]\nports = [{b}]\n")).unwrap();
    d.signal(libc::SIGHUP);
    let ok = d.wait_for("the reload", Duration::from_secs(10), |v| {
        v["kind"] == "config"
    });
    assert!(
        ok["message"]
            .as_str()
            .unwrap()
            .contains(&format!("ports [{b}]")),
        "{ok}"
    );
    let before = n_a(&d);
    refuse(&ns, a);
    refuse(&ns, b);
    d.wait_for("the newly admitted port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, b)
    });
    d.collect(Duration::from_secs(1), |_| true);
    assert_eq!(n_a(&d), before, "port {a} is filtered out now");
    d.stop_cleanly();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Capability sets from /proc/PID/task/TID/status, per thread.
fn thread_caps(pid: u32) -> Vec<(String, u64, u64, u64, u64, bool)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(st) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap()
        };
        let nnp = st
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1'));
        out.push((
            t.file_name().to_string_lossy().into_owned(),
            field("CapEff:"),
            field("CapPrm:"),
            field("CapBnd:"),
            field("CapInh:") | field("CapAmb:"),
            nnp,
        ));
    }
    out
}

#[test]
fn capabilities_are_dropped_after_attach_and_tracing_goes_on() {
    if !require_root("capabilities_are_dropped_after_attach_and_tracing_goes_on") {
        return;
    }
    let mut d = Daemon::json();
    let ready = d.wait_for("ready", Duration::from_secs(1), |v| v["kind"] == "ready");
    eprintln!("{}", ready["message"]);
    let steady = netprobe::kernel::caps::steady_set(true);
    // Give the daemon's threads (counters, namespaces) time to start.
    d.collect(Duration::from_secs(2), |_| true);
    let threads = thread_caps(d.pid());
    assert!(threads.len() > 1, "the daemon's threads: {threads:?}");
    for (tid, eff, prm, bnd, inh, nnp) in &threads {
        let names = |m: u64| netprobe::kernel::caps::names(m).join(",");
        assert_eq!(
            eff & !steady,
            0,
            "thread {tid} keeps {}",
            names(eff & !steady)
        );
        assert_eq!(
            prm & !steady,
            0,
            "thread {tid} may regain {}",
            names(prm & !steady)
        );
        assert_eq!(
            bnd & !steady,
            0,
            "thread {tid} bounding set {}",
            names(bnd & !steady)
        );
        assert_eq!(*inh, 0, "thread {tid} passes on capabilities");
        assert!(nnp, "thread {tid}: no_new_privs is not set");
        // Those a compromised daemon would want most are gone.
        for gone in [1u32, 13, 16, 17] {
            // DAC_OVERRIDE, NET_RAW, SYS_MODULE, SYS_RAWIO (NET_ADMIN stays:
            // counting netfilter rules needs it)
            assert_eq!(eff & (1 << gone), 0, "thread {tid} keeps capability {gone}");
        }
    }
    // Tracing and the namespace counters (setns) still work without them.
    let ns = Netns::new();
    let server = closed_port_here(&ns);
    d.wait_for("closed port after the drop", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, server.port())
    });
    d.stop_cleanly();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_metrics(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    c.set_read_timeout(Some(patience(Duration::from_secs(10))))
        .unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn metrics_endpoint_counts_events_probes_and_the_daemon() {
    if !require_root("metrics_endpoint_counts_events_probes_and_the_daemon") {
        return;
    }
    let (mut d, port, _ns) = metrics_daemon_after_a_refused_connection();
    let text = get_metrics(port);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let value = |prefix: &str| figure(&text, prefix);
    assert!(value("netprobe_events_total{") >= 1.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("netprobe_events_total{") && l.contains("mode=\"no_listener\"")),
        "{text}"
    );
    assert!(
        value("netprobe_probe_attached{probe=\"drop\"") == 1.0,
        "{text}"
    );
    assert_eq!(value("netprobe_lost_events_total{"), 0.0, "{text}");
    assert_eq!(value("netprobe_ready "), 1.0, "{text}");
    let rss = value("process_resident_memory_bytes ");
    assert!(rss > 1e6, "{text}");
    eprintln!(
        "daemon RSS {:.1} MiB, CPU {} s",
        rss / 1048576.0,
        value("process_cpu_seconds_total ")
    );
    // Loopback only when given a bare port.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex = format!("0100007F:{port:04X}");
    assert!(listening.contains(&hex), "not bound to 127.0.0.1:{port}");
    d.stop_cleanly();

    // A port that is taken: one clear error, exit 1.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(netprobe_bin())
        .args(["run", "--output", "json", "--metrics", &p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot serve metrics on 127.0.0.1:"), "{err}");
}

/// A real Prometheus scrapes the endpoint: the OpenMetrics text parses,
/// the target is up, and the series keep their names.
#[test]
fn a_real_prometheus_scrapes_the_endpoint() {
    const NAME: &str = "a_real_prometheus_scrapes_the_endpoint";
    if !require_root(NAME) {
        return;
    }
    if std::env::var_os("NETPROBE_GUEST").is_some() {
        not_run_here(
            NAME,
            "the kernel matrix's guests have no Prometheus; the host row runs it",
        );
        return;
    }
    let (mut d, port, ns) = metrics_daemon_after_a_refused_connection();
    let prom = Prometheus::start(port);
    // The first scrapes come a few seconds after start (target discovery).
    let deadline = Instant::now() + patience(Duration::from_secs(30));
    let mut up = prom.query("up");
    while !up.contains("=> 1 @") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        up = prom.query("up");
    }
    assert!(
        up.contains("job=\"netprobe\"") && up.contains("=> 1 @"),
        "{up}\n{}",
        prom.targets()
    );
    for (query, want) in [
        ("netprobe_ready", "=> 1 @"),
        ("netprobe_probe_attached{probe=\"drop\"}", "=> 1 @"),
        ("sum(netprobe_lost_events_total)", "=> 0 @"),
        (
            "process_resident_memory_bytes > 1000000",
            "process_resident_memory_bytes{",
        ),
        (
            "process_cpu_seconds_total >= 0",
            "process_cpu_seconds_total{",
        ),
        ("netprobe_uptime_seconds > 0", "netprobe_uptime_seconds{"),
        ("netprobe_records_total{kind=\"ready\"}", "=> 1 @"),
    ] {
        let got = prom.query(query);
        assert!(got.contains(want), "{query}: {got}");
    }
    let events = prom.query("netprobe_events_total{mode=\"no_listener\",source=\"probe\"}");
    assert!(events.contains("kind=\"drop\""), "{events}");
    // Every query of the Grafana dashboard runs, with the dashboard's
    // variables as Grafana would fill them for all nodes; the panels about
    // failures, readiness and the daemon show this netprobe's series.
    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana/netprobe-dashboard.json")).unwrap();
    // A rate needs two scrapes in its window, and an increase a failure
    // between them: another refused connection once scrapes come.
    let deadline = Instant::now() + patience(Duration::from_secs(30));
    while !prom
        .query("count_over_time(netprobe_ready[1m]) >= 2")
        .contains(" @")
    {
        assert!(Instant::now() < deadline, "two scrapes never came");
        std::thread::sleep(Duration::from_millis(250));
    }
    let again = closed_port_here(&ns);
    d.wait_for("closed port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, again.port())
    });
    let rising = "sum(increase(netprobe_events_total{mode=\"no_listener\"}[1m])) > 0";
    while !prom.query(rising).contains(" @") {
        assert!(
            Instant::now() < deadline,
            "the second refused connection was never scraped"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$instance", ".*");
            let (ok, got) = prom.query_checked(&expr);
            assert!(ok, "panel {title:?}: {expr}: {got}");
            if [
                "Failures by mode",
                "Failures by node",
                "Top failures in the range",
                "Nodes ready",
                "netprobe memory",
            ]
            .contains(&title)
            {
                assert!(
                    got.contains(" @"),
                    "panel {title:?} shows nothing: {expr}: {got}"
                );
            }
            if title == "Failures by mode" {
                assert!(got.contains("mode=\"no_listener\""), "{got}");
            }
        }
    }
    // What `curl -s ADDR/metrics | promtool check metrics` sees: the
    // classic format, which promtool lints without a complaint.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("# TYPE netprobe_events_total counter"),
        "{body}"
    );
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    d.stop_cleanly();
}

/// A Prometheus server of the distribution's package, scraping one target
/// every second, with its data in a directory of its own.
struct Prometheus {
    child: std::process::Child,
    web: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("netprobe-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
                 scrape_configs:\n  - job_name: netprobe\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
            ),
        )
        .unwrap();
        let web = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (the setup installs it)");
        let p = Prometheus {
            child,
            web: format!("http://{web}"),
            dir,
        };
        let deadline = Instant::now() + patience(Duration::from_secs(20));
        while TcpStream::connect(&web).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not listen on {web}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// promtool's answer to an instant query.
    fn query(&self, expr: &str) -> String {
        self.query_checked(expr).1
    }

    /// Whether promtool's instant query succeeded, and its answer.
    fn query_checked(&self, expr: &str) -> (bool, String) {
        let out = Command::new("promtool")
            .args(["query", "instant", &self.web, expr])
            .output()
            .expect("promtool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The scrape targets as Prometheus sees them (for a failure's message).
    fn targets(&self) -> String {
        let mut c = TcpStream::connect(self.web.trim_start_matches("http://")).unwrap();
        c.write_all(b"GET /api/v1/targets HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Idle, slow and garbage clients, as any pod on the node can open: the
/// scrape (the DaemonSet's liveness probe) is still answered at once, and
/// events still flow.
#[test]
fn metrics_endpoint_serves_beside_idle_slow_and_garbage_clients() {
    if !require_root("metrics_endpoint_serves_beside_idle_slow_and_garbage_clients") {
        return;
    }
    let port = free_port();
    let mut d = Daemon::start(&["--output", "json", "--metrics", &port.to_string()], &[]);
    d.wait_ready();
    let mut held = Vec::new();
    // 200 idle clients (146 stopped the one-at-a-time endpoint).
    for _ in 0..200 {
        held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    for _ in 0..20 {
        // Slowloris: part of a request, then nothing.
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"GET /metr").unwrap();
        held.push(slow);
        // Garbage: a TLS hello's first bytes, then nothing.
        let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
        junk.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        held.push(junk);
    }
    let started = Instant::now();
    for _ in 0..10 {
        let text = get_metrics(port);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("netprobe_ready 1"), "{text}");
    }
    let took = started.elapsed();
    eprintln!("10 scrapes beside {} held clients: {took:?}", held.len());
    // Not left to wait for the held clients' 5 s deadline.
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Events are still written meanwhile.
    let ns = Netns::new();
    let server = closed_port_here(&ns);
    d.wait_for("closed port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, server.port())
    });
    drop(held);
    d.stop_cleanly();
}

#[test]
fn a_full_disk_gives_one_error_and_a_fallback_and_no_output_at_all_exits() {
    if !require_root("a_full_disk_gives_one_error_and_a_fallback_and_no_output_at_all_exits") {
        return;
    }
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    // stdout on a full disk: one error line, records go to stderr.
    let mut child = Command::new(netprobe_bin())
        .args(["run", "--output", "json"])
        .env("NETPROBE_JOURNAL_SOCKET", "/nonexistent/journal/socket")
        .stdout(full())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text.contains(" ready ") && Instant::now() < deadline {
        let n = stderr.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // SAFETY: signal our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    stderr.read_to_string(&mut text).unwrap();
    assert_eq!(st.code(), Some(0), "{text}");
    assert_eq!(text.matches("output to stdout failed").count(), 1, "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        text.contains("netprobe stopped after"),
        "the summary reached stderr: {text}"
    );

    // Nowhere to write at all: exit 1 promptly, no spinning.
    let t = Instant::now();
    let mut child = Command::new(netprobe_bin())
        .args(["run", "--output", "json"])
        .env("NETPROBE_JOURNAL_SOCKET", "/nonexistent/journal/socket")
        .stdout(full())
        .stderr(full())
        .spawn()
        .unwrap();
    // Promptly: within the time a start takes (its first record is the
    // first write that fails everywhere), not after retrying for long.
    let bound = patience(Duration::from_secs(5));
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netprobe kept running {bound:?} with no working output");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("no output at all: exit {st} after {:?}", t.elapsed());
    assert_eq!(st.code(), Some(1));
}

#[test]
fn hostile_process_names_are_escaped_in_json_and_text() {
    if !require_root("hostile_process_names_are_escaped_in_json_and_text") {
        return;
    }
    // A thread name with a newline, an escape sequence, a quote and a byte
    // that is not UTF-8 (comm holds 15 bytes).
    const NAME: &[u8] = b"a\nb\x1b[31m\"\xff\0";
    let provoke = |ns: &Netns| {
        ns.run(|| {
            // SAFETY: PR_SET_NAME with a NUL-terminated buffer.
            unsafe { libc::prctl(libc::PR_SET_NAME, NAME.as_ptr(), 0, 0, 0) };
            connect_to_closed_port("127.0.0.2", "127.0.0.1").1
        })
    };
    let ns = Netns::new();
    let mut d = Daemon::json();
    let server = provoke(&ns);
    // Some records are written in softirq context, under whichever task
    // ran then: the connecting thread's own record must carry its name.
    let v = d.wait_for(
        "a record with the hostile name",
        Duration::from_secs(10),
        |v| {
            about_port(v, server.port())
                && v["comm"].as_str().is_some_and(|c| c.starts_with("a\\x0a"))
        },
    );
    assert_eq!(v["comm"], "a\\x0ab\\x1b[31m\"\\xff", "{v}");
    d.stop_cleanly();

    // Text: no control character but the line ends, valid UTF-8.
    let mut child = Command::new(netprobe_bin())
        .args(["run", "--output", "text"])
        .env("NETPROBE_JOURNAL_SOCKET", "/nonexistent/journal/socket")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).contains(" ready ") && Instant::now() < deadline {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let server = provoke(&ns);
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signal our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    stdout.read_to_end(&mut out).unwrap();
    child.wait().unwrap();
    let text = String::from_utf8(out).expect("text output is UTF-8");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters in the text output:\n{text:?}"
    );
    assert!(
        text.lines().any(|l| l.contains(&server.port().to_string())),
        "{text}"
    );
}

/// A daemon serving metrics on a free port, once a connection to a closed
/// port in a throwaway namespace has been reported.
fn metrics_daemon_after_a_refused_connection() -> (Daemon, u16, Netns) {
    let port = free_port();
    let mut d = Daemon::start(&["--output", "json", "--metrics", &port.to_string()], &[]);
    d.wait_ready();
    let ns = Netns::new();
    let server = closed_port_here(&ns);
    d.wait_for("closed port", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, server.port())
    });
    (d, port, ns)
}

/// `kernel.bpf_stats_enabled` set for a test, put back on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn set(on: bool) -> BpfStats {
        let old = std::fs::read_to_string(Self::PATH).expect("kernel.bpf_stats_enabled (5.1+)");
        std::fs::write(Self::PATH, if on { "1" } else { "0" }).unwrap();
        BpfStats(old.trim().to_string())
    }

    fn turn(&self, on: bool) {
        std::fs::write(Self::PATH, if on { "1" } else { "0" }).unwrap();
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// A figure of an exposition: the sum of the lines starting with `prefix`.
fn figure(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `pred` holds of the exposition (it is updated once a
/// second), or gives the last one.
fn scrape_until(port: u16, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + patience(Duration::from_secs(5));
    loop {
        let text = get_metrics(port);
        if pred(&text) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn netprobe_reports_what_its_programs_cost_the_kernel() {
    if !require_root("netprobe_reports_what_its_programs_cost_the_kernel") {
        return;
    }
    let stats = BpfStats::set(true);
    // A refused connection runs the drop program (the SYN), among others.
    let (mut d, port, ns) = metrics_daemon_after_a_refused_connection();
    let runs = "netprobe_program_runs_total{program=\"kfree_skb\"}";
    let time = "netprobe_program_run_seconds_total{program=\"kfree_skb\"}";
    let text = scrape_until(port, |t| figure(t, runs) >= 1.0);
    assert_eq!(figure(&text, "netprobe_bpf_stats_enabled "), 1.0, "{text}");
    assert!(figure(&text, runs) >= 1.0, "{text}");
    assert!(figure(&text, time) > 0.0, "{text}");
    // The ring buffer has held the refused connection's records.
    assert!(
        figure(&text, "netprobe_ring_buffer_peak_bytes ") > 0.0,
        "{text}"
    );
    assert_eq!(
        figure(&text, "netprobe_ring_buffer_size_bytes "),
        8_388_608.0,
        "{text}"
    );
    // Skipped runs: counted per program where the kernel counts them, and
    // no metric at all where it does not (never a 0 that means nothing).
    let misses = "netprobe_program_misses_total{program=\"kfree_skb\"}";
    let counted = netprobe_tests::kernel::lacks_program_miss_count().is_none();
    assert_eq!(text.contains(misses), counted, "{text}");
    if counted {
        assert!(figure(&text, misses) >= 0.0, "{text}");
    }
    // Off: the kernel stops counting, and the figures stand still while
    // the program runs on.
    stats.turn(false);
    let off = scrape_until(port, |t| figure(t, "netprobe_bpf_stats_enabled ") == 0.0);
    assert_eq!(figure(&off, "netprobe_bpf_stats_enabled "), 0.0, "{off}");
    let frozen = figure(&off, runs);
    let again = closed_port_here(&ns);
    d.wait_for("closed port again", Duration::from_secs(10), |v| {
        v["mode"] == "no_listener" && about_port(v, again.port())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let later = get_metrics(port);
    assert_eq!(figure(&later, runs), frozen, "{later}");
    // The summary says the same.
    d.stop_cleanly();
    let all = d.collect(Duration::from_secs(5), |_| true);
    let summary = all
        .iter()
        .find(|v| v["kind"] == "summary")
        .expect("a summary record at the stop");
    let e = &summary["evidence"];
    assert_eq!(e["bpf_stats_enabled"], false, "{summary}");
    assert_eq!(
        e["programs"]["kfree_skb"]["runs"].as_u64(),
        Some(frozen as u64),
        "{summary}"
    );
    assert!(
        e["programs"]["kfree_skb"]["run_ns"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(e["program_misses_counted"], counted, "{summary}");
    assert_eq!(
        e["programs"]["kfree_skb"]["misses"].is_u64(),
        counted,
        "{summary}"
    );
    assert!(
        e["ring_buffer_peak_bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    drop(stats);
}
