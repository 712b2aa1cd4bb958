//! One shard's durable store: its Raft log, vote and state machine in one redb database, written
//! by one storage thread per shard.
//!
//! Invariants:
//! - An append is reported durable to openraft only after the redb commit holding it returned
//!   with `Durability::Immediate` (fsync). Appends that arrive while a commit is in flight are
//!   group-committed by the next one.
//! - After a failed commit the store refuses every later write until it is reopened: a failed
//!   fsync is never retried.
//! - State-machine changes commit without fsync; they become durable with the next log commit,
//!   and after a crash openraft re-applies the committed log from the last durable apply.
//! - At open, every record's checksum and the hash chain are verified; a corrupted byte is
//!   reported with the file and index and never served.

// openraft's storage traits return its `StorageError`, a large type; the helpers here share it.
#![allow(clippy::result_large_err)]

mod record;
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
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, watch};

pub use record::{Chain, GENESIS};
use state::{LOG, LOG_META, SM_META};

use crate::entry::Outcome;
use crate::ids::ShardId;
use crate::raft::{Entry, TypeConfig};
use crate::seam::spawn_thread;
use crate::{Error, Result};

type NodeId = u64;
type StorageResult<T> = std::result::Result<T, StorageError<NodeId>>;
/// The last snapshot built or installed: its metadata and image.
type CurrentSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// Tunables of a shard store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long an event id stays in the idempotency table, measured in commit timestamps.
    /// Every replica of a shard must use the same value.
    pub dedup_window: Duration,
    /// Most appends one group commit gathers.
    pub group_commit_appends_max: usize,
    /// Most commands waiting for the storage thread before callers wait for room.
    pub queue_depth_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(24 * 3600),
            group_commit_appends_max: 1024,
            queue_depth_max: 4096,
        }
    }
}

/// Counters of a shard store, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Durable log commits (each one fsync).
    pub log_commits: AtomicU64,
    /// Entries written to the log.
    pub entries_written: AtomicU64,
    /// Bytes of records written to the log.
    pub bytes_written: AtomicU64,
    /// Highest log index openraft reported committed.
    pub committed: AtomicU64,
}

