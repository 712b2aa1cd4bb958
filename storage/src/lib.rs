//! Storage for ThemisDB: the disks that redb databases live on (files in production, shared
//! memory in tests and the simulator), the checksummed frame every durable record is wrapped in,
//! and the Gorilla codec of time-series blocks.
//!
//! Invariant: bytes that fail their checksum are never returned as data; the caller gets
//! [`Error::Corrupted`] naming where the bad bytes are. Later issues add object-store tiering,
//! Parquet I/O and envelope encryption here.

pub mod canary;
mod disk;
mod failstop;
mod frame;
pub mod gorilla;

pub use disk::{Disk, FileDisk, MemoryBackend, MemoryDisk, builder};
pub use failstop::FailStop;
pub use frame::{FRAME_OVERHEAD, open_frame, seal_frame};

/// Errors of the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on the named location failed.
    #[error("i/o error on {location}: {source}")]
    Io {
        /// File or database the operation touched.
        location: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// redb refused to open or create a database.
    #[error("cannot open database {location}: {source}")]
    Database {
        /// File or database name.
        location: String,
        /// The underlying redb error.
        source: Box<redb::DatabaseError>,
    },
    /// Stored bytes failed validation.
    #[error("corrupted data: {0}")]
    Corrupted(String),
}

/// Result alias of the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
