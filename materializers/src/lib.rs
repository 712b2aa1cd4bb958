//! Views derived from the committed log. For every shard this node holds a replica of and every
//! view kind, a worker tails the shard's applied log and applies its entries in order
//! ([`View::apply`]), persisting the view's state together with its watermark (the LSN it has
//! applied) in one transaction of the node's `views` database. After a restart a worker resumes
//! from its watermark; `rebuild` drops a view and replays the log.
//!
//! Invariants:
//! - a view is a pure function of the log prefix it has applied: `apply` reads nothing but the
//!   view's own state and the entry (timestamps come from the entry, never from a clock), so
//!   every replica and every rebuild reaches the same state, and the same [`digest`];
//! - state and watermark are committed together, so a crash loses both or neither (view commits
//!   are made durable every `durable_every`; the log replays what a crash lost);
//! - a reader that asks for a token waits until the watermark covers it, or gets a timeout.
//!
//! [`digest`]: Materializer::digest

pub mod document;
pub mod filter;
pub mod fulltext;
pub mod graph;
pub mod namespaces;
pub mod rejections;
pub mod runs;
pub mod timeseries;
pub mod vector;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde_json::Value;
use themis_log::seam::Clock;
use themis_log::{CommittedEntry, Log, Lsn, Position, ShardId, Token};
use tokio::sync::watch;

/// Errors of the views.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The views database failed (the view stops until the node restarts).
    #[error("view storage: {0}")]
    Storage(String),
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] themis_log::Error),
    /// A view did not reach the requested position in time.
    #[error(
        "the {kind} view of shard {shard} did not reach LSN {wanted} within {timeout:?} (it is at {at})"
    )]
    Timeout {
        /// View kind.
        kind: &'static str,
        /// Shard.
        shard: u32,
        /// LSN asked for.
        wanted: u64,
        /// Its watermark when the wait ended.
        at: u64,
        /// How long the reader waited.
        timeout: Duration,
    },
    /// No such view kind.
    #[error(
        "no view kind {0:?} (known: document, relational, namespaces, vector, timeseries, graph)"
    )]
    UnknownView(String),
    /// A namespace name that no URN can carry.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// This node holds no replica of the shard, so it has none of its views.
    #[error("this node holds no replica of shard {0}")]
    NotHosted(u32),
    /// A search names a namespace without a config.
    #[error("{0}")]
    UnknownNamespace(String),
    /// A search that cannot run as asked (wrong dimension, bad k, ...).
    #[error("{0}")]
    InvalidSearch(String),
    /// The view's worker stopped (its storage failed): its state stays where it was until the
    /// view is rebuilt or the node restarts.
    #[error(
        "the {kind} view of shard {shard} stopped: {reason} (restart the node, or rebuild the view)"
    )]
    Stopped {
        /// View kind.
        kind: &'static str,
        /// Shard.
        shard: u32,
        /// Why it stopped.
        reason: String,
    },
}

impl Error {
    /// The stable problem+json code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Storage(_) => "view_storage",
            Error::Log(e) => e.code(),
            Error::Timeout { .. } => "timeout",
            Error::UnknownView(_) => "unknown_view",
            Error::InvalidNamespace(_) => "invalid_namespace",
            Error::NotHosted(_) => "not_hosted",
            Error::UnknownNamespace(_) => "unknown_namespace",
            Error::InvalidSearch(_) => "invalid_search",
            Error::Stopped { .. } => "view_stopped",
        }
    }
}

/// Result alias of the views.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn storage<E: std::fmt::Display>(e: E) -> Error {
    Error::Storage(e.to_string())
}

/// Free space in the views database below which it is never compacted (it is compacted only
/// when its free space also exceeds what it holds). redb grows a file by doubling it and
/// merges of runs free many pages, so a file is often twice what it holds: at 1M rows of the
/// SQL benchmark, 38 MB holding 18 (compacting it takes a fraction of a second).
const COMPACT_FREE_BYTES_MIN: u64 = 4 << 20;

/// Compacts the views database on `disk` when more of its file is free space than data (redb
/// reuses freed pages but never shrinks the file while it is open, and merges of columnar runs
/// free a lot of them). redb compacts only a database with no transaction in it: a server calls
/// this before it opens the log and the views, off the async workers (it may take seconds on
/// a large file). The views' contents are unchanged, so nothing above notices.
pub fn compact_views(disk: &dyn themis_storage::Disk) -> Result<()> {
    let mut db = disk.open_database("views").map_err(storage)?;
    compact_if_wasteful(&mut db, &disk.describe("views"))
}

/// Whether a file holding `held` bytes with `free` bytes free is worth compacting.
fn wasteful(held: u64, free: u64) -> bool {
    free >= COMPACT_FREE_BYTES_MIN && free >= held
}

fn compact_if_wasteful(db: &mut Database, location: &str) -> Result<()> {
    let stats = {
        let tx = db.begin_write().map_err(storage)?;
        let stats = tx.stats().map_err(storage)?;
        tx.abort().map_err(storage)?;
        stats
    };
    let held = stats.stored_bytes() + stats.metadata_bytes();
    let free = stats.fragmented_bytes();
    if !wasteful(held, free) {
        return Ok(());
    }
    tracing::info!(
        "views: compacting {location}: {} MiB held, {} MiB free",
        held >> 20,
        free >> 20
    );
    db.compact()
        .map_err(|e| Error::Storage(format!("compacting {location}: {e}")))?;
    tracing::info!("views: compacted {location}");
    Ok(())
}

/// One kind of view: how an entry changes its state, per shard, in the views database.
pub trait View: Debug + Send + Sync + 'static {
    /// Its name (`document`, ...).
    fn kind(&self) -> &'static str;
    /// Applies one committed entry of `shard` to the view's state, deterministically.
    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()>;
    /// Removes every trace of `shard` from the view.
    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()>;
    /// A digest of the view's state of `shard` (equal states, equal digests).
    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64>;
    /// Loads what the view keeps outside the database (indexes) for `shard` from its state
    /// in `tx`, when the shard's worker starts.
    fn open(&self, _tx: &ReadTransaction, _shard: ShardId) -> Result<()> {
        Ok(())
    }
    /// Called by `shard`'s worker after each commit of a batch ending at `lsn` (`durable`:
    /// made durable), with the node's monotonic clock in ms, before the watermark moves.
    fn committed(&self, _db: &Database, _shard: ShardId, _lsn: u64, _durable: bool, _now_ms: u64) {}
    /// At shutdown, after the last durable commit and with the workers stopped: write out
    /// what should survive a restart.
    fn checkpoint(&self, _shard: ShardId, _now_ms: u64) {}
    /// Whether `apply` reads namespace configs: then each batch waits until the registry has
    /// applied everything the log had applied when the batch began, and applies no entry of
    /// its own shard past that (after a rebuild of the registry, or while a replica catches
    /// up, entries are not applied under missing configs of their own shard). Configs in
    /// other shards may still arrive after the entries that use them (there is no order
    /// between shards): a view that reads them must catch up when they do.
    fn reads_configs(&self) -> bool {
        false
    }
}