enum Command {
    Append {
        entries: Vec<Entry>,
        callback: LogFlushed<TypeConfig>,
    },
    SaveVote {
        vote: Vote<NodeId>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    SaveCommitted {
        committed: Option<LogId<NodeId>>,
    },
    Truncate {
        since: u64,
        done: oneshot::Sender<StorageResult<()>>,
    },
    Purge {
        upto: LogId<NodeId>,
        done: oneshot::Sender<StorageResult<()>>,
    },
    Apply {
        entries: Vec<Entry>,
        done: oneshot::Sender<StorageResult<Vec<Vec<Outcome>>>>,
    },
    InstallSnapshot {
        data: Vec<u8>,
        done: oneshot::Sender<StorageResult<()>>,
    },
}

#[derive(Debug)]
struct Shared {
    shard: ShardId,
    db: Database,
    location: String,
    config: StoreConfig,
    commands: SyncSender<Command>,
    /// Entries handed to the storage thread and not yet committed, readable meanwhile.
    pending: Mutex<BTreeMap<u64, Entry>>,
    /// Set after a failed commit; later writes are refused.
    failure: Mutex<Option<String>>,
    applied: watch::Sender<u64>,
    snapshot: Mutex<Option<CurrentSnapshot>>,
    snapshot_seq: AtomicU64,
    stats: StoreStats,
}

/// A shard's log store (openraft `RaftLogStorage`). Clones share the store.
#[derive(Debug, Clone)]
pub struct ShardStore {
    shared: Arc<Shared>,
}

/// A shard's state machine (openraft `RaftStateMachine`), over the same database.
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

impl ShardStore {
    /// Opens shard `shard`'s database `db` (described as `location` in errors), verifies its
    /// log, and starts its storage thread.
    pub fn open(
        shard: ShardId,
        db: Database,
        location: String,
        config: StoreConfig,
    ) -> Result<(ShardStore, ShardStateMachine)> {
        let storage = |e: redb::Error| Error::Storage(format!("{location}: {e}"));
        {
            let tx = db.begin_write().map_err(|e| storage(e.into()))?;
            for table in [LOG_META, SM_META] {
                tx.open_table(table).map_err(|e| storage(e.into()))?;
            }
            tx.open_table(LOG).map_err(|e| storage(e.into()))?;
            snapshot::create_tables(&tx).map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))?;
        }
        let last = verify_log(&db, &location)?;
        let applied = read_applied(&db).map_err(|e| Error::Storage(format!("{location}: {e}")))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_depth_max);
        let shared = Arc::new(Shared {
            shard,
            db,
            location,
            config,
            commands: tx,
            pending: Mutex::new(BTreeMap::new()),
            failure: Mutex::new(None),
            applied: watch::channel(applied.map_or(0, |id| id.index)).0,
            snapshot: Mutex::new(None),
            snapshot_seq: AtomicU64::new(0),
            stats: StoreStats::default(),
        });
        let worker = shared.clone();
        spawn_thread(format!("themis-store-{}", shard.0), move || {
            worker.run(rx, last)
        })
        .map_err(|e| Error::Storage(format!("cannot start the storage thread: {e}")))?;
        Ok((
            ShardStore {
                shared: shared.clone(),
            },
            ShardStateMachine { shared },
        ))
    }

    /// The shard's database, for reads.
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// Where the database lives (file path), for messages.
    pub fn location(&self) -> &str {
        &self.shared.location
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
        self.shared.failure.lock().expect("failure lock").clone()
    }

    /// Reads and verifies the records of `range`, committed or pending.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        let location = &self.shared.location;
        let tx = self
            .shared
            .db
            .begin_read()
            .map_err(|e| Error::Storage(e.to_string()))?;
        let table = tx
            .open_table(LOG)
            .map_err(|e| Error::Storage(e.to_string()))?;
        let mut out = BTreeMap::new();
        for item in table
            .range(range_of(&range))
            .map_err(|e| Error::Storage(e.to_string()))?
        {
            let (k, v) = item.map_err(|e| Error::Storage(e.to_string()))?;
            let at = format!("{location}, log entry {}", k.value());
            let decoded = record::decode(v.value(), &at).map_err(|e| Error::Corrupted {
                location: at.clone(),
                detail: e.to_string(),
            })?;
            out.insert(k.value(), decoded.entry);
        }
        let pending = self.shared.pending.lock().expect("pending lock");
        for (k, e) in pending.range(range_of(&range)) {
            out.entry(*k).or_insert_with(|| e.clone());
        }
        Ok(out.into_values().collect())
    }

    /// The chain hash of the log up to and including `index`, if that entry is stored.
    pub fn chain_at(&self, index: u64) -> Result<Option<Chain>> {
        let tx = self
            .shared
            .db
            .begin_read()
            .map_err(|e| Error::Storage(e.to_string()))?;
        let table = tx
            .open_table(LOG)
            .map_err(|e| Error::Storage(e.to_string()))?;
        let value = table
            .get(index)
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(value.map(|v| record::chain_of_frame(v.value())))
    }

    fn send(&self, command: Command) -> StorageResult<()> {
        if let Some(reason) = self.failure() {
            return Err(storage_error(format!(
                "{}: store stopped after an error: {reason}",
                self.location()
            )));
        }
        self.shared
            .commands
            .send(command)
            .map_err(|_| storage_error("storage thread stopped"))
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StorageResult<T>>) -> Command,
    ) -> StorageResult<T> {
        let (done, wait) = oneshot::channel();
        self.send(make(done))?;
        wait.await
            .map_err(|_| storage_error("storage thread stopped"))?
    }
}

fn range_of(range: &impl RangeBounds<u64>) -> (std::ops::Bound<u64>, std::ops::Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn read_applied(db: &Database) -> std::result::Result<Option<LogId<NodeId>>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let meta = tx.open_table(SM_META).map_err(|e| e.to_string())?;
    let value = meta.get("applied").map_err(|e| e.to_string())?;
    value.map(|v| json(v.value())).transpose()
}

/// The chain an entry at `index` extends: its predecessor's, the purge anchor's, or genesis.
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
    anchor(meta, index)
}

