//! Change streams against a real single-node log (four shards, in-memory disk): deliveries per
//! shard in log order and complete, exact resumption from any cursor (also inside an entry),
//! filters and progress, a slow subscriber that cannot block appends, and the subscriber limit.
#![allow(clippy::disallowed_methods)] // test: a real clock for a real single-node log

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use themis_log::seam::{NoPeers, SeededEntropy, SystemClock};
use themis_log::subscribe::{Cursor, Delivery, Filter, From, Hub, Next, SubscribeConfig};
use themis_log::{Log, LogConfig, Lsn, ShardId};
use themis_storage::MemoryDisk;

async fn open() -> Arc<Log> {
    let log = Log::open(
        LogConfig {
            shards: 4,
            ..LogConfig::default()
        },
        Arc::new(MemoryDisk::new()),
        Arc::new(SystemClock::new()),
        Arc::new(SeededEntropy::new(11)),
        Arc::new(NoPeers),
    )
    .await
    .expect("open the log");
    log.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    Arc::new(log)
}

/// Appends `count` events to `urn` in one batch (one entry); returns their event ids.
async fn append(log: &Log, urn: &str, event_type: &str, count: usize) -> Vec<String> {
    let inputs = (0..count)
        .map(|_| {
            serde_json::from_value(json!({"urn": urn, "type": event_type, "op": "put", "data": {}}))
                .unwrap()
        })
        .collect();
    let batch = log.validate(inputs, None, None).expect("valid");
    let result = log.append(batch, false).await.expect("append");
    let (_, answer) = result.shards.into_iter().next().expect("one shard");
    let appended = answer.expect("appended");
    appended.events.iter().map(|e| e.id.to_string()).collect()
}

/// (shard, lsn, index, event id) of a delivery.
type Seen = (u32, u64, u32, String);

/// Reads deliveries until `count` events arrived; returns them and the cursor after each.
async fn take(sub: &mut themis_log::subscribe::Subscription, count: usize) -> Vec<(Seen, Cursor)> {
    let mut out = Vec::new();
    while out.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("a delivery within 30 s")
            .expect("no error");
        if let Delivery::Event(d, cursor) = next {
            out.push((
                (d.shard.0, d.lsn.0, d.index, d.event().id.to_string()),
                cursor,
            ));
        }
    }
    out
}

/// Per shard, (lsn, index) strictly increases.
fn assert_log_order(seen: &[Seen]) {
    let mut last: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
    for (shard, lsn, index, _) in seen {
        if let Some(prev) = last.insert(*shard, (*lsn, *index)) {
            assert!(
                prev < (*lsn, *index),
                "shard {shard}: {prev:?} then {:?}",
                (lsn, index)
            );
        }
    }
}

