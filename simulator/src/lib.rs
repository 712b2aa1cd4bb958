//! Deterministic cluster simulation: the node code on simulated clock, network, disk, object
//! store and metadata, driven from one seed.
//!
//! Invariant (the goal of the simulator issue): the same seed yields the same trace. Today a
//! cluster run on one thread (inline storage, [`clock::TokioClock`], a paused current-thread
//! tokio runtime) reproduces its logs from the seed; the CLI, fault schedules and checkers are
//! still to come.
//!
//! Today: [`network::SimNetwork`] (an in-memory network with nodes down, partitions and seeded
//! message loss), [`cluster::SimCluster`] (N real `Log`s on in-memory disks joined by it) and
//! [`clock::TokioClock`] (virtual time).

#[cfg(not(tokio_unstable))]
compile_error!(
    "the simulator seeds tokio's randomness (Builder::rng_seed), which needs `--cfg tokio_unstable`: \
     the workspace's .cargo/config.toml sets it; a RUSTFLAGS variable replaces that, so add it there"
);

pub mod checker;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod network;
pub mod run;
pub mod subscriber;
pub mod workload;
