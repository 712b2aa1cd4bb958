//! Change streams: resumable subscriptions to the committed log of every shard.
//!
//! A [`Subscription`] delivers, for each shard, the events the state machine accepted, in log
//! order, merged across shards as they arrive. A [`Cursor`] says where it stands: per shard, the
//! next event to deliver (an LSN and an index in that entry). Every delivery carries the cursor
//! just past it, so a subscriber that reconnects with the cursor of the last delivery it received
//! gets exactly the events after it: no gap, no duplicate, no rewind. LSNs and indexes are the
//! same on every replica, so a cursor survives restarts and failover to another node.
//!
//! Fan-out: per shard, one feeder task of the node's [`Hub`] reads each newly applied entry once
//! and broadcasts it to the shard's live subscribers through a bounded ring
//! (`ring_entries`). A subscriber that falls behind the ring, or starts behind it, reads the
//! entries it missed from the log itself, a page at a time, then continues from the ring. Nothing
//! a subscriber does blocks appends or other subscribers: the ring overwrites its oldest entry,
//! and each subscriber's own queue (`queue_items`) is bounded, so a slow reader only stalls its
//! own per-shard tasks, which then read from storage.
//!
//! Invariants: per shard, deliveries are strictly increasing in (LSN, index); a delivery's cursor
//! names, for its shard, the position right after it; a position older than the log's first
//! retained record fails with `position_expired`, never a silent skip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use crate::event::Event;
use crate::ids::{Lsn, Position, ShardId};
use crate::shard::{CommittedEntry, Shard};
use crate::token::{self, Token};
use crate::urn::Model;
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// The version prefix of a cursor's text form.
pub const CURSOR_PREFIX: &str = "r1.";

/// Longest cursor text accepted, in bytes (as for tokens).
pub const CURSOR_TEXT_LEN_MAX: usize = token::TOKEN_TEXT_LEN_MAX;

/// The next event a subscription delivers in one shard: the first event at or after
/// (`lsn`, `index`) in log order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct Next {
    /// The entry.
    pub lsn: Lsn,
    /// The index of the event in the entry (0: the entry's first event).
    pub index: u32,
}

/// Where a subscription stands: for each shard, the next event to deliver. A shard the cursor
/// does not name starts at the beginning of its log.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Cursor {
    next: BTreeMap<ShardId, Next>,
}

/// Why a text is not a cursor (or a `from` position).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(pub String);

impl Cursor {
    /// The cursor at the beginning of every shard's log.
    pub fn new() -> Cursor {
        Cursor::default()
    }

    /// The cursor just after everything `token` has seen: per shard it names, the entry after
    /// its LSN; the beginning of the log for the others.
    pub fn after(token: &Token) -> Cursor {
        Cursor {
            next: token
                .iter()
                .map(|p| {
                    let next = Next {
                        lsn: Lsn(p.lsn.0.saturating_add(1)),
                        index: 0,
                    };
                    (p.shard, next)
                })
                .collect(),
        }
    }

    /// The next event to deliver in `shard`.
    pub fn next(&self, shard: ShardId) -> Next {
        self.next.get(&shard).copied().unwrap_or_default()
    }

    /// Sets the next event to deliver in `shard`.
    pub fn set(&mut self, shard: ShardId, next: Next) {
        self.next.insert(shard, next);
    }

