//! The node's durable store: every shard's Raft log and vote in the log database, and its state
//! machine in the state database, each shard in its own tables, each database written by its own
//! storage thread.
//!
//! Invariants:
//! - An append is reported durable to openraft only after the redb commit holding it returned
//!   with `Durability::Immediate` (fsync). Appends of every shard that arrive together share one
//!   commit: redb's copy-on-write commits cost far more than the entries they carry.
//! - After a failed commit the store refuses every later write until it is reopened: a failed
//!   fsync is never retried.
//! - State-machine changes commit without fsync, each together with its `applied` marker, and
//!   are made durable every `state_durable_every` apply groups; after a crash openraft re-applies
//!   the committed log from the last durable apply and, applying being deterministic, reaches the
//!   same state.
//! - At open, every record's checksum and the hash chain are verified; a corrupted byte is
//!   reported with the file, shard and index and never served.

// openraft's storage traits return its `StorageError`, a large type; the helpers here share it.
#![allow(clippy::result_large_err)]

pub(crate) mod record;
mod snapshot;
pub(crate) mod state;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{oneshot, watch};

pub use record::{Chain, GENESIS};
pub(crate) use state::Tables;

use crate::entry::Outcome;
use crate::ids::ShardId;
use crate::raft::{Entry, TypeConfig};
use crate::seam::{Clock, spawn_thread};
use crate::{Error, Result};

type NodeId = u64;
type StorageResult<T> = std::result::Result<T, StorageError<NodeId>>;
/// The last snapshot built or installed: its metadata and image.
type CurrentSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);
/// The last entry of a shard's log and its chain, as the storage thread tracks it.
type LastEntry = Option<(u64, Chain)>;

/// Tunables of the node store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long an event id stays in the idempotency table, measured in commit timestamps.
    /// Every replica of a shard must use the same value.
    pub dedup_window: Duration,
    /// Most commands one group commit gathers.
    pub group_commit_commands_max: usize,
    /// Most commands waiting for a storage thread before callers wait for room.
    pub queue_depth_max: usize,
    /// Apply groups after which the state is made durable even when the state thread is busy.
    pub state_durable_every: usize,
    /// Run storage work on the calling task instead of the two storage threads (for the
    /// simulator, which must run a node on one thread; no group commit across callers).
    pub inline: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(24 * 3600),
            group_commit_commands_max: 4096,
            state_durable_every: 64,
            queue_depth_max: 16_384,
            inline: false,
        }
    }
}

/// Counters of a shard's store, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Durable commits that carried this shard's entries (each one fsync, maybe shared).
    pub log_commits: AtomicU64,
    /// Entries written to the log.
    pub entries_written: AtomicU64,
    /// Bytes of records written to the log.
    pub bytes_written: AtomicU64,
    /// Highest log index openraft reported committed.
    pub committed: AtomicU64,
    /// Time from an entry's proposal on the leader (its commit timestamp) to its apply on this
    /// replica, by this node's wall clock: on a follower, the replication lag (an upper bound,
    /// since it includes the leader's own commit).
    pub apply_lag: crate::histogram::Histogram,
    /// Snapshots installed from a leader (each replaced this replica's state and log prefix).
    pub snapshots_installed: AtomicU64,
}

