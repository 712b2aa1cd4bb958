//! Fault schedules: which faults a run may inject, and the nemesis that injects them one after
//! another, each for a seeded while, until the fault phase ends.
//!
//! Kinds: `loss` (messages lost), `delay` (messages delayed, so reordered), `duplicate` (Raft
//! RPCs delivered twice), `partition` (a shard leader isolated, a one-way cut, or a minority
//! split off), `crash` (a node loses power and restarts after a short or a long outage; a long
//! one makes it catch up by snapshot), `power` (every node loses power at once), `fsync` (a
//! node's fsyncs fail for a while, then it restarts, as a fail-stop node is restarted) and
//! `clock` (a node's wall clock jumps forward or back).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use themis_log::ShardId;

use crate::cluster::SimCluster;
use crate::workload::{self, Recorder, Workload};

/// Every fault kind, by name.
pub const KINDS: [&str; 8] = [
    "loss",
    "delay",
    "duplicate",
    "partition",
    "crash",
    "power",
    "fsync",
    "clock",
];

/// The fault kinds a run may inject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSpec {
    /// Enabled kinds (names from [`KINDS`]).
    pub kinds: BTreeSet<&'static str>,
}

impl FaultSpec {
    /// Parses `none`, `light` (loss and partitions), `heavy` (every kind), `swarm` (each kind
    /// with probability 1/2, drawn from the seed; at least one) or `list:a,b,...`.
    pub fn parse(spec: &str, seed: u64) -> Result<FaultSpec, String> {
        let kinds: BTreeSet<&'static str> = match spec {
            "none" => BTreeSet::new(),
            "light" => ["loss", "partition"].into_iter().collect(),
            "heavy" => KINDS.into_iter().collect(),
            "swarm" => {
                let mut rng = StdRng::seed_from_u64(seed ^ 0x0005_3a73);
                let mut k: BTreeSet<_> = KINDS.into_iter().filter(|_| rng.gen_bool(0.5)).collect();
                if k.is_empty() {
                    k.insert(*KINDS.choose(&mut rng).expect("kinds"));
                }
                k
            }
            other => {
                let Some(list) = other.strip_prefix("list:") else {
                    return Err(format!(
                        "unknown --faults {other:?}: use none, light, heavy, swarm or list:KIND,... \
                         with kinds {}",
                        KINDS.join(", ")
                    ));
                };
                let mut k = BTreeSet::new();
                for name in list.split(',').filter(|s| !s.is_empty()) {
                    let kind = KINDS.iter().find(|&&x| x == name).ok_or_else(|| {
                        format!(
                            "unknown fault kind {name:?}: kinds are {}",
                            KINDS.join(", ")
                        )
                    })?;
                    k.insert(*kind);
                }
                k
            }
        };
        Ok(FaultSpec { kinds })
    }

    /// The kinds, comma-separated (`none` when empty).
    pub fn describe(&self) -> String {
        if self.kinds.is_empty() {
            "none".into()
        } else {
            self.kinds.iter().copied().collect::<Vec<_>>().join(",")
        }
    }
}

/// What the nemesis did, for the report.
#[derive(Debug, Clone, Default)]
pub struct NemesisLog {
    /// One line per fault, with its virtual start time.
    pub events: Vec<String>,
    /// Per leader crash and shard it led: time from the crash to a new leader of that shard
    /// among the survivors, and to the first acknowledged append through a survivor.
    pub failovers: Vec<(Duration, Duration)>,
    /// Failover probes that got no acknowledgement within their bound.
    pub failover_failures: usize,
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..=hi))
}

/// A stream of each shard, for failover probes.
fn probe_urns(shards: u32) -> Vec<String> {
    let ring = themis_log::Ring::new(shards);
    let mut urns = vec![String::new(); shards as usize];
    let mut k = 0;
    while urns.iter().any(String::is_empty) {
        let urn = format!("urn:themis:document:probe:p{k}");
        let parsed = themis_log::Urn::parse(&urn).expect("a valid urn");
        let s = ring.shard_for_urn(&parsed).0 as usize;
        if urns[s].is_empty() {
            urns[s] = urn;
        }
        k += 1;
    }
    urns
}

