//! Searches as tables: kNN, fulltext and hybrid answers as Arrow rows, through the query API
//! and as the SQL table functions
//! `knn(namespace, vector, k [, filter [, ef]])`, `search(namespace, query, k)` and
//! `hybrid(vector_namespace, vector, text_namespace, query, k)`.
//!
//! - kNN: `urn`, `id` (the URN's id), `rank` (1 = nearest), `distance` (see
//!   `themis_materializers::vector` per metric), `_shard`, `data` (the payload, JSON).
//! - search: `urn`, `id`, `rank`, `score` (BM25, higher is better), `_shard`, `data` (the
//!   resource's state).
//! - hybrid: reciprocal rank fusion of a kNN and a search over the same ids (a vector
//!   `urn:themis:vector:V:x` and a document `urn:themis:document:D:x` are the same item `x`):
//!   `id`, `rank`, `score` = Σ 1/(rrf_k + rank) over the lists holding it, `knn_rank`,
//!   `search_rank`, `distance`, `bm25`, `data` (the document's state, else the vector's
//!   payload).
//!
//! In SQL, `vector` is an array literal (`[0.1, 0.2]`) or a string holding a JSON array, and
//! `filter` a string holding a JSON filter object (`themis_materializers::filter`); every
//! argument must be a constant. A namespace of `search` may be qualified (`document.notes`,
//! `relational.orders`); a bare name is the document or relational namespace with text
//! fields (an error when both exist).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use themis_log::{Model, ShardId, Token};
use themis_materializers::filter::Filter;
use themis_materializers::fulltext::TextHit;
use themis_materializers::vector::Hit;
use themis_materializers::{KnnSearch, Materializer, TextSearch};

use crate::tables::TYPE_KEY;
use crate::{Error, Result};

/// The columns of a kNN answer.
pub fn knn_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("urn", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("distance", DataType::Float64, false),
        Field::new("_shard", DataType::Int32, false),
        json_field("data"),
    ]))
}

/// A kNN answer as one batch.
pub fn knn_batch(hits: &[(ShardId, Hit)]) -> Result<RecordBatch> {
    let mut urn = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut rank = Int64Builder::new();
    let mut distance = Float64Builder::new();
    let mut shard = Int32Builder::new();
    let mut data = StringBuilder::new();
    for (i, (s, h)) in hits.iter().enumerate() {
        urn.append_value(&h.urn);
        id.append_value(id_of(&h.urn));
        rank.append_value(i as i64 + 1);
        distance.append_value(h.distance);
        shard.append_value(s.0 as i32);
        data.append_value(serde_json::to_string(&*h.payload).expect("JSON values serialize"));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(urn.finish()),
        Arc::new(id.finish()),
        Arc::new(rank.finish()),
        Arc::new(distance.finish()),
        Arc::new(shard.finish()),
        Arc::new(data.finish()),
    ];
    RecordBatch::try_new(knn_schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// A search's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnArgs {
    /// The vector namespace.
    pub namespace: String,
    /// The query vector.
    pub vector: Vec<f32>,
    /// How many hits (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// A payload filter (`themis_materializers::filter`).
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Candidates to consider (the namespace's `ef_search` by default).
    #[serde(default)]
    pub ef: Option<usize>,
}

fn default_k() -> usize {
    10
}

impl KnnArgs {
    /// The parsed filter.
    pub fn filter(&self) -> Result<Option<Filter>> {
        self.filter
            .as_ref()
            .map(|f| Filter::parse(f).map_err(invalid))
            .transpose()
    }
}

/// A search that cannot run as asked.
pub fn invalid(message: String) -> Error {
    Error::View(themis_materializers::Error::InvalidSearch(message))
}

/// Per shard, the lower of two tokens' positions (what an answer reading both reflects).
pub fn meet(a: &Token, b: &Token) -> Token {
    if a.is_empty() {
        return b.clone();
    }
    if b.is_empty() {
        return a.clone();
    }
    let mut out = Token::new();
    for p in a.iter() {
        let lsn = b.get(p.shard).map_or(p.lsn, |l| l.min(p.lsn));
        out.observe(themis_log::Position {
            shard: p.shard,
            lsn,
        });
    }
    for p in b.iter() {
        if a.get(p.shard).is_none() {
            out.observe(p);
        }
    }
    out
}

/// The columns of a fulltext answer.
pub fn search_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("urn", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("_shard", DataType::Int32, false),
        json_field("data"),
    ]))
}

