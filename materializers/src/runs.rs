//! Columnar blocks of the state views (`docs/design/columnar.md`, phase 2).
//!
//! A state view keeps recently applied resources row by row (its tail) and moves them, once a
//! namespace's tail is large enough, into immutable runs: rows sorted by id, cut into blocks
//! of at most a view's flush size. A block is two Arrow IPC streams with ZSTD-compressed
//! buffers, so that a reader decompresses only what it reads:
//!
//! - the *state* stream: `data`, each row's state as JSON text (`null` for a tombstone);
//! - the *columns* stream: `id` (string view), `revision`, `lsn`, `updated_ms` (int64),
//!   `deleted`, then, when the view shreds, one column per top-level member of the block's
//!   object states whose non-null values are all of one kind (boolean, int64, float64 for
//!   numbers that are not integers, string view), named `.` and the member's name, NULL where
//!   a state lacks the member or holds `null`. Members of mixed or other kinds are named in
//!   the schema's metadata ([`MIXED_KEY`]): a reader takes them from the JSON text.
//!
//! When members are shredded, the state stream holds each row's *residual* JSON (the schema's
//! metadata says so: [`RESIDUAL_KEY`]): an object state without the members whose values its
//! columns hold (so `{}` for a row whose members are all shredded), any other state whole. A
//! reader puts the columns' values back into the object; `serde_json` here writes maps sorted
//! by key and floats as they parsed, so the text rebuilt is the text the view was given.
//!
//! The block's bytes are the length of the state stream (u32 LE), then both streams. Blocks
//! are named by the xxh3-128 of their bytes, which the block index stores, so decoded blocks
//! can be shared through one process-wide cache whatever database they came from: the same
//! name is the same bytes. The cache holds at most [`set_cache_bytes`] of decoded blocks
//! (least recently used first out); full scans decode without filling it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StringViewArray,
};
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;

use crate::document::{Document, RawState};
use crate::{Result, storage};

/// Schema metadata key of the columns stream: the members not shredded (a JSON array of
/// names), whose values are of mixed or other kinds.
pub const MIXED_KEY: &str = "themis.mixed";

/// Schema metadata key of the columns stream, present when the state stream holds residual
/// JSON (only what the shredded columns do not hold).
pub const RESIDUAL_KEY: &str = "themis.residual";

/// Columns of the columns stream before the shredded members: `id`, `revision`, `lsn`,
/// `updated_ms`, `deleted`.
pub const FIXED_COLUMNS: usize = 5;

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

fn state_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Arc::new(Schema::new(vec![Field::new("data", DataType::Utf8, false)])))
        .clone()
}

fn fixed_fields() -> Vec<Field> {
    vec![
        Field::new("id", DataType::Utf8View, false),
        Field::new("revision", DataType::Int64, false),
        Field::new("lsn", DataType::Int64, false),
        Field::new("updated_ms", DataType::Int64, false),
        Field::new("deleted", DataType::Boolean, false),
    ]
}

/// The kind of a shredded member's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shredded {
    /// Booleans (`Boolean`).
    Bool,
    /// Integers that fit an i64 (`Int64`).
    Int,
    /// Numbers that are not integers (`Float64`).
    Float,
    /// Strings (`Utf8View`).
    Text,
}

impl Shredded {
    /// The kind of `value`: `Ok(None)` for `null`, `Err` for a kind not shredded (objects,
    /// arrays, integers past i64).
    fn of(value: &Value) -> std::result::Result<Option<Shredded>, ()> {
        match value {
            Value::Null => Ok(None),
            Value::Bool(_) => Ok(Some(Shredded::Bool)),
            Value::Number(n) if n.is_i64() => Ok(Some(Shredded::Int)),
            Value::Number(n) if n.is_f64() => Ok(Some(Shredded::Float)),
            Value::String(_) => Ok(Some(Shredded::Text)),
            _ => Err(()),
        }
    }

