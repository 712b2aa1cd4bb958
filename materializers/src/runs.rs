//! Columnar blocks of the state views (`docs/design/columnar.md`, phase 2).
//!
//! A state view keeps recently applied resources row by row (its tail) and moves them, once a
//! namespace's tail is large enough, into immutable runs: rows sorted by id, cut into blocks
//! of at most a view's flush size, each block one Arrow IPC stream with ZSTD-compressed
//! buffers (columns `id`, `data` as JSON text, `revision`, `lsn`, `updated_ms`, `deleted`).
//!
//! Blocks are named by the xxh3-128 of their bytes, which the block index stores, so decoded
//! blocks can be shared through one process-wide cache whatever database they came from: the
//! same name is the same bytes. The cache holds at most [`set_cache_bytes`] of decoded blocks
//! (least recently used first out); full scans decode without filling it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::document::{Document, RawState};
use crate::{Result, storage};

/// One resource's state as a run holds it: the data stays JSON text until a reader needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub id: String,
    /// `data` as JSON text (`null` for a tombstone).
    pub data: String,
    pub revision: u64,
    pub lsn: u64,
    pub updated_ms: u64,
    pub deleted: bool,
}

impl Row {
    pub(crate) fn of(id: String, doc: &Document) -> Result<Row> {
        Ok(Row {
            id,
            data: serde_json::to_string(&doc.data).map_err(storage)?,
            revision: doc.revision,
            lsn: doc.lsn,
            updated_ms: doc.updated_ms,
            deleted: doc.deleted,
        })
    }
}

fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("data", DataType::Utf8, false),
                Field::new("revision", DataType::UInt64, false),
                Field::new("lsn", DataType::UInt64, false),
                Field::new("updated_ms", DataType::UInt64, false),
                Field::new("deleted", DataType::Boolean, false),
            ]))
        })
        .clone()
}

/// A decoded block.
#[derive(Debug)]
pub(crate) struct Block {
    ids: StringArray,
    data: StringArray,
    revision: UInt64Array,
    lsn: UInt64Array,
    updated_ms: UInt64Array,
    deleted: BooleanArray,
    /// Bytes its arrays hold (what the cache counts).
    bytes: usize,
}

impl Block {
    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id of row `i`.
    pub(crate) fn id(&self, i: usize) -> &str {
        self.ids.value(i)
    }

    /// The row holding `id`.
    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.ids.value(mid).cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Row `i` as a state (its JSON parsed).
    pub(crate) fn document(&self, i: usize) -> Result<Document> {
        self.raw(i).document()
    }

    /// Row `i` with its data as JSON text.
    pub(crate) fn raw(&self, i: usize) -> RawState<'_> {
        RawState {
            data: self.data.value(i),
            revision: self.revision.value(i),
            lsn: self.lsn.value(i),
            updated_ms: self.updated_ms.value(i),
            deleted: self.deleted.value(i),
        }
    }

    /// Row `i` as a run row (no JSON parsed).
    pub(crate) fn row(&self, i: usize) -> Row {
        Row {
            id: self.ids.value(i).to_owned(),
            data: self.data.value(i).to_owned(),
            revision: self.revision.value(i),
            lsn: self.lsn.value(i),
            updated_ms: self.updated_ms.value(i),
            deleted: self.deleted.value(i),
        }
    }
}

/// Encodes `rows` (sorted by id, ids distinct) as one block.
pub(crate) fn encode(rows: &[Row]) -> Result<Vec<u8>> {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.id))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.data))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.revision),
            )),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.lsn))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.updated_ms),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.deleted)),
            )),
        ],
    )
    .map_err(storage)?;
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .map_err(storage)?;
    let mut writer =
        StreamWriter::try_new_with_options(Vec::new(), &schema(), options).map_err(storage)?;
    writer.write(&batch).map_err(storage)?;
    writer.finish().map_err(storage)?;
    writer.into_inner().map_err(storage)
}

/// Decodes a block made by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Block> {
    let reader = StreamReader::try_new(bytes, None).map_err(storage)?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(storage)?);
    }
    let [batch] = <[RecordBatch; 1]>::try_from(batches)
        .map_err(|b| storage(format!("a block holds {} batches, not 1", b.len())))?;
    if batch.schema().fields() != schema().fields() {
        return Err(storage(format!(
            "a block's columns are {:?}",
            batch.schema().fields()
        )));
    }
    fn col<T: Clone + 'static>(batch: &RecordBatch, i: usize) -> Result<T> {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| storage(format!("a block's column {i} has the wrong type")))
    }
    Ok(Block {
        ids: col(&batch, 0)?,
        data: col(&batch, 1)?,
        revision: col(&batch, 2)?,
        lsn: col(&batch, 3)?,
        updated_ms: col(&batch, 4)?,
        deleted: col(&batch, 5)?,
        bytes: batch.get_array_memory_size(),
    })
}

