//! SQL over the views, through DataFusion.
//!
//! A query names tables; each is a namespace: `orders` or `relational.orders` is the relational
//! namespace `orders`, `document.users` the document namespace `users`. The engine waits until
//! the views cover the caller's token, reads every table it names from one snapshot of the
//! views (one partition per shard, cached as Arrow batches between queries, see [`tables`]),
//! plans and runs the statement, and answers with the batches and the token they reflect.
//!
//! Invariants:
//! - an answer reflects one consistent state of the views, at least as new as `min_token`;
//!   its token says which (per shard, the lowest watermark of the views read);
//! - only queries run: DDL, DML and statements (`SET`, transactions) are refused before they
//!   are planned into anything that could run.

pub mod aql;
mod aql_runner;
pub mod encode;
pub mod graph;
pub mod limits;
pub mod search;
pub mod tables;
pub mod timeseries;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::SessionStateDefaults;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::prelude::{SessionConfig, SessionContext};
use themis_log::{Log, Lsn, Model, ShardId, Token};
use themis_materializers::Materializer;
use themis_materializers::document::{DOCUMENTS, ROWS};
use tracing::Instrument;

use tables::CachedTable;

/// The catalog every table is in.
pub const CATALOG: &str = "themis";
/// The schema of relational namespaces (the default one).
pub const RELATIONAL_SCHEMA: &str = "relational";
/// The schema of document namespaces.
pub const DOCUMENT_SCHEMA: &str = "document";

/// Errors of a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse or plan, or is not a query.
    #[error("invalid SQL: {0}")]
    InvalidSql(String),
    /// A table that names no namespace.
    #[error("{0}")]
    UnknownTable(String),
    /// An AQL query that does not parse (with where).
    #[error(transparent)]
    AqlSyntax(#[from] aql::SyntaxError),
    /// An AQL query that parses but cannot run: an unknown collection or variable, a missing
    /// bind parameter, a value of the wrong kind.
    #[error("invalid AQL: {0}")]
    InvalidAql(String),
    /// The statement failed while it ran (a cast that does not apply, a division by zero, ...).
    #[error("query failed: {0}")]
    Failed(String),
    /// The answer has more rows than allowed.
    #[error("the answer has more than {max} rows; add a LIMIT or narrow the query")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The answer takes more bytes than allowed.
    #[error(
        "the answer takes more than {bytes_max} bytes; add a LIMIT, or select fewer or smaller columns"
    )]
    AnswerTooLarge {
        /// The limit.
        bytes_max: usize,
    },
    /// A value would be larger than a value may be: a function's answer or a literal
    /// ([`limits`]), or in AQL the rows of one operation.
    #[error("{0}")]
    ValueTooLarge(String),
    /// The query needs more memory for its sorts, joins and aggregates than the engine has
    /// left ([`QueryConfig::memory_max`], shared by the queries running at the time).
    #[error("the query ran out of memory: {0}")]
    MemoryExhausted(String),
    /// The statement ran longer than allowed.
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
    /// A view could not be read, or did not reach the token in time.
    #[error(transparent)]
    View(#[from] themis_materializers::Error),
    /// The log (a shard this node holds no replica of).
    #[error(transparent)]
    Log(#[from] themis_log::Error),
    /// A bug.
    #[error("query engine: {0}")]
    Internal(String),
}

impl Error {
    /// The stable problem+json code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidSql(_) => "invalid_sql",
            Error::UnknownTable(_) => "unknown_table",
            Error::AqlSyntax(_) | Error::InvalidAql(_) => "invalid_aql",
            Error::Failed(_) => "query_failed",
            Error::TooLarge { .. } | Error::AnswerTooLarge { .. } => "result_too_large",
            Error::ValueTooLarge(_) => "value_too_large",
            Error::MemoryExhausted(_) => "query_memory_exhausted",
            Error::Timeout(_) => "timeout",
            Error::View(e) => e.code(),
            Error::Log(e) => e.code(),
            Error::Internal(_) => "internal",
        }
    }
}

/// Result alias of queries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Most rows an answer may have.
    pub rows_max: usize,
    /// Most bytes one call of a scalar function may answer (one batch of rows, or one
    /// constant folded while planning; [`limits`]).
    pub value_bytes_max: usize,
    /// Most bytes an answer may take (its Arrow batches, before encoding); in AQL also the
    /// most the rows of one FOR, LET or RETURN may take together.
    pub answer_bytes_max: usize,
    /// Most bytes the sorts, joins and aggregates of all queries running at once may hold.
    pub memory_max: usize,
    /// Partitions DataFusion runs in parallel.
    pub target_partitions: usize,
}

