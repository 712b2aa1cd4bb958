//! Waiting for a token is bounded by one deadline: however many shards and view kinds a read
//! waits for, it waits at most its timeout in all. On a paused current-thread runtime (virtual
//! time, inline storage) so the timing is exact, not a timed assertion on a shared machine.
#![allow(clippy::disallowed_methods)] // test: a clock on tokio's virtual time

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use themis_log::event::Op;
use themis_log::seam::{Clock, NoPeers, SeededEntropy};
use themis_log::{Log, LogConfig, Lsn, Position, ShardId, Token, Urn};
use themis_materializers::{Error, Materializer, MaterializerConfig};
use themis_storage::MemoryDisk;

use crate::{append_all, input};

/// Tokio's (virtual) time as the node's clock.
#[derive(Debug)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.0)
    }

    fn wall_ms(&self) -> u64 {
        1_800_000_000_000 + self.monotonic().as_millis() as u64
    }
}

/// A URN of a document in `shard`.
fn doc_in(log: &Log, shard: ShardId) -> String {
    (0..)
        .map(|i| format!("urn:themis:document:w:d{i}"))
        .find(|u| log.shard_id_for(&Urn::parse(u).unwrap()) == shard)
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_for_several_shards_and_kinds_shares_one_deadline() {
    let disk = MemoryDisk::new();
    let clock = Arc::new(TokioClock(tokio::time::Instant::now()));
    let mut config = LogConfig {
        shards: 2,
        ..LogConfig::default()
    };
    config.store.inline = true;
    let log = Arc::new(
        Log::open(
            config,
            Arc::new(disk.clone()),
            clock.clone(),
            Arc::new(SeededEntropy::new(3)),
            Arc::new(NoPeers),
        )
        .await
        .expect("open"),
    );
    log.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let views = Materializer::start(
        log.clone(),
        &disk,
        clock.clone(),
        MaterializerConfig::default(),
    )
    .await
    .expect("views");
    let (a, b) = (doc_in(&log, ShardId(0)), doc_in(&log, ShardId(1)));
    let next = |s: u32| Position {
        shard: ShardId(s),
        lsn: Lsn(log.shard(ShardId(s)).unwrap().applied().0 + 1),
    };
    let token: Token = [next(0), next(1)].into_iter().collect();
    // Shard 0's entry comes after 8 s, shard 1's after 16 s: each within 10 s of the last,
    // but not within 10 s of the start.
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            append_all(&log, vec![input(&a, Op::Put, None, Some(json!({})))]).await;
            tokio::time::sleep(Duration::from_secs(8)).await;
            append_all(&log, vec![input(&b, Op::Put, None, Some(json!({})))]).await;
        })
    };
    let started = tokio::time::Instant::now();
    let waited = views
        .wait_for_kinds(&["document", "relational"], &token, Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(waited, Err(Error::Timeout { shard: 1, .. })),
        "{waited:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11),
        "waited {elapsed:?} of virtual time"
    );
    writer.await.unwrap();
    // With the entries in, the same wait succeeds at once.
    views
        .wait_for_kinds(&["document", "relational"], &token, Duration::from_secs(10))
        .await
        .expect("covered");
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
}