enum Command {
    Append {
        shard: Arc<Shared>,
        entries: Vec<Entry>,
        callback: LogFlushed<TypeConfig>,
    },
    SaveVote {
        shard: Arc<Shared>,
        vote: Vote<NodeId>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    Truncate {
        shard: Arc<Shared>,
        since: u64,
        done: oneshot::Sender<StorageResult<()>>,
    },
    Purge {
        shard: Arc<Shared>,
        upto: LogId<NodeId>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    Apply {
        shard: Arc<Shared>,
        entries: Vec<Entry>,
        done: oneshot::Sender<StorageResult<Vec<Vec<Outcome>>>>,
    },
    /// The first half of a snapshot install: the log takes the image's records, so the chain
    /// continues from the image's (see `snapshot::anchor_log`).
    Anchor {
        shard: Arc<Shared>,
        image: Arc<snapshot::Decoded>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    /// The second half: the state machine takes the image.
    InstallSnapshot {
        shard: Arc<Shared>,
        image: Arc<snapshot::Decoded>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    /// Drops a shard's log and vote (log thread), or its state machine (state thread).
    DestroyLog {
        shard: Arc<Shared>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    DestroyState {
        shard: Arc<Shared>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    /// Makes everything applied so far durable (state thread).
    SyncState {
        done: oneshot::Sender<StorageResult<()>>,
    },
}

impl Command {
    /// Whether the state thread executes it (otherwise the log thread does).
    fn is_state(&self) -> bool {
        matches!(
            self,
            Command::Apply { .. }
                | Command::InstallSnapshot { .. }
                | Command::DestroyState { .. }
                | Command::SyncState { .. }
        )
    }
}

/// The state thread's progress towards durability: apply groups committed without fsync since
/// the state was last made durable, and the last index each shard applied in them.
#[derive(Debug, Default)]
struct StateProgress {
    groups: usize,
    /// Each shard's `durable_applied` (not the shard itself: a shard holds the sender of this
    /// thread's queue, which would keep the thread from ever stopping) and its last applied.
    unsynced: BTreeMap<ShardId, (Arc<AtomicU64>, u64)>,
}

impl StateProgress {
    /// After a durable commit of the state database: everything applied so far is durable.
    fn synced(&mut self) {
        for (durable, index) in std::mem::take(&mut self.unsynced).into_values() {
            durable.fetch_max(index + 1, Ordering::AcqRel);
        }
        self.groups = 0;
    }
}

/// What every shard of the node shares: the database, written only by the storage thread.
#[derive(Debug)]
struct Node {
    /// The Raft logs and votes: every append is durable before it is acknowledged.
    db: Database,
    /// The state machines: applied without fsync, made durable when the state thread is idle
    /// or every `state_durable_every` applies, and replayed from the log after a crash.
    state_db: Database,
    location: String,
    config: StoreConfig,
    /// Wall time for the apply-lag metric (never for anything applied).
    clock: Arc<dyn Clock>,
    /// In inline mode, the storage threads' state: each shard's last entry, and the state
    /// thread's progress towards durability.
    inline: Option<Mutex<(BTreeMap<ShardId, LastEntry>, StateProgress)>>,
    /// Set after a failed commit; later writes are refused.
    failure: Mutex<Option<String>>,
}

/// One shard's part of the store.
#[derive(Debug)]
struct Shared {
    shard: ShardId,
    node: Arc<Node>,
    /// The log thread's queue; the thread stops when every sender is gone.
    commands: SyncSender<Command>,
    /// The state thread's queue.
    state_commands: SyncSender<Command>,
    tables: Tables,
    /// Entries handed to the log thread and not yet applied: readable before they are on disk,
    /// and served to the state machine's apply without reading and decoding them back.
    pending: Mutex<BTreeMap<u64, Entry>>,
    applied: watch::Sender<u64>,
    snapshot: Mutex<Option<CurrentSnapshot>>,
    snapshot_seq: AtomicU64,
    /// One more than the index the Raft log is purged up to (0: nothing purged).
    purged: AtomicU64,
    /// The log id openraft last purged up to (what `get_log_state` reports). The persisted
    /// one may lag behind it: see `Command::Purge`.
    purged_id: Mutex<Option<LogId<NodeId>>>,
    /// One more than the highest applied index known durable in the state database (0: none).
    /// The log's persisted purge point never passes it, so after a crash openraft never finds
    /// its log purged beyond the state machine it restarts from.
    durable_applied: Arc<AtomicU64>,
    stats: StoreStats,
}

/// The node's store: one redb database and its storage thread, shared by every shard.
#[derive(Debug)]
pub struct NodeStore {
    node: Arc<Node>,
    commands: SyncSender<Command>,
    state_commands: SyncSender<Command>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A shard's log store (openraft `RaftLogStorage`). Clones share the store.
#[derive(Debug, Clone)]
pub struct ShardStore {
    shared: Arc<Shared>,
}

/// A shard's state machine (openraft `RaftStateMachine`), over the same tables' database.
#[derive(Debug, Clone)]
pub struct ShardStateMachine {
    shared: Arc<Shared>,
}

fn storage_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write(AnyError::error(e.to_string())).into()
}

fn read_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read(AnyError::error(e.to_string())).into()
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn range_of(range: &impl RangeBounds<u64>) -> (std::ops::Bound<u64>, std::ops::Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl NodeStore {
    /// Takes the node's log database `db` and state database `state_db` (described as
    /// `location` in errors) and starts their storage threads. `clock` only times metrics.
    pub fn open(
        db: Database,
        state_db: Database,
        location: String,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<NodeStore> {
        let depth = config.queue_depth_max.max(1);
        let (commands, rx) = std::sync::mpsc::sync_channel(depth);
        let (state_commands, state_rx) = std::sync::mpsc::sync_channel(depth);
        let node = Arc::new(Node {
            db,
            state_db,
            location,
            inline: config
                .inline
                .then(|| Mutex::new((BTreeMap::new(), StateProgress::default()))),
            config,
            clock,
            failure: Mutex::new(None),
        });
        if node.inline.is_some() {
            return Ok(NodeStore {
                node,
                commands,
                state_commands,
                threads: Vec::new(),
            });
        }
        let spawn_error = |e| Error::Storage(format!("cannot start a storage thread: {e}"));
        let worker = node.clone();
        let log = spawn_thread("themis-log".into(), move || worker.run(rx)).map_err(spawn_error)?;
        let worker = node.clone();
        let state = spawn_thread("themis-state".into(), move || worker.run_state(state_rx))
            .map_err(spawn_error)?;
        Ok(NodeStore {
            node,
            commands,
            state_commands,
            threads: vec![log, state],
        })
    }

    /// Waits for the storage threads to finish the work queued so far and closes the
    /// databases. Every shard store of this node must have been dropped, or this waits for ever.
    pub fn close(self) {
        drop(self.commands);
        drop(self.state_commands);
        for thread in self.threads {
            let _ = thread.join();
        }
    }

    /// Opens shard `shard`'s tables, creating them when new, and verifies its log.
    pub fn shard(&self, shard: ShardId) -> Result<(ShardStore, ShardStateMachine)> {
        let node = &self.node;
        let tables = Tables::new(shard);
        let storage = |e: redb::Error| Error::Storage(format!("{}: {e}", node.location));
        {
            let tx = node.db.begin_write().map_err(|e| storage(e.into()))?;
            tx.open_table(tables.log()).map_err(|e| storage(e.into()))?;
            tx.open_table(tables.log_meta())
                .map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))?;
            let tx = node.state_db.begin_write().map_err(|e| storage(e.into()))?;
            tx.open_table(tables.sm_meta())
                .map_err(|e| storage(e.into()))?;
            snapshot::create_tables(&tx, &tables).map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))?;
        }
        verify_log(
            &node.db,
            &tables,
            &format!("{}, shard {}", node.location, shard.0),
        )?;
        let applied = read_applied(&node.state_db, &tables)
            .map_err(|e| Error::Storage(format!("{}: {e}", node.location)))?;
        if let Some(applied) = applied {
            log_holds(&node.db, &tables, applied.index).map_err(|detail| Error::Corrupted {
                location: format!("{}, shard {}", node.location, shard.0),
                detail,
            })?;
        }
        let purged_id = read_purged(&node.db, &tables)?;
        let purged = purged_id.map_or(0, |id| id.index + 1);
        // Opening the tables above committed durably: the applied state read is durable.
        let durable_applied = applied.map_or(0, |id| id.index + 1);
        let shared = Arc::new(Shared {
            shard,
            node: node.clone(),
            commands: self.commands.clone(),
            state_commands: self.state_commands.clone(),
            tables,
            pending: Mutex::new(BTreeMap::new()),
            applied: watch::channel(applied.map_or(0, |id| id.index)).0,
            snapshot: Mutex::new(None),
            snapshot_seq: AtomicU64::new(0),
            purged: AtomicU64::new(purged),
            purged_id: Mutex::new(purged_id),
            durable_applied: Arc::new(AtomicU64::new(durable_applied)),
            stats: StoreStats::default(),
        });
        Ok((
            ShardStore {
                shared: shared.clone(),
            },
            ShardStateMachine { shared },
        ))
    }

    #[cfg(test)]
    fn fail(&self, reason: &str) {
        self.node.fail(reason.to_owned());
    }
}

impl ShardStore {
    /// The node's log database, for reads.
    pub fn database(&self) -> &Database {
        &self.shared.node.db
    }

    /// The node's state-machine database, for reads.
    pub fn state_database(&self) -> &Database {
        &self.shared.node.state_db
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.shared.tables
    }

    /// Where the shard's data lives (file path and shard), for messages.
    pub fn location(&self) -> String {
        format!(
            "{}, shard {}",
            self.shared.node.location, self.shared.shard.0
        )
    }

    /// Store counters.
    pub fn stats(&self) -> &StoreStats {
        &self.shared.stats
    }

    /// The LSN the state machine has applied, as a watch that changes with every apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Why the store stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .node
            .failure
            .lock()
            .expect("failure lock")
            .clone()
    }

    /// Reads and verifies the records of `range`, committed or pending.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        // Entries about to be applied are usually all still in memory.
        if let (std::ops::Bound::Included(&start), std::ops::Bound::Excluded(&end)) =
            (range.start_bound(), range.end_bound())
        {
            let pending = self.shared.pending.lock().expect("pending lock");
            let held: Vec<Entry> = pending.range(start..end).map(|(_, e)| e.clone()).collect();
            if held.len() as u64 == end.saturating_sub(start) {
                return Ok(held);
            }
        }
        let mut out: BTreeMap<u64, Entry> = self
            .stored_entries(range_of(&range))?
            .into_iter()
            .map(|(entry, _)| (entry.log_id.index, entry))
            .collect();
        let pending = self.shared.pending.lock().expect("pending lock");
        for (k, e) in pending.range(range_of(&range)) {
            out.entry(*k).or_insert_with(|| e.clone());
        }
        Ok(out.into_values().collect())
    }

    /// Reads and verifies the records of `range` that are on disk, each with its chain hash.
    pub fn stored_entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<(Entry, Chain)>> {
        let location = self.location();
        let storage = |e: String| Error::Storage(format!("{location}: {e}"));
        let tx = self
            .database()
            .begin_read()
            .map_err(|e| storage(e.to_string()))?;
        let table = tx
            .open_table(self.tables().log())
            .map_err(|e| storage(e.to_string()))?;
        let mut out = Vec::new();
        for item in table
            .range(range_of(&range))
            .map_err(|e| storage(e.to_string()))?
        {
            let (k, v) = item.map_err(|e| storage(e.to_string()))?;
            let at = format!("{location}, log entry {}", k.value());
            let decoded = record::decode(v.value(), &at).map_err(|e| Error::Corrupted {
                location: at.clone(),
                detail: e.to_string(),
            })?;
            out.push((decoded.entry, decoded.chain));
        }
        Ok(out)
    }

    /// Runs `f` over this shard's log table in a read transaction.
    fn read_log<T>(
        &self,
        f: impl FnOnce(
            &redb::ReadOnlyTable<u64, &'static [u8]>,
        ) -> std::result::Result<T, redb::StorageError>,
    ) -> Result<T> {
        let storage = |e: String| Error::Storage(format!("{}: {e}", self.location()));
        let tx = self
            .database()
            .begin_read()
            .map_err(|e| storage(e.to_string()))?;
        let table = tx
            .open_table(self.tables().log())
            .map_err(|e| storage(e.to_string()))?;
        f(&table).map_err(|e| storage(e.to_string()))
    }

    /// The index of the first stored log record, if any.
    pub fn first_index(&self) -> Result<Option<u64>> {
        self.read_log(|t| Ok(t.first()?.map(|(k, _)| k.value())))
    }

    /// The chain hash of the log up to and including `index`, if that entry is stored.
    pub fn chain_at(&self, index: u64) -> Result<Option<Chain>> {
        self.read_log(|t| Ok(t.get(index)?.map(|v| record::chain_of_frame(v.value()))))
    }

    fn send(&self, command: Command) -> StorageResult<()> {
        if let Some(e) = self.shared.node.failed() {
            return Err(e);
        }
        if let Some(inline) = &self.shared.node.inline {
            let mut state = inline.lock().expect("inline store lock");
            let (last, progress) = &mut *state;
            if command.is_state() {
                self.shared.node.handle_state_group(vec![command], progress);
            } else {
                self.shared.node.handle_log_group(vec![command], last);
            }
            return Ok(());
        }
        let queue = if command.is_state() {
            &self.shared.state_commands
        } else {
            &self.shared.commands
        };
        queue
            .send(command)
            .map_err(|_| storage_error("storage thread stopped"))
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(Arc<Shared>, oneshot::Sender<StorageResult<T>>) -> Command,
    ) -> StorageResult<T> {
        let (done, wait) = oneshot::channel();
        self.send(make(self.shared.clone(), done))?;
        wait.await
            .map_err(|_| storage_error("storage thread stopped"))?
    }

    /// Deletes the shard's log, vote and state machine from this node (after its replica left
    /// the shard's Raft group: a replica added again later starts empty, as a learner). The
    /// shard's Raft group must be shut down first.
    pub async fn destroy(&self) -> Result<()> {
        let storage = |e: StorageError<NodeId>| Error::Storage(e.to_string());
        self.request(|shard, done| Command::DestroyLog { shard, done })
            .await
            .map_err(storage)?;
        self.request(|shard, done| Command::DestroyState { shard, done })
            .await
            .map_err(storage)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let tx = self.database().begin_read().map_err(read_error)?;
        let meta = tx
            .open_table(self.tables().log_meta())
            .map_err(read_error)?;
        let value = meta.get(key).map_err(read_error)?;
        value
            .map(|v| json(v.value()))
            .transpose()
            .map_err(read_error)
    }
}

fn read_purged(db: &Database, t: &Tables) -> Result<Option<LogId<NodeId>>> {
    let storage = |e: String| Error::Storage(e);
    let tx = db.begin_read().map_err(|e| storage(e.to_string()))?;
    let meta = tx
        .open_table(t.log_meta())
        .map_err(|e| storage(e.to_string()))?;
    let value = meta.get("purged").map_err(|e| storage(e.to_string()))?;
    value.map(|v| json(v.value())).transpose().map_err(storage)
}

fn read_applied(db: &Database, t: &Tables) -> std::result::Result<Option<LogId<NodeId>>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let meta = tx.open_table(t.sm_meta()).map_err(|e| e.to_string())?;
    let value = meta.get("applied").map_err(|e| e.to_string())?;
    value.map(|v| json(v.value())).transpose()
}

/// The chain an entry at `index` extends: its predecessor's, the anchor's (a log that starts
/// after a snapshot's records), or genesis. (The store does not refuse a gap: openraft's
/// storage suite appends over gaps. A state machine ahead of its log, the way a gap could
/// arise in a real node, is refused when the shard opens.)
fn prev_chain(
    log: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    index: u64,
) -> std::result::Result<Chain, String> {
    if let Some(i) = index.checked_sub(1)
        && let Some(v) = log.get(i).map_err(|e| e.to_string())?
    {
        return Ok(record::chain_of_frame(v.value()));
    }
    Ok(anchor(meta, index)?.unwrap_or(GENESIS))
}

/// The anchor's chain when it is the predecessor of `index`.
fn anchor(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    index: u64,
) -> std::result::Result<Option<Chain>, String> {
    if let Some(v) = meta.get("anchor").map_err(|e| e.to_string())? {
        let (at, chain): (u64, Chain) = json(v.value())?;
        if index.checked_sub(1) == Some(at) {
            return Ok(Some(chain));
        }
    }
    Ok(None)
}

/// The last entry of a shard's log and its chain.
fn last_entry(
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> std::result::Result<LastEntry, String> {
    Ok(log
        .last()
        .map_err(|e| e.to_string())?
        .map(|(k, v)| (k.value(), record::chain_of_frame(v.value()))))
}

/// Checks that the log holds the record of the state machine's applied index (or is anchored
/// there): the state machine's stream index points into the log, and the next entry must
/// extend that record's chain.
fn log_holds(db: &Database, t: &Tables, applied: u64) -> std::result::Result<(), String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let log = tx.open_table(t.log()).map_err(|e| e.to_string())?;
    let meta = tx.open_table(t.log_meta()).map_err(|e| e.to_string())?;
    if log.get(applied).map_err(|e| e.to_string())?.is_some()
        || anchor(&meta, applied + 1)?.is_some()
    {
        return Ok(());
    }
    Err(format!(
        "the state machine applied log entry {applied} but the log holds no record of it"
    ))
}

/// Verifies every record's checksum and the hash chain of one shard's log.
fn verify_log(db: &Database, t: &Tables, location: &str) -> Result<()> {
    let storage = |e: String| Error::Storage(format!("{location}: {e}"));
    let tx = db.begin_read().map_err(|e| storage(e.to_string()))?;
    let log = tx.open_table(t.log()).map_err(|e| storage(e.to_string()))?;
    let meta = tx
        .open_table(t.log_meta())
        .map_err(|e| storage(e.to_string()))?;
    let mut last: LastEntry = None;
    for item in log.iter().map_err(|e| storage(e.to_string()))? {
        let (k, v) = item.map_err(|e| storage(e.to_string()))?;
        let index = k.value();
        let at = format!("{location}, log entry {index}");
        let corrupted = |detail: String| Error::Corrupted {
            location: location.to_owned(),
            detail,
        };
        let decoded = record::decode(v.value(), &at).map_err(|e| corrupted(e.to_string()))?;
        if decoded.entry.log_id.index != index {
            return Err(corrupted(format!(
                "{at}: record holds index {}",
                decoded.entry.log_id.index
            )));
        }
        let expected = match last {
            Some((i, chain)) if i + 1 == index => chain,
            // The first stored entry: after the anchor, or the log's start.
            _ => anchor(&meta, index).map_err(storage)?.unwrap_or(GENESIS),
        };
        if decoded.prev != expected {
            return Err(corrupted(format!(
                "{at}: hash chain broken (the entry does not extend its predecessor)"
            )));
        }
        last = Some((index, decoded.chain));
    }
    Ok(())
}

impl Shared {
    /// Records that the state machine applied everything up to `index`: entries kept for the
    /// apply are dropped and waiters on the applied index wake.
    fn mark_applied(&self, index: u64) {
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|&k, _| k > index);
        self.applied.send_replace(index);
    }
}

