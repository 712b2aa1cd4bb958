//! Disks: where a node's redb databases live. `FileDisk` keeps one file per database in a data
//! directory; `MemoryDisk` keeps the bytes in memory and, unlike redb's own in-memory backend,
//! lets a database be closed and opened again, which tests and the simulator use to model
//! restarts.
//!
//! Invariant: every database is opened with redb's integrity check on, so a file altered since
//! redb last wrote it fails to open with an error naming it instead of being trusted.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use redb::{Database, StorageBackend};

type BackendIoError = std::io::Error;

use crate::{Error, Result};

/// A place that holds named redb databases. Production uses [`FileDisk`]; the simulator adds its
/// own implementation that separates synced from unsynced bytes.
pub trait Disk: Debug + Send + Sync + 'static {
    /// Opens database `name`, creating it empty when absent. Implementations open through
    /// [`builder`] so the integrity check is always on, and wrap their backend in
    /// [`FailStop`](crate::FailStop) so a failed fsync is never retried.
    fn open_database(&self, name: &str) -> Result<Database>;
    /// How `name` is described in errors (a file path for files).
    fn describe(&self, name: &str) -> String;
}

/// The redb builder every disk opens databases with: the checksum of every page is verified on
/// open, not only after a crash.
pub fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_check_integrity_on_open(true);
    builder
}

fn database_error(location: String) -> impl FnOnce(redb::DatabaseError) -> Error {
    move |source| Error::Database {
        location,
        source: Box::new(source),
    }
}

/// Databases as files `<dir>/<name>.redb`.
#[derive(Debug, Clone)]
pub struct FileDisk {
    dir: PathBuf,
}

impl FileDisk {
    /// A disk rooted at `dir`, which is created when missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            location: dir.display().to_string(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.redb"))
    }
}

impl Disk for FileDisk {
    fn open_database(&self, name: &str) -> Result<Database> {
        let path = self.path(name);
        let location = path.display().to_string();
        // What `redb::Builder::create` does, with the backend wrapped.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Io {
                location: location.clone(),
                source,
            })?;
        let backend =
            redb::backends::FileBackend::new(file).map_err(database_error(location.clone()))?;
        builder()
            .create_with_backend(crate::FailStop::new(backend))
            .map_err(database_error(location))
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Databases held in memory; a database keeps its bytes after it is closed, so it can be opened
/// again as after a clean restart.
///
/// Like a file, which redb locks, a database is open at most once: opening it again waits until
/// the earlier instance has released its bytes (every transaction of it dropped), and fails
/// with redb's `DatabaseAlreadyOpen` after [`MemoryDisk::OPEN_WAIT`]. Two instances writing the
/// same bytes would corrupt them (and make redb panic at close).
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    files: Arc<Mutex<BTreeMap<String, MemoryFile>>>,
}

/// A database's bytes and whether an instance holds them.
#[derive(Debug, Clone, Default)]
struct MemoryFile {
    backend: MemoryBackend,
    lease: Arc<Lease>,
}

#[derive(Debug, Default)]
struct Lease {
    held: Mutex<bool>,
    released: Condvar,
}

impl Lease {
    /// Takes the lease, waiting at most `wait` for the holder to release it.
    fn take(self: &Arc<Self>, wait: Duration) -> Option<LeaseGuard> {
        let held = self.held.lock().expect("memory disk lease");
        let (mut held, _) = self
            .released
            .wait_timeout_while(held, wait, |held| *held)
            .expect("memory disk lease");
        if *held {
            return None;
        }
        *held = true;
        Some(LeaseGuard(self.clone()))
    }
}

/// Releases the lease when redb drops the backend, i.e. when the database is closed.
#[derive(Debug)]
struct LeaseGuard(Arc<Lease>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Never panics in a destructor: a poisoned lock still gets its flag cleared.
        let mut held = self.0.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = false;
        self.0.released.notify_all();
    }
}

/// The backend redb gets: the bytes, holding the lease until redb drops it.
#[derive(Debug)]
struct LeasedBackend {
    backend: MemoryBackend,
    _lease: LeaseGuard,
}

impl StorageBackend for LeasedBackend {
    fn len(&self) -> std::result::Result<u64, BackendIoError> {
        self.backend.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), BackendIoError> {
        self.backend.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), BackendIoError> {
        self.backend.set_len(len)
    }

    fn sync_data(&self) -> std::result::Result<(), BackendIoError> {
        self.backend.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), BackendIoError> {
        self.backend.write(offset, data)
    }
}

impl MemoryDisk {
    /// How long opening a database waits for an earlier instance of it to close.
    pub const OPEN_WAIT: Duration = Duration::from_secs(60);

    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of database `name`, if it exists: tests use this to corrupt data on purpose.
    pub fn file(&self, name: &str) -> Option<MemoryBackend> {
        self.files
            .lock()
            .expect("memory disk lock")
            .get(name)
            .map(|file| file.backend.clone())
    }
}

impl Disk for MemoryDisk {
    fn open_database(&self, name: &str) -> Result<Database> {
        let file = self
            .files
            .lock()
            .expect("memory disk lock")
            .entry(name.to_owned())
            .or_default()
            .clone();
        let Some(lease) = file.lease.take(Self::OPEN_WAIT) else {
            return Err(database_error(self.describe(name))(
                redb::DatabaseError::DatabaseAlreadyOpen,
            ));
        };
        let backend = LeasedBackend {
            backend: file.backend,
            _lease: lease,
        };
        builder()
            .create_with_backend(crate::FailStop::new(backend))
            .map_err(database_error(self.describe(name)))
    }

    fn describe(&self, name: &str) -> String {
        format!("memory:{name}")
    }
}

/// One in-memory database file; clones share the bytes.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    bytes: Arc<RwLock<Vec<u8>>>,
}

impl MemoryBackend {
    /// Applies `f` to the raw bytes (used by tests that corrupt a database on purpose).
    pub fn with_bytes<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        f(&mut self.bytes.write().expect("memory backend lock"))
    }

    fn out_of_range() -> BackendIoError {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "read or write past the end",
        )
    }
}

impl StorageBackend for MemoryBackend {
    fn len(&self) -> std::result::Result<u64, BackendIoError> {
        Ok(self.bytes.read().expect("memory backend lock").len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), BackendIoError> {
        let bytes = self.bytes.read().expect("memory backend lock");
        let start = usize::try_from(offset).map_err(|_| Self::out_of_range())?;
        let source = bytes
            .get(start..start + out.len())
            .ok_or_else(Self::out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), BackendIoError> {
        let len = usize::try_from(len).map_err(|_| Self::out_of_range())?;
        self.bytes
            .write()
            .expect("memory backend lock")
            .resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::result::Result<(), BackendIoError> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), BackendIoError> {
        let mut bytes = self.bytes.write().expect("memory backend lock");
        let start = usize::try_from(offset).map_err(|_| Self::out_of_range())?;
        let target = bytes
            .get_mut(start..start + data.len())
            .ok_or_else(Self::out_of_range)?;
        target.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