    /// The shards the cursor names.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.next.keys().copied()
    }

    /// The consistency token of everything delivered: per shard, the last entry with a delivered
    /// event or passed over. Usable as a query's `min_token` (the views then cover every event
    /// delivered).
    pub fn token(&self) -> Token {
        self.next
            .iter()
            .filter_map(|(&shard, next)| {
                let lsn = if next.index > 0 {
                    next.lsn.0
                } else {
                    next.lsn.0.checked_sub(1)?
                };
                Some(Position {
                    shard,
                    lsn: Lsn(lsn),
                })
            })
            .collect()
    }

    /// The text form: `r1.` and unpadded URL-safe base64 of (shard, LSN, index) varints and a
    /// CRC-32C, as tokens are framed (`docs/design/token.md`).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.next.len() * 8 + 4);
        for (shard, next) in &self.next {
            token::put_varint(&mut bytes, u64::from(shard.0));
            token::put_varint(&mut bytes, next.lsn.0);
            token::put_varint(&mut bytes, u64::from(next.index));
        }
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let mut text = String::with_capacity(CURSOR_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        text.push_str(CURSOR_PREFIX);
        token::base64_encode(&bytes, &mut text);
        text
    }

    /// Parses a cursor written by [`Cursor::encode`]; anything else is refused with a message
    /// saying what is wrong.
    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        let invalid = |detail: String| CursorError(format!("invalid resume cursor: {detail}"));
        if text.len() > CURSOR_TEXT_LEN_MAX {
            return Err(invalid(format!(
                "{} bytes long; the maximum is {CURSOR_TEXT_LEN_MAX}",
                text.len()
            )));
        }
        let Some(body) = text.strip_prefix(CURSOR_PREFIX) else {
            return Err(invalid(format!("must start with {CURSOR_PREFIX:?}")));
        };
        // Token errors say "invalid token: ..."; keep what follows.
        let token_error = |e: token::TokenError| {
            let text = e.to_string();
            invalid(
                text.strip_prefix("invalid token: ")
                    .unwrap_or(&text)
                    .to_owned(),
            )
        };
        let bytes = token::base64_decode(body, CURSOR_PREFIX.len()).map_err(token_error)?;
        if bytes.len() < 4 {
            return Err(invalid("too short; it was truncated".into()));
        }
        let (payload, checksum) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(checksum.try_into().expect("4 bytes"));
        if stored != crc32c::crc32c(payload) {
            return Err(invalid(
                "checksum mismatch; it was altered or truncated".into(),
            ));
        }
        let mut cursor = Cursor::new();
        let mut offset = 0;
        let mut previous: Option<u32> = None;
        while offset < payload.len() {
            let at = offset;
            let shard = token::get_varint(payload, &mut offset).map_err(token_error)?;
            let lsn = token::get_varint(payload, &mut offset).map_err(token_error)?;
            let index = token::get_varint(payload, &mut offset).map_err(token_error)?;
            let (Ok(shard), Ok(index)) = (u32::try_from(shard), u32::try_from(index)) else {
                return Err(invalid(format!("a position at byte {at} is out of range")));
            };
            if previous.is_some_and(|p| p >= shard) {
                return Err(invalid(format!(
                    "shard {shard} at byte {at} is out of order; shards must be strictly ascending"
                )));
            }
            previous = Some(shard);
            cursor.next.insert(
                ShardId(shard),
                Next {
                    lsn: Lsn(lsn),
                    index,
                },
            );
        }
        Ok(cursor)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Where a subscription starts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum From {
    /// The beginning of every shard's log.
    Earliest,
    /// After everything applied on this node when the subscription opens.
    Latest,
    /// At a cursor (a resume point, or just after a consistency token).
    Cursor(Cursor),
}