pub(crate) fn json_field(name: &str) -> Field {
    #[allow(clippy::disallowed_types)] // Arrow's field metadata is a std HashMap.
    let json = std::collections::HashMap::from([(TYPE_KEY.to_owned(), "json".to_owned())]);
    Field::new(name, DataType::Utf8, true).with_metadata(json)
}

pub(crate) fn id_of(urn: &str) -> &str {
    urn.splitn(5, ':').nth(4).unwrap_or("")
}

/// A fulltext answer as one batch.
pub fn search_batch(hits: &[(ShardId, TextHit, serde_json::Value)]) -> Result<RecordBatch> {
    let mut urn = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut rank = Int64Builder::new();
    let mut score = Float64Builder::new();
    let mut shard = Int32Builder::new();
    let mut data = StringBuilder::new();
    for (i, (s, h, d)) in hits.iter().enumerate() {
        urn.append_value(&h.urn);
        id.append_value(id_of(&h.urn));
        rank.append_value(i as i64 + 1);
        score.append_value(f64::from(h.score));
        shard.append_value(s.0 as i32);
        data.append_value(serde_json::to_string(d).expect("JSON values serialize"));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(urn.finish()),
        Arc::new(id.finish()),
        Arc::new(rank.finish()),
        Arc::new(score.finish()),
        Arc::new(shard.finish()),
        Arc::new(data.finish()),
    ];
    RecordBatch::try_new(search_schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// A fulltext search's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// The namespace (`notes`, `document.notes`, `relational.orders`).
    pub namespace: String,
    /// The query (tantivy's syntax; see `themis_materializers::fulltext`).
    pub query: String,
    /// How many hits (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
}

/// A hybrid search's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridArgs {
    /// The kNN part (its `k` is ignored: `candidates` is used).
    pub knn: KnnArgs,
    /// The fulltext part (its `k` is ignored: `candidates` is used).
    pub search: SearchArgs,
    /// How many fused hits (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// RRF's constant (default 60, as in Cormack et al. 2009).
    #[serde(default = "default_rrf_k")]
    pub rrf_k: f64,
    /// Hits taken from each list before fusing (default max(k, 50)).
    #[serde(default)]
    pub candidates: Option<usize>,
}

fn default_rrf_k() -> f64 {
    60.0
}

/// Resolves a search namespace to (model, name): a qualified name says its model; a bare one
/// is the namespace with text fields among document and relational ones.
pub fn search_namespace(views: &Materializer, name: &str) -> Result<(Model, String)> {
    if let Some(ns) = name.strip_prefix("document.") {
        return Ok((Model::Document, ns.to_owned()));
    }
    if let Some(ns) = name.strip_prefix("relational.") {
        return Ok((Model::Relational, ns.to_owned()));
    }
    let mut found = Vec::new();
    for model in [Model::Document, Model::Relational] {
        if views
            .namespace(model, name)?
            .is_some_and(|r| r.config.text().is_some())
        {
            found.push(model);
        }
    }
    match found.as_slice() {
        [model] => Ok((*model, name.to_owned())),
        [] => Err(Error::View(themis_materializers::Error::UnknownNamespace(
            format!(
                "no document or relational namespace {name:?} declares text_fields; declare them \
             with PUT /v1/namespaces/document/{name} {{\"text_fields\": [...]}}"
            ),
        ))),
        _ => Err(invalid(format!(
            "both document.{name} and relational.{name} declare text fields: name one"
        ))),
    }
}

/// The tables of a statement's search functions: what they read, and the first error in our
/// own terms.
#[derive(Debug)]
pub(crate) struct Searches {
    pub(crate) views: Arc<Materializer>,
    pub(crate) token: Mutex<Token>,
    pub(crate) error: Mutex<Option<Error>>,
}

impl Searches {
    pub(crate) fn new(views: Arc<Materializer>) -> Arc<Searches> {
        Arc::new(Searches {
            views,
            token: Mutex::new(Token::new()),
            error: Mutex::new(None),
        })
    }

    fn observe(&self, token: &Token) {
        let mut t = self.token.lock().expect("token lock");
        *t = meet(&t, token);
    }

    fn table(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
            .map_err(|e| Error::Internal(e.strip_backtrace()))?;
        Ok(Arc::new(table))
    }

