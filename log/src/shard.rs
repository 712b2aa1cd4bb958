//! One shard's Raft group on this node: proposes batches, answers appends with their positions,
//! and reads streams and the raw log from the shard's store.
//!
//! Invariant: an append is answered only after its entry is committed (fsynced on a quorum) and
//! applied; the answer carries the outcome the deterministic state machine decided, so a retry
//! or a concurrent writer can never be told something the log does not say.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::{BasicNode, EntryPayload, ServerState};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::entry::{EventPosition, Outcome, Proposal, ProposedEvent};
use crate::event::{Event, EventId, ExpectedRevision};
use crate::ids::{Lsn, Position, ShardId};
use crate::raft::{self, Raft, RaftTiming, TransportNetworkFactory};
use crate::seam::{Clock, NodeId, Transport};
use crate::store::state;
use crate::store::{NodeStore, ShardStore};
use crate::urn::Urn;
use crate::{Error, Result};

/// Counters of one shard, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Append requests answered with success (including idempotent retries).
    pub appends: AtomicU64,
    /// Events appended.
    pub events: AtomicU64,
    /// Appends refused by an expected-revision check.
    pub conflicts: AtomicU64,
    /// Appends answered from the idempotency table.
    pub duplicates: AtomicU64,
}

/// An accepted event's place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    /// The event id.
    pub id: EventId,
    /// Its stream.
    pub urn: Urn,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its entry's LSN.
    pub lsn: Lsn,
    /// Its index within the entry.
    pub index: u32,
}

/// The answer to a successful append on one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The shard and LSN of the entry holding the events (the original entry for a retry).
    pub position: Position,
    /// True when every event had been appended before and nothing new was written.
    pub duplicate: bool,
    /// The events, in batch order.
    pub events: Vec<AppendedEvent>,
}

/// An event as read back from the log.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// The event as appended.
    #[serde(flatten)]
    pub event: Event,
    /// Its revision in the stream.
    pub revision: u64,
    /// Shard and LSN of its entry.
    pub position: Position,
    /// Index within the entry.
    pub index: u32,
    /// Commit timestamp of its entry (ms since the Unix epoch).
    pub ts_ms: u64,
}

/// A page of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamPage {
    /// The stream.
    pub urn: Urn,
    /// The stream's current revision (None: no stream).
    pub revision: Option<u64>,
    /// Events from the requested revision on.
    pub events: Vec<StoredEvent>,
    /// Where the next page starts, if there are more events.
    pub next_revision: Option<u64>,
}

/// One committed entry of the raw log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntryView {
    /// Its LSN.
    pub lsn: Lsn,
    /// Raft term of the leader that proposed it.
    pub term: u64,
    /// `events`, `blank` (a new leader's no-op) or `membership`.
    pub kind: &'static str,
    /// Commit timestamp (events entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
    /// Hash chain of the log up to and including this entry (hex).
    pub chain: String,
    /// What the state machine decided for each client batch of the entry (events entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<Outcome>>,
    /// The events of every batch, in order (an event's place here is its index).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// An event the state machine accepted, with its place in the log.
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    /// The event as appended.
    pub event: Event,
    /// Its revision in its stream.
    pub revision: u64,
    /// Its index within the entry.
    pub index: u32,
}

/// One committed entry as views and subscribers see it: the events the state machine accepted
/// (batches refused by an expected revision or answered as retries are left out).
#[derive(Debug, Clone)]
pub struct CommittedEntry {
    /// Its LSN.
    pub lsn: Lsn,
    /// Commit timestamp assigned by the leader (ms since the Unix epoch); 0 for entries
    /// without events.
    pub ts_ms: u64,
    /// The accepted events, in log order.
    pub events: Vec<CommittedEvent>,
}

/// Tunables of a shard.
#[derive(Debug, Clone, Default)]
pub struct ShardConfig {
    /// Raft timing.
    pub timing: RaftTiming,
    /// Entries between snapshots (and logical purges of the Raft log); 0: snapshots only on
    /// demand.
    pub snapshot_every: u64,
    /// Group commit tunables.
    pub proposer: ProposerConfig,
}