impl From {
    /// Parses `earliest`, `latest`, a cursor (`r1.…`) or a consistency token (`t1.…`: the
    /// subscription starts after it).
    pub fn parse(text: &str) -> Result<From, CursorError> {
        match text {
            "earliest" => Ok(From::Earliest),
            "latest" => Ok(From::Latest),
            t if t.starts_with(CURSOR_PREFIX) => Ok(From::Cursor(Cursor::decode(t)?)),
            t if t.starts_with(token::TOKEN_PREFIX) => Token::decode(t)
                .map(|token| From::Cursor(Cursor::after(&token)))
                .map_err(|e| CursorError(e.to_string())),
            other => Err(CursorError(format!(
                "from must be earliest, latest, a resume cursor (r1.…) or a consistency token \
                 (t1.…), not {:?}",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// Which events a subscription delivers. Terms of one key are alternatives, terms of different
/// keys must all hold; no terms deliver every event.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Filter {
    urns: Vec<UrnPattern>,
    models: Vec<Model>,
    namespaces: Vec<String>,
    types: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum UrnPattern {
    /// Every URN that starts with this text.
    Prefix(String),
    /// `*` matches any run of characters, `?` any one character; the whole URN must match.
    Glob(Vec<char>),
}

/// Why a filter term is not valid.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl Filter {
    /// Parses `key=value` terms; keys are `urn` (a prefix, or a glob with `*` and `?`),
    /// `model`, `ns` (namespace) and `type` (event type, exact).
    pub fn parse<'a>(terms: impl IntoIterator<Item = &'a str>) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for term in terms {
            let Some((key, value)) = term.split_once('=') else {
                return Err(FilterError(format!(
                    "filter {term:?} must be key=value (keys: urn, model, ns, type)"
                )));
            };
            if value.is_empty() {
                return Err(FilterError(format!("filter {key}= has an empty value")));
            }
            match key {
                "urn" => filter.urns.push(if value.contains(['*', '?']) {
                    UrnPattern::Glob(value.chars().collect())
                } else {
                    UrnPattern::Prefix(value.to_owned())
                }),
                "model" => filter.models.push(value.parse::<Model>().map_err(|_| {
                    let models: Vec<_> = Model::ALL.iter().map(|m| m.as_str()).collect();
                    FilterError(format!(
                        "filter model={value}: unknown model; models are {}",
                        models.join(", ")
                    ))
                })?),
                "ns" | "namespace" => filter.namespaces.push(value.to_owned()),
                "type" => filter.types.push(value.to_owned()),
                other => {
                    return Err(FilterError(format!(
                        "unknown filter key {other:?}; keys are urn, model, ns, type"
                    )));
                }
            }
        }
        Ok(filter)
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let urn = &event.urn;
        (self.models.is_empty() || self.models.contains(&urn.model()))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == urn.namespace()))
            && (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.urns.is_empty()
                || self.urns.iter().any(|p| match p {
                    UrnPattern::Prefix(prefix) => urn.as_str().starts_with(prefix.as_str()),
                    UrnPattern::Glob(glob) => glob_matches(glob, urn.as_str()),
                }))
    }
}

/// Whether `text` matches `glob` as a whole (`*`: any run, `?`: one character). Linear in
/// practice: on a mismatch it backtracks only to the last `*`.
fn glob_matches(glob: &[char], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && (glob[g] == '?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if g < glob.len() && glob[g] == '*' {
            star = Some((g, t));
            g += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

/// Tunables of change streams.
#[derive(Clone, Debug)]
pub struct SubscribeConfig {
    /// Most concurrent subscriptions on this node; more are refused (`too_many_subscribers`).
    pub subscribers_max: usize,
    /// Entries each shard's ring keeps for live subscribers; one that falls further behind
    /// reads from storage.
    pub ring_entries: usize,
    /// Entries (with the events of each that pass the filter) queued for one subscriber before
    /// its shard tasks wait (and fall behind the ring, and read from storage).
    pub queue_items: usize,
    /// Entries read from storage at a time.
    pub page_entries: usize,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        Self {
            subscribers_max: 1024,
            ring_entries: 1024,
            queue_items: 1024,
            page_entries: 256,
        }
    }
}

/// A committed entry as subscribers share it, with each event's JSON rendered at most once
/// (every live subscriber of a shard gets the same `Arc`).
#[derive(Debug)]
pub struct SharedEntry {
    entry: CommittedEntry,
    json: Vec<std::sync::OnceLock<Box<str>>>,
}

impl SharedEntry {
    fn new(entry: CommittedEntry) -> Arc<SharedEntry> {
        let json = entry.events.iter().map(|_| Default::default()).collect();
        Arc::new(SharedEntry { entry, json })
    }
}

type Ring = broadcast::Sender<Arc<SharedEntry>>;

/// The node's change-stream fan-out: per shard, a feeder and its ring, started by the first
/// subscriber and stopped after the last one leaves.
#[derive(Debug)]
pub struct Hub {
    config: SubscribeConfig,
    rings: Mutex<BTreeMap<ShardId, Ring>>,
    active: Arc<AtomicUsize>,
}

impl Hub {
    /// A hub with `config`.
    pub fn new(config: SubscribeConfig) -> Hub {
        Hub {
            config,
            rings: Mutex::new(BTreeMap::new()),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Its tunables.
    pub fn config(&self) -> &SubscribeConfig {
        &self.config
    }

    /// Subscriptions open now (for `/metrics`).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A receiver of `shard`'s ring, starting its feeder when none runs. Entries applied after
    /// this call arrive on it (unless it falls behind).
    fn ring(self: &Arc<Self>, shard: &Arc<Shard>) -> broadcast::Receiver<Arc<SharedEntry>> {
        let mut rings = self.rings.lock().expect("rings lock");
        if let Some(ring) = rings.get(&shard.id())
            && ring.receiver_count() > 0
        {
            return ring.subscribe();
        }
        let (ring, rx) = broadcast::channel(self.config.ring_entries.max(1));
        rings.insert(shard.id(), ring.clone());
        let start = Lsn(shard.applied().0 + 1);
        let unregister = Unregister {
            hub: Arc::downgrade(self),
            shard: shard.id(),
            ring: ring.clone(),
        };
        let page = self.config.page_entries.max(1);
        let shard = shard.clone();
        tokio::spawn(async move {
            let _unregister = unregister;
            feed(shard, ring, start, page).await;
        });
        rx
    }

    /// Opens a subscription to `shards` (every shard of the database, all hosted here) from
    /// `from`, delivering the events `filter` passes.
    pub fn subscribe(
        self: &Arc<Self>,
        shards: Vec<Arc<Shard>>,
        from: From,
        filter: Filter,
    ) -> Result<Subscription> {
        let limit = self.config.subscribers_max;
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Error::TooManySubscribers { limit });
        }
        let slot = Slot(self.active.clone());
        let mut cursor = Cursor::new();
        for shard in &shards {
            let next = match &from {
                From::Earliest => Next::default(),
                From::Latest => Next {
                    lsn: Lsn(shard.applied().0 + 1),
                    index: 0,
                },
                From::Cursor(c) => {
                    let next = c.next(shard.id());
                    if next.index > 0
                        && themis_storage::canary::active(
                            themis_storage::canary::Canary::ResumeSkipsEntry,
                        )
                    {
                        // The canary: the rest of a partly delivered entry is lost.
                        Next {
                            lsn: Lsn(next.lsn.0 + 1),
                            index: 0,
                        }
                    } else {
                        next
                    }
                }
            };
            cursor.set(shard.id(), next);
        }
        if let From::Cursor(c) = &from
            && let Some(unknown) = c.shards().find(|s| shards.iter().all(|h| h.id() != *s))
        {
            return Err(Error::InvalidRequest(format!(
                "the cursor names shard {unknown}, which this database does not have"
            )));
        }
        for shard in &shards {
            check_retained(shard, cursor.next(shard.id()))?;
        }
        let (out, rx) = mpsc::channel(self.config.queue_items.max(1));
        let filter = Arc::new(filter);
        let mut tasks = Vec::with_capacity(shards.len());
        for shard in &shards {
            // The ring first, then storage: nothing applied in between is missed.
            let live = self.ring(shard);
            let follower = Follower {
                shard: shard.clone(),
                next: cursor.next(shard.id()),
                filter: filter.clone(),
                out: out.clone(),
                page: self.config.page_entries.max(1),
            };
            tasks.push(tokio::spawn(follower.run(live)));
        }
        Ok(Subscription {
            rx,
            pending: Default::default(),
            cursor,
            behind: shards.iter().map(|s| s.id()).collect(),
            tasks,
            _slot: slot,
        })
    }
}

/// Fails with `position_expired` when `next` lies before the first record `shard` still holds.
fn check_retained(shard: &Shard, next: Next) -> Result<()> {
    let first = shard.first_retained()?;
    if next.lsn < first {
        return Err(Error::PositionExpired {
            shard: shard.id(),
            requested: next.lsn,
            first,
        });
    }
    Ok(())
}

/// One open subscription's place in the hub's count.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A shard's feeder: reads each applied entry once and broadcasts it; stops when no subscriber
/// listens or the shard stops.
async fn feed(shard: Arc<Shard>, ring: Ring, mut next: Lsn, page: usize) {
    let mut applied = shard.store().applied();
    loop {
        if ring.receiver_count() == 0 {
            return;
        }
        let (entries, head) = match shard.committed_entries(next, page) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(shard = %shard.id(), error = %e, "change stream feeder stopped");
                return;
            }
        };
        for entry in entries {
            next = Lsn(entry.lsn.0 + 1);
            if ring.send(SharedEntry::new(entry)).is_err() {
                return;
            }
        }
        if next.0 > head.0 {
            // Wake on the next apply, or now and then to notice that every subscriber left.
            let wait = applied.wait_for(|&a| a >= next.0);
            let woke = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
            if let Ok(Err(_)) = woke {
                return; // the shard stopped
            }
        }
    }
}

