//! The vector view: per shard, every vector resource (`urn:themis:vector:{ns}:{id}`) with its
//! payload, and per (shard, namespace) an HNSW index (hnsw_rs) for k-nearest-neighbour search.
//!
//! State (in the views database, what digests and rebuilds compare):
//! - `vec/{shard}`: URN → [`VectorRecord`] (binary: the vector as appended, the payload JSON,
//!   revision, LSN, the point id of its current version, a deleted flag);
//! - `vec_next/{shard}`: namespace → the next point id (8 bytes LE).
//!
//! `put` gives the resource a new point id; `patch` merges into the payload (RFC 7396) and
//! also gives a new point id (the vector is indexed again with its new payload); `delete`
//! keeps a tombstone. A patch of a resource that has no vector (never put, or deleted) changes
//! nothing. Point ids come from the log alone, so every replica and every rebuild assigns the
//! same ones.
//!
//! The index is derived from that state and kept in memory: hnsw_rs cannot delete, so a
//! replaced or deleted point stays in the graph and is hidden. Each point remembers the LSN
//! that added it and the LSN that removed it; a search at watermark `w` sees exactly the points
//! with `added ≤ w < removed`, so an answer reflects exactly the watermark it reports even while
//! the worker inserts. When hidden points outnumber live ones the index is rebuilt from the live
//! points. Indexes are dumped to `{index_dir}/vector/{shard}/{ns}/` after a durable view
//! commit when enough changed, and at shutdown; after a restart the dump is loaded and only
//! points added since it are inserted (a dump that does not fit the state is ignored and the
//! index is built from the state).
//!
//! Distances: `l2` is Euclidean; `cosine` is `1 - cos` (vectors are normalised when indexed);
//! `dot` is `-(a · b)`. hnsw_rs needs non-negative distances, so the graph uses a strictly
//! monotone map of each (squared L2; `1/(1+s)` or `1-s` of the inner product `s`), which orders
//! points identically; answers report the true distance, computed in f64.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hnsw_rs::prelude::{AnnT, Distance, FilterT, Hnsw, HnswIo};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde_json::Value;
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::document::{event_data, merge_patch};
use crate::filter::Filter;
use crate::namespaces::{self, CONFIG_NAMESPACE, Metric, VectorSettings};
use crate::{Error, Result, View, digest_table, read_table, storage, table};

/// The kind name.
pub const KIND: &str = "vector";

/// Matching points at or below which a filtered search is exact (brute force) instead of
/// going through the graph.
const EXACT_MAX: usize = 2048;
/// Dump an index after a durable commit once this many points changed since its last dump...
const DUMP_AFTER_CHANGES: u64 = 20_000;
/// ...or once any changed and this much time passed (ms).
const DUMP_AFTER_MS: u64 = 300_000;

fn records_name(shard: ShardId) -> String {
    format!("vec/{}", shard.0)
}

fn next_name(shard: ShardId) -> String {
    format!("vec_next/{}", shard.0)
}

fn urn_prefix(ns: &str) -> String {
    format!("urn:themis:vector:{ns}:")
}

/// One vector resource's state.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    /// Point id of its current version.
    pub point: u64,
    /// Revision of the last event applied.
    pub revision: u64,
    /// LSN of that event's entry.
    pub lsn: u64,
    /// Its commit timestamp (ms).
    pub updated_ms: u64,
    /// Whether the last event deleted it.
    pub deleted: bool,
    /// The vector as appended (empty once deleted).
    pub vector: Vec<f32>,
    /// The payload (`null` once deleted).
    pub payload: Value,
}

const RECORD_VERSION: u8 = 1;

impl VectorRecord {
    fn encode(&self) -> Vec<u8> {
        let payload = if self.deleted {
            Vec::new()
        } else {
            serde_json::to_vec(&self.payload).expect("JSON values serialize")
        };
        let mut out = Vec::with_capacity(38 + self.vector.len() * 4 + payload.len());
        out.push(RECORD_VERSION);
        out.push(u8::from(self.deleted));
        for word in [self.point, self.revision, self.lsn, self.updated_ms] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&(self.vector.len() as u32).to_le_bytes());
        for x in &self.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&payload);
        out
    }

    fn decode(bytes: &[u8]) -> Result<VectorRecord> {
        let bad = || Error::Storage("a vector record does not decode".into());
        if bytes.len() < 38 || bytes[0] != RECORD_VERSION {
            return Err(bad());
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let dims = u32::from_le_bytes(bytes[34..38].try_into().expect("4 bytes")) as usize;
        let end = 38 + dims * 4;
        let floats = bytes.get(38..end).ok_or_else(bad)?;
        let deleted = bytes[1] == 1;
        let rest = &bytes[end..];
        Ok(VectorRecord {
            deleted,
            point: word(2),
            revision: word(10),
            lsn: word(18),
            updated_ms: word(26),
            vector: floats
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            payload: if rest.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(rest).map_err(storage)?
            },
        })
    }
}