/// How one AQL query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AqlOptions {
    /// Run the leading part of a query over relational tables as a DataFusion plan
    /// ([`aql::plan`]); `false`: the interpreter does everything (the same answer; to compare).
    pub plans: bool,
}

impl Default for AqlOptions {
    fn default() -> Self {
        Self { plans: true }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            rows_max: 1_000_000,
            value_bytes_max: 256 << 20,
            answer_bytes_max: 1 << 30,
            memory_max: 4 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// An answer: the rows and the token they reflect.
#[derive(Debug)]
pub struct Answer {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
    /// Per shard, the view watermark the rows reflect.
    pub token: Token,
    /// The rows stop at a limit the request set (a traversal's `limit`): more exist.
    pub truncated: bool,
}

impl Answer {
    /// Rows in the answer.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs SQL over this node's views.
#[derive(Debug)]
pub struct QueryEngine {
    log: Arc<Log>,
    views: Arc<Materializer>,
    config: QueryConfig,
    cache: Mutex<BTreeMap<(Model, String), tables::History>>,
    /// Table partitions built whole, and brought forward by the log's changes.
    built: (AtomicU64, AtomicU64),
    /// The memory pool every query draws on.
    runtime: Arc<RuntimeEnv>,
    /// DataFusion's scalar functions, each checked ([`limits`]).
    functions: Vec<Arc<ScalarUDF>>,
    /// The planners of SQL operators: ours for `||`, then DataFusion's.
    planners: Vec<Arc<dyn ExprPlanner>>,
}

/// A table a statement names, resolved to a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Named {
    reference: TableReference,
    model: Model,
    namespace: String,
}

/// Table functions: a bare reference to one of these names is the function, not a table
/// (`relational.knn` still names a namespace called `knn`).
pub const TABLE_FUNCTIONS: [&str; 6] = [
    "knn",
    "search",
    "hybrid",
    "ts_range",
    "traverse",
    "shortest_path",
];

fn is_function(reference: &TableReference) -> bool {
    matches!(reference, TableReference::Bare { table } if TABLE_FUNCTIONS.contains(&table.as_ref()))
}

fn resolve(reference: &TableReference) -> Result<Named> {
    if let Some(catalog) = reference.catalog()
        && catalog != CATALOG
    {
        return Err(Error::UnknownTable(format!(
            "no catalog {catalog:?} (the only one is {CATALOG:?})"
        )));
    }
    let model = match reference.schema() {
        None | Some(RELATIONAL_SCHEMA) => Model::Relational,
        Some(DOCUMENT_SCHEMA) => Model::Document,
        Some(other) => {
            return Err(Error::UnknownTable(format!(
                "no schema {other:?}: tables are relational namespaces (`orders` or \
                 `relational.orders`) or document namespaces (`document.users`)"
            )));
        }
    };
    Ok(Named {
        reference: reference.clone(),
        model,
        namespace: reference.table().to_owned(),
    })
}

/// Deepest nesting of expressions and subqueries a statement may have. Planning recurses over
/// the expression tree, partly without stack checks (column naming), so a deeper tree could
/// overflow the stack instead of failing; the server's threads have 16 MiB of stack, which
/// covers this depth with a wide margin even in a debug build (about 7 KiB per level).
pub const MAX_NESTING: usize = 500;

struct Nesting {
    depth: usize,
}

impl datafusion::sql::sqlparser::ast::Visitor for Nesting {
    type Break = ();

    fn pre_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.depth -= 1;
        std::ops::ControlFlow::Continue(())
    }
}

/// Refuses anything but a query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN` of one) before it is
/// planned.
fn check_is_query(statement: &datafusion::sql::parser::Statement) -> Result<()> {
    use datafusion::sql::parser::Statement as Df;
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    let ok = match statement {
        Df::Statement(s) => match s.as_ref() {
            Sql::Query(_) => true,
            Sql::Explain { statement, .. } => matches!(statement.as_ref(), Sql::Query(_)),
            _ => false,
        },
        Df::Explain(e) => matches!(
            e.statement.as_ref(),
            Df::Statement(s) if matches!(s.as_ref(), Sql::Query(_))
        ),
        _ => false,
    };
    if ok {
        use datafusion::sql::sqlparser::ast::Visit;
        let inner = match statement {
            Df::Statement(s) => Some(s.as_ref()),
            Df::Explain(e) => match e.statement.as_ref() {
                Df::Statement(s) => Some(s.as_ref()),
                _ => None,
            },
            _ => None,
        };
        if let Some(s) = inner
            && s.visit(&mut Nesting { depth: 0 }).is_break()
        {
            return Err(Error::InvalidSql(format!(
                "expressions are nested more than {MAX_NESTING} levels deep (a long chain of \
                 AND/OR/+ counts one level per operator); use IN (...) or split the query"
            )));
        }
        Ok(())
    } else {
        Err(Error::InvalidSql(
            "only queries run here (SELECT, WITH, VALUES, EXPLAIN); data changes are appends \
             to the log, and namespaces are declared with PUT /v1/namespaces/{model}/{ns}"
                .into(),
        ))
    }
}

/// A DataFusion error: a value or the memory over its limit, ours (`Internal`) when
/// DataFusion failed, the query's otherwise (`user`: `InvalidSql` while planning, `Failed`
/// while running).
fn df_error(e: DataFusionError, user: fn(String) -> Error) -> Error {
    match e.find_root() {
        DataFusionError::External(x) if x.is::<limits::ValueTooLarge>() => {
            Error::ValueTooLarge(x.to_string())
        }
        DataFusionError::ResourcesExhausted(m) => Error::MemoryExhausted(m.clone()),
        DataFusionError::Internal(m) => Error::Internal(m.clone()),
        _ => user(e.strip_backtrace()),
    }
}

fn plan_error(e: DataFusionError) -> Error {
    df_error(e, Error::InvalidSql)
}

fn run_error(e: DataFusionError) -> Error {
    df_error(e, Error::Failed)
}

impl QueryEngine {
    /// An engine over `views`.
    pub fn new(log: Arc<Log>, views: Arc<Materializer>, config: QueryConfig) -> Arc<QueryEngine> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(config.memory_max),
            std::num::NonZeroUsize::new(3).expect("3 > 0"),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .expect("a runtime without files builds");
        let functions = limits::checked_functions(
            &SessionStateDefaults::default_scalar_functions(),
            config.value_bytes_max,
        );
        let mut planners: Vec<Arc<dyn ExprPlanner>> = Vec::new();
        if let Some(concat) = limits::ConcatPlanner::new(&functions, config.value_bytes_max) {
            planners.push(Arc::new(concat));
        }
        planners.extend(SessionStateDefaults::default_expr_planners());
        Arc::new(QueryEngine {
            log,
            views,
            config,
            cache: Mutex::default(),
            built: Default::default(),
            runtime,
            functions,
            planners,
        })
    }