    fn fail(&self, e: Error) -> DataFusionError {
        let message = e.to_string();
        self.error.lock().expect("error lock").get_or_insert(e);
        DataFusionError::Plan(message)
    }

    /// Runs a kNN search now.
    pub(crate) fn knn(&self, args: &KnnArgs) -> Result<(Vec<(ShardId, Hit)>, Token)> {
        let filter = args.filter()?;
        Ok(self.views.knn_now(&KnnSearch {
            namespace: &args.namespace,
            vector: &args.vector,
            k: args.k,
            ef: args.ef,
            filter: filter.as_ref(),
        })?)
    }

    /// Runs a fulltext search now.
    pub(crate) fn search(
        &self,
        args: &SearchArgs,
    ) -> Result<(themis_materializers::fulltext::TextHits, Token)> {
        let (model, ns) = search_namespace(&self.views, &args.namespace)?;
        Ok(self.views.search_now(&TextSearch {
            model,
            namespace: &ns,
            query: &args.query,
            k: args.k,
        })?)
    }

    /// Runs a hybrid search now.
    pub(crate) fn hybrid(&self, args: &HybridArgs) -> Result<(RecordBatch, Token)> {
        if !(args.rrf_k.is_finite() && args.rrf_k >= 0.0) {
            return Err(invalid(format!(
                "rrf_k must be a number ≥ 0, not {}",
                args.rrf_k
            )));
        }
        if args.k == 0 || args.k > themis_materializers::KNN_K_MAX {
            return Err(invalid(format!(
                "k must be 1 to {}, not {}",
                themis_materializers::KNN_K_MAX,
                args.k
            )));
        }
        let candidates = args.candidates.unwrap_or(args.k.max(50)).max(args.k);
        let mut knn = args.knn.clone();
        knn.k = candidates;
        let mut search = args.search.clone();
        search.k = candidates;
        let (near, t1) = self.knn(&knn)?;
        let (text, t2) = self.search(&search)?;
        Ok((fuse(&near, &text, args.k, args.rrf_k)?, meet(&t1, &t2)))
    }
}

/// The columns of a hybrid answer.
pub fn hybrid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("knn_rank", DataType::Int64, true),
        Field::new("search_rank", DataType::Int64, true),
        Field::new("distance", DataType::Float64, true),
        Field::new("bm25", DataType::Float64, true),
        json_field("data"),
    ]))
}

/// Reciprocal rank fusion of a kNN list and a search list by id.
pub fn fuse(
    near: &[(ShardId, Hit)],
    text: &[(ShardId, TextHit, serde_json::Value)],
    k: usize,
    rrf_k: f64,
) -> Result<RecordBatch> {
    #[derive(Default)]
    struct Fused {
        score: f64,
        knn_rank: Option<i64>,
        search_rank: Option<i64>,
        distance: Option<f64>,
        bm25: Option<f64>,
        data: Option<serde_json::Value>,
    }
    let mut by_id: BTreeMap<String, Fused> = BTreeMap::new();
    for (i, (_, h)) in near.iter().enumerate() {
        let f = by_id.entry(id_of(&h.urn).to_owned()).or_default();
        let rank = i as i64 + 1;
        f.score += 1.0 / (rrf_k + rank as f64);
        f.knn_rank = Some(rank);
        f.distance = Some(h.distance);
        f.data.get_or_insert_with(|| (*h.payload).clone());
    }
    for (i, (_, h, data)) in text.iter().enumerate() {
        let f = by_id.entry(id_of(&h.urn).to_owned()).or_default();
        let rank = i as i64 + 1;
        f.score += 1.0 / (rrf_k + rank as f64);
        f.search_rank = Some(rank);
        f.bm25 = Some(f64::from(h.score));
        f.data = Some(data.clone());
    }
    let mut all: Vec<(String, Fused)> = by_id.into_iter().collect();
    all.sort_by(|(a, x), (b, y)| y.score.total_cmp(&x.score).then_with(|| a.cmp(b)));
    all.truncate(k);
    let mut id = StringBuilder::new();
    let mut rank = Int64Builder::new();
    let mut score = Float64Builder::new();
    let mut knn_rank = Int64Builder::new();
    let mut search_rank = Int64Builder::new();
    let mut distance = Float64Builder::new();
    let mut bm25 = Float64Builder::new();
    let mut data = StringBuilder::new();
    for (i, (key, f)) in all.iter().enumerate() {
        id.append_value(key);
        rank.append_value(i as i64 + 1);
        score.append_value(f.score);
        knn_rank.append_option(f.knn_rank);
        search_rank.append_option(f.search_rank);
        distance.append_option(f.distance);
        bm25.append_option(f.bm25);
        data.append_value(
            serde_json::to_string(f.data.as_ref().unwrap_or(&serde_json::Value::Null))
                .expect("JSON values serialize"),
        );
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(rank.finish()),
        Arc::new(score.finish()),
        Arc::new(knn_rank.finish()),
        Arc::new(search_rank.finish()),
        Arc::new(distance.finish()),
        Arc::new(bm25.finish()),
        Arc::new(data.finish()),
    ];
    RecordBatch::try_new(hybrid_schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}

fn fold(expr: &Expr) -> std::result::Result<ScalarValue, String> {
    let simplifier = ExprSimplifier::new(SimplifyContext::default());
    match simplifier.simplify(expr.clone()) {
        Ok(Expr::Literal(v, _)) => Ok(v),
        Ok(other) => Err(format!("{other} is not a constant")),
        Err(e) => Err(e.strip_backtrace()),
    }
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        _ => None,
    }
}

