//! The safety checker: compares the clients' history with the shards' committed logs once every
//! replica has converged.
//!
//! Checks (each failure names the operation or the log position):
//! - replicas agree: every replica of a shard holds the same entries with the same hash chain,
//!   so there is one value per (shard, LSN);
//! - no acknowledged append is lost: it sits at the acknowledged (shard, LSN, index) with the
//!   acknowledged revision;
//! - no duplicates: an event id is accepted at most once;
//! - a stream revision is never assigned twice and has no gaps, in LSN order;
//! - an append refused for its expected revision is not in the log, and an accepted append's
//!   expected revision held (Exact(n) gives revision n + 1, NoStream gives 0);
//! - real-time order: an append acknowledged before another was invoked comes first in its
//!   stream and shard;
//! - linearizable reads: a read returns exactly the stream's prefix up to the revision it
//!   reports, that prefix includes every append acknowledged before the read was invoked, and
//!   holds nothing invoked after the read completed;
//! - fulltext ([`check_texts`]): every replica's index of a namespace holds exactly the
//!   documents a fold of the log says exist;
//! - vector views ([`check_vectors`]): every replica's live vector resources, in its state and
//!   in what its indexes let a search find, equal a fold of the log;
//! - graph ([`check_graph`]): every replica's vertices and edges equal a fold of the log
//!   (deletes remove the vertex's edges stored in its shard);
//! - time series ([`check_series`]): every replica's stored points of every series equal a
//!   fold of the log, bit for bit and in timestamp order (out-of-order and repeated timestamps
//!   included);
//! - views ([`check_views`]): every replica's document and relational views, at a watermark equal to its applied
//!   log, equals a reference fold of the log written here, independently of the view code
//!   (only RFC 7396 merging is shared, and it has its own tests).

use std::collections::{BTreeMap, BTreeSet};

use themis_log::event::ExpectedRevision;
use themis_log::{LogEntryView, Outcome};

use crate::workload::{AppendOp, AppendOutcome, History};

/// An accepted event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Shard.
    pub shard: u32,
    /// Entry.
    pub lsn: u64,
    /// Index in the entry.
    pub index: u32,
    /// Stream.
    pub urn: String,
    /// Revision in the stream.
    pub revision: u64,
}

/// What the checker looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Events accepted in the logs.
    pub accepted: usize,
    /// Appends acknowledged.
    pub acknowledged: usize,
    /// Appends refused by their expected revision.
    pub conflicts: usize,
    /// Appends whose outcome stayed unknown.
    pub unknown: usize,
    /// Unknown appends that turned out to be in the log.
    pub unknown_applied: usize,
    /// Reads checked.
    pub reads: usize,
    /// Document resources whose view state was checked on every replica.
    pub resources: usize,
    /// Events the change-stream subscriber received, checked against the logs.
    pub subscribed: usize,
    /// Live vector resources whose state and index membership were checked on every replica.
    pub vectors: usize,
    /// Documents whose fulltext index membership was checked on every replica.
    pub texts: usize,
    /// Time-series points checked on every replica.
    pub points: usize,
    /// Graph vertices and edges checked on every replica.
    pub graph: usize,
}

