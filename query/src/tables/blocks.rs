//! Relational partitions taken from the view's stored blocks as they are
//! (`docs/design/columnar.md`, "typed blocks"): a level of chunks per run, a chunk per block,
//! its columns decoded from the block only when a query first reads them; the rows the
//! block's deletion vector marks, tombstones and the rows the tail shadows masked; the tail's
//! rows as the partition's delta. No row is merged by id and no JSON is parsed but the
//! tail's, and the values of members the block could not shred.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch, StringViewArray,
    TimestampMillisecondArray, new_null_array,
};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use redb::ReadTransaction;
use themis_log::ShardId;
use themis_materializers::document::ROWS;
use themis_materializers::namespaces::rfc3339_ms;
use themis_materializers::runs::{Encoded, Shredded};

use super::budget::Slot;
use super::{
    BATCH_ROWS, Builder, Chunk, Columns, Fields, Kind, Layout, MASKED_MAX, Part, Source, push_row,
    raw, row_of,
};
use crate::{Error, Result};

/// Where one column of a chunk taken from a block comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// A column of the block's columns stream, converted.
    Stored(usize, Conv),
    /// The shard (the same for every row).
    Shard,
    /// NULL in every row: the member is absent from the block, holds only `null`s, or only
    /// values that do not convert to the column's type.
    Null,
    /// Read from the rows' JSON text: JSON columns, and members the block did not shred.
    Parsed,
    /// The rows' JSON text itself.
    Data,
}

/// A conversion from a shredded column to a table column, as [`Builder::push`] converts a
/// JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    Same,
    IntToFloat,
    IntToTimestamp,
    TextToTimestamp,
}

/// The columns of a chunk that a block holds, as they are decoded.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    block: Encoded,
    shard: ShardId,
    /// Per column of the table: where it comes from.
    from: Vec<From>,
    /// The block's rows the chunk holds (`None`: all): a chunk of a block with many masked
    /// rows holds only the others, so that a scan reads a few batches, not a slice between
    /// every two masked rows.
    keep: Option<BooleanArray>,
}

impl Stored {
    fn new(block: Encoded, shard: ShardId, layout: &Layout) -> Stored {
        let mixed = block.mixed();
        let from = layout
            .columns
            .iter()
            .map(|(kind, source)| match source {
                Source::Id => From::Stored(0, Conv::Same),
                Source::Revision => From::Stored(1, Conv::Same),
                Source::Lsn => From::Stored(2, Conv::Same),
                Source::UpdatedMs => From::Stored(3, Conv::Same),
                Source::Shard => From::Shard,
                Source::Data => From::Data,
                Source::Field(name) => {
                    if *kind == Kind::Json || mixed.iter().any(|m| m == name) {
                        return From::Parsed;
                    }
                    let Some((i, shredded)) = block.member(name) else {
                        return From::Null;
                    };
                    match (kind, shredded) {
                        (Kind::Bool, Shredded::Bool)
                        | (Kind::Int, Shredded::Int)
                        | (Kind::Float, Shredded::Float)
                        | (Kind::Text, Shredded::Text) => From::Stored(i, Conv::Same),
                        (Kind::Float, Shredded::Int) => From::Stored(i, Conv::IntToFloat),
                        (Kind::Timestamp, Shredded::Int) => From::Stored(i, Conv::IntToTimestamp),
                        (Kind::Timestamp, Shredded::Text) => From::Stored(i, Conv::TextToTimestamp),
                        // Booleans, numbers and strings that are not of the column's kind
                        // read as NULL.
                        _ => From::Null,
                    }
                }
            })
            .collect();
        Stored {
            block,
            shard,
            from,
            keep: None,
        }
    }

    /// The same block with only the rows of this chunk that `keep` keeps (one bit per row of
    /// the chunk).
    pub(crate) fn keeping(&self, keep: &BooleanArray) -> Stored {
        let block = match &self.keep {
            None => keep.clone(),
            Some(old) => {
                let mut kept = keep.iter().map(|k| k.unwrap_or(false));
                (0..old.len())
                    .map(|r| Some(old.value(r) && kept.next().unwrap_or(false)))
                    .collect()
            }
        };
        Stored {
            keep: Some(block),
            ..self.clone()
        }
    }

