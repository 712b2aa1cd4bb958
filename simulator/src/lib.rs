//! Deterministic cluster simulation: the node code on simulated clock, network, disk, object
//! store and metadata, driven from one seed.
//!
//! Invariant (the goal of the simulator issue, not yet true): the same seed yields the same
//! trace. The seams it needs (`themis_log::seam`, `themis_storage` backends, openraft's seeded
//! runtime) exist; the storage threads and tokio's scheduler are not simulated yet.
//!
//! Today: [`network::SimNetwork`] (an in-memory network with nodes down, partitions and seeded
//! message loss) and [`cluster::SimCluster`] (N real `Log`s on in-memory disks joined by it).

pub mod cluster;
pub mod network;