/// Injects faults from `spec` until `until` (virtual time since the run began).
pub async fn nemesis(
    cluster: Arc<SimCluster>,
    recorder: Recorder,
    spec: FaultSpec,
    seed: u64,
    until: Duration,
) -> NemesisLog {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e_e5_15);
    let mut log = NemesisLog::default();
    let kinds: Vec<&str> = spec.kinds.iter().copied().collect();
    let ids = cluster.ids();
    let probes = probe_urns(cluster.shards());
    if kinds.is_empty() {
        return log;
    }
    let mut probe_n = 0u64;
    loop {
        tokio::time::sleep(ms(&mut rng, 200, 1_500)).await;
        if cluster.now() >= until {
            break;
        }
        let kind = *kinds.choose(&mut rng).expect("kinds");
        let hold = ms(&mut rng, 300, 3_000);
        let at = cluster.now();
        match kind {
            "loss" => {
                let p = rng.gen_range(0.01..0.2);
                log.events.push(format!("{at:?} loss {p:.3} for {hold:?}"));
                cluster.net.set_loss(p);
                tokio::time::sleep(hold).await;
                cluster.net.set_loss(0.0);
            }
            "delay" => {
                let d = ms(&mut rng, 2, 150);
                log.events
                    .push(format!("{at:?} delay up to {d:?} for {hold:?}"));
                cluster.net.set_delay_max(d);
                tokio::time::sleep(hold).await;
                cluster.net.set_delay_max(Duration::ZERO);
            }
            "duplicate" => {
                let p = rng.gen_range(0.05..0.5);
                log.events
                    .push(format!("{at:?} duplicate raft rpcs {p:.3} for {hold:?}"));
                cluster.net.set_duplicate(p);
                tokio::time::sleep(hold).await;
                cluster.net.set_duplicate(0.0);
            }
            "partition" => {
                let leader = leader_of(&cluster, ShardId(rng.gen_range(0..cluster.shards()))).await;
                let variant = rng.gen_range(0..3);
                let mut cuts: Vec<(u64, u64)> = Vec::new();
                match (variant, leader) {
                    (0, Some(l)) => {
                        for &o in ids.iter().filter(|&&o| o != l) {
                            cuts.push((l, o));
                            cuts.push((o, l));
                        }
                        log.events
                            .push(format!("{at:?} isolate leader {l} for {hold:?}"));
                    }
                    (1, _) => {
                        let mut pair = ids.clone();
                        pair.shuffle(&mut rng);
                        cuts.push((pair[0], pair[1]));
                        log.events.push(format!(
                            "{at:?} cut {} -> {} for {hold:?}",
                            pair[0], pair[1]
                        ));
                    }
                    _ => {
                        let mut all = ids.clone();
                        all.shuffle(&mut rng);
                        let minority = &all[..all.len().saturating_sub(1) / 2];
                        for &a in minority {
                            for &b in all.iter().filter(|b| !minority.contains(b)) {
                                cuts.push((a, b));
                                cuts.push((b, a));
                            }
                        }
                        log.events
                            .push(format!("{at:?} split off {minority:?} for {hold:?}"));
                    }
                }
                for &(a, b) in &cuts {
                    cluster.net.cut_one_way(a, b, true);
                }
                tokio::time::sleep(hold).await;
                for &(a, b) in &cuts {
                    cluster.net.cut_one_way(a, b, false);
                }
            }
            "crash" => {
                let victim = ids[rng.gen_range(0..ids.len())];
                let long = rng.gen_bool(0.3);
                let outage = if long {
                    ms(&mut rng, 3_000, 8_000)
                } else {
                    ms(&mut rng, 50, 1_000)
                };
                let led = led_shards(&cluster, victim).await;
                // Half the crashes strike inside the victim's next few disk writes and
                // fsyncs, so they can land in the middle of a commit.
                let inside = rng.gen_bool(0.5).then(|| rng.gen_range(1..=40u64));
                log.events.push(format!(
                    "{at:?} crash node {victim} (leading shards {led:?}){} for {outage:?}",
                    inside.map_or(String::new(), |k| format!(
                        " within its next {k} disk writes"
                    ))
                ));
                if let Some(k) = inside {
                    cluster.disk(victim).arm_crash(k);
                    let until = cluster.now() + Duration::from_secs(2);
                    while !cluster.disk(victim).crashed_by_arm() && cluster.now() < until {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    cluster.disk(victim).arm_crash(0);
                }
                cluster.crash(victim).await;
                let probes = led.iter().map(|s| {
                    probe_n += 1;
                    failover_probe(
                        cluster.clone(),
                        recorder.clone(),
                        *s,
                        probes[s.0 as usize].clone(),
                        seed ^ (probe_n << 20),
                        at,
                    )
                });
                let sleep = tokio::time::sleep(outage);
                let (times, ()) = futures::join!(futures::future::join_all(probes), sleep);
                for t in times {
                    match t {
                        Some(t) => log.failovers.push(t),
                        None => log.failover_failures += 1,
                    }
                }
                if let Err(e) = cluster.restart(victim).await {
                    log.events.push(format!(
                        "{:?} restart of node {victim} failed: {e}",
                        cluster.now()
                    ));
                }
            }
            "power" => {
                let outage = ms(&mut rng, 50, 1_000);
                log.events
                    .push(format!("{at:?} power loss of every node for {outage:?}"));
                cluster.power_loss().await;
                tokio::time::sleep(outage).await;
                restart_all(&cluster, &mut log).await;
            }
            "fsync" => {
                let victim = ids[rng.gen_range(0..ids.len())];
                let p = rng.gen_range(0.05..0.5);
                log.events.push(format!(
                    "{at:?} fsync failures {p:.2} on node {victim} for {hold:?}, then restart"
                ));
                cluster.disk(victim).set_fsync_failure(p);
                tokio::time::sleep(hold).await;
                cluster.disk(victim).set_fsync_failure(0.0);
                // A node whose store stopped at a failed fsync is restarted; it recovers from
                // what its disk made durable.
                cluster.crash(victim).await;
                if let Err(e) = cluster.restart(victim).await {
                    log.events.push(format!(
                        "{:?} restart of node {victim} failed: {e}",
                        cluster.now()
                    ));
                }
            }
            "clock" => {
                let victim = ids[rng.gen_range(0..ids.len())];
                let jump: i64 = rng.gen_range(-120_000..=120_000);
                log.events.push(format!(
                    "{at:?} wall clock of node {victim} jumps to {jump:+} ms"
                ));
                cluster.clock(victim).set_skew_ms(jump);
            }
            _ => unreachable!("kinds come from KINDS"),
        }
    }
    log
}

