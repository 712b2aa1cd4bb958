//! The determinism seams of DESIGN.md §8: every read of time, every random draw, every thread,
//! every network call between nodes and every metadata operation goes through one of these, so
//! the simulator can run the same node code on a virtual clock, seeded randomness, a simulated
//! network and a simulated metadata store.
//!
//! Invariant: this is the only module of the log crate allowed to touch `Instant::now`,
//! `SystemTime::now`, OS randomness or `std::thread::spawn` (enforced by `clippy.toml`).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rand::{RngCore, SeedableRng, rngs::StdRng};

/// Time as the node sees it.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Monotonic time since an arbitrary origin; never decreases.
    fn monotonic(&self) -> Duration;
    /// Wall-clock time in milliseconds since the Unix epoch; may jump (the simulator makes it).
    fn wall_ms(&self) -> u64;
}

/// The operating system's clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests and the simulator.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<Mutex<(Duration, u64)>>,
}

impl ManualClock {
    /// A clock at monotonic zero and the given wall time.
    pub fn new(wall_ms: u64) -> Self {
        Self {
            now: Arc::new(Mutex::new((Duration::ZERO, wall_ms))),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        now.0 += by;
        now.1 += by.as_millis() as u64;
    }

    /// Sets the wall clock (which may jump backwards) without touching monotonic time.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.now.lock().expect("clock lock").1 = wall_ms;
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        self.now.lock().expect("clock lock").0
    }

    fn wall_ms(&self) -> u64 {
        self.now.lock().expect("clock lock").1
    }
}

/// Randomness as the node sees it: named, independently seeded streams.
pub trait Entropy: Debug + Send + Sync + 'static {
    /// A generator for the component `label`. Production seeds it from the OS; the simulator
    /// derives it from the run's seed and the label, so adding a stream never shifts another.
    fn stream(&self, label: &str) -> StdRng;
}

/// Randomness seeded by the operating system.
#[derive(Debug, Clone, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn stream(&self, _label: &str) -> StdRng {
        StdRng::from_entropy()
    }
}

/// Randomness derived from one seed: same seed and label, same numbers.
#[derive(Debug, Clone)]
pub struct SeededEntropy {
    seed: u64,
}

impl SeededEntropy {
    /// Streams derived from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl Entropy for SeededEntropy {
    fn stream(&self, label: &str) -> StdRng {
        let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(label.as_bytes(), self.seed);
        StdRng::seed_from_u64(mixed)
    }
}

/// The seed of the randomness openraft draws (election timeouts); see [`seed_raft_rng`].
static RAFT_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static RAFT_RNG: std::cell::RefCell<Option<StdRng>> = const { std::cell::RefCell::new(None) };
}

/// Seeds the randomness openraft draws on every thread from now on: production seeds it from
/// [`Entropy`] once at start-up, the simulator from its run seed (it runs on one thread, so the
/// draws are then a function of the seed).
pub fn seed_raft_rng(entropy: &dyn Entropy) {
    let seed = entropy.stream("raft-election").next_u64();
    RAFT_SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
    // This thread starts from the seed at once; other threads when they first draw.
    RAFT_RNG.with(|r| *r.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// A generator for one openraft draw: a stream per thread, derived from the seed set by
/// [`seed_raft_rng`] and a per-thread counter of seeds handed out.
pub fn raft_rng() -> StdRng {
    RAFT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        let rng = r.get_or_insert_with(|| {
            let seed = RAFT_SEED.load(std::sync::atomic::Ordering::Relaxed);
            StdRng::seed_from_u64(seed)
        });
        StdRng::seed_from_u64(rng.next_u64())
    })
}

/// Draws a random (version 4) UUID from `rng`.
pub fn random_uuid(rng: &mut impl RngCore) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Starts a named OS thread. Threads are a seam: the simulator runs the same work inline.
pub fn spawn_thread<F>(name: String, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(f)
}

