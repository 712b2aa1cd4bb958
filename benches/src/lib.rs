//! Benchmark scenarios of ThemisDB, each run side by side with a real peer in the same run and
//! reported as ratios (DESIGN.md, `docs/BENCHMARKS.md`).
//!
//! Benchmarks measure real elapsed time and start real processes, so this crate reads the wall
//! clock directly; it is never part of a node.
#![allow(clippy::disallowed_methods)]

pub mod cluster;
pub mod fanout;
pub mod graph;
pub mod load;
pub mod probe;
pub mod process;
pub mod search;
pub mod sql;
pub mod timeseries;