fn integer(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
        _ => None,
    }
}

fn floats(v: &ScalarValue) -> std::result::Result<Vec<f32>, String> {
    if let Some(s) = text(v) {
        return serde_json::from_str::<Vec<f64>>(s)
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .map_err(|e| format!("the vector string is not a JSON array of numbers: {e}"));
    }
    let list = match v {
        ScalarValue::List(a) => a.value(0),
        ScalarValue::LargeList(a) => a.value(0),
        ScalarValue::FixedSizeList(a) => a.value(0),
        other => {
            return Err(format!(
                "the vector is an array like [0.1, 0.2], not {other}"
            ));
        }
    };
    let as_f64 = datafusion::arrow::compute::cast(&list, &DataType::Float64)
        .map_err(|e| format!("the vector holds numbers only: {e}"))?;
    let values = as_f64
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or("the vector holds numbers only")?;
    if values.null_count() > 0 {
        return Err("the vector holds no NULLs".into());
    }
    Ok(values.values().iter().map(|&x| x as f32).collect())
}

/// Folds a function's arguments to constants.
fn constants(
    name: &str,
    usage: &str,
    exprs: &[Expr],
    arity: std::ops::RangeInclusive<usize>,
) -> std::result::Result<Vec<ScalarValue>, String> {
    if !arity.contains(&exprs.len()) {
        return Err(format!(
            "{usage} takes {} to {} arguments, not {}",
            arity.start(),
            arity.end(),
            exprs.len()
        ));
    }
    exprs
        .iter()
        .enumerate()
        .map(|(i, e)| fold(e).map_err(|m| format!("{name} argument {}: {m}", i + 1)))
        .collect()
}

fn string_arg(
    values: &[ScalarValue],
    i: usize,
    what: &str,
    usage: &str,
) -> std::result::Result<String, String> {
    text(&values[i])
        .map(str::to_owned)
        .ok_or_else(|| format!("argument {} is {what}, a string ({usage})", i + 1))
}

fn k_arg(values: &[ScalarValue], i: usize, usage: &str) -> std::result::Result<usize, String> {
    integer(&values[i])
        .filter(|&k| k >= 0)
        .map(|k| k as usize)
        .ok_or_else(|| format!("argument {} is k, a positive integer ({usage})", i + 1))
}

const KNN_USAGE: &str = "knn(namespace, vector, k [, filter [, ef]]), like knn('items', [0.1, 0.2], 10, \
                         '{\"color\": \"red\"}')";
const SEARCH_USAGE: &str = "search(namespace, query, k), like search('notes', 'quick fox', 10)";
const HYBRID_USAGE: &str = "hybrid(vector_namespace, vector, text_namespace, query, k), like \
                            hybrid('items', [0.1, 0.2], 'notes', 'quick fox', 10)";