    /// The Arrow type of its columns.
    pub fn data_type(self) -> DataType {
        match self {
            Shredded::Bool => DataType::Boolean,
            Shredded::Int => DataType::Int64,
            Shredded::Float => DataType::Float64,
            Shredded::Text => DataType::Utf8View,
        }
    }

    /// The kind whose columns have type `t`.
    pub fn of_type(t: &DataType) -> Option<Shredded> {
        match t {
            DataType::Boolean => Some(Shredded::Bool),
            DataType::Int64 => Some(Shredded::Int),
            DataType::Float64 => Some(Shredded::Float),
            DataType::Utf8View => Some(Shredded::Text),
            _ => None,
        }
    }
}

/// The column of member `name` of `states` (`None`: no state, a tombstone).
fn shredded_column(kind: Shredded, states: &[Option<Value>], name: &str) -> ArrayRef {
    fn member<'v>(s: &'v Option<Value>, name: &str) -> Option<&'v Value> {
        s.as_ref().and_then(|v| v.get(name))
    }
    let values = states.iter().map(|s| member(s, name));
    match kind {
        Shredded::Bool => Arc::new(BooleanArray::from_iter(
            values.map(|v| v.and_then(Value::as_bool)),
        )),
        Shredded::Int => Arc::new(Int64Array::from_iter(
            values.map(|v| v.and_then(Value::as_i64)),
        )),
        Shredded::Float => Arc::new(arrow_array::Float64Array::from_iter(
            values.map(|v| v.and_then(Value::as_f64)),
        )),
        Shredded::Text => Arc::new(StringViewArray::from_iter(
            values.map(|v| v.and_then(Value::as_str)),
        )),
    }
}

/// The member and kind of a shredded column of a columns stream (named `.` and the member).
fn member_of(field: &Field) -> Result<(String, Shredded)> {
    let bad = || storage(format!("a block's column {:?}", field.name()));
    let name = field.name().strip_prefix('.').ok_or_else(bad)?;
    let kind = Shredded::of_type(field.data_type()).ok_or_else(bad)?;
    Ok((name.to_owned(), kind))
}

/// Row `i`'s value in a shredded member's `column` (`None`: NULL).
fn member_value(kind: Shredded, column: &ArrayRef, i: usize) -> Option<Value> {
    if column.is_null(i) {
        return None;
    }
    Some(match kind {
        Shredded::Bool => Value::Bool(column.as_boolean().value(i)),
        Shredded::Int => Value::from(column.as_primitive::<Int64Type>().value(i)),
        Shredded::Float => {
            serde_json::Number::from_f64(column.as_primitive::<Float64Type>().value(i))
                .map_or(Value::Null, Value::Number)
        }
        Shredded::Text => Value::String(column.as_string_view().value(i).to_owned()),
    })
}

/// Row `i`'s state from its residual JSON text and the block's shredded members.
fn rebuilt(residual: &str, shredded: &[(String, Shredded, ArrayRef)], i: usize) -> Result<Value> {
    let mut value: Value = serde_json::from_str(residual).map_err(storage)?;
    if let Value::Object(members) = &mut value {
        for (name, kind, column) in shredded {
            if let Some(v) = member_value(*kind, column, i) {
                members.insert(name.clone(), v);
            }
        }
    }
    Ok(value)
}

/// The residual JSON text of `state`: without the members `shredded` holds that have a value
/// (members holding `null` stay: a column's NULL also stands for an absent member).
fn residual_of(state: &Value, shredded: &BTreeSet<&str>) -> Result<String> {
    let text = match state {
        Value::Object(members) => {
            let rest: serde_json::Map<String, Value> = members
                .iter()
                .filter(|(name, v)| v.is_null() || !shredded.contains(name.as_str()))
                .map(|(name, v)| (name.clone(), v.clone()))
                .collect();
            serde_json::to_string(&rest)
        }
        other => serde_json::to_string(other),
    };
    text.map_err(storage)
}