/// The distance hnsw_rs orders by (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct GraphDistance(Metric);

/// Inner product, in eight lanes so that it vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Squared Euclidean distance, in eight lanes.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += (x - y) * (x - y);
    }
    sum
}

impl Distance<f32> for GraphDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = match self.0 {
            Metric::L2 => l2_squared(a, b),
            Metric::Cosine => (1.0 - dot(a, b)).max(0.0),
            Metric::Dot => {
                let s = dot(a, b);
                if s >= 0.0 { 1.0 / (1.0 + s) } else { 1.0 - s }
            }
        };
        // Finite inputs can still overflow (inf - inf is NaN); hnsw_rs asserts d >= 0.
        if d.is_nan() { f32::MAX } else { d }
    }
}

/// The distance an answer reports, in f64 (`indexed` vectors, as [`prepare`] made them).
pub fn true_distance(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    let dot64 = || {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            .sqrt(),
        Metric::Cosine => (1.0 - dot64()).max(0.0),
        Metric::Dot => -dot64(),
    }
}

/// A vector as the index holds it: normalised under cosine, as is otherwise.
pub fn prepare(metric: Metric, v: &[f32]) -> Vec<f32> {
    if metric != Metric::Cosine {
        return v.to_vec();
    }
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

/// A point recorded but not in the graph yet: (id, vector).
type PendingInsert = (u64, Arc<[f32]>);

/// One point of an index.
#[derive(Debug, Clone)]
struct Point {
    urn: Arc<str>,
    /// LSN that added it (0: a hole, never visible).
    added: u64,
    /// LSN that removed it (`u64::MAX` while live).
    removed: u64,
    vector: Arc<[f32]>,
    payload: Arc<Value>,
}

impl Point {
    fn hole() -> Point {
        Point {
            urn: Arc::from(""),
            added: 0,
            removed: 0,
            vector: Arc::from(Vec::new()),
            payload: Arc::new(Value::Null),
        }
    }

    fn visible(&self, at: u64) -> bool {
        self.added != 0 && self.added <= at && at < self.removed
    }
}

/// One (shard, namespace)'s index.
struct Index {
    settings: VectorSettings,
    graph: Hnsw<'static, f32, GraphDistance>,
    /// By point id.
    points: RwLock<Vec<Point>>,
    /// Points hidden (replaced or deleted) but still in the graph.
    hidden: AtomicU64,
    /// Points added or hidden since the last dump.
    changes: AtomicU64,
    /// When the last dump was taken (the clock of `committed`, ms).
    dumped_ms: AtomicU64,
    /// Loaded from a dump at start.
    from_dump: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("settings", &self.settings)
            .field("points", &self.graph.get_nb_point())
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

/// hnsw_rs's layer count (its maximum).
const LAYERS: usize = 16;

impl Index {
    fn new(settings: VectorSettings, capacity: usize) -> Index {
        Index {
            graph: Hnsw::new(
                settings.m,
                capacity.max(1024),
                LAYERS,
                settings.ef_construction,
                GraphDistance(settings.metric),
            ),
            settings,
            points: RwLock::new(Vec::new()),
            hidden: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            dumped_ms: AtomicU64::new(0),
            from_dump: false,
        }
    }

    /// An index of `live` points (id, point), inserted in parallel (the graph then depends on
    /// scheduling, which no answer's correctness does).
    fn build(settings: VectorSettings, live: Vec<(u64, Point)>, next: u64) -> Index {
        let index = Index::new(settings, live.len());
        {
            let mut points = index.points.write().expect("points lock");
            points.resize(next as usize, Point::hole());
            for (id, p) in &live {
                points[*id as usize] = p.clone();
            }
        }
        let data: Vec<(&[f32], usize)> = live
            .iter()
            .map(|(id, p)| (&p.vector[..], *id as usize))
            .collect();
        index.graph.parallel_insert_slice(&data);
        index
    }

    /// Records a point; [`insert`](Self::insert) then puts it into the graph (a search sees
    /// it once both happened and the watermark passed its LSN).
    fn add(&self, id: u64, point: Point) {
        let mut points = self.points.write().expect("points lock");
        if points.len() <= id as usize {
            points.resize(id as usize + 1, Point::hole());
        }
        points[id as usize] = point;
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts recorded points into the graph, in parallel when there are many.
    fn insert(&self, batch: &[PendingInsert]) {
        if batch.len() >= 64 {
            let data: Vec<(&[f32], usize)> =
                batch.iter().map(|(id, v)| (&v[..], *id as usize)).collect();
            self.graph.parallel_insert_slice(&data);
        } else {
            for (id, v) in batch {
                self.graph.insert_slice((v, *id as usize));
            }
        }
    }

    fn hide(&self, id: u64, lsn: u64) {
        let mut points = self.points.write().expect("points lock");
        if let Some(p) = points.get_mut(id as usize)
            && p.removed == u64::MAX
        {
            p.removed = lsn;
            self.hidden.fetch_add(1, Ordering::Relaxed);
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The k nearest visible points at watermark `at` matching `filter`, nearest first.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&Filter>,
        at: u64,
    ) -> Vec<Hit> {
        let points = self.points.read().expect("points lock");
        let accept = |p: &Point| p.visible(at) && filter.is_none_or(|f| f.matches(&p.payload));
        let metric = self.settings.metric;
        let hit = |id: usize, p: &Point| Hit {
            urn: p.urn.to_string(),
            distance: true_distance(metric, query, &p.vector),
            payload: p.payload.clone(),
            point: id as u64,
        };
        let exact = |points: &[Point]| -> Vec<Hit> {
            let mut all: Vec<Hit> = points
                .iter()
                .enumerate()
                .filter(|(_, p)| accept(p))
                .map(|(id, p)| hit(id, p))
                .collect();
            sort_hits(&mut all);
            all.truncate(k);
            all
        };
        if k == 0 {
            return Vec::new();
        }
        if let Some(_f) = filter {
            let matching = points.iter().filter(|p| accept(p)).count();
            if matching <= EXACT_MAX.max(k) {
                return exact(&points);
            }
        }
        let collect = |found: &[hnsw_rs::prelude::Neighbour]| -> Vec<Hit> {
            found
                .iter()
                .filter_map(|n| {
                    let id = n.get_origin_id();
                    points.get(id).filter(|p| accept(p)).map(|p| hit(id, p))
                })
                .collect()
        };
        // Without a payload filter, the plain graph walk (which stops early) with a little
        // slack for hidden points usually finds k visible ones; hnsw_rs's filtered walk
        // visits every candidate it ever queued, so it is the second try.
        let mut hits = Vec::new();
        if filter.is_none() {
            let hidden = self.hidden.load(Ordering::Relaxed) as usize;
            let slack = if hidden == 0 {
                0
            } else {
                (hidden * k / points.len().max(1)).max(4) + 4
            };
            let k2 = k + slack;
            hits = collect(&self.graph.search(query, k2, ef.max(k2)));
        }
        if hits.len() < k {
            let want = |id: &usize| points.get(*id).is_some_and(accept);
            let found = self
                .graph
                .search_filter(query, k, ef.max(k), Some(&want as &dyn FilterT));
            hits = collect(&found);
        }
        if hits.len() < k {
            // The graph walk found too few (a selective filter, many hidden points): answer
            // exactly rather than short.
            return exact(&points);
        }
        sort_hits(&mut hits);
        hits.dedup_by(|a, b| a.point == b.point);
        hits.truncate(k);
        hits
    }

    fn live_points(&self) -> Vec<(u64, Point)> {
        self.points
            .read()
            .expect("points lock")
            .iter()
            .enumerate()
            .filter(|(_, p)| p.added != 0 && p.removed == u64::MAX)
            .map(|(id, p)| (id as u64, p.clone()))
            .collect()
    }

    fn next(&self) -> u64 {
        self.points.read().expect("points lock").len() as u64
    }
}

/// A handle on one (shard, namespace)'s index.
#[derive(Debug, Clone)]
pub struct Searcher(Arc<Index>);

impl Searcher {
    /// The k nearest points visible at watermark `at` whose payload matches `filter`, nearest
    /// first, considering `ef` candidates (the namespace's `ef_search` when `None`; at least
    /// `k`). A selective filter, or too few matches through the graph, makes the search
    /// exact, so it returns k hits whenever k points match.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&Filter>,
        at: u64,
    ) -> Vec<Hit> {
        let index = &self.0;
        let q = prepare(index.settings.metric, query);
        let ef = ef.unwrap_or(index.settings.ef_search);
        index.search(&q, k, ef, filter, at)
    }
}

/// A kNN search over the state in `tx` itself, without an index (exact; for a shard whose
/// index does not exist).
pub fn exact_search(
    tx: &ReadTransaction,
    shard: ShardId,
    ns: &str,
    metric: Metric,
    query: &[f32],
    k: usize,
    filter: Option<&Filter>,
) -> Result<Vec<Hit>> {
    let Some(records) = read_table(tx, &records_name(shard))? else {
        return Ok(Vec::new());
    };
    let q = prepare(metric, query);
    let mut hits = Vec::new();
    for (urn, r) in namespace_records(&records, ns)? {
        if r.deleted || !filter.is_none_or(|f| f.matches(&r.payload)) {
            continue;
        }
        hits.push(Hit {
            urn,
            distance: true_distance(metric, &q, &prepare(metric, &r.vector)),
            payload: Arc::new(r.payload),
            point: r.point,
        });
    }
    sort_hits(&mut hits);
    hits.truncate(k);
    Ok(hits)
}

/// Every (URN, record) of namespace `ns` in a records table, in URN order.
fn namespace_records(
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    ns: &str,
) -> Result<Vec<(String, VectorRecord)>> {
    let prefix = urn_prefix(ns);
    let mut out = Vec::new();
    for item in records.range(prefix.as_str()..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        out.push((k.value().to_owned(), VectorRecord::decode(v.value())?));
    }
    Ok(out)
}

/// `urn`'s vector state in `shard` (`None`: never written).
pub fn get(tx: &ReadTransaction, shard: ShardId, urn: &str) -> Result<Option<VectorRecord>> {
    let Some(records) = read_table(tx, &records_name(shard))? else {
        return Ok(None);
    };
    records
        .get(urn)
        .map_err(storage)?
        .map(|v| VectorRecord::decode(v.value()))
        .transpose()
}

/// Orders hits nearest first, ties by URN (deterministic across shards and replicas).
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        a.distance
            .total_cmp(&b.distance)
            .then_with(|| a.urn.cmp(&b.urn))
    });
}

