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
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;

use super::{CachedTable, Chunk};

/// Per column of a chunk: its least and greatest value (`None`: a type without an order
/// kept, such as JSON text, or only NULLs) and its NULLs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZoneMap {
    columns: Vec<(Option<(ScalarValue, ScalarValue)>, u64)>,
}

impl ZoneMap {
    /// The zone map of `batch`.
    pub(crate) fn of(batch: &RecordBatch) -> ZoneMap {
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
        let columns = batch
            .columns()
            .iter()
            .map(|c| {
                let nulls = c.null_count() as u64;
                let ordered = !matches!(
                    c.data_type(),
                    datafusion::arrow::datatypes::DataType::Utf8
                        | datafusion::arrow::datatypes::DataType::LargeUtf8
                );
                let bounds = if ordered && nulls < c.len() as u64 {
                    match (bound(c, false), bound(c, true)) {
                        (Ok(lo), Ok(hi)) if !lo.is_null() && !hi.is_null() => Some((lo, hi)),
                        _ => None,
                    }
                } else {
                    None
                };
                (bounds, nulls)
            })
            .collect();
        ZoneMap { columns }
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
        let values = self.chunks.iter().map(|c| {
            match c.zones.columns.get(i).and_then(|(b, _)| b.as_ref()) {
                Some((lo, hi)) => {
                    if upper {
                        hi.clone()
                    } else {
                        lo.clone()
                    }
                }
                None => ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null),
            }
        });
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
            .map(|c| c.zones.columns.get(i).map(|(_, n)| *n))
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .chunks
            .iter()
            .map(|c| Some(c.batch.num_rows() as u64))
            .collect();
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
        let mut partitions: Vec<Vec<RecordBatch>> = Vec::new();
        for part in self.table.parts.values() {
            let chunks: Vec<&Chunk> = part.all_chunks().collect();
            let keep = match &predicate {
                Some(p) => p.prune(&Zones {
                    schema: &schema,
                    chunks: &chunks,
                })?,
                None => vec![true; chunks.len()],
            };
            partitions.push(
                chunks
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .flat_map(|(c, _)| c.live())
                    .collect(),
            );
        }
        let source = MemorySourceConfig::try_new(&partitions, schema, projection.cloned())?
            .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}