fn hub(config: SubscribeConfig) -> Arc<Hub> {
    Arc::new(Hub::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_log_order_and_resumes_exactly_from_any_cursor() {
    let log = open().await;
    let hub = hub(SubscribeConfig::default());
    let mut appended = BTreeSet::new();
    // Batches of 3 events share an entry, so cursors inside entries get exercised.
    for i in 0..40 {
        appended.extend(append(&log, &format!("urn:themis:document:d:r{}", i % 9), "Put", 3).await);
    }
    let mut sub = hub
        .subscribe(log.shards(), From::Earliest, Filter::default())
        .expect("subscribe");
    // Half now, the rest while appends continue.
    let first = take(&mut sub, 60).await;
    for i in 0..20 {
        appended.extend(append(&log, &format!("urn:themis:document:d:s{}", i % 5), "Put", 3).await);
    }
    let rest = take(&mut sub, 120).await;
    let all: Vec<Seen> = first.iter().chain(&rest).map(|(s, _)| s.clone()).collect();
    assert_log_order(&all);
    let ids: BTreeSet<String> = all.iter().map(|s| s.3.clone()).collect();
    assert_eq!(ids.len(), all.len(), "no duplicate");
    assert_eq!(ids, appended, "no gap");
    drop(sub);

    // Resume from several cursors, some inside an entry: exactly the suffix.
    for k in [0usize, 1, 2, 59, 100, 179] {
        let (_, cursor) = if k == 0 {
            ((0, 0, 0, String::new()), Cursor::new())
        } else {
            first.iter().chain(&rest).nth(k - 1).cloned().unwrap()
        };
        let mut again = hub
            .subscribe(
                log.shards(),
                From::Cursor(cursor.clone()),
                Filter::default(),
            )
            .expect("resume");
        let got: Vec<Seen> = take(&mut again, 180 - k)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        // The suffix after the cursor, per shard, is what was delivered after it before.
        let expect: BTreeSet<Seen> = all[k..].iter().cloned().collect();
        let got_set: BTreeSet<Seen> = got.iter().cloned().collect();
        assert_eq!(got_set, expect, "resume after {k} deliveries ({cursor})");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if let Ok(Delivery::Event(d, _)) = again.next().await {
                        return d;
                    }
                }
            })
            .await
            .is_err(),
            "nothing more after the suffix"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_and_progress_advances_over_what_they_reject() {
    let log = open().await;
    let hub = hub(SubscribeConfig::default());
    append(&log, "urn:themis:document:users:alice", "Registered", 1).await;
    append(&log, "urn:themis:relational:orders:o1", "Placed", 2).await;
    append(&log, "urn:themis:document:users:bob", "Registered", 1).await;
    let filter = Filter::parse(["model=document", "type=Registered"]).unwrap();
    let mut sub = hub
        .subscribe(log.shards(), From::Earliest, filter)
        .expect("subscribe");
    let got = take(&mut sub, 2).await;
    let urns: BTreeSet<u64> = got.iter().map(|(s, _)| s.1).collect();
    assert_eq!(urns.len(), 2);
    // Caught up eventually, with a cursor past every shard's applied entries.
    let caught = loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Ok(Delivery::CaughtUp(c))) => break c,
            Ok(Ok(_)) => continue,
            other => panic!("expected caught_up, got {other:?}"),
        }
    };
    // Its token covers everything each replica had applied.
    for shard in log.shards() {
        let seen = caught.token().get(shard.id()).unwrap_or(Lsn(0));
        assert!(
            seen >= shard.applied(),
            "shard {}: {seen:?} short of {:?}",
            shard.id(),
            shard.applied()
        );
    }
    // A rejected append still moves the position (progress), with no event delivered.
    let before = sub.cursor().clone();
    append(&log, "urn:themis:relational:orders:o2", "Placed", 1).await;
    let progressed = loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Ok(Delivery::Progress(c))) if c != before => break c,
            Ok(Ok(Delivery::Event(d, _))) => panic!("the filter rejects {:?}", d.event().urn),
            Ok(Ok(_)) => continue,
            other => panic!("expected progress, got {other:?}"),
        }
    };
    assert!(progressed.token().covers(&before.token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_blocks_nothing_and_later_gets_everything_from_storage() {
    let log = open().await;
    // A tiny ring and queue: the stalled subscriber falls behind at once.
    let hub = hub(SubscribeConfig {
        ring_entries: 4,
        queue_items: 2,
        page_entries: 8,
        ..SubscribeConfig::default()
    });
    let mut stalled = hub
        .subscribe(log.shards(), From::Latest, Filter::default())
        .expect("subscribe");
    let mut live = hub
        .subscribe(log.shards(), From::Latest, Filter::default())
        .expect("subscribe");
    let mut appended = BTreeSet::new();
    let reader = tokio::spawn(async move {
        let got = take(&mut live, 300).await;
        got.into_iter().map(|(s, _)| s.3).collect::<BTreeSet<_>>()
    });
    // 300 appends complete while `stalled` reads nothing.
    for i in 0..300 {
        appended.extend(
            append(
                &log,
                &format!("urn:themis:document:slow:r{}", i % 13),
                "Put",
                1,
            )
            .await,
        );
    }
    let live_got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the live subscriber is not held up")
        .unwrap();
    assert_eq!(live_got, appended);
    let got: Vec<Seen> = take(&mut stalled, 300)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_log_order(&got);
    assert_eq!(
        got.iter().map(|s| s.3.clone()).collect::<BTreeSet<_>>(),
        appended
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_over_the_limit_are_refused_and_latest_starts_at_the_head() {
    let log = open().await;
    let hub = hub(SubscribeConfig {
        subscribers_max: 1,
        ..SubscribeConfig::default()
    });
    append(&log, "urn:themis:document:d:before", "Put", 1).await;
    let mut sub = hub
        .subscribe(log.shards(), From::Latest, Filter::default())
        .expect("subscribe");
    let err = hub
        .subscribe(log.shards(), From::Latest, Filter::default())
        .unwrap_err();
    assert_eq!(err.code(), "too_many_subscribers");
    assert!(err.to_string().contains("1 subscriptions"), "{err}");
    let ids = append(&log, "urn:themis:document:d:after", "Put", 1).await;
    let got = take(&mut sub, 1).await;
    assert_eq!(got[0].0.3, ids[0], "latest: only what came after");
    drop(sub);
    hub.subscribe(log.shards(), From::Latest, Filter::default())
        .expect("a slot is free again");
    // A cursor naming a shard this database lacks is refused.
    let mut bogus = Cursor::new();
    bogus.set(
        ShardId(9),
        Next {
            lsn: Lsn(1),
            index: 0,
        },
    );
    drop(hub.subscribe(log.shards(), From::Latest, Filter::default()));
    let hub2 = Arc::new(Hub::new(SubscribeConfig::default()));
    let err = hub2
        .subscribe(log.shards(), From::Cursor(bogus), Filter::default())
        .unwrap_err();
    assert!(err.to_string().contains("shard 9"), "{err}");
}
