//! Where records go: JSON lines, text, journald; and what happens when one of
//! them fails (a closed stdout, a journald that went away): one clear line on
//! stderr, the record goes to the next sink, and the failed sink is retried
//! a few seconds later. Nothing is dropped silently.

pub mod journald;
pub mod json;
pub mod text;

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{output::metrics::Metrics, pipeline::record::Record};

pub trait Sink {
    /// A short name for error messages (`stdout`, `journald`, ...).
    fn name(&self) -> &str;
    fn write(&mut self, rec: &Record) -> io::Result<()>;
    /// Periodic work (retrying a peer that went away); called about once a
    /// second.
    fn tick(&mut self) {}
    /// A record this sink has to say about itself (records it had to drop),
    /// for the chain to write.
    fn take_note(&mut self) -> Option<Record> {
        None
    }
    /// At exit: how many accepted records never got through, and why.
    fn undelivered(&mut self) -> Option<(u64, String)> {
        None
    }
}

/// Which sink(s) `--output` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputKind {
    /// journald under systemd (JOURNAL_STREAM/INVOCATION_ID set), text on a
    /// terminal, JSON lines otherwise.
    Auto,
    Text,
    Json,
    Journald,
}

impl OutputKind {
    pub fn resolve(self) -> OutputKind {
        if self != OutputKind::Auto {
            return self;
        }
        if std::env::var_os("JOURNAL_STREAM").is_some()
            || std::env::var_os("INVOCATION_ID").is_some()
        {
            OutputKind::Journald
        } else if io::IsTerminal::is_terminal(&io::stdout()) {
            OutputKind::Text
        } else {
            OutputKind::Json
        }
    }
}

struct Slot {
    sink: Box<dyn Sink>,
    failed_at: Option<Instant>,
}

/// An ordered chain of sinks: the first healthy one gets each record.
pub struct Output {
    slots: Vec<Slot>,
    retry: Duration,
    notices: Notices,
    /// Counts every record written, for `--metrics`.
    pub metrics: Option<Arc<Metrics>>,
}

/// Where the chain says that a sink failed or works again: netprobe's
/// diagnostics (tracing, on stderr), or a test's list.
pub type Notices = Box<dyn FnMut(tracing::Level, String) + Send>;

/// Notices as diagnostics.
fn diagnose(level: tracing::Level, text: String) {
    if level == tracing::Level::ERROR {
        tracing::error!("{text}");
    } else {
        tracing::info!("{text}");
    }
}

/// Every sink failed for a record: the daemon cannot report and must stop.
#[derive(Debug)]
pub struct AllSinksFailed(pub String);

impl Output {
    pub fn new(chain: Vec<Box<dyn Sink>>) -> Output {
        Output::with_notices(chain, Box::new(diagnose))
    }

    pub fn with_notices(chain: Vec<Box<dyn Sink>>, notices: Notices) -> Output {
        Output {
            slots: chain
                .into_iter()
                .map(|sink| Slot {
                    sink,
                    failed_at: None,
                })
                .collect(),
            retry: Duration::from_secs(5),
            notices,
            metrics: None,
        }
    }

    /// The chain for an output kind: the asked-for sink, then fallbacks.
    pub fn for_kind(kind: OutputKind) -> Output {
        let stdout_json = || Box::new(json::Json::new(io::stdout(), "stdout")) as Box<dyn Sink>;
        let stderr_text = || Box::new(text::Text::new(io::stderr(), "stderr")) as Box<dyn Sink>;
        let mut chain: Vec<Box<dyn Sink>> = Vec::new();
        let mut notes = Vec::new();
        match kind.resolve() {
            OutputKind::Journald => match journald::Journald::connect_default() {
                Ok(j) => {
                    chain.push(Box::new(j));
                    chain.push(stdout_json());
                }
                Err(e) => {
                    notes.push(format!(
                        "journald is not reachable ({e}); writing JSON lines to stdout instead"
                    ));
                    chain.push(stdout_json());
                }
            },
            OutputKind::Text => {
                chain.push(Box::new(text::Text::new(io::stdout(), "stdout")));
                if let Ok(j) = journald::Journald::connect_default() {
                    chain.push(Box::new(j));
                }
            }
            OutputKind::Json | OutputKind::Auto => {
                chain.push(stdout_json());
                if let Ok(j) = journald::Journald::connect_default() {
                    chain.push(Box::new(j));
                }
            }
        }
        chain.push(stderr_text());
        let mut out = Output::new(chain);
        for n in notes {
            (out.notices)(tracing::Level::ERROR, n);
        }
        out
    }

    /// Writes a record to the first healthy sink, then whatever that sink
    /// has to say about itself.
    ///
    /// Metrics count a record before it is written: whoever reads the
    /// record and then scrapes finds it counted.
    pub fn write(&mut self, rec: &Record) -> Result<(), AllSinksFailed> {
        if let Some(m) = &self.metrics {
            m.observe(rec);
        }
        let mut i = self.write_one(rec)?;
        let mut notes = 0;
        while let Some(note) = self.slots[i].sink.take_note() {
            if let Some(m) = &self.metrics {
                m.observe(&note);
            }
            i = self.write_one(&note)?;
            notes += 1;
            if notes > 8 {
                break;
            }
        }
        Ok(())
    }