/// Removes a stopped feeder's ring from the hub, so its last sender goes and its subscribers
/// learn that the shard stopped.
struct Unregister {
    hub: std::sync::Weak<Hub>,
    shard: ShardId,
    ring: Ring,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let mut rings = hub.rings.lock().expect("rings lock");
            if rings
                .get(&self.shard)
                .is_some_and(|r| r.same_channel(&self.ring))
            {
                rings.remove(&self.shard);
            }
        }
    }
}

/// What a shard task hands to its subscription.
enum Raw {
    /// The accepted events of `entry` at these places in `entry.events` passed the filter (one
    /// queue item per entry, not per event).
    Events {
        shard: ShardId,
        entry: Arc<SharedEntry>,
        at: Vec<u32>,
    },
    /// The shard's position moved to `next` without an event passing the filter.
    Passed { shard: ShardId, next: Next },
    /// The shard task delivered everything its replica had applied when it looked.
    CaughtUp(ShardId),
    /// The shard task stopped.
    Failed(Error),
}

/// One shard's part of a subscription.
struct Follower {
    shard: Arc<Shard>,
    next: Next,
    filter: Arc<Filter>,
    out: mpsc::Sender<Raw>,
    page: usize,
}

impl Follower {
    async fn run(mut self, live: broadcast::Receiver<Arc<SharedEntry>>) {
        if let Err(e) = self.follow(live).await {
            let _ = self.out.send(Raw::Failed(e)).await;
        }
    }