fn anchor(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    index: u64,
) -> std::result::Result<Chain, String> {
    if let Some(v) = meta.get("anchor").map_err(|e| e.to_string())? {
        let (at, chain): (u64, Chain) = json(v.value())?;
        if index.checked_sub(1) == Some(at) {
            return Ok(chain);
        }
    }
    Ok(GENESIS)
}

/// Verifies every record's checksum and the hash chain; returns the last entry and its chain.
fn verify_log(db: &Database, location: &str) -> Result<Option<(u64, Chain)>> {
    let storage = |e: String| Error::Storage(format!("{location}: {e}"));
    let tx = db.begin_read().map_err(|e| storage(e.to_string()))?;
    let log = tx.open_table(LOG).map_err(|e| storage(e.to_string()))?;
    let meta = tx
        .open_table(LOG_META)
        .map_err(|e| storage(e.to_string()))?;
    let mut last: Option<(u64, Chain)> = None;
    for item in log.iter().map_err(|e| storage(e.to_string()))? {
        let (k, v) = item.map_err(|e| storage(e.to_string()))?;
        let index = k.value();
        let at = format!("{location}, log entry {index}");
        let decoded = record::decode(v.value(), &at).map_err(|e| Error::Corrupted {
            location: location.to_owned(),
            detail: e.to_string(),
        })?;
        if decoded.entry.log_id.index != index {
            return Err(Error::Corrupted {
                location: location.to_owned(),
                detail: format!("{at}: record holds index {}", decoded.entry.log_id.index),
            });
        }
        let expected = match last {
            Some((i, chain)) if i + 1 == index => chain,
            _ => anchor(&meta, index).map_err(storage)?,
        };
        if decoded.prev != expected {
            return Err(Error::Corrupted {
                location: location.to_owned(),
                detail: format!(
                    "{at}: hash chain broken (the entry does not extend its predecessor)"
                ),
            });
        }
        last = Some((index, decoded.chain));
    }
    Ok(last)
}

