//! In-process clusters on the simulated network: the real node code, faults injected by the
//! network. (One integration-test binary per crate.)
#![allow(clippy::disallowed_methods)] // test: real time for bounded waits

use std::time::{Duration, Instant};

use themis_log::{Lsn, ShardId};
use themis_simulator::cluster::SimCluster;
use themis_simulator::disk::SimDisk;
use themis_simulator::faults::FaultSpec;
use themis_simulator::run::{RunOptions, append};

/// Waits (bounded) until every replica of every shard holds the same applied log.
async fn assert_converged(c: &SimCluster, shards: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in 0..shards {
        loop {
            let pages: Vec<_> = c
                .running()
                .into_iter()
                .filter_map(|(_, log)| log.shard(ShardId(s)).ok())
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
        append(
            &c.node(1).expect("running"),
            &format!("urn:themis:document:sim:s{}", i % 6),
            i,
        )
        .await
        .expect("append");
        acked += 1;
    }
    // Cut the leader of shard 0 off from both other nodes.
    let status = c.node(1).expect("running").status().await;
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
            &c.node(others[0]).expect("running"),
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
    let status = c.node(others[0]).expect("running").status().await;
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
            &c.node(1 + n % 3).expect("running"),
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

fn one_thread(seed: u64, faults: &str) -> themis_simulator::run::Report {
    let mut o = RunOptions::new(seed);
    o.duration = Duration::from_secs(5);
    o.faults = FaultSpec::parse(faults, seed).expect("faults");
    themis_simulator::run::run(&o).unwrap_or_else(|e| panic!("seed {seed} failed:\n{e}"))
}

#[test]
fn a_cluster_runs_on_one_thread_in_virtual_time() {
    let real = Instant::now();
    let report = one_thread(3, "none");
    let replicas = report
        .trace
        .iter()
        .filter(|l| l.starts_with("node "))
        .count();
    assert_eq!(replicas, 6, "3 nodes x 2 shards: {:?}", report.trace);
    assert!(report.checked.acknowledged > 0, "{:?}", report.checked);
    assert!(report.checked.reads > 0, "{:?}", report.checked);
    eprintln!(
        "simulated {:?} in {:?} of real time",
        report.simulated,
        real.elapsed()
    );
}

/// One seed, twice, gives the same trace (every replica's log chain, which covers every entry's
/// bytes including its commit timestamp, and every client operation with its times); another
/// seed gives another.
#[test]
fn the_same_seed_gives_the_same_run() {
    let first = one_thread(5, "none");
    assert!(
        first.same_run(&one_thread(5, "none")),
        "two runs of seed 5 differ"
    );
    assert_ne!(
        first.hash,
        one_thread(6, "none").hash,
        "seeds 5 and 6 gave the same logs"
    );
}

/// The same with every fault kind (crashes, power loss, fsync errors, partitions, ...).
#[test]
fn the_same_seed_gives_the_same_run_under_faults() {
    let first = one_thread(8, "heavy");
    assert!(!first.faults.is_empty(), "heavy faults injected nothing");
    let second = one_thread(8, "heavy");
    assert!(
        first.same_run(&second),
        "two faulty runs of seed 8 differ: {:016x} then {:016x}",
        first.hash,
        second.hash
    );
}

/// The simulated disk keeps synced bytes, loses or tears unsynced ones at a crash, kills the
/// handles of the crashed incarnation, and after a failed fsync keeps showing the bytes it
/// will lose (fsyncgate).
#[test]
fn the_simulated_disk_loses_what_was_not_synced() {
    use redb::{ReadableDatabase, TableDefinition};
    use themis_storage::Disk;
    const T: TableDefinition<u64, u64> = TableDefinition::new("t");
    let write = |db: &redb::Database, k: u64, durable: bool| -> Result<(), String> {
        let mut tx = db.begin_write().map_err(|e| e.to_string())?;
        if !durable {
            tx.set_durability(redb::Durability::None)
                .map_err(|e| e.to_string())?;
        }
        tx.open_table(T)
            .map_err(|e| e.to_string())?
            .insert(k, k)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    };
    let read = |db: &redb::Database, k: u64| -> Option<u64> {
        let tx = db.begin_read().ok()?;
        let t = tx.open_table(T).ok()?;
        t.get(k).ok()?.map(|v| v.value())
    };
    for seed in 0..20 {
        let disk = SimDisk::new(seed);
        let db = disk.open_database("d").expect("open");
        write(&db, 1, true).expect("durable write");
        write(&db, 2, false).expect("volatile write");
        assert_eq!(read(&db, 2), Some(2), "visible before the crash");
        disk.crash();
        assert!(write(&db, 3, true).is_err(), "a dead handle must not write");
        drop(db);
        let db = disk.open_database("d").expect("reopen after the crash");
        assert_eq!(
            read(&db, 1),
            Some(1),
            "seed {seed}: a synced commit survives"
        );
        assert_eq!(
            read(&db, 2),
            None,
            "seed {seed}: an unsynced commit is lost"
        );
        // A failed fsync: the commit fails and nothing is written after it. What the failed
        // writeback left on the disk is torn like a crash: after the power loss the database
        // opens with the failed commit either whole or absent, never half.
        disk.set_fsync_failure(1.0);
        assert!(write(&db, 4, true).is_err(), "the fsync fails");
        assert!(
            write(&db, 5, true).is_err(),
            "nothing is written after a failed fsync"
        );
        disk.set_fsync_failure(0.0);
        disk.crash();
        drop(db);
        let db = disk.open_database("d").expect("reopen");
        assert!(matches!(read(&db, 4), None | Some(4)), "seed {seed}");
        assert_eq!(read(&db, 5), None, "seed {seed}");
        assert_eq!(read(&db, 1), Some(1));
        // A crash inside a commit, at every write or fsync of it: the database opens, every
        // earlier commit is there, and this one is whole or absent.
        let mut db = db;
        for k in 1..12u64 {
            write(&db, 100 + k, true).expect("a durable write before the crash");
            disk.arm_crash(k);
            let result = write(&db, 200 + k, true);
            assert!(
                result.is_err() == disk.crashed_by_arm(),
                "seed {seed} k {k}: {result:?}"
            );
            disk.arm_crash(0);
            disk.crash();
            drop(db);
            db = disk
                .open_database("d")
                .expect("reopen after a crash inside a commit");
            assert_eq!(read(&db, 100 + k), Some(100 + k), "seed {seed} k {k}");
            assert!(
                read(&db, 200 + k).is_none_or(|v| v == 200 + k),
                "seed {seed} k {k}"
            );
            if result.is_ok() {
                assert_eq!(
                    read(&db, 200 + k),
                    Some(200 + k),
                    "seed {seed} k {k}: synced"
                );
            }
        }
    }
}

/// Each deliberately broken variant is caught by the checkers within 200 seeds.
#[cfg(feature = "canaries")]
#[test]
fn every_canary_is_caught_within_200_seeds() {
    use themis_storage::canary::Canary;
    for canary in Canary::ALL {
        let faults = match canary {
            Canary::AckBeforeFsync => "list:power",
            Canary::CommitWithoutQuorum => "list:partition",
            Canary::FsyncRetry => "list:fsync",
            Canary::SkipExpectedRevision => "none",
            Canary::ResumeSkipsEntry => "none",
        };
        let caught = (1..=200u64).find(|&seed| {
            let mut o = RunOptions::new(seed);
            o.duration = Duration::from_secs(5);
            o.faults = FaultSpec::parse(faults, seed).expect("faults");
            o.canary = Some(canary);
            themis_simulator::run::run(&o).is_err()
        });
        let seed = caught.unwrap_or_else(|| panic!("canary {} survived 200 seeds", canary.name()));
        eprintln!("canary {} caught at seed {seed}", canary.name());
    }
}
