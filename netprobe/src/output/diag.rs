//! netprobe's own diagnostics: what goes wrong in netprobe itself (a sink
//! failing, a signal it cannot handle, a config it will not load), and
//! aya's `log` warnings. They are tracing events on stderr, never records
//! and never on stdout. `--log-level` or `RUST_LOG` chooses them, in the
//! same syntax: a level (`debug`), targets (`netprobe=debug,aya=info`), or
//! both (`warn,netprobe=debug`).

use std::io::IsTerminal;

use tracing_subscriber::{
    filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt, Layer,
};

/// What shows when neither `--log-level` nor `RUST_LOG` says: netprobe's
/// notices and every crate's warnings (aya's among them).
pub const DEFAULT_FILTER: &str = "warn,netprobe=info";

/// The filter from `--log-level`, else `RUST_LOG`, else the default.
pub fn filter(given: Option<&str>, env: Option<&str>) -> Result<Targets, String> {
    let (spec, from) = match (given, env) {
        (Some(g), _) => (g, "--log-level"),
        (None, Some(e)) if !e.trim().is_empty() => (e, "RUST_LOG"),
        _ => (DEFAULT_FILTER, "the default"),
    };
    spec.trim().parse::<Targets>().map_err(|e| {
        format!(
            "{from} `{}` is not a log filter ({e}): give a level (error, warn, info, debug, \
             trace, off), targets with levels (netprobe=debug,aya=info), or both \
             (warn,netprobe=debug)",
            spec.escape_debug()
        )
    })
}

/// Installs the subscriber: `daemon` lines carry the time and the crate
/// (a terminal's or journald's reader wants them); a command's carry only
/// the level.
pub fn init(given: Option<&str>, daemon: bool) -> Result<(), String> {
    let env = std::env::var("RUST_LOG").ok();
    let targets = filter(given, env.as_deref())?;
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // The daemon's lines say which crate spoke (aya's or netprobe's).
        .with_target(daemon)
        // A closed or full stderr must not panic (the default prints the
        // write error with eprintln!, which would).
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry();
    // `try_init` also routes the `log` crate's records (aya's) here.
    let done = if daemon {
        registry.with(layer.with_filter(targets)).try_init()
    } else {
        registry
            .with(layer.without_time().with_filter(targets))
            .try_init()
    };
    done.map_err(|e| format!("cannot set up diagnostics: {e}"))
}

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were
/// closed), so that no file netprobe opens later takes their place and
/// receives its output.
pub fn ensure_std_fds() {
    for fd in 0..=2 {
        // SAFETY: fcntl on an integer descriptor only queries it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: a constant NUL-terminated path; the lowest free
            // descriptor is the closed one.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn filters_from_the_flag_the_environment_or_the_default() {
        let t = filter(None, None).unwrap();
        assert!(t.would_enable("netprobe::run", &tracing::Level::INFO));
        assert!(!t.would_enable("netprobe::run", &tracing::Level::DEBUG));
        assert!(t.would_enable("aya::maps", &tracing::Level::WARN));
        assert!(!t.would_enable("aya::maps", &tracing::Level::INFO));
        // The flag wins over the environment.
        let t = filter(Some("debug"), Some("error")).unwrap();
        assert!(t.would_enable("aya", &tracing::Level::DEBUG));
        let t = filter(None, Some("error,netprobe=trace")).unwrap();
        assert!(t.would_enable("netprobe::sink", &tracing::Level::TRACE));
        assert!(!t.would_enable("aya", &tracing::Level::WARN));
        // An empty RUST_LOG is the default.
        assert_eq!(
            filter(None, Some(" ")).unwrap().default_level(),
            Some(LevelFilter::WARN)
        );
        let t = filter(Some("off"), None).unwrap();
        assert!(!t.would_enable("netprobe", &tracing::Level::ERROR));
    }

    #[test]
    fn a_bad_filter_is_a_clear_error() {
        let e = filter(Some("netprobe=loud"), None).unwrap_err();
        assert!(
            e.starts_with("--log-level `netprobe=loud` is not a log filter"),
            "{e}"
        );
        let e = filter(None, Some("a=b=c\n")).unwrap_err();
        assert!(e.starts_with("RUST_LOG `a=b=c\\n` is not"), "{e}");
    }
}
