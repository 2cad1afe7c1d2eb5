//! netprobe: names the failure behind connection timeouts and resets on a
//! Linux node, from kernel tracepoints. Pure logic (parsers, decoding,
//! classification) is kept apart from I/O so it is tested without root.

/// Writes a command's whole output to stdout; a closed pipe or a full disk
/// is one clear line on stderr and exit status 1, not a panic.
pub fn print_out(text: &str) -> i32 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("cannot write to stdout: {e}");
            1
        }
    }
}

/// A file of `testdata/` (captured from real kernels), for unit tests.
#[cfg(test)]
pub(crate) fn testdata(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

pub mod commands;
pub mod families;
pub mod kernel;
pub mod output;
pub mod pipeline;
