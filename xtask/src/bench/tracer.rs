//! The tracers the bench compares: the release netprobe (`run --output
//! json`, its records tallied as they come) and bpftrace on the same
//! tracepoints, printing each event. Each is stopped on drop, killed if it
//! does not exit in time.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::{bpf, interrupted};

/// How long a tracer may take to start, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `sig` and waits (bounded) for the exit; kills it after that.
fn stop_child(child: &mut Child, sig: i32, what: &str) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("{what} did not exit within {STOP_TIMEOUT:?} of signal {sig}; killed")
}

/// What netprobe wrote, counted the way its metrics count it: an event
/// record written in full is one event; an `incident` record's `count`
/// includes its first event, written before, so it adds `count - 1`
/// (repeats folded); `lost` records say how many events never became
/// records; counter records (procfs deltas, no probe) are kept apart.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Event records by kind (`drop`, `reset_sent`, ...).
    pub written: BTreeMap<String, u64>,
    /// Repeats folded into incidents.
    pub folded: u64,
    pub lost: u64,
    /// Records made from counters (`evidence.source = "counters"`).
    pub from_counters: u64,
    /// Events about other flows than the storm's (written or folded), when
    /// `count_only` named its ports: the rest of the host.
    pub elsewhere: u64,
    /// `"sport":PORT,` and the like, for each port of `count_only`.
    pub(super) needles: Vec<String>,
    /// The final `summary` record.
    pub summary: Option<Value>,
    /// netprobe's own `error` records.
    pub errors: Vec<String>,
    /// The per-service incident that saw the most distinct sources: how
    /// many it estimated, and the sources it named.
    pub distinct_sources: Option<(u64, Vec<String>)>,
}

/// Kinds that are netprobe's housekeeping, not kernel events.
const HOUSEKEEPING: &[&str] = &["probe", "ready", "config", "error", "summary"];

/// The `kind` of a JSON line as netprobe writes it, without parsing the
/// rest: the storm's records come by the hundred thousand, and the tally
/// runs beside the daemon on the same two cores.
fn kind_of(line: &str) -> Option<&str> {
    let at = line.find("\"kind\":\"")? + 8;
    let len = line[at..].find('"')?;
    Some(&line[at..at + len])
}

impl Tally {
    pub fn written_total(&self) -> u64 {
        self.written.values().sum()
    }

    /// Events that reached the daemon: written in full or folded, the
    /// storm's and the rest of the host's.
    pub fn processed(&self) -> u64 {
        self.written_total() + self.folded + self.elsewhere
    }

    /// The storm's events accounted for: written, folded or counted lost
    /// (losses name no flow: all of them count).
    pub fn accounted(&self) -> u64 {
        self.written_total() + self.folded + self.lost
    }

    /// From now on, event records that name none of `ports` (as either
    /// port of the flow, or the listener's) are counted as `elsewhere`.
    pub fn count_only(&mut self, ports: &[u16]) {
        self.needles = ports
            .iter()
            .flat_map(|p| {
                ["sport", "dport", "port"]
                    .into_iter()
                    .flat_map(move |f| [format!("\"{f}\":{p},"), format!("\"{f}\":{p}}}")])
            })
            .collect();
    }

    fn mine(&self, line: &str) -> bool {
        self.needles.is_empty() || self.needles.iter().any(|n| line.contains(n.as_str()))
    }

    pub fn add(&mut self, line: &str) -> Result<()> {
        let Some(kind) = kind_of(line) else {
            bail!("netprobe wrote a line without a kind: {line}");
        };
        if line.contains("\"source\":\"counters\"") {
            self.from_counters += 1;
            return Ok(());
        }
        let (written, folded) = if !line.contains("\"count\":") {
            if HOUSEKEEPING.contains(&kind) {
                return Ok(());
            }
            (1, 0)
        } else {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("netprobe wrote a line that is not JSON: {line}"))?;
            let count = v["count"].as_u64().unwrap_or(1);
            if let Some(d) = v["evidence"]["distinct_sources"].as_u64() {
                if self.distinct_sources.as_ref().is_none_or(|(n, _)| d > *n) {
                    let named = v["evidence"]["sources"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.distinct_sources = Some((d, named));
                }
            }
            match kind {
                "incident" => (0, count.saturating_sub(1)),
                "lost" => {
                    self.lost += count;
                    return Ok(());
                }
                "summary" => {
                    self.summary = Some(v);
                    return Ok(());
                }
                "error" => {
                    self.errors.push(v["message"].as_str().unwrap_or("").into());
                    return Ok(());
                }
                _ if HOUSEKEEPING.contains(&kind) => return Ok(()),
                // A record that sums events itself (the minute's retransmits).
                _ => (count, 0),
            }
        };
        if !self.mine(line) {
            self.elsewhere += written + folded;
        } else {
            self.folded += folded;
            if written > 0 {
                *self.written.entry(kind.to_string()).or_default() += written;
            }
        }
        Ok(())
    }
}