/// One answer of a kNN search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The resource.
    pub urn: String,
    /// Its distance to the query (see the module docs per metric).
    pub distance: f64,
    /// Its payload.
    pub payload: Arc<Value>,
    /// Its point id in its shard's index.
    pub point: u64,
}

/// What one index holds ([`VectorView::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Shard.
    pub shard: u32,
    /// Namespace.
    pub namespace: String,
    /// Points in the graph (hidden ones included).
    pub points: usize,
    /// Points replaced or deleted but still in the graph.
    pub hidden: usize,
    /// Whether it was loaded from a dump at start (rather than built from the view).
    pub from_dump: bool,
}

/// Where a namespace's config lives: the shard of `urn:themis:vector:_namespace:{ns}`.
pub type ConfigShard = Arc<dyn Fn(&str) -> ShardId + Send + Sync>;

/// The vector view.
pub struct VectorView {
    config_shard: ConfigShard,
    dir: Option<PathBuf>,
    indexes: Mutex<BTreeMap<(ShardId, String), Arc<Index>>>,
    /// Namespaces whose points could not be indexed (no config known when they were
    /// applied): built by their shard's worker after its next commit that finds the config
    /// (searches are exact until then).
    pending: Mutex<BTreeSet<(ShardId, String)>>,
}

impl std::fmt::Debug for VectorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorView")
            .field("dir", &self.dir)
            .field("indexes", &self.indexes)
            .finish_non_exhaustive()
    }
}

