//! Wall-clock time for records: RFC 3339 in UTC, from kernel monotonic stamps.

use std::time::{SystemTime, UNIX_EPOCH};

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Maps `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns.
    offset: i128,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            offset: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// Unix nanoseconds of a monotonic stamp.
    pub fn wall_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset
    }
}

/// CLOCK_MONOTONIC now, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

pub fn now_unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A duration for people: `45 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmmmmZ` (microseconds).
pub fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm), in i128 so that any instant has a date.
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {

    #[test]
    fn spans_for_people() {
        assert_eq!(span(0), "0 s");
        assert_eq!(span(200), "3 min 20 s");
        assert_eq!(span(7500), "2 h 5 min");
        assert_eq!(span(273600), "3 d 4 h");
    }

    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.5Z: a leap day.
        assert_eq!(
            rfc3339(1_709_251_199_500_000_000),
            "2024-02-29T23:59:59.500000Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
    }

    /// Any instant formats, however far from now (`--since 99999...d`
    /// goes back past year -500 billion; i128's ends go further).
    #[test]
    fn extreme_instants_format() {
        for ns in [
            i128::MIN,
            i128::MAX,
            (i64::MAX as i128 - 100) * 86_400_000_000_000,
        ] {
            let t = rfc3339(ns);
            assert!(t.ends_with('Z'), "{t}");
        }
        assert_eq!(
            rfc3339(-(u64::MAX as i128) * 1_000_000_000),
            "-584554047284-02-23T16:59:45.000000Z"
        );
    }

    #[test]
    fn monotonic_maps_near_now() {
        let c = Clock::now();
        let mono = monotonic_ns();
        let diff = (c.wall_ns(mono) - now_unix_ns()).abs();
        assert!(diff < 5_000_000_000, "clock mapping off by {diff} ns");
    }
}