/// How the leader groups concurrent appends into entries. openraft writes one entry at a time
/// and waits for its fsync, so batching happens here: every append that arrives while earlier
/// entries are in flight joins the next entry.
#[derive(Debug, Clone)]
pub struct ProposerConfig {
    /// Entries proposed and not yet answered, at most.
    pub in_flight_max: usize,
    /// Events in one entry, at most (a single larger batch still goes alone).
    pub entry_events_max: usize,
    /// Approximate bytes of one entry, at most (a single larger batch still goes alone).
    pub entry_bytes_max: usize,
    /// Appends waiting for a proposal slot, at most; senders wait beyond.
    pub queue_depth_max: usize,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        Self {
            in_flight_max: 1,
            entry_events_max: 8192,
            entry_bytes_max: 4 << 20,
            queue_depth_max: 16_384,
        }
    }
}

/// What openraft answers to one proposal.
type WriteAnswer = std::result::Result<
    std::result::Result<
        openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
        ClientWriteError<NodeId, BasicNode>,
    >,
    oneshot::error::RecvError,
>;

/// Where each batch of a proposal is answered, with the ids and streams of its events.
type Replies = Vec<(oneshot::Sender<Result<Appended>>, Vec<(EventId, Urn)>)>;

struct PendingAppend {
    events: Vec<ProposedEvent>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// What the proposer task shares with the shard.
struct Proposer {
    id: ShardId,
    raft: Raft,
    clock: Arc<dyn Clock>,
    last_ts: AtomicU64,
    stats: ShardStats,
    config: ProposerConfig,
}

/// One shard's Raft group and store on this node.
pub struct Shard {
    id: ShardId,
    node: NodeId,
    raft: Raft,
    /// The Raft term and last log index when this incarnation opened the shard (see
    /// [`Shard::read_index`]).
    startup: (u64, u64),
    store: ShardStore,
    proposer: Arc<Proposer>,
    appends: mpsc::Sender<PendingAppend>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("store", &self.store.location())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shard {
    /// Opens the shard's store and starts its Raft group. A new group is initialized with
    /// `members` as its voters only when `bootstrap` is set (on exactly one of them); the other
    /// members wait for its leader to reach them.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        id: ShardId,
        node: NodeId,
        members: BTreeMap<NodeId, BasicNode>,
        bootstrap: bool,
        node_store: &NodeStore,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        config: &ShardConfig,
    ) -> Result<Shard> {
        let (store, sm) = node_store.shard(id)?;
        let last_ts = {
            let tx = store
                .state_database()
                .begin_read()
                .map_err(|e| Error::Storage(e.to_string()))?;
            let meta = tx
                .open_table(store.tables().sm_meta())
                .map_err(|e| Error::Storage(e.to_string()))?;
            let ts = meta.get("ts").map_err(|e| Error::Storage(e.to_string()))?;
            ts.and_then(|v| v.value().try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        // What this incarnation starts from: the durable vote's term and the last log entry.
        let startup = {
            use openraft::storage::RaftLogStorage;
            let mut probe = store.clone();
            let unavailable = |e: openraft::StorageError<NodeId>| Error::Unavailable {
                shard: id,
                reason: e.to_string(),
            };
            let last = probe
                .get_log_state()
                .await
                .map_err(unavailable)?
                .last_log_id;
            let vote = probe.read_vote().await.map_err(unavailable)?;
            (
                vote.map_or(0, |v| v.leader_id.term),
                last.map_or(0, |id| id.index),
            )
        };
        let network = TransportNetworkFactory::new(id, transport);
        let raft = Raft::new(
            node,
            raft::config(id, &config.timing, config.snapshot_every),
            network,
            store.clone(),
            sm,
        )
        .await
        .map_err(|e| Error::Unavailable {
            shard: id,
            reason: e.to_string(),
        })?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Unavailable {
                shard: id,
                reason: e.to_string(),
            })?;
        if !initialized && bootstrap {
            raft.initialize(members)
                .await
                .map_err(|e| Error::Unavailable {
                    shard: id,
                    reason: e.to_string(),
                })?;
        }
        let proposer = Arc::new(Proposer {
            id,
            raft: raft.clone(),
            clock,
            last_ts: AtomicU64::new(last_ts),
            stats: ShardStats::default(),
            config: config.proposer.clone(),
        });
        let (appends, queue) = mpsc::channel(config.proposer.queue_depth_max.max(1));
        tokio::spawn(proposer.clone().run(queue));
        Ok(Shard {
            id,
            node,
            startup,
            raft,
            store,
            proposer,
            appends,
        })
    }

    /// The shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The shard's store.
    pub fn store(&self) -> &ShardStore {
        &self.store
    }

    /// The shard's Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Shard counters.
    pub fn stats(&self) -> &ShardStats {
        &self.proposer.stats
    }

    /// The LSN its state machine has applied.
    pub fn applied(&self) -> Lsn {
        Lsn(*self.store.applied().borrow())
    }

    /// Whether this node leads the shard.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Whether this replica belongs to its group's membership yet (false for a new replica
    /// until the leader adds it).
    pub fn joined(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.node)
            .is_some()
    }

