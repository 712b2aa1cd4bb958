//! The state views: the current state of every resource of one model in a shard. The document
//! view ([`DOCUMENTS`], `urn:themis:document:...`) and the relational view ([`ROWS`],
//! `urn:themis:relational:...`, one row per URN) are two instances. `put` replaces the state, `patch` merges into it (RFC 7396 JSON merge patch; a
//! patch of an absent or deleted resource applies to `{}`), `delete` removes it (a tombstone
//! keeps the revision and position of the delete, so a read can say when it went away).
//!
//! Storage (`docs/design/columnar.md`, phase 2): an LSM of columnar runs per namespace.
//! Applying an event writes the resource's state to the tail, row by row; when a namespace's
//! tail holds [`StateView::flush_rows`] resources, they move, in the same transaction, into a
//! new immutable run (sorted by id, cut into blocks of Arrow IPC with ZSTD, [`crate::runs`]);
//! when the newest [`FAN_IN`] runs of a namespace are of one size class they are merged into
//! one (the newest state of each id wins). The newest state of an id is the tail's, else that
//! of the newest run holding it. Flushes and merges happen at points the log decides, so every
//! replica and every rebuild holds the same bytes.
//!
//! Tables per shard (prefix `doc` or `rel`): `{p}/{shard}`: the tail, URN → JSON of
//! [`Document`]; `{p}_tailn/{shard}`: namespace → resources in its tail (u64 LE);
//! `{p}_runs/{shard}`: `{ns}\0{run}` → rows (u64 LE), where a run's name is the LSN and a
//! counter of the apply that made it (20 hex digits, so names sort by age);
//! `{p}_bix/{shard}`: `{ns}\0{run}\0{first id}` → the block's name (xxh3-128 of its bytes,
//! 16 bytes LE), rows (u32 LE) and last id; `{p}_blk/{shard}`: same key, `\0` and a piece number → the block's bytes, in pieces of
//! [`PIECE_BYTES`];
//! `{p}_del/{shard}`: same key → the block's deletion vector, the rows (u32 LE each,
//! ascending) whose states a newer run holds, marked when the newer state is flushed (so a
//! reader of the runs needs no merge by id: every id has at most one unmarked row, its newest
//! flushed state, which only the tail may shadow);
//! `{p}_changed/{shard}`: namespace → LSN of the last entry that changed it (what query caches
//! key on).

use redb::{ReadTransaction, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::runs::{self, Row};
use crate::{Result, View, all_json, clear_tables, digest_tables, get_json, storage, table};

/// The kind name.
pub const KIND: &str = "document";

/// Runs of one size class merged into one.
pub const FAN_IN: usize = 4;

/// Resources a namespace's tail holds before they move into a run (and rows per block), by
/// default.
pub const FLUSH_ROWS_DEFAULT: usize = 8192;

/// One resource's materialized state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The state (`null` once deleted).
    pub data: Value,
    /// Revision of the last event applied to it.
    pub revision: u64,
    /// LSN of that event's entry.
    pub lsn: u64,
    /// Commit timestamp of that entry (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Whether the last event deleted it.
    pub deleted: bool,
}

/// A view of the current state of every resource of one model in a shard: the document view
/// and the relational view (rows) are two instances.
#[derive(Debug, Clone, Copy)]
pub struct StateView {
    kind: &'static str,
    model: Model,
    prefix: &'static str,
    flush_rows: usize,
    /// Whether its blocks shred the states' top-level members into typed columns
    /// ([`runs`]): the relational view's, which queries read column by column.
    shred: bool,
}

/// The document view (`document`).
pub const DOCUMENTS: StateView = StateView {
    kind: KIND,
    model: Model::Document,
    prefix: "doc",
    flush_rows: FLUSH_ROWS_DEFAULT,
    shred: false,
};

/// The relational view (`relational`): one row per URN, stored as appended (see
/// `docs/design/namespaces.md`: the schema applies when a query reads the rows).
pub const ROWS: StateView = StateView {
    kind: "relational",
    model: Model::Relational,
    prefix: "rel",
    flush_rows: FLUSH_ROWS_DEFAULT,
    shred: true,
};

/// One resource of a namespace, as [`StateView::namespace`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The URN's id.
    pub id: String,
    /// Its state.
    pub state: Document,
}

/// The tables of one shard of a state view, in a read or a write transaction (`None`: never
/// created).
struct Tables<T> {
    tail: Option<T>,
    runs: Option<T>,
    bix: Option<T>,
    blk: Option<T>,
    del: Option<T>,
}