fn knn_args(exprs: &[Expr]) -> std::result::Result<KnnArgs, String> {
    let values = constants("knn", KNN_USAGE, exprs, 3..=5)?;
    let namespace = string_arg(&values, 0, "the namespace", KNN_USAGE)?;
    let vector = floats(&values[1]).map_err(|m| format!("knn's second argument: {m}"))?;
    let k = k_arg(&values, 2, KNN_USAGE)?;
    let filter = match values.get(3) {
        None | Some(ScalarValue::Null) => None,
        Some(v) if text(v).is_some_and(|s| s.trim().is_empty()) => None,
        Some(v) => {
            let s = text(v)
                .ok_or("knn's fourth argument is a filter, a string holding a JSON object")?;
            Some(serde_json::from_str(s).map_err(|e| format!("knn's filter is not JSON: {e}"))?)
        }
    };
    let ef = match values.get(4) {
        None | Some(ScalarValue::Null) => None,
        Some(v) => Some(
            integer(v)
                .filter(|&n| n > 0)
                .ok_or("knn's fifth argument is ef, a positive integer")? as usize,
        ),
    };
    Ok(KnnArgs {
        namespace,
        vector,
        k,
        filter,
        ef,
    })
}

fn search_args(exprs: &[Expr]) -> std::result::Result<SearchArgs, String> {
    let values = constants("search", SEARCH_USAGE, exprs, 3..=3)?;
    Ok(SearchArgs {
        namespace: string_arg(&values, 0, "the namespace", SEARCH_USAGE)?,
        query: string_arg(&values, 1, "the query", SEARCH_USAGE)?,
        k: k_arg(&values, 2, SEARCH_USAGE)?,
    })
}

fn hybrid_args(exprs: &[Expr]) -> std::result::Result<HybridArgs, String> {
    let values = constants("hybrid", HYBRID_USAGE, exprs, 5..=5)?;
    let k = k_arg(&values, 4, HYBRID_USAGE)?;
    Ok(HybridArgs {
        knn: KnnArgs {
            namespace: string_arg(&values, 0, "the vector namespace", HYBRID_USAGE)?,
            vector: floats(&values[1]).map_err(|m| format!("hybrid's second argument: {m}"))?,
            k,
            filter: None,
            ef: None,
        },
        search: SearchArgs {
            namespace: string_arg(&values, 2, "the text namespace", HYBRID_USAGE)?,
            query: string_arg(&values, 3, "the query", HYBRID_USAGE)?,
            k,
        },
        k,
        rrf_k: default_rrf_k(),
        candidates: None,
    })
}

const TS_RANGE_USAGE: &str = "ts_range(namespace, series, from, to [, step, agg]), like \
                              ts_range('cpu', 'host-1', 0, 3600000, 60000, 'avg') (times in ms \
                              or RFC 3339 strings)";

fn time_arg(values: &[ScalarValue], i: usize) -> std::result::Result<i64, String> {
    let v = &values[i];
    integer(v)
        .or_else(|| text(v).and_then(themis_materializers::namespaces::rfc3339_ms))
        .ok_or_else(|| {
            format!(
                "argument {} is a time, ms since the epoch or an RFC 3339 string ({TS_RANGE_USAGE})",
                i + 1
            )
        })
}

fn ts_range_args(exprs: &[Expr]) -> std::result::Result<crate::timeseries::TsRangeArgs, String> {
    let values = constants("ts_range", TS_RANGE_USAGE, exprs, 4..=6)?;
    let step = match values.get(4) {
        None | Some(ScalarValue::Null) => None,
        Some(v) => Some(
            integer(v)
                .filter(|&n| n > 0)
                .ok_or("ts_range's fifth argument is the step, a positive number of ms")?,
        ),
    };
    let agg = match values.get(5) {
        None | Some(ScalarValue::Null) => None,
        Some(_) => Some(string_arg(&values, 5, "the aggregate", TS_RANGE_USAGE)?),
    };
    Ok(crate::timeseries::TsRangeArgs {
        namespace: string_arg(&values, 0, "the namespace", TS_RANGE_USAGE)?,
        series: Some(string_arg(&values, 1, "the series id", TS_RANGE_USAGE)?),
        field: None,
        tags: BTreeMap::new(),
        from: time_arg(&values, 2)?,
        to: time_arg(&values, 3)?,
        step,
        agg,
    })
}

const TRAVERSE_USAGE: &str = "traverse(start, min_depth, max_depth, direction [, label]), like \
                              traverse('urn:themis:graph:social:alice', 1, 2, 'outbound', 'knows')";
const SHORTEST_PATH_USAGE: &str = "shortest_path(from, to [, weight]), like \
                                   shortest_path('urn:themis:graph:roads:a', 'urn:themis:graph:roads:b', 'km')";

