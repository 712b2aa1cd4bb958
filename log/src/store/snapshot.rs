//! Raft snapshots of a shard: every state-machine table at the applied LSN and the log records
//! up to it (the events themselves: stream reads decode them from the log, and purging the Raft
//! log only marks it purged, see `Purge` in the store), in one versioned binary image. Layout in
//! `docs/design/log-format.md`.
//!
//! Invariant: installing the image built at LSN n leaves exactly the tables that applying the log
//! up to n produced and a log holding that log's records up to n, so later entries extend its
//! chain; records whose hash chain does not verify are refused. The log is written first: a
//! crash between the two writes leaves a state machine behind its log, which openraft replays,
//! never one ahead of it.

use openraft::{BasicNode, LogId, StoredMembership};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::record::{self, Chain};
use super::state::DedupRecord;
use super::state::Tables;
use crate::codec::{Reader, Writer};

const SNAPSHOT_VERSION: u8 = 2;
const COUNT_MAX: usize = 1 << 40;

type Membership = StoredMembership<u64, BasicNode>;

/// Creates the state-machine tables so readers never meet a missing table.
pub(crate) fn create_tables(tx: &WriteTransaction, t: &Tables) -> Result<(), redb::TableError> {
    tx.open_table(t.stream_events())?;
    tx.open_table(t.dedup())?;
    tx.open_table(t.dedup_expiry())?;
    tx.open_table(t.outcomes())?;
    Ok(())
}

/// A snapshot image with the log id and membership it reflects.
pub(crate) type Image = (Vec<u8>, Option<LogId<u64>>, Membership);

/// Builds the image of the state machine as of its applied LSN.
pub(crate) fn build(state_db: &Database, log_db: &Database, t: &Tables) -> Result<Image, String> {
    let e = |e: redb::Error| e.to_string();
    let tx = state_db.begin_read().map_err(|x| e(x.into()))?;
    let meta = tx.open_table(t.sm_meta()).map_err(|x| e(x.into()))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
        Ok(meta
            .get(key)
            .map_err(|x| e(x.into()))?
            .map(|v| v.value().to_vec()))
    };
    let applied_json = get("applied")?;
    let membership_json = get("membership")?;
    let ts = get("ts")?.unwrap_or_else(|| 0u64.to_le_bytes().to_vec());
    let applied: Option<LogId<u64>> = applied_json
        .as_deref()
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|x| x.to_string())?;
    let membership: Membership = membership_json
        .as_deref()
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|x| x.to_string())?
        .unwrap_or_default();
    let log_tx = log_db.begin_read().map_err(|x| e(x.into()))?;
    let log = log_tx.open_table(t.log()).map_err(|x| e(x.into()))?;
    let chain: Chain = match applied {
        Some(id) => {
            let frame = log.get(id.index).map_err(|x| e(x.into()))?;
            frame
                .map(|v| record::chain_of_frame(v.value()))
                .unwrap_or(record::GENESIS)
        }
        None => record::GENESIS,
    };

    let mut w = Writer::with_capacity(4096);
    w.u8(SNAPSHOT_VERSION);
    w.bytes(applied_json.as_deref().unwrap_or_default());
    w.bytes(membership_json.as_deref().unwrap_or_default());
    w.raw(&chain);
    w.bytes(&ts);

    let events = tx.open_table(t.stream_events()).map_err(|x| e(x.into()))?;
    w.varint(events.len().map_err(|x| e(x.into()))?);
    for item in events.iter().map_err(|x| e(x.into()))? {
        let (k, v) = item.map_err(|x| e(x.into()))?;
        let ((urn, revision), (lsn, index)) = (k.value(), v.value());
        w.str(urn);
        w.varint(revision);
        w.varint(lsn);
        w.varint(u64::from(index));
    }
    let dedup = tx.open_table(t.dedup()).map_err(|x| e(x.into()))?;
    w.varint(dedup.len().map_err(|x| e(x.into()))?);
    for item in dedup.iter().map_err(|x| e(x.into()))? {
        let (k, v) = item.map_err(|x| e(x.into()))?;
        w.bytes(k.value());
        w.bytes(v.value());
    }
    let outcomes = tx.open_table(t.outcomes()).map_err(|x| e(x.into()))?;
    w.varint(outcomes.len().map_err(|x| e(x.into()))?);
    for item in outcomes.iter().map_err(|x| e(x.into()))? {
        let (k, v) = item.map_err(|x| e(x.into()))?;
        w.varint(k.value());
        w.bytes(v.value());
    }
    // The log records up to the applied LSN.
    let upto = applied.map_or(0, |id| id.index);
    let records: Vec<(u64, Vec<u8>)> = log
        .range(..=upto)
        .map_err(|x| e(x.into()))?
        .map(|item| item.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()
        .map_err(|x| e(x.into()))?;
    w.varint(records.len() as u64);
    for (index, frame) in records {
        w.varint(index);
        w.bytes(&frame);
    }
    Ok((w.into_bytes(), applied, membership))
}