type WriteTables<'t> = Tables<Table<'t, &'static str, &'static [u8]>>;

/// A run of a namespace: its name and rows.
#[derive(Debug, Clone)]
struct RunInfo {
    name: String,
    rows: u64,
}

fn u64_of(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_le_bytes(
        bytes
            .try_into()
            .map_err(|_| storage("a counter is not 8 bytes"))?,
    ))
}

/// Where a run's key range of `ns` starts and ends.
fn run_prefix(ns: &str) -> (String, String) {
    (format!("{ns}\0"), format!("{ns}\u{1}"))
}

/// Run `run` of `ns` in `{p}_runs`.
fn run_key(ns: &str, run: &str) -> String {
    format!("{ns}\0{run}")
}

/// Where the keys of run `run`'s blocks start in `{p}_bix` and `{p}_blk` (the block's first
/// id follows).
fn block_prefix(ns: &str, run: &str) -> String {
    format!("{ns}\0{run}\0")
}

/// The resources of namespace `prefix` (its URN prefix) in the tail, in id order.
fn tail_of<T: ReadableTable<&'static str, &'static [u8]>>(
    tail: &T,
    prefix: &str,
) -> Result<Vec<(String, Document)>> {
    tail_entries(tail, prefix)?
        .into_iter()
        .map(|(id, bytes)| Ok((id, serde_json::from_slice(&bytes).map_err(storage)?)))
        .collect()
}

