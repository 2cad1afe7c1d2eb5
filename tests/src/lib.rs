//! Helpers for netprobe's integration tests: they run the real daemon against
//! the real kernel, make failures happen in throwaway network namespaces, and
//! wait for the records. Root only; never a mock.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The netprobe binary under test: `NETPROBE_BIN` (set by `cargo xtask test`),
/// else the workspace's debug build.
pub fn netprobe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPROBE_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netprobe")
}

/// The variable that lets an unprivileged run skip the root tests: the
/// one explicit opt-in. Without it, a test run without root fails.
pub const SKIP_WITHOUT_ROOT: &str = "NETPROBE_TESTS_SKIP_WITHOUT_ROOT";

static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn print_skipped() {
    let n = SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "netprobe-tests: {n} test(s) SKIPPED, not run: not root, and {SKIP_WITHOUT_ROOT}=1 was set"
    );
}

/// True when the test may go on (root). Without root the test fails with
/// why, unless `NETPROBE_TESTS_SKIP_WITHOUT_ROOT=1` asks to skip: then it
/// says so, and the executable prints how many it skipped when it exits.
/// In CI (`CI` set) running without root always fails.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let opted_in = std::env::var(SKIP_WITHOUT_ROOT).is_ok_and(|v| v == "1");
    assert!(
        opted_in && std::env::var_os("CI").is_none(),
        "{test}: needs root (euid is {euid}): it loads eBPF programs and creates network \
         namespaces. Run it as root (`cargo xtask test`), or set {SKIP_WITHOUT_ROOT}=1 to skip \
         it explicitly{}",
        if std::env::var_os("CI").is_some() {
            " (never in CI, which must run it)"
        } else {
            ""
        }
    );
    if SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
        // SAFETY: registering a plain extern "C" function; libtest's exit
        // runs it once, after every test.
        unsafe { libc::atexit(print_skipped) };
    }
    eprintln!("SKIP {test}: not root ({SKIP_WITHOUT_ROOT}=1)");
    false
}

pub mod containerd;
pub mod journal;
pub mod kernel;
pub mod podman;
pub mod provoke;
pub mod seccomp;

/// A throwaway network namespace with loopback up. It lives as long as this
/// handle holds its descriptor, so it disappears on drop, even if the test
/// panics; no `ip` binary or /run/netns mount is needed (the VM guests have
/// neither).
/// A throwaway network namespace (netprobe's own sandbox), failing the
/// test when it cannot be made or entered.
pub struct Netns(netprobe::kernel::sandbox::Netns);

impl Netns {
    pub fn new() -> Netns {
        Netns(netprobe::kernel::sandbox::Netns::create().expect("a throwaway network namespace"))
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.0.run(f).expect("run in the test namespace")
    }