    /// A session of `config` over the engine's memory pool, with checked functions.
    fn session(&self, config: SessionConfig) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_scalar_functions(self.functions.clone())
            .with_expr_planners(self.planners.clone())
            .build();
        SessionContext::new_with_state(state)
    }

    /// Runs `sql` once the views cover `min_token`: waits at most `timeout` for the token,
    /// then runs for at most `timeout`.
    pub async fn sql(
        self: &Arc<Self>,
        sql: &str,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        // Every shard is a partition of every table: this node must hold them all.
        let shards: Vec<ShardId> = (0..self.log.shard_count()).map(ShardId).collect();
        for &s in &shards {
            self.log.shard(s)?;
        }
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, RELATIONAL_SCHEMA)
            .with_target_partitions(self.config.target_partitions)
            .with_information_schema(false);
        let ctx = self.session(config);
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::Internal("no default catalog".into()))?;
        catalog
            .register_schema(DOCUMENT_SCHEMA, Arc::new(MemorySchemaProvider::new()))
            .map_err(plan_error)?;
        let searches = search::Searches::new(self.views.clone());
        for (name, kind) in [
            ("knn", search::Kind::Knn),
            ("search", search::Kind::Search),
            ("hybrid", search::Kind::Hybrid),
            ("ts_range", search::Kind::TsRange),
            ("traverse", search::Kind::Traverse),
            ("shortest_path", search::Kind::ShortestPath),
        ] {
            ctx.register_udtf(
                name,
                Arc::new(search::Function {
                    kind,
                    searches: searches.clone(),
                }),
            );
        }
        let state = ctx.state();
        let statement = state
            .sql_to_statement(sql, &datafusion::config::Dialect::default())
            .map_err(plan_error)?;
        check_is_query(&statement)?;
        let mut named: Vec<Named> = Vec::new();
        let mut functions = false;
        for reference in state
            .resolve_table_references(&statement)
            .map_err(plan_error)?
        {
            if is_function(&reference) {
                functions = true;
                continue;
            }
            let n = resolve(&reference)?;
            if !named.contains(&n) {
                named.push(n);
            }
        }
        // The tables read the state views and their schemas the registry; the functions also
        // the vector, time-series and graph views, at their current watermarks. One deadline
        // for all of them.
        let kinds: &[&str] = if functions {
            &[
                themis_materializers::namespaces::KIND,
                themis_materializers::vector::KIND,
                themis_materializers::timeseries::KIND,
                themis_materializers::graph::KIND,
                DOCUMENTS.kind(),
                ROWS.kind(),
            ]
        } else {
            &[
                themis_materializers::namespaces::KIND,
                DOCUMENTS.kind(),
                ROWS.kind(),
            ]
        };
        // Debug spans time the phases (`--log themis_query=debug` prints them as they close).
        self.views
            .wait_for_kinds(kinds, min_token, timeout)
            .instrument(tracing::debug_span!("sql_wait"))
            .await?;

        let engine = self.clone();
        let tables_shards = shards.clone();
        let needed = named.clone();
        let (tables, tables_token) = if named.is_empty() && functions {
            (Vec::new(), Token::new())
        } else {
            let span = tracing::debug_span!("sql_tables");
            themis_log::seam::run_blocking(move || {
                span.in_scope(|| engine.tables(&needed, &tables_shards))
            })
            .await
            .map_err(|e| Error::Internal(format!("table builder: {e}")))??
        };

        for (n, table) in named.iter().zip(tables) {
            let provider = tables::scan::ChunkTable::new(table);
            let schema = match n.model {
                Model::Document => DOCUMENT_SCHEMA,
                _ => RELATIONAL_SCHEMA,
            };
            let full = TableReference::full(CATALOG, schema, n.namespace.as_str());
            ctx.register_table(full, Arc::new(provider))
                .map_err(plan_error)?;
        }
        let plan = match state
            .statement_to_plan(statement)
            .instrument(tracing::debug_span!("sql_plan"))
            .await
        {
            Ok(plan) => plan,
            Err(e) => {
                // A table function's own error, in its own terms.
                if let Some(mine) = searches.error.lock().expect("error lock").take() {
                    return Err(mine);
                }
                return Err(plan_error(e));
            }
        };
        let token = search::meet(&tables_token, &searches.token.lock().expect("token lock"));
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                Error::InvalidSql(format!(
                    "{} (only queries run here; data changes go through the log)",
                    e.strip_backtrace()
                ))
            })?;
        let run = async {
            let frame = ctx.execute_logical_plan(plan).await.map_err(plan_error)?;
            let schema = frame.schema().inner().clone();
            let mut stream = frame.execute_stream().await.map_err(run_error)?;
            let mut batches = Vec::new();
            let (mut rows, mut bytes) = (0usize, 0usize);
            use futures::StreamExt;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(run_error)?;
                rows += batch.num_rows();
                if rows > self.config.rows_max {
                    return Err(Error::TooLarge {
                        max: self.config.rows_max,
                    });
                }
                bytes += batch
                    .columns()
                    .iter()
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                    .sum::<usize>();
                if bytes > self.config.answer_bytes_max {
                    return Err(Error::AnswerTooLarge {
                        bytes_max: self.config.answer_bytes_max,
                    });
                }
                batches.push(batch);
            }
            Ok((schema, batches))
        };
        let (schema, batches) = tokio::time::timeout(timeout, run)
            .instrument(tracing::debug_span!("sql_run"))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        Ok(Answer {
            schema,
            batches,
            token,
            truncated: false,
        })
    }

    /// Runs AQL query `text` with bind parameters `params` once every view covers
    /// `min_token` (waiting at most `timeout`), then for at most `timeout`: every collection,
    /// graph and series it reads comes from one snapshot of the views, and the answer's token
    /// is the lowest watermark among everything read.
    pub async fn aql(
        self: &Arc<Self>,
        text: &str,
        params: serde_json::Map<String, serde_json::Value>,
        options: AqlOptions,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<aql::Outcome> {
        let query = aql::parser::parse_with(text, Some(aql::functions::check))?;
        for s in 0..self.log.shard_count() {
            self.log.shard(ShardId(s))?;
        }
        self.views
            .wait_for_kinds(
                &[
                    themis_materializers::namespaces::KIND,
                    DOCUMENTS.kind(),
                    ROWS.kind(),
                    themis_materializers::graph::KIND,
                    themis_materializers::timeseries::KIND,
                    themis_materializers::vector::KIND,
                ],
                min_token,
                timeout,
            )
            .await?;
        let engine = self.clone();
        let rows_max = self.config.rows_max;
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = cancel.clone();
        let runtime = tokio::runtime::Handle::current();
        let run = themis_log::seam::run_blocking(move || {
            let (snapshot, token) = engine.views.view_snapshot()?;
            let runner = aql_runner::TableRunner {
                engine: &engine,
                tx: snapshot.transaction(),
                runtime,
                cancel: &stop,
            };
            let limits = aql::eval::Limits {
                rows_max,
                value_bytes_max: engine.config.value_bytes_max,
                rows_bytes_max: engine.config.answer_bytes_max,
                scan_bytes_max: engine.config.memory_max,
            };
            let evaluator = aql::Evaluator::new(&snapshot, &params, &stop, limits);
            let evaluator = if options.plans {
                evaluator.with_runner(&runner)
            } else {
                evaluator
            };
            evaluator.run(&query, token).map_err(|e| match e {
                aql::eval::EvalError::Invalid(m) => Error::InvalidAql(m),
                aql::eval::EvalError::TooLarge(max) => Error::TooLarge { max },
                aql::eval::EvalError::ValueTooLarge(m) => Error::ValueTooLarge(m),
                aql::eval::EvalError::MemoryExhausted(m) => Error::MemoryExhausted(m),
                aql::eval::EvalError::Cancelled => Error::Timeout(timeout),
                aql::eval::EvalError::Failed(m) => Error::Failed(m),
                aql::eval::EvalError::View(e) => Error::View(e),
            })
        });
        match tokio::time::timeout(timeout, run).await {
            Ok(done) => done.map_err(|e| Error::Internal(format!("AQL evaluator: {e}")))?,
            Err(_) => {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(Error::Timeout(timeout))
            }
        }
    }

    /// A kNN search (`POST /v1/query {"knn": ...}`) once the vector view covers
    /// `min_token` (waiting at most `timeout`), as an answer with the columns of
    /// [`search::knn_schema`].
    pub async fn knn(
        &self,
        args: &search::KnnArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        let filter = args.filter()?;
        let (hits, token) = self
            .views
            .knn(
                &themis_materializers::KnnSearch {
                    namespace: &args.namespace,
                    vector: &args.vector,
                    k: args.k,
                    ef: args.ef,
                    filter: filter.as_ref(),
                },
                min_token,
                timeout,
            )
            .await?;
        Ok(Answer {
            schema: search::knn_schema(),
            batches: vec![search::knn_batch(&hits)?],
            token,
            truncated: false,
        })
    }

    /// A traversal (`POST /v1/query {"traverse": ...}`), as an answer with the columns of
    /// [`graph::traverse_schema`].
    pub async fn traverse(
        &self,
        args: &graph::TraverseArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        let t = args.resolve()?;
        let (found, token) = self
            .views
            .graph(min_token, timeout, |g| g.traverse(&t))
            .await?;
        Ok(Answer {
            schema: graph::traverse_schema(),
            batches: vec![graph::traverse_batch(&found)?],
            token,
            truncated: found.truncated,
        })
    }

    /// A shortest path (`POST /v1/query {"shortest_path": ...}`), as an answer with the
    /// columns of [`graph::path_schema`].
    pub async fn shortest_path(
        &self,
        args: &graph::ShortestPathArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        let p = args.resolve()?;
        let (found, token) = self
            .views
            .graph(min_token, timeout, |g| g.shortest_path(&p))
            .await?;
        Ok(Answer {
            schema: graph::path_schema(),
            batches: vec![graph::path_batch(found.as_ref(), p.weight.as_deref())?],
            token,
            truncated: false,
        })
    }

    /// A series' points in a range (`POST /v1/query {"ts_range": ...}`), as an answer with
    /// the columns of [`timeseries::schema`].
    pub async fn ts_range(
        &self,
        args: &timeseries::TsRangeArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        let (urn, range) = args.resolve()?;
        let (answer, token) = self
            .views
            .ts_range(&urn, &range, min_token, timeout)
            .await?;
        Ok(Answer {
            schema: timeseries::schema(),
            batches: vec![timeseries::batch(&answer)?],
            token,
            truncated: false,
        })
    }

    /// A fulltext search (`POST /v1/query {"search": ...}`), as an answer with the columns of
    /// [`search::search_schema`].
    pub async fn search(
        &self,
        args: &search::SearchArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        let (model, ns) = search::search_namespace(&self.views, &args.namespace)?;
        let (hits, token) = self
            .views
            .search(
                &themis_materializers::TextSearch {
                    model,
                    namespace: &ns,
                    query: &args.query,
                    k: args.k,
                },
                min_token,
                timeout,
            )
            .await?;
        Ok(Answer {
            schema: search::search_schema(),
            batches: vec![search::search_batch(&hits)?],
            token,
            truncated: false,
        })
    }

    /// A hybrid search (`POST /v1/query {"hybrid": ...}`): reciprocal rank fusion of a kNN
    /// and a fulltext search, columns of [`search::hybrid_schema`].
    pub async fn hybrid(
        &self,
        args: &search::HybridArgs,
        min_token: &Token,
        timeout: Duration,
    ) -> Result<Answer> {
        self.views
            .wait_for_kinds(
                &[
                    themis_materializers::namespaces::KIND,
                    themis_materializers::vector::KIND,
                    DOCUMENTS.kind(),
                    ROWS.kind(),
                ],
                min_token,
                timeout,
            )
            .await?;
        let searches = search::Searches::new(self.views.clone());
        let (batch, token) = searches.hybrid(args)?;
        Ok(Answer {
            schema: search::hybrid_schema(),
            batches: vec![batch],
            token,
            truncated: false,
        })
    }

    /// The tables `named` over `shards`, from one snapshot of the views, and that snapshot's
    /// token.
    fn tables(
        &self,
        named: &[Named],
        shards: &[ShardId],
    ) -> Result<(Vec<Arc<CachedTable>>, Token)> {
        // Configs first (the registry is a view of its own; a config newer than the rows only
        // adds nullable columns, see docs/design/namespaces.md).
        let mut configs = Vec::new();
        for n in named {
            let config = match n.model {
                Model::Relational => {
                    let found = self.views.namespace(Model::Relational, &n.namespace)?;
                    if found.is_none() {
                        return Err(self.unknown(n));
                    }
                    found
                }
                _ => None,
            };
            configs.push(config);
        }
        let kinds = [DOCUMENTS.kind(), ROWS.kind()];
        let (built, token) = self.views.snapshot(&kinds, |tx| {
            Ok(named
                .iter()
                .zip(&configs)
                .map(|(n, config)| {
                    self.cached_table(tx, n.model, &n.namespace, config.as_ref(), shards)
                })
                .collect::<Vec<_>>())
        })?;
        let mut result = Vec::new();
        for (n, table) in named.iter().zip(built) {
            let table = table?;
            if !table.known() {
                return Err(self.unknown(n));
            }
            result.push(table);
        }
        Ok((result, token))
    }

    /// `model`'s `namespace` as a table read in `tx`: the cached one where no shard's
    /// namespace changed since, rebuilt where one did; a known namespace's table replaces
    /// the cached one.
    pub(crate) fn cached_table(
        &self,
        tx: &redb::ReadTransaction,
        model: Model,
        namespace: &str,
        config: Option<&themis_materializers::namespaces::Registered>,
        shards: &[ShardId],
    ) -> Result<Arc<CachedTable>> {
        let key = (model, namespace.to_owned());
        // The kept versions are shared (`Arc`s): copy the few that matter out of the lock.
        let history = self
            .cache
            .lock()
            .expect("cache lock")
            .get(&key)
            .map(tables::History::snapshot)
            .unwrap_or_default();
        let changes =
            |s: ShardId, after: u64, upto: u64| self.changed_ids(model, namespace, s, after, upto);
        let table = tables::build(
            tx,
            model,
            namespace,
            config,
            shards,
            &history,
            &changes,
            self.config.target_partitions,
        )?;
        self.built.0.fetch_add(table.built.0, Ordering::Relaxed);
        self.built.1.fetch_add(table.built.1, Ordering::Relaxed);
        if table.known() {
            self.cache
                .lock()
                .expect("cache lock")
                .entry(key)
                .or_default()
                .remember(&table);
        }
        Ok(table)
    }

    /// Takes every relational namespace's table into the cache and decodes its columns,
    /// while the budget of decoded columns has room (`tables::budget`): what the first
    /// queries after a restart would otherwise pay. A node that does not hold every shard
    /// answers no SQL, and warms nothing. Returns how many namespaces were taken.
    pub fn warm(&self) -> Result<usize> {
        let shards: Vec<ShardId> = (0..self.log.shard_count()).map(ShardId).collect();
        if shards.iter().any(|&s| self.log.shard(s).is_err()) {
            return Ok(0);
        }
        let relational = Model::Relational.to_string();
        let mut warmed = 0;
        for registered in self.views.namespaces()? {
            if registered.model != relational {
                continue;
            }
            let named = Named {
                reference: TableReference::bare(registered.namespace.clone()),
                model: Model::Relational,
                namespace: registered.namespace,
            };
            let (tables, _) = self.tables(&[named], &shards)?;
            warmed += 1;
            if !tables[0].warm(self.config.target_partitions)? {
                break;
            }
        }
        Ok(warmed)
    }

    /// How many table partitions were built whole from the views, and how many were brought
    /// forward by the changes since a kept version (`docs/design/columnar.md`).
    pub fn partitions_built(&self) -> (u64, u64) {
        (
            self.built.0.load(Ordering::Relaxed),
            self.built.1.load(Ordering::Relaxed),
        )
    }

    /// The ids of `model`'s `namespace` that entries `(after, upto]` of `shard`'s log
    /// changed, read from the log; `None` when that is more than
    /// [`tables::DELTA_ENTRIES_MAX`] entries or the log no longer holds them.
    fn changed_ids(
        &self,
        model: Model,
        namespace: &str,
        shard: ShardId,
        after: u64,
        upto: u64,
    ) -> Result<Option<std::collections::BTreeSet<String>>> {
        if upto <= after || upto - after > tables::DELTA_ENTRIES_MAX {
            return Ok(None);
        }
        let shard = self.log.shard(shard)?;
        if shard.first_retained()?.0 > after + 1 {
            return Ok(None);
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut from = after + 1;
        while from <= upto {
            let (entries, _) = shard.committed_entries(Lsn(from), (upto + 1 - from) as usize)?;
            // A page that does not start at `from` (the log was purged meanwhile) would leave
            // changes out: build whole instead.
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                return Ok(None);
            };
            if first.lsn.0 != from {
                return Ok(None);
            }
            let last = last.lsn.0;
            for entry in entries.iter().filter(|e| e.lsn.0 <= upto) {
                for e in &entry.events {
                    let urn = &e.event.urn;
                    if urn.model() == model && urn.namespace() == namespace {
                        ids.insert(urn.id().to_owned());
                    }
                }
            }
            from = last + 1;
        }
        Ok(Some(ids))
    }

    fn unknown(&self, n: &Named) -> Error {
        let known: Vec<String> = match n.model {
            Model::Relational => self
                .views
                .namespaces()
                .map(|all| {
                    all.into_iter()
                        .filter(|r| r.model == Model::Relational.to_string())
                        .map(|r| r.namespace)
                        .collect()
                })
                .unwrap_or_default(),
            _ => self.document_namespaces().unwrap_or_default(),
        };
        Error::UnknownTable(format!(
            "no {} namespace {:?} (table {}); known: {}",
            n.model,
            n.namespace,
            n.reference,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }

    /// Every document namespace with resources (or tombstones) in a hosted shard.
    pub fn document_namespaces(&self) -> Result<Vec<String>> {
        let (mut all, _) = self.views.snapshot(&[DOCUMENTS.kind()], |tx| {
            let mut all = Vec::new();
            for s in self.log.shards() {
                all.extend(DOCUMENTS.namespaces(tx, s.id())?);
            }
            Ok(all)
        })?;
        all.sort();
        all.dedup();
        Ok(all)
    }
}