impl Shared {
    fn fail(&self, reason: String) {
        tracing::error!(shard = self.shard.0, location = %self.location, %reason, "store stopped");
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

    /// The storage thread: executes commands in arrival order. Consecutive appends, applies and
    /// committed-index updates share one redb transaction, so concurrent work costs one commit
    /// (and one fsync when it holds an append).
    fn run(self: Arc<Self>, rx: Receiver<Command>, mut last: Option<(u64, Chain)>) {
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(c) => c,
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match command {
                c @ (Command::Append { .. }
                | Command::Apply { .. }
                | Command::SaveCommitted { .. }) => {
                    let mut group = vec![c];
                    while group.len() < self.config.group_commit_appends_max {
                        match rx.try_recv() {
                            Ok(
                                c @ (Command::Append { .. }
                                | Command::Apply { .. }
                                | Command::SaveCommitted { .. }),
                            ) => group.push(c),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.execute_group(group, &mut last);
                }
                Command::SaveVote { vote, done } => {
                    let r = self.write_meta("vote", &vote, Durability::Immediate);
                    let _ = done.send(r);
                }
                Command::Truncate { since, done } => {
                    let _ = done.send(self.truncate(since, &mut last));
                }
                Command::Purge { upto, done } => {
                    let _ = done.send(self.purge(upto));
                }
                Command::InstallSnapshot { data, done } => {
                    let r = self.install_snapshot(&data, &mut last);
                    let _ = done.send(r);
                }
            }
        }
    }

    /// Runs appends, applies and committed-index updates in one transaction, in order, then
    /// answers each. The transaction is durable (fsynced) when it holds an append.
    fn execute_group(&self, group: Vec<Command>, last: &mut Option<(u64, Chain)>) {
        let durable = group.iter().any(|c| matches!(c, Command::Append { .. }));
        let window = self.config.dedup_window.as_millis() as u64;
        let mut new_last = *last;
        let mut outcomes: Vec<Vec<Vec<Outcome>>> = Vec::new();
        let (mut bytes, mut count) = (0u64, 0u64);
        let result = match self.failed() {
            Some(e) => Err(e.to_string()),
            None => (|| -> std::result::Result<(), String> {
                let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
                if !durable {
                    tx.set_durability(Durability::None)
                        .map_err(|e| e.to_string())?;
                }
                for command in &group {
                    match command {
                        Command::Append { entries, .. } => {
                            let mut log = tx.open_table(LOG).map_err(|e| e.to_string())?;
                            let meta = tx.open_table(LOG_META).map_err(|e| e.to_string())?;
                            for entry in entries {
                                let index = entry.log_id.index;
                                let prev = match new_last {
                                    Some((i, chain)) if i + 1 == index => chain,
                                    _ => prev_chain(&log, &meta, index)?,
                                };
                                let (frame, chain) = record::encode(entry, &prev);
                                log.insert(index, frame.as_slice())
                                    .map_err(|e| e.to_string())?;
                                bytes += frame.len() as u64;
                                count += 1;
                                new_last = Some((index, chain));
                            }
                        }
                        Command::Apply { entries, .. } => {
                            let mut batch = Vec::with_capacity(entries.len());
                            for entry in entries {
                                batch.push(
                                    state::apply(&tx, entry, window).map_err(|e| e.to_string())?,
                                );
                            }
                            outcomes.push(batch);
                        }
                        Command::SaveCommitted { committed } => {
                            let bytes = serde_json::to_vec(committed).expect("json");
                            tx.open_table(LOG_META)
                                .map_err(|e| e.to_string())?
                                .insert("committed", bytes.as_slice())
                                .map_err(|e| e.to_string())?;
                        }
                        _ => {
                            unreachable!("only appends, applies and committed updates are grouped")
                        }
                    }
                }
                tx.commit().map_err(|e| format!("commit failed: {e}"))
            })(),
        };
        if let Err(e) = &result {
            self.fail(e.clone());
        } else {
            *last = new_last;
            if durable {
                self.stats.log_commits.fetch_add(1, Ordering::Relaxed);
            }
            self.stats
                .entries_written
                .fetch_add(count, Ordering::Relaxed);
            self.stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        }
        let mut outcomes = outcomes.into_iter();
        for command in group {
            match command {
                Command::Append { entries, callback } => {
                    let mut pending = self.pending.lock().expect("pending lock");
                    for e in &entries {
                        pending.remove(&e.log_id.index);
                    }
                    drop(pending);
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Command::Apply { entries, done } => {
                    let answer = match &result {
                        Ok(()) => {
                            if let Some(last) = entries.last() {
                                self.applied.send_replace(last.log_id.index);
                            }
                            Ok(outcomes.next().expect("one outcome list per apply"))
                        }
                        Err(e) => Err(storage_error(e)),
                    };
                    let _ = done.send(answer);
                }
                _ => {}
            }
        }
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> StorageResult<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let result = (|| -> std::result::Result<(), String> {
            let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
            tx.set_durability(durability).map_err(|e| e.to_string())?;
            let bytes = serde_json::to_vec(value).expect("json");
            tx.open_table(LOG_META)
                .map_err(|e| e.to_string())?
                .insert(key, bytes.as_slice())
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| format!("commit failed: {e}"))
        })();
        result.map_err(|e| {
            self.fail(e.clone());
            storage_error(e)
        })
    }

    fn truncate(&self, since: u64, last: &mut Option<(u64, Chain)>) -> StorageResult<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let result = (|| -> std::result::Result<Option<(u64, Chain)>, String> {
            let tx = self.db.begin_write().map_err(|e| e.to_string())?;
            let new_last;
            {
                let mut log = tx.open_table(LOG).map_err(|e| e.to_string())?;
                log.retain_in(since.., |_, _| false)
                    .map_err(|e| e.to_string())?;
                new_last = log
                    .last()
                    .map_err(|e| e.to_string())?
                    .map(|(k, v)| (k.value(), record::chain_of_frame(v.value())));
            }
            tx.commit().map_err(|e| format!("commit failed: {e}"))?;
            Ok(new_last)
        })();
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|&k, _| k < since);
        match result {
            Ok(new_last) => {
                *last = new_last;
                Ok(())
            }
            Err(e) => {
                self.fail(e.clone());
                Err(storage_error(e))
            }
        }
    }

