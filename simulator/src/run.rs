//! One simulated run: a cluster on one thread in virtual time, a client workload, optional
//! faults, then healing and a convergence check; its trace (every replica's applied LSN and log
//! chain per shard) and the trace's hash identify the run.
//!
//! Invariant: the same options give the same trace.

use std::time::Duration;

use themis_log::seam::Clock;
use themis_log::{EventInput, Log, Lsn, ShardId};

use crate::cluster::{SimCluster, SimOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The seed of every random draw.
    pub seed: u64,
    /// Nodes.
    pub nodes: u64,
    /// Shards.
    pub shards: u32,
    /// Appends the client makes, through the nodes in turn.
    pub appends: u64,
    /// With faults: 2% message loss, and shard 0's leader cut off from the other nodes for the
    /// middle third of the appends.
    pub faults: bool,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Virtual time the run took.
    pub simulated: Duration,
    /// Per node and shard: applied LSN and last log chain.
    pub trace: Vec<String>,
    /// xxh3 of the trace.
    pub hash: u64,
}

/// Appends one `put` event (data `{"n": n}`) to `urn` through `log`; returns its shard.
pub async fn append(log: &Log, urn: &str, n: u64) -> themis_log::Result<ShardId> {
    let input: EventInput =
        serde_json::from_value(serde_json::json!({"urn": urn, "op": "put", "data": {"n": n}}))
            .map_err(|e| themis_log::Error::Config(e.to_string()))?;
    let batch = log
        .validate(vec![input], None, None)
        .map_err(|e| themis_log::Error::Config(e.to_string()))?;
    let result = log.append(batch, false).await?;
    let (shard, appended) = result.shards.into_iter().next().expect("one shard");
    appended.map(|_| shard)
}

/// Runs `o` on a fresh single-threaded runtime whose clock is paused (virtual time).
pub fn run(o: &RunOptions) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot build the runtime: {e}"))?;
    runtime.block_on(run_async(o.clone()))
}

async fn run_async(o: RunOptions) -> Result<Report, String> {
    let clock = std::sync::Arc::new(crate::clock::TokioClock::new(1_764_115_200_000));
    let started = clock.monotonic();
    let c = SimCluster::start_with(SimOptions {
        nodes: o.nodes,
        shards: o.shards,
        replication: o.nodes.min(3) as u32,
        seed: o.seed,
        inline: true,
        clock: clock.clone(),
    })
    .await
    .map_err(|e| format!("cluster: {e}"))?;
    c.wait_for_leaders(Duration::from_secs(60))
        .await
        .map_err(|e| format!("no leaders: {e}"))?;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    if o.faults {
        c.net.set_loss(0.02);
    }
    let (cut_at, heal_at) = (o.appends / 3, 2 * o.appends / 3);
    let mut cut = None;
    for n in 0..o.appends {
        if o.faults && n == cut_at {
            let leader = c.node(ids[0]).status().await[0].leader;
            if let Some(leader) = leader {
                let others: Vec<u64> = ids.iter().copied().filter(|&x| x != leader).collect();
                c.net.isolate(leader, &others, true);
                cut = Some((leader, others));
            }
        }
        if n == heal_at
            && let Some((leader, others)) = cut.take()
        {
            c.net.isolate(leader, &others, false);
        }
        let urn = format!("urn:themis:document:sim:s{}", n % 7);
        let mut attempts = 0u64;
        // A client with a request timeout that moves on to the next node after a failure.
        loop {
            let node = c.node(ids[((n + attempts) % ids.len() as u64) as usize]);
            match tokio::time::timeout(Duration::from_secs(2), append(node, &urn, n)).await {
                Ok(Ok(_)) => break,
                _ if attempts >= 500 => return Err(format!("append {n} failed 500 times")),
                _ => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    c.net.heal();
    // Liveness: every replica of every shard converges within a bound of virtual time.
    let mut trace = Vec::new();
    for s in 0..o.shards {
        let deadline = clock.monotonic() + Duration::from_secs(30);
        loop {
            let pages: Vec<(u64, Vec<themis_log::LogEntryView>, Lsn)> = c
                .nodes
                .iter()
                .filter_map(|(id, log)| log.shard(ShardId(s)).ok().map(|sh| (*id, sh)))
                .map(|(id, sh)| {
                    let (entries, applied) = sh.read_log(Lsn(0), 1_000_000).expect("read log");
                    (id, entries, applied)
                })
                .collect();
            let converged = pages.windows(2).all(|w| {
                w[0].2 == w[1].2
                    && w[0].1.last().map(|e| &e.chain) == w[1].1.last().map(|e| &e.chain)
            });
            if converged {
                for (id, entries, applied) in &pages {
                    let chain = entries.last().map(|e| e.chain.clone()).unwrap_or_default();
                    trace.push(format!(
                        "node {id} shard {s} applied {} chain {chain}",
                        applied.0
                    ));
                }
                break;
            }
            if clock.monotonic() > deadline {
                return Err(format!(
                    "shard {s} did not converge within 30 s after healing"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let simulated = clock.monotonic() - started;
    c.shutdown().await;
    let hash = xxhash_rust::xxh3::xxh3_64(trace.join("\n").as_bytes());
    Ok(Report {
        simulated,
        trace,
        hash,
    })
}