/// The entries of namespace `prefix` (its URN prefix) in the tail, in id order, as stored.
fn tail_entries<T: ReadableTable<&'static str, &'static [u8]>>(
    tail: &T,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in tail.range(prefix..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let Some(id) = k.value().strip_prefix(prefix) else {
            break;
        };
        out.push((id.to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// Bytes of a block piece: a block is stored as pieces of at most this many bytes (and what
/// is left), each one value of `{p}_blk` under the block's key, `\0` and the piece's number
/// (4 hex digits). redb gives a value larger than a page an allocation of a power of two of
/// pages, so a ~80 KB block held ~128 KB of file; a piece with its key fills a 4 KiB leaf page.
const PIECE_BYTES: usize = 4096 - 160;

/// The key of piece `n` of block `key`.
fn piece_key(key: &str, n: usize) -> String {
    format!("{key}\0{n:04x}")
}

/// The stored bytes of block `key` (its pieces, joined).
fn block_bytes<T: ReadableTable<&'static str, &'static [u8]>>(
    blk: &T,
    key: &str,
) -> Result<Vec<u8>> {
    let (from, to) = (format!("{key}\0"), format!("{key}\u{1}"));
    let mut out = Vec::new();
    for item in blk.range(from.as_str()..to.as_str()).map_err(storage)? {
        out.extend_from_slice(item.map_err(storage)?.1.value());
    }
    if out.is_empty() {
        return Err(storage(format!("block {key:?} is missing")));
    }
    Ok(out)
}

/// Stores `bytes` as block `key`'s pieces.
fn put_block(
    blk: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    bytes: &[u8],
) -> Result<()> {
    for (n, piece) in bytes
        .chunks(PIECE_BYTES - key.len().min(PIECE_BYTES / 2))
        .enumerate()
    {
        blk.insert(piece_key(key, n).as_str(), piece)
            .map_err(storage)?;
    }
    Ok(())
}

/// Removes block `key`'s pieces.
fn remove_block(blk: &mut Table<'_, &'static str, &'static [u8]>, key: &str) -> Result<()> {
    let (from, to) = (format!("{key}\0"), format!("{key}\u{1}"));
    blk.retain_in(from.as_str()..to.as_str(), |_, _| false)
        .map_err(storage)?;
    Ok(())
}

/// The runs of `ns`, oldest first.
fn run_list<T: ReadableTable<&'static str, &'static [u8]>>(
    runs: &T,
    ns: &str,
) -> Result<Vec<RunInfo>> {
    let (from, to) = run_prefix(ns);
    let mut out = Vec::new();
    for item in runs.range(from.as_str()..to.as_str()).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        out.push(RunInfo {
            name: k.value()[from.len()..].to_owned(),
            rows: u64_of(v.value())?,
        });
    }
    Ok(out)
}

/// A block's entry in the block index: its name, rows and last id.
struct BlockInfo {
    key: String,
    name: u128,
    rows: u32,
    last: String,
}

fn block_info(key: &str, value: &[u8]) -> Result<BlockInfo> {
    if value.len() < 20 {
        return Err(storage("a block index entry is shorter than 20 bytes"));
    }
    Ok(BlockInfo {
        key: key.to_owned(),
        name: u128::from_le_bytes(value[..16].try_into().expect("16 bytes")),
        rows: u32::from_le_bytes(value[16..20].try_into().expect("4 bytes")),
        last: String::from_utf8(value[20..].to_vec()).map_err(storage)?,
    })
}

/// A deletion vector's rows from its stored bytes.
fn marked_of(bytes: &[u8]) -> Result<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(storage("a deletion vector is not a list of u32"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// The rows the deletion vector of block `key` marks (ascending).
fn marked<T: ReadableTable<&'static str, &'static [u8]>>(
    del: Option<&T>,
    key: &str,
) -> Result<Vec<u32>> {
    match del {
        Some(del) => match del.get(key).map_err(storage)? {
            Some(v) => marked_of(v.value()),
            None => Ok(Vec::new()),
        },
        None => Ok(Vec::new()),
    }
}

/// The blocks of run `run` of `ns`, in id order.
fn blocks_of<T: ReadableTable<&'static str, &'static [u8]>>(
    bix: &T,
    ns: &str,
    run: &str,
) -> Result<Vec<BlockInfo>> {
    let from = block_prefix(ns, run);
    let to = format!("{}\u{1}", run_key(ns, run));
    let mut out = Vec::new();
    for item in bix.range(from.as_str()..to.as_str()).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        out.push(block_info(k.value(), v.value())?);
    }
    Ok(out)
}

/// Reads a block (through the cache when `keep`).
fn read_block<T: ReadableTable<&'static str, &'static [u8]>>(
    blk: &T,
    info: &BlockInfo,
    keep: bool,
) -> Result<std::sync::Arc<runs::Block>> {
    runs::block(info.name, keep, || block_bytes(blk, &info.key))
}

/// A cursor over run `run` of `ns` (its blocks decoded without filling the cache, with their
/// shredded columns when `members`: a merge's), past the rows their deletion vectors mark.
fn run_cursor<T: ReadableTable<&'static str, &'static [u8]>>(
    bix: &T,
    blk: &T,
    del: Option<&T>,
    ns: &str,
    run: &str,
    members: bool,
) -> Result<runs::Cursor> {
    let mut blocks = Vec::new();
    for info in blocks_of(bix, ns, run)? {
        let block = if members {
            let bytes = block_bytes(blk, &info.key)?;
            std::sync::Arc::new(runs::decode_with_members(&bytes)?)
        } else {
            read_block(blk, &info, false)?
        };
        blocks.push((block, marked(del, &info.key)?));
    }
    Ok(runs::Cursor::new(blocks))
}

impl<T: ReadableTable<&'static str, &'static [u8]>> Tables<T> {
    /// The newest state of `id` of `ns` held by a run.
    fn in_runs(&self, ns: &str, id: &str) -> Result<Option<Document>> {
        let (Some(runs), Some(bix), Some(blk)) = (&self.runs, &self.bix, &self.blk) else {
            return Ok(None);
        };
        for run in run_list(runs, ns)?.iter().rev() {
            let from = block_prefix(ns, &run.name);
            let upto = format!("{from}{id}");
            let Some(item) = bix
                .range(from.as_str()..=upto.as_str())
                .map_err(storage)?
                .next_back()
            else {
                continue;
            };
            let (k, v) = item.map_err(storage)?;
            let info = block_info(k.value(), v.value())?;
            if id > info.last.as_str() {
                continue;
            }
            let block = read_block(blk, &info, true)?;
            if let Some(i) = block.find(id) {
                return block.document(i).map(Some);
            }
        }
        Ok(None)
    }

    /// The state of `urn` (tail first, then the runs, newest first).
    fn lookup(&self, view: &StateView, urn: &str) -> Result<Option<Document>> {
        if let Some(tail) = &self.tail
            && let Some(v) = tail.get(urn).map_err(storage)?
        {
            return serde_json::from_slice(v.value()).map(Some).map_err(storage);
        }
        let Some((ns, id)) = view.split(urn) else {
            return Ok(None);
        };
        self.in_runs(ns, id)
    }

    /// Every resource of `ns`, tombstones included, in id order: the newest state of each.
    fn namespace(&self, view: &StateView, ns: &str) -> Result<Vec<(String, Document)>> {
        let mut out = Vec::new();
        self.scan(view, ns, |id, state| {
            out.push((id.to_owned(), state.document()?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every resource of `ns`, tombstones included, in id order (the newest
    /// state of each: the tail's over every run's, a newer run's over an older's), its data
    /// the JSON text the view holds.
    fn scan(
        &self,
        view: &StateView,
        ns: &str,
        mut f: impl FnMut(&str, RawState<'_>) -> Result<()>,
    ) -> Result<()> {
        // Per run (oldest first) a cursor over its blocks.
        let mut cursors = Vec::new();
        if let (Some(runs), Some(bix), Some(blk)) = (&self.runs, &self.bix, &self.blk) {
            for run in run_list(runs, ns)? {
                cursors.push(run_cursor(
                    bix,
                    blk,
                    self.del.as_ref(),
                    ns,
                    &run.name,
                    false,
                )?);
            }
        }
        // The tail's entries as stored (a namespace holds at most a flush size of them).
        let tail_rows = match &self.tail {
            Some(tail) => tail_entries(tail, &view.urn_prefix(ns))?,
            None => Vec::new(),
        };
        let mut tail = tail_rows.iter().peekable();
        let mut id = String::new();
        loop {
            // The least id at the heads: the tail's state wins over every run's.
            let least = runs::least(&cursors);
            let from_tail = match (&least, tail.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some((_, l)), Some((t, _))) => t.as_str() <= *l,
            };
            id.clear();
            if from_tail {
                let (t, bytes) = tail.next().expect("peeked");
                let stored: Stored<'_> = serde_json::from_slice(bytes).map_err(storage)?;
                f(t, stored.raw())?;
                id.push_str(t);
            } else {
                let Some((winner, at)) = least else {
                    break;
                };
                let (block, i) = cursors[winner].at();
                let text = block.text(i)?;
                f(at, block.raw(i, &text))?;
                id.push_str(at);
            }
            runs::skip(&mut cursors, &id);
        }
        Ok(())
    }
}

/// A resource's state as the view holds it, its data still JSON text (see
/// [`StateView::scan`]).
#[derive(Debug, Clone, Copy)]
pub struct RawState<'a> {
    /// The state as JSON text (`null` once deleted), as `serde_json` writes a value: compact,
    /// object members in name order.
    pub data: &'a str,
    /// Revision of the last event applied to it.
    pub revision: u64,
    /// LSN of that event's entry.
    pub lsn: u64,
    /// Commit timestamp of that entry (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Whether the last event deleted it.
    pub deleted: bool,
}

impl RawState<'_> {
    /// The state, its data parsed.
    pub fn document(&self) -> Result<Document> {
        Ok(Document {
            data: serde_json::from_str(self.data).map_err(storage)?,
            revision: self.revision,
            lsn: self.lsn,
            updated_ms: self.updated_ms,
            deleted: self.deleted,
        })
    }
}

/// A [`Document`] as the tail stores it, read without parsing its data.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    revision: u64,
    lsn: u64,
    updated_ms: u64,
    deleted: bool,
}

impl<'a> Stored<'a> {
    fn raw(&self) -> RawState<'a> {
        RawState {
            data: self.data.get(),
            revision: self.revision,
            lsn: self.lsn,
            updated_ms: self.updated_ms,
            deleted: self.deleted,
        }
    }
}

impl StateView {
    /// Its kind name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// This view with `rows` as its flush size (resources a namespace's tail holds before they
    /// move into a run, and rows per block; at least 1).
    pub const fn with_flush_rows(self, rows: usize) -> StateView {
        StateView {
            flush_rows: if rows == 0 { 1 } else { rows },
            ..self
        }
    }

    /// Resources a namespace's tail holds before they move into a run.
    pub fn flush_rows(&self) -> usize {
        self.flush_rows
    }

    fn table_name(&self, shard: ShardId) -> String {
        format!("{}/{}", self.prefix, shard.0)
    }

    /// Per shard: namespace → LSN of the last entry that changed one of its resources.
    fn changes_name(&self, shard: ShardId) -> String {
        format!("{}_changed/{}", self.prefix, shard.0)
    }

    fn sub_name(&self, what: &str, shard: ShardId) -> String {
        format!("{}_{what}/{}", self.prefix, shard.0)
    }

    /// Every table of `shard` (what `clear` deletes and `digest` hashes, the last one aside).
    fn names(&self, shard: ShardId) -> Vec<String> {
        vec![
            self.table_name(shard),
            self.sub_name("tailn", shard),
            self.sub_name("runs", shard),
            self.sub_name("bix", shard),
            self.sub_name("blk", shard),
            self.sub_name("del", shard),
            self.changes_name(shard),
        ]
    }

    fn urn_prefix(&self, ns: &str) -> String {
        format!("urn:themis:{}:{ns}:", self.model)
    }

    /// A URN of this view's model as (namespace, id).
    fn split<'u>(&self, urn: &'u str) -> Option<(&'u str, &'u str)> {
        urn.strip_prefix("urn:themis:")?
            .strip_prefix(self.model.as_str())?
            .strip_prefix(':')?
            .split_once(':')
    }

    /// The model whose resources it holds.
    pub fn model(&self) -> Model {
        self.model
    }

    fn read_tables(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
    ) -> Result<Tables<redb::ReadOnlyTable<&'static str, &'static [u8]>>> {
        Ok(Tables {
            tail: crate::read_table(tx, &self.table_name(shard))?,
            runs: crate::read_table(tx, &self.sub_name("runs", shard))?,
            bix: crate::read_table(tx, &self.sub_name("bix", shard))?,
            blk: crate::read_table(tx, &self.sub_name("blk", shard))?,
            del: crate::read_table(tx, &self.sub_name("del", shard))?,
        })
    }

    fn write_tables<'t>(
        &self,
        tx: &'t WriteTransaction,
        shard: ShardId,
    ) -> Result<WriteTables<'t>> {
        let open = |name: String| tx.open_table(table(&name)).map(Some).map_err(storage);
        Ok(Tables {
            tail: open(self.table_name(shard))?,
            runs: open(self.sub_name("runs", shard))?,
            bix: open(self.sub_name("bix", shard))?,
            blk: open(self.sub_name("blk", shard))?,
            del: open(self.sub_name("del", shard))?,
        })
    }

    /// `urn`'s state in `shard` inside a write transaction (what `apply` just wrote).
    pub(crate) fn get_in_write(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        urn: &str,
    ) -> Result<Option<Document>> {
        self.write_tables(tx, shard)?.lookup(self, urn)
    }

    /// Every resource of `namespace` in `shard` (URN, state; tombstones included) inside a
    /// write transaction.
    pub(crate) fn namespace_in_write(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Vec<(String, Document)>> {
        let prefix = self.urn_prefix(namespace);
        Ok(self
            .write_tables(tx, shard)?
            .namespace(self, namespace)?
            .into_iter()
            .map(|(id, doc)| (format!("{prefix}{id}"), doc))
            .collect())
    }

    /// `urn`'s state in `shard` (`None`: never written).
    pub fn get(&self, tx: &ReadTransaction, shard: ShardId, urn: &str) -> Result<Option<Document>> {
        self.read_tables(tx, shard)?.lookup(self, urn)
    }

    /// Every resource state of `shard`, in URN order.
    pub fn all(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(String, Document)>> {
        let tables = self.read_tables(tx, shard)?;
        let mut out = Vec::new();
        for ns in self.namespaces(tx, shard)? {
            let prefix = self.urn_prefix(&ns);
            out.extend(
                tables
                    .namespace(self, &ns)?
                    .into_iter()
                    .map(|(id, doc)| (format!("{prefix}{id}"), doc)),
            );
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Calls `f` with every resource of `namespace` in `shard`, tombstones included, in id
    /// order, its data as the JSON text the view holds: what a reader that wants a few fields
    /// of every resource uses instead of [`StateView::namespace`], which parses every state.
    pub fn scan(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
        f: impl FnMut(&str, RawState<'_>) -> Result<()>,
    ) -> Result<()> {
        self.read_tables(tx, shard)?.scan(self, namespace, f)
    }

    /// The runs of `namespace` in `shard`, oldest first, each as its blocks in id order: what
    /// a reader that takes the stored columns as they are uses (the query side's tables).
    /// Every id has at most one row not marked by its block's deletion vector, its newest
    /// flushed state, unless the tail holds a newer one ([`StateView::tail`]).
    pub fn runs(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Vec<Vec<RunBlock>>> {
        let tables = self.read_tables(tx, shard)?;
        let (Some(runs), Some(bix)) = (&tables.runs, &tables.bix) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for run in run_list(runs, namespace)? {
            let prefix = block_prefix(namespace, &run.name);
            let mut blocks = Vec::new();
            for info in blocks_of(bix, namespace, &run.name)? {
                blocks.push(RunBlock {
                    first: info.key[prefix.len()..].to_owned(),
                    marked: marked(tables.del.as_ref(), &info.key)?,
                    last: info.last,
                    name: info.name,
                    rows: info.rows as usize,
                    key: info.key,
                });
            }
            out.push(blocks);
        }
        Ok(out)
    }

    /// The stored block `block` of `shard` (one [`StateView::runs`] listed in the same
    /// transaction), with its states' JSON text when `state` (or when it has members it did
    /// not shred).
    pub fn encoded(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        block: &RunBlock,
        state: bool,
    ) -> Result<runs::Encoded> {
        let blk = crate::read_table(tx, &self.sub_name("blk", shard))?
            .ok_or_else(|| storage("the blocks table is missing"))?;
        let bytes = block_bytes(&blk, &block.key)?;
        let bytes = bytes.as_slice();
        if runs::name_of(bytes) != block.name {
            return Err(storage(format!(
                "block {:?} does not match its name",
                block.key
            )));
        }
        runs::Encoded::new(bytes, block.rows, state)
    }

    /// Calls `f` with every resource of `namespace` in `shard`'s tail (tombstones included),
    /// in id order, its data as the JSON text the view holds.
    pub fn tail(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
        mut f: impl FnMut(&str, RawState<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(tail) = crate::read_table(tx, &self.table_name(shard))? else {
            return Ok(());
        };
        for (id, bytes) in tail_entries(&tail, &self.urn_prefix(namespace))? {
            let stored: Stored<'_> = serde_json::from_slice(&bytes).map_err(storage)?;
            f(&id, stored.raw())?;
        }
        Ok(())
    }

    /// Every resource of `namespace` in `shard`, tombstones included, in id order.
    pub fn namespace(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Vec<Resource>> {
        Ok(self
            .read_tables(tx, shard)?
            .namespace(self, namespace)?
            .into_iter()
            .map(|(id, state)| Resource { id, state })
            .collect())
    }

    /// The LSN of the last entry that changed a resource of `namespace` in `shard` (`None`:
    /// none ever did). Caches of a namespace's rows stay valid while it stays the same.
    pub fn changed(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Option<u64>> {
        get_json(tx, &self.changes_name(shard), namespace)
    }

    /// Every namespace with resources (or tombstones) in `shard`, in name order.
    pub fn namespaces(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<String>> {
        Ok(all_json::<u64>(tx, &self.changes_name(shard))?
            .into_iter()
            .map(|(ns, _)| ns)
            .collect())
    }

    /// How `shard`'s resources are stored: per namespace its tail rows and runs (rows each,
    /// oldest first).
    pub fn layout(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<NamespaceLayout>> {
        let tables = self.read_tables(tx, shard)?;
        let tailn = crate::read_table(tx, &self.sub_name("tailn", shard))?;
        let mut out = Vec::new();
        for namespace in self.namespaces(tx, shard)? {
            let tail = match &tailn {
                Some(t) => t
                    .get(namespace.as_str())
                    .map_err(storage)?
                    .map(|v| u64_of(v.value()))
                    .transpose()?
                    .unwrap_or(0),
                None => 0,
            };
            let runs = match &tables.runs {
                Some(r) => run_list(r, &namespace)?
                    .into_iter()
                    .map(|r| r.rows)
                    .collect(),
                None => Vec::new(),
            };
            out.push(NamespaceLayout {
                namespace,
                tail,
                runs,
            });
        }
        Ok(out)
    }

    /// Moves the tail of `ns` into a new run, then merges runs while the newest [`FAN_IN`] are
    /// of one size class. `made` counts the runs this apply made (their names).
    fn flush(&self, t: &mut WriteTables<'_>, ns: &str, lsn: u64, made: &mut u32) -> Result<()> {
        let tail = t.tail.as_mut().expect("open for writing");
        let prefix = self.urn_prefix(ns);
        let mut rows = Vec::new();
        for (id, doc) in tail_of(tail, &prefix)? {
            rows.push(Row::of(id, &doc)?);
        }
        for row in &rows {
            tail.remove(format!("{prefix}{}", row.id).as_str())
                .map_err(storage)?;
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        self.mark(t, ns, &ids)?;
        self.write_run(t, ns, lsn, made, &rows, None)?;
        loop {
            let runs = run_list(t.runs.as_ref().expect("open"), ns)?;
            if runs.len() < FAN_IN {
                return Ok(());
            }
            let newest = &runs[runs.len() - FAN_IN..];
            let class = self.size_class(newest[0].rows);
            if newest.iter().any(|r| self.size_class(r.rows) != class) {
                return Ok(());
            }
            let mut cursors = Vec::with_capacity(FAN_IN);
            for run in newest {
                cursors.push(run_cursor(
                    t.bix.as_ref().expect("open"),
                    t.blk.as_ref().expect("open"),
                    t.del.as_ref(),
                    ns,
                    &run.name,
                    self.shred,
                )?);
            }
            let picks = runs::merge(cursors);
            // Shredded merges take each row's state from its source block.
            let merged: Vec<Row> = picks
                .iter()
                .map(|(b, i)| {
                    if self.shred {
                        Ok(b.merged_row(*i))
                    } else {
                        b.row(*i)
                    }
                })
                .collect::<Result<_>>()?;
            for run in newest {
                self.delete_run(t, ns, &run.name)?;
            }
            self.write_run(t, ns, lsn, made, &merged, Some(&picks))?;
        }
    }

    /// Marks, in the deletion vectors of `ns`'s runs, the rows of `ids` (ascending): their
    /// states are superseded by the ones being flushed. Per run, the ids and the blocks are
    /// walked together; a block is decoded (its ids only) when an id falls in its range.
    fn mark(&self, t: &mut WriteTables<'_>, ns: &str, ids: &[&str]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let runs = run_list(t.runs.as_ref().expect("open"), ns)?;
        for run in runs {
            let prefix = block_prefix(ns, &run.name);
            let mut i = 0;
            for info in blocks_of(t.bix.as_ref().expect("open"), ns, &run.name)? {
                let first = &info.key[prefix.len()..];
                while i < ids.len() && ids[i] < first {
                    i += 1;
                }
                let start = i;
                while i < ids.len() && ids[i] <= info.last.as_str() {
                    i += 1;
                }
                if start == i {
                    continue;
                }
                let block_ids = {
                    let bytes = block_bytes(t.blk.as_ref().expect("open"), &info.key)?;
                    runs::decode_ids(&bytes)?
                };
                let found: Vec<u32> = ids[start..i]
                    .iter()
                    .filter_map(|id| runs::row_of(&block_ids, id).map(|r| r as u32))
                    .collect();
                if found.is_empty() {
                    continue;
                }
                let mut rows = marked(t.del.as_ref(), &info.key)?;
                rows.extend(found);
                rows.sort_unstable();
                rows.dedup();
                let bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).collect();
                t.del
                    .as_mut()
                    .expect("open")
                    .insert(info.key.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// The size class of a run of `rows` rows: 0 below `flush_rows × FAN_IN`, then one more
    /// per factor of [`FAN_IN`].
    fn size_class(&self, rows: u64) -> u32 {
        let mut class = 0;
        let mut bound = (self.flush_rows as u64).saturating_mul(FAN_IN as u64);
        while rows >= bound {
            class += 1;
            bound = bound.saturating_mul(FAN_IN as u64);
        }
        class
    }

    /// Writes `rows` as a new run of `ns`; `picks`, when they come from a merge, are where
    /// each row comes from (their members' columns are carried over, not parsed again).
    fn write_run(
        &self,
        t: &mut WriteTables<'_>,
        ns: &str,
        lsn: u64,
        made: &mut u32,
        rows: &[Row],
        picks: Option<&[(std::sync::Arc<runs::Block>, usize)]>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let run = format!("{lsn:016x}{:04x}", *made);
        *made += 1;
        let (bix, blk) = (t.bix.as_mut().expect("open"), t.blk.as_mut().expect("open"));
        for (k, block) in rows.chunks(self.flush_rows).enumerate() {
            let at = k * self.flush_rows;
            let shred = match (self.shred, picks) {
                (false, _) => runs::Shred::No,
                (true, Some(p)) => runs::Shred::Merged(&p[at..at + block.len()]),
                (true, None) => runs::Shred::Parse,
            };
            let bytes = runs::encode(block, shred)?;
            let first = &block[0].id;
            let last = &block[block.len() - 1].id;
            let key = format!("{}{first}", block_prefix(ns, &run));
            let mut info = Vec::with_capacity(20 + last.len());
            info.extend_from_slice(&runs::name_of(&bytes).to_le_bytes());
            info.extend_from_slice(&u32::try_from(block.len()).map_err(storage)?.to_le_bytes());
            info.extend_from_slice(last.as_bytes());
            bix.insert(key.as_str(), info.as_slice()).map_err(storage)?;
            put_block(blk, &key, &bytes)?;
        }
        t.runs
            .as_mut()
            .expect("open")
            .insert(
                run_key(ns, &run).as_str(),
                (rows.len() as u64).to_le_bytes().as_slice(),
            )
            .map_err(storage)?;
        Ok(())
    }

    fn delete_run(&self, t: &mut WriteTables<'_>, ns: &str, run: &str) -> Result<()> {
        let blocks = blocks_of(t.bix.as_ref().expect("open"), ns, run)?;
        for info in blocks {
            t.bix
                .as_mut()
                .expect("open")
                .remove(info.key.as_str())
                .map_err(storage)?;
            remove_block(t.blk.as_mut().expect("open"), &info.key)?;
            t.del
                .as_mut()
                .expect("open")
                .remove(info.key.as_str())
                .map_err(storage)?;
        }
        t.runs
            .as_mut()
            .expect("open")
            .remove(run_key(ns, run).as_str())
            .map_err(storage)?;
        Ok(())
    }
}

/// One block of a namespace's runs ([`StateView::runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunBlock {
    /// Its first id.
    pub first: String,
    /// Its last id.
    pub last: String,
    /// Its name: the xxh3-128 of its bytes (the same name is the same block, in any view).
    pub name: u128,
    /// Rows it holds.
    pub rows: usize,
    /// The rows its deletion vector marks (ascending): states a newer run holds.
    pub marked: Vec<u32>,
    key: String,
}

/// How one namespace of a shard is stored ([`StateView::layout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceLayout {
    /// The namespace.
    pub namespace: String,
    /// Resources in its tail.
    pub tail: u64,
    /// Rows of each run, oldest first.
    pub runs: Vec<u64>,
}

/// An event's `data` as JSON (`{}` when it has none).
pub(crate) fn event_data(event: &themis_log::Event) -> Result<Value> {
    event
        .data
        .as_ref()
        .map(|d| serde_json::from_str(d.get()))
        .transpose()
        .map_err(storage)
        .map(|v| v.unwrap_or(Value::Object(serde_json::Map::new())))
}

/// Applies an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let object = target.as_object_mut().expect("made an object");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl View for StateView {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let mut t = self.write_tables(tx, shard)?;
        let mut changes = tx
            .open_table(table(&self.changes_name(shard)))
            .map_err(storage)?;
        let mut tailn = tx
            .open_table(table(&self.sub_name("tailn", shard)))
            .map_err(storage)?;
        let lsn = serde_json::to_vec(&entry.lsn.0).map_err(storage)?;
        // Per namespace touched: resources added to its tail.
        let mut touched: std::collections::BTreeMap<&str, u64> = Default::default();
        for e in &entry.events {
            let event = &e.event;
            if event.urn.model() != self.model {
                continue;
            }
            let key = event.urn.as_str();
            let data = || event_data(event);
            let (data, deleted) = match event.op {
                Op::Put => (data()?, false),
                Op::Patch => {
                    // Only a patch needs the previous state.
                    let mut state = match t.lookup(self, key)? {
                        Some(d) if !d.deleted => d.data,
                        _ => Value::Object(serde_json::Map::new()),
                    };
                    merge_patch(&mut state, &data()?);
                    (state, false)
                }
                Op::Delete => (Value::Null, true),
                // Other ops are refused for documents and rows before they reach the log.
                _ => continue,
            };
            let doc = Document {
                data,
                revision: e.revision,
                lsn: entry.lsn.0,
                updated_ms: entry.ts_ms,
                deleted,
            };
            let bytes = serde_json::to_vec(&doc).map_err(storage)?;
            let added = t
                .tail
                .as_mut()
                .expect("open for writing")
                .insert(key, bytes.as_slice())
                .map_err(storage)?
                .is_none();
            *touched.entry(event.urn.namespace()).or_default() += u64::from(added);
        }
        let mut made = 0;
        for (ns, added) in touched {
            changes.insert(ns, lsn.as_slice()).map_err(storage)?;
            let held = tailn
                .get(ns)
                .map_err(storage)?
                .map(|v| u64_of(v.value()))
                .transpose()?
                .unwrap_or(0)
                + added;
            if held >= self.flush_rows as u64 {
                self.flush(&mut t, ns, entry.lsn.0, &mut made)?;
                tailn.remove(ns).map_err(storage)?;
            } else if added > 0 {
                tailn
                    .insert(ns, held.to_le_bytes().as_slice())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        clear_tables(tx, &self.names(shard))
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        let mut names = self.names(shard);
        names.pop(); // the change LSNs are not state
        digest_tables(tx, &names)
    }
}

/// Reads `urn`'s state from the document view of `shard` (`None`: never written).
pub fn get(tx: &ReadTransaction, shard: ShardId, urn: &str) -> Result<Option<Document>> {
    DOCUMENTS.get(tx, shard, urn)
}

/// Every resource state in the document view of `shard`, in URN order.
pub fn all(tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(String, Document)>> {
    DOCUMENTS.all(tx, shard)
}

#[cfg(test)]
mod tests;