    async fn follow(&mut self, mut live: broadcast::Receiver<Arc<SharedEntry>>) -> Result<()> {
        let id = self.shard.id();
        // From storage up to what the replica has applied.
        self.read_stored(None).await?;
        if self.out.send(Raw::CaughtUp(id)).await.is_err() {
            return Ok(());
        }
        loop {
            match live.recv().await {
                Ok(entry) => {
                    let lsn = entry.entry.lsn;
                    if lsn < self.next.lsn {
                        continue;
                    }
                    if lsn > self.next.lsn {
                        // Fell behind the ring (or joined it late): the gap comes from storage.
                        self.read_stored(Some(Lsn(lsn.0 - 1))).await?;
                        if self.out.is_closed() {
                            return Ok(());
                        }
                        if self.next.lsn != lsn {
                            // Never skip: the ring's entry is applied, so storage holds the gap.
                            return Err(Error::Storage(format!(
                                "shard {id}: entries {} to {} were not readable below applied \
                                 entry {}",
                                self.next.lsn.0,
                                lsn.0 - 1,
                                lsn.0
                            )));
                        }
                    }
                    if !self.deliver(entry).await {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Unavailable {
                        shard: id,
                        reason: "the shard stopped on this node; resume from the last cursor"
                            .into(),
                    });
                }
            }
        }
    }

    /// Delivers entries from storage, from `next` up to `until` (or to the applied LSN).
    async fn read_stored(&mut self, until: Option<Lsn>) -> Result<()> {
        loop {
            if until.is_some_and(|u| self.next.lsn > u) {
                return Ok(());
            }
            let (entries, applied) = self.shard.committed_entries(self.next.lsn, self.page)?;
            let expected = Lsn(self.next.lsn.0.max(1));
            if let Some(first) = entries.first()
                && first.lsn > expected
            {
                return Err(Error::PositionExpired {
                    shard: self.shard.id(),
                    requested: self.next.lsn,
                    first: first.lsn,
                });
            }
            if entries.is_empty() {
                return Ok(());
            }
            for entry in entries {
                if until.is_some_and(|u| entry.lsn > u) {
                    return Ok(());
                }
                if !self.deliver(SharedEntry::new(entry)).await {
                    return Ok(());
                }
            }
            if until.is_none() && self.next.lsn > applied {
                return Ok(());
            }
        }
    }

    /// Hands `entry`'s events at or after `next` that pass the filter to the subscription, or
    /// the position past it when none does. False when the subscription is gone.
    async fn deliver(&mut self, shared: Arc<SharedEntry>) -> bool {
        let id = self.shard.id();
        let entry = &shared.entry;
        let from = if entry.lsn == self.next.lsn {
            self.next.index
        } else {
            0
        };
        let at: Vec<u32> = entry
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.index >= from && self.filter.matches(&e.event))
            .map(|(at, _)| at as u32)
            .collect();
        self.next = Next {
            lsn: Lsn(entry.lsn.0 + 1),
            index: 0,
        };
        let raw = if at.is_empty() {
            Raw::Passed {
                shard: id,
                next: self.next,
            }
        } else {
            Raw::Events {
                shard: id,
                entry: shared.clone(),
                at,
            }
        };
        self.out.send(raw).await.is_ok()
    }
}

