//! Fail-stop storage: after a write, resize or fsync of a database file fails once, every later
//! one fails too, until the database is opened again.
//!
//! Why: after a failed fsync the kernel may already have dropped the dirty pages it could not
//! write (and marked them clean), so a second fsync can succeed while the data is gone
//! ("fsyncgate"; Rebello et al., USENIX ATC '20). The only safe reaction is to stop and recover
//! from what is durable. redb already refuses to commit after an I/O error; this wrapper makes
//! the rule ours and testable, whatever the backend.

use std::ops::Bound;
use std::sync::Mutex;

use redb::{BackendError, StorageBackend};

use crate::canary::{self, Canary};

/// A backend that stops at its first write-path error.
#[derive(Debug)]
pub struct FailStop<B> {
    inner: B,
    failed: Mutex<Option<String>>,
}

impl<B: StorageBackend> FailStop<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            failed: Mutex::new(None),
        }
    }

    fn check(&self) -> std::io::Result<()> {
        match &*self.failed.lock().expect("fail-stop lock") {
            Some(first) => Err(std::io::Error::other(format!(
                "an earlier write or fsync of this database failed ({first}); nothing more is \
                 written until the database is opened again"
            ))),
            None => Ok(()),
        }
    }

    fn latch<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            let mut failed = self.failed.lock().expect("fail-stop lock");
            failed.get_or_insert_with(|| e.to_string());
        }
        result
    }
}

impl<B: StorageBackend> StorageBackend for FailStop<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.latch(self.inner.set_len(len))
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        let result = self.inner.sync_data();
        if result.is_err() && canary::active(Canary::FsyncRetry) {
            // The canary: retry and believe the retry.
            return self.inner.sync_data();
        }
        self.latch(result)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.latch(self.inner.write(offset, data))
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