    /// The leader this replica knows of, waiting at most `timeout` for one to be elected.
    pub async fn leader(&self, timeout: Duration) -> Result<NodeId> {
        if let Some(leader) = self.raft.metrics().borrow().current_leader {
            return Ok(leader);
        }
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a known leader")
            .await
            .map_err(|e| Error::Unavailable {
                shard: self.id,
                reason: format!("no leader was elected in time: {e}"),
            })
            .map(|m| m.current_leader.expect("waited for a leader"))
    }

    /// On the leader: confirms leadership with a quorum and returns the LSN a linearizable read
    /// must see applied (the read index).
    ///
    /// openraft's read index is the larger of the leader's first entry of its term and its
    /// commit index. A leader that restarts keeps its term and leadership (its vote is durable)
    /// but not its commit index, which starts again at what its state machine had made durable:
    /// entries it had committed, applied and acknowledged before the restart would be missing
    /// from reads until it commits them again (found by the simulator: a power loss of every
    /// node, then a stale read). So while it leads in the term it restarted in, the read index
    /// is also at least the last entry it held when it opened: as that term's leader it never
    /// drops its own entries, so they get committed. A leader elected in a later term needs no
    /// such bound: its first entry follows everything committed before.
    pub async fn read_index(&self) -> Result<Lsn> {
        // The term is read before the leadership check: terms only grow, so if the check
        // confirms leadership in the restart term, this reading is at most that term (lower
        // only while the metrics are not yet published after the restart).
        let (term, last) = self.startup;
        let same_term = self.raft.metrics().borrow().current_term <= term;
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => {
                let read = read.map_or(0, |id| id.index);
                Ok(Lsn(if same_term { read.max(last) } else { read }))
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::CheckIsLeaderError::ForwardToLeader(f),
            )) => Err(Error::NotLeader {
                shard: self.id,
                leader: f.leader_id,
            }),
            Err(e) => Err(Error::Unavailable {
                shard: self.id,
                reason: format!("cannot confirm leadership: {e}"),
            }),
        }
    }

    /// Waits until this replica has applied `lsn`, at most `timeout`.
    pub async fn wait_applied(&self, lsn: Lsn, timeout: Duration) -> Result<()> {
        if self.applied() >= lsn {
            return Ok(());
        }
        let mut applied = self.store.applied();
        let wait = applied.wait_for(|&a| a >= lsn.0);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable {
                shard: self.id,
                reason: "the shard stopped".into(),
            }),
            Err(_) => Err(Error::Unavailable {
                shard: self.id,
                reason: format!(
                    "this replica did not apply LSN {} within {timeout:?} (it is at {})",
                    lsn.0,
                    self.applied().0
                ),
            }),
        }
    }

    /// Waits until the shard has a leader and has applied every entry of its local log, at
    /// most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<()> {
        // The state machine is made durable only now and then, so after a restart it replays
        // the log once a leader commits again; until then reads would see an older state.
        let ready = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.current_leader.is_some() && m.last_applied.map(|id| id.index) >= m.last_log_index
        };
        self.raft
            .wait(Some(timeout))
            .metrics(ready, "a leader and the local log applied")
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable {
                shard: self.id,
                reason: format!("no leader, or the log not applied: {e}"),
            })
    }

    /// Stops the Raft group.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(shard = self.id.0, "raft shutdown: {e}");
        }
    }

    fn storage<E: std::fmt::Display>(&self) -> impl Fn(E) -> Error + '_ {
        move |e| Error::Storage(format!("{}: {e}", self.store.location()))
    }

    /// Answers from the applied state alone when that is certain: an exact retry of appended
    /// events, or an expected revision the stream has already passed.
    fn precheck(&self, events: &[ProposedEvent]) -> Result<Option<Appended>> {
        let tx = self
            .store
            .state_database()
            .begin_read()
            .map_err(self.storage())?;
        let dedup = tx
            .open_table(self.store.tables().dedup())
            .map_err(self.storage())?;
        let mut originals = Vec::with_capacity(events.len());
        for p in events {
            // Server-drawn ids never enter the idempotency table (as in the state machine).
            let record = if p.client_id {
                state::dedup_lookup(&dedup, &p.event.id).map_err(self.storage())?
            } else {
                None
            };
            originals.push(record);
        }
        let seen = originals.iter().filter(|r| r.is_some()).count();
        if seen == events.len() && seen > 0 {
            let mut out = Vec::with_capacity(seen);
            for (p, r) in events.iter().zip(&originals) {
                let r = r.as_ref().expect("all seen");
                if r.urn != p.event.urn.as_str() {
                    return Err(Error::IdempotencyConflict {
                        id: p.event.id,
                        reason: format!("the id was appended before to another stream, {}", r.urn),
                    });
                }
                out.push(appended_event(&p.event, r.position));
            }
            self.proposer
                .stats
                .duplicates
                .fetch_add(1, Ordering::Relaxed);
            self.proposer.stats.appends.fetch_add(1, Ordering::Relaxed);
            let lsn = out.iter().map(|e| e.lsn).max().expect("non-empty");
            return Ok(Some(Appended {
                position: Position {
                    shard: self.id,
                    lsn,
                },
                duplicate: true,
                events: out,
            }));
        }
        if seen > 0 {
            let (p, _) = events
                .iter()
                .zip(&originals)
                .find(|(_, r)| r.is_none())
                .expect("some unseen");
            return Err(Error::IdempotencyConflict {
                id: p.event.id,
                reason: format!(
                    "{seen} of the batch's {} event ids were appended before, this one was not; \
                     a retry must resend exactly the original batch",
                    events.len()
                ),
            });
        }
        Ok(None)
    }

    /// The refusal the applied state makes certain for `events` (an expected revision the
    /// stream has already passed), if any. Only a hint until leadership is confirmed: see
    /// [`append`](Self::append).
    fn passed_expectation(&self, events: &[ProposedEvent]) -> Result<Option<Error>> {
        // A refusal names the stream's current revision, so it is answered from here only when
        // this replica has applied every acknowledged append. Cheap filter first: it leads the
        // shard and has applied its whole log (a leader that was just elected may still be
        // replaying; found by the simulator: a refusal after a power loss reported a revision
        // the stream had already passed).
        let caught_up = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.state == ServerState::Leader && self.applied().0 >= m.last_log_index.unwrap_or(0)
        };
        if !caught_up {
            return Ok(None);
        }
        let tx = self
            .store
            .state_database()
            .begin_read()
            .map_err(self.storage())?;
        let streams = tx
            .open_table(self.store.tables().stream_events())
            .map_err(self.storage())?;
        let mut checked = std::collections::BTreeSet::new();
        for p in events {
            if !checked.insert(p.event.urn.as_str()) {
                continue;
            }
            let actual = state::stream_revision(&streams, &p.event.urn).map_err(self.storage())?;
            let certain = match (p.expected, actual) {
                (ExpectedRevision::NoStream, Some(_)) => true,
                (ExpectedRevision::Exact(n), Some(a)) => a > n,
                _ => false,
            };
            if certain {
                return Ok(Some(Error::WrongExpectedRevision {
                    urn: p.event.urn.clone(),
                    expected: p.expected,
                    actual,
                }));
            }
        }
        Ok(None)
    }

    /// Appends `events` atomically: all of them or none.
    ///
    /// With `precheck`, first answers from the applied state when that is certain (a retry of
    /// appended ids, a passed expected revision), sparing a log entry.
    pub async fn append(&self, events: Vec<ProposedEvent>, precheck: bool) -> Result<Appended> {
        if precheck {
            if let Some(answer) = self.precheck(&events)? {
                return Ok(answer);
            }
            // A refusal from the applied state must not name a revision older than an append
            // acknowledged before this one began, so leadership is confirmed with a quorum
            // and the read index applied first (found by the simulator: a leader restored in
            // its old term after a crash, already deposed, refused with a stale revision).
            // Unconfirmed, the state machine decides.
            if self.passed_expectation(&events)?.is_some()
                && let Ok(index) = self.read_index().await
                && self
                    .wait_applied(index, Duration::from_secs(1))
                    .await
                    .is_ok()
                && let Some(refusal) = self.passed_expectation(&events)?
            {
                self.proposer
                    .stats
                    .conflicts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(refusal);
            }
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable {
            shard: self.id,
            reason: "the shard is shutting down".into(),
        };
        self.appends
            .send(PendingAppend { events, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Reads up to `limit` events of `urn` from revision `from`.
    pub fn read_stream(&self, urn: &Urn, from: u64, limit: usize) -> Result<StreamPage> {
        let tx = self
            .store
            .state_database()
            .begin_read()
            .map_err(self.storage())?;
        let index = tx
            .open_table(self.store.tables().stream_events())
            .map_err(self.storage())?;
        let revision = state::stream_revision(&index, urn).map_err(self.storage())?;
        let mut slots = Vec::new();
        let mut next_revision = None;
        let range = index
            .range((urn.as_str(), from)..=(urn.as_str(), u64::MAX))
            .map_err(self.storage())?;
        for item in range {
            let (k, v) = item.map_err(self.storage())?;
            if slots.len() == limit {
                next_revision = Some(k.value().1);
                break;
            }
            slots.push((k.value().1, v.value()));
        }
        drop(index);
        let mut entries: BTreeMap<u64, (u64, Vec<ProposedEvent>)> = BTreeMap::new();
        let mut events = Vec::with_capacity(slots.len());
        for (revision, (lsn, i)) in slots {
            if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(lsn) {
                slot.insert(self.proposal_at(lsn)?);
            }
            let (ts_ms, proposal) = &entries[&lsn];
            let event = proposal.get(i as usize).ok_or_else(|| Error::Corrupted {
                location: self.store.location(),
                detail: format!("stream index points at event {i} of entry {lsn}, which has fewer"),
            })?;
            if &event.event.urn != urn {
                return Err(Error::Corrupted {
                    location: self.store.location(),
                    detail: format!(
                        "stream index of {urn} points at event {i} of entry {lsn}, which belongs to {}",
                        event.event.urn
                    ),
                });
            }
            events.push(StoredEvent {
                event: event.event.clone(),
                revision,
                position: Position {
                    shard: self.id,
                    lsn: Lsn(lsn),
                },
                index: i,
                ts_ms: *ts_ms,
            });
        }
        Ok(StreamPage {
            urn: urn.clone(),
            revision,
            events,
            next_revision,
        })
    }

    fn proposal_at(&self, lsn: u64) -> Result<(u64, Vec<ProposedEvent>)> {
        let entry = self
            .store
            .entries(lsn..=lsn)?
            .pop()
            .ok_or_else(|| Error::Corrupted {
                location: self.store.location(),
                detail: format!("log entry {lsn} is referenced by the stream index but missing"),
            })?;
        match entry.payload {
            EntryPayload::Normal(p) => Ok((p.ts_ms, p.batches.into_iter().flatten().collect())),
            _ => Err(Error::Corrupted {
                location: self.store.location(),
                detail: format!(
                    "log entry {lsn} is referenced by the stream index but holds no events"
                ),
            }),
        }
    }

    /// Reads up to `limit` applied entries from `from`; returns them with the applied LSN the
    /// page was bounded by (so a page and its LSN always agree).
    pub fn read_log(&self, from: Lsn, limit: usize) -> Result<(Vec<LogEntryView>, Lsn)> {
        let applied = self.applied();
        let Some(page) = applied_page(from.0, limit, applied.0) else {
            return Ok((Vec::new(), applied));
        };
        let entries = self.store.stored_entries(page.clone())?;
        let mut outcomes = self.recorded_outcomes(page)?;
        let mut out = Vec::with_capacity(entries.len());
        for (entry, chain) in entries {
            let index = entry.log_id.index;
            let chain = hex(&chain);
            let (kind, ts_ms, events) = match entry.payload {
                EntryPayload::Blank => ("blank", None, Vec::new()),
                EntryPayload::Membership(_) => ("membership", None, Vec::new()),
                EntryPayload::Normal(p) => (
                    "events",
                    Some(p.ts_ms),
                    p.batches.into_iter().flatten().map(|e| e.event).collect(),
                ),
            };
            let outcomes = outcomes.remove(&index);
            out.push(LogEntryView {
                lsn: Lsn(index),
                term: entry.log_id.leader_id.term,
                kind,
                ts_ms,
                chain,
                outcomes,
                events,
            });
        }
        Ok((out, applied))
    }
}

impl Shard {
    /// The first LSN whose entry the log still holds (0 when it holds the whole log, or when it
    /// is empty). Records are removed only by retention or tiering (neither is built yet) and
    /// when a snapshot replaced the log with records starting after index 0.
    pub fn first_retained(&self) -> Result<Lsn> {
        let first = self
            .store
            .first_index()
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(Lsn(first.filter(|&f| f > 1).unwrap_or(0)))
    }

    /// Up to `limit` applied entries from `from` (every entry, those without events too, so a
    /// reader's position advances over them), with the applied LSN the page was bounded by.
    pub fn committed_entries(&self, from: Lsn, limit: usize) -> Result<(Vec<CommittedEntry>, Lsn)> {
        let applied = self.applied();
        let Some(page) = applied_page(from.0.max(1), limit, applied.0) else {
            return Ok((Vec::new(), applied));
        };
        let entries = self.store.entries(page.clone())?;
        let mut outcomes = self.recorded_outcomes(page)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let lsn = entry.log_id.index;
            let EntryPayload::Normal(proposal) = entry.payload else {
                out.push(CommittedEntry {
                    lsn: Lsn(lsn),
                    ts_ms: 0,
                    events: Vec::new(),
                });
                continue;
            };
            let decided = outcomes.remove(&lsn).ok_or_else(|| Error::Corrupted {
                location: self.store.location(),
                detail: format!("applied entry {lsn} has no recorded outcomes"),
            })?;
            if decided.len() != proposal.batches.len() {
                return Err(Error::Corrupted {
                    location: self.store.location(),
                    detail: format!(
                        "entry {lsn} has {} batches but {} outcomes",
                        proposal.batches.len(),
                        decided.len()
                    ),
                });
            }
            let mut events = Vec::new();
            let mut index = 0u32;
            for (batch, outcome) in proposal.batches.into_iter().zip(decided) {
                let size = batch.len() as u32;
                if let Outcome::Appended { revisions } = outcome {
                    for (i, (p, revision)) in batch.into_iter().zip(revisions).enumerate() {
                        events.push(CommittedEvent {
                            event: p.event,
                            revision,
                            index: index + i as u32,
                        });
                    }
                }
                index += size;
            }
            out.push(CommittedEntry {
                lsn: Lsn(lsn),
                ts_ms: proposal.ts_ms,
                events,
            });
        }
        Ok((out, applied))
    }
}

impl Shard {
    /// What the state machine decided for each entry of `range` that has events.
    fn recorded_outcomes(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<BTreeMap<u64, Vec<Outcome>>> {
        let tx = self
            .store
            .state_database()
            .begin_read()
            .map_err(self.storage())?;
        let table = tx
            .open_table(self.store.tables().outcomes())
            .map_err(self.storage())?;
        let mut out = BTreeMap::new();
        for item in table.range(range).map_err(self.storage())? {
            let (k, v) = item.map_err(self.storage())?;
            let decided = serde_json::from_slice(v.value()).map_err(self.storage())?;
            out.insert(k.value(), decided);
        }
        Ok(out)
    }
}

/// The LSNs of a page of at most `limit` applied entries from `from` (`None`: empty).
fn applied_page(from: u64, limit: usize, applied: u64) -> Option<std::ops::RangeInclusive<u64>> {
    if from > applied || limit == 0 {
        return None;
    }
    Some(from..=applied.min(from.saturating_add(limit as u64 - 1)))
}

fn appended_event(event: &Event, p: EventPosition) -> AppendedEvent {
    AppendedEvent {
        id: event.id,
        urn: event.urn.clone(),
        revision: p.revision,
        lsn: p.lsn,
        index: p.index,
    }
}

/// A rough size of a batch, for the entry size bound.
fn approx_bytes(events: &[ProposedEvent]) -> usize {
    events
        .iter()
        .map(|p| {
            let e = &p.event;
            64 + e.urn.as_str().len()
                + e.data.as_ref().map_or(0, |d| d.get().len())
                + e.metadata.as_ref().map_or(0, |d| d.get().len())
                + e.vector.as_ref().map_or(0, |v| v.len() * 4)
                + e.points.as_ref().map_or(0, |p| p.len() * 16)
        })
        .sum()
}

impl Proposer {
    fn next_ts(&self) -> u64 {
        let now = self.clock.wall_ms();
        self.last_ts.fetch_max(now, Ordering::SeqCst).max(now)
    }

    /// Groups queued appends into entries, keeping at most `in_flight_max` entries unanswered.
    async fn run(self: Arc<Self>, mut queue: mpsc::Receiver<PendingAppend>) {
        let slots = Arc::new(Semaphore::new(self.config.in_flight_max.max(1)));
        while let Some(first) = queue.recv().await {
            // While we wait for a slot, more appends queue up and join this entry.
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let mut events = first.events.len();
            let mut bytes = approx_bytes(&first.events);
            let mut group = vec![first];
            while events < self.config.entry_events_max && bytes < self.config.entry_bytes_max {
                let Ok(next) = queue.try_recv() else { break };
                events += next.events.len();
                bytes += approx_bytes(&next.events);
                group.push(next);
            }
            self.propose(group, slot).await;
        }
    }

    async fn propose(self: &Arc<Self>, group: Vec<PendingAppend>, slot: OwnedSemaphorePermit) {
        let mut replies = Vec::with_capacity(group.len());
        let mut batches = Vec::with_capacity(group.len());
        for pending in group {
            let summary: Vec<(EventId, Urn)> = pending
                .events
                .iter()
                .map(|p| (p.event.id, p.event.urn.clone()))
                .collect();
            replies.push((pending.reply, summary));
            batches.push(pending.events);
        }
        let proposal = Proposal {
            ts_ms: self.next_ts(),
            batches,
        };
        match self.raft.client_write_ff(proposal).await {
            Err(fatal) => {
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::Unavailable {
                        shard: self.id,
                        reason: fatal.to_string(),
                    }));
                }
            }
            Ok(answer) => {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer = answer.await;
                    drop(slot);
                    this.answer(answer, replies);
                });
            }
        }
    }

    fn answer(&self, answer: WriteAnswer, replies: Replies) {
        let response = match answer {
            Ok(Ok(response)) => response,
            failure => {
                let error = match failure {
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => Error::NotLeader {
                        shard: self.id,
                        leader: f.leader_id,
                    },
                    Ok(Err(other)) => Error::Unavailable {
                        shard: self.id,
                        reason: other.to_string(),
                    },
                    _ => Error::Unavailable {
                        shard: self.id,
                        reason: "raft stopped before answering".into(),
                    },
                };
                for (reply, _) in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let lsn = Lsn(response.log_id.index);
        assert_eq!(
            response.data.len(),
            replies.len(),
            "one outcome per batch of the entry"
        );
        let mut first_index = 0u32;
        for ((reply, summary), outcome) in replies.into_iter().zip(response.data) {
            let size = summary.len() as u32;
            let _ = reply.send(self.outcome(lsn, first_index, summary, outcome));
            first_index += size;
        }
    }

    fn outcome(
        &self,
        lsn: Lsn,
        first_index: u32,
        summary: Vec<(EventId, Urn)>,
        outcome: Outcome,
    ) -> Result<Appended> {
        match outcome {
            Outcome::Appended { revisions } => {
                let events = summary
                    .into_iter()
                    .zip(revisions)
                    .enumerate()
                    .map(|(i, ((id, urn), revision))| AppendedEvent {
                        id,
                        urn,
                        revision,
                        lsn,
                        index: first_index + i as u32,
                    })
                    .collect::<Vec<_>>();
                self.stats.appends.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                Ok(Appended {
                    position: Position {
                        shard: self.id,
                        lsn,
                    },
                    duplicate: false,
                    events,
                })
            }
            Outcome::Duplicate { original } => {
                let lsn = original.iter().map(|p| p.lsn).max().unwrap_or(lsn);
                let events = summary
                    .into_iter()
                    .zip(original)
                    .map(|((id, urn), p)| AppendedEvent {
                        id,
                        urn,
                        revision: p.revision,
                        lsn: p.lsn,
                        index: p.index,
                    })
                    .collect();
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                self.stats.appends.fetch_add(1, Ordering::Relaxed);
                Ok(Appended {
                    position: Position {
                        shard: self.id,
                        lsn,
                    },
                    duplicate: true,
                    events,
                })
            }
            Outcome::WrongExpectedRevision {
                urn,
                expected,
                actual,
                ..
            } => {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(Error::WrongExpectedRevision {
                    urn,
                    expected,
                    actual,
                })
            }
            Outcome::IdempotencyConflict { id, reason, .. } => {
                Err(Error::IdempotencyConflict { id, reason })
            }
        }
    }
}