/// Whether `schema` starts with the fixed columns of a columns stream.
fn check_fixed(schema: &Schema) -> Result<()> {
    if schema.fields().len() < FIXED_COLUMNS
        || schema.fields()[..FIXED_COLUMNS]
            .iter()
            .map(|f| f.as_ref())
            .ne(fixed_fields().iter())
    {
        return Err(storage(format!(
            "a block's columns are {:?}",
            schema.fields()
        )));
    }
    Ok(())
}

/// One IPC stream of `batch`, buffers compressed with ZSTD.
fn ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .map_err(storage)?;
    let mut writer = StreamWriter::try_new_with_options(Vec::new(), &batch.schema(), options)
        .map_err(storage)?;
    writer.write(batch).map_err(storage)?;
    writer.finish().map_err(storage)?;
    writer.into_inner().map_err(storage)
}

/// Whether and how a block's members are shredded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shred<'a> {
    /// Not shredded (the document view's blocks).
    No,
    /// From the rows' states, parsed.
    Parse,
    /// From the shredded columns of merged blocks: row `i` of the block is row `picks[i].1`
    /// of block `picks[i].0` (decoded with [`decode_with_members`]). A member is shredded
    /// when every source block holding it shredded it with one kind; a row's residual text
    /// is its source's when that shredded nothing the merged block does not.
    Merged(&'a [(Arc<Block>, usize)]),
}

/// Combines the kinds seen of a member (`Ok(None)`: only nulls so far; `Err`: mixed).
fn combine(
    seen: std::result::Result<Option<Shredded>, ()>,
    next: std::result::Result<Option<Shredded>, ()>,
) -> std::result::Result<Option<Shredded>, ()> {
    match (seen, next) {
        (Err(()), _) | (_, Err(())) => Err(()),
        (Ok(None), k) | (k, Ok(None)) => k,
        (Ok(Some(a)), Ok(Some(b))) if a == b => Ok(Some(a)),
        _ => Err(()),
    }
}

/// The members of merged rows (see [`Shred::Merged`]): (name, kind, column) shredded, and the
/// names of the others.
fn merged_members(picks: &[(Arc<Block>, usize)]) -> Result<Members> {
    // The source blocks, and per pick its source.
    let mut sources: Vec<&Block> = Vec::new();
    let mut source_of: Vec<usize> = Vec::with_capacity(picks.len());
    for (block, _) in picks {
        let at = match sources
            .iter()
            .position(|b| std::ptr::eq(*b, block.as_ref()))
        {
            Some(at) => at,
            None => {
                sources.push(block);
                sources.len() - 1
            }
        };
        source_of.push(at);
    }
    let mut kinds: BTreeMap<&str, std::result::Result<Option<Shredded>, ()>> = BTreeMap::new();
    for b in &sources {
        let members = b
            .members
            .as_ref()
            .ok_or_else(|| storage("a merged block was decoded without its members"))?;
        for (name, kind, _) in &members.0 {
            let seen = kinds.entry(name.as_str()).or_insert(Ok(None));
            *seen = combine(*seen, Ok(Some(*kind)));
        }
        for name in &members.1 {
            kinds.insert(name.as_str(), Err(()));
        }
    }
    let (mut shredded, mut mixed) = (Vec::new(), Vec::new());
    for (name, kind) in kinds {
        let kind = match kind {
            Ok(Some(kind)) => kind,
            Ok(None) => continue,
            Err(()) => {
                mixed.push(name.to_owned());
                continue;
            }
        };
        // Per source: its column of the member, all NULL where it has none.
        let columns: Vec<ArrayRef> = sources
            .iter()
            .map(|b| {
                b.members
                    .as_ref()
                    .and_then(|m| m.0.iter().find(|(n, _, _)| n == name))
                    .map_or_else(
                        || arrow_array::new_null_array(&kind.data_type(), b.len()),
                        |(_, _, c)| c.clone(),
                    )
            })
            .collect();
        let arrays: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
        let indices: Vec<(usize, usize)> = source_of
            .iter()
            .zip(picks)
            .map(|(&s, (_, row))| (s, *row))
            .collect();
        let column = arrow_select::interleave::interleave(&arrays, &indices).map_err(storage)?;
        shredded.push((name.to_owned(), kind, column));
    }
    Ok((shredded, mixed))
}