    /// Columns `want` of a chunk of `schema` with `rows` rows.
    pub(crate) fn arrays(
        &self,
        schema: &SchemaRef,
        rows: usize,
        want: &[usize],
    ) -> Result<Vec<ArrayRef>> {
        let failed = |e: String| Error::Internal(format!("reading a block: {e}"));
        // The stored columns wanted, decompressed together.
        let mut stored: Vec<usize> = want
            .iter()
            .filter_map(|&c| match self.from[c] {
                From::Stored(i, _) => Some(i),
                _ => None,
            })
            .collect();
        stored.sort_unstable();
        stored.dedup();
        let decoded = self
            .block
            .columns(&stored)
            .map_err(|e| failed(e.to_string()))?;
        let parsed: Vec<usize> = want
            .iter()
            .copied()
            .filter(|&c| self.from[c] == From::Parsed)
            .collect();
        let mut parsed = self.parse(schema, &parsed)?.into_iter();
        let kept = |array: ArrayRef| -> Result<ArrayRef> {
            match &self.keep {
                Some(keep) => filter(&array, keep).map_err(|e| failed(e.to_string())),
                None => Ok(array),
            }
        };
        let mut out = Vec::with_capacity(want.len());
        for &c in want {
            let data_type = schema.field(c).data_type();
            let array: ArrayRef = match self.from[c] {
                From::Stored(i, conv) => {
                    let at = stored.binary_search(&i).expect("decoded above");
                    kept(convert(&decoded[at], conv, data_type).map_err(failed)?)?
                }
                From::Shard => Arc::new(Int32Array::from(vec![self.shard.0 as i32; rows])),
                From::Null => new_null_array(data_type, rows),
                From::Parsed => kept(parsed.next().expect("parsed above"))?,
                From::Data => kept(Arc::new(
                    self.block.data().map_err(|e| failed(e.to_string()))?,
                ))?,
            };
            out.push(array);
        }
        Ok(out)
    }

    /// Columns `columns` of the table (each a declared member) read from the rows' JSON text,
    /// with the conversions of [`Builder::push`].
    fn parse(&self, schema: &SchemaRef, columns: &[usize]) -> Result<Vec<ArrayRef>> {
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        let failed = |e: String| Error::Internal(format!("reading a block's rows: {e}"));
        // Members the block did not shred are whole in the residual text; a JSON column of a
        // shredded member needs the states rebuilt.
        let data = if columns
            .iter()
            .any(|&c| self.block.member(schema.field(c).name()).is_some())
        {
            self.block.data()
        } else {
            self.block.residual()
        }
        .map_err(|e| failed(e.to_string()))?;
        let kinds: Vec<Kind> = columns.iter().map(|&c| kind_of(schema, c)).collect();
        let mut builders: Vec<Builder> =
            kinds.iter().map(|k| Builder::new(*k, data.len())).collect();
        let names: Vec<(usize, &str)> = columns
            .iter()
            .enumerate()
            .map(|(j, &c)| (j, schema.field(c).name().as_str()))
            .collect();
        let mut fields = raw::Fields::new(names, kinds.len());
        for row in 0..data.len() {
            let text = data.value(row);
            fields
                .push(&kinds, &mut builders, text)
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(builders.into_iter().map(Builder::finish).collect())
    }
}

/// The kind of column `c` of a table's schema.
fn kind_of(schema: &SchemaRef, c: usize) -> Kind {
    match schema.field(c).data_type() {
        DataType::Boolean => Kind::Bool,
        DataType::Int64 => Kind::Int,
        DataType::Float64 => Kind::Float,
        DataType::Utf8View => Kind::Text,
        DataType::Timestamp(..) => Kind::Timestamp,
        DataType::Int32 => Kind::Shard,
        _ => Kind::Json,
    }
}

/// A shredded column as a table column of type `to`.
fn convert(column: &ArrayRef, conv: Conv, to: &DataType) -> std::result::Result<ArrayRef, String> {
    Ok(match conv {
        Conv::Same => column.clone(),
        Conv::IntToFloat => cast(column, to).map_err(|e| e.to_string())?,
        Conv::IntToTimestamp => {
            let ints = column.as_primitive::<Int64Type>();
            Arc::new(
                TimestampMillisecondArray::new(ints.values().clone(), ints.nulls().cloned())
                    .with_timezone("UTC"),
            )
        }
        Conv::TextToTimestamp => {
            let texts = column.as_string_view();
            let values: TimestampMillisecondArray =
                texts.iter().map(|t| t.and_then(rfc3339_ms)).collect();
            Arc::new(values.with_timezone("UTC"))
        }
    })
}

/// A block of a run while its partition is taken: its masked rows are known once the tail
/// has been read.
struct Pending {
    first: String,
    stored: Stored,
    rows: usize,
    /// Rows (of the block, ascending) marked, deleted or shadowed by the tail.
    masked: Vec<u32>,
    /// Its ids, when decoded to find the rows the tail shadows.
    ids: Option<StringViewArray>,
}

impl Pending {
    fn ids(&mut self) -> Result<&StringViewArray> {
        if self.ids.is_none() {
            let ids = self.stored.block.columns(&[0]).map_err(Error::View)?;
            self.ids = Some(ids[0].as_string_view().clone());
        }
        Ok(self.ids.as_ref().expect("set above"))
    }

