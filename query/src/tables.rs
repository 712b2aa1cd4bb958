//! Arrow tables built from the state views: one table per namespace, one partition per shard.
//!
//! A relational table has the implicit columns `id`, `_revision`, `_lsn`, `_shard`,
//! `_updated_ms` and the namespace's declared columns; values that do not convert to their
//! column's current type read as NULL (`docs/design/namespaces.md`). A document table has
//! the implicit columns, `data` (the whole document as JSON) and one column per top-level
//! field seen in the namespace's documents, typed by the values it holds (see `docs/API.md`).
//!
//! Tables are kept per namespace as chunks in id order and brought forward by what changed:
//! the views record the LSN of the last change per namespace and shard, the log says which
//! ids the entries since changed, and only the chunks holding those ids are rewritten
//! (`docs/design/columnar.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use budget::Slot;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, BooleanBuilder, Float64Builder,
    Int32Builder, Int64Builder, RecordBatch, RecordBatchOptions, StringBuilder, StringViewArray,
    StringViewBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::{
    concat_batches, filter, filter_record_batch, interleave_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use redb::ReadTransaction;
use serde_json::Value;
use themis_log::{Model, ShardId};
use themis_materializers::document::{DOCUMENTS, ROWS, RawState, Resource, StateView};
use themis_materializers::namespaces::{ColumnType, Registered, rfc3339_ms};

use crate::{Error, Result};

/// Field metadata key saying how a text column is to be read (`json`: JSON text).
pub const TYPE_KEY: &str = "themis.type";

/// Rows per Arrow batch of a partition built whole.
const BATCH_ROWS: usize = 8192;

/// Most log entries a partition is brought forward by; further behind, it is built whole
/// (reading that many entries costs about what building does).
pub(crate) const DELTA_ENTRIES_MAX: u64 = 4096;

/// The column types a table column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Timestamp,
    Json,
    Shard,
}

impl Kind {
    fn from_column(t: ColumnType) -> Kind {
        match t {
            ColumnType::Bool => Kind::Bool,
            ColumnType::Int64 => Kind::Int,
            ColumnType::Float64 => Kind::Float,
            ColumnType::String => Kind::Text,
            ColumnType::Timestamp => Kind::Timestamp,
            ColumnType::Json => Kind::Json,
        }
    }

    fn field(self, name: &str, nullable: bool) -> Field {
        let data_type = match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            // Text as string views: DataFusion compares and groups short strings inline (the
            // SQL benchmark's string filters and groupings ran ~3x faster than with Utf8).
            Kind::Text => DataType::Utf8View,
            Kind::Json => DataType::Utf8,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Kind::Shard => DataType::Int32,
        };
        let field = Field::new(name, data_type, nullable);
        if self == Kind::Json {
            // Arrow's field metadata is a std HashMap; nothing iterates it in a decision path.
            #[allow(clippy::disallowed_types)]
            let metadata =
                std::collections::HashMap::from([(TYPE_KEY.to_owned(), "json".to_owned())]);
            field.with_metadata(metadata)
        } else {
            field
        }
    }
}

/// One column being built.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringViewBuilder),
    Json(StringBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Shard(Int32Builder),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Builder {
        match kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Int => Builder::Int(Int64Builder::with_capacity(rows)),
            Kind::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            Kind::Text => Builder::Text(StringViewBuilder::with_capacity(rows)),
            Kind::Json => Builder::Json(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            Kind::Shard => Builder::Shard(Int32Builder::with_capacity(rows)),
        }
    }

    /// Appends `value` converted to `kind`, or NULL when it is absent or does not convert.
    fn push(&mut self, value: Option<&Value>) {
        let value = value.filter(|v| !v.is_null());
        match self {
            Builder::Bool(b) => b.append_option(value.and_then(Value::as_bool)),
            Builder::Int(b) => b.append_option(value.and_then(Value::as_i64)),
            Builder::Float(b) => b.append_option(value.and_then(Value::as_f64)),
            Builder::Text(b) => match value {
                Some(Value::String(s)) => b.append_value(s),
                _ => b.append_null(),
            },
            Builder::Json(b) => match value {
                Some(v) => b.append_value(v.to_string()),
                None => b.append_null(),
            },
            Builder::Timestamp(b) => b.append_option(value.and_then(|v| match v {
                Value::String(s) => rfc3339_ms(s),
                other => other.as_i64(),
            })),
            Builder::Shard(b) => b.append_option(value.and_then(Value::as_i64).map(|n| n as i32)),
        }
    }

    /// Appends an implicit column's text (`id`: a text builder).
    fn push_text(&mut self, text: &str) {
        if let Builder::Text(b) = self {
            b.append_value(text);
        }
    }

    /// Appends an implicit column's number (`_revision`, `_lsn`, `_updated_ms`, `_shard`).
    fn push_int(&mut self, n: i64) {
        match self {
            Builder::Int(b) => b.append_value(n),
            Builder::Shard(b) => b.append_value(n as i32),
            // The implicit columns' kinds are fixed by `implicit()`; a mismatch would leave
            // the column short, which `RecordBatch::try_new` refuses.
            _ => {}
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Json(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
            Builder::Shard(mut b) => Arc::new(b.finish()),
        }
    }
}

/// How a table is laid out: its columns, and where each column's value comes from.
#[derive(Debug, Clone)]
struct Layout {
    schema: SchemaRef,
    /// Per column: its kind and its source.
    columns: Vec<(Kind, Source)>,
}

#[derive(Debug, Clone)]
enum Source {
    Id,
    Revision,
    Lsn,
    Shard,
    UpdatedMs,
    /// The whole state.
    Data,
    /// A top-level field of the state.
    Field(String),
}

impl Layout {
    /// The columns holding a top-level field of the state: (column, field name).
    fn declared(&self) -> impl Iterator<Item = (usize, &str)> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, (_, source))| match source {
                Source::Field(name) => Some((i, name.as_str())),
                _ => None,
            })
    }
}