/// Log records carried by a snapshot: (index, framed record), ascending.
pub(crate) type Records = Vec<(u64, Vec<u8>)>;

/// A decoded, verified snapshot image, ready to be written to the log ([`anchor_log`]) and the
/// state machine ([`install`]).
pub(crate) struct Decoded {
    /// The applied log id the image reflects (None for an empty state machine).
    pub applied: Option<LogId<u64>>,
    applied_json: Vec<u8>,
    membership_json: Vec<u8>,
    /// The log's chain at `applied`.
    chain: Chain,
    ts: Vec<u8>,
    /// (urn, revision) -> (lsn, index in entry).
    events: Vec<(String, u64, u64, u32)>,
    /// (event id, dedup record).
    dedup: Vec<(Vec<u8>, Vec<u8>)>,
    /// (lsn, outcome json).
    outcomes: Vec<(u64, Vec<u8>)>,
    records: Records,
}

/// Decodes an image and verifies its records: each decodes, holds its index, and extends its
/// predecessor's chain, and the last one ends at the image's applied LSN and chain.
pub(crate) fn decode(data: &[u8]) -> Result<Decoded, String> {
    let d = |x: crate::codec::DecodeError| format!("snapshot image: {x}");
    let mut r = Reader::new(data);
    let version = r.u8("snapshot version").map_err(d)?;
    if version != SNAPSHOT_VERSION {
        return Err(format!("snapshot image: unknown version {version}"));
    }
    let applied_json = r.bytes("snapshot applied").map_err(d)?.to_vec();
    let membership_json = r.bytes("snapshot membership").map_err(d)?.to_vec();
    let chain: Chain = r.raw("snapshot chain").map_err(d)?;
    let ts = r.bytes("snapshot ts").map_err(d)?.to_vec();
    let applied: Option<LogId<u64>> = if applied_json.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&applied_json).map_err(|x| x.to_string())?)
    };
    let mut events = Vec::new();
    for _ in 0..r.len("snapshot event count", COUNT_MAX).map_err(d)? {
        let urn = r.str("snapshot event stream").map_err(d)?.to_owned();
        let revision = r.varint("snapshot event revision").map_err(d)?;
        let lsn = r.varint("snapshot event lsn").map_err(d)?;
        let index = r.varint("snapshot event index").map_err(d)? as u32;
        events.push((urn, revision, lsn, index));
    }
    let mut dedup = Vec::new();
    for _ in 0..r.len("snapshot dedup count", COUNT_MAX).map_err(d)? {
        let id = r.bytes("snapshot dedup id").map_err(d)?.to_vec();
        let value = r.bytes("snapshot dedup record").map_err(d)?.to_vec();
        DedupRecord::decode(&value).map_err(d)?;
        dedup.push((id, value));
    }
    let mut outcomes = Vec::new();
    for _ in 0..r.len("snapshot outcome count", COUNT_MAX).map_err(d)? {
        let lsn = r.varint("snapshot outcome lsn").map_err(d)?;
        outcomes.push((lsn, r.bytes("snapshot outcome").map_err(d)?.to_vec()));
    }
    let mut records = Vec::new();
    let mut last: Option<(u64, Chain)> = None;
    for _ in 0..r.len("snapshot record count", COUNT_MAX).map_err(d)? {
        let index = r.varint("snapshot record index").map_err(d)?;
        let frame = r.bytes("snapshot record").map_err(d)?.to_vec();
        let at = format!("snapshot record {index}");
        let decoded = record::decode(&frame, &at).map_err(|x| x.to_string())?;
        if decoded.entry.log_id.index != index {
            return Err(format!(
                "{at}: the record holds index {}",
                decoded.entry.log_id.index
            ));
        }
        if let Some((i, prev)) = last
            && (i + 1 != index || decoded.prev != prev)
        {
            return Err(format!("{at}: the hash chain is broken"));
        }
        last = Some((index, decoded.chain));
        records.push((index, frame));
    }
    r.finish("snapshot image").map_err(d)?;
    if let (Some(id), Some((index, last_chain))) = (applied, last)
        && (index != id.index || last_chain != chain)
    {
        return Err(format!(
            "snapshot image: its records end at {index}, not at its applied LSN {}, or at another chain",
            id.index
        ));
    }
    Ok(Decoded {
        applied,
        applied_json,
        membership_json,
        chain,
        ts,
        events,
        dedup,
        outcomes,
        records,
    })
}

