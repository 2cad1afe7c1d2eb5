//! The bench's traffic, in a namespace of its own: a healthy loopback TCP
//! workload (nothing dropped, nothing reset) and a storm of drops and
//! resets. Every socket has timeouts and every loop a deadline, so nothing
//! here can hang the bench.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    interrupted,
    netns::{join, Netns},
};

/// How long any one socket call may block.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Operations completed, and in how long.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub ops: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

/// A listener in `ns` on a loopback port, and a thread serving it with
/// `serve` per connection until the returned flag is set (the caller then
/// connects once more to wake the accept).
fn server(
    ns: &Netns,
    serve: fn(TcpStream) -> io::Result<()>,
) -> Result<(SocketAddr, Arc<AtomicBool>, thread::JoinHandle<Result<()>>)> {
    let listener = ns.run(|| Ok(TcpListener::bind("127.0.0.1:0")?))?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let h = thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || -> Result<()> {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let conn = conn.context("accept")?;
                conn.set_nodelay(true)?;
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                serve(conn).context("serving a connection")?;
            }
            Ok(())
        })?;
    Ok((addr, stop, h))
}

/// Stops a `server`: the flag, then one connection to wake its accept.
fn stop_server(
    ns: &Netns,
    addr: SocketAddr,
    stop: &AtomicBool,
    h: thread::JoinHandle<Result<()>>,
) -> Result<()> {
    stop.store(true, Ordering::Relaxed);
    ns.run(move || Ok(TcpStream::connect_timeout(&addr, IO_TIMEOUT)?))?;
    join(h)
}

/// One byte in, one byte out, then the server closes.
fn answer_once(mut c: TcpStream) -> io::Result<()> {
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    c.write_all(&b)
}

/// Echoes single bytes until the client closes.
fn echo(mut c: TcpStream) -> io::Result<()> {
    let mut b = [0u8; 1];
    loop {
        match c.read(&mut b)? {
            0 => return Ok(()),
            _ => c.write_all(&b)?,
        }
    }
}

/// Runs `client` in `ns` (given the server's address) against a server
/// that handles each connection with `serve`, then stops the server.
fn against(
    ns: &Netns,
    serve: fn(TcpStream) -> io::Result<()>,
    client: impl FnOnce(SocketAddr) -> Result<Rate> + Send + 'static,
) -> Result<Rate> {
    let (addr, stop, h) = server(ns, serve)?;
    let rate = ns
        .spawn("bench-client", move || client(addr))
        .and_then(join);
    let stopped = stop_server(ns, addr, &stop, h);
    let rate = rate?;
    stopped?;
    Ok(rate)
}

