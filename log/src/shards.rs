//! [`Log`]: the shards this node hosts and the ring that routes a URN to its shard. The entry
//! point for appends (validation, routing, per-shard atomicity) and reads.
//!
//! Invariant: the shard count of a data directory never changes silently. It is recorded on first
//! start, and opening with another count fails, since placement would send streams to shards that
//! do not hold them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use redb::{ReadableDatabase, TableDefinition};

use crate::entry::ProposedEvent;
use crate::event::{EventInput, EventLimits, ExpectedRevision};
use crate::ids::ShardId;
use crate::ring::Ring;
use crate::seam::{Clock, Entropy, NodeId, Transport, random_uuid};
use crate::shard::{Appended, Shard, ShardConfig};
use crate::store::{NodeStore, StoreConfig};
use crate::token::Token;
use crate::urn::Urn;
use crate::{Error, Result};

const NODE_META: TableDefinition<&str, u64> = TableDefinition::new("node");

/// Tunables of the node's log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Address other nodes reach this node at (recorded in Raft membership).
    pub advertise: String,
    /// Number of shards (fixed when the data directory is created).
    pub shards: u32,
    /// Shard tunables.
    pub shard: ShardConfig,
    /// Store tunables.
    pub store: StoreConfig,
    /// Per-event limits.
    pub limits: EventLimits,
    /// Most events in one append.
    pub batch_events_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            advertise: "127.0.0.1:8765".into(),
            shards: 4,
            shard: ShardConfig::default(),
            store: StoreConfig::default(),
            limits: EventLimits::default(),
            batch_events_max: 10_000,
        }
    }
}

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {source}")]
pub struct BatchError {
    /// Index of the event in the batch.
    pub index: usize,
    /// What is wrong with it.
    pub source: crate::event::InvalidEvent,
}

/// A batch that passed [`Log::validate`], ready to append.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    events: Vec<ProposedEvent>,
    /// Whether answering from the applied state first can help: only batches with client ids
    /// (possible retries) or expected revisions (possible conflicts) need the lookup.
    precheck: bool,
}

/// The answer to an append: per shard, and the token covering all of them.
#[derive(Debug, Clone)]
pub struct AppendResult {
    /// Token covering every position written.
    pub token: Token,
    /// One result per shard touched, in shard order.
    pub shards: Vec<(ShardId, Result<Appended>)>,
}

/// The shards this node hosts.
#[derive(Debug)]
pub struct Log {
    ring: Ring,
    shards: Vec<Shard>,
    limits: EventLimits,
    batch_events_max: usize,
    ids: Mutex<StdRng>,
}

impl Log {
    /// Opens (or creates) every shard on `disk` and starts their Raft groups.
    pub async fn open(
        config: LogConfig,
        disk: Arc<dyn themis_storage::Disk>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        transport: Arc<dyn Transport>,
    ) -> Result<Log> {
        if config.shards == 0 || config.shards > 4096 {
            return Err(Error::Config(format!(
                "shards must be between 1 and 4096, not {}",
                config.shards
            )));
        }
        check_shard_count(disk.as_ref(), config.shards)?;
        let open = |name: &str| {
            disk.open_database(name).map_err(|e| match e {
                themis_storage::Error::Database { location, source } => Error::Corrupted {
                    location,
                    detail: source.to_string(),
                },
                other => Error::Storage(other.to_string()),
            })
        };
        let (db, state_db) = (open("log")?, open("state")?);
        let store = NodeStore::open(db, state_db, disk.describe("log"), config.store.clone())?;
        let mut shards = Vec::with_capacity(config.shards as usize);
        for i in 0..config.shards {
            let shard = Shard::open(
                ShardId(i),
                config.node_id,
                &config.advertise,
                &store,
                clock.clone(),
                transport.clone(),
                &config.shard,
            )
            .await?;
            shards.push(shard);
        }
        Ok(Log {
            ring: Ring::new(config.shards),
            shards,
            limits: config.limits,
            batch_events_max: config.batch_events_max,
            ids: Mutex::new(entropy.stream("event-ids")),
        })
    }