/// Implicit columns every table starts with.
fn implicit() -> Vec<(String, Kind, Source, bool)> {
    vec![
        ("id".into(), Kind::Text, Source::Id, false),
        ("_revision".into(), Kind::Int, Source::Revision, false),
        ("_lsn".into(), Kind::Int, Source::Lsn, false),
        ("_shard".into(), Kind::Shard, Source::Shard, false),
        ("_updated_ms".into(), Kind::Int, Source::UpdatedMs, false),
    ]
}

fn layout(columns: Vec<(String, Kind, Source, bool)>) -> Layout {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, kind, _, nullable)| kind.field(name, *nullable))
        .collect();
    Layout {
        schema: Arc::new(Schema::new(fields)),
        columns: columns.into_iter().map(|(_, k, s, _)| (k, s)).collect(),
    }
}

/// The layout of a relational namespace under `config`.
fn relational_layout(config: &Registered) -> Layout {
    let mut columns = implicit();
    for c in &config.config.columns {
        columns.push((
            c.name.clone(),
            Kind::from_column(c.column_type),
            Source::Field(c.name.clone()),
            true,
        ));
    }
    layout(columns)
}

/// Per top-level field of a shard's live documents: how many hold it, and how many of each
/// kind of value (what [`document_layout`] types the field by). Counts, not flags, so a delete
/// takes a document's fields away again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    present: i64,
    bools: i64,
    ints: i64,
    floats: i64,
    strings: i64,
    other: i64,
}

/// Field name → counts.
pub(crate) type Fields = BTreeMap<String, Counts>;

/// Adds (`sign` 1) or takes away (`sign` -1) the top-level fields of document `data`.
fn count_fields(fields: &mut Fields, data: &Value, sign: i64) {
    let Value::Object(map) = data else {
        return;
    };
    for (name, value) in map {
        let c = fields.entry(name.clone()).or_default();
        c.present += sign;
        match value {
            Value::Null => {}
            Value::Bool(_) => c.bools += sign,
            Value::Number(n) if n.is_i64() => c.ints += sign,
            Value::Number(_) => c.floats += sign,
            Value::String(_) => c.strings += sign,
            _ => c.other += sign,
        }
        if c.present == 0 {
            fields.remove(name);
        }
    }
}

/// The fields of `resources`' live documents.
fn fields_of<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Fields {
    let mut fields = Fields::new();
    for r in resources {
        if !r.state.deleted {
            count_fields(&mut fields, &r.state.data, 1);
        }
    }
    fields
}

/// The layout of a document namespace: implicit columns, `data`, then every top-level field
/// of its live documents in name order, typed by the values seen (only booleans: bool; only
/// integers: int64; numbers: float64; only strings: string; anything else: json). Fields
/// named like an implicit column or `data` are only in `data`.
fn document_layout(fields: &Fields) -> Layout {
    let mut columns = implicit();
    columns.push(("data".into(), Kind::Json, Source::Data, false));
    for (name, c) in fields {
        if columns.iter().any(|(n, ..)| n == name) {
            continue;
        }
        let seen = |n: i64| n > 0;
        let kind = match (seen(c.bools), seen(c.ints), seen(c.floats), seen(c.strings)) {
            _ if seen(c.other) => Kind::Json,
            (true, false, false, false) => Kind::Bool,
            (false, true, false, false) => Kind::Int,
            (false, _, true, false) => Kind::Float,
            (false, false, false, true) => Kind::Text,
            // Mixed kinds, or only nulls.
            _ => Kind::Json,
        };
        columns.push((name.to_owned(), kind, Source::Field(name.to_owned()), true));
    }
    layout(columns)
}

/// The live resources of `resources` (in id order) as batches of `layout`, at most
/// [`BATCH_ROWS`] rows each.
fn batches<'a>(
    layout: &Layout,
    shard: ShardId,
    resources: impl IntoIterator<Item = &'a Resource>,
) -> Result<Vec<RecordBatch>> {
    let live: Vec<&Resource> = resources.into_iter().filter(|r| !r.state.deleted).collect();
    let mut out = Vec::new();
    for chunk in live.chunks(BATCH_ROWS) {
        let mut builders: Vec<Builder> = layout
            .columns
            .iter()
            .map(|(kind, _)| Builder::new(*kind, chunk.len()))
            .collect();
        for r in chunk {
            for ((_, source), builder) in layout.columns.iter().zip(&mut builders) {
                match source {
                    Source::Id => builder.push_text(&r.id),
                    Source::Revision => builder.push_int(r.state.revision as i64),
                    Source::Lsn => builder.push_int(r.state.lsn as i64),
                    Source::Shard => builder.push_int(i64::from(shard.0)),
                    Source::UpdatedMs => builder.push_int(r.state.updated_ms as i64),
                    Source::Data => builder.push(Some(&r.state.data)),
                    Source::Field(name) => builder.push(r.state.data.get(name)),
                }
            }
        }
        let columns: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
        out.push(
            RecordBatch::try_new(layout.schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("building a batch: {e}")))?,
        );
    }
    Ok(out)
}

