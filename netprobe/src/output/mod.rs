//! Where records and figures go: the sinks (JSON lines, text, journald),
//! Prometheus metrics, the morning report, sd_notify and netprobe's own
//! diagnostics.

pub mod diag;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod sink;