    /// Waits until every shard has a leader.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<()> {
        for shard in &self.shards {
            shard.wait_for_leader(timeout).await?;
        }
        Ok(())
    }

    /// The shards, in id order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Shard `id`, or an error naming the valid range.
    pub fn shard(&self, id: ShardId) -> Result<&Shard> {
        self.shards.get(id.0 as usize).ok_or(Error::UnknownShard {
            shard: id,
            shards: self.shards.len() as u32,
        })
    }

    /// The shard holding `urn`'s stream.
    pub fn shard_for(&self, urn: &Urn) -> &Shard {
        &self.shards[self.ring.shard_for_urn(urn).0 as usize]
    }

    /// Event limits.
    pub fn limits(&self) -> &EventLimits {
        &self.limits
    }

    /// Validates a batch before anything is proposed. `url_urn` is the stream named by the URL,
    /// and `expected` its expected revision (applied to the batch's first event of that stream).
    pub fn validate(
        &self,
        inputs: Vec<EventInput>,
        url_urn: Option<&Urn>,
        expected: Option<ExpectedRevision>,
    ) -> std::result::Result<ValidatedBatch, BatchError> {
        if inputs.is_empty() || inputs.len() > self.batch_events_max {
            return Err(BatchError {
                index: 0,
                source: crate::event::InvalidEvent {
                    code: "invalid_batch",
                    field: "events".into(),
                    message: format!(
                        "a batch holds 1 to {} events, not {}",
                        self.batch_events_max,
                        inputs.len()
                    ),
                },
            });
        }
        let mut rng = self.ids.lock().expect("id rng lock");
        let mut draw = || random_uuid(&mut *rng);
        let mut out = Vec::with_capacity(inputs.len());
        let mut ids = std::collections::BTreeMap::new();
        let mut client_ids = false;
        for (index, input) in inputs.into_iter().enumerate() {
            let client_id = input.id.is_some();
            client_ids |= client_id;
            let (event, own) = input
                .validate(url_urn, &self.limits, &mut draw)
                .map_err(|source| BatchError { index, source })?;
            if let Some(first) = ids.insert(event.id, index) {
                return Err(BatchError {
                    index,
                    source: crate::event::InvalidEvent {
                        code: "duplicate_event_id",
                        field: "id".into(),
                        message: format!("event id {} is also used by event {first}", event.id),
                    },
                });
            }
            out.push(ProposedEvent {
                event,
                expected: own.unwrap_or_default(),
                client_id,
            });
        }
        if let Some(expected) = expected {
            let url = url_urn.expect("an expected revision comes with a stream url");
            let first = out
                .iter_mut()
                .find(|p| &p.event.urn == url)
                .expect("events target the url");
            if first.expected != ExpectedRevision::Any && first.expected != expected {
                return Err(BatchError {
                    index: 0,
                    source: crate::event::InvalidEvent {
                        code: "invalid_field",
                        field: "expected_revision".into(),
                        message:
                            "the request and its first event give different expected revisions"
                                .into(),
                    },
                });
            }
            first.expected = expected;
        }
        let expectations = out.iter().any(|p| p.expected != ExpectedRevision::Any);
        Ok(ValidatedBatch {
            events: out,
            precheck: client_ids || expectations,
        })
    }

    /// Appends a validated batch. Without `per_shard_atomicity`, a batch whose events fall in
    /// several shards is refused; with it, each shard's part is appended atomically on its own.
    pub async fn append(
        &self,
        batch: ValidatedBatch,
        per_shard_atomicity: bool,
    ) -> Result<AppendResult> {
        let ValidatedBatch { events, precheck } = batch;
        let mut groups: std::collections::BTreeMap<ShardId, Vec<ProposedEvent>> =
            Default::default();
        for p in events {
            groups
                .entry(self.ring.shard_for_urn(&p.event.urn))
                .or_default()
                .push(p);
        }
        if groups.len() > 1 && !per_shard_atomicity {
            return Err(Error::CrossShardBatch {
                shards: groups.keys().copied().collect(),
            });
        }
        let appends = groups.into_iter().map(|(id, events)| async move {
            (
                id,
                self.shards[id.0 as usize].append(events, precheck).await,
            )
        });
        let shards = futures::future::join_all(appends).await;
        let mut token = Token::new();
        for (_, result) in &shards {
            if let Ok(appended) = result {
                token.observe(appended.position);
            }
        }
        Ok(AppendResult { token, shards })
    }

    /// Stops every shard's Raft group.
    pub async fn shutdown(&self) {
        for shard in &self.shards {
            shard.shutdown().await;
        }
    }
}

fn check_shard_count(disk: &dyn themis_storage::Disk, shards: u32) -> Result<()> {
    let location = disk.describe("node");
    let storage = |e: String| Error::Storage(format!("{location}: {e}"));
    let db = disk
        .open_database("node")
        .map_err(|e| storage(e.to_string()))?;
    let recorded = {
        let tx = db.begin_read().map_err(|e| storage(e.to_string()))?;
        match tx.open_table(NODE_META) {
            Ok(t) => t
                .get("shards")
                .map_err(|e| storage(e.to_string()))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage(e.to_string())),
        }
    };
    match recorded {
        Some(n) if n == u64::from(shards) => Ok(()),
        Some(n) => Err(Error::Config(format!(
            "the data directory was created with {n} shards, not {shards}; changing the shard count \
             would move streams between shards (start with --shards {n})"
        ))),
        None => {
            let tx = db.begin_write().map_err(|e| storage(e.to_string()))?;
            tx.open_table(NODE_META)
                .map_err(|e| storage(e.to_string()))?
                .insert("shards", u64::from(shards))
                .map_err(|e| storage(e.to_string()))?;
            tx.commit().map_err(|e| storage(e.to_string()))
        }
    }
}
