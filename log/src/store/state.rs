//! The shard state machine's deterministic fold: stream revisions, the stream index, the
//! idempotency table and each entry's outcome, kept in redb tables beside the log.
//!
//! Invariant: [`apply`] reads nothing but its transaction and the entry (time comes from the
//! entry's commit timestamp), so every replica that applies the same log reaches the same tables.

use std::collections::BTreeMap;

use openraft::EntryPayload;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::{EventPosition, Outcome, ProposedEvent};
use crate::event::EventId;
use crate::ids::{Lsn, ShardId};
use crate::raft::Entry;
use crate::urn::Urn;

/// The names of one shard's tables in the node's database. Every shard of a node keeps its log,
/// log metadata and state machine in its own tables of one redb database, so one commit (and one
/// fsync) can carry the work of every shard.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    log: String,
    log_meta: String,
    sm_meta: String,
    stream_events: String,
    dedup: String,
    dedup_expiry: String,
    outcomes: String,
}

impl Tables {
    /// The tables of shard `shard`, named `s<shard>.<table>`.
    pub(crate) fn new(shard: ShardId) -> Self {
        let name = |table: &str| format!("s{:04}.{table}", shard.0);
        Self {
            log: name("log"),
            log_meta: name("log_meta"),
            sm_meta: name("sm_meta"),
            stream_events: name("stream_events"),
            dedup: name("dedup"),
            dedup_expiry: name("dedup_expiry"),
            outcomes: name("outcomes"),
        }
    }

    /// Raft log: index → framed record.
    pub(crate) fn log(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.log)
    }

    /// Log store metadata: `vote`, `purged` (JSON), `anchor` (the chain before the first
    /// record, when a snapshot install left a log starting after index 0).
    pub(crate) fn log_meta(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.log_meta)
    }

    /// State machine metadata: `applied`, `membership` (JSON), `ts`.
    pub(crate) fn sm_meta(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.sm_meta)
    }

    /// (stream, revision) → (lsn, index in entry). A stream's revision is its last key here.
    pub(crate) fn stream_events(&self) -> TableDefinition<'_, (&'static str, u64), (u64, u32)> {
        TableDefinition::new(&self.stream_events)
    }

    /// Client-chosen event id → [`DedupRecord`].
    pub(crate) fn dedup(&self) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
        TableDefinition::new(&self.dedup)
    }

    /// (commit timestamp, event id) → (): the idempotency table's expiry order.
    pub(crate) fn dedup_expiry(&self) -> TableDefinition<'_, (u64, &'static [u8]), ()> {
        TableDefinition::new(&self.dedup_expiry)
    }

    /// LSN → JSON list of the [`Outcome`]s of an entry that carried events.
    pub(crate) fn outcomes(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.outcomes)
    }
}

/// One shard's state tables, opened once for a whole apply group: opening a redb table costs a
/// lookup in its table tree, which per entry and batch added up to a large share of applying.
pub(crate) struct Open<'t> {
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    stream_events: redb::Table<'t, (&'static str, u64), (u64, u32)>,
    dedup: redb::Table<'t, &'static [u8], &'static [u8]>,
    expiry: redb::Table<'t, (u64, &'static [u8]), ()>,
    outcomes: redb::Table<'t, u64, &'static [u8]>,
}

impl<'t> Open<'t> {
    /// Opens shard `t`'s state tables in `tx`.
    pub(crate) fn new(tx: &'t WriteTransaction, t: &Tables) -> Result<Self, ApplyError> {
        Ok(Self {
            meta: tx.open_table(t.sm_meta())?,
            stream_events: tx.open_table(t.stream_events())?,
            dedup: tx.open_table(t.dedup())?,
            expiry: tx.open_table(t.dedup_expiry())?,
            outcomes: tx.open_table(t.outcomes())?,
        })
    }
}

/// What the idempotency table remembers of an appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DedupRecord {
    pub(crate) position: EventPosition,
    pub(crate) ts_ms: u64,
    pub(crate) urn: String,
}

