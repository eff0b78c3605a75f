//! Compaction: the files of one (table, UTC day) merged into one sorted file, and days that
//! have settled merged with their neighbours of the same UTC month into files of up to
//! `max_rows`, published by one manifest commit that swaps inputs for outputs. It never
//! changes an answer a query may still ask for.
//!
//! - `plan`: the pure planner (manifest + settings → groups to merge), unit-tested without I/O;
//! - `merge`: which rows of a group survive (history retention, replaced versions);
//! - `worker`: the low-priority thread merges run on;
//! - `execute`: reads, merges, writes and commits a plan.

pub(crate) mod execute;
mod merge;
pub(crate) mod plan;
mod worker;
