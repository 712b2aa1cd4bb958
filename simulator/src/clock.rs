//! Virtual time for a simulated cluster: tokio's clock, which a paused runtime advances only
//! when every task waits, so a simulated second costs no real second.
//!
//! Invariant: this is a seam implementation: the only place of the simulator that reads a
//! clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use themis_log::seam::Clock;

/// A [`Clock`] on tokio's time: monotonic since creation, and a wall clock that starts at a
/// fixed instant and moves with it.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin_ms: u64,
}

impl TokioClock {
    /// A clock whose wall time starts at `wall_origin_ms`; call it inside a tokio runtime.
    pub fn new(wall_origin_ms: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin_ms,
        }
    }
}

impl Clock for TokioClock {
    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    fn wall_ms(&self) -> u64 {
        self.wall_origin_ms + self.monotonic().as_millis() as u64
    }
}

/// One node's clock: the shared virtual time, with a wall clock the simulator can jump forward
/// or back (monotonic time never jumps, as on a real machine).
#[derive(Debug, Clone)]
pub struct NodeClock {
    base: TokioClock,
    skew_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl NodeClock {
    /// A clock on `base` without skew.
    pub fn new(base: TokioClock) -> Self {
        Self {
            base,
            skew_ms: Default::default(),
        }
    }

    /// Sets the wall clock's offset from the shared time.
    pub fn set_skew_ms(&self, skew: i64) {
        self.skew_ms
            .store(skew, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for NodeClock {
    fn monotonic(&self) -> Duration {
        self.base.monotonic()
    }

    fn wall_ms(&self) -> u64 {
        let skew = self.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.base.wall_ms().saturating_add_signed(skew)
    }
}
