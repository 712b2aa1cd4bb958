//! The engine's side of AQL plans ([`crate::aql::plan::Runner`]): relational tables built from
//! the query's view snapshot (through the same cache as SQL's), and plans run by DataFusion
//! on the runtime the query came from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use redb::ReadTransaction;
use themis_log::{Model, ShardId};

use crate::aql::eval::EvalError;
use crate::{Error, QueryEngine};

/// Tables and plans for one AQL query.
pub(crate) struct TableRunner<'a> {
    pub(crate) engine: &'a QueryEngine,
    pub(crate) tx: &'a ReadTransaction,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) cancel: &'a AtomicBool,
}

fn failed(e: impl std::fmt::Display) -> EvalError {
    EvalError::Invalid(format!("running an AQL plan: {e}"))
}

impl crate::aql::plan::Runner for TableRunner<'_> {
    fn table(&self, ns: &str) -> Result<Option<(SchemaRef, Arc<dyn TableProvider>)>, EvalError> {
        let views = &self.engine.views;
        let Some(config) = views
            .namespace(Model::Relational, ns)
            .map_err(EvalError::View)?
        else {
            return Ok(None);
        };
        let shards: Vec<ShardId> = (0..self.engine.log.shard_count()).map(ShardId).collect();
        let table = self
            .engine
            .cached_table(self.tx, Model::Relational, ns, Some(&config), &shards)
            .map_err(|e| match e {
                Error::View(e) => EvalError::View(e),
                e => failed(e),
            })?;
        let schema = table.schema();
        let provider = crate::tables::scan::ChunkTable::new(table);
        Ok(Some((schema, Arc::new(provider))))
    }

    fn run(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>, EvalError> {
        let config = SessionConfig::new()
            .with_target_partitions(self.engine.config.target_partitions)
            .with_information_schema(false);
        let ctx = self.engine.session(config);
        let rows_max = self.engine.config.rows_max;
        // This is a blocking thread of the runtime (`seam::run_blocking`): it may wait for
        // the plan's tasks there.
        self.runtime.block_on(async {
            use futures::StreamExt;
            let frame = ctx.execute_logical_plan(plan).await.map_err(failed)?;
            let mut stream = frame.execute_stream().await.map_err(failed)?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(EvalError::Cancelled);
                }
                let batch = batch.map_err(failed)?;
                rows += batch.num_rows();
                if rows > rows_max {
                    return Err(EvalError::TooLarge(rows_max));
                }
                batches.push(batch);
            }
            Ok(batches)
        })
    }
}