/// Repeats `op` for `dur` (or until interrupted).
fn repeat(dur: Duration, mut op: impl FnMut() -> Result<()>) -> Result<Rate> {
    let started = Instant::now();
    let mut ops = 0;
    while started.elapsed() < dur && !interrupted() {
        op()?;
        ops += 1;
    }
    Ok(Rate {
        ops,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Short connections for `dur`: connect, a 1-byte request and response,
/// the server closes, the client reads the end and closes. The server
/// closing first leaves TIME_WAIT on its side, so client ports never run
/// out.
pub fn connections(ns: &Netns, dur: Duration) -> Result<Rate> {
    against(ns, answer_once, move |addr| {
        repeat(dur, || {
            let mut s = TcpStream::connect(addr).context("connect")?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.write_all(b"q")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).context("read the response")?;
            if s.read(&mut b).context("read the server's close")? != 0 {
                bail!("the server sent more than one byte");
            }
            Ok(())
        })
    })
}

/// Requests and responses of one byte each on one persistent connection.
pub fn requests(ns: &Netns, dur: Duration) -> Result<Rate> {
    against(ns, echo, move |addr| {
        let mut s = TcpStream::connect(addr).context("connect")?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut b = [0u8; 1];
        repeat(dur, || {
            s.write_all(b"q")?;
            s.read_exact(&mut b).context("read the response")?;
            Ok(())
        })
    })
}

/// What the storm's two threads did.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Datagrams sent to the unread UDP socket.
    pub datagrams: u64,
    /// Connections refused by the closed port.
    pub refused: u64,
    /// SYNs from spoofed sources.
    pub spoofed: u64,
    pub secs: f64,
}

/// The smallest receive buffer the kernel allows (it rounds 1 up).
fn tiny_rcvbuf(s: &UdpSocket) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) with an int on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &one as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("SO_RCVBUF: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// The storm's closed port: nothing listens in the fresh namespace. A
/// service's port, below the client ports, as when a service is down: its
/// refused connections are one flow to netprobe (its incidents key on the
/// lower port), and fold.
const CLOSED_PORT: u16 = 8081;

/// The storm's targets in its namespace: a UDP socket nobody reads and a
/// closed TCP port. Made before the tracer starts, so that it can be told
/// which records are the storm's (by these ports).
pub struct Targets {
    rx: UdpSocket,
    closed: SocketAddr,
}

impl Targets {
    pub fn new(ns: &Netns) -> Result<Targets> {
        let rx = ns.run(|| {
            let rx = UdpSocket::bind("127.0.0.1:0")?;
            tiny_rcvbuf(&rx)?;
            Ok(rx)
        })?;
        Ok(Targets {
            rx,
            closed: SocketAddr::from(([127, 0, 0, 1], CLOSED_PORT)),
        })
    }

    pub fn ports(&self) -> Result<Vec<u16>> {
        Ok(vec![self.rx.local_addr()?.port(), self.closed.port()])
    }
}

/// Drops and resets as fast as two threads can make them, for `dur`:
/// 1-byte datagrams to a UDP socket nobody reads (receive buffer full:
/// `skb:kfree_skb` with SOCKET_RCVBUFF, Udp RcvbufErrors), and connections
/// to a closed TCP port (the SYN dropped with NO_SOCKET and a RST sent, Tcp
/// OutRsts; the RST received and ECONNREFUSED reported, Tcp AttemptFails).
pub fn storm(ns: &Netns, targets: &Targets, dur: Duration) -> Result<Storm> {
    let (to, closed) = (targets.rx.local_addr()?, targets.closed);
    let udp = ns.spawn("bench-storm-udp", move || -> Result<u64> {
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        tx.connect(to)?;
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < dur && !interrupted() {
            for _ in 0..64 {
                tx.send(b"x").context("send a datagram")?;
            }
            n += 64;
        }
        Ok(n)
    })?;
    let tcp = ns.spawn("bench-storm-tcp", move || refuse_for(dur, |_| closed))?;
    let started = Instant::now();
    let datagrams = join(udp);
    let refused = join(tcp);
    let secs = started.elapsed().as_secs_f64();
    Ok(Storm {
        datagrams: datagrams?,
        refused: refused?,
        spoofed: 0,
        secs,
    })
}

/// The distinct-flow storm's closed ports: each connection goes to the next
/// (the clients' ports lie above them).
pub const DISTINCT_PORTS: std::ops::Range<u16> = 2000..40000;

/// Connections as fast as two threads can make them, each to a closed port
/// of its own in turn (`DISTINCT_PORTS`, round and round): every event is a
/// new flow, so nothing folds, in the kernel or the daemon, within a
/// 10-second window while the ports last. Each is a SYN dropped (NO_SOCKET),
/// a RST sent, a RST received and ECONNREFUSED.
pub fn distinct_storm(ns: &Netns, dur: Duration) -> Result<Storm> {
    let span = u64::from(DISTINCT_PORTS.end - DISTINCT_PORTS.start);
    // Two threads, on the even and the odd ports.
    let thread = |first: u64| {
        ns.spawn("bench-storm-distinct", move || {
            refuse_for(dur, |n| {
                let port = DISTINCT_PORTS.start + ((first + 2 * n) % span) as u16;
                SocketAddr::from(([127, 0, 0, 1], port))
            })
        })
    };
    let (a, b) = (thread(0)?, thread(1)?);
    let started = Instant::now();
    let (a, b) = (join(a), join(b));
    Ok(Storm {
        datagrams: 0,
        refused: a? + b?,
        spoofed: 0,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The spoofed-source storm's closed port (below its sources' ports).
pub const SPOOFED_PORT: u16 = 8081;

/// SYNs to 127.0.0.1:`SPOOFED_PORT`, a closed port, as fast as two threads
/// can send them through raw sockets, each from a random source in 127/8
/// outside 127.0.0.0/16 and a random port in 10000-60999: a SYN flood from
/// spoofed sources, where no flow repeats. Each SYN is dropped (NO_SOCKET)
/// and answered by a RST, which, its destination being local too, is
/// dropped on arrival (NO_SOCKET) in turn; off loopback, it would leave.
pub fn spoofed_syns(ns: &Netns, dur: Duration) -> Result<Storm> {
    let thread = |seed: u64| {
        ns.spawn("bench-storm-spoofed", move || {
            let inject = netprobe_common::inject::Injector::new().context("raw socket")?;
            let mut x = seed | 1;
            let started = Instant::now();
            let mut n = 0u64;
            while !n.is_multiple_of(1024) || (started.elapsed() < dur && !interrupted()) {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_le_bytes();
                let src = [127, b[0].max(1), b[1], b[2]];
                let sport = 10000 + (x >> 32) as u16 % 51000;
                let p = netprobe_common::headers::syn(
                    (src, sport),
                    ([127, 0, 0, 1], SPOOFED_PORT),
                    (x >> 16) as u32,
                );
                inject
                    .send(&p, std::net::Ipv4Addr::LOCALHOST)
                    .context("sendto")?;
                n += 1;
            }
            Ok(n)
        })
    };
    let (a, b) = (
        thread(0x9e37_79b9_7f4a_7c15)?,
        thread(0xdead_beef_cafe_f00d)?,
    );
    let started = Instant::now();
    let (a, b) = (join(a), join(b));
    Ok(Storm {
        datagrams: 0,
        refused: 0,
        spoofed: a? + b?,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Connects for `dur` to `target(n)` (n: connections so far), each of which
/// must be refused; returns how many were.
pub fn refuse_for(dur: Duration, target: impl Fn(u64) -> SocketAddr) -> Result<u64> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < dur && !interrupted() {
        let to = target(n);
        match TcpStream::connect_timeout(&to, IO_TIMEOUT) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => n += 1,
            Err(e) => bail!("connect to the closed port {to}: {e}"),
            Ok(_) => bail!("the closed port {to} accepted a connection"),
        }
    }
    Ok(n)
}