/// Rows of a partition in id order, at most `2 * BATCH_ROWS` of them (a chunk that grows past
/// that by inserts is split in two), minus the rows its partition's delta shadows.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Its first row's id: the chunk holds the ids from this one to the next chunk's first
    /// (in its level).
    first: String,
    /// Its columns, shared by every version of the partition that keeps the chunk.
    cols: Arc<Columns>,
    /// The rows (ascending) no longer in the partition: a newer state of the id is elsewhere
    /// in the partition, or the resource was deleted.
    masked: Vec<u32>,
}

/// A chunk's columns: built, or decoded from a view's block column by column on first use
/// (then kept), with each column's zone map made on first use too.
#[derive(Debug)]
pub(crate) struct Columns {
    schema: SchemaRef,
    rows: usize,
    /// Decoded columns are kept under the process's budget ([`budget`]) when they can be
    /// decoded again (`stored` is set); built ones are pinned.
    arrays: Vec<Arc<Slot>>,
    /// Per column: its bounds, to skip the chunk when a filter excludes them. They are the
    /// whole chunk's, masked rows included: bounds of a superset, so a skip is still sound.
    zones: Vec<OnceLock<scan::Zone>>,
    /// Where columns not decoded yet come from (`None`: built, every column set).
    stored: Option<blocks::Stored>,
}

impl Columns {
    fn built(batch: RecordBatch) -> Columns {
        let arrays = batch
            .columns()
            .iter()
            .map(|a| Slot::pinned(a.clone()))
            .collect();
        Columns {
            schema: batch.schema(),
            rows: batch.num_rows(),
            arrays,
            zones: (0..batch.num_columns()).map(|_| OnceLock::new()).collect(),
            stored: None,
        }
    }

    /// Columns `want`, decoding the ones not decoded yet (together, so that a block's stream
    /// is read once).
    fn get(&self, want: &[usize]) -> Result<Vec<ArrayRef>> {
        let mut got: Vec<Option<ArrayRef>> = want.iter().map(|&i| self.arrays[i].get()).collect();
        // Positions in `want` of the columns to decode (an evicted one decodes again).
        let missing: Vec<usize> = (0..want.len()).filter(|&k| got[k].is_none()).collect();
        if !missing.is_empty() {
            let stored = self
                .stored
                .as_ref()
                .ok_or_else(|| Error::Internal("a built chunk lacks a column".into()))?;
            let columns: Vec<usize> = missing.iter().map(|&k| want[k]).collect();
            let made = stored.arrays(&self.schema, self.rows, &columns)?;
            for (&k, array) in missing.iter().zip(made) {
                got[k] = Some(self.arrays[want[k]].admit(array));
            }
        }
        Ok(got.into_iter().map(|a| a.expect("set above")).collect())
    }

    /// Column `i`'s zone map (`None`: it could not be decoded; the chunk is not skipped).
    pub(crate) fn zone(&self, i: usize) -> Option<&scan::Zone> {
        if let Some(z) = self.zones[i].get() {
            return Some(z);
        }
        let column = self.get(&[i]).ok()?.pop()?;
        let _ = self.zones[i].set(scan::Zone::of(&column));
        self.zones[i].get()
    }
}

impl Chunk {
    /// `batch` (not empty) as a chunk.
    fn of(batch: RecordBatch) -> Chunk {
        let first = ids(&batch).value(0).to_owned();
        Chunk {
            first,
            cols: Arc::new(Columns::built(batch)),
            masked: Vec::new(),
        }
    }

    /// Rows held, masked ones included.
    pub(crate) fn rows(&self) -> usize {
        self.cols.rows
    }

    /// Its columns.
    pub(crate) fn columns(&self) -> &Columns {
        &self.cols
    }

    /// Its ids.
    fn ids(&self) -> Result<StringViewArray> {
        Ok(self.cols.get(&[0])?[0].as_string_view().clone())
    }

    /// Every column, as one batch.
    fn batch(&self) -> Result<RecordBatch> {
        let all: Vec<usize> = (0..self.cols.schema.fields().len()).collect();
        RecordBatch::try_new(self.cols.schema.clone(), self.cols.get(&all)?)
            .map_err(|e| Error::Internal(format!("a chunk's batch: {e}")))
    }