/// A view's table: string keys, JSON values.
pub(crate) fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Opens a view's table for reading; `None` when nothing ever created it (an empty view).
pub(crate) fn read_table(
    tx: &ReadTransaction,
    name: &str,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>> {
    match tx.open_table(table(name)) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// The JSON value at `key` of a view's table.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    name: &str,
    key: &str,
) -> Result<Option<T>> {
    let Some(t) = read_table(tx, name)? else {
        return Ok(None);
    };
    t.get(key)
        .map_err(storage)?
        .map(|v| serde_json::from_slice(v.value()))
        .transpose()
        .map_err(storage)
}

/// Every (key, JSON value) of a view's table, in key order.
pub(crate) fn all_json<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    name: &str,
) -> Result<Vec<(String, T)>> {
    let Some(t) = read_table(tx, name)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in t.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        out.push((
            k.value().to_owned(),
            serde_json::from_slice(v.value()).map_err(storage)?,
        ));
    }
    Ok(out)
}

/// xxh3 over a view's table, keys and values in key order (no table digests like an empty
/// one).
pub(crate) fn digest_table(tx: &ReadTransaction, name: &str) -> Result<u64> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if let Some(t) = read_table(tx, name)? {
        for item in t.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            hasher.update(k.value().as_bytes());
            hasher.update(&[0]);
            hasher.update(v.value());
            hasher.update(&[0]);
        }
    }
    Ok(hasher.digest())
}

/// Deletes a view's tables (a view's `clear`).
pub(crate) fn clear_tables(tx: &WriteTransaction, names: &[String]) -> Result<()> {
    for name in names {
        tx.delete_table(table(name)).map_err(storage)?;
    }
    Ok(())
}

/// One digest over several tables of a view (a view's `digest`).
pub(crate) fn digest_tables(tx: &ReadTransaction, names: &[String]) -> Result<u64> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for name in names {
        hasher.update(&digest_table(tx, name)?.to_le_bytes());
    }
    Ok(hasher.digest())
}

/// Watermarks: key `"{kind}/{shard}"`, value the LSN (8 bytes LE) and the commit timestamp of
/// that entry (8 bytes LE).
const WATERMARKS: TableDefinition<&str, &[u8]> = TableDefinition::new("view_watermarks");

fn watermark_key(kind: &str, shard: ShardId) -> String {
    format!("{kind}/{}", shard.0)
}

fn read_watermark(tx: &ReadTransaction, kind: &str, shard: ShardId) -> Result<(u64, u64)> {
    let table = match tx.open_table(WATERMARKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, 0)),
        Err(e) => return Err(storage(e)),
    };
    let value = table
        .get(watermark_key(kind, shard).as_str())
        .map_err(storage)?;
    Ok(value.map_or((0, 0), |v| decode_watermark(v.value())))
}

fn decode_watermark(bytes: &[u8]) -> (u64, u64) {
    let word = |i: usize| {
        bytes
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    (word(0), word(8))
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct MaterializerConfig {
    /// Entries one view transaction applies at most.
    pub batch_entries: usize,
    /// How often view commits are made durable (between, they are not fsynced).
    pub durable_every: Duration,
    /// How often the set of hosted shards is checked (replicas move in a cluster).
    pub reconcile_every: Duration,
    /// Where views keep files besides the database (vector index dumps); `None`: in memory
    /// only (they are rebuilt from the views database at start).
    pub index_dir: Option<std::path::PathBuf>,
    /// Resources a namespace's tail in a state view holds before they move into a columnar
    /// run (and rows per block): [`document::FLUSH_ROWS_DEFAULT`]. Every replica of a shard
    /// must use the same value for their views to hold the same bytes (digests compare them).
    pub state_flush_rows: usize,
}

impl Default for MaterializerConfig {
    fn default() -> Self {
        Self {
            batch_entries: 512,
            durable_every: Duration::from_secs(1),
            reconcile_every: Duration::from_millis(500),
            index_dir: None,
            state_flush_rows: document::FLUSH_ROWS_DEFAULT,
        }
    }
}

/// Largest `k` of a kNN search.
pub const KNN_K_MAX: usize = 10_000;

/// A kNN search ([`Materializer::knn`]).
#[derive(Debug, Clone, Copy)]
pub struct KnnSearch<'a> {
    /// The vector namespace.
    pub namespace: &'a str,
    /// The query vector.
    pub vector: &'a [f32],
    /// How many hits.
    pub k: usize,
    /// Candidates to consider (the namespace's `ef_search` when `None`).
    pub ef: Option<usize>,
    /// Payload filter.
    pub filter: Option<&'a filter::Filter>,
}

/// A fulltext search ([`Materializer::search`]).
#[derive(Debug, Clone, Copy)]
pub struct TextSearch<'a> {
    /// Document or relational.
    pub model: themis_log::Model,
    /// The namespace.
    pub namespace: &'a str,
    /// The query (tantivy's syntax, see [`fulltext`]).
    pub query: &'a str,
    /// How many hits.
    pub k: usize,
}

