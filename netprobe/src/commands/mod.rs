//! The commands besides `run`: the preflight check and the demo.

pub mod check;
pub mod demo;
pub mod explain;