    pub fn inode(&self) -> u64 {
        self.0.inode().expect("the namespace's inode")
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

/// Connects from `client_ip` to a port on `server_ip` that is certainly
/// closed (bound, then released). Returns (client, server) addresses; the
/// connect must be refused.
pub fn connect_to_closed_port(client_ip: &str, server_ip: &str) -> (SocketAddr, SocketAddr) {
    let server: SocketAddr = {
        let l = TcpListener::bind((server_ip, 0)).expect("bind probe listener");
        l.local_addr().unwrap()
    };
    let socket = if server.is_ipv4() {
        socket2_free::tcp_v4()
    } else {
        socket2_free::tcp_v6()
    };
    let client: SocketAddr = format!(
        "{}:0",
        if server.is_ipv4() {
            client_ip.to_string()
        } else {
            format!("[{client_ip}]")
        }
    )
    .parse()
    .unwrap();
    socket2_free::bind(&socket, client);
    let client = socket2_free::local_addr(&socket);
    let err =
        socket2_free::connect(&socket, server).expect_err("the closed port accepted a connection");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    (client, server)
}

/// Minimal socket calls on raw fds, so a client can be bound to a chosen
/// source address before connecting (std cannot do that).
pub mod socket2_free {
    use std::{
        io,
        net::SocketAddr,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };

    pub fn tcp_v4() -> OwnedFd {
        socket(libc::AF_INET, libc::SOCK_STREAM)
    }
    pub fn tcp_v6() -> OwnedFd {
        socket(libc::AF_INET6, libc::SOCK_STREAM)
    }
    /// A TCP or UDP socket of `addr`'s family.
    pub fn for_addr(addr: &SocketAddr, ty: i32) -> OwnedFd {
        socket(
            if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            },
            ty,
        )
    }
    fn socket(family: i32, ty: i32) -> OwnedFd {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    pub fn accept(fd: &OwnedFd) -> OwnedFd {
        // SAFETY: accept4(2) without an address; the fd is owned at once.
        let c = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        assert!(c >= 0, "accept: {}", io::Error::last_os_error());
        unsafe { OwnedFd::from_raw_fd(c) }
    }

    pub fn listen(fd: &OwnedFd, backlog: i32) {
        // SAFETY: listen(2) on an owned fd.
        let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
        assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    }

    /// A TCP listener on `addr` with TCP_DEFER_ACCEPT: completed handshakes
    /// wait in the SYN queue until data arrives. Returns it and its address.
    pub fn deferred_listener(addr: SocketAddr, backlog: i32) -> (OwnedFd, SocketAddr) {
        let l = for_addr(&addr, libc::SOCK_STREAM);
        bind(&l, addr);
        set_int(&l, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 30);
        listen(&l, backlog);
        let at = local_addr(&l);
        (l, at)
    }

    pub fn set_int(fd: &OwnedFd, level: i32, name: i32, value: i32) {
        netprobe::kernel::sandbox::set_int(fd, level, name, value)
            .unwrap_or_else(|e| panic!("setsockopt {level}/{name}: {e}"));
    }

    pub fn set_nonblocking(fd: &OwnedFd) {
        // SAFETY: fcntl(2) on an owned fd.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }

    /// Waits up to `ms` for a non-blocking connect to finish; true when
    /// it connected.
    pub fn wait_connected(fd: &OwnedFd, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n != 1 {
            return false;
        }
        let mut err = 0i32;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt(SO_ERROR) into an int.
        unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut i32 as *mut libc::c_void,
                &mut len,
            )
        };
        err == 0
    }

    pub fn send(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
        // SAFETY: send(2) from a valid buffer.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn send_to(fd: &OwnedFd, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let (ss, len) = raw(to);
        // SAFETY: sendto(2) from a valid buffer to a valid sockaddr.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                0,
                &ss as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain data; we fill the right variant.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }

    pub fn bind(fd: &OwnedFd, addr: SocketAddr) {
        let (ss, len) = raw(addr);
        // SAFETY: valid sockaddr of the stated length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &ss as *const _ as *const libc::sockaddr,
                len,
            )
        };
        assert_eq!(rc, 0, "bind {addr}: {}", io::Error::last_os_error());
    }

    pub fn connect(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
        let (ss, len) = raw(addr);
        // SAFETY: valid sockaddr of the stated length.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &ss as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn local_addr(fd: &OwnedFd) -> SocketAddr {
        // SAFETY: getsockname into a sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                &mut ss as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        match ss.ss_family as i32 {
            libc::AF_INET => {
                let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
                SocketAddr::from((
                    sin.sin_addr.s_addr.to_ne_bytes(),
                    u16::from_be(sin.sin_port),
                ))
            }
            _ => {
                let sin6 = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
                SocketAddr::from((sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port)))
            }
        }
    }
}

/// A running `netprobe run --output json`, its records collected as they come.
/// Records a failed wait shows (a flood would take minutes on a serial console).
const SHOWN: usize = 60;

pub struct Daemon {
    child: Child,
    records: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub started: Instant,
}

