//! netprobe: names the failure behind connection timeouts and resets on a
//! Linux node, from kernel tracepoints. Pure logic (parsers, decoding,
//! classification) is kept apart from I/O so it is tested without root.

pub mod btf;
pub mod caps;
pub mod catalogue;
pub mod check;
pub mod classify;
pub mod config;
pub mod containers;
pub mod counters;
pub mod decode;
pub mod demo;
pub mod incident;
pub mod kallsyms;
pub mod metrics;
pub mod netns;
pub mod notify;
pub mod packet;
pub mod probes;
pub mod procinfo;
pub mod rawtcp;
pub mod record;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod sink;
pub mod sys;
pub mod timefmt;
pub mod tracefs;