    fn purge(&self, upto: LogId<NodeId>) -> StorageResult<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let result = (|| -> std::result::Result<(), String> {
            let tx = self.db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut log = tx.open_table(LOG).map_err(|e| e.to_string())?;
                let mut meta = tx.open_table(LOG_META).map_err(|e| e.to_string())?;
                let chain = log
                    .get(upto.index)
                    .map_err(|e| e.to_string())?
                    .map(|v| record::chain_of_frame(v.value()));
                if let Some(chain) = chain {
                    let anchor = serde_json::to_vec(&(upto.index, chain)).expect("json");
                    meta.insert("anchor", anchor.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                let purged = serde_json::to_vec(&upto).expect("json");
                meta.insert("purged", purged.as_slice())
                    .map_err(|e| e.to_string())?;
                log.retain_in(..=upto.index, |_, _| false)
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| format!("commit failed: {e}"))
        })();
        result.map_err(|e| {
            self.fail(e.clone());
            storage_error(e)
        })
    }

    fn install_snapshot(&self, data: &[u8], last: &mut Option<(u64, Chain)>) -> StorageResult<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let result = (|| -> std::result::Result<u64, String> {
            let tx = self.db.begin_write().map_err(|e| e.to_string())?;
            let applied = snapshot::install(&tx, data)?;
            {
                let log = tx.open_table(LOG).map_err(|e| e.to_string())?;
                *last = log
                    .last()
                    .map_err(|e| e.to_string())?
                    .map(|(k, v)| (k.value(), record::chain_of_frame(v.value())));
            }
            tx.commit().map_err(|e| format!("commit failed: {e}"))?;
            Ok(applied)
        })();
        match result {
            Ok(applied) => {
                self.applied.send_replace(applied);
                Ok(())
            }
            Err(e) => {
                self.fail(e.clone());
                Err(storage_error(e))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for ShardStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        self.entries(range).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for ShardStore {
    type LogReader = ShardStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let tx = self.shared.db.begin_read().map_err(read_error)?;
        let meta = tx.open_table(LOG_META).map_err(read_error)?;
        let purged: Option<LogId<NodeId>> = meta
            .get("purged")
            .map_err(read_error)?
            .map(|v| json(v.value()))
            .transpose()
            .map_err(read_error)?;
        let log = tx.open_table(LOG).map_err(read_error)?;
        let last_stored = match log.last().map_err(read_error)? {
            Some((k, v)) => {
                let at = format!("{}, log entry {}", self.shared.location, k.value());
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
        self.request(|done| Command::SaveVote { vote, done }).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        if let Some(id) = committed {
            self.shared
                .stats
                .committed
                .fetch_max(id.index, Ordering::Relaxed);
        }
        self.send(Command::SaveCommitted { committed })
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>("committed")?
            .flatten())
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
        self.send(Command::Append { entries, callback })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.request(|done| Command::Truncate {
            since: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.request(|done| Command::Purge { upto: log_id, done })
            .await
    }
}

impl ShardStore {
    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let tx = self.shared.db.begin_read().map_err(read_error)?;
        let meta = tx.open_table(LOG_META).map_err(read_error)?;
        let value = meta.get(key).map_err(read_error)?;
        value
            .map(|v| json(v.value()))
            .transpose()
            .map_err(read_error)
    }

    fn state_machine(&self) -> ShardStateMachine {
        ShardStateMachine {
            shared: self.shared.clone(),
        }
    }
}

impl ShardStateMachine {
    fn store(&self) -> ShardStore {
        ShardStore {
            shared: self.shared.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ShardStateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, applied, membership) = snapshot::build(&self.shared.db).map_err(read_error)?;
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
        let tx = self.shared.db.begin_read().map_err(read_error)?;
        let meta = tx.open_table(SM_META).map_err(read_error)?;
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
        self.store()
            .request(|done| Command::Apply { entries, done })
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
        let to_install = data.clone();
        self.store()
            .request(|done| Command::InstallSnapshot {
                data: to_install,
                done,
            })
            .await?;
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

impl ShardStateMachine {
    /// The log store over the same database.
    pub fn log_store(&self) -> ShardStore {
        self.store()
    }
}

impl ShardStore {
    /// The state machine over the same database.
    pub fn sm(&self) -> ShardStateMachine {
        self.state_machine()
    }
}

#[cfg(test)]
mod tests;