/// A running `netprobe run --output json`.
pub struct Netprobe {
    child: Child,
    pub pid: u32,
    /// From spawn to the `ready` record.
    pub ready_after: Duration,
    /// `category:name` of each tracepoint a probe attached to.
    pub tracepoints: Vec<String>,
    tally: Arc<Mutex<Tally>>,
    reader: Option<thread::JoinHandle<Result<()>>>,
    stderr: PathBuf,
}

/// The tracepoints of a `probe` record's `hook` (`tracepoint skb:kfree_skb`,
/// or several joined by ` + `, kprobes among them).
fn hook_tracepoints(hook: &str) -> Vec<String> {
    hook.split(" + ")
        .filter_map(|h| h.strip_prefix("tracepoint "))
        .map(|t| t.trim().to_string())
        .collect()
}

impl Netprobe {
    /// Starts it (with `extra` arguments) and waits for `ready`. Its
    /// stderr goes to `stderr`.
    pub fn start(bin: &Path, stderr: &Path, extra: &[&str]) -> Result<Netprobe> {
        let err =
            File::create(stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["run", "--output", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("netprobe's stdout")?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (ready_tx, ready_rx) = mpsc::channel::<Vec<String>>();
        let into = tally.clone();
        let reader = thread::Builder::new()
            .name("bench-netprobe-reader".into())
            .spawn(move || -> Result<()> {
                let mut lines = BufReader::new(stdout).lines();
                let mut tracepoints = Vec::new();
                for line in lines.by_ref() {
                    let line = line?;
                    let v: Value = serde_json::from_str(&line).with_context(|| {
                        format!("netprobe wrote a line that is not JSON: {line}")
                    })?;
                    match v["kind"].as_str() {
                        Some("probe") if v["status"] == "attached" => {
                            tracepoints.extend(hook_tracepoints(v["hook"].as_str().unwrap_or("")))
                        }
                        Some("ready") => {
                            let _ = ready_tx.send(std::mem::take(&mut tracepoints));
                            break;
                        }
                        _ => {}
                    }
                }
                // Read to the end whatever happens, so that netprobe never
                // blocks on a full pipe; the first bad line is the error.
                let mut bad = None;
                for line in lines {
                    let line = line?;
                    let mut t = into.lock().map_err(|_| anyhow!("tally poisoned"))?;
                    if let Err(e) = t.add(&line) {
                        bad.get_or_insert(e);
                    }
                }
                bad.map_or(Ok(()), Err)
            })?;
        let mut np = Netprobe {
            child,
            pid,
            ready_after: Duration::ZERO,
            tracepoints: Vec::new(),
            tally,
            reader: Some(reader),
            stderr: stderr.to_path_buf(),
        };
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(tps) => {
                    np.ready_after = started.elapsed();
                    np.tracepoints = tps;
                    return Ok(np);
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                    if started.elapsed() < START_TIMEOUT
                        && !interrupted()
                        && np.child.try_wait()?.is_none() => {}
                Err(_) => bail!(
                    "netprobe (pid {pid}) wrote no `ready` record within {:.1} s{}; its stderr:\n{}",
                    started.elapsed().as_secs_f64(),
                    match np.child.try_wait()? {
                        Some(st) => format!(" and exited ({st})"),
                        None => String::new(),
                    },
                    fs::read_to_string(stderr).unwrap_or_default().trim()
                ),
            }
        }
    }

    /// See [`Tally::count_only`].
    pub fn count_only(&self, ports: &[u16]) {
        match self.tally.lock() {
            Ok(mut t) => t.count_only(ports),
            Err(p) => p.into_inner().count_only(ports),
        }
    }

    /// The tally so far.
    pub fn tally(&self) -> Tally {
        match self.tally.lock() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// SIGTERM (netprobe flushes its incidents and writes its `summary`),
    /// then the full tally.
    pub fn stop(mut self) -> Result<Tally> {
        stop_child(&mut self.child, libc::SIGTERM, "netprobe")?;
        if let Some(r) = self.reader.take() {
            super::netns::join(r)?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "netprobe exited with {status}; its stderr:\n{}",
                fs::read_to_string(&self.stderr).unwrap_or_default().trim()
            );
        }
        Ok(self.tally())
    }
}

impl Drop for Netprobe {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child, libc::SIGTERM, "netprobe");
    }
}

