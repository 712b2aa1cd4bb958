//! The process's open-file limit. Every HTTP connection, peer connection, log file and index
//! file is a file descriptor, and the common soft limit of 1024 let a thousand idle clients make
//! a node unreachable (`Too many open files`). At start the soft limit is raised to the hard
//! limit where the system allows it, and the HTTP connection cap is sized from what is left.
//!
//! Invariant: HTTP connections, those being served and those being refused, never take the
//! descriptors of [`RESERVED_MIN`]..[`RESERVED_MAX`] kept for data files, indexes, peers and etcd.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept back from HTTP connections, at least (a node with 4 shards, its views and
/// a few peers uses about 100; tantivy opens more files as segments accumulate).
pub const RESERVED_MIN: u64 = 256;
/// ... and at most: a quarter of the limit, up to this.
pub const RESERVED_MAX: u64 = 4096;
/// Connections refused at once with an answer (503 `too_many_connections`); further ones over
/// the cap are closed at once. They count against the open-file limit too.
pub const REFUSING_MAX: usize = 64;
/// The soft limit tried when the hard limit is unlimited (Linux refuses more than `nr_open`,
/// 1,048,576 by default).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The open-file limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// Soft limit before (`None`: unlimited).
    pub before: Option<u64>,
    /// Soft limit in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// Hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard limit where allowed, and logs what it did.
pub fn raise() -> OpenFileLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let mut limit = OpenFileLimit {
        before: current,
        soft: current,
        hard: maximum,
    };
    let Some(before) = current else {
        tracing::info!("open-file limit: unlimited");
        return limit;
    };
    let target = maximum.unwrap_or(UNLIMITED_TARGET);
    if target <= before {
        tracing::info!(soft = before, hard = ?maximum, "open-file limit already at its hard limit");
        return limit;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum,
        },
    ) {
        Ok(()) => {
            limit.soft = getrlimit(Resource::Nofile).current;
            tracing::info!(before, soft = ?limit.soft, "open-file limit raised to the hard limit");
        }
        Err(e) => {
            tracing::warn!(soft = before, hard = ?maximum, "cannot raise the open-file limit: {e}");
        }
    }
    limit
}

/// Descriptors of a soft limit `soft` kept back from HTTP connections.
pub fn reserved(soft: u64) -> u64 {
    (soft / 4).clamp(RESERVED_MIN, RESERVED_MAX)
}

/// The HTTP connection cap: `wanted`, lowered so that served and refused connections fit in
/// the soft limit after the reserve (at least 1, at most `u32::MAX`).
pub fn connections_cap(wanted: usize, soft: Option<u64>) -> usize {
    let fit = match soft {
        None => u64::MAX,
        Some(soft) => soft
            .saturating_sub(reserved(soft))
            .saturating_sub(REFUSING_MAX as u64),
    };
    let cap = (wanted as u64).min(fit).clamp(1, u64::from(u32::MAX));
    usize::try_from(cap).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