/// Runs blocking work (a large read of a view, say) on tokio's blocking threads, off the async
/// workers. Threads are a seam: nothing the simulator runs calls this.
#[allow(clippy::disallowed_methods)]
pub async fn run_blocking<F, T>(f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await
}

/// Runs `f` on every item of `items` on scoped OS threads, at most `threads` at once (the
/// calling thread among them), and answers in item order: for CPU-bound work that splits by
/// shard, such as building a table whole. Threads are a seam: nothing the simulator runs
/// calls this.
pub fn map_scoped<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A panic in `f` is a bug; carry it to the caller as a panic would be.
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// A node in the cluster, as the transport addresses it.
pub type NodeId = u64;

/// Why a call between nodes failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The target could not be reached (connection refused, partition, no route).
    #[error("node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The deadline passed before an answer arrived; the call may or may not have taken effect.
    #[error("call to node {0} timed out after {1:?}")]
    Timeout(NodeId, Duration),
}

/// Byte-level request/response calls between nodes. Production speaks TCP between `themis`
/// processes (the cluster issue); the simulator delivers messages through its simulated network.
#[async_trait]
pub trait Transport: Debug + Send + Sync + 'static {
    /// Sends `request` to node `to` on `channel` (for example `raft/3` for shard 3's Raft
    /// group) and waits at most `deadline` for the answer.
    async fn call(
        &self,
        to: NodeId,
        channel: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError>;
}

/// The transport of a node that has no peers: every call fails as unreachable. A single node
/// never calls it, because it is the only voter of every shard.
#[derive(Debug, Clone, Default)]
pub struct NoPeers;

#[async_trait]
impl Transport for NoPeers {
    async fn call(
        &self,
        to: NodeId,
        _channel: &str,
        _request: Bytes,
        _deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        Err(TransportError::Unreachable(
            to,
            "this node runs without peers".into(),
        ))
    }
}

/// Why a metadata operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    /// The store could not be reached or answered with an error.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The lease lapsed (or never existed): keys written under it are gone.
    #[error("metadata lease {0} expired")]
    LeaseExpired(LeaseId),
}

/// A lease of the metadata store: keys written under it vanish when it is not renewed in time.
pub type LeaseId = i64;

/// A key's value and the store-wide revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaValue {
    /// The stored bytes.
    pub value: Bytes,
    /// Revision of the last write to this key.
    pub mod_revision: i64,
}

/// Cluster metadata (nodes, shard map, placement, namespace registry): etcd in cluster mode,
/// [`MemoryMetaStore`] on a single node and in tests, a simulated store in the simulator.
#[async_trait]
pub trait MetaStore: Debug + Send + Sync + 'static {
    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<MetaValue>, MetaError>;
    /// All keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, MetaValue)>, MetaError>;
    /// Writes `value` if the key's current mod revision is `expected` (0 = absent). Returns the
    /// new revision, or `None` when the comparison failed.
    async fn compare_and_put(
        &self,
        key: &str,
        expected: i64,
        value: Bytes,
    ) -> Result<Option<i64>, MetaError>;
    /// Writes `value` unconditionally, attached to `lease` when given; returns the new revision.
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<i64, MetaError>;
    /// Grants a lease that lapses `ttl` after its last renewal.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, MetaError>;
    /// Renews `lease`; [`MetaError::LeaseExpired`] when it has already lapsed.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError>;
    /// Watches the keys under `prefix`: the watch wakes after each change made after it was
    /// created (changes by lease expiry may go unreported by stores that expire lazily).
    async fn watch(&self, prefix: &str) -> Result<Box<dyn MetaWatch>, MetaError>;
}

/// A watch on a key prefix of a [`MetaStore`].
#[async_trait]
pub trait MetaWatch: Send {
    /// Waits until a key under the prefix changed since the last call (or since creation).
    async fn changed(&mut self) -> Result<(), MetaError>;
}

