//! systemd's notification protocol (sd_notify(3)): `READY=1` once tracing,
//! `WATCHDOG=1` pings, `STOPPING=1`, `RELOADING=1`, `STATUS=...`, as
//! datagrams to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without that variable every call is a no-op.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

pub struct Notifier {
    sock: Option<(UnixDatagram, SocketAddr)>,
    /// Half of WATCHDOG_USEC when the watchdog is on for this process.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let sock = std::env::var("NOTIFY_SOCKET")
            .ok()
            .and_then(|p| Some((UnixDatagram::unbound().ok()?, address(&p).ok()?)));
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier { sock, watchdog }
    }

    /// Sends `state` (newline-separated assignments). Errors are returned,
    /// not fatal: the service manager may have gone away.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.sock {
            Some((s, addr)) => s.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    pub fn active(&self) -> bool {
        self.sock.is_some()
    }
}

fn address(p: &str) -> io::Result<SocketAddr> {
    match p.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(p),
    }
}

/// The ping interval: half the watchdog timeout, when the watchdog is meant
/// for this process (WATCHDOG_PID unset, or ours).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_the_timeout_and_only_ours() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("netprobe-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.to_str().unwrap()).unwrap(),
            )),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=tracing").unwrap();
        let mut buf = [0u8; 64];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=tracing");

        let name = format!("netprobe-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let abs =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier {
            sock: Some((
                UnixDatagram::unbound().unwrap(),
                address(&format!("@{name}")).unwrap(),
            )),
            watchdog: None,
        };
        n.send("WATCHDOG=1").unwrap();
        let k = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
        // No NOTIFY_SOCKET: nothing to do, no error.
        let none = Notifier {
            sock: None,
            watchdog: None,
        };
        assert!(!none.active() && none.send("READY=1").is_ok());
    }
}