    /// Lets each sink retry what it holds.
    pub fn tick(&mut self) {
        for slot in &mut self.slots {
            slot.sink.tick();
        }
        let notes: Vec<Record> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.sink.take_note())
            .collect();
        for n in notes {
            let _ = self.write(&n);
        }
    }

    /// At exit: records a sink accepted but could not deliver are counted
    /// in a `lost` record written to the rest of the chain.
    pub fn finish(&mut self) -> Result<(), AllSinksFailed> {
        for i in 0..self.slots.len() {
            if let Some((n, why)) = self.slots[i].sink.undelivered() {
                (self.notices)(tracing::Level::ERROR, format!("{n} record(s) {why}"));
                // Not to the sink that failed them.
                self.slots[i].failed_at = Some(Instant::now());
                self.write(&Record::lost(n, &why))?;
            }
            if let Some(note) = self.slots[i].sink.take_note() {
                self.write(&note)?;
            }
        }
        Ok(())
    }

    /// The index of the sink that took the record.
    fn write_one(&mut self, rec: &Record) -> Result<usize, AllSinksFailed> {
        let now = Instant::now();
        let mut failures = Vec::new();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot
                .failed_at
                .is_some_and(|t| now.duration_since(t) < self.retry)
            {
                continue;
            }
            match slot.sink.write(rec) {
                Ok(()) => {
                    if slot.failed_at.take().is_some() {
                        (self.notices)(
                            tracing::Level::INFO,
                            format!("output to {} works again", slot.sink.name()),
                        );
                    }
                    return Ok(i);
                }
                Err(e) => {
                    let first = slot.failed_at.is_none();
                    slot.failed_at = Some(now);
                    let name = slot.sink.name().to_string();
                    if first {
                        let next = self.slots[i + 1..]
                            .first()
                            .map(|s| s.sink.name().to_string())
                            .unwrap_or_else(|| "nothing".into());
                        (self.notices)(
                            tracing::Level::ERROR,
                            format!("output to {name} failed ({e}); writing to {next} instead"),
                        );
                    }
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        Err(AllSinksFailed(if failures.is_empty() {
            "every output failed recently".into()
        } else {
            failures.join("; ")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Flaky {
        name: &'static str,
        fail: Arc<Mutex<bool>>,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            self.name
        }
        fn write(&mut self, rec: &Record) -> io::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.got.lock().unwrap().push(rec.message.clone());
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Notes(Arc<Mutex<Vec<u8>>>);
    impl Notes {
        fn take(&self) -> Notices {
            let list = self.0.clone();
            Box::new(move |_, text| {
                let mut l = list.lock().unwrap();
                l.extend_from_slice(text.as_bytes());
                l.push(b'\n');
            })
        }
    }

    #[test]
    fn falls_back_once_with_one_notice_and_recovers() {
        let fail_a = Arc::new(Mutex::new(false));
        let got_a = Arc::new(Mutex::new(Vec::new()));
        let got_b = Arc::new(Mutex::new(Vec::new()));
        let notes = Notes::default();
        let mut out = Output::with_notices(
            vec![
                Box::new(Flaky {
                    name: "a",
                    fail: fail_a.clone(),
                    got: got_a.clone(),
                }),
                Box::new(Flaky {
                    name: "b",
                    fail: Arc::new(Mutex::new(false)),
                    got: got_b.clone(),
                }),
            ],
            notes.take(),
        );
        out.retry = Duration::ZERO;
        out.write(&Record::new("drop", "1".into())).unwrap();
        *fail_a.lock().unwrap() = true;
        out.write(&Record::new("drop", "2".into())).unwrap();
        out.write(&Record::new("drop", "3".into())).unwrap();
        *fail_a.lock().unwrap() = false;
        out.write(&Record::new("drop", "4".into())).unwrap();
        assert_eq!(*got_a.lock().unwrap(), ["1", "4"]);
        assert_eq!(*got_b.lock().unwrap(), ["2", "3"]);
        let notes = String::from_utf8(notes.0.lock().unwrap().clone()).unwrap();
        assert_eq!(notes.matches("output to a failed").count(), 1, "{notes}");
        assert!(notes.contains("writing to b instead"));
        assert!(notes.contains("output to a works again"));
    }

    #[test]
    fn all_failing_is_an_error() {
        let fail = Arc::new(Mutex::new(true));
        let mut out = Output::with_notices(
            vec![Box::new(Flaky {
                name: "a",
                fail,
                got: Arc::default(),
            })],
            Notes::default().take(),
        );
        assert!(out.write(&Record::new("drop", "x".into())).is_err());
    }
}
