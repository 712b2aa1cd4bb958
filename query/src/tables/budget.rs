//! The memory budget of decoded block columns (`docs/design/columnar.md`, "Memory budget").
//!
//! A chunk taken from a view's block decodes a column when a query first reads it and keeps
//! it for the next queries. The columns kept that way are evictable: the block's compressed
//! bytes stay with the chunk, so an evicted column decodes again when a query reads it next.
//! The process holds at most [`set_decoded_bytes`] of them; past it, the CLOCK algorithm picks
//! which go: every read of a column marks it used, and the sweep spares a used column once
//! (clearing the mark) and evicts an unused one. Columns a query is reading stay in memory
//! until it ends (it holds them), so the budget bounds what is kept between queries, not what
//! one query holds. Columns built from JSON rows (the tails' deltas, document tables) are not
//! evictable and not counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use datafusion::arrow::array::{Array, ArrayRef};

/// The default budget: 1 GiB of decoded columns.
pub const DECODED_BYTES_DEFAULT: usize = 1 << 30;

/// One column of a chunk: decoded (and counted in the budget) or not.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    array: Mutex<Option<ArrayRef>>,
    /// Read since the sweep last passed it.
    used: AtomicBool,
}

impl Slot {
    /// A column that is never evicted.
    pub(crate) fn pinned(array: ArrayRef) -> Arc<Slot> {
        Arc::new(Slot {
            array: Mutex::new(Some(array)),
            used: AtomicBool::new(true),
        })
    }

    /// The column, when decoded.
    pub(crate) fn get(&self) -> Option<ArrayRef> {
        let a = self.array.lock().expect("column slot lock").clone();
        if a.is_some() {
            self.used.store(true, Ordering::Relaxed);
        }
        a
    }

    /// Whether it is decoded.
    #[cfg(test)]
    pub(crate) fn is_set(&self) -> bool {
        self.array.lock().expect("column slot lock").is_some()
    }

    /// Keeps `array` as the decoded column, counted in the budget (unless another query set
    /// it meanwhile: the same values). Returns the column kept.
    pub(crate) fn admit(self: &Arc<Slot>, array: ArrayRef) -> ArrayRef {
        let bytes = array.get_array_memory_size();
        {
            let mut held = self.array.lock().expect("column slot lock");
            if let Some(a) = &*held {
                return a.clone();
            }
            *held = Some(array.clone());
        }
        self.used.store(true, Ordering::Relaxed);
        ADMITTED.0.fetch_add(1, Ordering::Relaxed);
        ADMITTED.1.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut b = budget().lock().expect("column budget lock");
        b.entries.push_back(Entry {
            slot: Arc::downgrade(self),
            bytes,
        });
        b.bytes += bytes;
        b.sweep();
        array
    }
}

/// Columns decoded and kept since the process started, and their bytes.
static ADMITTED: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// How many columns were decoded from blocks and kept since the process started, and their
/// bytes: a query that finds its columns kept adds nothing.
pub fn decoded_total() -> (u64, u64) {
    (
        ADMITTED.0.load(Ordering::Relaxed),
        ADMITTED.1.load(Ordering::Relaxed),
    )
}

struct Entry {
    slot: Weak<Slot>,
    bytes: usize,
}

struct Budget {
    /// The clock: the sweep takes from the front and puts spared columns at the back.
    entries: VecDeque<Entry>,
    bytes: usize,
    limit: usize,
}

impl Budget {
    /// Evicts until the columns kept fit the limit. Never holds a slot's lock but to take its
    /// column, and no slot lock is held by whoever calls this.
    fn sweep(&mut self) {
        // Two turns of the clock at most: the first clears every mark it spares.
        let mut turns = 2 * self.entries.len();
        while self.bytes > self.limit && turns > 0 {
            turns -= 1;
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            let Some(slot) = e.slot.upgrade() else {
                // Its chunk is gone, and the column with it.
                self.bytes -= e.bytes;
                continue;
            };
            if slot.used.swap(false, Ordering::Relaxed) {
                self.entries.push_back(e);
                continue;
            }
            slot.array.lock().expect("column slot lock").take();
            self.bytes -= e.bytes;
        }
    }
}

fn budget() -> &'static Mutex<Budget> {
    static BUDGET: OnceLock<Mutex<Budget>> = OnceLock::new();
    BUDGET.get_or_init(|| {
        Mutex::new(Budget {
            entries: VecDeque::new(),
            bytes: 0,
            limit: DECODED_BYTES_DEFAULT,
        })
    })
}

/// Sets the process's budget of decoded block columns kept between queries, in bytes.
pub fn set_decoded_bytes(limit: usize) {
    let mut b = budget().lock().expect("column budget lock");
    b.limit = limit;
    b.sweep();
}

/// The budget set.
pub fn decoded_limit() -> usize {
    budget().lock().expect("column budget lock").limit
}

/// Bytes of decoded block columns counted now (columns of chunks dropped since the last sweep
/// included).
pub fn decoded_bytes() -> usize {
    budget().lock().expect("column budget lock").bytes
}
