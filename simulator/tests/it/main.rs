//! In-process clusters on the simulated network: the real node code, faults injected by the
//! network. (One integration-test binary per crate.)
#![allow(clippy::disallowed_methods)] // test: real time for bounded waits

use std::time::{Duration, Instant};

use themis_log::{Lsn, ShardId};
use themis_simulator::cluster::SimCluster;
use themis_simulator::run::append;

/// Waits (bounded) until every replica of every shard holds the same applied log.
async fn assert_converged(c: &SimCluster, shards: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in 0..shards {
        loop {
            let pages: Vec<_> = c
                .nodes
                .values()
                .filter_map(|log| log.shard(ShardId(s)).ok())
                .map(|shard| shard.read_log(Lsn(0), 100_000).expect("read"))
                .collect();
            let applied: Vec<u64> = pages.iter().map(|(_, a)| a.0).collect();
            if applied.iter().all(|&a| a == applied[0]) {
                let first = serde_json::to_value(&pages[0].0).unwrap();
                for (entries, _) in &pages {
                    assert_eq!(serde_json::to_value(entries).unwrap(), first, "shard {s}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shard {s} did not converge: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_the_replicas_converge() {
    let c = SimCluster::start(3, 2, 3, 7).await.expect("cluster");
    c.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let mut acked = 0;
    for i in 0..20u64 {
        append(c.node(1), &format!("urn:themis:document:sim:s{}", i % 6), i)
            .await
            .expect("append");
        acked += 1;
    }
    // Cut the leader of shard 0 off from both other nodes.
    let status = c.node(1).status().await;
    let leader = status[0].leader.expect("a leader");
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    c.net.isolate(leader, &others, true);
    // Appends through a node on the majority side succeed once it elects a new leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 100;
    let mut shard0 = 0;
    while shard0 < 5 {
        n += 1;
        match append(
            c.node(others[0]),
            &format!("urn:themis:document:sim:p{n}"),
            n,
        )
        .await
        {
            Ok(ShardId(0)) => {
                shard0 += 1;
                acked += 1;
            }
            Ok(_) => acked += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(Instant::now() < deadline, "no new leader for shard 0");
    }
    let status = c.node(others[0]).status().await;
    assert!(
        status[0].leader.is_some_and(|l| l != leader),
        "shard 0 moved to the majority: {status:?}"
    );
    // Heal: the old leader rejoins as a follower and every replica converges.
    c.net.heal();
    assert_converged(&c, 2).await;
    assert!(acked >= 25);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_message_loss() {
    let c = SimCluster::start(3, 2, 3, 11).await.expect("cluster");
    c.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    c.net.set_loss(0.05);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = 0;
    let mut n = 0;
    while done < 40 {
        n += 1;
        // Client-chosen ids would make retries safe; here a lost answer is just not counted.
        if append(
            c.node(1 + n % 3),
            &format!("urn:themis:document:loss:s{}", n % 5),
            n,
        )
        .await
        .is_ok()
        {
            done += 1;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} appends in 60 s at 5% loss"
        );
    }
    c.net.heal();
    assert_converged(&c, 2).await;
    c.shutdown().await;
}

fn one_thread(seed: u64, faults: bool) -> themis_simulator::run::Report {
    themis_simulator::run::run(&themis_simulator::run::RunOptions {
        seed,
        nodes: 3,
        shards: 2,
        appends: 60,
        faults,
    })
    .expect("run")
}

#[test]
fn a_cluster_runs_on_one_thread_in_virtual_time() {
    let real = Instant::now();
    let report = one_thread(3, false);
    assert_eq!(
        report.trace.len(),
        6,
        "3 nodes x 2 shards: {:?}",
        report.trace
    );
    eprintln!(
        "simulated {:?} in {:?} of real time",
        report.simulated,
        real.elapsed()
    );
}

/// One seed, twice, gives the same trace (every replica's log chain, which covers every entry's
/// bytes including its commit timestamp, so timing too); another seed gives another.
#[test]
fn the_same_seed_gives_the_same_run() {
    let first = one_thread(5, false);
    assert_eq!(first, one_thread(5, false), "two runs of seed 5 differ");
    assert_ne!(
        first.hash,
        one_thread(6, false).hash,
        "seeds 5 and 6 gave the same logs"
    );
}

/// The same under 2% message loss and a partitioned leader.
#[test]
fn the_same_seed_gives_the_same_run_under_faults() {
    let first = one_thread(8, true);
    assert_eq!(
        first,
        one_thread(8, true),
        "two faulty runs of seed 8 differ"
    );
    eprintln!("faulty run: {:?} simulated", first.simulated);
}
