use clap::{Parser, Subcommand};
use netprobe::{
    check,
    run::{self, RunOptions},
    sink::OutputKind,
};

/// Names the failure behind connection timeouts and resets on this node.
#[derive(Parser)]
#[command(name = "netprobe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace until SIGINT/SIGTERM, writing one record per event.
    Run {
        /// Where records go: journald under systemd, text on a terminal,
        /// JSON lines otherwise (auto).
        #[arg(long, value_enum, default_value = "auto")]
        output: OutputKind,
    },
    /// Preflight: kernel, BTF, tracefs, privileges, and each probe.
    Check,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { output } => run::run(RunOptions { output }),
        Command::Check => match check::check(&mut std::io::stdout().lock()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("netprobe: error: cannot write the report: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