fn depth_arg(values: &[ScalarValue], i: usize) -> std::result::Result<usize, String> {
    integer(&values[i])
        .filter(|&d| d >= 0)
        .map(|d| d as usize)
        .ok_or_else(|| {
            format!(
                "argument {} is a depth, an integer >= 0 ({TRAVERSE_USAGE})",
                i + 1
            )
        })
}

fn traverse_args(exprs: &[Expr]) -> std::result::Result<crate::graph::TraverseArgs, String> {
    let values = constants("traverse", TRAVERSE_USAGE, exprs, 4..=5)?;
    Ok(crate::graph::TraverseArgs {
        start: string_arg(&values, 0, "the start vertex", TRAVERSE_USAGE)?,
        min_depth: depth_arg(&values, 1)?,
        max_depth: depth_arg(&values, 2)?,
        direction: Some(string_arg(&values, 3, "the direction", TRAVERSE_USAGE)?),
        labels: match values.get(4) {
            None | Some(ScalarValue::Null) => Vec::new(),
            Some(_) => vec![string_arg(&values, 4, "an edge label", TRAVERSE_USAGE)?],
        },
        limit: crate::graph::SQL_LIMIT,
    })
}

fn shortest_path_args(
    exprs: &[Expr],
) -> std::result::Result<crate::graph::ShortestPathArgs, String> {
    let values = constants("shortest_path", SHORTEST_PATH_USAGE, exprs, 2..=3)?;
    Ok(crate::graph::ShortestPathArgs {
        from: string_arg(&values, 0, "the start vertex", SHORTEST_PATH_USAGE)?,
        to: string_arg(&values, 1, "the end vertex", SHORTEST_PATH_USAGE)?,
        direction: None,
        labels: Vec::new(),
        weight: match values.get(2) {
            None | Some(ScalarValue::Null) => None,
            Some(_) => Some(string_arg(
                &values,
                2,
                "the weight property",
                SHORTEST_PATH_USAGE,
            )?),
        },
    })
}

/// Which table function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Knn,
    Search,
    Hybrid,
    TsRange,
    Traverse,
    ShortestPath,
}

/// One table function of a statement.
#[derive(Debug)]
pub(crate) struct Function {
    pub(crate) kind: Kind,
    pub(crate) searches: Arc<Searches>,
}

impl Function {
    fn run(&self, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let s = &self.searches;
        match self.kind {
            Kind::Knn => {
                let args = knn_args(exprs).map_err(invalid)?;
                let (hits, token) = s.knn(&args)?;
                s.observe(&token);
                Searches::table(knn_batch(&hits)?)
            }
            Kind::Search => {
                let args = search_args(exprs).map_err(invalid)?;
                let (hits, token) = s.search(&args)?;
                s.observe(&token);
                Searches::table(search_batch(&hits)?)
            }
            Kind::Hybrid => {
                let args = hybrid_args(exprs).map_err(invalid)?;
                let (batch, token) = s.hybrid(&args)?;
                s.observe(&token);
                Searches::table(batch)
            }
            Kind::Traverse => {
                let args = traverse_args(exprs).map_err(invalid)?;
                let t = args.resolve()?;
                let (found, token) = s.views.graph_now(|g| g.traverse(&t))?;
                if found.truncated {
                    return Err(invalid(format!(
                        "traverse() reaches more than {} vertices: narrow it (depths, a label), or use the traverse query with its limit",
                        t.limit
                    )));
                }
                s.observe(&token);
                Searches::table(crate::graph::traverse_batch(&found)?)
            }
            Kind::ShortestPath => {
                let args = shortest_path_args(exprs).map_err(invalid)?;
                let p = args.resolve()?;
                let (found, token) = s.views.graph_now(|g| g.shortest_path(&p))?;
                s.observe(&token);
                Searches::table(crate::graph::path_batch(
                    found.as_ref(),
                    p.weight.as_deref(),
                )?)
            }
            Kind::TsRange => {
                let args = ts_range_args(exprs).map_err(invalid)?;
                let (urn, range) = args.resolve()?;
                let (answer, token) = s.views.ts_range_now(&urn, &range)?;
                s.observe(&token);
                Searches::table(crate::timeseries::batch(&answer)?)
            }
        }
    }
}

impl TableFunctionImpl for Function {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        self.run(args.exprs()).map_err(|e| self.searches.fail(e))
    }
}
