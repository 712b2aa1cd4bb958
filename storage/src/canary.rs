//! Canaries: deliberately broken variants of the product's safety-critical steps, compiled in
//! only with the `canaries` feature, so the simulator can prove that its checkers catch each
//! kind of bug (DESIGN.md §8; the simulator issue's canary test). Without the feature,
//! [`active`] is the constant `false` and every canary branch compiles away.
//!
//! A canary is switched on per thread: the simulator runs a whole cluster on one thread, and
//! parallel tests on other threads stay unaffected.

/// One deliberately broken variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canary {
    /// The log store tells Raft an append is durable before its fsync (no fsync at all).
    AckBeforeFsync,
    /// A leader counts a follower that did not answer an AppendEntries as having stored it, so
    /// it commits without a quorum.
    CommitWithoutQuorum,
    /// A failed fsync is retried, and the retry's success is believed (fsyncgate).
    FsyncRetry,
    /// The state machine ignores expected revisions.
    SkipExpectedRevision,
    /// A subscription resumed inside an entry skips the rest of that entry.
    ResumeSkipsEntry,
}

impl Canary {
    /// Every canary.
    pub const ALL: [Canary; 5] = [
        Canary::AckBeforeFsync,
        Canary::CommitWithoutQuorum,
        Canary::FsyncRetry,
        Canary::SkipExpectedRevision,
        Canary::ResumeSkipsEntry,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Canary::AckBeforeFsync => "ack-before-fsync",
            Canary::CommitWithoutQuorum => "commit-without-quorum",
            Canary::FsyncRetry => "fsync-retry",
            Canary::SkipExpectedRevision => "skip-expected-revision",
            Canary::ResumeSkipsEntry => "resume-skips-entry",
        }
    }

    /// The canary called `name`.
    pub fn parse(name: &str) -> Option<Canary> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(feature = "canaries")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Canary>> = const { std::cell::Cell::new(None) };
}

/// Switches `canary` on for this thread (`None`: off). Without the `canaries` feature this
/// does nothing.
pub fn set(canary: Option<Canary>) {
    #[cfg(feature = "canaries")]
    ACTIVE.with(|a| a.set(canary));
    #[cfg(not(feature = "canaries"))]
    let _ = canary;
}

/// Whether `canary` is on for this thread (always false without the `canaries` feature).
#[inline]
pub fn active(canary: Canary) -> bool {
    #[cfg(feature = "canaries")]
    {
        ACTIVE.with(|a| a.get() == Some(canary))
    }
    #[cfg(not(feature = "canaries"))]
    {
        let _ = canary;
        false
    }
}

/// Whether this build has canaries compiled in.
pub const COMPILED: bool = cfg!(feature = "canaries");
