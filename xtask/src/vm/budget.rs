//! How long a guest may take, from what it has to do and how fast this
//! machine runs it. Each test executable has a budget: twice the slowest
//! time it took in a guest on the project's machine (TCG, guests run side
//! by side as `cargo xtask test` runs them). A guest measures its own speed
//! when /init starts, as its boot time (kernel start to /init, which under
//! TCG is emulation work like the tests') against the reference boot of
//! the same kernel there, and scales every budget by it (never below 1):
//! a machine twice as slow gets limits twice as long. A limit that is hit
//! kills that executable alone, and the matrix names the test it was in.

/// Seconds each test executable may take in a guest at the reference
/// speed: twice the slowest time measured (`cargo xtask test`, three guests
/// side by side under TCG on the project's 2-core machine, six runs on
/// 2026-12-01, two of them from a clean clone), and at least 10 s.
pub const BUDGETS: &[(&str, u32)] = &[
    ("conntrack", 70),
    ("containers", 10),
    ("countersonly", 30),
    ("demo", 50),
    ("healthy", 30),
    // The guests only read the manifest (no container runtime there).
    ("image", 10),
    ("journald", 60),
    ("lifecycle", 90),
    ("netfilter", 40),
    ("netprobe_tests", 10),
    ("oom", 120),
    ("overflow", 100),
    ("paws", 30),
    // Slowest of one matrix run: 37.7 s (6.12), 36.0 s (6.1), 35.2 s (5.10).
    ("probelog", 80),
    ("queues", 190),
    ("reset", 70),
    // With the kernel-cost test, slowest of one run: 81.3 s (6.12), 78.1 s
    // (6.1), 68.6 s (5.10).
    ("resilience", 170),
    ("rules", 60),
    // Slowest of one run: 36.3 s (6.1), 35.2 s (6.12), 34.9 s (5.10).
    ("scale", 80),
    ("service", 60),
    ("soak", 10),
    // Slowest of one run: 69.0 s (6.12), 67.3 s (6.1), 66.0 s (5.10); most
    // of it the drains it waits for, ten times longer under TCG.
    ("spoofed", 140),
    ("unreachable", 40),
];

/// The budget of an executable this table does not name yet (a new test
/// file): generous, and the unit test below asks for an entry.
pub const DEFAULT_BUDGET: u32 = 180;

/// Boot time (guest uptime when /init starts, centiseconds) of each kernel
/// on the project's machine with the guests side by side: the reference
/// speed the budgets were measured at (seen: 5.9 to 6.8 s).
pub const REFERENCE_BOOT_CS: &[(&str, u32)] = &[("5.10", 645), ("6.1", 639), ("6.12", 606)];

/// Reference boot of a kernel not in the table.
pub const DEFAULT_REFERENCE_BOOT_CS: u32 = 640;

/// How long the host waits for a guest to reach /init and say its speed
/// (TCG boots these kernels in about 3-5 s; this is for hangs).
pub const BOOT_LIMIT_SECS: u64 = 180;

/// Slack the host adds to a guest's own total (its `netprobe check`, the
/// marker lines, power-off), so that an executable's own limit is always
/// the one that is hit first.
pub const HOST_SLACK_SECS: u64 = 120;

pub fn budget(test: &str) -> u32 {
    BUDGETS
        .iter()
        .find(|(name, _)| *name == test)
        .map_or(DEFAULT_BUDGET, |(_, secs)| *secs)
}

pub fn reference_boot_cs(kernel: &str) -> u32 {
    REFERENCE_BOOT_CS
        .iter()
        .find(|(k, _)| *k == kernel)
        .map_or(DEFAULT_REFERENCE_BOOT_CS, |(_, cs)| *cs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_file_has_a_budget() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests");
        let mut missing = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".rs") {
                if !BUDGETS.iter().any(|(n, _)| *n == stem) {
                    missing.push(stem.to_string());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "measure these in a guest and give them a budget: {missing:?}"
        );
        assert!(BUDGETS.iter().any(|(n, _)| *n == "netprobe_tests"));
    }

    #[test]
    fn unknown_names_get_the_defaults() {
        assert_eq!(budget("no-such-test"), DEFAULT_BUDGET);
        assert_eq!(reference_boot_cs("6.1"), 639);
        assert_eq!(reference_boot_cs("7.0"), DEFAULT_REFERENCE_BOOT_CS);
    }
}