/// Checks `history` against every replica's log of every shard: `logs[shard]` holds, per
/// replica, its node id and its entries from LSN 1 (all replicas converged).
pub fn check(
    history: &History,
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
) -> Result<Checked, Vec<String>> {
    let mut errors = Vec::new();
    let mut accepted: BTreeMap<String, Accepted> = BTreeMap::new();
    for (&shard, replicas) in logs {
        let Some((first_node, first)) = replicas.first() else {
            continue;
        };
        for (node, entries) in &replicas[1..] {
            if entries.len() != first.len() {
                errors.push(format!(
                    "shard {shard}: node {node} holds {} entries, node {first_node} {}",
                    entries.len(),
                    first.len()
                ));
            }
            for (a, b) in first.iter().zip(entries) {
                if a.lsn != b.lsn || a.chain != b.chain {
                    errors.push(format!(
                        "shard {shard}: replicas disagree at LSN {} (node {first_node} chain {}, \
                         node {node} LSN {} chain {})",
                        a.lsn.0, a.chain, b.lsn.0, b.chain
                    ));
                    break;
                }
            }
        }
        for entry in first {
            let Some(outcomes) = &entry.outcomes else {
                if entry.kind == "events" {
                    errors.push(format!(
                        "shard {shard} LSN {}: an applied events entry without recorded outcomes",
                        entry.lsn.0
                    ));
                }
                continue;
            };
            if outcomes.len() != entry.events.len() {
                errors.push(format!(
                    "shard {shard} LSN {}: {} outcomes for {} events (the workload sends one \
                     event per append)",
                    entry.lsn.0,
                    outcomes.len(),
                    entry.events.len()
                ));
                continue;
            }
            for (index, (event, outcome)) in entry.events.iter().zip(outcomes).enumerate() {
                let Outcome::Appended { revisions } = outcome else {
                    continue;
                };
                let id = event.id.to_string();
                let place = Accepted {
                    shard,
                    lsn: entry.lsn.0,
                    index: index as u32,
                    urn: event.urn.as_str().to_owned(),
                    revision: revisions[0],
                };
                if let Some(before) = accepted.insert(id.clone(), place.clone()) {
                    errors.push(format!(
                        "event {id} accepted twice: {before:?} and {place:?}"
                    ));
                }
            }
        }
    }

    // Stream revisions: 0, 1, 2, ... in log order, each once.
    // Per stream: (shard, LSN, index, revision, id) of each accepted event.
    type Place<'a> = (u32, u64, u32, u64, &'a str);
    let mut streams: BTreeMap<&str, Vec<Place<'_>>> = BTreeMap::new();
    for (id, a) in &accepted {
        streams
            .entry(a.urn.as_str())
            .or_default()
            .push((a.shard, a.lsn, a.index, a.revision, id));
    }
    let mut prefixes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (urn, events) in &mut streams {
        events.sort();
        for (expected, (shard, lsn, _, revision, id)) in events.iter().enumerate() {
            if *revision != expected as u64 {
                errors.push(format!(
                    "{urn}: event {id} at shard {shard} LSN {lsn} has revision {revision}, its \
                     place in the stream says {expected}"
                ));
            }
        }
        prefixes.insert(urn, events.iter().map(|e| e.4).collect());
    }

    let mut checked = Checked {
        accepted: accepted.len(),
        ..Checked::default()
    };
    let mut acked: Vec<(&AppendOp, u64, u64)> = Vec::new();
    let mut conflicts: Vec<(&AppendOp, Option<u64>)> = Vec::new();
    for op in &history.appends {
        let found = accepted.get(&op.id);
        match (&op.outcome, found) {
            (
                AppendOutcome::Ok {
                    shard,
                    lsn,
                    index,
                    revision,
                },
                Some(a),
            ) => {
                checked.acknowledged += 1;
                if (a.shard, a.lsn, a.index, a.revision) != (*shard, *lsn, *index, *revision)
                    || a.urn != op.urn
                {
                    errors.push(format!(
                        "append {} to {} was acknowledged at shard {shard} LSN {lsn} index \
                         {index} revision {revision}, but the log has it at {a:?}",
                        op.id, op.urn
                    ));
                }
                acked.push((op, a.lsn, a.revision));
            }
            (AppendOutcome::Ok { shard, lsn, .. }, None) => {
                checked.acknowledged += 1;
                errors.push(format!(
                    "acknowledged append lost: {} to {} (acknowledged at shard {shard} LSN {lsn}, \
                     invoked at {:?}, answered at {:?})",
                    op.id, op.urn, op.invoked, op.completed
                ));
            }
            (AppendOutcome::Conflict { actual }, found) => {
                checked.conflicts += 1;
                if let Some(a) = found {
                    errors.push(format!(
                        "append {} to {} was refused for its expected revision {}, but the log \
                         holds it at {a:?}",
                        op.id, op.urn, op.expected
                    ));
                }
                // The reported revision must be one the stream had, and not one the
                // expectation admits.
                let length = prefixes.get(op.urn.as_str()).map_or(0, Vec::len) as u64;
                if op.expected.admits(*actual) || actual.is_some_and(|r| r >= length) {
                    errors.push(format!(
                        "append {} to {} was refused for its expected revision {} with the \
                         stream at {actual:?}, which is not a refusal the log explains (the \
                         stream has {length} events)",
                        op.id, op.urn, op.expected
                    ));
                }
                conflicts.push((op, *actual));
            }
            (AppendOutcome::Unknown(_), found) => {
                checked.unknown += 1;
                checked.unknown_applied += usize::from(found.is_some());
            }
        }
        if let Some(a) = found {
            let held = match op.expected {
                ExpectedRevision::Exact(n) => a.revision == n + 1,
                ExpectedRevision::NoStream => a.revision == 0,
                ExpectedRevision::Exists => a.revision > 0,
                ExpectedRevision::Any => true,
            };
            if !held {
                errors.push(format!(
                    "append {} to {} expected revision {} but was accepted as revision {}",
                    op.id, op.urn, op.expected, a.revision
                ));
            }
        }
    }

    // Real-time order of acknowledged appends, per stream and per shard.
    for (a, a_lsn, a_rev) in &acked {
        for (b, b_lsn, b_rev) in &acked {
            if a.completed >= b.invoked {
                continue;
            }
            let (sa, sb) = (shard_of(a), shard_of(b));
            if a.urn == b.urn && a_rev >= b_rev {
                errors.push(format!(
                    "real-time order broken in {}: {} (answered {:?}) has revision {a_rev}, {} \
                     (invoked later, {:?}) has {b_rev}",
                    a.urn, a.id, a.completed, b.id, b.invoked
                ));
            }
            if sa == sb && a_lsn >= b_lsn {
                errors.push(format!(
                    "real-time order broken in shard {sa}: {} (answered {:?}) is at LSN {a_lsn}, \
                     {} (invoked later, {:?}) at {b_lsn}",
                    a.id, a.completed, b.id, b.invoked
                ));
            }
        }
    }

    // A refusal reports the stream as it was at some instant of the call: at least every
    // append acknowledged before the call began.
    for (op, actual) in &conflicts {
        for (a, _, rev) in &acked {
            if a.urn == op.urn && a.completed < op.invoked && *actual < Some(*rev) {
                errors.push(format!(
                    "append {} to {} invoked at {:?} was refused with the stream at {actual:?}, \
                     but {} had been acknowledged at {:?} with revision {rev}",
                    op.id, op.urn, op.invoked, a.id, a.completed
                ));
            }
        }
    }

    // Reads never go back in time: a read that begins after another ended sees at least what
    // that one saw.
    for a in &history.reads {
        for b in &history.reads {
            if a.urn == b.urn && a.completed < b.invoked && b.revision < a.revision {
                errors.push(format!(
                    "read of {} at {:?} saw revision {:?} after a read that ended at {:?} saw {:?}",
                    a.urn, b.invoked, b.revision, a.completed, a.revision
                ));
            }
        }
    }

    // Linearizable reads.
    let invoked: BTreeMap<&str, std::time::Duration> = history
        .appends
        .iter()
        .map(|op| (op.id.as_str(), op.invoked))
        .collect();
    for read in &history.reads {
        checked.reads += 1;
        let prefix = prefixes.get(read.urn.as_str()).cloned().unwrap_or_default();
        let n = read.revision.map_or(0, |r| r as usize + 1);
        let expected: Vec<&str> = prefix.iter().take(n).copied().collect();
        let got: Vec<&str> = read.ids.iter().map(String::as_str).collect();
        if got != expected || n > prefix.len() {
            errors.push(format!(
                "read of {} at {:?}..{:?} returned revision {:?} with {} events that are not the \
                 log's prefix of the stream ({} events there)",
                read.urn,
                read.invoked,
                read.completed,
                read.revision,
                got.len(),
                prefix.len()
            ));
            continue;
        }
        for (op, _, rev) in &acked {
            if op.urn == read.urn && op.completed < read.invoked && read.revision < Some(*rev) {
                errors.push(format!(
                    "stale read of {} invoked at {:?}: revision {:?}, but {} was acknowledged \
                     at {:?} with revision {rev}",
                    read.urn, read.invoked, read.revision, op.id, op.completed
                ));
            }
        }
        for id in &got {
            match invoked.get(id) {
                Some(t) if *t > read.completed => errors.push(format!(
                    "read of {} answered at {:?} returned {id}, invoked only at {t:?}",
                    read.urn, read.completed
                )),
                _ => {}
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        errors.truncate(20);
        Err(errors)
    }
}

fn shard_of(op: &AppendOp) -> u32 {
    match op.outcome {
        AppendOutcome::Ok { shard, .. } => shard,
        _ => u32::MAX,
    }
}

/// Every replica's state views (document, relational) of every shard, by (view kind, shard):
/// node, watermark, and its resources.
pub type Views = BTreeMap<
    (&'static str, u32),
    Vec<(
        u64,
        u64,
        Vec<(String, themis_materializers::document::Document)>,
    )>,
>;

/// The state views and the model each one folds.
pub const STATE_VIEWS: [(themis_materializers::document::StateView, themis_log::Model); 2] = [
    (
        themis_materializers::document::DOCUMENTS,
        themis_log::Model::Document,
    ),
    (
        themis_materializers::document::ROWS,
        themis_log::Model::Relational,
    ),
];

/// Checks every replica's state views (document, relational) against a fold of the shard's
/// log.
pub fn check_views(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    views: &Views,
) -> Result<usize, Vec<String>> {
    use themis_materializers::document::{Document, merge_patch};
    let mut errors = Vec::new();
    let mut resources = 0;
    for ((shard, replicas), (view, model)) in logs
        .iter()
        .flat_map(|l| STATE_VIEWS.iter().map(move |v| (l, v)))
    {
        let kind = view.kind();
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let mut reference: BTreeMap<String, Document> = BTreeMap::new();
        for entry in entries {
            let Some(outcomes) = &entry.outcomes else {
                continue;
            };
            for (event, outcome) in entry.events.iter().zip(outcomes) {
                let Outcome::Appended { revisions } = outcome else {
                    continue;
                };
                if event.urn.model() != *model {
                    continue;
                }
                let data: serde_json::Value = event
                    .data
                    .as_ref()
                    .map(|d| serde_json::from_str(d.get()).expect("the log holds JSON"))
                    .unwrap_or(serde_json::json!({}));
                let key = event.urn.as_str().to_owned();
                let (data, deleted) = match event.op {
                    themis_log::event::Op::Put => (data, false),
                    themis_log::event::Op::Patch => {
                        let mut state = match reference.get(&key) {
                            Some(d) if !d.deleted => d.data.clone(),
                            _ => serde_json::json!({}),
                        };
                        merge_patch(&mut state, &data);
                        (state, false)
                    }
                    themis_log::event::Op::Delete => (serde_json::Value::Null, true),
                    _ => continue,
                };
                reference.insert(
                    key,
                    Document {
                        data,
                        revision: revisions[0],
                        lsn: entry.lsn.0,
                        updated_ms: entry.ts_ms.unwrap_or(0),
                        deleted,
                    },
                );
            }
        }
        resources += reference.len();
        let last = entries.last().map_or(0, |e| e.lsn.0);
        for (node, watermark, docs) in views.get(&(kind, *shard)).into_iter().flatten() {
            if *watermark != last {
                errors.push(format!(
                    "shard {shard}: node {node}'s {kind} view is at LSN {watermark}, the log at {last}"
                ));
                continue;
            }
            let got: BTreeMap<&str, &Document> =
                docs.iter().map(|(k, d)| (k.as_str(), d)).collect();
            let want: BTreeMap<&str, &Document> =
                reference.iter().map(|(k, d)| (k.as_str(), d)).collect();
            if got != want {
                let diff = want
                    .iter()
                    .find(|(k, d)| got.get(*k) != Some(*d))
                    .map(|(k, d)| format!("{k}: the fold has {d:?}, the view {:?}", got.get(k)))
                    .or_else(|| {
                        got.iter()
                            .find(|(k, _)| !want.contains_key(*k))
                            .map(|(k, d)| format!("{k}: only in the view, {d:?}"))
                    })
                    .unwrap_or_default();
                errors.push(format!(
                    "shard {shard}: node {node}'s {kind} view differs from the fold of the log ({diff})"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// The URNs `wanted` selects that exist after a shard's log: an accepted put (and a patch,
/// when `patch_creates`) makes one exist, a delete not.
fn live_urns(
    entries: &[LogEntryView],
    wanted: impl Fn(&themis_log::Urn) -> bool,
    patch_creates: bool,
) -> BTreeSet<String> {
    use themis_log::event::Op;
    let mut live = BTreeSet::new();
    for entry in entries {
        let Some(outcomes) = &entry.outcomes else {
            continue;
        };
        for (event, outcome) in entry.events.iter().zip(outcomes) {
            if !matches!(outcome, Outcome::Appended { .. }) || !wanted(&event.urn) {
                continue;
            }
            match event.op {
                Op::Put => {
                    live.insert(event.urn.as_str().to_owned());
                }
                Op::Patch if patch_creates => {
                    live.insert(event.urn.as_str().to_owned());
                }
                Op::Delete => {
                    live.remove(event.urn.as_str());
                }
                _ => {}
            }
        }
    }
    live
}

/// Every replica's vector view of every shard, by shard: node, the live vector resources of
/// its state, and the URNs a search there can find (its indexes' visible points).
pub type VectorViews = BTreeMap<u32, Vec<(u64, BTreeSet<String>, BTreeSet<String>)>>;

/// Checks every replica's vector view against a fold of the shard's log: the live vector
/// resources (put makes one live, delete not, a patch changes no liveness) are exactly those
/// of the view's state and exactly those its searches can find. Returns how many were
/// checked.
pub fn check_vectors(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    views: &VectorViews,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    let mut checked = 0;
    for (shard, replicas) in logs {
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let live = live_urns(
            entries,
            |urn| {
                urn.model() == themis_log::Model::Vector
                    && urn.namespace() != themis_log::event::CONFIG_NAMESPACE
            },
            false,
        );
        checked += live.len();
        for (node, state, found) in views.get(shard).into_iter().flatten() {
            for (what, got) in [("state", state), ("index", found)] {
                if *got != live {
                    let missing: Vec<&String> = live.difference(got).take(3).collect();
                    let extra: Vec<&String> = got.difference(&live).take(3).collect();
                    errors.push(format!(
                        "shard {shard}: node {node}'s vector {what} differs from the fold of the \
                         log (missing {missing:?}, extra {extra:?})"
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

/// Every replica's fulltext index of the document namespace `sim`, by shard: node and the
/// URNs it holds.
pub type TextViews = BTreeMap<u32, Vec<(u64, Vec<String>)>>;

/// Checks every replica's fulltext index of document namespace `sim` against a fold of the
/// shard's log: it holds exactly the documents that exist (put or patch makes one exist,
/// delete not). Returns how many were checked.
pub fn check_texts(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    views: &TextViews,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    let mut checked = 0;
    for (shard, replicas) in logs {
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let live = live_urns(
            entries,
            |urn| urn.model() == themis_log::Model::Document && urn.namespace() == "sim",
            true,
        );
        checked += live.len();
        for (node, urns) in views.get(shard).into_iter().flatten() {
            let got: BTreeSet<String> = urns.iter().cloned().collect();
            if got != live || got.len() != urns.len() {
                let missing: Vec<&String> = live.difference(&got).take(3).collect();
                let extra: Vec<&String> = got.difference(&live).take(3).collect();
                errors.push(format!(
                    "shard {shard}: node {node}'s fulltext index differs from the fold of the \
                     log (missing {missing:?}, extra {extra:?}, {} entries for {} URNs)",
                    urns.len(),
                    got.len()
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

/// Checks what the workload's subscriber received against the converged logs: per shard,
/// exactly the accepted events, in log order (no gap, no duplicate, no rewind), across every
/// reconnect to another node. Returns the number of events checked.
pub fn check_subscriber(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    subscribed: &crate::subscriber::Subscribed,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    for (&shard, replicas) in logs {
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let mut expected: Vec<(u64, u32, String)> = Vec::new();
        for entry in entries {
            let Some(outcomes) = &entry.outcomes else {
                continue;
            };
            for (index, (event, outcome)) in entry.events.iter().zip(outcomes).enumerate() {
                if matches!(outcome, Outcome::Appended { .. }) {
                    expected.push((entry.lsn.0, index as u32, event.id.to_string()));
                }
            }
        }
        let received: Vec<(u64, u32, String)> = subscribed
            .received
            .iter()
            .filter(|r| r.0 == shard)
            .map(|r| (r.1, r.2, r.3.clone()))
            .collect();
        if received == expected {
            continue;
        }
        let at = received
            .iter()
            .zip(&expected)
            .position(|(r, e)| r != e)
            .unwrap_or(received.len().min(expected.len()));
        let what = match (received.get(at), expected.get(at)) {
            (Some(r), _) if at > 0 && (r.0, r.1) <= (received[at - 1].0, received[at - 1].1) => {
                format!(
                    "a duplicate or rewind: ({}, {}) after ({}, {})",
                    r.0,
                    r.1,
                    received[at - 1].0,
                    received[at - 1].1
                )
            }
            (Some(r), Some(e)) => format!(
                "received ({}, {}) {} where the log has ({}, {}) {}",
                r.0, r.1, r.2, e.0, e.1, e.2
            ),
            (None, Some(e)) => format!("missing from ({}, {}) {} on", e.0, e.1, e.2),
            (Some(r), None) => format!("received ({}, {}) {} beyond the log", r.0, r.1, r.2),
            (None, None) => "lengths differ".into(),
        };
        errors.push(format!(
            "subscriber, shard {shard}: {} events received, the log accepted {}; at delivery {at}: {what}",
            received.len(),
            expected.len()
        ));
    }
    if errors.is_empty() {
        Ok(subscribed.received.len())
    } else {
        Err(errors)
    }
}

/// Every replica's time series, by shard: node and, per series URN, its stored points.
pub type SeriesViews = BTreeMap<u32, Vec<(u64, BTreeMap<String, Vec<(i64, f64)>>)>>;

/// Checks every replica's time-series view against a fold of the shard's log: each series
/// holds exactly the points of its accepted points events since its last delete, in timestamp
/// order (arrival order among equal timestamps), bit for bit. Returns how many points were
/// checked.
pub fn check_series(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    views: &SeriesViews,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    let mut checked = 0;
    for (shard, replicas) in logs {
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let mut fold: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for entry in entries {
            let Some(outcomes) = &entry.outcomes else {
                continue;
            };
            for (event, outcome) in entry.events.iter().zip(outcomes) {
                if !matches!(outcome, Outcome::Appended { .. })
                    || event.urn.model() != themis_log::Model::Timeseries
                    || event.urn.namespace() == themis_log::event::CONFIG_NAMESPACE
                {
                    continue;
                }
                let key = event.urn.as_str().to_owned();
                match event.op {
                    themis_log::event::Op::Points => fold
                        .entry(key)
                        .or_default()
                        .extend(event.points.iter().flatten().map(|p| (p.0, p.1))),
                    themis_log::event::Op::Delete => {
                        fold.remove(&key);
                    }
                    _ => {}
                }
            }
        }
        for points in fold.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        fold.retain(|_, p| !p.is_empty());
        checked += fold.values().map(Vec::len).sum::<usize>();
        let bits = |m: &BTreeMap<String, Vec<(i64, f64)>>| -> BTreeMap<String, Vec<(i64, u64)>> {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter().map(|&(t, x)| (t, x.to_bits())).collect(),
                    )
                })
                .collect()
        };
        let expected = bits(&fold);
        for (node, series) in views.get(shard).into_iter().flatten() {
            let got = bits(series);
            if got != expected {
                let differ: Vec<&String> = expected
                    .keys()
                    .chain(got.keys())
                    .filter(|k| expected.get(*k) != got.get(*k))
                    .take(3)
                    .collect();
                errors.push(format!(
                    "shard {shard}: node {node}'s time series differ from the fold of the log \
                     (first differing series: {differ:?})"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

/// Every replica's graph view, by shard: node, vertices and edges.
pub type GraphViews = BTreeMap<
    u32,
    Vec<(
        u64,
        Vec<(String, themis_materializers::graph::Vertex)>,
        Vec<(
            themis_materializers::graph::Edge,
            themis_materializers::graph::EdgeState,
        )>,
    )>,
>;

/// Checks every replica's graph view against a fold of the shard's log: vertices (data,
/// revision, the commit time that created them last) and edges stored in the shard (data,
/// commit time of the link), a delete removing the vertex and every edge stored here that
/// starts or ends at it. Returns how many vertices and edges were checked.
pub fn check_graph(
    logs: &BTreeMap<u32, Vec<(u64, Vec<LogEntryView>)>>,
    views: &GraphViews,
) -> Result<usize, Vec<String>> {
    use themis_log::event::Op;
    use themis_materializers::document::merge_patch;
    use themis_materializers::graph::{EdgeState, Vertex};
    let mut errors = Vec::new();
    let mut checked = 0;
    for (shard, replicas) in logs {
        let Some((_, entries)) = replicas.first() else {
            continue;
        };
        let mut vertices: BTreeMap<String, Vertex> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String, String), EdgeState> = BTreeMap::new();
        for entry in entries {
            let Some(outcomes) = &entry.outcomes else {
                continue;
            };
            let ts = entry.ts_ms.unwrap_or(0);
            for (event, outcome) in entry.events.iter().zip(outcomes) {
                let Outcome::Appended { revisions } = outcome else {
                    continue;
                };
                if event.urn.model() != themis_log::Model::Graph
                    || event.urn.namespace() == themis_log::event::CONFIG_NAMESPACE
                {
                    continue;
                }
                let urn = event.urn.as_str().to_owned();
                let data: serde_json::Value = event
                    .data
                    .as_ref()
                    .map(|d| serde_json::from_str(d.get()).expect("the log holds JSON"))
                    .unwrap_or(serde_json::json!({}));
                match event.op {
                    Op::Put | Op::Patch => {
                        let previous = vertices.get(&urn);
                        let born_ms = previous.map_or(ts, |v| v.born_ms);
                        let state = if event.op == Op::Put {
                            data
                        } else {
                            let mut state =
                                previous.map_or(serde_json::json!({}), |v| v.data.clone());
                            merge_patch(&mut state, &data);
                            state
                        };
                        vertices.insert(
                            urn,
                            Vertex {
                                data: state,
                                revision: revisions[0],
                                born_ms,
                            },
                        );
                    }
                    Op::Delete => {
                        vertices.remove(&urn);
                        edges.retain(|(from, _, to), _| *from != urn && *to != urn);
                    }
                    Op::Link | Op::Unlink => {
                        let key = (
                            urn,
                            event.label.clone().unwrap_or_default(),
                            event
                                .to
                                .as_ref()
                                .map(|t| t.as_str().to_owned())
                                .unwrap_or_default(),
                        );
                        if event.op == Op::Link {
                            edges.insert(
                                key,
                                EdgeState {
                                    data,
                                    linked_ms: ts,
                                },
                            );
                        } else {
                            edges.remove(&key);
                        }
                    }
                    Op::Points => {}
                }
            }
        }
        checked += vertices.len() + edges.len();
        let expected_vertices: Vec<(String, Vertex)> = vertices.into_iter().collect();
        let expected_edges: Vec<((String, String, String), EdgeState)> =
            edges.into_iter().collect();
        for (node, got_vertices, got_edges) in views.get(shard).into_iter().flatten() {
            if *got_vertices != expected_vertices {
                errors.push(format!(
                    "shard {shard}: node {node}'s graph vertices differ from the fold of the log \
                     ({} vs {} expected)",
                    got_vertices.len(),
                    expected_vertices.len()
                ));
            }
            let got: Vec<((String, String, String), EdgeState)> = got_edges
                .iter()
                .map(|(e, s)| ((e.from.clone(), e.label.clone(), e.to.clone()), s.clone()))
                .collect();
            if got != expected_edges {
                errors.push(format!(
                    "shard {shard}: node {node}'s graph edges differ from the fold of the log \
                     ({} vs {} expected)",
                    got.len(),
                    expected_edges.len()
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}
