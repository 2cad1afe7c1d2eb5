//! `deploy-check FILE...`: checks each Kubernetes manifest offline (see the
//! library). Prints one `ok:` line per clean file, every problem otherwise,
//! and exits 1 when any file has a problem.

use std::{fs, process::ExitCode};

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: deploy-check FILE.yaml...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {file}: {e}");
                failed = true;
                continue;
            }
        };
        match deploy_check::check_str(&text) {
            Ok(objects) => println!("ok: {file}: {}", objects.join(", ")),
            Err(problems) => {
                failed = true;
                for p in problems {
                    eprintln!("error: {file}: {p}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
