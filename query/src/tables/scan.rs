//! A namespace's table as DataFusion scans it: the chunks of every partition, minus those
//! whose columns' minimum and maximum (their zone maps) show that a query's filters hold for
//! none of their rows; only the columns a query reads are handed on.

// DataFusion's signature names a std HashSet; nothing here iterates it.
#[allow(clippy::disallowed_types)]
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;

use super::{CachedTable, Chunk};

/// A column of a chunk: its least and greatest value (`None`: a type without an order kept,
/// such as JSON text, or only NULLs) and its NULLs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Zone {
    bounds: Option<(ScalarValue, ScalarValue)>,
    nulls: u64,
}

impl Zone {
    /// The zone map of `column`.
    pub(crate) fn of(column: &ArrayRef) -> Zone {
        use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
        use datafusion::logical_expr::Accumulator;
        let bound = |c: &ArrayRef, upper: bool| -> Result<ScalarValue> {
            if upper {
                let mut a = MaxAccumulator::try_new(c.data_type())?;
                a.update_batch(std::slice::from_ref(c))?;
                a.evaluate()
            } else {
                let mut a = MinAccumulator::try_new(c.data_type())?;
                a.update_batch(std::slice::from_ref(c))?;
                a.evaluate()
            }
        };
        let nulls = column.null_count() as u64;
        let ordered = !matches!(
            column.data_type(),
            datafusion::arrow::datatypes::DataType::Utf8
                | datafusion::arrow::datatypes::DataType::LargeUtf8
        );
        let bounds = if ordered && nulls < column.len() as u64 {
            match (bound(column, false), bound(column, true)) {
                (Ok(lo), Ok(hi)) if !lo.is_null() && !hi.is_null() => Some((lo, hi)),
                _ => None,
            }
        } else {
            None
        };
        Zone { bounds, nulls }
    }
}

/// The chunks of a cached table as a table DataFusion scans.
#[derive(Debug)]
pub(crate) struct ChunkTable {
    table: Arc<CachedTable>,
}

impl ChunkTable {
    pub(crate) fn new(table: Arc<CachedTable>) -> ChunkTable {
        ChunkTable { table }
    }
}

/// The statistics of a list of chunks, for [`PruningPredicateBuilder`].
struct Zones<'a> {
    schema: &'a SchemaRef,
    chunks: &'a [&'a Chunk],
}

impl Zones<'_> {
    fn bound(&self, column: &Column, upper: bool) -> Option<ArrayRef> {
        let i = self.schema.index_of(&column.name).ok()?;
        let data_type = self.schema.field(i).data_type();
        let values =
            self.chunks.iter().map(
                |c| match c.columns().zone(i).and_then(|z| z.bounds.as_ref()) {
                    Some((lo, hi)) => {
                        if upper {
                            hi.clone()
                        } else {
                            lo.clone()
                        }
                    }
                    None => ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null),
                },
            );
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for Zones<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.chunks.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let i = self.schema.index_of(&column.name).ok()?;
        let counts: UInt64Array = self
            .chunks
            .iter()
            .map(|c| c.columns().zone(i).map(|z| z.nulls))
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self.chunks.iter().map(|c| Some(c.rows() as u64)).collect();
        Some(Arc::new(counts))
    }

    #[allow(clippy::mutable_key_type, clippy::disallowed_types)] // DataFusion's signature
    fn contained(&self, _: &Column, _: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[async_trait::async_trait]
impl TableProvider for ChunkTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Chunks are skipped, rows are not: the filter still runs on what is read.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let predicate = match conjunction(filters.iter().cloned()) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(schema.clone())?;
                let physical = state.create_physical_expr(expr, &df_schema)?;
                PruningPredicateBuilder::new()
                    .with_file_schema(schema.clone())
                    .try_build(physical)
                    .ok()
                    .filter(|p| !p.always_true())
            }
            None => None,
        };
        // Per partition (on up to `target_partitions` threads: the first query after a restart
        // decodes the columns it reads from the view's blocks), the chunks its filters may
        // match, read as their live rows of the projected columns only.
        let parts: Vec<_> = self.table.parts.values().collect();
        let threads = state.config().target_partitions();
        let read = |part: &&Arc<super::Part>| -> Result<Vec<RecordBatch>> {
            let chunks: Vec<&Chunk> = part.all_chunks().collect();
            let keep = match &predicate {
                Some(p) => p.prune(&Zones {
                    schema: &schema,
                    chunks: &chunks,
                })?,
                None => vec![true; chunks.len()],
            };
            let mut batches = Vec::new();
            for (c, _) in chunks.iter().zip(keep).filter(|(_, k)| *k) {
                batches.extend(
                    c.live(projection.map(Vec::as_slice))
                        .map_err(|e| DataFusionError::Execution(e.to_string()))?,
                );
            }
            Ok(batches)
        };
        let partitions = themis_log::seam::map_scoped(&parts, threads, read)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let source = MemorySourceConfig::try_new(&partitions, projected, None)?.with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}
