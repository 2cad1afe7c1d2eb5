//! journald's native protocol (systemd.journal-fields(7), "Native Journal
//! Protocol"): datagrams of `KEY=value\n` fields, or `KEY\n<u64 LE len>value\n`
//! for values with newlines. A record too large for a datagram is written to a
//! sealed memfd whose descriptor is passed instead, as the protocol defines.

use std::{
    collections::VecDeque,
    io::{self, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixDatagram,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::Sink;
use crate::pipeline::record::Record;

pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// Records held while journald is unreachable (a restart by log rotation
/// takes about a second); beyond this the newest are dropped and counted.
pub const HOLD_RECORDS: usize = 20_000;
pub const HOLD_BYTES: usize = 16 << 20;
/// How often a held sink tries to reach journald again.
const RETRY: Duration = Duration::from_millis(250);
/// At exit, how long a sink keeps trying a journald that is behind.
const EXIT_WAIT: Duration = Duration::from_millis(300);

pub struct Journald {
    /// None while journald is unreachable.
    sock: Option<UnixDatagram>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Encoded records waiting for journald to come back, oldest first.
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    /// Records dropped because `held` was full, not yet reported.
    overflow: u64,
    /// Since when journald is unreachable (or behind), and why.
    away: Option<(Instant, String)>,
    /// Whether journald is there but behind (its queue full: EAGAIN):
    /// then every write tries to deliver what is held first.
    behind: bool,
    last_try: Instant,
    /// A record about this sink for the chain to write (delivery resumed
    /// after an overflow).
    note: Option<Record>,
    limits: (usize, usize),
}

impl Journald {
    pub fn connect(path: &Path) -> io::Result<Journald> {
        // Probe reachability now so a missing journald is reported at start.
        let sock = Journald::open(path)?;
        Ok(Journald {
            sock: Some(sock),
            path: path.to_path_buf(),
            buf: Vec::with_capacity(1024),
            held: VecDeque::new(),
            held_bytes: 0,
            overflow: 0,
            away: None,
            behind: false,
            last_try: Instant::now(),
            note: None,
            limits: (HOLD_RECORDS, HOLD_BYTES),
        })
    }

    pub fn connect_default() -> io::Result<Journald> {
        let path = std::env::var_os("NETPROBE_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        Journald::connect(&path)
    }

    /// A non-blocking socket: when journald's queue is full, a send fails
    /// with EAGAIN and the record is held, rather than the daemon waiting
    /// while the ring buffer fills.
    fn open(path: &Path) -> io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    /// Records held for journald now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Sends one encoded record: a datagram, or a sealed memfd when it is
    /// too large for one.
    fn send(sock: &UnixDatagram, data: &[u8]) -> io::Result<()> {
        match sock.send(data) {
            Ok(_) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EMSGSIZE)
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                send_memfd(sock, data)
            }
            Err(e) => Err(e),
        }
    }

    /// Reconnects (journald restarted: its socket is a new one) and sends
    /// what is held, oldest first. True when nothing is held any more.
    fn resume(&mut self) -> bool {
        self.last_try = Instant::now();
        let sock = match self.sock.take() {
            Some(s) => s,
            None => match Journald::open(&self.path) {
                Ok(s) => s,
                Err(_) => return false,
            },
        };
        while let Some(data) = self.held.front() {
            if let Err(e) = Journald::send(&sock, data) {
                // Still behind: the socket stays; gone: it is opened anew.
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.sock = Some(sock);
                }
                return false;
            }
            self.held_bytes -= data.len();
            self.held.pop_front();
        }
        self.sock = Some(sock);
        let behind = self.behind;
        if let Some((since, why)) = self.away.take() {
            if behind {
                tracing::info!(
                    "journald caught up after {:.1} s; held records delivered",
                    since.elapsed().as_secs_f64()
                );
            } else {
                tracing::info!(
                    "journald is reachable again after {:.1} s ({why} before); held records delivered",
                    since.elapsed().as_secs_f64()
                );
            }
        }
        self.behind = false;
        if self.overflow > 0 {
            self.note = Some(Record::lost(
                std::mem::take(&mut self.overflow),
                &format!(
                    "dropped while journald was {}: the hold of {} records ({} MiB) was full",
                    if behind {
                        "not keeping up"
                    } else {
                        "unreachable"
                    },
                    self.limits.0,
                    self.limits.1 >> 20
                ),
            ));
        }
        true
    }

    /// Keeps an encoded record for later, or counts it when the hold is full.
    fn hold(&mut self, data: Vec<u8>, why: &io::Error) {
        if self.away.is_none() {
            self.away = Some((Instant::now(), why.to_string()));
            self.behind = why.kind() == io::ErrorKind::WouldBlock;
            if self.behind {
                tracing::warn!(
                    "journald is not keeping up (its queue is full); holding up to {} records \
                     meanwhile, so the kernel's records keep being read",
                    self.limits.0
                );
            } else {
                tracing::error!(
                    "journald is unreachable ({why}); holding up to {} records until it is back",
                    self.limits.0
                );
            }
        }
        if self.held.len() >= self.limits.0 || self.held_bytes + data.len() > self.limits.1 {
            self.overflow += 1;
            return;
        }
        self.held_bytes += data.len();
        self.held.push_back(data);
    }
}