/// Encodes `rows` (sorted by id, ids distinct) as one block, shredding the top-level members
/// of their states into columns as `shred` says (and then keeping only the residual JSON of
/// each state). [`Shred::Merged`] reads each row's state from its source, not `data`.
pub(crate) fn encode(rows: &[Row], shred: Shred<'_>) -> Result<Vec<u8>> {
    let int = |f: fn(&Row) -> u64| -> Result<ArrayRef> {
        let values: Vec<i64> = rows
            .iter()
            .map(|r| i64::try_from(f(r)).map_err(storage))
            .collect::<Result<_>>()?;
        Ok(Arc::new(Int64Array::from(values)))
    };
    let mut fields = fixed_fields();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringViewArray::from_iter_values(
            rows.iter().map(|r| &r.id),
        )),
        int(|r| r.revision)?,
        int(|r| r.lsn)?,
        int(|r| r.updated_ms)?,
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.deleted)),
        )),
    ];
    let mut mixed: Vec<String> = Vec::new();
    // Each row's text in the state stream.
    let texts: Vec<Cow<'_, str>> = match shred {
        Shred::No => rows
            .iter()
            .map(|r| Cow::Borrowed(r.data.as_str()))
            .collect(),
        Shred::Merged(picks) => {
            if picks.len() != rows.len() {
                return Err(storage("merged rows and their sources differ in number"));
            }
            let (shredded, unshredded) = merged_members(picks)?;
            let names: BTreeSet<&str> = shredded.iter().map(|(n, _, _)| n.as_str()).collect();
            // A source's residual text carries over as it is when every member it shredded
            // is shredded here too (a member it held whole is mixed here as well).
            let carried = |b: &Block| {
                b.residual
                    && b.members
                        .as_ref()
                        .is_some_and(|m| m.0.iter().all(|(n, _, _)| names.contains(n.as_str())))
            };
            let texts = picks
                .iter()
                .map(|(b, i)| {
                    if carried(b) {
                        Ok(Cow::Borrowed(b.data.value(*i)))
                    } else {
                        residual_of(&b.value(*i)?, &names).map(Cow::Owned)
                    }
                })
                .collect::<Result<_>>()?;
            for (name, kind, column) in shredded {
                fields.push(Field::new(format!(".{name}"), kind.data_type(), true));
                columns.push(column);
            }
            mixed = unshredded;
            texts
        }
        Shred::Parse => {
            let states: Vec<Option<Value>> = rows
                .iter()
                .map(|r| {
                    if r.deleted {
                        Ok(None)
                    } else {
                        serde_json::from_str(&r.data).map(Some).map_err(storage)
                    }
                })
                .collect::<Result<_>>()?;
            // Per member: the kind of its non-null values (`Ok(None)`: only nulls so far;
            // `Err`: mixed or not shredded).
            let mut kinds: BTreeMap<&str, std::result::Result<Option<Shredded>, ()>> =
                BTreeMap::new();
            for state in states.iter().flatten() {
                let Value::Object(members) = state else {
                    continue;
                };
                for (name, value) in members {
                    let seen = kinds.entry(name.as_str()).or_insert(Ok(None));
                    *seen = combine(*seen, Shredded::of(value));
                }
            }
            let mut names = BTreeSet::new();
            for (name, seen) in kinds {
                match seen {
                    Ok(Some(kind)) => {
                        fields.push(Field::new(format!(".{name}"), kind.data_type(), true));
                        columns.push(shredded_column(kind, &states, name));
                        names.insert(name);
                    }
                    // Only nulls: the column would be all NULL, as an absent member reads.
                    Ok(None) => {}
                    Err(()) => mixed.push(name.to_owned()),
                }
            }
            rows.iter()
                .zip(&states)
                .map(|(r, state)| match state {
                    Some(state) => residual_of(state, &names).map(Cow::Owned),
                    None => Ok(Cow::Borrowed(r.data.as_str())),
                })
                .collect::<Result<_>>()?
        }
    };
    // Arrow's schema metadata is a std HashMap; nothing iterates it in a decision path.
    #[allow(clippy::disallowed_types)]
    let mut metadata = std::collections::HashMap::new();
    if !mixed.is_empty() {
        metadata.insert(
            MIXED_KEY.to_owned(),
            serde_json::to_string(&mixed).map_err(storage)?,
        );
    }
    if !matches!(shred, Shred::No) {
        metadata.insert(RESIDUAL_KEY.to_owned(), "1".to_owned());
    }
    let columns = RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, metadata)),
        columns,
    )
    .map_err(storage)?;
    let state = RecordBatch::try_new(
        state_schema(),
        vec![Arc::new(StringArray::from_iter_values(texts.iter()))],
    )
    .map_err(storage)?;
    let state = ipc(&state)?;
    let mut out = Vec::with_capacity(4 + state.len() + rows.len() * 16);
    out.extend_from_slice(&u32::try_from(state.len()).map_err(storage)?.to_le_bytes());
    out.extend_from_slice(&state);
    out.extend_from_slice(&ipc(&columns)?);
    Ok(out)
}