fn settings_from(tx_config: Option<namespaces::Registered>) -> Option<VectorSettings> {
    tx_config.and_then(|r| r.config.vector())
}

impl VectorView {
    /// A view whose indexes are dumped under `dir` (kept in memory only when `None`).
    pub fn new(config_shard: ConfigShard, dir: Option<PathBuf>) -> VectorView {
        VectorView {
            config_shard,
            dir,
            indexes: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    fn index(&self, shard: ShardId, ns: &str) -> Option<Arc<Index>> {
        self.indexes
            .lock()
            .expect("indexes lock")
            .get(&(shard, ns.to_owned()))
            .cloned()
    }

    fn dump_dir(&self, shard: ShardId, ns: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("vector")
                .join(shard.0.to_string())
                .join(themis_log::urn::namespace_file_name(ns))
        })
    }

    /// The settings of `ns` from the registry, inside a write transaction.
    fn settings_write(&self, tx: &WriteTransaction, ns: &str) -> Result<Option<VectorSettings>> {
        let shard = (self.config_shard)(ns);
        Ok(settings_from(namespaces::get_in_write(
            tx,
            shard,
            Model::Vector,
            ns,
        )?))
    }

    fn settings_read(&self, tx: &ReadTransaction, ns: &str) -> Result<Option<VectorSettings>> {
        let shard = (self.config_shard)(ns);
        Ok(settings_from(namespaces::get(
            tx,
            shard,
            Model::Vector,
            ns,
        )?))
    }

