//! SQL (DataFusion) and AQL over the views, table functions and scatter-gather.
//!
//! Invariant: an answer reflects views whose watermarks cover the caller's token. The planner
//! arrives with the materializers issue; this crate exists now so the dependency rule of
//! DESIGN.md §3 is enforced from the first commit.
