//! Views derived from the committed log: one worker per (shard, view kind) applies entries
//! deterministically (`apply(&mut state, &entry)`) and persists its state with its watermark.
//!
//! Invariant: a view is a pure function of the log prefix it has applied; it never reads the
//! wall clock. The views themselves arrive with the materializers issue; this crate exists now
//! so the dependency rule of DESIGN.md §3 is enforced from the first commit.