    /// As a chunk of `layout`: with its masks, or, past [`MASKED_MAX`] of them, holding only
    /// the rows not masked.
    fn chunk(mut self, layout: &Layout) -> Result<Chunk> {
        let width = layout.columns.len();
        let arrays: Vec<Arc<Slot>> = (0..width).map(|_| Arc::default()).collect();
        let zones = (0..width).map(|_| OnceLock::new()).collect();
        let (mut first, mut rows) = (self.first.clone(), self.rows);
        let mut masked = std::mem::take(&mut self.masked);
        if masked.len() > MASKED_MAX {
            let mut keep = vec![true; self.rows];
            for &m in &masked {
                keep[m as usize] = false;
            }
            let keep = BooleanArray::from(keep);
            let ids = filter(self.ids()?, &keep)
                .map_err(|e| Error::Internal(format!("masking a block: {e}")))?;
            first = ids.as_string_view().value(0).to_owned();
            arrays[0].admit(ids);
            rows -= masked.len();
            masked = Vec::new();
            self.stored.keep = Some(keep);
        } else if let Some(ids) = self.ids {
            arrays[0].admit(Arc::new(ids) as ArrayRef);
        }
        Ok(Chunk {
            first,
            cols: Arc::new(Columns {
                schema: layout.schema.clone(),
                rows,
                arrays,
                zones,
                stored: Some(self.stored),
            }),
            masked,
        })
    }
}

/// A relational partition taken from the view's runs and tail in `shard` (see the module).
pub(super) fn whole(
    tx: &ReadTransaction,
    layout: &Layout,
    namespace: &str,
    shard: ShardId,
    changed: Option<u64>,
) -> Result<Arc<Part>> {
    let view = |e| Error::View(e);
    // The states' JSON text is read only for columns that need it.
    let state = layout
        .columns
        .iter()
        .any(|(k, s)| *k == Kind::Json || matches!(s, Source::Data));
    let mut levels: Vec<Vec<Pending>> = Vec::new();
    for run in ROWS.runs(tx, shard, namespace).map_err(view)? {
        let mut level = Vec::with_capacity(run.len());
        for block in run {
            let encoded = ROWS.encoded(tx, shard, &block, state).map_err(view)?;
            // Tombstones are masked with the marked rows.
            let deleted = encoded.columns(&[4]).map_err(view)?;
            let deleted = deleted[0].as_boolean();
            let mut masked = block.marked.clone();
            if deleted.true_count() > 0 {
                masked.extend(
                    (0..deleted.len())
                        .filter(|&r| deleted.value(r))
                        .map(|r| r as u32),
                );
                masked.sort_unstable();
                masked.dedup();
            }
            if masked.len() >= block.rows {
                continue;
            }
            level.push(Pending {
                first: block.first,
                stored: Stored::new(encoded, shard, layout),
                rows: block.rows,
                masked,
                ids: None,
            });
        }
        if !level.is_empty() {
            levels.push(level);
        }
    }
    // The tail: its live rows are the delta, and each of its ids masks the row a run holds.
    let kinds: Vec<Kind> = layout.columns.iter().map(|(k, _)| *k).collect();
    let mut fields = raw::Fields::new(layout.declared(), kinds.len());
    let mut builders: Vec<Builder> = kinds.iter().map(|k| Builder::new(*k, BATCH_ROWS)).collect();
    let mut tail_ids: Vec<String> = Vec::new();
    let failed = |e: String| themis_materializers::Error::Storage(e);
    ROWS.tail(tx, shard, namespace, |id, state| {
        tail_ids.push(id.to_owned());
        if state.deleted {
            return Ok(());
        }
        push_row(
            layout,
            &kinds,
            &mut fields,
            &mut builders,
            shard,
            id,
            &state,
        )
        .map_err(|e| failed(format!("a row of {namespace}: {e}")))
    })
    .map_err(view)?;
    for id in &tail_ids {
        for level in &mut levels {
            let at = level
                .partition_point(|p| p.first.as_str() <= id.as_str())
                .saturating_sub(1);
            let pending = &mut level[at];
            if let Ok(row) = row_of(pending.ids()?, id, 0)
                && let Err(at) = pending.masked.binary_search(&(row as u32))
            {
                pending.masked.insert(at, row as u32);
            }
        }
    }
    let mut chunk_levels = Vec::with_capacity(levels.len());
    for level in levels {
        let chunks: Vec<Chunk> = level
            .into_iter()
            .filter(|p| p.masked.len() < p.rows)
            .map(|p| p.chunk(layout))
            .collect::<Result<_>>()?;
        if !chunks.is_empty() {
            chunk_levels.push(chunks);
        }
    }
    let columns: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    let tail = RecordBatch::try_new(layout.schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("building a batch: {e}")))?;
    Ok(Arc::new(Part {
        changed,
        schema: layout.schema.clone(),
        levels: chunk_levels,
        delta: (tail.num_rows() > 0).then(|| Chunk::of(tail)),
        fields: Fields::new(),
    }))
}