    /// Its live rows, columns `projection` (all when `None`): zero-copy slices (the pieces
    /// between masked rows) while the chunk masks at most [`SLICED_MASKED_MAX`] rows, else
    /// one batch filtered (a copy of the projected columns: an engine pays per batch, and a
    /// chunk masking many rows scattered would hand it as many small ones).
    pub(crate) fn live(&self, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
        let all: Vec<usize>;
        let want = match projection {
            Some(p) => p,
            None => {
                all = (0..self.cols.schema.fields().len()).collect();
                &all
            }
        };
        let schema = Arc::new(
            self.cols
                .schema
                .project(want)
                .map_err(|e| Error::Internal(format!("projecting a chunk: {e}")))?,
        );
        let batch = RecordBatch::try_new_with_options(
            schema,
            self.cols.get(want)?,
            &RecordBatchOptions::new().with_row_count(Some(self.cols.rows)),
        )
        .map_err(|e| Error::Internal(format!("a chunk's batch: {e}")))?;
        if self.masked.len() > SLICED_MASKED_MAX {
            let mut keep = BooleanBufferBuilder::new(batch.num_rows());
            keep.append_n(batch.num_rows(), true);
            for &m in &self.masked {
                keep.set_bit(m as usize, false);
            }
            let live = filter_record_batch(&batch, &BooleanArray::new(keep.finish(), None))
                .map_err(|e| Error::Internal(format!("a chunk's live rows: {e}")))?;
            return Ok(if live.num_rows() == 0 {
                Vec::new()
            } else {
                vec![live]
            });
        }
        let mut out = Vec::with_capacity(self.masked.len() + 1);
        let mut at = 0;
        for &m in &self.masked {
            let m = m as usize;
            if m > at {
                out.push(batch.slice(at, m - at));
            }
            at = m + 1;
        }
        if at < batch.num_rows() {
            out.push(batch.slice(at, batch.num_rows() - at));
        }
        Ok(out)
    }

    /// Whether row `row` is masked.
    fn is_masked(&self, row: usize) -> bool {
        self.masked.binary_search(&(row as u32)).is_ok()
    }

    /// The chunk without its masked rows (`None`: every row is masked). The columns decoded
    /// so far are filtered; the others stay to be decoded, from the same block, later.
    fn compacted(&self) -> Result<Option<Chunk>> {
        let rows = self.rows();
        if self.masked.len() >= rows {
            return Ok(None);
        }
        let mut keep = vec![true; rows];
        for &m in &self.masked {
            keep[m as usize] = false;
        }
        let keep = BooleanArray::from(keep);
        let ids = filter(&self.ids()?, &keep)
            .map_err(|e| Error::Internal(format!("compacting a chunk: {e}")))?;
        let width = self.cols.arrays.len();
        let evictable = self.cols.stored.is_some();
        let mut arrays: Vec<Arc<Slot>> = (0..width).map(|_| Arc::default()).collect();
        for (i, slot) in self.cols.arrays.iter().enumerate() {
            let kept = if i == 0 {
                ids.clone()
            } else if let Some(a) = slot.get() {
                filter(&a, &keep)
                    .map_err(|e| Error::Internal(format!("compacting a chunk: {e}")))?
            } else {
                continue;
            };
            if evictable {
                arrays[i].admit(kept);
            } else {
                arrays[i] = Slot::pinned(kept);
            }
        }
        let columns = Columns {
            schema: self.cols.schema.clone(),
            rows: rows - self.masked.len(),
            arrays,
            zones: (0..width).map(|_| OnceLock::new()).collect(),
            stored: self.cols.stored.as_ref().map(|s| s.keeping(&keep)),
        };
        Ok(Some(Chunk {
            first: ids.as_string_view().value(0).to_owned(),
            cols: Arc::new(columns),
            masked: Vec::new(),
        }))
    }
}

/// The `id` column (the first) of a table's batch.
fn ids(batch: &RecordBatch) -> &StringViewArray {
    batch.column(0).as_string_view()
}

/// One shard's partition of a namespace's table, as of the namespace's last change in that
/// shard: immutable chunks in id order, shared between the versions of the partition and the
/// queries that read them, and a small delta of the rows changed since (a newer version
/// copies the delta and the masks, and a chunk only when it folds its changes in).
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// The LSN of the shard's last entry that changed the namespace (`None`: none did).
    changed: Option<u64>,
    /// The schema of its chunks.
    schema: SchemaRef,
    /// Levels of chunks, none empty: in each, chunks in id order whose id ranges do not
    /// overlap. Levels may overlap each other (a partition taken from a view's runs has a
    /// level per run), but every id has at most one live row in the partition. The delta
    /// folds into the last level.
    levels: Vec<Vec<Chunk>>,
    /// The rows changed since the chunks were made, in id order (at most
    /// [`DELTA_ROWS_MAX`]): the newest state of each id a chunk masks, and ids no chunk holds.
    delta: Option<Chunk>,
    /// Documents: the fields of its live documents.
    fields: Fields,
}

impl Part {
    /// The live row holding `id`: the delta's, else a chunk's unless masked.
    fn locate(&self, id: &str) -> Result<Option<(&Chunk, usize)>> {
        if let Some(d) = &self.delta
            && let Ok(row) = row_of(&d.ids()?, id, 0)
        {
            return Ok(Some((d, row)));
        }
        for level in self.levels.iter().rev() {
            let chunk = &level[chunk_of(level, id)];
            if let Ok(row) = row_of(&chunk.ids()?, id, 0)
                && !chunk.is_masked(row)
            {
                return Ok(Some((chunk, row)));
            }
        }
        Ok(None)
    }

    /// The chunks a scan reads: every level's, then the delta.
    pub(crate) fn all_chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.levels.iter().flatten().chain(self.delta.as_ref())
    }
}

/// A namespace's table as one query reads it: per shard, one version of its partition.
#[derive(Debug)]
pub(crate) struct CachedTable {
    /// Relational: the config version the layout follows; documents: `None`.
    version: Option<u64>,
    schema: SchemaRef,
    parts: BTreeMap<ShardId, Arc<Part>>,
    /// How its partitions came to be: built whole, and brought forward by a delta.
    pub(crate) built: (u64, u64),
}

