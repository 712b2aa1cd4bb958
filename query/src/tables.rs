//! Arrow tables built from the state views: one table per namespace, one partition per shard.
//!
//! A relational table has the implicit columns `id`, `_revision`, `_lsn`, `_shard`,
//! `_updated_ms` and the namespace's declared columns; values that do not convert to their
//! column's current type read as NULL (`docs/design/namespaces.md`). A document table has
//! the implicit columns, `data` (the whole document as JSON) and one column per top-level
//! field seen in the namespace's documents, typed by the values it holds (see `docs/API.md`).
//!
//! Tables are cached per namespace and rebuilt only for the shards whose namespace changed
//! (the views record the LSN of the last change per namespace and shard).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, StringViewBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use redb::ReadTransaction;
use serde_json::Value;
use themis_log::{Model, ShardId};
use themis_materializers::document::{DOCUMENTS, ROWS, Resource, StateView};
use themis_materializers::namespaces::{ColumnType, Registered, rfc3339_ms};

use crate::{Error, Result};

/// Field metadata key saying how a text column is to be read (`json`: JSON text).
pub const TYPE_KEY: &str = "themis.type";

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 8192;

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

/// The layout of a document namespace: implicit columns, `data`, then every top-level field
/// of its live documents in name order, typed by the values seen (only booleans: bool; only
/// integers: int64; numbers: float64; only strings: string; anything else: json). Fields
/// named like an implicit column or `data` are only in `data`.
fn document_layout(shards: &[(ShardId, Vec<Resource>)]) -> Layout {
    #[derive(Default, Clone, Copy)]
    struct Seen {
        bools: bool,
        ints: bool,
        floats: bool,
        strings: bool,
        other: bool,
    }
    let mut fields: BTreeMap<&str, Seen> = BTreeMap::new();
    for (_, resources) in shards {
        for r in resources.iter().filter(|r| !r.state.deleted) {
            let Value::Object(map) = &r.state.data else {
                continue;
            };
            for (name, value) in map {
                let seen = fields.entry(name).or_default();
                match value {
                    Value::Null => {}
                    Value::Bool(_) => seen.bools = true,
                    Value::Number(n) if n.is_i64() => seen.ints = true,
                    Value::Number(_) => seen.floats = true,
                    Value::String(_) => seen.strings = true,
                    _ => seen.other = true,
                }
            }
        }
    }
    let mut columns = implicit();
    columns.push(("data".into(), Kind::Json, Source::Data, false));
    for (name, seen) in fields {
        if columns.iter().any(|(n, ..)| n == name) {
            continue;
        }
        let kind = match (seen.bools, seen.ints, seen.floats, seen.strings) {
            _ if seen.other => Kind::Json,
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

/// The live resources of one shard as batches of `layout`.
fn batches(layout: &Layout, shard: ShardId, resources: &[Resource]) -> Result<Vec<RecordBatch>> {
    let live: Vec<&Resource> = resources.iter().filter(|r| !r.state.deleted).collect();
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

/// A namespace's table as cached: its layout key and per shard the batches and the LSN of
/// the namespace's last change they reflect.
#[derive(Debug)]
pub(crate) struct CachedTable {
    /// Relational: the config version the layout follows; documents: `None`.
    version: Option<u64>,
    schema: SchemaRef,
    parts: BTreeMap<ShardId, (Option<u64>, Vec<RecordBatch>)>,
}

impl CachedTable {
    /// The schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// One partition per shard.
    pub(crate) fn partitions(&self) -> Vec<Vec<RecordBatch>> {
        self.parts.values().map(|(_, b)| b.clone()).collect()
    }

    /// Whether the namespace exists: a relational one has a config, a document one has had
    /// a resource in some shard.
    pub(crate) fn known(&self) -> bool {
        self.version.is_some() || self.parts.values().any(|(changed, _)| changed.is_some())
    }
}

/// The state view holding `model`'s resources.
fn view_of(model: Model) -> &'static StateView {
    match model {
        Model::Document => &DOCUMENTS,
        _ => &ROWS,
    }
}

/// The table of `model`'s `namespace` over `shards`, reading the view state in `tx`: `cached`
/// itself when no shard's namespace changed since it was built (and, for a relational
/// namespace, its config did not change either), else a table rebuilt where it changed.
/// `config` is the relational namespace's config.
pub(crate) fn build(
    tx: &ReadTransaction,
    model: Model,
    namespace: &str,
    config: Option<&Registered>,
    shards: &[ShardId],
    cached: Option<&Arc<CachedTable>>,
) -> Result<Arc<CachedTable>> {
    let view = view_of(model);
    let changed: Vec<Option<u64>> = shards
        .iter()
        .map(|&s| view.changed(tx, s, namespace).map_err(Error::View))
        .collect::<Result<_>>()?;
    let version = config.map(|c| c.version);
    let cached = cached.filter(|c| c.version == version);
    let unchanged = |c: &CachedTable, s: &ShardId, ch: &Option<u64>| {
        c.parts.get(s).is_some_and(|(had, _)| had == ch)
    };
    if let Some(c) = cached
        && shards
            .iter()
            .zip(&changed)
            .all(|(s, ch)| unchanged(c, s, ch))
    {
        return Ok(c.clone());
    }
    let read = |s: ShardId| view.namespace(tx, s, namespace).map_err(Error::View);
    let mut parts = BTreeMap::new();
    let schema = match (model, config) {
        (Model::Relational, Some(config)) => {
            let layout = relational_layout(config);
            for (&s, ch) in shards.iter().zip(&changed) {
                // Relational layouts do not depend on the rows: unchanged shards are reused.
                if let Some(c) = cached
                    && unchanged(c, &s, ch)
                {
                    parts.insert(s, c.parts[&s].clone());
                    continue;
                }
                parts.insert(s, (*ch, batches(&layout, s, &read(s)?)?));
            }
            layout.schema
        }
        (Model::Document, _) => {
            let resources: Vec<(ShardId, Vec<Resource>)> = shards
                .iter()
                .map(|&s| Ok((s, read(s)?)))
                .collect::<Result<_>>()?;
            let layout = document_layout(&resources);
            for ((s, r), ch) in resources.iter().zip(&changed) {
                parts.insert(*s, (*ch, batches(&layout, *s, r)?));
            }
            layout.schema
        }
        (model, _) => {
            return Err(Error::Internal(format!(
                "no table layout for {model} namespaces"
            )));
        }
    };
    Ok(Arc::new(CachedTable {
        version,
        schema,
        parts,
    }))
}

#[cfg(test)]
mod tests;