/// A block's two streams: (state, columns).
fn streams(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(storage("a block is shorter than 4 bytes"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err(storage("a block's state stream runs past its end"));
    }
    Ok(rest.split_at(len))
}

/// The one batch of an IPC stream, only the columns of `projection` when given.
fn read_stream(bytes: &[u8], projection: Option<Vec<usize>>) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(bytes, projection).map_err(storage)?;
    let mut batches = Vec::with_capacity(1);
    for batch in reader {
        batches.push(batch.map_err(storage)?);
    }
    let [batch] = <[RecordBatch; 1]>::try_from(batches)
        .map_err(|b| storage(format!("a block's stream holds {} batches, not 1", b.len())))?;
    Ok(batch)
}

fn column<T: Clone + 'static>(batch: &RecordBatch, i: usize) -> Result<T> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| storage(format!("a block's column {i} has the wrong type")))
}

/// The fixed columns of a columns stream, checked.
fn fixed(bytes: &[u8]) -> Result<RecordBatch> {
    let batch = read_stream(bytes, Some((0..FIXED_COLUMNS).collect()))?;
    check_fixed(&batch.schema())?;
    Ok(batch)
}

/// A decoded block.
#[derive(Debug)]
pub(crate) struct Block {
    ids: StringViewArray,
    /// The state stream's text: each row's residual JSON when `residual`, else its state.
    data: StringArray,
    residual: bool,
    revision: Int64Array,
    lsn: Int64Array,
    updated_ms: Int64Array,
    deleted: BooleanArray,
    /// Its shredded members (name, kind, column) and the names of the others, when decoded
    /// with them ([`decode_with_members`], and always when `residual`).
    members: Option<Members>,
    /// Bytes its arrays hold (what the cache counts).
    bytes: usize,
}

