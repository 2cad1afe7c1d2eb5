//! Reading the running kernel and system: BTF, tracefs, kallsyms, sysctls
//! and capabilities, /proc, network namespaces and their sockets and
//! netfilter rules, and loading and attaching the probes.

pub mod btf;
pub mod caps;
pub mod containers;
pub mod kallsyms;
pub mod netfilter;
pub mod netns;
pub mod offsets;
pub mod probes;
pub mod procinfo;
pub mod rawtcp;
pub mod sandbox;
pub mod sys;
pub mod tracefs;
pub mod tracer;