/// One (shard, view) worker's shared state.
#[derive(Debug)]
struct Worker {
    watermark: watch::Sender<u64>,
    /// Commit timestamp of the watermark's entry (ms).
    watermark_ts: AtomicU64,
    /// Entries applied by this incarnation.
    entries_applied: AtomicU64,
    /// Set before the view is cleared: a transaction that begins later must not commit (the
    /// worker may be running on another thread while it is being stopped).
    stopped: std::sync::atomic::AtomicBool,
    /// Why the worker ended with an error (`None` while it runs): reads of the view fail at
    /// once instead of waiting for a watermark that will not move.
    failure: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Where one view of one shard stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ViewStatus {
    /// View kind.
    pub view: &'static str,
    /// Shard.
    pub shard: u32,
    /// LSN applied.
    pub watermark: u64,
    /// LSN the shard's replica has applied (the view's target).
    pub applied: u64,
    /// Entries behind.
    pub lag_lsn: u64,
    /// Milliseconds between the commit of the first entry not applied yet and now (0 when
    /// caught up).
    pub lag_ms: u64,
    /// Entries applied since the node started.
    pub entries_applied: u64,
    /// Entries the view did not apply because they break the rules of client JSON
    /// ([`rejections`]), since the view was built.
    pub entries_rejected: u64,
    /// The latest of them (newest first, at most 5).
    pub rejections: Vec<rejections::Rejection>,
    /// `running`, or `stopped` (its worker ended with an error; see `error`).
    pub state: &'static str,
    /// Why a stopped view stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The node's views: workers, their watermarks, reads at a token.
#[derive(Debug)]
pub struct Materializer {
    log: Arc<Log>,
    db: Arc<Database>,
    views: Vec<Arc<dyn View>>,
    vectors: Arc<vector::VectorView>,
    text: Arc<fulltext::Fulltext>,
    timeseries: Arc<timeseries::TimeseriesView>,
    /// Where streams live (graph reads look vertices up across shards).
    placement: themis_log::Ring,
    clock: Arc<dyn Clock>,
    config: MaterializerConfig,
    workers: Mutex<BTreeMap<(ShardId, &'static str), Arc<Worker>>>,
    /// Last durable view commit (monotonic ms), shared by the workers.
    last_durable_ms: AtomicU64,
}

impl Materializer {
    /// Opens the views database on `disk` and starts a worker for every hosted shard and view.
    pub async fn start(
        log: Arc<Log>,
        disk: &dyn themis_storage::Disk,
        clock: Arc<dyn Clock>,
        config: MaterializerConfig,
    ) -> Result<Arc<Materializer>> {
        let db = disk.open_database("views").map_err(storage)?;
        // The placement closures hold the ring, not the log: views outlive no log.
        let ring = log.ring().clone();
        let vectors = Arc::new(vector::VectorView::new(
            Arc::new(move |ns: &str| {
                Self::config_urn(themis_log::Model::Vector, ns)
                    .map_or(ShardId(0), |urn| ring.shard_for_urn(&urn))
            }),
            config.index_dir.clone(),
        ));
        let ring = log.ring().clone();
        let text = Arc::new(fulltext::Fulltext::new(
            config.index_dir.clone(),
            Arc::new(move |model, ns: &str| {
                Self::config_urn(model, ns).map_or(ShardId(0), |urn| ring.shard_for_urn(&urn))
            }),
        ));
        let ring = log.ring().clone();
        let timeseries = Arc::new(timeseries::TimeseriesView::new(Arc::new(
            move |model, ns: &str| {
                Self::config_urn(model, ns).map_or(ShardId(0), |urn| ring.shard_for_urn(&urn))
            },
        )));
        let placement = log.ring().clone();
        let views: Vec<Arc<dyn View>> = vec![
            Arc::new(fulltext::TextIndexed {
                state: document::DOCUMENTS.with_flush_rows(config.state_flush_rows),
                text: text.clone(),
            }),
            Arc::new(fulltext::TextIndexed {
                state: document::ROWS.with_flush_rows(config.state_flush_rows),
                text: text.clone(),
            }),
            Arc::new(namespaces::NamespacesView),
            vectors.clone(),
            timeseries.clone(),
            Arc::new(graph::GraphView),
        ];
        let m = Arc::new(Materializer {
            log,
            db: Arc::new(db),
            views,
            vectors,
            text,
            timeseries,
            placement,
            clock,
            config,
            workers: Mutex::default(),
            last_durable_ms: AtomicU64::new(0),
        });
        m.reconcile()?;
        let weak = Arc::downgrade(&m);
        let every = m.config.reconcile_every;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(m) = weak.upgrade() else { return };
                if let Err(e) = m.reconcile() {
                    tracing::warn!("views: reconcile failed: {e}");
                }
            }
        });
        Ok(m)
    }