/// A block's name: the xxh3-128 of its bytes.
pub(crate) fn name_of(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// Default budget of the decoded-block cache.
pub const CACHE_BYTES_DEFAULT: usize = 256 << 20;

struct Cache {
    blocks: BTreeMap<u128, (Arc<Block>, u64)>,
    /// Last use → name, oldest first.
    uses: BTreeMap<u64, u128>,
    tick: u64,
    bytes: usize,
    budget: usize,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            blocks: BTreeMap::new(),
            uses: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            budget: CACHE_BYTES_DEFAULT,
        })
    })
}

/// Sets the budget of the process's decoded-block cache (bytes of decoded blocks kept for
/// point reads and patches; least recently used first out).
pub fn set_cache_bytes(budget: usize) {
    let mut c = cache().lock().expect("block cache lock");
    c.budget = budget;
    c.evict();
}

/// Bytes of decoded blocks the cache holds now.
pub fn cache_bytes() -> usize {
    cache().lock().expect("block cache lock").bytes
}

impl Cache {
    fn evict(&mut self) {
        while self.bytes > self.budget {
            let Some((_, name)) = self.uses.pop_first() else {
                break;
            };
            if let Some((block, _)) = self.blocks.remove(&name) {
                self.bytes -= block.bytes;
            }
        }
    }
}

/// The block named `name`: from the cache, or decoded from `read()`'s bytes (and kept when
/// `keep`).
pub(crate) fn block(
    name: u128,
    keep: bool,
    read: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Arc<Block>> {
    {
        let mut c = cache().lock().expect("block cache lock");
        c.tick += 1;
        let tick = c.tick;
        if let Some((block, used)) = c.blocks.get_mut(&name) {
            let (block, old) = (block.clone(), std::mem::replace(used, tick));
            c.uses.remove(&old);
            c.uses.insert(tick, name);
            return Ok(block);
        }
    }
    let bytes = read()?;
    if name_of(&bytes) != name {
        return Err(storage(format!(
            "a block's bytes do not match its name {name:032x}"
        )));
    }
    let block = Arc::new(decode(&bytes)?);
    if keep {
        let mut c = cache().lock().expect("block cache lock");
        if block.bytes <= c.budget && !c.blocks.contains_key(&name) {
            c.tick += 1;
            let tick = c.tick;
            c.bytes += block.bytes;
            c.blocks.insert(name, (block.clone(), tick));
            c.uses.insert(tick, name);
            c.evict();
        }
    }
    Ok(block)
}

/// A position in a run's rows (sorted by id), block by block.
#[derive(Debug)]
pub(crate) struct Cursor {
    blocks: Vec<Arc<Block>>,
    block: usize,
    row: usize,
}

impl Cursor {
    /// A cursor at the first row of `blocks` (one run's, in id order).
    pub(crate) fn new(mut blocks: Vec<Arc<Block>>) -> Cursor {
        blocks.retain(|b| b.len() > 0);
        Cursor {
            blocks,
            block: 0,
            row: 0,
        }
    }

    /// Rows from the cursor to the end.
    pub(crate) fn rows(&self) -> usize {
        self.blocks[self.block.min(self.blocks.len())..]
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
            - self.row
    }

    /// The id at the cursor (`None`: past the end).
    pub(crate) fn peek(&self) -> Option<&str> {
        self.blocks.get(self.block).map(|b| b.id(self.row))
    }

    /// The block and row at the cursor (not past the end).
    pub(crate) fn at(&self) -> (&Block, usize) {
        (&self.blocks[self.block], self.row)
    }

    fn advance(&mut self) {
        self.row += 1;
        if self.row >= self.blocks[self.block].len() {
            self.block += 1;
            self.row = 0;
        }
    }
}

/// Of cursors over runs (oldest first): the least id at their heads, with the index of the
/// newest cursor holding it (`None`: every cursor is past its end).
pub(crate) fn least(cursors: &[Cursor]) -> Option<(usize, &str)> {
    let mut least: Option<(usize, &str)> = None;
    for (i, c) in cursors.iter().enumerate() {
        if let Some(id) = c.peek() {
            match least {
                Some((_, l)) if id > l => {}
                _ => least = Some((i, id)),
            }
        }
    }
    least
}

/// Moves every cursor at `id` past it.
pub(crate) fn skip(cursors: &mut [Cursor], id: &str) {
    for c in cursors {
        if c.peek() == Some(id) {
            c.advance();
        }
    }
}

/// Merges runs (cursors oldest first) into one list sorted by id, the newest run's state of
/// each id winning.
pub(crate) fn merge(mut cursors: Vec<Cursor>) -> Vec<Row> {
    let mut out = Vec::with_capacity(cursors.iter().map(Cursor::rows).sum());
    while let Some((winner, _)) = least(&cursors) {
        let (block, i) = cursors[winner].at();
        let row = block.row(i);
        skip(&mut cursors, &row.id);
        out.push(row);
    }
    out
}

#[cfg(test)]
mod tests;