fn send_memfd(sock: &UnixDatagram, data: &[u8]) -> io::Result<()> {
    // SAFETY: memfd_create with a static name; the fd is owned below.
    let fd = unsafe {
        libc::memfd_create(
            c"netprobe-journal".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone()?).write_all(data)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    send_fd(sock, fd.as_raw_fd())
}

/// sendmsg with no payload and one descriptor in SCM_RIGHTS.
fn send_fd(sock: &UnixDatagram, fd: i32) -> io::Result<()> {
    let mut cmsg_buf = [0u8; 64];
    // SAFETY: the control buffer is large enough for one int (CMSG_SPACE(4) is
    // 24 on 64-bit Linux); all pointers stay within cmsg_buf.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<i32>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Appends one field in the protocol's framing.
fn field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=netprobe`, and `NETPROBE_<FIELD>`
/// for every JSON field of the record.
pub fn encode(rec: &Record, buf: &mut Vec<u8>) {
    buf.clear();
    field(buf, "MESSAGE", rec.message.as_bytes());
    field(buf, "PRIORITY", rec.priority().to_string().as_bytes());
    field(buf, "SYSLOG_IDENTIFIER", b"netprobe");
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(rec) {
        for (k, v) in map {
            if k == "message" {
                continue;
            }
            let key = format!("NETPROBE_{}", k.to_ascii_uppercase());
            match v {
                serde_json::Value::String(s) => field(buf, &key, s.as_bytes()),
                other => field(buf, &key, other.to_string().as_bytes()),
            }
        }
    }
}

impl Sink for Journald {
    fn name(&self) -> &str {
        "journald"
    }

    /// A record journald cannot take now is held (and delivered when it is
    /// back), so this fails only when the record cannot be sent at all.
    fn write(&mut self, rec: &Record) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        encode(rec, &mut buf);
        let result = self.deliver(&buf);
        self.buf = buf;
        result
    }

    fn tick(&mut self) {
        if (!self.held.is_empty() || self.overflow > 0)
            && (self.behind || self.last_try.elapsed() >= RETRY)
        {
            self.resume();
        }
    }

    fn take_note(&mut self) -> Option<Record> {
        self.note.take()
    }

    fn undelivered(&mut self) -> Option<(u64, String)> {
        if self.held.is_empty() && self.overflow == 0 {
            return None;
        }
        // journald behind: a few tries within the exit's bounded time.
        let deadline = Instant::now() + EXIT_WAIT;
        while !self.resume() && self.behind && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.held.is_empty() && self.overflow == 0 {
            return None;
        }
        let behind = self.behind;
        let n = self.held.len() as u64 + std::mem::take(&mut self.overflow);
        self.held.clear();
        self.held_bytes = 0;
        let why = self
            .away
            .as_ref()
            .map(|(_, w)| w.clone())
            .unwrap_or_default();
        Some((
            n,
            if behind {
                "not delivered to journald, still behind at exit".to_string()
            } else {
                format!("not delivered to journald, unreachable at exit ({why})")
            },
        ))
    }
}

impl Journald {
    fn deliver(&mut self, data: &[u8]) -> io::Result<()> {
        // Order is kept: while records are held, new ones queue behind them.
        if (!self.held.is_empty() || self.overflow > 0)
            && !((self.behind || self.last_try.elapsed() >= RETRY) && self.resume())
        {
            let why = if self.behind {
                io::ErrorKind::WouldBlock
            } else {
                io::ErrorKind::NotConnected
            };
            self.hold(data.to_vec(), &io::Error::from(why));
            return Ok(());
        }
        let Some(sock) = &self.sock else {
            self.hold(data.to_vec(), &io::Error::from(io::ErrorKind::NotConnected));
            return Ok(());
        };
        let err = match Journald::send(sock, data) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if err.kind() == io::ErrorKind::WouldBlock {
            // Behind: held, and sent before the next record.
            self.hold(data.to_vec(), &err);
            return Ok(());
        }
        match err.raw_os_error() {
            // Gone (restarted, or stopped): reconnect once, else hold.
            Some(libc::ECONNREFUSED | libc::ENOENT | libc::ENOTCONN | libc::EPIPE) => {
                self.sock = None;
                match Journald::open(&self.path).and_then(|s| Journald::send(&s, data).map(|()| s))
                {
                    Ok(s) => {
                        self.sock = Some(s);
                        Ok(())
                    }
                    Err(e) => {
                        self.last_try = Instant::now();
                        self.hold(data.to_vec(), &e);
                        Ok(())
                    }
                }
            }
            _ => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the native protocol back (the test side of `encode`).
    fn decode(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').unwrap();
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                b = &b[nl + 1..];
            } else {
                let key = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
                out.push((key, b[nl + 9..nl + 9 + len].to_vec()));
                assert_eq!(b[nl + 9 + len], b'\n');
                b = &b[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn fields_and_binary_framing() {
        let rec = Record {
            mode: Some("no_listener"),
            dport: Some(9),
            comm: Some("evil\nNETPROBE_MODE=forged".into()),
            ..Record::new("drop", "two\nlines".into())
        };
        let mut buf = Vec::new();
        encode(&rec, &mut buf);
        let fields = decode(&buf);
        let get = |k: &str| {
            fields
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("MESSAGE"), ["two\nlines"]);
        assert_eq!(get("PRIORITY"), ["6"]);
        assert_eq!(get("SYSLOG_IDENTIFIER"), ["netprobe"]);
        assert_eq!(get("NETPROBE_MODE"), ["no_listener"]);
        assert_eq!(get("NETPROBE_DPORT"), ["9"]);
        assert_eq!(get("NETPROBE_KIND"), ["drop"]);
        // A newline in a value cannot forge a field.
        assert_eq!(get("NETPROBE_COMM"), ["evil\nNETPROBE_MODE=forged"]);
        assert!(get("NETPROBE_MESSAGE").is_empty());
    }

    #[test]
    fn delivers_to_a_socket_and_uses_memfd_when_too_large() {
        let (dir, path, server) = socket_dir("netprobe-journal-test");
        let mut j = Journald::connect(&path).unwrap();
        j.write(&Record::new("drop", "small".into())).unwrap();
        let mut got = vec![0u8; 65536];
        let n = server.recv(&mut got).unwrap();
        assert!(decode(&got[..n])
            .iter()
            .any(|(k, v)| k == "MESSAGE" && v == b"small"));

        // Larger than any datagram: must go through the memfd route.
        let big = "x".repeat(300_000);
        j.write(&Record::new("drop", big.clone())).unwrap();
        let mut data = [0u8; 16];
        let mut cmsg = [0u8; 64];
        // SAFETY: recvmsg into local buffers.
        let fd = unsafe {
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = cmsg.len() as _;
            assert!(libc::recvmsg(server.as_raw_fd(), &mut msg, 0) >= 0);
            let c = libc::CMSG_FIRSTHDR(&msg);
            assert!(!c.is_null());
            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
        };
        // SAFETY: the descriptor was just received and is ours.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut content).unwrap();
        assert!(decode(&content)
            .iter()
            .any(|(k, v)| k == "MESSAGE" && v == big.as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A journald stand-in's socket in a fresh directory of its own.
    fn socket_dir(name: &str) -> (PathBuf, PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        (dir, path, server)
    }

    fn messages(server: &UnixDatagram) -> Vec<String> {
        server.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = server.recv(&mut buf) {
            for (k, v) in decode(&buf[..n]) {
                if k == "MESSAGE" {
                    got.push(String::from_utf8(v).unwrap());
                }
            }
        }
        got
    }

    #[test]
    fn holds_records_while_journald_is_away_and_counts_the_overflow() {
        let (dir, path, server) = socket_dir("netprobe-journal-hold");
        let mut j = Journald::connect(&path).unwrap();
        j.limits = (3, HOLD_BYTES);
        j.write(&Record::new("drop", "before".into())).unwrap();
        assert_eq!(messages(&server), ["before"]);

        // journald stops (a restart: its socket goes, a new one comes).
        drop(server);
        std::fs::remove_file(&path).unwrap();
        for i in 0..5 {
            // Accepted: held, not an error that would divert the chain.
            j.write(&Record::new("drop", format!("away {i}"))).unwrap();
        }
        assert_eq!(j.held(), 3);
        assert!(j.take_note().is_none());
        let server = UnixDatagram::bind(&path).unwrap();
        std::thread::sleep(RETRY);
        j.tick();
        assert_eq!(messages(&server), ["away 0", "away 1", "away 2"]);
        assert_eq!(j.held(), 0);
        let note = j.take_note().expect("the overflow is reported");
        assert_eq!(note.kind, "lost");
        assert_eq!(note.count, Some(2));
        assert!(
            note.message.contains("journald was unreachable"),
            "{}",
            note.message
        );
        j.write(&Record::new("drop", "after".into())).unwrap();
        assert_eq!(messages(&server), ["after"]);

        // Away at exit: what is held is counted as undelivered.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        j.write(&Record::new("drop", "never".into())).unwrap();
        let (n, why) = j.undelivered().unwrap();
        assert_eq!(n, 1);
        assert!(why.contains("unreachable at exit"), "{why}");
        assert!(j.undelivered().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_journald_that_is_behind_never_blocks_and_loses_nothing() {
        let (dir, path, server) = socket_dir("netprobe-journal-behind");
        server.set_nonblocking(true).unwrap();
        let mut j = Journald::connect(&path).unwrap();
        // journald reads nothing: its queue fills (net.unix.max_dgram_qlen
        // datagrams), and then every write must still return at once.
        let n = 3000;
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            for i in 0..n {
                j.write(&Record::new("drop", format!("r{i}"))).unwrap();
            }
            tx.send(()).unwrap();
            j
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("writes blocked while journald was behind");
        let mut j = writer.join().unwrap();
        assert!(j.held() > 0, "the queue never filled");
        assert!(j.behind);
        // journald catches up: everything arrives, in order.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n && Instant::now() < deadline {
            got.extend(messages(&server));
            j.tick();
        }
        let want: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        assert_eq!(got, want);
        assert_eq!(j.held(), 0);
        assert!(!j.behind && j.take_note().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
