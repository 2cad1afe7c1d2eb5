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
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
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
