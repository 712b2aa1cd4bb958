//! A simulated disk that keeps synced and unsynced bytes apart, so a node can lose power.
//!
//! Every database file has the bytes reads see (`current`), the bytes that survive a power
//! loss for certain (`durable`, as of the last successful fsync) and the writes and resizes
//! since then (`pending`). A crash keeps each 512-byte sector of each pending write, or loses
//! it, by a seeded draw (torn writes at sector granularity: a sector is written whole or not at
//! all, as redb assumes), then makes that the file. An injected fsync failure returns an error
//! and forgets the pending writes for durability while reads still see them, as Linux does
//! after a failed writeback ("fsyncgate"): only a node that stops at the error stays correct.
//!
//! A crash can also be armed to strike inside the next k writes and fsyncs, so it lands in the
//! middle of a commit rather than between two.
//!
//! Invariant: a database handle opened before a crash fails every later call, so nothing a
//! dead node still does reaches the disk its next incarnation opens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Database, StorageBackend};
use themis_storage::{Disk, FailStop, builder};

/// Sector size of tearing.
pub const SECTOR: usize = 512;

/// A change since the last sync. A write is kept as its range: at a sync or a crash its bytes
/// are taken from `current`, which holds the latest bytes of every sector (so a sector written
/// twice is either lost or has its last content, as on a real disk).
#[derive(Debug)]
enum Op {
    Write(usize, usize),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
}

/// What happened to a disk, for the run's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Successful fsyncs.
    pub syncs: u64,
    /// Injected fsync failures.
    pub failed_syncs: u64,
    /// Power losses.
    pub crashes: u64,
    /// Pending sectors a crash kept.
    pub sectors_kept: u64,
    /// Pending sectors a crash lost.
    pub sectors_lost: u64,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<String, File>,
    generation: u64,
    rng: StdRng,
    fsync_failure: f64,
    stats: DiskStats,
    /// Writes and fsyncs left before an armed crash (0: none armed).
    crash_in: u64,
    armed_crash_happened: bool,
    /// Powered off since the last crash and not opened since (a second crash is no event).
    off: bool,
}

/// One node's simulated disk; clones share it.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk whose crashes and fsync failures are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                files: BTreeMap::new(),
                generation: 0,
                rng: StdRng::seed_from_u64(seed),
                fsync_failure: 0.0,
                stats: DiskStats::default(),
                crash_in: 0,
                armed_crash_happened: false,
                off: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock")
    }

    /// Sets the probability that an fsync fails.
    pub fn set_fsync_failure(&self, p: f64) {
        self.lock().fsync_failure = p.clamp(0.0, 1.0);
    }

    /// Loses power: every database handle open now dies, and each pending sector survives or
    /// not by a seeded draw.
    pub fn crash(&self) {
        let mut s = self.lock();
        if !s.off {
            lose_power(&mut s);
        }
    }

    /// Arms a crash inside the next `ops` writes and fsyncs (0: disarms): the disk loses power
    /// just before that call, possibly in the middle of a commit, and every handle dies. The
    /// node then has to be crashed and restarted like after [`crash`](Self::crash).
    pub fn arm_crash(&self, ops: u64) {
        let mut s = self.lock();
        s.crash_in = ops;
        s.armed_crash_happened = false;
    }

    /// Whether an armed crash has happened since the last [`arm_crash`](Self::arm_crash).
    pub fn crashed_by_arm(&self) -> bool {
        self.lock().armed_crash_happened
    }

    /// What happened so far.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }
}

/// Makes a seeded part of `file`'s pending changes durable, in order: each resize survives or
/// not; each 512-byte sector of each write survives or not, and one that lies past the
/// surviving length is cut off (a file's size only ever takes one of the sizes it was given).
fn tear(file: &mut File, rng: &mut StdRng, stats: &mut DiskStats) {
    let mut len = file.durable.len();
    for op in std::mem::take(&mut file.pending) {
        match op {
            Op::SetLen(l) => {
                if rng.gen_bool(0.5) {
                    len = l as usize;
                    file.durable.resize(len, 0);
                }
            }
            Op::Write(start, end) => {
                let mut at = start;
                while at < end {
                    let next = ((at / SECTOR + 1) * SECTOR).min(end);
                    let keep = rng.gen_bool(0.5);
                    // The range may lie past a later shrink of the file, or past its durable
                    // length.
                    let bytes = file.current.get(at..next).filter(|_| next <= len);
                    match bytes {
                        Some(bytes) if keep => {
                            file.durable[at..next].copy_from_slice(bytes);
                            stats.sectors_kept += 1;
                        }
                        _ => stats.sectors_lost += 1,
                    }
                    at = next;
                }
            }
        }
    }
}

