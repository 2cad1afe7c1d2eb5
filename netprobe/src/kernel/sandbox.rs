//! Throwaway network namespaces, for `netprobe demo` (and the integration
//! tests): made by a thread that unshares its own namespace, kept by an fd,
//! entered by short-lived threads, gone when the last fd and process leave.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    thread,
};

pub struct Netns {
    fd: Arc<OwnedFd>,
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a throwaway datagram socket for the interface ioctls, and an
    // ifreq filled for `lo` only.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `setsockopt(2)` with an int value.
pub fn set_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) with an int on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connection from `from` (any port) to `to`: std cannot bind a
/// client before connecting.
pub fn tcp_from(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddrV4,
) -> io::Result<std::net::TcpStream> {
    fn sin(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
        // SAFETY: a zeroed sockaddr_in, then family, port and address.
        let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        s.sin_family = libc::AF_INET as u16;
        s.sin_port = a.port().to_be();
        s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
        s
    }
    // SAFETY: socket(2), owned at once; bind and connect with valid
    // sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sin(std::net::SocketAddrV4::new(from, 0));
        if libc::bind(
            fd.as_raw_fd(),
            &local as *const _ as *const libc::sockaddr,
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(to);
        if libc::connect(
            fd.as_raw_fd(),
            &remote as *const _ as *const libc::sockaddr,
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(std::net::TcpStream::from(fd))
    }
}

fn enter(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns on the calling thread only (CLONE_NEWNET is per-thread).
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_failed(what: &str) -> io::Error {
    io::Error::other(format!("{what}: the namespace thread panicked"))
}

impl Netns {
    /// A new namespace with its loopback up (needs CAP_SYS_ADMIN).
    pub fn create() -> io::Result<Netns> {
        let fd = thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare affects this (short-lived) thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::other(format!(
                    "unshare(CLONE_NEWNET): {}",
                    io::Error::last_os_error()
                )));
            }
            loopback_up().map_err(|e| io::Error::other(format!("bring lo up: {e}")))?;
            // SAFETY: gettid(2) has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            std::fs::File::open(format!("/proc/self/task/{tid}/ns/net")).map(OwnedFd::from)
        })
        .join()
        .map_err(|_| thread_failed("creating a namespace"))??;
        Ok(Netns { fd: Arc::new(fd) })
    }

    /// The namespace's inode number, as netprobe's records name it.
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::File::from(self.fd.try_clone()?)
            .metadata()
            .map(|m| m.ino())
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
        let fd = self.fd.clone();
        thread::spawn(move || {
            enter(&fd)?;
            Ok(f())
        })
        .join()
        .map_err(|_| thread_failed("running in a namespace"))?
    }
}

/// A memory cgroup with a hard limit (cgroup v2 where its memory controller
/// is usable, else the v1 memory hierarchy), removed on drop.
pub struct MemCgroup {
    pub path: std::path::PathBuf,
    /// `cgroup.procs` (v2 and v1 alike).
    pub procs: std::path::PathBuf,
}

impl MemCgroup {
    /// Finds a memory hierarchy in /proc/self/mountinfo and makes
    /// `name` under it with `limit` bytes; `Err(why)` when there is none.
    pub fn new(name: &str, limit: u64) -> Result<MemCgroup, String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mut v1 = None;
        let mut v2 = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split(' ').nth(4).unwrap_or("");
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            if fstype == "cgroup2" {
                let controllers = std::fs::read_to_string(format!("{mount}/cgroup.controllers"))
                    .unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "memory") {
                    v2 = Some(std::path::PathBuf::from(mount));
                }
            } else if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
                v1 = Some(std::path::PathBuf::from(mount));
            }
        }
        let (root, limit_file) =
            match (v2, v1) {
                (Some(root), _) => {
                    // Children get the memory controller only when the parent
                    // delegates it.
                    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                    (root, "memory.max")
                }
                (None, Some(root)) => (root, "memory.limit_in_bytes"),
                (None, None) => return Err(
                    "no cgroup v2 with the memory controller and no v1 memory hierarchy is mounted"
                        .into(),
                ),
            };
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let cg = MemCgroup {
            procs: path.join("cgroup.procs"),
            path,
        };
        std::fs::write(cg.path.join(limit_file), limit.to_string())
            .map_err(|e| format!("{limit_file}: {e}"))?;
        // No swap to escape into, where the knob exists.
        let _ = std::fs::write(cg.path.join("memory.swap.max"), "0");
        let _ = std::fs::write(
            cg.path.join("memory.memsw.limit_in_bytes"),
            limit.to_string(),
        );
        Ok(cg)
    }

    /// Forks a child that joins this cgroup and touches memory until the
    /// OOM killer kills it (or gives up after `max_bytes`, exit 3). Returns
    /// its pid and how it ended.
    pub fn run_hog(&self, max_bytes: u64) -> io::Result<(u32, String)> {
        let procs = std::ffi::CString::new(self.procs.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: the child only makes raw system calls (no allocation, no
        // locks) before _exit, as is required after fork in a threaded process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                // Named for what it is: the OOM killer's victim should not
                // read as a forked netprobe (or test).
                libc::prctl(libc::PR_SET_NAME, c"memory-hog".as_ptr(), 0, 0, 0);
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                let mut buf = [0u8; 16];
                let mut n = libc::getpid() as u32;
                let mut i = buf.len();
                loop {
                    i -= 1;
                    buf[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                if fd < 0
                    || libc::write(fd, buf[i..].as_ptr() as *const libc::c_void, buf.len() - i) < 0
                {
                    libc::_exit(2);
                }
                libc::close(fd);
                let chunk = 1usize << 20;
                let mut total = 0u64;
                while total < max_bytes {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        chunk,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        libc::_exit(4);
                    }
                    libc::memset(p, 0x5a, chunk);
                    total += chunk as u64;
                }
                libc::_exit(3);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited {}", libc::WEXITSTATUS(status))
        };
        Ok((pid as u32, how))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}