impl CachedTable {
    /// The schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whether the namespace exists: a relational one has a config, a document one has had
    /// a resource in some shard.
    pub(crate) fn known(&self) -> bool {
        self.version.is_some() || self.parts.values().any(|p| p.changed.is_some())
    }

    /// Decodes the columns of its chunks taken from blocks while the budget of decoded
    /// columns has room for them (what the first queries after a restart would otherwise
    /// pay): the declared columns of every chunk first, then `id`, then the other implicit
    /// ones, so that a table larger than the budget keeps what queries read most, not columns
    /// the sweep would soon drop. Returns whether every column was decoded.
    pub(crate) fn warm(&self, threads: usize) -> Result<bool> {
        let limit = budget::decoded_limit();
        let parts: Vec<&Arc<Part>> = self.parts.values().collect();
        let implicit = implicit().len();
        let columns = self.schema.fields().len();
        let passes = [
            (implicit..columns).collect::<Vec<_>>(),
            vec![0],
            (1..implicit).collect(),
        ];
        for pass in passes.iter().filter(|p| !p.is_empty()) {
            let done = themis_log::seam::map_scoped(&parts, threads, |part| -> Result<bool> {
                for chunk in part.all_chunks() {
                    if budget::decoded_bytes() >= limit {
                        return Ok(false);
                    }
                    chunk.cols.get(pass)?;
                }
                Ok(true)
            });
            if !done
                .into_iter()
                .try_fold(true, |all, part| Ok::<_, Error>(all && part?))?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Versions of a partition kept per shard, so that a query over a snapshot a little older
/// than the newest (it began before another query brought the table forward) still finds one
/// to start from.
const VERSIONS_KEPT: usize = 4;

/// The recent versions of one namespace's table, newest last per shard.
#[derive(Debug, Default)]
pub(crate) struct History {
    version: Option<u64>,
    parts: BTreeMap<ShardId, Vec<Arc<Part>>>,
}

impl History {
    /// A copy sharing the kept versions (for use outside the cache's lock).
    pub(crate) fn snapshot(&self) -> History {
        History {
            version: self.version,
            parts: self.parts.clone(),
        }
    }

    /// The newest kept version of `shard`'s partition not newer than `changed`.
    fn base(&self, shard: ShardId, changed: Option<u64>) -> Option<Arc<Part>> {
        self.parts
            .get(&shard)?
            .iter()
            .rev()
            .find(|p| p.changed <= changed)
            .cloned()
    }

    /// Keeps `table`'s partitions among the recent versions.
    pub(crate) fn remember(&mut self, table: &CachedTable) {
        if self.version != table.version {
            self.version = table.version;
            self.parts.clear();
        }
        for (shard, part) in &table.parts {
            let kept = self.parts.entry(*shard).or_default();
            // A document partition of the same version may have been built again for another
            // layout (another shard gained a field): keep the newer build, or every later
            // query would build this shard whole again.
            if let Some(same) = kept.iter_mut().find(|p| p.changed == part.changed) {
                if same.schema != part.schema {
                    *same = part.clone();
                }
                continue;
            }
            let at = kept.partition_point(|p| p.changed < part.changed);
            kept.insert(at, part.clone());
            if kept.len() > VERSIONS_KEPT {
                kept.remove(0);
            }
        }
    }
}

/// The state view holding `model`'s resources.
fn view_of(model: Model) -> &'static StateView {
    match model {
        Model::Document => &DOCUMENTS,
        _ => &ROWS,
    }
}

/// The ids of a namespace that entries `(after, upto]` of a shard's log may have changed, or
/// `None` when the log cannot say cheaply (too many entries, or no longer held): then the
/// partition is built whole.
pub(crate) type Changes<'a> = dyn Fn(ShardId, u64, u64) -> Result<Option<BTreeSet<String>>> + 'a;

/// What changed in one shard since its base version: per id (in id order) its state now
/// (`None`: deleted or never there).
type Delta = Vec<(String, Option<Resource>)>;

/// How one shard's partition is made: from `base` and `delta` when both are known, else
/// whole.
struct Plan {
    shard: ShardId,
    /// The version to make (the view's last change of the namespace in the shard).
    changed: Option<u64>,
    base: Option<Arc<Part>>,
    delta: Option<Delta>,
}

/// The table of `model`'s `namespace` over `shards`, reading the view state in `tx`.
///
/// Per shard it starts from the newest version in `history` not newer than the view and,
/// when the namespace changed since, reads the ids the log says changed and rewrites only the
/// chunks holding them: the cost follows the changes, not the table. A partition without a
/// usable version (the first query, a config change, a document layout change, a base too far
/// behind) is built whole from the view, relational ones on up to `threads` threads.
/// `config` is the relational namespace's config.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    tx: &ReadTransaction,
    model: Model,
    namespace: &str,
    config: Option<&Registered>,
    shards: &[ShardId],
    history: &History,
    changes: &Changes<'_>,
    threads: usize,
) -> Result<Arc<CachedTable>> {
    let view = view_of(model);
    let version = config.map(|c| c.version);
    let usable = history.version == version;
    let prefix = format!("urn:themis:{model}:{namespace}:");
    let mut plans: Vec<Plan> = Vec::new();
    for &s in shards {
        let changed = view.changed(tx, s, namespace).map_err(Error::View)?;
        let base = if usable {
            history.base(s, changed)
        } else {
            None
        };
        let delta = match &base {
            Some(b) if b.changed == changed => Some(Delta::new()),
            Some(b) => match changes(s, b.changed.unwrap_or(0), changed.unwrap_or(0))? {
                Some(ids) => {
                    let mut delta = Delta::with_capacity(ids.len());
                    for id in ids {
                        let state = view
                            .get(tx, s, &format!("{prefix}{id}"))
                            .map_err(Error::View)?
                            .filter(|d| !d.deleted);
                        let resource = state.map(|state| Resource {
                            id: id.clone(),
                            state,
                        });
                        delta.push((id, resource));
                    }
                    Some(delta)
                }
                None => None,
            },
            None => None,
        };
        plans.push(Plan {
            shard: s,
            changed,
            base,
            delta,
        });
    }
    let read = |s: ShardId| view.namespace(tx, s, namespace).map_err(Error::View);
    // Documents: per shard, its fields after the delta (counted once, for the layout and the
    // partition).
    let mut counted: Vec<Option<Fields>> = vec![None; plans.len()];
    let layout = match (model, config) {
        (Model::Relational, Some(config)) => relational_layout(config),
        (Model::Document, _) => {
            // The layout follows the fields of every shard's live documents: bring each
            // shard's counts forward first.
            let mut total = Fields::new();
            for (plan, counted) in plans.iter_mut().zip(&mut counted) {
                let fields = match (plan.base.as_ref(), plan.delta.as_ref()) {
                    (Some(b), Some(d)) => {
                        let fields = fields_after(b, d)?;
                        *counted = Some(fields.clone());
                        fields
                    }
                    _ => {
                        let resources = read(plan.shard)?;
                        let fields = fields_of(&resources);
                        // Built whole below; keep what was read.
                        plan.base = None;
                        plan.delta = Some(resources_as_delta(resources));
                        fields
                    }
                };
                for (name, c) in fields {
                    let t = total.entry(name).or_default();
                    t.present += c.present;
                    t.bools += c.bools;
                    t.ints += c.ints;
                    t.floats += c.floats;
                    t.strings += c.strings;
                    t.other += c.other;
                }
            }
            document_layout(&total)
        }
        (model, _) => {
            return Err(Error::Internal(format!(
                "no table layout for {model} namespaces"
            )));
        }
    };
    // Relational partitions to build whole: one shard per thread (a build reads and parses
    // the whole partition).
    let mut built: BTreeMap<ShardId, Arc<Part>> = BTreeMap::new();
    if model == Model::Relational {
        let wanted: Vec<(ShardId, Option<u64>)> = plans
            .iter()
            .filter(
                |p| !matches!((&p.base, &p.delta), (Some(b), Some(_)) if b.schema == layout.schema),
            )
            .map(|p| (p.shard, p.changed))
            .collect();
        let made = themis_log::seam::map_scoped(&wanted, threads, |&(s, changed)| {
            blocks::whole(tx, &layout, namespace, s, changed)
        });
        for ((s, _), part) in wanted.into_iter().zip(made) {
            built.insert(s, part?);
        }
    }
    let mut parts = BTreeMap::new();
    let (mut whole_builds, mut forward) = (0, 0);
    for (plan, counted) in plans.into_iter().zip(counted) {
        let Plan {
            shard: s,
            changed,
            base,
            delta,
        } = plan;
        let part = match (base, delta) {
            (Some(b), Some(d)) if b.schema == layout.schema => {
                if d.is_empty() {
                    b
                } else {
                    forward += 1;
                    let (levels, delta) = self::forward(&b, &layout, s, &d)?;
                    Arc::new(Part {
                        changed,
                        schema: layout.schema.clone(),
                        levels,
                        delta,
                        fields: counted.unwrap_or_default(),
                    })
                }
            }
            // Documents read whole above (a delta from nothing).
            (None, Some(d)) if model == Model::Document => {
                whole_builds += 1;
                let resources: Vec<Resource> = d.into_iter().filter_map(|(_, r)| r).collect();
                whole(&layout, s, changed, &resources, model)?
            }
            _ if model == Model::Relational => {
                whole_builds += 1;
                match built.remove(&s) {
                    Some(part) => part,
                    None => blocks::whole(tx, &layout, namespace, s, changed)?,
                }
            }
            _ => {
                whole_builds += 1;
                whole(&layout, s, changed, &read(s)?, model)?
            }
        };
        parts.insert(s, part);
    }
    Ok(Arc::new(CachedTable {
        version,
        schema: layout.schema,
        parts,
        built: (whole_builds, forward),
    }))
}

/// A shard's resources (read whole) as a delta from nothing.
fn resources_as_delta(resources: Vec<Resource>) -> Delta {
    resources
        .into_iter()
        .filter(|r| !r.state.deleted)
        .map(|r| (r.id.clone(), Some(r)))
        .collect()
}

/// A partition built whole from `resources`.
fn whole(
    layout: &Layout,
    shard: ShardId,
    changed: Option<u64>,
    resources: &[Resource],
    model: Model,
) -> Result<Arc<Part>> {
    let fields = if model == Model::Document {
        fields_of(resources)
    } else {
        Fields::new()
    };
    let chunks: Vec<Chunk> = batches(layout, shard, resources)?
        .into_iter()
        .map(Chunk::of)
        .collect();
    Ok(Arc::new(Part {
        changed,
        schema: layout.schema.clone(),
        levels: if chunks.is_empty() {
            Vec::new()
        } else {
            vec![chunks]
        },
        delta: None,
        fields,
    }))
}

/// Appends the row `id` in state `state` (its data JSON text) to `builders` of `layout`.
fn push_row(
    layout: &Layout,
    kinds: &[Kind],
    fields: &mut raw::Fields<'_>,
    builders: &mut [Builder],
    shard: ShardId,
    id: &str,
    state: &RawState<'_>,
) -> std::result::Result<(), serde_json::Error> {
    for ((_, source), builder) in layout.columns.iter().zip(builders.iter_mut()) {
        match source {
            Source::Id => builder.push_text(id),
            Source::Revision => builder.push_int(state.revision as i64),
            Source::Lsn => builder.push_int(state.lsn as i64),
            Source::Shard => builder.push_int(i64::from(shard.0)),
            Source::UpdatedMs => builder.push_int(state.updated_ms as i64),
            Source::Data => builder.push(Some(&serde_json::from_str::<Value>(state.data)?)),
            Source::Field(_) => {}
        }
    }
    fields.push(kinds, builders, state.data)
}

/// Where `id` is or would go: the index of the chunk covering it (the first chunk for ids
/// before every chunk's first).
fn chunk_of(chunks: &[Chunk], id: &str) -> usize {
    chunks
        .partition_point(|c| c.first.as_str() <= id)
        .saturating_sub(1)
}

/// The row of `id` in `ids` (ascending) at or after `from`: `Ok` where it is, `Err` where it
/// would go.
fn row_of(ids: &StringViewArray, id: &str, from: usize) -> std::result::Result<usize, usize> {
    let (mut lo, mut hi) = (from, ids.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ids.value(mid) < id {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo < ids.len() && ids.value(lo) == id {
        Ok(lo)
    } else {
        Err(lo)
    }
}

/// The fields of `base`'s live documents after `delta`: the old documents' fields (from
/// the chunks' `data`) taken away, the new ones' added.
fn fields_after(base: &Part, delta: &Delta) -> Result<Fields> {
    let mut fields = base.fields.clone();
    let data_column = base
        .schema
        .index_of("data")
        .map_err(|_| Error::Internal("a document table without data".into()))?;
    for (id, new) in delta {
        if let Some((chunk, row)) = base.locate(id)? {
            let column = chunk.cols.get(&[data_column])?.remove(0);
            let data = column.as_string::<i32>().value(row);
            let old: Value = serde_json::from_str(data)
                .map_err(|e| Error::Internal(format!("a document's data: {e}")))?;
            count_fields(&mut fields, &old, -1);
        }
        if let Some(r) = new {
            count_fields(&mut fields, &r.state.data, 1);
        }
    }
    Ok(fields)
}

/// Most rows of a partition's delta: past it, every chunk the delta touches folds it in.
/// (Small in unit tests, so that their small tables fold often.)
const DELTA_ROWS_MAX: usize = if cfg!(test) { 40 } else { BATCH_ROWS };

/// Most masked rows of a chunk a scan reads as slices of its columns; past it, as one batch
/// filtered (`Chunk::live`).
const SLICED_MASKED_MAX: usize = 3;

/// Most masked rows of a chunk: past it, the chunk folds its rows of the delta in (a copy of
/// the chunk every this many changes to it, where rewriting it at every change cost a copy per
/// change; and a scan reads at most this many pieces more of it).
const MASKED_MAX: usize = if cfg!(test) { 2 } else { 16 };

/// Where a row of a partition comes from while it is brought forward: the old delta, the
/// new states, or (when a chunk folds its changes in) the chunk itself.
const OLD: usize = 0;
const FRESH: usize = 1;
const CHUNK: usize = 2;

/// `base`'s chunks and delta brought forward by `changes`: the rows of changed ids are masked
/// in their chunks (zero copy) and their new states kept in the delta. A chunk with more than
/// [`MASKED_MAX`] masked rows is rewritten without them, with its rows of the delta folded in
/// when it is in the last level; once the delta holds more than [`DELTA_ROWS_MAX`] rows, every
/// chunk of the last level it touches folds them in. Untouched chunks are shared.
fn forward(
    base: &Part,
    layout: &Layout,
    shard: ShardId,
    changes: &Delta,
) -> Result<(Vec<Vec<Chunk>>, Option<Chunk>)> {
    let built = batches(
        layout,
        shard,
        changes.iter().filter_map(|(_, r)| r.as_ref()),
    )?;
    // Built just now: their string buffers hold nothing else, so no compaction.
    let fresh = concat_batches(&layout.schema, &built)
        .map_err(|e| Error::Internal(format!("merging rows: {e}")))?;
    let old = match &base.delta {
        Some(d) => d.batch()?,
        None => RecordBatch::new_empty(layout.schema.clone()),
    };

    // Mask the changed ids' rows in the chunks (at most one is live; older ones may be
    // masked already).
    let mut levels = base.levels.clone();
    for level in &mut levels {
        for (id, _) in changes {
            let at = chunk_of(level, id);
            let c = &mut level[at];
            if let Ok(row) = row_of(&c.ids()?, id, 0)
                && let Err(at) = c.masked.binary_search(&(row as u32))
            {
                c.masked.insert(at, row as u32);
            }
        }
    }

    // The delta after the changes: the old delta's rows of unchanged ids and the new states,
    // merged by id.
    let (old_ids, fresh_ids) = (ids(&old), ids(&fresh));
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(old.num_rows() + fresh.num_rows());
    let (mut o, mut f, mut c) = (0, 0, 0);
    while o < old.num_rows() || f < fresh.num_rows() {
        let take_old =
            f >= fresh.num_rows() || (o < old.num_rows() && old_ids.value(o) < fresh_ids.value(f));
        if take_old {
            // Unchanged unless the changes name it.
            let id = old_ids.value(o);
            while c < changes.len() && changes[c].0.as_str() < id {
                c += 1;
            }
            if c >= changes.len() || changes[c].0 != id {
                rows.push((OLD, o));
            }
            o += 1;
        } else {
            if o < old.num_rows() && old_ids.value(o) == fresh_ids.value(f) {
                o += 1;
            }
            rows.push((FRESH, f));
            f += 1;
        }
    }
    let id_of = |&(src, row): &(usize, usize)| {
        if src == OLD {
            old_ids.value(row)
        } else {
            fresh_ids.value(row)
        }
    };

    let sources = [&old, &fresh];
    let over = rows.len() > DELTA_ROWS_MAX;
    let home_level = levels.len().checked_sub(1);
    // Per delta row: the chunk of the last level its id falls in.
    let home: Vec<usize> = match home_level {
        Some(h) => rows
            .iter()
            .map(|r| chunk_of(&levels[h], id_of(r)))
            .collect(),
        None => Vec::new(),
    };
    let mut out_levels: Vec<Vec<Chunk>> = Vec::with_capacity(levels.len() + 1);
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for (l, level) in levels.into_iter().enumerate() {
        let is_home = Some(l) == home_level;
        let mut out = Vec::with_capacity(level.len());
        let mut next = 0; // into rows, for the last level
        for (i, chunk) in level.into_iter().enumerate() {
            let start = next;
            if is_home {
                while next < rows.len() && home[next] == i {
                    next += 1;
                }
            }
            let folds = chunk.masked.len() > MASKED_MAX || (over && next > start);
            if !folds {
                kept.extend_from_slice(&rows[start..next]);
                out.push(chunk);
                continue;
            }
            if next == start {
                // No rows of the delta to fold in: drop the masked rows, decoding nothing.
                out.extend(chunk.compacted()?);
                continue;
            }
            // The chunk's live rows and its rows of the delta, merged by id.
            let chunk_batch = chunk.batch()?;
            let chunk_ids = ids(&chunk_batch);
            let mut picks: Vec<(usize, usize)> = Vec::new();
            let (mut r, mut d) = (0, start);
            let mut masked = chunk.masked.iter().peekable();
            let n = chunk_batch.num_rows();
            while r < n || d < next {
                if r < n && masked.peek() == Some(&&(r as u32)) {
                    masked.next();
                    r += 1;
                    continue;
                }
                if d >= next || (r < n && chunk_ids.value(r) < id_of(&rows[d])) {
                    picks.push((CHUNK, r));
                    r += 1;
                } else {
                    picks.push(rows[d]);
                    d += 1;
                }
            }
            if picks.is_empty() {
                continue;
            }
            let merged = interleave_record_batch(&[&old, &fresh, &chunk_batch], &picks)
                .map_err(|e| Error::Internal(format!("merging rows: {e}")))?;
            out.extend(
                split(compact(&layout.schema, merged)?)
                    .into_iter()
                    .map(Chunk::of),
            );
        }
        if !out.is_empty() {
            out_levels.push(out);
        }
    }
    if home_level.is_none() {
        // Without chunks, the delta is all there is, and past its bound it becomes chunks.
        if over {
            let all = interleave_record_batch(&sources, &rows)
                .map_err(|e| Error::Internal(format!("merging rows: {e}")))?;
            let all = compact(&layout.schema, all)?;
            out_levels.push(split(all).into_iter().map(Chunk::of).collect());
            return Ok((out_levels, None));
        }
        kept = rows;
    }
    let delta = if kept.is_empty() {
        None
    } else {
        let batch = interleave_record_batch(&sources, &kept)
            .map_err(|e| Error::Internal(format!("merging rows: {e}")))?;
        Some(Chunk::of(compact(&layout.schema, batch)?))
    };
    Ok((out_levels, delta))
}

/// `batch` with its string views in buffers of its own.
///
/// Slicing, concatenating or interleaving string views keeps every data buffer of every
/// source: without the compaction a chunk made again and again would hold ever more
/// buffers, and the strings of rows long gone.
fn compact(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if !batch.columns().iter().any(|c| {
        c.as_string_view_opt()
            .is_some_and(|v| !v.data_buffers().is_empty())
    }) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_string_view_opt() {
            Some(v) if !v.data_buffers().is_empty() => Arc::new(v.gc()) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("merging rows: {e}")))
}

/// `batch` as chunks: none when empty, halves of at most [`BATCH_ROWS`]-ish rows when it
/// grew past twice that.
fn split(batch: RecordBatch) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Vec::new();
    }
    if rows <= 2 * BATCH_ROWS {
        return vec![batch];
    }
    let pieces = rows.div_ceil(BATCH_ROWS);
    let size = rows.div_ceil(pieces);
    (0..pieces)
        .map(|i| batch.slice(i * size, size.min(rows - i * size)))
        .filter(|b| b.num_rows() > 0)
        .collect()
}

mod blocks;
pub mod budget;
mod raw;
pub(crate) mod scan;
#[cfg(test)]
mod tests;
