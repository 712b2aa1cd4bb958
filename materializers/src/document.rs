//! The state views: the current state of every resource of one model in a shard. The document
//! view ([`DOCUMENTS`], `urn:themis:document:...`) and the relational view ([`ROWS`],
//! `urn:themis:relational:...`, one row per URN) are two instances. `put` replaces the state, `patch` merges into it (RFC 7396 JSON merge patch; a
//! patch of an absent or deleted resource applies to `{}`), `delete` removes it (a tombstone
//! keeps the revision and position of the delete, so a read can say when it went away).
//!
//! Tables per shard: `doc/{shard}` (`rel/{shard}`): URN → JSON of [`Document`];
//! `doc_changed/{shard}` (`rel_changed/{shard}`): namespace → LSN of the last entry that
//! changed it (what query caches key on).

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

/// A view of the current state of every resource of one model in a shard: the document view
/// and the relational view (rows) are two instances.
#[derive(Debug, Clone, Copy)]
pub struct StateView {
    kind: &'static str,
    model: Model,
    prefix: &'static str,
}

/// The document view (`document`).
pub const DOCUMENTS: StateView = StateView {
    kind: KIND,
    model: Model::Document,
    prefix: "doc",
};

/// The relational view (`relational`): one row per URN, stored as appended (see
/// `docs/design/namespaces.md`: the schema applies when a query reads the rows).
pub const ROWS: StateView = StateView {
    kind: "relational",
    model: Model::Relational,
    prefix: "rel",
};

/// One resource of a namespace, as [`StateView::namespace`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The URN's id.
    pub id: String,
    /// Its state.
    pub state: Document,
}

impl StateView {
    /// Its kind name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn table_name(&self, shard: ShardId) -> String {
        format!("{}/{}", self.prefix, shard.0)
    }

    /// Per shard: namespace → LSN of the last entry that changed one of its resources.
    fn changes_name(&self, shard: ShardId) -> String {
        format!("{}_changed/{}", self.prefix, shard.0)
    }

    /// The model whose resources it holds.
    pub fn model(&self) -> Model {
        self.model
    }

    /// `urn`'s state in `shard` inside a write transaction (what `apply` just wrote).
    pub(crate) fn get_in_write(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        urn: &str,
    ) -> Result<Option<Document>> {
        let t = tx
            .open_table(table(&self.table_name(shard)))
            .map_err(storage)?;
        let found = t.get(urn).map_err(storage)?;
        found
            .map(|v| serde_json::from_slice(v.value()))
            .transpose()
            .map_err(storage)
    }

    /// Every resource of `namespace` in `shard` (URN, state; tombstones included) inside a
    /// write transaction.
    pub(crate) fn namespace_in_write(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Vec<(String, Document)>> {
        let t = tx
            .open_table(table(&self.table_name(shard)))
            .map_err(storage)?;
        let prefix = format!("urn:themis:{}:{namespace}:", self.model);
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push((
                k.value().to_owned(),
                serde_json::from_slice(v.value()).map_err(storage)?,
            ));
        }
        Ok(out)
    }

    /// `urn`'s state in `shard` (`None`: never written).
    pub fn get(&self, tx: &ReadTransaction, shard: ShardId, urn: &str) -> Result<Option<Document>> {
        get_json(tx, &self.table_name(shard), urn)
    }

    /// Every resource state of `shard`, in URN order.
    pub fn all(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(String, Document)>> {
        all_json(tx, &self.table_name(shard))
    }

    /// Every resource of `namespace` in `shard`, tombstones included, in id order.
    pub fn namespace(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        namespace: &str,
    ) -> Result<Vec<Resource>> {
        let Some(t) = crate::read_table(tx, &self.table_name(shard))? else {
            return Ok(Vec::new());
        };
        let prefix = format!("urn:themis:{}:{namespace}:", self.model);
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let Some(id) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.push(Resource {
                id: id.to_owned(),
                state: serde_json::from_slice(v.value()).map_err(storage)?,
            });
        }
        Ok(out)
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
        let name = self.table_name(shard);
        let changes_name = self.changes_name(shard);
        let mut docs = tx.open_table(table(&name)).map_err(storage)?;
        let mut changes = tx.open_table(table(&changes_name)).map_err(storage)?;
        let lsn = serde_json::to_vec(&entry.lsn.0).map_err(storage)?;
        let mut touched = std::collections::BTreeSet::new();
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
                    let previous: Option<Document> = docs
                        .get(key)
                        .map_err(storage)?
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()
                        .map_err(storage)?;
                    let mut state = match previous {
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
            docs.insert(key, bytes.as_slice()).map_err(storage)?;
            touched.insert(event.urn.namespace());
        }
        for ns in touched {
            changes.insert(ns, lsn.as_slice()).map_err(storage)?;
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        tx.delete_table(table(&self.table_name(shard)))
            .map_err(storage)?;
        tx.delete_table(table(&self.changes_name(shard)))
            .map_err(storage)?;
        Ok(())
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        digest_table(tx, &self.table_name(shard))
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
