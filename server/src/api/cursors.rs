//! AQL cursors: the rest of answers that did not fit in one batch, kept in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use super::problem::Problem;
use super::wire;

/// The rest of AQL answers that did not fit in one batch, by cursor id. A cursor lives
/// [`Cursors::TTL`] after its last use; at most [`Cursors::OPEN_MAX`] are open and they hold at
/// most [`Cursors::ROWS_HELD_MAX`] rows together (the least recently used goes first).
pub struct Cursors {
    open: std::sync::Mutex<BTreeMap<String, Cursor>>,
    entropy: Arc<dyn themis_log::seam::Entropy>,
    /// Cursors opened: each draws its id from a stream of its own (a seeded entropy gives
    /// the same numbers for the same label).
    opened: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursors").finish_non_exhaustive()
    }
}

struct Cursor {
    rows: VecDeque<serde_json::Value>,
    count: usize,
    batch: usize,
    token: String,
    used_ms: u64,
}

impl Cursors {
    /// How long an unused cursor stays.
    pub const TTL: Duration = Duration::from_secs(300);
    /// Most open cursors.
    pub const OPEN_MAX: usize = 1024;
    /// Most rows all open cursors hold together (an answer has at most the query engine's
    /// `rows_max`, 1,000,000 by default, so the newest cursor always fits).
    pub const ROWS_HELD_MAX: usize = 4_000_000;

    /// No cursors; ids drawn from `entropy`.
    pub fn new(entropy: Arc<dyn themis_log::seam::Entropy>) -> Self {
        Self {
            open: Default::default(),
            entropy,
            opened: Default::default(),
        }
    }

    /// Drops expired cursors, then the least recently used ones until `cursors` more cursors
    /// holding `rows` more rows fit.
    fn expire(open: &mut BTreeMap<String, Cursor>, now_ms: u64, cursors: usize, rows: usize) {
        let ttl = Self::TTL.as_millis() as u64;
        open.retain(|_, c| now_ms.saturating_sub(c.used_ms) < ttl);
        let mut held: usize = open.values().map(|c| c.rows.len()).sum();
        while !open.is_empty()
            && (open.len() + cursors > Self::OPEN_MAX || held + rows > Self::ROWS_HELD_MAX)
        {
            let oldest = open
                .iter()
                .min_by_key(|(_, c)| c.used_ms)
                .map(|(id, _)| id.clone());
            match oldest.and_then(|id| open.remove(&id)) {
                Some(c) => held -= c.rows.len(),
                None => break,
            }
        }
    }

    /// The first batch of `rows`, keeping the rest under a new cursor.
    pub(super) fn start(
        &self,
        mut rows: Vec<serde_json::Value>,
        batch: usize,
        token: String,
        now_ms: u64,
    ) -> wire::AqlAnswerBody {
        let count = rows.len();
        if count <= batch {
            return wire::AqlAnswerBody {
                result: rows,
                count,
                has_more: false,
                cursor: None,
                token,
            };
        }
        let rest: VecDeque<_> = rows.split_off(batch).into();
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id =
            themis_log::seam::random_uuid(&mut self.entropy.stream(&format!("aql-cursor-{n}")))
                .simple()
                .to_string();
        let mut open = self.open.lock().expect("cursors lock");
        Self::expire(&mut open, now_ms, 1, rest.len());
        open.insert(
            id.clone(),
            Cursor {
                rows: rest,
                count,
                batch,
                token: token.clone(),
                used_ms: now_ms,
            },
        );
        wire::AqlAnswerBody {
            result: rows,
            count,
            has_more: true,
            cursor: Some(id),
            token,
        }
    }

    /// The next batch of cursor `id`.
    pub(super) fn next(&self, id: &str, now_ms: u64) -> Result<wire::AqlAnswerBody, Problem> {
        let mut open = self.open.lock().expect("cursors lock");
        Self::expire(&mut open, now_ms, 0, 0);
        let Some(c) = open.get_mut(id) else {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "cursor_not_found",
                format!(
                    "no open cursor {id:?} (cursors close after their last batch or {} s unused)",
                    Self::TTL.as_secs()
                ),
            ));
        };
        c.used_ms = now_ms;
        let take = c.batch.min(c.rows.len());
        let result: Vec<_> = c.rows.drain(..take).collect();
        let has_more = !c.rows.is_empty();
        let body = wire::AqlAnswerBody {
            result,
            count: c.count,
            has_more,
            cursor: has_more.then(|| id.to_owned()),
            token: c.token.clone(),
        };
        if !has_more {
            open.remove(id);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests;