impl Node {
    fn fail(&self, reason: String) {
        tracing::error!(location = %self.location, %reason, "store stopped");
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(reason);
    }

    fn failed(&self) -> Option<StorageError<NodeId>> {
        self.failure
            .lock()
            .expect("failure lock")
            .as_ref()
            .map(|r| {
                storage_error(format!(
                    "{}: store stopped after an error: {r}",
                    self.location
                ))
            })
    }

    /// Runs `f` in one write transaction of `db`; a failure stops the store.
    fn write<T>(
        &self,
        db: &Database,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> std::result::Result<T, String>,
    ) -> StorageResult<T> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let result = (|| {
            let mut tx = db.begin_write().map_err(|e| e.to_string())?;
            if !matches!(durability, Durability::Immediate) {
                tx.set_durability(durability).map_err(|e| e.to_string())?;
            }
            let value = f(&tx)?;
            tx.commit().map_err(|e| format!("commit failed: {e}"))?;
            Ok(value)
        })();
        result.map_err(|e: String| {
            self.fail(e.clone());
            storage_error(e)
        })
    }

    /// Takes the next command and, when it is one that groups, every such command queued
    /// behind it (up to `group_commit_commands_max`); keeps the first other one for later.
    fn next_group(
        &self,
        rx: &Receiver<Command>,
        next: &mut Option<Command>,
        groups: impl Fn(&Command) -> bool,
    ) -> Option<Vec<Command>> {
        let first = match next.take() {
            Some(c) => c,
            None => rx.recv().ok()?,
        };
        if !groups(&first) {
            return Some(vec![first]);
        }
        let mut group = vec![first];
        while group.len() < self.config.group_commit_commands_max {
            match rx.try_recv() {
                Ok(c) if groups(&c) => group.push(c),
                Ok(other) => {
                    *next = Some(other);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        Some(group)
    }

    /// The log thread: executes log commands in arrival order. Consecutive appends, of any
    /// shard, share one durable transaction: one commit and one fsync for all of them.
    fn run(self: Arc<Self>, rx: Receiver<Command>) {
        let mut last: BTreeMap<ShardId, LastEntry> = BTreeMap::new();
        let mut next: Option<Command> = None;
        let is_append = |c: &Command| matches!(c, Command::Append { .. });
        while let Some(group) = self.next_group(&rx, &mut next, is_append) {
            self.handle_log_group(group, &mut last);
        }
    }

    /// Executes one group of log commands: appends (any number, one commit) or one other.
    fn handle_log_group(&self, mut group: Vec<Command>, last: &mut BTreeMap<ShardId, LastEntry>) {
        {
            if matches!(group[0], Command::Append { .. }) {
                self.execute_appends(group, last);
                return;
            }
            match group.pop().expect("one command") {
                Command::SaveVote { shard, vote, done } => {
                    let bytes = serde_json::to_vec(&vote).expect("json");
                    let _ = done.send(self.write(&self.db, Durability::Immediate, |tx| {
                        let mut meta = tx
                            .open_table(shard.tables.log_meta())
                            .map_err(|e| e.to_string())?;
                        meta.insert("vote", bytes.as_slice())
                            .map_err(|e| e.to_string())?;
                        Ok(())
                    }));
                }
                Command::Truncate { shard, since, done } => {
                    let result = self.write(&self.db, Durability::Immediate, |tx| {
                        let mut log = tx
                            .open_table(shard.tables.log())
                            .map_err(|e| e.to_string())?;
                        log.retain_in(since.., |_, _| false)
                            .map_err(|e| e.to_string())?;
                        last_entry(&log)
                    });
                    shard
                        .pending
                        .lock()
                        .expect("pending lock")
                        .retain(|&k, _| k < since);
                    let _ = done.send(result.map(|new_last| {
                        last.insert(shard.shard, new_last);
                    }));
                }
                Command::Purge { shard, upto, done } => {
                    shard.purged.fetch_max(upto.index + 1, Ordering::AcqRel);
                    {
                        let mut id = shard.purged_id.lock().expect("purged lock");
                        if id.is_none_or(|id| id.index < upto.index) {
                            *id = Some(upto);
                        }
                    }
                    shard
                        .pending
                        .lock()
                        .expect("pending lock")
                        .retain(|&k, _| k > upto.index);
                    // Purging is logical: the records stay, because they are the events
                    // (stream reads decode them) until tiering moves them to object storage.
                    // The persisted purge point goes no further than the durable state: openraft
                    // purges right after it hands a snapshot to the state machine, before the
                    // install is durable, and a crash in between must not leave a log purged
                    // beyond the state it restarts from (found by the simulator: fsync
                    // failures during an install, then openraft refused to start).
                    let durable = shard.durable_applied.load(Ordering::Acquire);
                    let result = match durable.checked_sub(1) {
                        None => Ok(()),
                        Some(limit) => self.write(&self.db, Durability::Immediate, |tx| {
                            let t = &shard.tables;
                            let log = tx.open_table(t.log()).map_err(|e| e.to_string())?;
                            let mut meta =
                                tx.open_table(t.log_meta()).map_err(|e| e.to_string())?;
                            let upto = if upto.index <= limit {
                                Some(upto)
                            } else {
                                let at = format!("{}, log entry {limit}", self.location);
                                log.get(limit)
                                    .map_err(|e| e.to_string())?
                                    .map(|v| record::decode(v.value(), &at))
                                    .transpose()
                                    .map_err(|e| e.to_string())?
                                    .map(|r| r.entry.log_id)
                            };
                            let persisted: Option<LogId<NodeId>> = meta
                                .get("purged")
                                .map_err(|e| e.to_string())?
                                .map(|v| json(v.value()))
                                .transpose()?;
                            if let Some(upto) = upto
                                && persisted.is_none_or(|p| p.index < upto.index)
                            {
                                let purged = serde_json::to_vec(&upto).expect("json");
                                meta.insert("purged", purged.as_slice())
                                    .map_err(|e| e.to_string())?;
                            }
                            Ok(())
                        }),
                    };
                    let _ = done.send(result);
                }
                Command::DestroyLog { shard, done } => {
                    shard.pending.lock().expect("pending lock").clear();
                    let result = self.write(&self.db, Durability::Immediate, |tx| {
                        let t = &shard.tables;
                        tx.delete_table(t.log()).map_err(|e| e.to_string())?;
                        tx.delete_table(t.log_meta()).map_err(|e| e.to_string())?;
                        Ok(())
                    });
                    last.remove(&shard.shard);
                    let _ = done.send(result);
                }
                Command::Anchor { shard, image, done } => {
                    let result = self.write(&self.db, Durability::Immediate, |tx| {
                        snapshot::anchor_log(tx, &shard.tables, &image)?;
                        let log = tx
                            .open_table(shard.tables.log())
                            .map_err(|e| e.to_string())?;
                        last_entry(&log)
                    });
                    let _ = done.send(result.map(|new_last| {
                        last.insert(shard.shard, new_last);
                    }));
                }
                _ => unreachable!("state commands go to the state thread"),
            }
        }
    }

    /// The state thread: applies committed entries, grouping the applies queued together into
    /// one transaction without fsync. Every `state_durable_every` groups the applied state is
    /// made durable; after a crash openraft replays the committed log from there and reaches the
    /// same state, since applying is deterministic.
    fn run_state(self: Arc<Self>, rx: Receiver<Command>) {
        let mut next: Option<Command> = None;
        let mut progress = StateProgress::default();
        let is_apply = |c: &Command| matches!(c, Command::Apply { .. });
        while let Some(group) = self.next_group(&rx, &mut next, is_apply) {
            self.handle_state_group(group, &mut progress);
        }
    }

    /// Executes one group of state commands: applies (any number, one commit) or one other;
    /// makes the state durable every `state_durable_every` groups.
    fn handle_state_group(&self, mut group: Vec<Command>, progress: &mut StateProgress) {
        let is_apply = |c: &Command| matches!(c, Command::Apply { .. });
        {
            if is_apply(&group[0]) {
                self.execute_applies(group, progress);
                progress.groups += 1;
            } else {
                match group.pop().expect("one command") {
                    Command::DestroyState { shard, done } => {
                        let result = self.write(&self.state_db, Durability::Immediate, |tx| {
                            let t = &shard.tables;
                            tx.delete_table(t.sm_meta()).map_err(|e| e.to_string())?;
                            tx.delete_table(t.stream_events())
                                .map_err(|e| e.to_string())?;
                            tx.delete_table(t.dedup()).map_err(|e| e.to_string())?;
                            tx.delete_table(t.dedup_expiry())
                                .map_err(|e| e.to_string())?;
                            tx.delete_table(t.outcomes()).map_err(|e| e.to_string())?;
                            Ok(())
                        });
                        progress.unsynced.remove(&shard.shard);
                        if result.is_ok() {
                            progress.synced();
                            shard.durable_applied.store(0, Ordering::Release);
                        }
                        let _ = done.send(result);
                    }
                    Command::SyncState { done } => {
                        let result = self.write(&self.state_db, Durability::Immediate, |_| Ok(()));
                        if result.is_ok() {
                            progress.synced();
                        }
                        let _ = done.send(result);
                    }
                    Command::InstallSnapshot { shard, image, done } => {
                        let result = self.write(&self.state_db, Durability::Immediate, |tx| {
                            snapshot::install(tx, &shard.tables, &image)
                        });
                        if result.is_ok() {
                            progress.synced();
                            if let Some(applied) = image.applied {
                                shard
                                    .durable_applied
                                    .fetch_max(applied.index + 1, Ordering::AcqRel);
                            }
                            shard
                                .stats
                                .snapshots_installed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = done.send(result);
                    }
                    _ => unreachable!("log commands go to the log thread"),
                }
            }
            if progress.groups >= self.config.state_durable_every {
                // Make everything applied so far durable (an empty durable commit persists
                // every earlier one), bounding what a crash makes the log replay.
                if self
                    .write(&self.state_db, Durability::Immediate, |_| Ok(()))
                    .is_ok()
                {
                    progress.synced();
                }
            }
        }
    }

    /// Writes appends of any shards in one durable transaction, then answers each.
    fn execute_appends(&self, group: Vec<Command>, last: &mut BTreeMap<ShardId, LastEntry>) {
        // Per shard: the shard, its new last entry, entries and bytes written.
        let mut written: BTreeMap<ShardId, (Arc<Shared>, LastEntry, u64, u64)> = BTreeMap::new();
        let durability =
            if themis_storage::canary::active(themis_storage::canary::Canary::AckBeforeFsync) {
                // The canary: report appends durable without an fsync.
                Durability::None
            } else {
                Durability::Immediate
            };
        let result = self.write(&self.db, durability, |tx| {
            for command in &group {
                let Command::Append { shard, entries, .. } = command else {
                    unreachable!("only appends are grouped on the log thread")
                };
                let t = &shard.tables;
                let mut log = tx.open_table(t.log()).map_err(|e| e.to_string())?;
                let meta = tx.open_table(t.log_meta()).map_err(|e| e.to_string())?;
                let slot = written.entry(shard.shard).or_insert_with(|| {
                    (
                        shard.clone(),
                        last.get(&shard.shard).copied().flatten(),
                        0,
                        0,
                    )
                });
                for entry in entries {
                    let index = entry.log_id.index;
                    let prev = match slot.1 {
                        Some((i, chain)) if i + 1 == index => chain,
                        _ => prev_chain(&log, &meta, index)?,
                    };
                    let (frame, chain) = record::encode(entry, &prev);
                    log.insert(index, frame.as_slice())
                        .map_err(|e| e.to_string())?;
                    slot.1 = Some((index, chain));
                    slot.2 += 1;
                    slot.3 += frame.len() as u64;
                }
            }
            Ok(())
        });
        if result.is_ok() {
            for (id, (shard, new_last, count, bytes)) in written {
                last.insert(id, new_last);
                shard.stats.log_commits.fetch_add(1, Ordering::Relaxed);
                shard
                    .stats
                    .entries_written
                    .fetch_add(count, Ordering::Relaxed);
                shard
                    .stats
                    .bytes_written
                    .fetch_add(bytes, Ordering::Relaxed);
            }
        }
        for command in group {
            if let Command::Append {
                shard,
                entries,
                callback,
            } = command
            {
                // Written entries stay in memory until applied; unwritten ones must go.
                if result.is_err() {
                    let mut pending = shard.pending.lock().expect("pending lock");
                    for e in &entries {
                        pending.remove(&e.log_id.index);
                    }
                }
                let flushed = result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string()));
                callback.log_io_completed(flushed);
            }
        }
    }

    /// Applies entries of any shards in one transaction without fsync, then answers each.
    fn execute_applies(&self, group: Vec<Command>, progress: &mut StateProgress) {
        let window = self.config.dedup_window.as_millis() as u64;
        let mut outcomes: Vec<Vec<Vec<Outcome>>> = Vec::with_capacity(group.len());
        let result = self.write(&self.state_db, Durability::None, |tx| {
            // Each shard's tables are opened once for the whole group.
            let mut tables: BTreeMap<ShardId, state::Open<'_>> = BTreeMap::new();
            for command in &group {
                let Command::Apply { shard, entries, .. } = command else {
                    unreachable!("only applies are grouped on the state thread")
                };
                let open = match tables.entry(shard.shard) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(state::Open::new(tx, &shard.tables).map_err(|e| e.to_string())?)
                    }
                };
                let mut batch = Vec::with_capacity(entries.len());
                for entry in entries {
                    let outcome = state::apply(open, entry, window);
                    batch.push(outcome.map_err(|e| e.to_string())?);
                }
                outcomes.push(batch);
            }
            Ok(())
        });
        let mut outcomes = outcomes.into_iter();
        for command in group {
            if let Command::Apply {
                shard,
                entries,
                done,
            } = command
            {
                let answer = match &result {
                    Ok(()) => {
                        if let Some(last) = entries.last() {
                            let applied = last.log_id.index;
                            shard.mark_applied(applied);
                            let durable = shard.durable_applied.clone();
                            progress.unsynced.insert(shard.shard, (durable, applied));
                        }
                        let now = self.clock.wall_ms();
                        for entry in &entries {
                            if let openraft::EntryPayload::Normal(p) = &entry.payload {
                                let lag = Duration::from_millis(now.saturating_sub(p.ts_ms));
                                shard.stats.apply_lag.observe(lag);
                            }
                        }
                        Ok(outcomes.next().expect("one outcome list per apply"))
                    }
                    Err(e) => Err(storage_error(e)),
                };
                let _ = done.send(answer);
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for ShardStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        // Purged entries stay stored (they are the events) but are no longer Raft's log.
        let purged = self.shared.purged.load(Ordering::Acquire);
        let mut entries = self.entries(range).map_err(read_error)?;
        entries.retain(|e| e.log_id.index >= purged);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for ShardStore {
    type LogReader = ShardStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        // What openraft purged in this process; the persisted point may lag (`Command::Purge`).
        let purged = *self.shared.purged_id.lock().expect("purged lock");
        let tx = self.database().begin_read().map_err(read_error)?;
        let log = tx.open_table(self.tables().log()).map_err(read_error)?;
        let last_stored = match log.last().map_err(read_error)? {
            Some((k, v)) => {
                let at = format!("{}, log entry {}", self.location(), k.value());
                Some(
                    record::decode(v.value(), &at)
                        .map_err(read_error)?
                        .entry
                        .log_id,
                )
            }
            None => None,
        };
        let last_pending = self
            .shared
            .pending
            .lock()
            .expect("pending lock")
            .last_key_value()
            .map(|(_, e)| e.log_id);
        let last = [purged, last_stored, last_pending]
            .into_iter()
            .flatten()
            .max_by_key(|id| id.index);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.request(|shard, done| Command::SaveVote { shard, vote, done })
            .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta("vote")
    }

    // The committed index is kept in memory only (openraft's default): persisting it would add
    // a table write to every commit, and after a restart the leader's first commit re-commits
    // everything before it anyway.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        if let Some(id) = committed {
            self.shared
                .stats
                .committed
                .fetch_max(id.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut pending = self.shared.pending.lock().expect("pending lock");
            for e in &entries {
                pending.insert(e.log_id.index, e.clone());
            }
        }
        self.send(Command::Append {
            shard: self.shared.clone(),
            entries,
            callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.request(|shard, done| Command::Truncate {
            shard,
            since: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.request(|shard, done| Command::Purge {
            shard,
            upto: log_id,
            done,
        })
        .await
    }
}

impl ShardStateMachine {
    /// The log store over the same tables.
    pub fn log_store(&self) -> ShardStore {
        ShardStore {
            shared: self.shared.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, applied, membership) = snapshot::build(
            &self.shared.node.state_db,
            &self.shared.node.db,
            &self.shared.tables,
        )
        .map_err(read_error)?;
        // openraft purges the log up to the snapshot it is given, so the state the snapshot
        // shows must survive a crash first: otherwise the state machine could restart behind
        // the purged prefix (found by the simulator: power loss right after a purge). The sync
        // comes after the build: applies continue meanwhile, and everything the build saw was
        // committed before the sync, which makes it durable.
        self.log_store()
            .request(|_, done| Command::SyncState { done })
            .await?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied {
            Some(id) => format!(
                "{}-{}-{}-{seq}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("empty-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        *self.shared.snapshot.lock().expect("snapshot lock") = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ShardStateMachine {
    type SnapshotBuilder = ShardStateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let tx = self.shared.node.state_db.begin_read().map_err(read_error)?;
        let meta = tx
            .open_table(self.shared.tables.sm_meta())
            .map_err(read_error)?;
        let applied = meta
            .get("applied")
            .map_err(read_error)?
            .map(|v| json(v.value()))
            .transpose();
        let membership = meta
            .get("membership")
            .map_err(read_error)?
            .map(|v| json(v.value()))
            .transpose();
        Ok((
            applied.map_err(read_error)?,
            membership.map_err(read_error)?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Outcome>>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.log_store()
            .request(|shard, done| Command::Apply {
                shard,
                entries,
                done,
            })
            .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<std::io::Cursor<Vec<u8>>>> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let image = Arc::new(snapshot::decode(&data).map_err(storage_error)?);
        let store = self.log_store();
        // The log first, then the state machine (see `snapshot`): the applied LSN moves only
        // once both hold the image, so readers of the applied log (views) never meet a missing
        // record below it.
        let for_log = image.clone();
        store
            .request(|shard, done| Command::Anchor {
                shard,
                image: for_log,
                done,
            })
            .await?;
        let for_state = image.clone();
        store
            .request(|shard, done| Command::InstallSnapshot {
                shard,
                image: for_state,
                done,
            })
            .await?;
        if let Some(applied) = image.applied {
            self.shared.mark_applied(applied.index);
        }
        *self.shared.snapshot.lock().expect("snapshot lock") = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self.shared.snapshot.lock().expect("snapshot lock").clone();
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests;
