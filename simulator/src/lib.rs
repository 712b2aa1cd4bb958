//! Deterministic cluster simulation: the node code on simulated clock, network, disk, object
//! store and metadata, driven from one seed.
//!
//! Invariant: the same seed yields the same trace. The simulator arrives with its own issue; the
//! seams it needs (`themis_log::seam`, `themis_storage` backends) exist from the first commit.
