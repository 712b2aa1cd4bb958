//! Entries the views refuse. The server checks client JSON against the rules of
//! [`themis_log::json`] before anything reaches the log, and every view parses what passed; an
//! entry that breaks those rules anyway (committed by an older version, say) would stop a view
//! for good, since the log is never rewritten and a restart or rebuild replays the same entry.
//! Instead no view applies it: each view's worker records the entry here with the reason, in the
//! transaction that moves its watermark past it, and goes on.
//!
//! Invariant: whether an entry is rejected, and why, is a function of the entry alone, so every
//! replica and every rebuild rejects the same entries with the same reasons; an entry is applied
//! whole or not at all (its batch stays atomic in every view).

use redb::{ReadTransaction, WriteTransaction};
use themis_log::{CommittedEntry, ShardId};

use crate::{Result, read_table, storage, table};

/// Key `"{kind}/{shard}/{lsn:020}"`, value the JSON of a [`Rejection`].
const REJECTIONS: &str = "view_rejections";

/// An entry a view did not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// The entry's LSN.
    pub lsn: u64,
    /// Its commit timestamp (ms since the Unix epoch).
    pub ts_ms: u64,
    /// Why: the event, its URN, the field and the rule it breaks.
    pub reason: String,
}

/// Whether the views can apply `entry`: `Err` says why not.
pub fn admit(entry: &CommittedEntry) -> Result<(), String> {
    for e in &entry.events {
        if let Some(data) = &e.event.data {
            themis_log::json::check(data.get()).map_err(|err| {
                format!(
                    "event {} ({}): `data{}`: {}",
                    e.index, e.event.urn, err.path, err.message
                )
            })?;
        }
    }
    Ok(())
}

fn prefix(kind: &str, shard: ShardId) -> String {
    format!("{kind}/{}/", shard.0)
}

/// Records that view `kind` of `shard` rejected an entry.
pub(crate) fn record(
    tx: &WriteTransaction,
    kind: &str,
    shard: ShardId,
    rejection: &Rejection,
) -> Result<()> {
    let mut rejections = tx.open_table(table(REJECTIONS)).map_err(storage)?;
    let key = format!("{}{:020}", prefix(kind, shard), rejection.lsn);
    let value = serde_json::to_vec(rejection).map_err(storage)?;
    rejections
        .insert(key.as_str(), value.as_slice())
        .map_err(storage)?;
    Ok(())
}

/// Forgets the rejections of view `kind` of `shard` (the view is cleared or rebuilt).
pub(crate) fn clear(tx: &WriteTransaction, kind: &str, shard: ShardId) -> Result<()> {
    let mut rejections = tx.open_table(table(REJECTIONS)).map_err(storage)?;
    let (from, to) = bounds(kind, shard);
    rejections
        .retain_in(from.as_str()..to.as_str(), |_, _| false)
        .map_err(storage)?;
    Ok(())
}

/// The range of keys of view `kind` of `shard` (`/` is followed by `0` in ASCII).
fn bounds(kind: &str, shard: ShardId) -> (String, String) {
    let from = prefix(kind, shard);
    let to = format!("{kind}/{}0", shard.0);
    (from, to)
}

/// How many entries view `kind` of `shard` rejected, and the latest `n` of them (newest first).
pub(crate) fn read(
    tx: &ReadTransaction,
    kind: &str,
    shard: ShardId,
    n: usize,
) -> Result<(u64, Vec<Rejection>)> {
    let Some(table) = read_table(tx, REJECTIONS)? else {
        return Ok((0, Vec::new()));
    };
    let (from, to) = bounds(kind, shard);
    let mut count = 0;
    let mut latest = Vec::new();
    for item in table
        .range(from.as_str()..to.as_str())
        .map_err(storage)?
        .rev()
    {
        let (_, v) = item.map_err(storage)?;
        count += 1;
        if latest.len() < n {
            latest.push(serde_json::from_slice(v.value()).map_err(storage)?);
        }
    }
    Ok((count, latest))
}

#[cfg(test)]
mod tests;
