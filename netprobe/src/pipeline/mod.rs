//! From a kernel event to a written record: decoding, the credits of
//! in-kernel aggregation, causes, folding into incidents, the counters
//! sampler and the run loop.

pub mod causes;
pub mod config;
pub mod counters;
pub mod decode;
pub mod handle;
pub mod incident;
pub mod kagg;
pub mod packet;
pub mod record;
pub mod run;
pub mod service;
pub mod timefmt;