impl Daemon {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(Daemon::command(args, env))
    }

    /// `BIN run ARGS`: another build of netprobe (the probe-log one).
    pub fn start_bin(bin: &std::path::Path, args: &[&str]) -> Daemon {
        Daemon::spawn(Daemon::command_of(bin, args, &[]))
    }

    /// The daemon's stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// `netprobe run ARGS` on a kernel that refuses `bpf()`: a seccomp
    /// filter makes the call fail with EPERM in the daemon (as a locked-down
    /// kernel or a container's profile does), so no probe can load and it
    /// must run in counters-only mode.
    pub fn start_without_bpf(args: &[&str]) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Daemon::command(args, &[]);
        // SAFETY: the closure makes two prctl calls on data it owns, which
        // is allowed between fork and exec.
        unsafe { cmd.pre_exec(seccomp::deny_bpf) };
        Daemon::spawn(cmd)
    }

    fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
        Daemon::command_of(&netprobe_bin(), args, env)
    }

    fn command_of(bin: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(mut cmd: Command) -> Daemon {
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        let (tx, records) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("netprobe wrote a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr_lines.clone();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            records,
            seen: Vec::new(),
            stderr: stderr_lines,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first record matching `pred`, keeping everything seen;
    /// on timeout, fails showing the last `SHOWN` records.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} record within {timeout:?}; {} records seen, the last {}:\n{}\nstderr:\n{}",
                    self.seen.len(),
                    self.seen.len().min(SHOWN),
                    self.seen[self.seen.len().saturating_sub(SHOWN)..]
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.stderr.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Keeps reading records for `period`; returns those matching `pred`
    /// among everything seen so far.
    pub fn collect(&mut self, period: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + period;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.records.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => break,
            }
        }
        self.seen.iter().filter(|v| pred(v)).cloned().collect()
    }

    /// Waits for `ready` with at least one probe attached; returns the
    /// time it took from spawn.
    pub fn wait_ready(&mut self) -> Duration {
        let ready = self.wait_ready_any();
        assert!(
            ready["attached"].as_u64().unwrap() > 0,
            "no probe attached: {:?}",
            self.seen
        );
        self.started.elapsed()
    }

    /// Waits for `ready`, however many probes attached; returns it.
    pub fn wait_ready_any(&mut self) -> Value {
        self.wait_for("ready", patience(Duration::from_secs(30)), |v| {
            v["kind"] == "ready"
        })
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends `sig` and waits (bounded) for the exit.
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("netprobe did not exit within {timeout:?} of signal {sig}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    /// `netprobe run --output json`, waited for until `ready`.
    pub fn json() -> Daemon {
        let mut d = Daemon::start(&["--output", "json"], &[]);
        d.wait_ready();
        d
    }

    /// `netprobe run --output json` with repeats folding into incidents
    /// over `secs` seconds (instead of 60), waited for until `ready`.
    pub fn json_with_window(secs: u32) -> Daemon {
        let mut d = Daemon::start(
            &["--output", "json", "--incident-window", &secs.to_string()],
            &[],
        );
        d.wait_ready();
        d
    }

    /// SIGTERM, and the clean exit (status 0 within 5 s) it must give.
    pub fn stop_cleanly(&mut self) {
        let st = self.stop_with(libc::SIGTERM, patience(Duration::from_secs(5)));
        assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
    }

    /// The `probe` record of probe `name` (written before `ready`).
    pub fn probe(&self, name: &str) -> &Value {
        self.seen
            .iter()
            .find(|v| v["kind"] == "probe" && v["probe"] == name)
            .unwrap_or_else(|| panic!("no probe record for {name}"))
    }

    pub fn attached(&self, name: &str) -> bool {
        self.probe(name)["status"] == "attached"
    }

    /// Fails unless probe `name` attached exactly when the kernel fact
    /// `excuse` (from [`kernel`]) does not hold: netprobe's own claim
    /// must agree with what the test read from the kernel.
    pub fn assert_attached_unless(&self, name: &str, excuse: &Option<String>) {
        assert_eq!(
            self.attached(name),
            excuse.is_none(),
            "probe {name} and the kernel disagree ({excuse:?}): {}",
            self.probe(name)
        );
    }

    /// Whether this kernel names drop reasons (5.17+), as the drop probe said.
    pub fn drop_reasons(&self) -> bool {
        !self.probe("drop")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("no drop reasons")
    }
}

/// A process living in the caller's network namespace, as a pod has one:
/// netprobe finds namespaces through their processes. Killed on drop.
pub struct Resident(Child);

impl Resident {
    pub fn here() -> Resident {
        Resident(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep in the namespace"),
        )
    }
}

impl Resident {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True in a QEMU guest without hardware virtualization (TCG), where
/// everything runs many times slower than on the host: a time bound that is
/// a contract on a real machine is only reported there.
pub fn emulated() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("netprobe.accel=tcg"))
}

/// `base`, or ten times it under emulation (see `emulated`).
pub fn patience(base: Duration) -> Duration {
    if emulated() {
        base * 10
    } else {
        base
    }
}

/// Matches a record's 4-tuple.
pub fn has_flow(v: &Value, saddr: &SocketAddr, daddr: &SocketAddr) -> bool {
    v["saddr"] == saddr.ip().to_string()
        && v["sport"] == saddr.port()
        && v["daddr"] == daddr.ip().to_string()
        && v["dport"] == daddr.port()
}

pub use netprobe::kernel::rawtcp;
pub use netprobe::kernel::sandbox::MemCgroup;

/// Says that this kernel cannot show `test`'s failure, or one of its
/// checks (a libtest name), and why: on stderr, and for the kernel matrix as
/// a line in the file `NETPROBE_CANNOT_SHOW` names, which the matrix turns
/// into an `n/a` cell with `why` as its footnote. `why` must state a kernel
/// fact the test checked itself (see [`kernel`]), not what netprobe said.
pub fn cannot_show(test: &str, why: &str) {
    mark("CANNOT-SHOW", test, why);
}

/// Runs `check` when `excuse` is `None`; otherwise says that this kernel
/// cannot show `what` (the matrix's `n/a`), with the fact: `excuse` comes
/// from [`kernel`], checked by the test, never assumed.
pub fn check_unless(test: &str, what: &str, excuse: Option<String>, check: impl FnOnce()) {
    match excuse {
        None => check(),
        Some(fact) => cannot_show(test, &format!("{what} not checked: {fact}")),
    }
}

/// Says that `test` did not run here by design (not a kernel's limit), and
/// why: the matrix shows `skip` with `why`.
pub fn not_run_here(test: &str, why: &str) {
    mark("SKIP", test, why);
}

fn mark(marker: &str, test: &str, why: &str) {
    use std::io::Write;
    let why = why.replace('\n', " ");
    eprintln!("{test}: {marker}: {why}");
    let Some(path) = std::env::var_os("NETPROBE_CANNOT_SHOW") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "@@NETPROBE-{marker} {test} {why}"));
    if let Err(e) = written {
        panic!("{test}: cannot record why it cannot run in {path:?}: {e}");
    }
}

/// Runs a program, failing the test with its stderr when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Loads an nftables ruleset (`nft -f -`) in the caller's namespace.
pub fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); `cargo xtask setup` installs nftables"))?;
    child
        .stdin
        .take()
        .expect("nft stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