/// The scalar fields of a tracepoint's format (not `common_*`, not arrays):
/// what bpftrace prints of each event.
fn scalar_fields(format: &str) -> Vec<String> {
    format
        .lines()
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .filter_map(|decl| decl.split(';').next())
        .filter(|decl| !decl.contains('[') && !decl.contains("__data_loc"))
        .filter_map(|decl| decl.rsplit([' ', '*']).next())
        .filter(|name| !name.is_empty() && !name.starts_with("common_"))
        .map(str::to_string)
        .collect()
}

/// The value of drop reason `name` in a kfree_skb format (`{ 2, "NAME" }`).
pub fn reason_value(format: &str, name: &str) -> Option<u64> {
    let at = format.find(&format!(", \"{name}\" }}"))?;
    let open = format[..at].rfind('{')?;
    format[open + 1..at].trim().parse().ok()
}

/// The bpftrace program: one probe per tracepoint. Like netprobe, it
/// skips drops at or below NOT_SPECIFIED and QUEUE_PURGE in the kernel (the
/// values read from the kfree_skb format), and writes each other event as
/// a JSON line: the kind, the time, the task and every scalar field of the
/// record (netprobe also reads the packet's headers, which bpftrace's
/// tracepoint arguments do not give).
pub fn bpftrace_script(tracepoints: &[String], format: impl Fn(&str) -> Option<String>) -> String {
    let mut s = String::new();
    for tp in tracepoints {
        let text = format(tp).unwrap_or_default();
        let fields = scalar_fields(&text);
        let mut filter = String::new();
        if tp == "skb:kfree_skb" && fields.iter().any(|f| f == "reason") {
            let mut conds = Vec::new();
            if let Some(min) = reason_value(&text, "NOT_SPECIFIED") {
                conds.push(format!("args->reason > {min}"));
            }
            if let Some(purge) = reason_value(&text, "QUEUE_PURGE") {
                conds.push(format!("args->reason != {purge}"));
            }
            if !conds.is_empty() {
                filter = format!(" /{}/", conds.join(" && "));
            }
        }
        let fmt: String = fields
            .iter()
            .map(|f| format!(",\\\"{f}\\\":%llu"))
            .collect();
        let args: String = fields
            .iter()
            .map(|f| format!(", (uint64)args->{f}"))
            .collect();
        s.push_str(&format!(
            "tracepoint:{tp}{filter} {{ printf(\"{{\\\"kind\\\":\\\"%s\\\",\\\"ns\\\":%llu,\\\"pid\\\":%d,\\\"comm\\\":\\\"%s\\\"{fmt}}}\\n\", probe, nsecs, pid, comm{args}); }}\n"
        ));
    }
    s
}

/// The tracefs `format` file of `category:name`, if readable.
pub fn tracefs_format(tracepoint: &str) -> Option<String> {
    let (cat, name) = tracepoint.split_once(':')?;
    fs::read_to_string(format!("/sys/kernel/tracing/events/{cat}/{name}/format")).ok()
}

/// A running bpftrace, its output to /dev/null.
pub struct Bpftrace {
    child: Child,
    pub pid: u32,
}