type Members = (Vec<(String, Shredded, ArrayRef)>, Vec<String>);

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
        find(&self.ids, id)
    }

    /// Row `i`'s data (`null` for a tombstone).
    fn value(&self, i: usize) -> Result<Value> {
        match (&self.members, self.residual) {
            (Some((shredded, _)), true) => rebuilt(self.data.value(i), shredded, i),
            (None, true) => Err(storage("a residual block was decoded without its members")),
            (_, false) => serde_json::from_str(self.data.value(i)).map_err(storage),
        }
    }

    /// Row `i`'s data as JSON text, as `serde_json` writes it (rebuilt from the residual
    /// text and the columns when the block holds residual JSON).
    pub(crate) fn text(&self, i: usize) -> Result<Cow<'_, str>> {
        if !self.residual {
            return Ok(Cow::Borrowed(self.data.value(i)));
        }
        serde_json::to_string(&self.value(i)?)
            .map(Cow::Owned)
            .map_err(storage)
    }

    /// Row `i` as a state (its JSON parsed).
    pub(crate) fn document(&self, i: usize) -> Result<Document> {
        Ok(Document {
            data: self.value(i)?,
            revision: self.revision.value(i) as u64,
            lsn: self.lsn.value(i) as u64,
            updated_ms: self.updated_ms.value(i) as u64,
            deleted: self.deleted.value(i),
        })
    }

    /// Row `i` with its data as `text` (what [`text`](Self::text) returned).
    pub(crate) fn raw<'t>(&self, i: usize, text: &'t str) -> RawState<'t> {
        RawState {
            data: text,
            revision: self.revision.value(i) as u64,
            lsn: self.lsn.value(i) as u64,
            updated_ms: self.updated_ms.value(i) as u64,
            deleted: self.deleted.value(i),
        }
    }

    /// Row `i` as a run row, its data rebuilt.
    pub(crate) fn row(&self, i: usize) -> Result<Row> {
        Ok(Row {
            data: self.text(i)?.into_owned(),
            ..self.merged_row(i)
        })
    }

    /// Row `i` as a run row for [`Shred::Merged`], which does not read `data` (left empty).
    pub(crate) fn merged_row(&self, i: usize) -> Row {
        Row {
            id: self.ids.value(i).to_owned(),
            data: String::new(),
            revision: self.revision.value(i) as u64,
            lsn: self.lsn.value(i) as u64,
            updated_ms: self.updated_ms.value(i) as u64,
            deleted: self.deleted.value(i),
        }
    }
}

