use clap::{Parser, Subcommand};
use netprobe::{
    commands::check,
    output::sink::OutputKind,
    pipeline::run::{self, RunOptions},
};

/// Names the failure behind connection timeouts and resets on this node.
#[derive(Parser)]
#[command(name = "netprobe", version, about)]
struct Cli {
    /// netprobe's own diagnostics on stderr (not records): a level (error,
    /// warn, info, debug, trace, off) or targets (netprobe=debug,aya=info);
    /// default RUST_LOG, else warn,netprobe=info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
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
        /// Seconds in which repeats of one mode and flow fold into one
        /// `incident` record (the first event is written at once); default
        /// the config file's, else 60.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
        incident_window: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics: a port (bound to
        /// 127.0.0.1) or ADDRESS:PORT (0.0.0.0:9464 to expose it).
        #[arg(long, value_name = "ADDR", value_parser = netprobe::output::metrics::parse_addr)]
        metrics: Option<std::net::SocketAddr>,
        /// A TOML file with the incident window and filters (ports,
        /// addresses, netns, modes); SIGHUP reloads it.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Size of the ring buffer the kernel writes events to (a power of
        /// two: 8M, 256K); when it is full, events are counted as lost.
        #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = netprobe::kernel::tracer::parse_ring_buffer)]
        ring_buffer: u32,
        /// Every kernel event as its own record: no counting of repeats in
        /// the kernel, no incidents, no retransmission summary. A flood
        /// then fills the ring buffer (what does not fit is counted lost).
        #[arg(long)]
        every_event: bool,
    },
    /// Preflight: kernel, BTF, tracefs, privileges, and each probe.
    Check,
    /// Provokes each failure this kernel can show in throwaway network
    /// namespaces while tracing, prints the diagnoses and a report (root).
    Demo,
    /// The morning summary of a night of records: failures by mode, worst
    /// flows and listeners, a timeline, and what to change.
    Report {
        /// A JSON-lines log from `netprobe run --output json`, or - for
        /// standard input; without it, the journal (journalctl).
        file: Option<String>,
        /// Only records from then on: an RFC 3339 UTC time or a span back
        /// from now (90m, 8h, 2d).
        #[arg(long)]
        since: Option<String>,
    },
    /// What a failure mode (or a kernel drop reason, or a counter) means,
    /// how netprobe detects it, and what to change.
    Explain {
        /// A mode (tw_recycle), a drop reason (TCP_LISTEN_OVERFLOW) or a
        /// counter (PAWSPassive).
        what: String,
    },
}

fn main() {
    netprobe::output::diag::ensure_std_fds();
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    if let Err(why) = netprobe::output::diag::init(cli.log_level.as_deref(), daemon) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "netprobe: error: {why}");
        std::process::exit(2);
    }
    let code = match cli.command {
        Command::Run {
            output,
            incident_window,
            metrics,
            config,
            ring_buffer,
            every_event,
        } => run::run(RunOptions {
            output,
            incident_window: incident_window.map(std::time::Duration::from_secs),
            metrics,
            config,
            ring_buffer,
            every_event,
        }),
        Command::Demo => netprobe::commands::demo::run(),
        Command::Report { file, since } => {
            netprobe::output::report::run(file.as_deref(), since.as_deref())
        }
        Command::Explain { what } => match netprobe::commands::explain::explain(&what) {
            Ok(text) => netprobe::print_out(&text),
            Err(why) => {
                tracing::error!("{why}");
                2
            }
        },
        Command::Check => match check::check(&mut std::io::stdout().lock()) {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("cannot write the report: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