#[derive(Debug, Default)]
struct MemoryMeta {
    revision: i64,
    /// Woken with the key of every write.
    writes: Option<tokio::sync::broadcast::Sender<String>>,
    keys: BTreeMap<String, (MetaValue, Option<LeaseId>)>,
    /// Lease → (time to live, monotonic deadline).
    leases: BTreeMap<LeaseId, (Duration, Duration)>,
    next_lease: LeaseId,
}

/// An in-memory metadata store with etcd's revision and lease semantics. Leases lapse by the
/// given [`Clock`] (never, without one).
#[derive(Debug, Clone, Default)]
pub struct MemoryMetaStore {
    state: Arc<Mutex<MemoryMeta>>,
    clock: Option<Arc<dyn Clock>>,
}

impl MemoryMetaStore {
    /// An empty store at revision 0 whose leases never lapse.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose leases lapse by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock: Some(clock),
        }
    }

    /// Locks the state after dropping lapsed leases and their keys.
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryMeta> {
        let mut state = self.state.lock().expect("meta lock");
        if let Some(clock) = &self.clock {
            let now = clock.monotonic();
            let lapsed: Vec<LeaseId> = state
                .leases
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            if !lapsed.is_empty() {
                state.leases.retain(|id, _| !lapsed.contains(id));
                let before = state.keys.len();
                state
                    .keys
                    .retain(|_, (_, lease)| lease.is_none_or(|l| !lapsed.contains(&l)));
                if state.keys.len() != before {
                    state.revision += 1;
                }
            }
        }
        state
    }

    fn now(&self) -> Duration {
        self.clock
            .as_ref()
            .map_or(Duration::ZERO, |c| c.monotonic())
    }
}

impl MemoryMeta {
    fn write(&mut self, key: &str, value: Bytes, lease: Option<LeaseId>) -> i64 {
        if let Some(writes) = &self.writes {
            let _ = writes.send(key.to_owned());
        }
        self.revision += 1;
        let mod_revision = self.revision;
        self.keys.insert(
            key.to_owned(),
            (
                MetaValue {
                    value,
                    mod_revision,
                },
                lease,
            ),
        );
        mod_revision
    }
}

#[async_trait]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &str) -> Result<Option<MetaValue>, MetaError> {
        Ok(self.state().keys.get(key).map(|(v, _)| v.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, MetaValue)>, MetaError> {
        let state = self.state();
        Ok(state
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    async fn compare_and_put(
        &self,
        key: &str,
        expected: i64,
        value: Bytes,
    ) -> Result<Option<i64>, MetaError> {
        let mut state = self.state();
        let current = state.keys.get(key).map_or(0, |(v, _)| v.mod_revision);
        if current != expected {
            return Ok(None);
        }
        Ok(Some(state.write(key, value, None)))
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<i64, MetaError> {
        let mut state = self.state();
        if let Some(lease) = lease
            && !state.leases.contains_key(&lease)
        {
            return Err(MetaError::LeaseExpired(lease));
        }
        Ok(state.write(key, value, lease))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, MetaError> {
        let now = self.now();
        let mut state = self.state();
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(id, (ttl, now + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), MetaError> {
        let now = self.now();
        let mut state = self.state();
        match state.leases.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = now + *ttl;
                Ok(())
            }
            None => Err(MetaError::LeaseExpired(lease)),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<Box<dyn MetaWatch>, MetaError> {
        let mut state = self.state();
        let writes = state
            .writes
            .get_or_insert_with(|| tokio::sync::broadcast::channel(1024).0);
        Ok(Box::new(MemoryWatch {
            prefix: prefix.to_owned(),
            writes: writes.subscribe(),
        }))
    }
}

struct MemoryWatch {
    prefix: String,
    writes: tokio::sync::broadcast::Receiver<String>,
}

#[async_trait]
impl MetaWatch for MemoryWatch {
    async fn changed(&mut self) -> Result<(), MetaError> {
        loop {
            match self.writes.recv().await {
                Ok(key) if key.starts_with(&self.prefix) => return Ok(()),
                Ok(_) => {}
                // Missed writes may have touched the prefix.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(MetaError::Unavailable("the store was dropped".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