    /// The view kinds.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.views.iter().map(|v| v.kind()).collect()
    }

    fn view(&self, kind: &str) -> Result<Arc<dyn View>> {
        self.views
            .iter()
            .find(|v| v.kind() == kind)
            .cloned()
            .ok_or_else(|| Error::UnknownView(kind.to_owned()))
    }

    /// Starts workers for shards this node now hosts; stops and clears those of shards it no
    /// longer hosts (a replica added again later starts empty, like its log).
    fn reconcile(self: &Arc<Self>) -> Result<()> {
        let hosted: Vec<ShardId> = self.log.shards().iter().map(|s| s.id()).collect();
        let mut workers = self.workers.lock().expect("workers lock");
        let gone: Vec<(ShardId, &'static str)> = workers
            .keys()
            .filter(|(s, _)| !hosted.contains(s))
            .copied()
            .collect();
        for key in gone {
            if let Some(w) = workers.remove(&key) {
                w.stop();
            }
            self.clear(key.0, key.1)?;
        }
        for &shard in &hosted {
            for view in &self.views {
                let key = (shard, view.kind());
                if workers.contains_key(&key) {
                    continue;
                }
                let (lsn, ts) = {
                    let tx = self.db.begin_read().map_err(storage)?;
                    view.open(&tx, shard)?;
                    read_watermark(&tx, view.kind(), shard)?
                };
                let worker = Arc::new(Worker {
                    watermark: watch::channel(lsn).0,
                    watermark_ts: AtomicU64::new(ts),
                    entries_applied: AtomicU64::new(0),
                    stopped: Default::default(),
                    failure: Mutex::new(None),
                    task: Mutex::new(None),
                });
                self.spawn(shard, view.clone(), worker.clone());
                workers.insert(key, worker);
            }
        }
        Ok(())
    }

    fn spawn(self: &Arc<Self>, shard: ShardId, view: Arc<dyn View>, worker: Arc<Worker>) {
        let m = Arc::downgrade(self);
        let w = worker.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = run_worker(m, shard, view.clone(), w.clone()).await {
                tracing::error!(
                    shard = shard.0,
                    view = view.kind(),
                    "view worker stopped: {e}"
                );
                w.fail(e.to_string());
            }
        });
        *worker.task.lock().expect("task lock") = Some(task);
    }

    fn clear(&self, shard: ShardId, kind: &str) -> Result<()> {
        let view = self.view(kind)?;
        let tx = self.db.begin_write().map_err(storage)?;
        view.clear(&tx, shard)?;
        {
            let mut marks = tx.open_table(WATERMARKS).map_err(storage)?;
            marks
                .remove(watermark_key(kind, shard).as_str())
                .map_err(storage)?;
        }
        rejections::clear(&tx, kind, shard)?;
        tx.commit().map_err(storage)
    }

    /// Drops view `kind` of `shard` (every hosted shard when `None`) and replays it from the
    /// start of the log. Returns at once; [`wait_for`](Self::wait_for) tells when it caught up.
    pub fn rebuild(self: &Arc<Self>, kind: &str, shard: Option<ShardId>) -> Result<Vec<ShardId>> {
        let view = self.view(kind)?;
        let mut workers = self.workers.lock().expect("workers lock");
        let keys: Vec<(ShardId, &'static str)> = workers
            .keys()
            .filter(|(s, k)| *k == view.kind() && shard.is_none_or(|x| x == *s))
            .copied()
            .collect();
        if let Some(s) = shard
            && keys.is_empty()
        {
            return Err(Error::NotHosted(s.0));
        }
        for key in &keys {
            let old = workers.remove(key).expect("listed");
            old.stop();
            self.clear(key.0, key.1)?;
            let worker = Arc::new(Worker {
                watermark: watch::channel(0).0,
                watermark_ts: AtomicU64::new(0),
                entries_applied: AtomicU64::new(0),
                stopped: Default::default(),
                failure: Mutex::new(None),
                task: Mutex::new(None),
            });
            self.spawn(key.0, view.clone(), worker.clone());
            workers.insert(*key, worker);
        }
        Ok(keys.into_iter().map(|(s, _)| s).collect())
    }

    fn worker(&self, shard: ShardId, kind: &'static str) -> Result<Arc<Worker>> {
        self.workers
            .lock()
            .expect("workers lock")
            .get(&(shard, kind))
            .cloned()
            .ok_or(Error::NotHosted(shard.0))
    }

    /// Fails with [`Error::Stopped`] when view `kind` of a hosted shard has stopped: a read
    /// of it would wait for a watermark that does not move, or answer from a state that stays
    /// behind the log.
    fn running(&self, kind: &'static str) -> Result<()> {
        let workers = self.workers.lock().expect("workers lock");
        for ((shard, k), w) in workers.iter() {
            if *k == kind {
                w.check(kind, *shard)?;
            }
        }
        Ok(())
    }

    /// The views that stopped, with their shards and reasons (`/readyz` fails while any did).
    pub fn stopped(&self) -> Vec<(&'static str, ShardId, String)> {
        let workers = self.workers.lock().expect("workers lock");
        workers
            .iter()
            .filter_map(|((shard, kind), w)| {
                let failure = w.failure.lock().expect("failure lock").clone();
                failure.map(|reason| (*kind, *shard, reason))
            })
            .collect()
    }

    /// The watermark of view `kind` of `shard`.
    pub fn watermark(&self, kind: &str, shard: ShardId) -> Result<Lsn> {
        let kind = self.view(kind)?.kind();
        Ok(Lsn(*self.worker(shard, kind)?.watermark.borrow()))
    }

    /// Waits until view `kind` has applied every position of `token` (shards of the token this
    /// node does not host are an error), at most `timeout`; returns the token of the
    /// watermarks reached for the shards in `shards` and in the token.
    pub async fn wait_for(
        &self,
        kind: &str,
        token: &Token,
        shards: &[ShardId],
        timeout: Duration,
    ) -> Result<Token> {
        self.wait_since(kind, token, shards, self.clock.monotonic(), timeout)
            .await
    }

    /// Waits until every view of `kinds` covers `token`, at most `timeout` in all.
    pub async fn wait_for_kinds(
        &self,
        kinds: &[&str],
        token: &Token,
        timeout: Duration,
    ) -> Result<()> {
        let started = self.clock.monotonic();
        for kind in kinds {
            self.wait_since(kind, token, &[], started, timeout).await?;
        }
        Ok(())
    }

    /// [`wait_for`](Self::wait_for) with a deadline of `timeout` after `started` (the
    /// clock's monotonic time), however many shards it waits for.
    async fn wait_since(
        &self,
        kind: &str,
        token: &Token,
        shards: &[ShardId],
        started: Duration,
        timeout: Duration,
    ) -> Result<Token> {
        let kind = self.view(kind)?.kind();
        self.running(kind)?;
        for p in token.iter() {
            let worker = self.worker(p.shard, kind)?;
            let mut rx = worker.watermark.subscribe();
            if *rx.borrow() >= p.lsn.0 {
                continue;
            }
            // A worker that stops wakes its waiters (Worker::fail).
            let wait = rx.wait_for(|&w| w >= p.lsn.0 || worker.failed());
            let left = timeout.saturating_sub(self.clock.monotonic().saturating_sub(started));
            match tokio::time::timeout(left, wait).await {
                Ok(Ok(_)) => worker.check(kind, p.shard)?,
                Ok(Err(_)) | Err(_) => {
                    return Err(Error::Timeout {
                        kind,
                        shard: p.shard.0,
                        wanted: p.lsn.0,
                        at: *worker.watermark.borrow(),
                        timeout,
                    });
                }
            }
        }
        let mut reflected = Token::new();
        for shard in shards.iter().copied().chain(token.iter().map(|p| p.shard)) {
            let lsn = *self.worker(shard, kind)?.watermark.borrow();
            reflected.observe(Position {
                shard,
                lsn: Lsn(lsn),
            });
        }
        Ok(reflected)
    }

    /// Reads view state in a read transaction, with the watermark it reflects.
    pub fn read<T>(
        &self,
        kind: &str,
        shard: ShardId,
        f: impl FnOnce(&ReadTransaction) -> Result<T>,
    ) -> Result<(T, Lsn)> {
        let kind = self.view(kind)?.kind();
        self.worker(shard, kind)?.check(kind, shard)?;
        let tx = self.db.begin_read().map_err(storage)?;
        let (lsn, _) = read_watermark(&tx, kind, shard)?;
        Ok((f(&tx)?, Lsn(lsn)))
    }

    /// Runs `f` in one read transaction of the views database (one consistent state of every
    /// view of every hosted shard), with the token that state reflects: per hosted shard, the
    /// lowest watermark among `kinds`.
    pub fn snapshot<T>(
        &self,
        kinds: &[&str],
        f: impl FnOnce(&ReadTransaction) -> Result<T>,
    ) -> Result<(T, Token)> {
        let kinds: Vec<&'static str> = kinds
            .iter()
            .map(|k| self.view(k).map(|v| v.kind()))
            .collect::<Result<_>>()?;
        for kind in &kinds {
            self.running(kind)?;
        }
        let tx = self.db.begin_read().map_err(storage)?;
        let mut token = Token::new();
        for shard in self.log.shards().iter().map(|s| s.id()) {
            let mut lowest = u64::MAX;
            for kind in &kinds {
                lowest = lowest.min(read_watermark(&tx, kind, shard)?.0);
            }
            if lowest != u64::MAX {
                token.observe(Position {
                    shard,
                    lsn: Lsn(lowest),
                });
            }
        }
        Ok((f(&tx)?, token))
    }

    /// The digest of view `kind` of `shard`, with the watermark it was taken at.
    pub fn digest(&self, kind: &str, shard: ShardId) -> Result<(Lsn, u64)> {
        let view = self.view(kind)?;
        let (digest, lsn) = self.read(view.kind(), shard, |tx| view.digest(tx, shard))?;
        Ok((lsn, digest))
    }

    /// Where every view of every hosted shard stands.
    pub fn status(&self) -> Vec<ViewStatus> {
        let now = self.clock.wall_ms();
        let workers: Vec<_> = self
            .workers
            .lock()
            .expect("workers lock")
            .iter()
            .map(|(k, w)| (*k, w.clone()))
            .collect();
        let tx = self.db.begin_read().ok();
        workers
            .into_iter()
            .map(|((shard, view), w)| {
                let (entries_rejected, rejections) = tx
                    .as_ref()
                    .and_then(|tx| rejections::read(tx, view, shard, 5).ok())
                    .unwrap_or_default();
                let error = w.failure.lock().expect("failure lock").clone();
                let watermark = *w.watermark.borrow();
                let applied = self.log.shard(shard).map_or(watermark, |s| s.applied().0);
                let lag_lsn = applied.saturating_sub(watermark);
                let lag_ms = if lag_lsn == 0 {
                    0
                } else {
                    self.first_unapplied_ts(shard, watermark)
                        .map_or(0, |ts| now.saturating_sub(ts))
                };
                ViewStatus {
                    view,
                    shard: shard.0,
                    watermark,
                    applied,
                    lag_lsn,
                    lag_ms,
                    entries_applied: w.entries_applied.load(Ordering::Relaxed),
                    entries_rejected,
                    rejections,
                    state: if error.is_some() {
                        "stopped"
                    } else {
                        "running"
                    },
                    error,
                }
            })
            .collect()
    }

    fn first_unapplied_ts(&self, shard: ShardId, watermark: u64) -> Option<u64> {
        let s = self.log.shard(shard).ok()?;
        let (entries, _) = s.committed_entries(Lsn(watermark + 1), 16).ok()?;
        entries.iter().map(|e| e.ts_ms).find(|&ts| ts > 0)
    }

    /// The stream holding `model`/`namespace`'s config.
    pub fn config_urn(model: themis_log::Model, namespace: &str) -> Result<themis_log::Urn> {
        themis_log::Urn::parse(&format!(
            "urn:themis:{model}:{}:{namespace}",
            namespaces::CONFIG_NAMESPACE
        ))
        .map_err(|e| Error::InvalidNamespace(format!("{namespace:?}: {e}")))
    }

    /// `model`/`namespace`'s config from this node's registry view (of the shard holding it).
    pub fn namespace(
        &self,
        model: themis_log::Model,
        namespace: &str,
    ) -> Result<Option<namespaces::Registered>> {
        let urn = Self::config_urn(model, namespace)?;
        let shard = self.log.shard_id_for(&urn);
        let (found, _) = self.read(namespaces::KIND, shard, |tx| {
            namespaces::get(tx, shard, model, namespace)
        })?;
        Ok(found)
    }

    /// Every config in the registry views of the shards this node holds.
    pub fn namespaces(&self) -> Result<Vec<namespaces::Registered>> {
        let mut out = Vec::new();
        for shard in self.log.shards().iter().map(|s| s.id()) {
            let (mut found, _) =
                self.read(namespaces::KIND, shard, |tx| namespaces::all(tx, shard))?;
            out.append(&mut found);
        }
        out.sort_by(|a, b| (&a.model, &a.namespace).cmp(&(&b.model, &b.namespace)));
        Ok(out)
    }

    /// Makes every view commit so far durable.
    pub fn sync(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(storage)?;
        tx.commit().map_err(storage)
    }

    /// At shutdown: stops the workers, makes every view commit durable and writes out what
    /// views keep outside the database (index dumps), so a restart resumes without rebuilding.
    pub async fn shutdown(&self) -> Result<()> {
        let workers: Vec<((ShardId, &'static str), Arc<Worker>)> =
            std::mem::take(&mut *self.workers.lock().expect("workers lock"))
                .into_iter()
                .collect();
        for (_, w) in &workers {
            w.stopped.store(true, Ordering::SeqCst);
            let task = w.task.lock().expect("task lock").take();
            if let Some(task) = task {
                task.abort();
                // Wait until it is gone: a worker between two awaits may still be applying.
                let _ = task.await;
            }
        }
        self.sync()?;
        let now = self.clock.monotonic().as_millis() as u64;
        for ((shard, kind), _) in &workers {
            if let Ok(view) = self.view(kind) {
                view.checkpoint(*shard, now);
            }
        }
        self.text.close();
        Ok(())
    }

    /// The `k` vectors of namespace `ns` nearest to `query` (whose payload matches `filter`),
    /// over every shard, once the vector view covers `min_token` (waiting at most `timeout`):
    /// each shard answers its exact top k at its watermark, and the answers merge into one
    /// ranking (nearest first, ties by URN). Returns the hits with their shards and the token
    /// of the watermarks searched. The node must hold every shard.
    pub async fn knn(
        &self,
        search: &KnnSearch<'_>,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<(Vec<(ShardId, vector::Hit)>, Token)> {
        // The config is read after the wait: the token may cover its declaration.
        self.wait_for_kinds(&[namespaces::KIND, vector::KIND], min_token, timeout)
            .await?;
        let settings = self.knn_check(search)?;
        self.knn_at(search, settings)
    }

    /// Checks a kNN search (namespace config, dimension, k, ef) and that this node holds
    /// every shard; returns the namespace's settings.
    pub fn knn_check(&self, search: &KnnSearch<'_>) -> Result<namespaces::VectorSettings> {
        let ns = search.namespace;
        let Some(registered) = self.namespace(themis_log::Model::Vector, ns)? else {
            return Err(Error::UnknownNamespace(format!(
                "vector namespace {ns:?} has no config; declare it with PUT \
                 /v1/namespaces/vector/{ns} {{\"dimension\": ...}}"
            )));
        };
        let Some(settings) = registered.config.vector() else {
            return Err(Error::UnknownNamespace(format!(
                "vector namespace {ns:?} declares no dimension"
            )));
        };
        if search.vector.len() != settings.dimension {
            return Err(Error::InvalidSearch(format!(
                "namespace {ns:?} holds vectors of {} dimensions; the query has {}",
                settings.dimension,
                search.vector.len()
            )));
        }
        if let Some(i) = search.vector.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidSearch(format!(
                "query vector component {i} is not a finite number"
            )));
        }
        if search.k == 0 || search.k > KNN_K_MAX {
            return Err(Error::InvalidSearch(format!(
                "k must be 1 to {KNN_K_MAX}, not {}",
                search.k
            )));
        }
        if let Some(ef) = search.ef
            && (ef == 0 || ef > namespaces::VECTOR_EF_MAX)
        {
            return Err(Error::InvalidSearch(format!(
                "ef must be 1 to {}, not {ef}",
                namespaces::VECTOR_EF_MAX
            )));
        }
        for s in 0..self.log.shard_count() {
            self.log.shard(ShardId(s))?;
        }
        Ok(settings)
    }

    /// Runs a kNN search at the vector view's current watermarks (no waiting; see
    /// [`knn`](Self::knn)).
    pub fn knn_now(&self, search: &KnnSearch<'_>) -> Result<(Vec<(ShardId, vector::Hit)>, Token)> {
        let settings = self.knn_check(search)?;
        self.knn_at(search, settings)
    }

    /// A checked kNN search at the current watermarks.
    fn knn_at(
        &self,
        search: &KnnSearch<'_>,
        settings: namespaces::VectorSettings,
    ) -> Result<(Vec<(ShardId, vector::Hit)>, Token)> {
        let ns = search.namespace;
        let shards: Vec<ShardId> = (0..self.log.shard_count()).map(ShardId).collect();
        let mut token = Token::new();
        let mut hits = Vec::new();
        for shard in shards {
            let searcher = self.vectors.searcher(shard, ns);
            let (found, at) = match searcher {
                Some(s) => {
                    let at = self.watermark(vector::KIND, shard)?.0;
                    (
                        s.search(search.vector, search.k, search.ef, search.filter, at),
                        at,
                    )
                }
                None => {
                    let (found, at) = self.read(vector::KIND, shard, |tx| {
                        vector::exact_search(
                            tx,
                            shard,
                            ns,
                            settings.metric,
                            search.vector,
                            search.k,
                            search.filter,
                        )
                    })?;
                    (found, at.0)
                }
            };
            token.observe(Position {
                shard,
                lsn: Lsn(at),
            });
            hits.extend(found.into_iter().map(|h| (shard, h)));
        }
        hits.sort_by(|(_, a), (_, b)| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.urn.cmp(&b.urn))
        });
        hits.truncate(search.k);
        Ok((hits, token))
    }

    /// For checkers: `shard`'s vector view watermark, its live vector resources, and the
    /// URNs a search there can find (see [`vector::VectorView::searchable`]).
    pub fn vector_sets(
        &self,
        shard: ShardId,
    ) -> Result<(
        Lsn,
        std::collections::BTreeSet<String>,
        std::collections::BTreeSet<String>,
    )> {
        let ((live, found), at) = self.read(vector::KIND, shard, |tx| {
            let (at, _) = read_watermark(tx, vector::KIND, shard)?;
            self.vectors.searchable(tx, shard, at)
        })?;
        Ok((at, live, found))
    }

    /// The `k` resources of namespace `ns` of `model` (document or relational) that best
    /// match the fulltext `query` (BM25 over the namespace's text fields, statistics summed
    /// over every shard), once the state view covers `min_token` (waiting at most
    /// `timeout`). Returns the hits (best first, ties by URN) with their shards and current
    /// states, and the token of what was searched. The node must hold every shard.
    pub async fn search(
        &self,
        search: &TextSearch<'_>,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<(fulltext::TextHits, Token)> {
        // The config is read after the wait: the token may cover its declaration.
        let kind = match search.model {
            themis_log::Model::Relational => document::ROWS.kind(),
            _ => document::DOCUMENTS.kind(),
        };
        self.wait_for_kinds(&[namespaces::KIND, kind], min_token, timeout)
            .await?;
        let kind = self.search_check(search)?;
        self.search_at(search, kind)
    }

    /// Checks a fulltext search (namespace config with text fields, k) and that this node
    /// holds every shard; returns the state view it reads.
    pub fn search_check(&self, search: &TextSearch<'_>) -> Result<&'static str> {
        let (model, ns) = (search.model, search.namespace);
        let kind = match model {
            themis_log::Model::Document => document::DOCUMENTS.kind(),
            themis_log::Model::Relational => document::ROWS.kind(),
            other => {
                return Err(Error::InvalidSearch(format!(
                    "fulltext search reads document and relational namespaces, not {other} ones"
                )));
            }
        };
        let config = self.namespace(model, ns)?;
        if config.as_ref().and_then(|r| r.config.text()).is_none() {
            return Err(Error::UnknownNamespace(format!(
                "{model} namespace {ns:?} declares no text_fields; declare them with PUT \
                 /v1/namespaces/{model}/{ns} {{\"text_fields\": [...], \"language\": \"en\"}}"
            )));
        }
        if search.k == 0 || search.k > KNN_K_MAX {
            return Err(Error::InvalidSearch(format!(
                "k must be 1 to {KNN_K_MAX}, not {}",
                search.k
            )));
        }
        if search.query.trim().is_empty() {
            return Err(Error::InvalidSearch("the query is empty".into()));
        }
        for s in 0..self.log.shard_count() {
            self.log.shard(ShardId(s))?;
        }
        Ok(kind)
    }

    /// Runs a fulltext search at the state view's current watermarks (no waiting; see
    /// [`search`](Self::search)).
    pub fn search_now(&self, search: &TextSearch<'_>) -> Result<(fulltext::TextHits, Token)> {
        let kind = self.search_check(search)?;
        self.search_at(search, kind)
    }

    /// A checked fulltext search of state view `kind` at its current watermarks.
    fn search_at(
        &self,
        search: &TextSearch<'_>,
        kind: &'static str,
    ) -> Result<(fulltext::TextHits, Token)> {
        let mut at = Vec::new();
        for s in 0..self.log.shard_count() {
            at.push((ShardId(s), self.watermark(kind, ShardId(s))?.0));
        }
        let (hits, reached) =
            self.text
                .search(kind, search.namespace, search.query, search.k, &at)?;
        let view = if kind == document::ROWS.kind() {
            document::ROWS
        } else {
            document::DOCUMENTS
        };
        let tx = self.db.begin_read().map_err(storage)?;
        let mut out = Vec::with_capacity(hits.len());
        for (shard, hit) in hits {
            let data = view
                .get(&tx, shard, &hit.urn)?
                .filter(|d| !d.deleted)
                .map_or(Value::Null, |d| d.data);
            out.push((shard, hit, data));
        }
        let mut token = Token::new();
        for (shard, lsn) in reached {
            token.observe(Position {
                shard,
                lsn: Lsn(lsn),
            });
        }
        Ok((out, token))
    }

    /// For checkers: the URNs in `shard`'s fulltext indexes of view `kind`, by namespace,
    /// with the view's watermark.
    pub fn text_sets(
        &self,
        kind: &str,
        shard: ShardId,
    ) -> Result<(Lsn, BTreeMap<String, Vec<String>>)> {
        let kind = self.view(kind)?.kind();
        let at = self.watermark(kind, shard)?;
        Ok((at, self.text.indexed(kind, shard)?))
    }

    /// Series `urn`'s points in `range` once the time-series view covers `min_token` (waiting
    /// at most `timeout`), with the token of the watermark read.
    pub async fn ts_range(
        &self,
        urn: &themis_log::Urn,
        range: &timeseries::Range,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<(timeseries::RangeAnswer, Token)> {
        Self::ts_check(urn, range)?;
        self.wait_for(timeseries::KIND, min_token, &[], timeout)
            .await?;
        self.ts_range_now(urn, range)
    }

    fn ts_check(urn: &themis_log::Urn, range: &timeseries::Range) -> Result<()> {
        if urn.model() != themis_log::Model::Timeseries {
            return Err(Error::InvalidSearch(format!(
                "{urn} is not a time series (urn:themis:timeseries:...)"
            )));
        }
        if range.from >= range.to {
            return Err(Error::InvalidSearch(format!(
                "an empty range: from ({}) must be before to ({})",
                range.from, range.to
            )));
        }
        if let Some((step, _)) = range.step
            && step <= 0
        {
            return Err(Error::InvalidSearch(format!(
                "step must be a positive number of ms, not {step}"
            )));
        }
        Ok(())
    }

    /// [`ts_range`](Self::ts_range) at the view's current watermark.
    pub fn ts_range_now(
        &self,
        urn: &themis_log::Urn,
        range: &timeseries::Range,
    ) -> Result<(timeseries::RangeAnswer, Token)> {
        Self::ts_check(urn, range)?;
        let shard = self.log.shard_id_for(urn);
        self.worker(shard, timeseries::KIND)?;
        let tx = self.db.begin_read().map_err(storage)?;
        let (lsn, _) = read_watermark(&tx, timeseries::KIND, shard)?;
        let answer = self.timeseries.range(&tx, shard, urn, range)?;
        let mut token = Token::new();
        if lsn > 0 {
            token.observe(Position {
                shard,
                lsn: Lsn(lsn),
            });
        }
        Ok((answer, token))
    }

    /// Per hosted shard: the registry worker's watermark and the LSN the shard's log has
    /// applied now (what a view that reads configs waits for).
    fn registry_waits(&self) -> Vec<(ShardId, Arc<Worker>, u64)> {
        let workers = self.workers.lock().expect("workers lock");
        workers
            .iter()
            .filter(|((_, kind), _)| *kind == namespaces::KIND)
            .filter_map(|((shard, _), w)| {
                let applied = *self.log.shard(*shard).ok()?.store().applied().borrow();
                Some((*shard, w.clone(), applied))
            })
            .collect()
    }

    /// Whether time-series namespace `ns` has series in any hosted shard.
    pub fn timeseries_in_use(&self, ns: &str) -> Result<bool> {
        let shards: Vec<ShardId> = self.log.shards().iter().map(|s| s.id()).collect();
        let tx = self.db.begin_read().map_err(storage)?;
        for shard in shards {
            if self.timeseries.has_series(&tx, shard, ns)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs `f` over the graph of every shard once the graph view covers `min_token`
    /// (waiting at most `timeout`), with the token of the watermarks read. The node must hold
    /// every shard.
    pub async fn graph<T>(
        &self,
        min_token: &Token,
        timeout: Duration,
        f: impl FnOnce(&graph::Graph<'_>) -> Result<T>,
    ) -> Result<(T, Token)> {
        self.wait_for(graph::KIND, min_token, &[], timeout).await?;
        self.graph_now(f)
    }

    /// [`graph`](Self::graph) at the view's current watermarks.
    pub fn graph_now<T>(
        &self,
        f: impl FnOnce(&graph::Graph<'_>) -> Result<T>,
    ) -> Result<(T, Token)> {
        let shards = self.log.shard_count();
        for s in 0..shards {
            self.worker(ShardId(s), graph::KIND)?;
        }
        let tx = self.db.begin_read().map_err(storage)?;
        let mut token = Token::new();
        for s in 0..shards {
            let (lsn, _) = read_watermark(&tx, graph::KIND, ShardId(s))?;
            if lsn > 0 {
                token.observe(Position {
                    shard: ShardId(s),
                    lsn: Lsn(lsn),
                });
            }
        }
        let g = graph::Graph::new(&tx, &self.placement, shards);
        Ok((f(&g)?, token))
    }

    /// One read transaction over the state, graph and time-series views of every shard (one
    /// consistent state of them all), with the token it reflects: per shard, the lowest
    /// watermark among those views. Queries that read several models (AQL) read them here, so
    /// their answer reflects one token. The node must hold every shard.
    pub fn view_snapshot(&self) -> Result<(ViewSnapshot<'_>, Token)> {
        const KINDS: [&str; 4] = [document::KIND, "relational", graph::KIND, timeseries::KIND];
        let shards = self.log.shard_count();
        for s in 0..shards {
            for kind in KINDS {
                self.worker(ShardId(s), kind)?;
            }
        }
        let tx = self.db.begin_read().map_err(storage)?;
        let mut token = Token::new();
        for s in 0..shards {
            let mut lowest = u64::MAX;
            for kind in KINDS {
                lowest = lowest.min(read_watermark(&tx, kind, ShardId(s))?.0);
            }
            if lowest > 0 {
                token.observe(Position {
                    shard: ShardId(s),
                    lsn: Lsn(lowest),
                });
            }
        }
        Ok((
            ViewSnapshot {
                m: self,
                tx,
                shards,
            },
            token,
        ))
    }

    /// The time-series view.
    pub fn timeseries(&self) -> &Arc<timeseries::TimeseriesView> {
        &self.timeseries
    }

    /// The vector view (kNN searches).
    pub fn vectors(&self) -> &Arc<vector::VectorView> {
        &self.vectors
    }
}

impl Worker {
    /// Marks the worker as ended by `reason` and wakes every reader waiting on its watermark.
    fn fail(&self, reason: String) {
        *self.failure.lock().expect("failure lock") = Some(reason);
        self.watermark.send_modify(|_| {});
    }

    fn failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }

    /// [`Error::Stopped`] when the worker ended with an error.
    fn check(&self, kind: &'static str, shard: ShardId) -> Result<()> {
        match &*self.failure.lock().expect("failure lock") {
            Some(reason) => Err(Error::Stopped {
                kind,
                shard: shard.0,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().expect("task lock").take() {
            task.abort();
        }
    }
}

/// Tails `shard`'s applied log into `view` until the shard or the materializer goes away.
async fn run_worker(
    m: std::sync::Weak<Materializer>,
    shard: ShardId,
    view: Arc<dyn View>,
    worker: Arc<Worker>,
) -> Result<()> {
    // Neither the materializer nor the log's shard is held across an await: a worker must not
    // keep a dropped log (and its databases) alive while it waits for entries that never come.
    let shard_of = |m: &std::sync::Weak<Materializer>| {
        let m = m.upgrade()?;
        let s = m.log.shard(shard).ok()?;
        Some((s, m.config.batch_entries))
    };
    loop {
        let from = *worker.watermark.borrow() + 1;
        let mut applied = match shard_of(&m) {
            Some((s, _)) => s.store().applied(),
            None => return Ok(()),
        };
        if *applied.borrow() < from {
            // Nothing new: wait for the replica to apply more (or stop with the shard).
            if applied.wait_for(|&a| a >= from).await.is_err() {
                return Ok(());
            }
        }
        drop(applied);
        // The last LSN this batch may apply: for a view that reads configs, what its own
        // shard's registry was waited for. Entries the log applied meanwhile may carry
        // configs the registry has not applied yet.
        let mut last_allowed = u64::MAX;
        if view.reads_configs() {
            let Some(waits) = m.upgrade().map(|m| m.registry_waits()) else {
                return Ok(());
            };
            for (registry_shard, registry, target) in waits {
                if registry_shard == shard {
                    last_allowed = target.max(from);
                }
                // A registry worker replaced meanwhile (rebuild) drops its sender: check again
                // on the next batch. One that stopped stops this view too: it cannot go on
                // without the configs (and its readers must hear so, not wait).
                let mut rx = registry.watermark.subscribe();
                let _ = rx.wait_for(|&w| w >= target || registry.failed()).await;
                registry.check(namespaces::KIND, registry_shard)?;
            }
        }
        let Some((log_shard, batch)) = shard_of(&m) else {
            return Ok(());
        };
        let limit = batch.min(usize::try_from(last_allowed - from + 1).unwrap_or(usize::MAX));
        let (entries, _) = log_shard.committed_entries(Lsn(from), limit)?;
        drop(log_shard);
        let Some(last) = entries.last() else {
            // Applied but not readable yet (a store that is still writing a snapshot's
            // records): wait a little rather than spin, which would starve the runtime.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (last_lsn, last_ts) = (last.lsn.0, last.ts_ms);
        let Some(m) = m.upgrade() else { return Ok(()) };
        let now = m.clock.monotonic().as_millis() as u64;
        let durable = now.saturating_sub(m.last_durable_ms.load(Ordering::Relaxed))
            >= m.config.durable_every.as_millis() as u64;
        let mut tx = m.db.begin_write().map_err(storage)?;
        if worker.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !durable {
            tx.set_durability(Durability::None).map_err(storage)?;
        }
        for entry in &entries {
            match rejections::admit(entry) {
                Ok(()) => view.apply(&tx, shard, entry)?,
                Err(reason) => {
                    tracing::warn!(
                        shard = shard.0,
                        view = view.kind(),
                        lsn = entry.lsn.0,
                        "view rejected an entry: {reason}"
                    );
                    let rejection = rejections::Rejection {
                        lsn: entry.lsn.0,
                        ts_ms: entry.ts_ms,
                        reason,
                    };
                    rejections::record(&tx, view.kind(), shard, &rejection)?;
                }
            }
        }
        let ts = if last_ts > 0 {
            last_ts
        } else {
            worker.watermark_ts.load(Ordering::Relaxed)
        };
        {
            let mut marks = tx.open_table(WATERMARKS).map_err(storage)?;
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&last_lsn.to_le_bytes());
            value[8..].copy_from_slice(&ts.to_le_bytes());
            marks
                .insert(watermark_key(view.kind(), shard).as_str(), value.as_slice())
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        if durable {
            m.last_durable_ms.store(now, Ordering::Relaxed);
        }
        view.committed(&m.db, shard, last_lsn, durable, now);
        worker.watermark_ts.store(ts, Ordering::Relaxed);
        worker
            .entries_applied
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        worker.watermark.send_replace(last_lsn);
        drop(m);
        tokio::task::yield_now().await;
    }
}

/// One consistent read of the state, graph and time-series views ([`Materializer::view_snapshot`]).
pub struct ViewSnapshot<'a> {
    m: &'a Materializer,
    tx: ReadTransaction,
    shards: u32,
}

impl std::fmt::Debug for ViewSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewSnapshot")
            .field("shards", &self.shards)
            .finish()
    }
}

impl ViewSnapshot<'_> {
    /// The read transaction itself (to build tables from the same state, say).
    pub fn transaction(&self) -> &ReadTransaction {
        &self.tx
    }

    /// The live (not deleted) resources of namespace `ns` of `model` (document or relational)
    /// over every shard, in id order.
    pub fn resources(&self, model: themis_log::Model, ns: &str) -> Result<Vec<document::Resource>> {
        let view = state_view(model)?;
        let mut out = Vec::new();
        for s in 0..self.shards {
            out.extend(
                view.namespace(&self.tx, ShardId(s), ns)?
                    .into_iter()
                    .filter(|r| !r.state.deleted),
            );
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Calls `f` with every resource of namespace `ns` of `model` (document or relational),
    /// tombstones included, shard by shard and in id order within a shard, its data the JSON
    /// text the view holds ([`document::StateView::scan`]); an error from `f` stops the scan.
    pub fn scan_resources(
        &self,
        model: themis_log::Model,
        ns: &str,
        mut f: impl FnMut(&str, document::RawState<'_>) -> Result<()>,
    ) -> Result<()> {
        let view = state_view(model)?;
        for s in 0..self.shards {
            view.scan(&self.tx, ShardId(s), ns, &mut f)?;
        }
        Ok(())
    }

    /// Whether namespace `ns` of `model` ever had a resource (deleted ones count).
    pub fn has_namespace(&self, model: themis_log::Model, ns: &str) -> Result<bool> {
        let view = state_view(model)?;
        for s in 0..self.shards {
            if view.changed(&self.tx, ShardId(s), ns)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The live state of one document or row (`None`: absent or deleted).
    pub fn resource(&self, urn: &themis_log::Urn) -> Result<Option<document::Document>> {
        let view = state_view(urn.model())?;
        let shard = self.m.placement.shard_for_urn(urn);
        Ok(view
            .get(&self.tx, shard, urn.as_str())?
            .filter(|d| !d.deleted))
    }

    /// The graph of every shard.
    pub fn graph(&self) -> graph::Graph<'_> {
        graph::Graph::new(&self.tx, &self.m.placement, self.shards)
    }

    /// A time-series range read.
    pub fn ts_range(
        &self,
        urn: &themis_log::Urn,
        range: &timeseries::Range,
    ) -> Result<timeseries::RangeAnswer> {
        Materializer::ts_check(urn, range)?;
        let shard = self.m.placement.shard_for_urn(urn);
        self.m.timeseries.range(&self.tx, shard, urn, range)
    }

    /// The materializer (kNN and fulltext searches read their own indexes: see
    /// [`Materializer::knn_now`], [`Materializer::search_now`]).
    pub fn materializer(&self) -> &Materializer {
        self.m
    }

    /// The node's wall clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.m.clock.wall_ms()
    }
}

fn state_view(model: themis_log::Model) -> Result<document::StateView> {
    match model {
        themis_log::Model::Document => Ok(document::DOCUMENTS),
        themis_log::Model::Relational => Ok(document::ROWS),
        other => Err(Error::InvalidSearch(format!(
            "{other} namespaces are not collections (document or relational only)"
        ))),
    }
}

#[cfg(test)]
mod compaction_tests {
    use super::*;
    use redb::ReadableTableMetadata;

    const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("blobs");

    fn file_len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// Writes `count` blobs of 1 MiB, then deletes all but `keep` of them.
    fn fill_and_free(db: &Database, count: u64, keep: u64) {
        let blob = vec![7u8; 1 << 20];
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(BLOBS).unwrap();
            for i in 0..count {
                t.insert(i, blob.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(BLOBS).unwrap();
            for i in keep..count {
                t.remove(i).unwrap();
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn compaction_needs_more_free_than_held_and_4_mib() {
        const MIB: u64 = 1 << 20;
        assert!(
            super::wasteful(18 * MIB, 20 * MIB),
            "the 1M benchmark's file"
        );
        assert!(super::wasteful(MIB, 4 * MIB));
        assert!(!super::wasteful(MIB, 4 * MIB - 1), "little free space");
        assert!(!super::wasteful(100 * MIB, 99 * MIB), "more held than free");
        assert!(super::wasteful(100 * MIB, 100 * MIB));
    }

    #[test]
    fn only_a_mostly_free_file_is_compacted_and_keeps_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views.redb");
        let mut db = Database::create(&path).unwrap();
        fill_and_free(&db, 96, 8);
        let before = file_len(&path);
        compact_if_wasteful(&mut db, "views").unwrap();
        let after = file_len(&path);
        assert!(after * 4 < before, "{before} -> {after}");
        let r = db.begin_read().unwrap();
        let t = r.open_table(BLOBS).unwrap();
        assert_eq!(t.len().unwrap(), 8);
        assert!(t.get(7).unwrap().unwrap().value().iter().all(|&b| b == 7));
        drop((t, r));

        // Little free space (under 4 MiB): left as it is.
        let path = dir.path().join("full.redb");
        let mut db = Database::create(&path).unwrap();
        fill_and_free(&db, 1, 1);
        let before = file_len(&path);
        compact_if_wasteful(&mut db, "full").unwrap();
        assert_eq!(file_len(&path), before);
    }
}