impl DedupRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 + self.urn.len());
        w.varint(self.position.lsn.0);
        w.varint(u64::from(self.position.index));
        w.varint(self.position.revision);
        w.varint(self.ts_ms);
        w.str(&self.urn);
        w.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let lsn = Lsn(r.varint("dedup lsn")?);
        let index = u32::try_from(r.varint("dedup index")?)
            .map_err(|_| r.error("dedup index", "exceeds u32"))?;
        let revision = r.varint("dedup revision")?;
        let ts_ms = r.varint("dedup timestamp")?;
        let urn = r.str("dedup urn")?.to_owned();
        r.finish("dedup record")?;
        Ok(Self {
            position: EventPosition {
                lsn,
                index,
                revision,
            },
            ts_ms,
            urn,
        })
    }
}

/// Why applying failed: storage trouble, never a property of the entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Storage(#[from] redb::Error),
    #[error("corrupted state machine table: {0}")]
    Corrupted(#[from] DecodeError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ApplyError {
            fn from(e: $t) -> Self {
                ApplyError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::TransactionError
);

/// Applies one committed entry inside `tx` and returns one outcome per client batch (none for
/// Raft's own entries).
pub(crate) fn apply(
    open: &mut Open<'_>,
    entry: &Entry,
    dedup_window_ms: u64,
) -> Result<Vec<Outcome>, ApplyError> {
    let outcomes = match &entry.payload {
        EntryPayload::Blank => Vec::new(),
        EntryPayload::Membership(membership) => {
            let stored = openraft::StoredMembership::new(Some(entry.log_id), membership.clone());
            open.meta.insert(
                "membership",
                &serde_json::to_vec(&stored).expect("json")[..],
            )?;
            Vec::new()
        }
        EntryPayload::Normal(proposal) => {
            let lsn = Lsn(entry.log_id.index);
            let mut outcomes = Vec::with_capacity(proposal.batches.len());
            let mut first_index = 0u32;
            for batch in &proposal.batches {
                let outcome = decide(open, lsn, batch)?;
                if let Outcome::Appended { revisions } = &outcome {
                    record(open, lsn, first_index, proposal.ts_ms, batch, revisions)?;
                }
                outcomes.push(outcome);
                first_index += batch.len() as u32;
            }
            expire(open, proposal.ts_ms.saturating_sub(dedup_window_ms))?;
            let meta = &mut open.meta;
            let last_ts = meta.get("ts")?.map(|v| v.value().to_vec());
            let last_ts =
                last_ts.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or_default()));
            meta.insert("ts", &proposal.ts_ms.max(last_ts).to_le_bytes()[..])?;
            open.outcomes.insert(
                entry.log_id.index,
                &serde_json::to_vec(&outcomes).expect("json")[..],
            )?;
            outcomes
        }
    };
    open.meta.insert(
        "applied",
        &serde_json::to_vec(&entry.log_id).expect("json")[..],
    )?;
    Ok(outcomes)
}

/// Decides the outcome of one batch against the tables without changing them.
fn decide(open: &Open<'_>, lsn: Lsn, batch: &[ProposedEvent]) -> Result<Outcome, ApplyError> {
    let dedup = &open.dedup;
    let mut seen = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        // Server-drawn ids were never in the table: no client can retry with them.
        let record = if p.client_id {
            dedup_lookup(dedup, &p.event.id)?
        } else {
            None
        };
        seen.push((i, record));
    }
    let duplicates = seen.iter().filter(|(_, r)| r.is_some()).count();
    let mut ids = BTreeMap::new();
    for (i, p) in batch.iter().enumerate() {
        if ids.insert(p.event.id, i).is_some() {
            return Ok(Outcome::IdempotencyConflict {
                index: i as u32,
                id: p.event.id,
                reason: "the id appears twice in the batch".into(),
            });
        }
    }
    if duplicates > 0 {
        let mut original = Vec::with_capacity(seen.len());
        for (i, record) in seen {
            let event = &batch[i].event;
            let reason = match &record {
                None if !batch[i].client_id => Some(format!(
                    "{duplicates} of the batch's events were appended before, but this one has no \
                     client id; a retry must resend the original batch with every event's id"
                )),
                None => Some(format!(
                    "{duplicates} of the batch's {} event ids were appended before, this one was not; \
                     a retry must resend exactly the original batch",
                    batch.len()
                )),
                Some(r) if r.urn != event.urn.as_str() => Some(format!(
                    "the id was appended before to another stream, {}",
                    r.urn
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                return Ok(Outcome::IdempotencyConflict {
                    index: i as u32,
                    id: event.id,
                    reason,
                });
            }
            original.push(record.expect("checked above").position);
        }
        debug_assert!(original.iter().all(|p| p.lsn <= lsn));
        return Ok(Outcome::Duplicate { original });
    }

    let stream_events = &open.stream_events;
    let mut overlay: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut revisions = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        let urn = p.event.urn.as_str();
        let committed = stream_revision(stream_events, &p.event.urn)?;
        let current = *overlay.entry(urn).or_insert(committed);
        let skip =
            themis_storage::canary::active(themis_storage::canary::Canary::SkipExpectedRevision);
        if !skip && !p.expected.admits(current) {
            return Ok(Outcome::WrongExpectedRevision {
                index: i as u32,
                urn: p.event.urn.clone(),
                expected: p.expected,
                actual: committed,
            });
        }
        let next = current.map_or(0, |r| r + 1);
        overlay.insert(urn, Some(next));
        revisions.push(next);
    }
    Ok(Outcome::Appended { revisions })
}