/// Replaces the state machine with a decoded image.
pub(crate) fn install(tx: &WriteTransaction, t: &Tables, image: &Decoded) -> Result<(), String> {
    let s = |x: redb::StorageError| x.to_string();
    let te = |x: redb::TableError| x.to_string();
    tx.delete_table(t.stream_events()).map_err(te)?;
    tx.delete_table(t.dedup()).map_err(te)?;
    tx.delete_table(t.dedup_expiry()).map_err(te)?;
    tx.delete_table(t.outcomes()).map_err(te)?;
    let mut meta = tx.open_table(t.sm_meta()).map_err(te)?;
    meta.retain(|_, _| false).map_err(s)?;
    if !image.applied_json.is_empty() {
        meta.insert("applied", image.applied_json.as_slice())
            .map_err(s)?;
    }
    if !image.membership_json.is_empty() {
        meta.insert("membership", image.membership_json.as_slice())
            .map_err(s)?;
    }
    meta.insert("ts", image.ts.as_slice()).map_err(s)?;

    let mut events = tx.open_table(t.stream_events()).map_err(te)?;
    for (urn, revision, lsn, index) in &image.events {
        events
            .insert((urn.as_str(), *revision), (*lsn, *index))
            .map_err(s)?;
    }
    let mut dedup = tx.open_table(t.dedup()).map_err(te)?;
    let mut expiry = tx.open_table(t.dedup_expiry()).map_err(te)?;
    for (id, value) in &image.dedup {
        let record = DedupRecord::decode(value).map_err(|x| format!("snapshot image: {x}"))?;
        dedup.insert(id.as_slice(), value.as_slice()).map_err(s)?;
        expiry
            .insert((record.ts_ms, id.as_slice()), ())
            .map_err(s)?;
    }
    let mut outcomes = tx.open_table(t.outcomes()).map_err(te)?;
    for (lsn, outcome) in &image.outcomes {
        outcomes.insert(*lsn, outcome.as_slice()).map_err(s)?;
    }
    Ok(())
}

/// Makes a shard's log hold a decoded image's records: later entries extend the image's chain
/// at its applied LSN. A local log that agrees with the image there is kept as it is; one that
/// does not (shorter, or diverged in entries never committed) is replaced by the image's
/// records, and when they start after index 0 the chain before the first one becomes the
/// log's anchor. Written, durably, before the state machine takes the image, so a state
/// machine never runs ahead of its log's records.
pub(crate) fn anchor_log(tx: &WriteTransaction, t: &Tables, image: &Decoded) -> Result<(), String> {
    let s = |x: redb::StorageError| x.to_string();
    let te = |x: redb::TableError| x.to_string();
    let Some(applied) = image.applied else {
        return Ok(());
    };
    let mut log_meta = tx.open_table(t.log_meta()).map_err(te)?;
    let mut log = tx.open_table(t.log()).map_err(te)?;
    let ours = log
        .get(applied.index)
        .map_err(s)?
        .map(|v| record::chain_of_frame(v.value()));
    if ours == Some(image.chain) {
        return Ok(());
    }
    log.retain(|_, _| false).map_err(s)?;
    for (index, frame) in &image.records {
        log.insert(*index, frame.as_slice()).map_err(s)?;
    }
    log_meta.remove("anchor").map_err(s)?;
    let anchor = match image.records.first() {
        // No records (an image built over a state machine without a log, as openraft's
        // storage suite makes): the log continues from the image's chain.
        None => Some((applied.index, image.chain)),
        Some((first, frame)) => match first.checked_sub(1) {
            Some(before) => {
                let prev = record::decode(frame, &"snapshot record")
                    .map_err(|x| x.to_string())?
                    .prev;
                Some((before, prev))
            }
            None => None,
        },
    };
    if let Some(anchor) = anchor {
        let anchor = serde_json::to_vec(&anchor).expect("json");
        log_meta.insert("anchor", anchor.as_slice()).map_err(s)?;
    }
    Ok(())
}
