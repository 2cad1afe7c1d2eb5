//! `deploy-check FILE...`: checks each Kubernetes manifest offline (see the
//! library). Prints one `ok:` line per clean file, every problem otherwise,
//! and exits 1 when any file has a problem.
//! `deploy-check --prometheus-rule RULE.yaml RULES.yml`: checks that the
//! PrometheusRule holds exactly the rules file's groups.
//! `deploy-check --dashboard DASHBOARD.json`: checks a Grafana dashboard.

use std::{fs, process::ExitCode};

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.first().is_some_and(|a| a == "--prometheus-rule") {
        return prometheus_rule(&files[1..]);
    }
    if files.first().is_some_and(|a| a == "--dashboard") {
        return dashboard(&files[1..]);
    }
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

fn prometheus_rule(args: &[String]) -> ExitCode {
    let [rule, rules] = args else {
        eprintln!("usage: deploy-check --prometheus-rule PROMETHEUSRULE.yaml RULES.yml");
        return ExitCode::from(2);
    };
    let read = |f: &String| fs::read_to_string(f).map_err(|e| format!("{f}: {e}"));
    match read(rule)
        .and_then(|r| Ok((r, read(rules)?)))
        .and_then(|(r, p)| deploy_check::same_rules(&r, &p))
    {
        Ok(n) => {
            println!("ok: {rule}: the {n} rules of {rules}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {rule}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dashboard(args: &[String]) -> ExitCode {
    let [file] = args else {
        eprintln!("usage: deploy-check --dashboard DASHBOARD.json");
        return ExitCode::from(2);
    };
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match deploy_check::check_dashboard(&text) {
        Ok(n) => {
            println!("ok: {file}: {n} panels");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("error: {file}: {p}");
            }
            ExitCode::FAILURE
        }
    }
}
