//! The log: ThemisDB's only source of truth. Domain types (URNs, events, positions, tokens), the
//! placement ring, the determinism seams, and per-shard openraft groups whose log, vote and state
//! machine live in redb.
//!
//! Invariant: an append is acknowledged only once its entry is durable (fsynced) on a quorum and
//! applied by the deterministic state machine; nothing in this crate reads time, randomness,
//! threads, the network or metadata except through [`seam`].

pub mod cluster;
mod codec;
pub mod entry;
pub mod event;
pub mod histogram;
pub mod ids;
pub mod json;
pub mod raft;
pub mod ring;
pub mod seam;
pub mod shard;
pub mod shards;
pub mod store;
pub mod subscribe;
pub mod token;
pub mod units;
pub mod urn;

pub use codec::DecodeError;
pub use entry::{EventPosition, Outcome, Proposal, ProposedEvent};
pub use event::{
    Event, EventId, EventInput, EventLimits, ExpectedRevision, InvalidEvent, Op, Point,
};
pub use ids::{Lsn, Position, ShardId};
pub use ring::Ring;
pub use seam::NodeId;
pub use shard::{
    Appended, AppendedEvent, CommittedEntry, CommittedEvent, LogEntryView, Shard, ShardConfig,
    StoredEvent, StreamPage,
};
pub use shards::{
    AppendResult, BatchError, Consistency, Log, LogConfig, ReplicaStatus, ShardStatus, Topology,
    ValidatedBatch,
};
pub use token::{Token, TokenError};
pub use urn::{Model, Urn, UrnError};

/// Errors of the log crate. [`Error::code`] gives the stable snake_case code clients branch on.
/// Errors travel between nodes (an append forwarded to the shard's leader answers with one), so
/// they serialize.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// An expected-revision check failed; nothing was appended.
    #[error("wrong expected revision for {urn}: expected {expected}, the stream is at {}", revision_text(*.actual))]
    WrongExpectedRevision {
        /// The stream.
        urn: Urn,
        /// What the append expected.
        expected: ExpectedRevision,
        /// The stream's current revision (None: no stream).
        actual: Option<u64>,
    },
    /// Event ids were reused inconsistently; nothing was appended.
    #[error("event id {id} cannot be deduplicated: {reason}")]
    IdempotencyConflict {
        /// The offending id.
        id: EventId,
        /// Why.
        reason: String,
    },
    /// A batch spans several shards and the client did not ask for per-shard atomicity.
    #[error(
        "the batch touches shards {}; atomic batches must stay within one shard (ask for per-shard atomicity to split it)",
        shards.iter().map(|s| s.0.to_string()).collect::<Vec<_>>().join(", ")
    )]
    CrossShardBatch {
        /// The shards touched.
        shards: Vec<ShardId>,
    },
    /// This node does not lead the shard.
    #[error("this node does not lead shard {shard}{}", leader.map(|l| format!("; node {l} does")).unwrap_or_default())]
    NotLeader {
        /// The shard.
        shard: ShardId,
        /// The leader, when known.
        leader: Option<NodeId>,
    },
    /// This node holds no replica of the shard.
    #[error("this node holds no replica of shard {shard}{}", if replicas.is_empty() { String::new() } else { format!("; nodes {} do", replicas.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")) })]
    NotHosted {
        /// The shard.
        shard: ShardId,
        /// The nodes that hold it.
        replicas: Vec<NodeId>,
    },
    /// The request reached the shard's leader through another node and the answer was lost on
    /// the way: the append may or may not have been applied. Read the stream to find out, or
    /// retry with client-chosen event ids, which makes the retry safe.
    #[error("shard {shard}: the outcome is unknown: {reason}")]
    OutcomeUnknown {
        /// The shard.
        shard: ShardId,
        /// What failed.
        reason: String,
    },
    /// The shard cannot serve now (no leader, stopped, Raft failure).
    #[error("shard {shard} is unavailable: {reason}")]
    Unavailable {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// No such shard on this node.
    #[error("shard {shard} does not exist; shards are 0 to {}", shards.saturating_sub(1))]
    UnknownShard {
        /// The requested shard.
        shard: ShardId,
        /// How many shards exist.
        shards: u32,
    },
    /// Stored bytes failed verification; they are never served.
    #[error("corrupted data in {location}: {detail}")]
    Corrupted {
        /// File (and record) affected.
        location: String,
        /// What failed.
        detail: String,
    },
    /// A subscription asked for a position older than the first record the log still holds
    /// (removed by retention or tiering): the events in between cannot be delivered.
    #[error("shard {shard}: position {} is no longer in the log; its first retained entry is {}", requested.0, first.0)]
    PositionExpired {
        /// The shard.
        shard: ShardId,
        /// The LSN asked for.
        requested: Lsn,
        /// The first LSN the log still holds.
        first: Lsn,
    },
    /// This node serves as many subscriptions as it is configured for.
    #[error(
        "this node serves {limit} subscriptions already, its limit (--subscribers-max); retry later or subscribe on another node"
    )]
    TooManySubscribers {
        /// The configured limit.
        limit: usize,
    },
    /// The storage layer failed (I/O, a stopped store).
    #[error("storage error: {0}")]
    Storage(String),
    /// The request contradicts the cluster's state (an unknown node, a replica that is not
    /// there).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The configuration is invalid or contradicts the data directory.
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn revision_text(r: Option<u64>) -> String {
    r.map_or_else(|| "no_stream".to_owned(), |r| r.to_string())
}

impl Error {
    /// The stable snake_case code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::WrongExpectedRevision { .. } => "wrong_expected_revision",
            Error::IdempotencyConflict { .. } => "idempotency_conflict",
            Error::CrossShardBatch { .. } => "cross_shard_batch",
            Error::NotLeader { .. } => "not_leader",
            Error::NotHosted { .. } => "not_hosted",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
            Error::Unavailable { .. } => "unavailable",
            Error::UnknownShard { .. } => "unknown_shard",
            Error::Corrupted { .. } => "corrupted",
            Error::PositionExpired { .. } => "position_expired",
            Error::TooManySubscribers { .. } => "too_many_subscribers",
            Error::Storage(_) => "storage_error",
            Error::InvalidRequest(_) => "invalid_request",
            Error::Config(_) => "invalid_configuration",
        }
    }
}

/// Result alias of the log crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
