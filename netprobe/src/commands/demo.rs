//! `netprobe demo`: provokes, in throwaway network namespaces, each failure
//! mode this kernel can show, while `netprobe run` traces; prints what
//! netprobe said of each, then the report of the whole run, and cleans up
//! (the namespaces go with their last socket and process).

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    families::catalogue,
    kernel::sandbox::{set_int, Netns},
    kernel::sys,
    output::report,
    pipeline::record::escape_bytes,
};

/// What a scenario leaves running until netprobe has seen it.
type Keep = Vec<Box<dyn Send>>;

/// What a scenario's record is about.
#[derive(Clone, Copy)]
enum Target {
    /// The port of its flow or listener.
    Port(u16),
    /// The process it names (an OOM victim).
    Pid(u32),
}

struct Scenario {
    mode: &'static str,
    what: &'static str,
    /// A program the scenario needs, if any.
    needs: Option<&'static str>,
    /// Provokes the failure inside the namespace; returns what to look for
    /// in records, and what to keep alive.
    provoke: fn() -> std::io::Result<(Target, Keep)>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        mode: "no_listener",
        what: "a client connects to a port nothing listens on",
        needs: None,
        provoke: closed_port,
    },
    Scenario {
        mode: "rcvbuf_full",
        what: "a UDP socket with a 4 KiB buffer is sent 64 datagrams and never reads",
        needs: None,
        provoke: unread_udp,
    },
    Scenario {
        mode: "accept_queue_full",
        what: "a listener with backlog 1 never accepts while 6 clients connect",
        needs: Some("sleep"),
        provoke: full_accept_queue,
    },
    Scenario {
        mode: "syn_queue_full",
        what: "a listener's SYN queue (backlog 2, syncookies off) fills with handshakes",
        needs: Some("sleep"),
        provoke: full_syn_queue,
    },
    Scenario {
        mode: "netfilter_drop",
        what: "an nftables rule drops the SYNs to a listener",
        needs: Some("nft"),
        provoke: nft_drop,
    },
    Scenario {
        mode: "unreachable",
        what: "an nftables rule rejects the SYNs to a listener with ICMP host-unreachable",
        needs: Some("nft"),
        provoke: nft_reject,
    },
    Scenario {
        mode: "tw_recycle",
        what: "a segment with a TCP timestamp older than its connection's is injected",
        needs: Some("sleep"),
        provoke: stale_timestamp,
    },
    Scenario {
        mode: "qdisc_full",
        what: "a token bucket (tbf, 8 kbit/s) on loopback overflows with a UDP burst",
        needs: Some("tc"),
        provoke: qdisc_overflow,
    },
    // Last: the OOM kill opens a window that counts what follows it.
    Scenario {
        mode: "oom_kill",
        what: "a process (memory-hog) in a throwaway memory cgroup (32 MiB) allocates until the \
               OOM killer kills it: confined to its cgroup, no network stall",
        needs: None,
        provoke: oom_kill,
    },
];

/// A listener on loopback with the given backlog (std listens with 128;
/// listening again sets it).
fn listener(backlog: i32, defer_accept: bool) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    if defer_accept {
        set_int(&l, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 30)?;
    }
    // SAFETY: listen(2) on an open socket.
    if unsafe { libc::listen(l.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l)
}

fn closed_port() -> std::io::Result<(Target, Keep)> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    Ok((Target::Port(port), Vec::new()))
}

fn unread_udp() -> std::io::Result<(Target, Keep)> {
    let r = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    set_int(&r, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096)?;
    let at = r.local_addr()?;
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    for _ in 0..64 {
        s.send_to(&[0u8; 1000], at)?;
    }
    Ok((Target::Port(at.port()), vec![Box::new(r)]))
}

fn connect_all(at: SocketAddr, n: usize, keep: &mut Keep) {
    for _ in 0..n {
        if let Ok(c) = TcpStream::connect_timeout(&at, Duration::from_millis(200)) {
            keep.push(Box::new(c));
        }
    }
}

/// A process in the namespace, as a pod has, so that netprobe reads its
/// counters (without kprobes they are what shows queue overflows).
fn resident() -> std::io::Result<Resident> {
    Ok(Resident(Command::new("sleep").arg("30").spawn()?))
}

fn full_accept_queue() -> std::io::Result<(Target, Keep)> {
    let resident = resident()?;
    let l = listener(1, false)?;
    let at = l.local_addr()?;
    let mut keep: Keep = vec![Box::new(resident), Box::new(l)];
    connect_all(at, 6, &mut keep);
    Ok((Target::Port(at.port()), keep))
}

fn full_syn_queue() -> std::io::Result<(Target, Keep)> {
    std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "0")?;
    let resident = resident()?;
    let l = listener(2, true)?;
    let at = l.local_addr()?;
    let mut keep: Keep = vec![Box::new(resident), Box::new(l)];
    connect_all(at, 4, &mut keep);
    Ok((Target::Port(at.port()), keep))
}

fn run_tool(program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A listener and an nftables rule in `family` that meets the SYNs to it
/// with `verdict`; returns the listener's port and the listener.
fn listener_behind(family: &str, verdict: &str) -> std::io::Result<(std::net::SocketAddr, Keep)> {
    let l = listener(16, false)?;
    let at = l.local_addr()?;
    run_tool(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "table {family} netprobe_demo {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {} {verdict}\n  }}\n}}\n",
            at.port()
        )),
    )?;
    Ok((at, vec![Box::new(l)]))
}