/// Power loss: every file keeps its durable bytes and a torn part of the rest; every handle
/// dies.
fn lose_power(s: &mut State) {
    let State {
        files, rng, stats, ..
    } = s;
    for file in files.values_mut() {
        tear(file, rng, stats);
        file.current = file.durable.clone();
    }
    s.generation += 1;
    s.stats.crashes += 1;
    s.off = true;
}

impl Disk for SimDisk {
    fn open_database(&self, name: &str) -> themis_storage::Result<Database> {
        let generation = {
            let mut s = self.lock();
            s.files.entry(name.to_owned()).or_default();
            s.off = false;
            s.generation
        };
        let backend = Backend {
            disk: self.clone(),
            name: name.to_owned(),
            generation,
        };
        builder()
            .create_with_backend(FailStop::new(backend))
            .map_err(|source| themis_storage::Error::Database {
                location: self.describe(name),
                source: Box::new(source),
            })
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

/// One database file of one incarnation of a node.
#[derive(Debug)]
struct Backend {
    disk: SimDisk,
    name: String,
    generation: u64,
}

fn io_error(message: &str) -> std::io::Error {
    std::io::Error::other(message.to_owned())
}

impl Backend {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut State, &str) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut s = self.disk.lock();
        if s.generation != self.generation {
            return Err(io_error("the node lost power: this handle is dead"));
        }
        f(&mut s, &self.name)
    }

    /// Like `with`, for a write, a resize or an fsync: an armed crash may strike first.
    fn with_io<T>(
        &self,
        f: impl FnOnce(&mut State, &str) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        self.with(|s, name| {
            if s.crash_in > 0 {
                s.crash_in -= 1;
                if s.crash_in == 0 {
                    s.armed_crash_happened = true;
                    lose_power(s);
                    return Err(io_error("the node lost power during this call"));
                }
            }
            f(s, name)
        })
    }
}

fn file<'a>(s: &'a mut State, name: &str) -> &'a mut File {
    s.files.get_mut(name).expect("opened files exist")
}

impl StorageBackend for Backend {
    fn len(&self) -> std::io::Result<u64> {
        self.with(|s, name| Ok(file(s, name).current.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.with(|s, name| {
            let start = offset as usize;
            let bytes = file(s, name)
                .current
                .get(start..start + out.len())
                .ok_or_else(|| io_error("read past the end"))?;
            out.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.with_io(|s, name| {
            let f = file(s, name);
            f.current.resize(len as usize, 0);
            f.pending.push(Op::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.with_io(|s, name| {
            let fail = s.fsync_failure > 0.0 && {
                let p = s.fsync_failure;
                s.rng.gen_bool(p)
            };
            if fail {
                s.stats.failed_syncs += 1;
                // Part of the writeback may have reached the disk; the rest is lost for
                // durability but stays visible (fsyncgate).
                let State {
                    files, rng, stats, ..
                } = s;
                let f = files.get_mut(name).expect("opened files exist");
                tear(f, rng, stats);
                return Err(std::io::Error::from_raw_os_error(5));
            }
            s.stats.syncs += 1;
            let f = file(s, name);
            for op in std::mem::take(&mut f.pending) {
                match op {
                    Op::SetLen(len) => f.durable.resize(len as usize, 0),
                    Op::Write(start, end) => {
                        let end = end.min(f.current.len());
                        if start < end {
                            if f.durable.len() < end {
                                f.durable.resize(end, 0);
                            }
                            f.durable[start..end].copy_from_slice(&f.current[start..end]);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.with_io(|s, name| {
            let f = file(s, name);
            let start = offset as usize;
            let target = f
                .current
                .get_mut(start..start + data.len())
                .ok_or_else(|| io_error("write past the end"))?;
            target.copy_from_slice(data);
            f.pending.push(Op::Write(start, start + data.len()));
            Ok(())
        })
    }
}