/// Records an accepted batch, whose first event has index `first_index` in the entry, in the
/// stream and idempotency tables.
fn record(
    open: &mut Open<'_>,
    lsn: Lsn,
    first_index: u32,
    ts_ms: u64,
    batch: &[ProposedEvent],
    revisions: &[u64],
) -> Result<(), ApplyError> {
    let Open {
        stream_events,
        dedup,
        expiry,
        ..
    } = open;
    for (i, (p, &revision)) in batch.iter().zip(revisions).enumerate() {
        let urn = p.event.urn.as_str();
        let index = first_index + i as u32;
        stream_events.insert((urn, revision), (lsn.0, index))?;
        let position = EventPosition {
            lsn,
            index,
            revision,
        };
        let record = DedupRecord {
            position,
            ts_ms,
            urn: urn.to_owned(),
        };
        if p.client_id {
            let id = p.event.id.as_bytes().as_slice();
            dedup.insert(id, &record.encode()[..])?;
            expiry.insert((ts_ms, id), ())?;
        }
    }
    Ok(())
}

/// Forgets idempotency records committed before `horizon_ms`.
fn expire(open: &mut Open<'_>, horizon_ms: u64) -> Result<(), ApplyError> {
    let Open { expiry, dedup, .. } = open;
    let old: Vec<(u64, Vec<u8>)> = expiry
        .range::<(u64, &[u8])>(..(horizon_ms, &[][..]))?
        .map(|item| item.map(|(k, _)| (k.value().0, k.value().1.to_vec())))
        .collect::<Result<_, _>>()?;
    for (ts, id) in old {
        expiry.remove((ts, id.as_slice()))?;
        // A record re-appended later under the same id (after expiry) has a newer timestamp.
        let newer = dedup
            .get(id.as_slice())?
            .map(|v| DedupRecord::decode(v.value()))
            .transpose()?
            .is_some_and(|r| r.ts_ms >= horizon_ms);
        if !newer {
            dedup.remove(id.as_slice())?;
        }
    }
    Ok(())
}

/// The idempotency record of `id`, if it is within the dedup window.
pub(crate) fn dedup_lookup(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    id: &EventId,
) -> Result<Option<DedupRecord>, ApplyError> {
    Ok(table
        .get(id.as_bytes().as_slice())?
        .map(|v| DedupRecord::decode(v.value()))
        .transpose()?)
}

/// The current revision of `urn`: the last revision in its part of the stream index.
pub(crate) fn stream_revision(
    table: &impl ReadableTable<(&'static str, u64), (u64, u32)>,
    urn: &Urn,
) -> Result<Option<u64>, ApplyError> {
    let last = table
        .range((urn.as_str(), 0)..=(urn.as_str(), u64::MAX))?
        .next_back()
        .transpose()?;
    Ok(last.map(|(k, _)| k.value().1))
}