fn nft_drop() -> std::io::Result<(Target, Keep)> {
    let (at, mut keep) = listener_behind("inet", "drop")?;
    connect_all(at, 1, &mut keep);
    Ok((Target::Port(at.port()), keep))
}

fn nft_reject() -> std::io::Result<(Target, Keep)> {
    let (at, keep) = listener_behind("ip", "reject with icmp type host-unreachable")?;
    // "No route to host": the connect fails at once.
    let _ = std::net::TcpStream::connect(at);
    Ok((Target::Port(at.port()), keep))
}

fn qdisc_overflow() -> std::io::Result<(Target, Keep)> {
    run_tool(
        "tc",
        &[
            "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8kbit", "burst", "1600", "limit",
            "3000",
        ],
        None,
    )?;
    let r = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let at = r.local_addr()?;
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    for _ in 0..32 {
        // The qdisc's drops come back as ENOBUFS, or not at all.
        let _ = s.send_to(&[0u8; 1000], at);
    }
    Ok((Target::Port(at.port()), vec![Box::new(r)]))
}

fn stale_timestamp() -> std::io::Result<(Target, Keep)> {
    let resident = resident()?;
    let paws = crate::kernel::rawtcp::stale_timestamp()?;
    let mut keep = paws.keep;
    keep.push(Box::new(resident));
    Ok((Target::Port(paws.server.port()), keep))
}

fn oom_kill() -> std::io::Result<(Target, Keep)> {
    let cg = crate::kernel::sandbox::MemCgroup::new(
        &format!("netprobe-demo-oom-{}", std::process::id()),
        32 << 20,
    )
    .map_err(std::io::Error::other)?;
    let (pid, how) = cg.run_hog(1 << 30)?;
    if how != "killed by signal 9" {
        return Err(std::io::Error::other(format!(
            "the process was not OOM-killed ({how})"
        )));
    }
    Ok((Target::Pid(pid), vec![Box::new(cg)]))
}

/// A child process killed when dropped.
struct Resident(Child);

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether a record is about `target` in `mode`.
fn about(v: &Value, mode: &str, target: Target) -> bool {
    v["mode"] == mode
        && match target {
            Target::Port(port) => ["dport", "sport", "port"]
                .iter()
                .any(|k| v[k].as_u64() == Some(u64::from(port))),
            Target::Pid(pid) => v["kind"] == "oom" && v["pid"].as_u64() == Some(u64::from(pid)),
        }
}

struct Tracer {
    child: Resident,
    records: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Tracer {
    fn start() -> Result<Tracer, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find netprobe: {e}"))?;
        let mut child = Command::new(exe)
            .args(["run", "--output", "json", "--incident-window", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start netprobe run: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout from netprobe run")?;
        let (tx, records) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Tracer {
            child: Resident(child),
            records,
            seen: Vec::new(),
        })
    }

    /// The first record (seen before or within `timeout`) matching `pred`.
    fn wait(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let v = self.records.recv_timeout(left).ok()?;
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
        None
    }

    /// SIGTERM, then everything it wrote.
    fn stop(mut self) -> Vec<Value> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        let _ = self.child.0.wait();
        while let Ok(v) = self.records.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        self.seen
    }
}

pub fn run() -> i32 {
    let privilege = sys::cap_eff().map_or(
        Some("cannot read /proc/self/status".into()),
        sys::missing_privilege,
    );
    if let Some(why) = privilege {
        tracing::error!("{why}");
        return 1;
    }
    let mut tracer = match Tracer::start() {
        Ok(t) => t,
        Err(why) => {
            tracing::error!("{why}");
            return 1;
        }
    };
    let Some(ready) = tracer.wait(Duration::from_secs(30), |v| v["kind"] == "ready") else {
        tracing::error!("netprobe run did not get ready within 30 s");
        return 1;
    };
    println!(
        "netprobe demo: tracing ({} probes attached, {} skipped); provoking each failure in a \
         throwaway network namespace\n",
        ready["attached"], ready["skipped"]
    );
    let (mut shown, mut tried) = (0, 0);
    for s in SCENARIOS {
        println!("{}: {}", s.mode, s.what);
        if let Some(p) = s.needs.filter(|p| !on_path(p)) {
            println!("  skipped: needs {p}, which is not on PATH\n");
            continue;
        }
        tried += 1;
        let provoked = Netns::create().and_then(|ns| {
            let (target, keep) = ns.run(s.provoke)??;
            Ok((target, keep, ns))
        });
        let (target, _keep, _ns) = match provoked {
            Ok(p) => p,
            Err(e) => {
                println!("  could not provoke it here: {e}\n");
                continue;
            }
        };
        match tracer.wait(Duration::from_secs(6), |v| about(v, s.mode, target)) {
            Some(v) => {
                shown += 1;
                let text = |k: &str| escape_bytes(v[k].as_str().unwrap_or("").as_bytes());
                println!("  netprobe: {}", text("message"));
                if v["advice"].is_string() {
                    println!("  advice: {}", text("advice"));
                }
                println!();
            }
            None => {
                let why = catalogue::by_mode(s.mode).map_or("", |e| e.detection);
                println!(
                    "  not seen on this kernel within 6 s (netprobe detects it through: {why})\n"
                );
            }
        }
    }
    let records = tracer.stop();
    let mut summary = report::Summary::default();
    for v in &records {
        report::add(&mut summary, v, None);
    }
    println!("{shown} of {tried} failures provoked were diagnosed. The report of this run:\n");
    print!("{}", report::render(&summary));
    0
}
