//! A change-stream subscriber in the workload: it subscribes to a random running node from its
//! cursor, reads for a while (sometimes stalling, with small rings and queues so it falls
//! behind and reads from storage), then moves to another node, across crashes, partitions and
//! failovers. After the run it catches up with the converged logs, and the checker requires,
//! per shard, exactly the log's accepted events in log order: no gap, no duplicate, no rewind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use themis_log::subscribe::{Cursor, Delivery, Filter, From, Hub, SubscribeConfig};

use crate::cluster::SimCluster;

/// An event as a subscriber received it: (shard, LSN, index in the entry, event id).
pub type Received = (u32, u64, u32, String);

/// Everything the subscriber received, in order, and its cursor.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// Deliveries in the order received.
    pub received: Vec<Received>,
    /// The cursor after the last message.
    pub cursor: Cursor,
    /// Subscriptions opened (one per visit to a node).
    pub sessions: u64,
}

/// Shared record of the subscriber.
pub type SubscribedLog = Arc<Mutex<Subscribed>>;

/// Subscribes to random running nodes until `until` (virtual time since the cluster started).
pub async fn subscriber(c: Arc<SimCluster>, out: SubscribedLog, seed: u64, until: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    while c.now() < until {
        let stay = Duration::from_millis(rng.gen_range(200..2_000));
        let leave = (c.now() + stay).min(until);
        if !session(&c, &out, &mut rng, leave, false).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// After the run: reads from the cursor until caught up with every shard of a running node.
pub async fn catch_up(
    c: &SimCluster,
    out: &SubscribedLog,
    seed: u64,
    deadline: Duration,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    while c.now() < deadline {
        if session(c, out, &mut rng, deadline, true).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the subscriber did not catch up with the converged logs".into())
}

/// One subscription on a random running node until `leave` (or, with `until_caught_up`, until
/// caught up). True when it opened (and, with `until_caught_up`, caught up).
async fn session(
    c: &SimCluster,
    out: &SubscribedLog,
    rng: &mut StdRng,
    leave: Duration,
    until_caught_up: bool,
) -> bool {
    let running = c.running();
    if running.is_empty() {
        return false;
    }
    let (_, log) = &running[rng.gen_range(0..running.len())];
    let shards = log.shards();
    if shards.len() as u32 != log.shard_count() {
        return false;
    }
    // Now and then small buffers, so falling behind (and reading from storage) happens.
    let config = if rng.gen_bool(0.25) {
        SubscribeConfig {
            ring_entries: rng.gen_range(2..16),
            queue_items: rng.gen_range(1..8),
            page_entries: rng.gen_range(1..16),
            ..SubscribeConfig::default()
        }
    } else {
        SubscribeConfig::default()
    };
    let hub = Arc::new(Hub::new(config));
    let cursor = out.lock().expect("subscriber lock").cursor.clone();
    let Ok(mut subscription) = hub.subscribe(shards, From::Cursor(cursor), Filter::default())
    else {
        return false;
    };
    out.lock().expect("subscriber lock").sessions += 1;
    loop {
        let remaining = leave.saturating_sub(c.now());
        if remaining.is_zero() {
            return !until_caught_up;
        }
        let next = match tokio::time::timeout(remaining, subscription.next()).await {
            Err(_) => return !until_caught_up,
            // The node stopped or a shard closed: go elsewhere from the cursor.
            Ok(Err(_)) => return false,
            Ok(Ok(next)) => next,
        };
        let caught_up = {
            let mut record = out.lock().expect("subscriber lock");
            match next {
                Delivery::Event(d, cursor) => {
                    record
                        .received
                        .push((d.shard.0, d.lsn.0, d.index, d.event().id.to_string()));
                    record.cursor = cursor;
                    false
                }
                Delivery::Progress(cursor) => {
                    record.cursor = cursor;
                    false
                }
                Delivery::CaughtUp(cursor) => {
                    record.cursor = cursor;
                    true
                }
            }
        };
        if caught_up && until_caught_up {
            return true;
        }
        if !until_caught_up && rng.gen_bool(0.02) {
            // A slow consumer: stop reading for a while.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..300))).await;
        }
    }
}