impl Bpftrace {
    /// Starts `bpftrace SCRIPT` and waits until every tracepoint has its
    /// program attached (bpftrace prints nothing when it has).
    pub fn start(script: &Path, tracepoints: usize, stderr: &Path) -> Result<Bpftrace> {
        let err =
            File::create(stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        let started = Instant::now();
        let child = Command::new("bpftrace")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start bpftrace")?;
        let pid = child.id();
        let mut b = Bpftrace { child, pid };
        loop {
            // bpftrace's own attachments answer the query; its program
            // names do not say which tracepoint they serve.
            let mut attached: Vec<String> = bpf::programs(pid, &[])
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.tracepoint)
                .collect();
            attached.dedup();
            let attached = attached.len();
            if attached >= tracepoints {
                return Ok(b);
            }
            if let Some(st) = b.child.try_wait()? {
                bail!(
                    "bpftrace exited ({st}) before attaching; its stderr:\n{}",
                    fs::read_to_string(stderr).unwrap_or_default().trim()
                );
            }
            if started.elapsed() > START_TIMEOUT || interrupted() {
                bail!(
                    "bpftrace attached {attached} of {tracepoints} tracepoints within {:.0} s; its stderr:\n{}",
                    started.elapsed().as_secs_f64(),
                    fs::read_to_string(stderr).unwrap_or_default().trim()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) -> Result<()> {
        stop_child(&mut self.child, libc::SIGINT, "bpftrace")
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child, libc::SIGINT, "bpftrace");
    }
}

/// Writes `text` to `path`, creating its directory.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records netprobe wrote (its ring buffer shrunk to 64 KiB) while 2000
    /// datagrams went to an unread UDP socket on port 42092 and a closed
    /// TCP port 59109 refused connections: a few of each kind.
    const RECORDS: &str = include_str!("testdata/records.jsonl");

    #[test]
    fn tally_counts_written_folded_lost_and_counter_records() {
        let mut t = Tally::default();
        t.count_only(&[42092, 59109]);
        for line in RECORDS.lines() {
            t.add(line).unwrap();
        }
        // The first datagram dropped, and two refused connections (the SYN
        // dropped, the RST sent and received, ECONNREFUSED).
        assert_eq!(t.written.get("drop"), Some(&3));
        assert_eq!(t.written.get("reset_sent"), Some(&2));
        assert_eq!(t.written.get("reset_received"), Some(&2));
        assert_eq!(t.written.get("socket_error"), Some(&2));
        assert_eq!(t.written_total(), 9);
        // The other 1291 drops of that flow, folded into its incident.
        assert_eq!(t.folded, 1291);
        assert_eq!(t.lost, 706);
        assert_eq!(t.from_counters, 1);
        assert_eq!(t.elsewhere, 0);
        assert!(t.errors.is_empty());
        assert_eq!(t.summary.as_ref().unwrap()["count"], 1313);
        assert_eq!(t.processed(), 9 + 1291);
        assert_eq!(t.accounted(), 9 + 1291 + 706);

        // Counting only the UDP socket's flows: the TCP ones are elsewhere.
        let mut udp = Tally::default();
        udp.count_only(&[42092]);
        for line in RECORDS.lines() {
            udp.add(line).unwrap();
        }
        assert_eq!(udp.written_total(), 1);
        assert_eq!(udp.folded, 1291);
        assert_eq!(udp.elsewhere, 8);
        assert_eq!(udp.lost, 706);
        assert_eq!(udp.processed(), t.processed());

        assert!(t.add("{\"ts\":\"x\"}").is_err());
        assert!(t.add("{\"kind\":\"incident\",\"count\":").is_err());
    }

    #[test]
    fn kind_is_read_without_parsing() {
        assert_eq!(
            kind_of(r#"{"ts":"t","kind":"drop","message":"m"}"#),
            Some("drop")
        );
        assert_eq!(kind_of(r#"{"ts":"t","kind":"#), None);
    }

    #[test]
    fn hooks_name_their_tracepoints() {
        assert_eq!(
            hook_tracepoints("tracepoint skb:kfree_skb"),
            ["skb:kfree_skb"]
        );
        assert_eq!(
            hook_tracepoints(
                "tracepoint tcp:tcp_send_reset + kprobe tcp_v4_send_reset, tcp_v6_send_reset"
            ),
            ["tcp:tcp_send_reset"]
        );
        assert!(hook_tracepoints("kprobe tcp_drop").is_empty());
    }

    #[test]
    fn bpftrace_filters_like_netprobe_and_prints_every_scalar_field() {
        let tps = [
            "skb:kfree_skb".to_string(),
            "tcp:tcp_send_reset".to_string(),
        ];
        // The real formats of the project's kernel (6.18).
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../netprobe/testdata/kernels/6.18/events"
        );
        let script = bpftrace_script(&tps, |tp| {
            let (cat, name) = tp.split_once(':').unwrap();
            std::fs::read_to_string(format!("{root}/{cat}/{name}/format")).ok()
        });
        let lines: Vec<&str> = script.lines().collect();
        assert!(
            lines[0].starts_with(
                "tracepoint:skb:kfree_skb /args->reason > 2 && args->reason != 104/ { printf(\"{\\\"kind\\\":\\\"%s\\\",\\\"ns\\\":%llu,"
            ),
            "{script}"
        );
        for f in ["skbaddr", "location", "rx_sk", "protocol", "reason"] {
            assert!(
                lines[0].contains(&format!("(uint64)args->{f}")),
                "{f}: {script}"
            );
        }
        // Arrays (the addresses) are not scalars; no filter on resets.
        assert!(
            lines[1].starts_with("tracepoint:tcp:tcp_send_reset { printf("),
            "{script}"
        );
        assert!(lines[1].contains("(uint64)args->reason") && !lines[1].contains("saddr"));
    }

    #[test]
    fn drop_reason_values_come_from_the_format() {
        let f = include_str!("../../../netprobe/testdata/kernels/6.1/events/skb/kfree_skb/format");
        assert_eq!(reason_value(f, "NOT_SPECIFIED"), Some(1));
        assert_eq!(reason_value(f, "NO_SOCKET"), Some(2));
        assert_eq!(reason_value(f, "QUEUE_PURGE"), None);
    }
}
