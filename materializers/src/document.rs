//! The document view: the current state of every document resource (`urn:themis:document:...`)
//! of a shard. `put` replaces the state, `patch` merges into it (RFC 7396 JSON merge patch; a
//! patch of an absent or deleted resource applies to `{}`), `delete` removes it (a tombstone
//! keeps the revision and position of the delete, so a read can say when it went away).
//!
//! Table per shard: `doc/{shard}`: URN → JSON of [`Document`].

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::{Result, View, all_json, digest_table, get_json, storage, table};

/// The kind name.
pub const KIND: &str = "document";

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

/// The document view.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentView;

fn table_name(shard: ShardId) -> String {
    format!("doc/{}", shard.0)
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

impl View for DocumentView {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let name = table_name(shard);
        let mut docs = tx.open_table(table(&name)).map_err(storage)?;
        for e in &entry.events {
            let event = &e.event;
            if event.urn.model() != Model::Document {
                continue;
            }
            let key = event.urn.as_str();
            let previous: Option<Document> = docs
                .get(key)
                .map_err(storage)?
                .map(|v| serde_json::from_slice(v.value()))
                .transpose()
                .map_err(storage)?;
            let data = || -> Result<Value> {
                event
                    .data
                    .as_ref()
                    .map(|d| serde_json::from_str(d.get()))
                    .transpose()
                    .map_err(storage)
                    .map(|v| v.unwrap_or(Value::Object(serde_json::Map::new())))
            };
            let (data, deleted) = match event.op {
                Op::Put => (data()?, false),
                Op::Patch => {
                    let mut state = match previous {
                        Some(d) if !d.deleted => d.data,
                        _ => Value::Object(serde_json::Map::new()),
                    };
                    merge_patch(&mut state, &data()?);
                    (state, false)
                }
                Op::Delete => (Value::Null, true),
                // Other ops are refused for documents before they reach the log.
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
            docs.insert(key, bytes.as_slice()).map_err(storage)?;
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        let name = table_name(shard);
        tx.delete_table(table(&name)).map_err(storage)?;
        Ok(())
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        digest_table(tx, &table_name(shard))
    }
}

/// Reads `urn`'s state from the document view of `shard` (`None`: never written).
pub fn get(tx: &ReadTransaction, shard: ShardId, urn: &str) -> Result<Option<Document>> {
    get_json(tx, &table_name(shard), urn)
}

/// Every resource state in the document view of `shard`, in URN order.
pub fn all(tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(String, Document)>> {
    all_json(tx, &table_name(shard))
}

#[cfg(test)]
mod tests;