    /// The live points of `ns` in `shard` (id, point) and its next point id.
    fn load_points(
        records: &impl ReadableTable<&'static str, &'static [u8]>,
        next: &impl ReadableTable<&'static str, &'static [u8]>,
        ns: &str,
        metric: Metric,
    ) -> Result<(Vec<(u64, Point)>, u64)> {
        let mut live = Vec::new();
        for (urn, r) in namespace_records(records, ns)? {
            if r.deleted {
                continue;
            }
            live.push((
                r.point,
                Point {
                    urn: Arc::from(urn),
                    added: r.lsn,
                    removed: u64::MAX,
                    vector: Arc::from(prepare(metric, &r.vector)),
                    payload: Arc::new(r.payload),
                },
            ));
        }
        let next = next
            .get(ns)
            .map_err(storage)?
            .map_or(0, |v| read_u64(v.value()));
        Ok((live, next))
    }

    /// Makes the index of `ns` in `shard` from the state in `tx`: from its dump plus the
    /// points added since, or from scratch. `None` without a config.
    fn open_index(
        &self,
        shard: ShardId,
        ns: &str,
        settings: VectorSettings,
        records: &impl ReadableTable<&'static str, &'static [u8]>,
        next: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Arc<Index>> {
        let (live, next_id) = Self::load_points(records, next, ns, settings.metric)?;
        if let Some(dir) = self.dump_dir(shard, ns)
            && let Some(index) = load_dump(&dir, settings, &live, next_id)
        {
            return Ok(Arc::new(index));
        }
        let index = Index::build(settings, live, next_id);
        // Nothing is dumped yet: a dump of it will be due.
        index.changes.store(next_id.max(1), Ordering::Relaxed);
        Ok(Arc::new(index))
    }

    /// The index of `ns` in `shard`; `None` when the shard has none (no vectors there, or no
    /// config known when they were applied: [`exact_search`] answers then). Take it before
    /// reading the watermark to search at: an index replaced later (rebuilt without hidden
    /// points) only serves watermarks after its own.
    pub fn searcher(&self, shard: ShardId, ns: &str) -> Option<Searcher> {
        self.index(shard, ns).map(Searcher)
    }

    /// Every index this node holds.
    pub fn stats(&self) -> Vec<IndexStats> {
        self.indexes
            .lock()
            .expect("indexes lock")
            .iter()
            .map(|((shard, ns), i)| IndexStats {
                shard: shard.0,
                namespace: ns.clone(),
                points: i.graph.get_nb_point(),
                hidden: i.hidden.load(Ordering::Relaxed) as usize,
                from_dump: i.from_dump,
            })
            .collect()
    }

    /// What searches of `shard` can find at the watermark of the state in `tx` (for
    /// checkers): the live vector resources of the state, and the URNs a search reaches:
    /// the visible points of each namespace's index, or the live resources of a namespace
    /// without one (searched exactly).
    pub fn searchable(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        at: u64,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let mut live = BTreeSet::new();
        if let Some(records) = read_table(tx, &records_name(shard))? {
            for item in records.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                if !VectorRecord::decode(v.value())?.deleted {
                    live.insert(k.value().to_owned());
                }
            }
        }
        let indexes: BTreeMap<String, Arc<Index>> = self
            .indexes
            .lock()
            .expect("indexes lock")
            .iter()
            .filter(|((s, _), _)| *s == shard)
            .map(|((_, ns), i)| (ns.clone(), i.clone()))
            .collect();
        let mut found: BTreeSet<String> = live
            .iter()
            .filter(|urn| {
                let ns = urn.split(':').nth(3).unwrap_or("");
                !indexes.contains_key(ns)
            })
            .cloned()
            .collect();
        for index in indexes.values() {
            for p in index.points.read().expect("points lock").iter() {
                if p.visible(at) {
                    found.insert(p.urn.to_string());
                }
            }
        }
        Ok((live, found))
    }