/// Heals everything: network faults, fsync failures, clock skew; restarts every crashed node.
pub async fn heal(cluster: &SimCluster, log: &mut NemesisLog) {
    cluster.net.heal();
    for id in cluster.ids() {
        cluster.disk(id).set_fsync_failure(0.0);
        cluster.clock(id).set_skew_ms(0);
    }
    restart_all(cluster, log).await;
}

async fn restart_all(cluster: &SimCluster, log: &mut NemesisLog) {
    // Restarting nodes open concurrently: each waits for its shards' leaders.
    let restarts = cluster
        .ids()
        .into_iter()
        .map(|id| async move { (id, cluster.restart(id).await) });
    for (id, result) in futures::future::join_all(restarts).await {
        if let Err(e) = result {
            log.events.push(format!(
                "{:?} restart of node {id} failed: {e}",
                cluster.now()
            ));
        }
    }
}

async fn leader_of(cluster: &SimCluster, shard: ShardId) -> Option<u64> {
    for (_, log) in cluster.running() {
        if let Some(s) = log.status().await.into_iter().find(|s| s.shard == shard)
            && s.leader.is_some()
        {
            return s.leader;
        }
    }
    None
}

async fn led_shards(cluster: &SimCluster, node: u64) -> Vec<ShardId> {
    let Some(log) = cluster.node(node) else {
        return Vec::new();
    };
    let mut led = Vec::new();
    for s in 0..cluster.shards() {
        if let Ok(shard) = log.shard(ShardId(s))
            && shard.is_leader()
        {
            led.push(ShardId(s));
        }
    }
    led
}

/// Waits for a new leader of `shard` among the running nodes (polling every 5 ms), then
/// appends to `urn` (a stream of that shard) through them until one append is acknowledged,
/// at most 10 s in all; returns both times since `since`.
async fn failover_probe(
    cluster: Arc<SimCluster>,
    recorder: Recorder,
    shard: ShardId,
    urn: String,
    seed: u64,
    since: Duration,
) -> Option<(Duration, Duration)> {
    let deadline = since + Duration::from_secs(10);
    let elected = loop {
        let leads = cluster
            .running()
            .iter()
            .any(|(_, log)| log.shard(shard).is_ok_and(|sh| sh.is_leader()));
        if leads {
            break cluster.now() - since;
        }
        if cluster.now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let w = Workload {
        attempt_timeout: Duration::from_millis(100),
        attempts_max: 1,
        ..Workload::default()
    };
    let mut n = 0;
    while cluster.now() < deadline {
        n += 1;
        let outcome = workload::append(
            &cluster,
            &recorder,
            &mut rng,
            &w,
            workload::PROBE,
            &urn,
            themis_log::event::ExpectedRevision::Any,
            n,
        )
        .await;
        if matches!(outcome, workload::AppendOutcome::Ok { .. }) {
            return Some((elected, cluster.now() - since));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