/// The row of `ids` (ascending) holding `id`.
fn find(ids: &StringViewArray, id: &str) -> Option<usize> {
    let (mut lo, mut hi) = (0, ids.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match ids.value(mid).cmp(id) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

/// Decodes a block made by [`encode`] (its shredded columns aside).
pub(crate) fn decode(bytes: &[u8]) -> Result<Block> {
    decode_block(bytes, false)
}

/// Decodes a block made by [`encode`] with its shredded columns (what a merge reads).
pub(crate) fn decode_with_members(bytes: &[u8]) -> Result<Block> {
    decode_block(bytes, true)
}

fn decode_block(bytes: &[u8], with_members: bool) -> Result<Block> {
    let (state, columns) = streams(bytes)?;
    let state = read_stream(state, None)?;
    if state.schema().fields() != state_schema().fields() {
        return Err(storage(format!(
            "a block's state columns are {:?}",
            state.schema().fields()
        )));
    }
    let residual = StreamReader::try_new(columns, None)
        .map_err(storage)?
        .schema()
        .metadata()
        .contains_key(RESIDUAL_KEY);
    let (fixed, members) = if with_members || residual {
        let all = read_stream(columns, None)?;
        let schema = all.schema();
        check_fixed(&schema)?;
        let mut shredded = Vec::new();
        for (i, field) in schema.fields().iter().enumerate().skip(FIXED_COLUMNS) {
            let (name, kind) = member_of(field)?;
            shredded.push((name, kind, all.column(i).clone()));
        }
        let mixed: Vec<String> = match schema.metadata().get(MIXED_KEY) {
            Some(m) => serde_json::from_str(m).map_err(storage)?,
            None => Vec::new(),
        };
        let bytes = all.get_array_memory_size();
        let fixed = all
            .project(&(0..FIXED_COLUMNS).collect::<Vec<_>>())
            .map_err(storage)?;
        (fixed, Some((shredded, mixed, bytes)))
    } else {
        (fixed(columns)?, None)
    };
    let data: StringArray = column(&state, 0)?;
    if data.len() != fixed.num_rows() {
        return Err(storage("a block's streams hold different numbers of rows"));
    }
    let columns_bytes = members
        .as_ref()
        .map_or_else(|| fixed.get_array_memory_size(), |m| m.2);
    Ok(Block {
        ids: column(&fixed, 0)?,
        data,
        residual,
        revision: column(&fixed, 1)?,
        lsn: column(&fixed, 2)?,
        updated_ms: column(&fixed, 3)?,
        deleted: column(&fixed, 4)?,
        bytes: state.get_array_memory_size() + columns_bytes,
        members: members.map(|(shredded, mixed, _)| (shredded, mixed)),
    })
}

/// The ids of a block made by [`encode`] (nothing else decompressed).
pub(crate) fn decode_ids(bytes: &[u8]) -> Result<StringViewArray> {
    let (_, columns) = streams(bytes)?;
    let batch = read_stream(columns, Some(vec![0]))?;
    column(&batch, 0)
}

/// The row of `id` in `ids` (ascending; what [`decode_ids`] returns).
pub(crate) fn row_of(ids: &StringViewArray, id: &str) -> Option<usize> {
    find(ids, id)
}

/// A block as stored, for a reader that decompresses only the columns it reads (the query
/// side's tables): its columns stream, and its state stream when asked for or when members
/// were not shredded.
#[derive(Debug, Clone)]
pub struct Encoded {
    columns: Arc<[u8]>,
    state: Option<Arc<[u8]>>,
    /// The schema of its columns stream.
    schema: SchemaRef,
    rows: usize,
}

impl Encoded {
    /// A block's bytes, as [`crate::document::StateView::encoded`] hands them (copying the
    /// state stream only when `state` or when the block has members it did not shred).
    pub(crate) fn new(bytes: &[u8], rows: usize, state: bool) -> Result<Encoded> {
        let (state_bytes, columns) = streams(bytes)?;
        let schema = StreamReader::try_new(columns, None)
            .map_err(storage)?
            .schema();
        check_fixed(&schema)?;
        let state = state || schema.metadata().contains_key(MIXED_KEY);
        Ok(Encoded {
            columns: columns.into(),
            state: state.then(|| state_bytes.into()),
            schema,
            rows,
        })
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The schema of its columns: the fixed ones ([`FIXED_COLUMNS`]), then a column per
    /// shredded member (named `.` and the member's name).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The members whose values are in the JSON text only (mixed or other kinds).
    pub fn mixed(&self) -> Vec<String> {
        self.schema
            .metadata()
            .get(MIXED_KEY)
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default()
    }

    /// The column of member `name`, if shredded: its index and kind.
    pub fn member(&self, name: &str) -> Option<(usize, Shredded)> {
        let (i, field) = self.schema.fields().find(&format!(".{name}"))?;
        Some((i, Shredded::of_type(field.data_type())?))
    }

    /// Columns `projection` of its columns stream, decompressing only those.
    pub fn columns(&self, projection: &[usize]) -> Result<Vec<ArrayRef>> {
        if projection.is_empty() {
            return Ok(Vec::new());
        }
        let batch = read_stream(&self.columns, Some(projection.to_vec()))?;
        if batch.num_rows() != self.rows {
            return Err(storage(
                "a block holds another number of rows than its index says",
            ));
        }
        Ok(batch.columns().to_vec())
    }

    /// Whether its state stream holds residual JSON ([`RESIDUAL_KEY`]).
    pub fn is_residual(&self) -> bool {
        self.schema.metadata().contains_key(RESIDUAL_KEY)
    }

    /// The state stream's text: every row's residual JSON (what no shredded column holds:
    /// the whole value of every unshredded member) or, in a block without shredded members,
    /// its state; an error when the state stream was not kept.
    pub fn residual(&self) -> Result<StringArray> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| storage("a block's states were not read"))?;
        column(&read_stream(state, None)?, 0)
    }

    /// Every row's state as JSON text (`null` for a tombstone), rebuilt from the residual
    /// text and every shredded column when the block holds residual JSON; an error when the
    /// state stream was not kept.
    pub fn data(&self) -> Result<StringArray> {
        let residual = self.residual()?;
        if !self.is_residual() {
            return Ok(residual);
        }
        let positions: Vec<usize> = (FIXED_COLUMNS..self.schema.fields().len()).collect();
        let shredded: Vec<(String, Shredded, ArrayRef)> = self
            .columns(&positions)?
            .into_iter()
            .zip(&positions)
            .map(|(column, &i)| {
                let (name, kind) = member_of(self.schema.field(i))?;
                Ok((name, kind, column))
            })
            .collect::<Result<_>>()?;
        let texts = (0..residual.len())
            .map(|i| {
                serde_json::to_string(&rebuilt(residual.value(i), &shredded, i)?).map_err(storage)
            })
            .collect::<Result<Vec<String>>>()?;
        Ok(StringArray::from(texts))
    }
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

/// A position in a run's rows (sorted by id), block by block, past the rows its blocks'
/// deletion vectors mark.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// Per block: the block and its marked rows (ascending).
    blocks: Vec<(Arc<Block>, Vec<u32>)>,
    block: usize,
    row: usize,
}

impl Cursor {
    /// A cursor at the first unmarked row of `blocks` (one run's, in id order, each with its
    /// marked rows).
    pub(crate) fn new(mut blocks: Vec<(Arc<Block>, Vec<u32>)>) -> Cursor {
        blocks.retain(|(b, _)| b.len() > 0);
        let mut cursor = Cursor {
            blocks,
            block: 0,
            row: 0,
        };
        cursor.settle();
        cursor
    }

    /// Rows from the cursor to the end (marked ones included: an upper bound).
    pub(crate) fn rows(&self) -> usize {
        self.blocks[self.block.min(self.blocks.len())..]
            .iter()
            .map(|(b, _)| b.len())
            .sum::<usize>()
            - self.row
    }

    /// The id at the cursor (`None`: past the end).
    pub(crate) fn peek(&self) -> Option<&str> {
        self.blocks.get(self.block).map(|(b, _)| b.id(self.row))
    }

    /// The block and row at the cursor (not past the end).
    pub(crate) fn at(&self) -> (&Block, usize) {
        (&self.blocks[self.block].0, self.row)
    }

    fn advance(&mut self) {
        self.row += 1;
        self.settle();
    }

    /// Moves past the end of a block and past marked rows.
    fn settle(&mut self) {
        while let Some((block, marked)) = self.blocks.get(self.block) {
            if self.row >= block.len() {
                self.block += 1;
                self.row = 0;
            } else if marked.binary_search(&(self.row as u32)).is_ok() {
                self.row += 1;
            } else {
                return;
            }
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
/// each id winning: each a block and its row.
pub(crate) fn merge(mut cursors: Vec<Cursor>) -> Vec<(Arc<Block>, usize)> {
    let mut out = Vec::with_capacity(cursors.iter().map(Cursor::rows).sum());
    let mut id = String::new();
    while let Some((winner, _)) = least(&cursors) {
        let c = &cursors[winner];
        let (block, i) = (c.blocks[c.block].0.clone(), c.row);
        id.clear();
        id.push_str(block.id(i));
        skip(&mut cursors, &id);
        out.push((block, i));
    }
    out
}

#[cfg(test)]
mod tests;