    /// Dumps every index of `shard` that changed enough (`force`: any change), and rebuilds
    /// indexes whose hidden points outnumber the live ones.
    fn maintain(&self, shard: ShardId, now_ms: u64, force: bool) {
        let indexes: Vec<((ShardId, String), Arc<Index>)> = self
            .indexes
            .lock()
            .expect("indexes lock")
            .iter()
            .filter(|((s, _), _)| *s == shard)
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        for (key, mut index) in indexes {
            let hidden = index.hidden.load(Ordering::Relaxed) as usize;
            let total = index.graph.get_nb_point();
            if hidden > 1000 && hidden * 2 > total {
                let live = index.live_points();
                let rebuilt = Arc::new(Index::build(index.settings, live, index.next()));
                rebuilt.changes.store(1, Ordering::Relaxed);
                self.indexes
                    .lock()
                    .expect("indexes lock")
                    .insert(key.clone(), rebuilt.clone());
                index = rebuilt;
            }
            let changes = index.changes.load(Ordering::Relaxed);
            let since = now_ms.saturating_sub(index.dumped_ms.load(Ordering::Relaxed));
            let due =
                changes > 0 && (force || changes >= DUMP_AFTER_CHANGES || since >= DUMP_AFTER_MS);
            if let Some(dir) = self.dump_dir(key.0, &key.1)
                && due
            {
                match dump(&dir, &index) {
                    Ok(()) => {
                        index.changes.store(0, Ordering::Relaxed);
                        index.dumped_ms.store(now_ms, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(
                        shard = shard.0,
                        namespace = key.1,
                        "vector index dump failed (the next restart builds it from the view): {e}"
                    ),
                }
            }
        }
    }

    /// Builds `shard`'s indexes that waited for their namespace's config. Only `shard`'s own
    /// worker may call it, between its transactions: another worker's snapshot could miss a
    /// transaction of `shard` in flight, whose `apply` may already have made the index and
    /// changed it (replacing that index would lose the changes).
    fn build_pending(&self, tx: &ReadTransaction, shard: ShardId) -> Result<()> {
        let pending: Vec<String> = self
            .pending
            .lock()
            .expect("pending lock")
            .iter()
            .filter(|(s, _)| *s == shard)
            .map(|(_, ns)| ns.clone())
            .collect();
        for ns in pending {
            let Some(settings) = self.settings_read(tx, &ns)? else {
                continue;
            };
            let (Some(records), Some(next)) = (
                read_table(tx, &records_name(shard))?,
                read_table(tx, &next_name(shard))?,
            ) else {
                continue;
            };
            let index = self.open_index(shard, &ns, settings, &records, &next)?;
            self.indexes
                .lock()
                .expect("indexes lock")
                .insert((shard, ns.clone()), index);
            self.pending
                .lock()
                .expect("pending lock")
                .remove(&(shard, ns));
        }
        Ok(())
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// What a dump directory's `meta.json` says.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct DumpMeta {
    /// Subdirectory holding `index.hnsw.graph` and `index.hnsw.data`.
    files: String,
    /// Point ids below this are in the dump.
    next: u64,
    dimension: usize,
    metric: Metric,
    m: usize,
    ef_construction: usize,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `index` to a new subdirectory of `dir`, then points `meta.json` at it (written to a
/// temporary file and renamed, every file fsynced first), then removes older dumps.
fn dump(dir: &Path, index: &Index) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let next = index.next();
    // Two alternating directories: the one meta.json names stays intact until the new one
    // is complete.
    let current = std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<DumpMeta>(&b).ok())
        .map(|m| m.files);
    let files = if current.as_deref() == Some("dump-a") {
        "dump-b".to_owned()
    } else {
        "dump-a".to_owned()
    };
    let target = dir.join(&files);
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::create_dir_all(&target)?;
    index.graph.file_dump(&target, "index")?;
    for name in ["index.hnsw.graph", "index.hnsw.data"] {
        std::fs::File::open(target.join(name))?.sync_all()?;
    }
    fsync_dir(&target)?;
    let s = index.settings;
    let meta = DumpMeta {
        files: files.clone(),
        next,
        dimension: s.dimension,
        metric: s.metric,
        m: s.m,
        ef_construction: s.ef_construction,
    };
    let tmp = dir.join("meta.json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&meta)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("meta.json"))?;
    fsync_dir(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.path().is_dir() && name.to_string_lossy() != files.as_str() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Loads the dump in `dir` if it fits `settings` and the state (`live` points, `next` id):
/// its points are those with ids below its `next`, and those added since are inserted.
fn load_dump(
    dir: &Path,
    settings: VectorSettings,
    live: &[(u64, Point)],
    next: u64,
) -> Option<Index> {
    let meta: DumpMeta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    if meta.dimension != settings.dimension
        || meta.metric != settings.metric
        || meta.m != settings.m
        || meta.ef_construction != settings.ef_construction
        || meta.next > next
    {
        tracing::info!(dir = %dir.display(), "vector index dump does not fit the view; rebuilding");
        return None;
    }
    // The loaded graph borrows its loader; a loader without a memory map is a few paths, so
    // it is leaked (once per namespace and shard per process) to give the graph a 'static
    // lifetime.
    let io: &'static HnswIo = Box::leak(Box::new(HnswIo::new(&dir.join(&meta.files), "index")));
    let graph: Hnsw<'static, f32, GraphDistance> = match io
        .load_hnsw_with_dist(GraphDistance(settings.metric))
    {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "vector index dump does not load ({e}); rebuilding");
            return None;
        }
    };
    if graph.get_nb_point() < live.iter().filter(|(id, _)| *id < meta.next).count() {
        return None;
    }
    let index = Index {
        settings,
        graph,
        points: RwLock::new(vec![Point::hole(); next as usize]),
        hidden: AtomicU64::new(0),
        changes: AtomicU64::new(0),
        dumped_ms: AtomicU64::new(0),
        from_dump: true,
    };
    {
        let mut points = index.points.write().expect("points lock");
        for (id, p) in live {
            points[*id as usize] = p.clone();
        }
    }
    let fresh: Vec<(&[f32], usize)> = live
        .iter()
        .filter(|(id, _)| *id >= meta.next)
        .map(|(id, p)| (&p.vector[..], *id as usize))
        .collect();
    index.graph.parallel_insert_slice(&fresh);
    let in_graph = index.graph.get_nb_point() as u64;
    let live_count = live.len() as u64;
    index
        .hidden
        .store(in_graph.saturating_sub(live_count), Ordering::Relaxed);
    index.changes.store(fresh.len() as u64, Ordering::Relaxed);
    tracing::info!(
        dir = %dir.display(),
        loaded = in_graph as usize - fresh.len(),
        inserted = fresh.len(),
        "vector index loaded from its dump"
    );
    Some(index)
}

impl View for VectorView {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let mut records = tx
            .open_table(table(&records_name(shard)))
            .map_err(storage)?;
        let mut next = tx.open_table(table(&next_name(shard))).map_err(storage)?;
        // Graph insertions of this entry, per index (by namespace), done at its end.
        let mut inserts: BTreeMap<String, (Arc<Index>, Vec<PendingInsert>)> = BTreeMap::new();
        for e in &entry.events {
            let event = &e.event;
            let urn = &event.urn;
            if urn.model() != Model::Vector || urn.namespace() == CONFIG_NAMESPACE {
                continue;
            }
            let ns = urn.namespace();
            let key = urn.as_str();
            let previous = records
                .get(key)
                .map_err(storage)?
                .map(|v| VectorRecord::decode(v.value()))
                .transpose()?;
            let live = previous.as_ref().filter(|r| !r.deleted);
            let data = || event_data(event);
            let mut take_id = |ns: &str| -> Result<u64> {
                let id = next
                    .get(ns)
                    .map_err(storage)?
                    .map_or(0, |v| read_u64(v.value()));
                next.insert(ns, (id + 1).to_le_bytes().as_slice())
                    .map_err(storage)?;
                Ok(id)
            };
            let record = match event.op {
                Op::Put => {
                    let Some(vector) = event.vector.clone() else {
                        continue;
                    };
                    VectorRecord {
                        point: take_id(ns)?,
                        revision: e.revision,
                        lsn: entry.lsn.0,
                        updated_ms: entry.ts_ms,
                        deleted: false,
                        vector,
                        payload: data()?,
                    }
                }
                Op::Patch => {
                    let Some(live) = live else { continue };
                    let mut payload = live.payload.clone();
                    merge_patch(&mut payload, &data()?);
                    if !payload.is_object() {
                        payload = Value::Object(serde_json::Map::new());
                    }
                    VectorRecord {
                        point: take_id(ns)?,
                        revision: e.revision,
                        lsn: entry.lsn.0,
                        updated_ms: entry.ts_ms,
                        deleted: false,
                        vector: live.vector.clone(),
                        payload,
                    }
                }
                Op::Delete => VectorRecord {
                    point: previous.as_ref().map_or(0, |r| r.point),
                    revision: e.revision,
                    lsn: entry.lsn.0,
                    updated_ms: entry.ts_ms,
                    deleted: true,
                    vector: Vec::new(),
                    payload: Value::Null,
                },
                _ => continue,
            };
            // The index, made from the state before this event when it does not exist yet.
            let index = match self.index(shard, ns) {
                Some(i) => Some(i),
                None => match self.settings_write(tx, ns)? {
                    Some(settings) => {
                        let index = self.open_index(shard, ns, settings, &records, &next)?;
                        self.indexes
                            .lock()
                            .expect("indexes lock")
                            .insert((shard, ns.to_owned()), index.clone());
                        self.pending
                            .lock()
                            .expect("pending lock")
                            .remove(&(shard, ns.to_owned()));
                        Some(index)
                    }
                    None => {
                        self.pending
                            .lock()
                            .expect("pending lock")
                            .insert((shard, ns.to_owned()));
                        None
                    }
                },
            };
            records
                .insert(key, record.encode().as_slice())
                .map_err(storage)?;
            if let Some(index) = index {
                if let Some(old) = live {
                    index.hide(old.point, entry.lsn.0);
                }
                if !record.deleted {
                    let vector: Arc<[f32]> =
                        Arc::from(prepare(index.settings.metric, &record.vector));
                    index.add(
                        record.point,
                        Point {
                            urn: Arc::from(key),
                            added: entry.lsn.0,
                            removed: u64::MAX,
                            vector: vector.clone(),
                            payload: Arc::new(record.payload),
                        },
                    );
                    inserts
                        .entry(ns.to_owned())
                        .or_insert_with(|| (index.clone(), Vec::new()))
                        .1
                        .push((record.point, vector));
                }
            }
        }
        for (index, batch) in inserts.values() {
            index.insert(batch);
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        tx.delete_table(table(&records_name(shard)))
            .map_err(storage)?;
        tx.delete_table(table(&next_name(shard))).map_err(storage)?;
        self.indexes
            .lock()
            .expect("indexes lock")
            .retain(|(s, _), _| *s != shard);
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|(s, _)| *s != shard);
        if let Some(dir) = &self.dir {
            let path = dir.join("vector").join(shard.0.to_string());
            if path.exists()
                && let Err(e) = std::fs::remove_dir_all(&path)
            {
                tracing::warn!(path = %path.display(), "cannot remove old vector dumps: {e}");
            }
        }
        Ok(())
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        let records = digest_table(tx, &records_name(shard))?;
        let next = digest_table(tx, &next_name(shard))?;
        Ok(records ^ next.rotate_left(1))
    }

    fn open(&self, tx: &ReadTransaction, shard: ShardId) -> Result<()> {
        let (Some(records), Some(next)) = (
            read_table(tx, &records_name(shard))?,
            read_table(tx, &next_name(shard))?,
        ) else {
            return Ok(());
        };
        let namespaces: Vec<String> = next
            .iter()
            .map_err(storage)?
            .map(|item| item.map(|(k, _)| k.value().to_owned()).map_err(storage))
            .collect::<Result<_>>()?;
        for ns in namespaces {
            match self.settings_read(tx, &ns)? {
                Some(settings) => {
                    let index = self.open_index(shard, &ns, settings, &records, &next)?;
                    self.indexes
                        .lock()
                        .expect("indexes lock")
                        .insert((shard, ns), index);
                }
                None => {
                    self.pending
                        .lock()
                        .expect("pending lock")
                        .insert((shard, ns));
                }
            }
        }
        Ok(())
    }

    fn committed(
        &self,
        db: &redb::Database,
        shard: ShardId,
        _lsn: u64,
        durable: bool,
        now_ms: u64,
    ) {
        let waiting = self
            .pending
            .lock()
            .expect("pending lock")
            .iter()
            .any(|(s, _)| *s == shard);
        if waiting {
            let built = db
                .begin_read()
                .map_err(storage)
                .and_then(|tx| self.build_pending(&tx, shard));
            if let Err(e) = built {
                tracing::warn!(
                    shard = shard.0,
                    "vector: building a waiting index failed: {e}"
                );
            }
        }
        if durable {
            self.maintain(shard, now_ms, false);
        }
    }

    fn checkpoint(&self, shard: ShardId, now_ms: u64) {
        self.maintain(shard, now_ms, true);
    }
}

#[cfg(test)]
mod tests;
