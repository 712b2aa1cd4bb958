//! Searches as tables: the answer of a kNN search as Arrow rows, and the SQL table function
//! `knn(namespace, vector, k [, filter [, ef]])`.
//!
//! A kNN answer has the columns `urn`, `id` (the URN's id), `rank` (1 = nearest),
//! `distance` (see `themis_materializers::vector` per metric), `_shard` and `data` (the
//! payload, JSON). In SQL, `vector` is an array literal (`[0.1, 0.2]`) or a string holding a
//! JSON array, and `filter` a string holding a JSON filter object
//! (`themis_materializers::filter`); every argument must be a constant.

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
use themis_log::{ShardId, Token};
use themis_materializers::filter::Filter;
use themis_materializers::vector::Hit;
use themis_materializers::{KnnSearch, Materializer};

use crate::tables::TYPE_KEY;
use crate::{Error, Result};

/// The columns of a kNN answer.
pub fn knn_schema() -> SchemaRef {
    #[allow(clippy::disallowed_types)] // Arrow's field metadata is a std HashMap.
    let json = std::collections::HashMap::from([(TYPE_KEY.to_owned(), "json".to_owned())]);
    Arc::new(Schema::new(vec![
        Field::new("urn", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("distance", DataType::Float64, false),
        Field::new("_shard", DataType::Int32, false),
        Field::new("data", DataType::Utf8, true).with_metadata(json),
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
        id.append_value(h.urn.splitn(5, ':').nth(4).unwrap_or(""));
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

/// The `knn` table function of one statement: searches while the statement is planned (the
/// engine waited for the vector view first) and remembers the token of what it read and
/// the first error in our own terms.
#[derive(Debug)]
pub(crate) struct KnnFunction {
    pub(crate) views: Arc<Materializer>,
    pub(crate) token: Mutex<Token>,
    pub(crate) error: Mutex<Option<Error>>,
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

const KNN_USAGE: &str = "knn(namespace, vector, k [, filter [, ef]]): knn('items', [0.1, 0.2], 10, \
                         '{\"color\": \"red\"}')";

impl KnnFunction {
    fn args(&self, exprs: &[Expr]) -> std::result::Result<KnnArgs, String> {
        if !(3..=5).contains(&exprs.len()) {
            return Err(format!(
                "{KNN_USAGE} takes 3 to 5 arguments, not {}",
                exprs.len()
            ));
        }
        let values = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| fold(e).map_err(|m| format!("knn argument {}: {m}", i + 1)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let namespace = text(&values[0])
            .ok_or_else(|| {
                format!("knn's first argument is the namespace, a string ({KNN_USAGE})")
            })?
            .to_owned();
        let vector = floats(&values[1]).map_err(|m| format!("knn's second argument: {m}"))?;
        let k = integer(&values[2])
            .filter(|&k| k >= 0)
            .ok_or_else(|| format!("knn's third argument is k, a positive integer ({KNN_USAGE})"))?
            as usize;
        let filter = match values.get(3) {
            None | Some(ScalarValue::Null) => None,
            Some(v) if text(v).is_some_and(|s| s.trim().is_empty()) => None,
            Some(v) => {
                let s = text(v)
                    .ok_or("knn's fourth argument is a filter, a string holding a JSON object")?;
                Some(
                    serde_json::from_str(s)
                        .map_err(|e| format!("knn's filter is not JSON: {e}"))?,
                )
            }
        };
        let ef = match values.get(4) {
            None | Some(ScalarValue::Null) => None,
            Some(v) => Some(
                integer(v)
                    .filter(|&n| n > 0)
                    .ok_or("knn's fifth argument is ef, a positive integer")?
                    as usize,
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

    fn run(&self, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let args = self.args(exprs).map_err(invalid)?;
        let filter = args.filter()?;
        let (hits, token) = self.views.knn_now(&KnnSearch {
            namespace: &args.namespace,
            vector: &args.vector,
            k: args.k,
            ef: args.ef,
            filter: filter.as_ref(),
        })?;
        {
            let mut t = self.token.lock().expect("token lock");
            *t = meet(&t, &token);
        }
        let batch = knn_batch(&hits)?;
        let table = MemTable::try_new(knn_schema(), vec![vec![batch]])
            .map_err(|e| Error::Internal(e.strip_backtrace()))?;
        Ok(Arc::new(table))
    }
}

impl TableFunctionImpl for KnnFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        self.run(args.exprs()).map_err(|e| {
            let message = e.to_string();
            self.error.lock().expect("error lock").get_or_insert(e);
            DataFusionError::Plan(message)
        })
    }
}