/// An open subscription. Dropping it stops its tasks.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Raw>,
    /// Events of a received entry not yet yielded: (shard, entry, places), next first.
    pending: std::collections::VecDeque<(ShardId, Arc<SharedEntry>, u32)>,
    cursor: Cursor,
    /// Shards not yet caught up.
    behind: BTreeSet<ShardId>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _slot: Slot,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Raw::Events { shard, entry, at } => {
                write!(f, "Events({shard}, {}, {at:?})", entry.entry.lsn)
            }
            Raw::Passed { shard, next } => write!(f, "Passed({shard}, {next:?})"),
            Raw::CaughtUp(shard) => write!(f, "CaughtUp({shard})"),
            Raw::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// One delivered event.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Its shard.
    pub shard: ShardId,
    /// Its entry's LSN.
    pub lsn: Lsn,
    /// Its entry's commit timestamp (ms since the Unix epoch, the leader's clock).
    pub ts_ms: u64,
    /// Its index in the entry.
    pub index: u32,
    /// Its revision in its stream.
    pub revision: u64,
    entry: Arc<SharedEntry>,
    at: usize,
}

impl Delivered {
    /// The event.
    pub fn event(&self) -> &Event {
        &self.entry.entry.events[self.at].event
    }

    /// The event as JSON on one line (rendered once, shared by every subscriber that got the
    /// entry from the same ring). Event data is stored exactly as sent and may hold line breaks
    /// between tokens (JSON strings cannot hold raw ones); they become spaces, so the text fits
    /// one NDJSON line or SSE `data:` field and means the same.
    pub fn event_json(&self) -> &str {
        self.entry.json[self.at].get_or_init(|| {
            let text = serde_json::to_string(self.event()).expect("events serialize");
            if text.contains(['\n', '\r']) {
                text.replace(['\n', '\r'], " ").into_boxed_str()
            } else {
                text.into_boxed_str()
            }
        })
    }
}

/// What a subscription yields next.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// An event, and the cursor just past it.
    Event(Delivered, Cursor),
    /// The position moved past entries the filter rejected.
    Progress(Cursor),
    /// Every shard has delivered what its replica had applied when the subscription looked
    /// (sent once).
    CaughtUp(Cursor),
}

impl Subscription {
    /// The cursor after everything yielded so far.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The next delivery. Errors end the subscription (a shard stopped here, a position
    /// expired, storage failed); resume from [`Subscription::cursor`].
    pub async fn next(&mut self) -> Result<Delivery> {
        if let Some(delivery) = self.pop() {
            return Ok(delivery);
        }
        let Some(raw) = self.rx.recv().await else {
            return Err(Error::Unavailable {
                shard: ShardId(0),
                reason: "the subscription stopped".into(),
            });
        };
        self.apply(raw)
    }

    /// Like [`Subscription::next`] without waiting: None when nothing is ready.
    pub fn try_next(&mut self) -> Option<Result<Delivery>> {
        if let Some(delivery) = self.pop() {
            return Some(Ok(delivery));
        }
        let raw = self.rx.try_recv().ok()?;
        Some(self.apply(raw))
    }

    /// The next event of an entry already received.
    fn pop(&mut self) -> Option<Delivery> {
        let (shard, entry, at) = self.pending.pop_front()?;
        let event = &entry.entry.events[at as usize];
        self.cursor.set(
            shard,
            Next {
                lsn: entry.entry.lsn,
                index: event.index + 1,
            },
        );
        let delivered = Delivered {
            shard,
            lsn: entry.entry.lsn,
            ts_ms: entry.entry.ts_ms,
            index: event.index,
            revision: event.revision,
            entry: entry.clone(),
            at: at as usize,
        };
        Some(Delivery::Event(delivered, self.cursor.clone()))
    }

    fn apply(&mut self, raw: Raw) -> Result<Delivery> {
        match raw {
            Raw::Events { shard, entry, at } => {
                self.pending
                    .extend(at.into_iter().map(|a| (shard, entry.clone(), a)));
                Ok(self.pop().expect("an entry with events"))
            }
            Raw::Passed { shard, next } => {
                self.cursor.set(shard, next);
                Ok(Delivery::Progress(self.cursor.clone()))
            }
            Raw::CaughtUp(shard) => {
                let was_behind = !self.behind.is_empty();
                self.behind.remove(&shard);
                if was_behind && self.behind.is_empty() {
                    Ok(Delivery::CaughtUp(self.cursor.clone()))
                } else {
                    Ok(Delivery::Progress(self.cursor.clone()))
                }
            }
            Raw::Failed(e) => Err(e),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
